//! Retraining a derived network from scratch (DARTS `train.py`, `train_imagenet.py`): every
//! epoch trains on the whole training split with crop, flip and cutout (ImageNet networks:
//! random resized crop, flip and colour jitter, the images streamed from their files), drop
//! path at p·epoch/epochs and the auxiliary loss (label-smoothed when asked), then evaluates
//! the test split (top-1 and top-5); metrics, a checkpoint and, at the end, the final weights
//! go to the run directory.
//!
//! Reproducibility: the data order, augmentation and drop-path masks of an epoch depend only on
//! (seed, epoch, step), and the checkpoint holds weights, BN statistics, the momentum buffers
//! and the run's position (epoch, step, running sums), so a resumed run ends exactly as the
//! uninterrupted one (CPU). The random streams are keyed, not stateful, so the seed and the
//! position are the RNG state. The epoch loop itself (position, stop, divergence, checkpoints,
//! resume) is `nas_core::epoch`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use candle_core::{Device, Tensor};
use nas_core::checkpoint::{load_tensors, save_tensors, LoadedTensors};
use nas_core::data::{
    Augment, BatchPlan, DataSpec, Dataset, HostBatch, LoadOptions, Normalize, Samples, Shard, StepIter,
};
use nas_core::dist::{self, MicroOutput};
use nas_core::epoch::{evaluate_set, EpochBatches, EpochLoop, EpochTask, StepOutput, PREFETCH};
use nas_core::metrics::{MetricsSink, Position, Tally};
use nas_core::nn::{cross_entropy, cross_entropy_smoothed, topk_counts, Mode};
use nas_core::optim::{grads_for, LrSchedule, Sgd};
use nas_core::run_dir::{RunDir, DATASET, GENOTYPE, WEIGHTS};
use nas_core::DeviceSpec;
use search_spaces::{NetKind, TaskShape};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::config::{TrainConfig, ValidTrainConfig};
use crate::export::{load_model, run_config, run_weights, DataInfo};
use crate::model::{DropPath, EvalModel};
use crate::{Error, Result};

/// How the training loss is made: the auxiliary head's weight and the label smoothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossConfig {
    pub aux_weight: f64,
    pub label_smoothing: f64,
}

impl LossConfig {
    /// Plain cross-entropy of the logits only.
    pub const PLAIN: LossConfig = LossConfig { aux_weight: 0.0, label_smoothing: 0.0 };

    fn of(cfg: &TrainConfig) -> Self {
        Self { aux_weight: cfg.model.auxiliary_weight, label_smoothing: cfg.label_smoothing }
    }

    fn ce(&self, logits: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
        if self.label_smoothing > 0.0 {
            cross_entropy_smoothed(logits, y, self.label_smoothing)
        } else {
            cross_entropy(logits, y)
        }
    }
}

/// One SGD step of the evaluation network: the training loss (`training_loss`), global-norm
/// clipping, then the update. Returns the total loss (scalar tensor) and the logits.
pub fn train_step(
    model: &EvalModel,
    opt: &mut Sgd,
    x: &Tensor,
    y: &Tensor,
    loss: LossConfig,
    grad_clip: f64,
    drop: Option<&DropPath>,
) -> candle_core::Result<(Tensor, Tensor)> {
    let (logits, loss) = training_loss(model, x, y, loss, drop)?;
    let grads = grads_for(&loss.backward()?, opt.params());
    opt.step_clipped(&grads, grad_clip)?;
    Ok((loss, logits))
}

/// The logits and the training loss CE(logits) + aux_weight·CE(auxiliary logits), both
/// cross-entropies label-smoothed when asked (DARTS' ImageNet `criterion_smooth`).
fn training_loss(
    model: &EvalModel,
    x: &Tensor,
    y: &Tensor,
    cfg: LossConfig,
    drop: Option<&DropPath>,
) -> candle_core::Result<(Tensor, Tensor)> {
    let (logits, aux) = model.forward(x, Mode::TRAIN_WEIGHTS, drop)?;
    let mut loss = cfg.ce(&logits, y)?;
    if let (Some(aux), true) = (aux, cfg.aux_weight > 0.0) {
        loss = (loss + (cfg.ce(&aux, y)? * cfg.aux_weight)?)?;
    }
    Ok((logits, loss))
}

/// What `nas eval` prints: top-1 accuracy, loss, count and top-5 accuracy.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct EvalResult {
    pub test_acc: f64,
    pub test_loss: f64,
    pub n: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_top5: Option<f64>,
}

impl From<Tally> for EvalResult {
    fn from(t: Tally) -> Self {
        Self { test_acc: t.acc(), test_loss: t.loss(), n: t.seen, test_top5: t.acc5() }
    }
}

fn task_of(data: &Dataset) -> TaskShape {
    TaskShape { num_classes: data.num_classes, in_channels: data.train.shape().0 }
}

/// The dataset and its (non-empty) test split; an ImageNet network streams a folder dataset
/// from its files.
pub(crate) fn load_data(cfg: &TrainConfig, spec: &DataSpec) -> Result<(Dataset, Samples)> {
    let opts = LoadOptions {
        subset: cfg.data.subset,
        with_test: true,
        seed: cfg.seed,
        image_size: cfg.data.image_size,
        stream: cfg.model.net == NetKind::ImageNet,
    };
    let data = Dataset::load(spec, &opts)?;
    match data.test.clone() {
        Some(test) if !test.is_empty() => Ok((data, test)),
        _ => Err(Error::config(format!("dataset {} has no test images", data.name))),
    }
}

/// Loss, accuracy and count of `model` in evaluation mode over `set` (no augmentation).
fn evaluate_model(
    model: &EvalModel,
    set: &Samples,
    normalize: &Normalize,
    batch_size: usize,
    device: &Device,
    sink: &mut dyn MetricsSink,
) -> Result<Tally> {
    evaluate_set(set, normalize, batch_size, device, sink, |x| Ok(model.forward(x, Mode::EVAL, None)?.0))
}

/// A retraining run: the network, its optimiser and the data, driven epoch by epoch.
pub struct Trainer {
    task: TrainTask,
    epochs: EpochLoop,
    /// What it trains on (`Dataset::record`), written to the run's dataset.json.
    dataset: serde_json::Value,
}

/// What the epoch loop drives: one SGD step per training batch.
struct TrainTask {
    cfg: ValidTrainConfig,
    device: Device,
    model: EvalModel,
    opt: Sgd,
    train_set: Samples,
    test_set: Samples,
    normalize: Normalize,
    schedule: LrSchedule,
    /// The drop-path probability of the epoch in progress.
    drop_p: f64,
}

impl Trainer {
    /// Loads the data and builds the network and its optimiser.
    pub fn new(cfg: ValidTrainConfig) -> Result<Self> {
        let device = cfg.device.open()?;
        let (data, test_set) = load_data(&cfg, &cfg.data.spec)?;
        let dataset = data.record();
        let (_, height, width) = data.train.shape();
        cfg.check_input_size(height, width)?;
        if data.train.len() < cfg.data.batch_size {
            return Err(Error::config(format!(
                "the training split has {} images, fewer than one batch of {}",
                data.train.len(),
                cfg.data.batch_size
            )));
        }
        tracing::info!(
            dataset = %data.name,
            train = data.train.len(),
            test = test_set.len(),
            classes = data.num_classes,
            streamed = data.train.streamed(),
            "data loaded"
        );
        let model = EvalModel::new(&cfg.genotype, &cfg.model, task_of(&data), cfg.seed, &device)?;
        tracing::info!(
            weights = model.weights().num_weight_elements(),
            params_without_aux = model.num_params_without_aux(),
            mult_adds = model.mult_adds(height, width).transpose()?,
            device = ?device,
            "network built"
        );
        let o = &cfg.optimizer;
        let opt = o.optimizer(model.weights().weights());
        let schedule = o.schedule(cfg.epochs);
        let epochs = EpochLoop::new(cfg.epochs, &device);
        let task = TrainTask {
            device,
            model,
            opt,
            train_set: data.train,
            test_set,
            normalize: data.normalize,
            schedule,
            drop_p: 0.0,
            cfg,
        };
        Ok(Self { task, epochs, dataset })
    }

    pub fn config(&self) -> &ValidTrainConfig {
        &self.task.cfg
    }

    pub fn model(&self) -> &EvalModel {
        &self.task.model
    }

    /// (height, width) of the training images.
    pub fn image_size(&self) -> (usize, usize) {
        let (_, h, w) = self.task.train_set.shape();
        (h, w)
    }

    /// Where the run continues: the next epoch, and the step within it after an interruption.
    pub fn position(&self) -> Position {
        self.epochs.position()
    }

    /// The drop-path probability of an epoch: p·epoch/epochs, as DARTS ramps it.
    pub fn drop_path_prob(&self, epoch: usize) -> f64 {
        self.task.drop_path_prob(epoch)
    }

    /// Test loss, accuracy and count of the current network.
    pub fn evaluate(&self, sink: &mut dyn MetricsSink) -> Result<EvalResult> {
        Ok(EvalResult::from(self.task.evaluate_test(sink)?))
    }

    /// Runs the remaining epochs, writing metrics and checkpoints to `dir` and, at the end,
    /// the genotype and the final weights. Returns the last epoch's test result.
    pub fn run(&mut self, dir: Option<&RunDir>, sink: &mut dyn MetricsSink, stop: &AtomicBool) -> Result<EvalResult> {
        if let Some(dir) = dir.filter(|_| dist::is_writer()) {
            dir.write_json(DATASET, &self.dataset)?;
        }
        let result = match self.epochs.run(&mut self.task, dir, sink, stop)? {
            Some(t) => EvalResult::from(t),
            None => self.evaluate(sink)?,
        };
        if let Some(dir) = dir.filter(|_| dist::is_writer()) {
            dir.write_json(GENOTYPE, &self.task.cfg.genotype.to_json())?;
            self.save_weights(&dir.file(WEIGHTS))?;
        }
        Ok(result)
    }

    /// The network's weights and BN statistics under the reference's state_dict names.
    pub fn save_weights(&self, path: &Path) -> Result<()> {
        let tensors = self.task.model.weights().named_tensors("");
        let meta = HashMap::from([("genotype".to_string(), self.task.cfg.genotype.to_json().to_string())]);
        Ok(save_tensors(path, &tensors, meta)?)
    }

    /// Continues the run in `dir` from its checkpoint (or from the start when it has none),
    /// dropping metric records the checkpoint does not cover.
    pub fn resume(&mut self, dir: &RunDir) -> Result<Position> {
        self.epochs.resume(&mut self.task, dir)
    }
}

impl TrainTask {
    fn drop_path_prob(&self, epoch: usize) -> f64 {
        self.cfg.model.drop_path * epoch as f64 / self.cfg.epochs as f64
    }

    /// This process's micro-batches of every step.
    fn shard(&self) -> Shard {
        let world = dist::world();
        Shard::of_rank(world.rank(), world.size(), self.cfg.data.accumulate)
    }

    fn evaluate_test(&self, sink: &mut dyn MetricsSink) -> Result<Tally> {
        evaluate_model(&self.model, &self.test_set, &self.normalize, self.cfg.data.batch_size, &self.device, sink)
    }
}

impl EpochTask for TrainTask {
    /// This process's micro-batches of a step (or the error that stopped assembling them).
    type Batch = nas_core::Result<Vec<HostBatch>>;
    const CHECKPOINT_FORMAT: &'static str = "nas-train-checkpoint-3";
    const CHECKPOINT_KIND: &'static str = "training";

    fn begin_epoch(&mut self, epoch: usize, first: usize) -> Result<EpochBatches<Self::Batch>> {
        self.opt.set_lr(self.schedule.lr(epoch));
        self.drop_p = self.drop_path_prob(epoch);
        let base = if self.cfg.model.net == NetKind::ImageNet { Augment::IMAGENET } else { Augment::CIFAR };
        let augment = Augment { cutout: self.cfg.data.cutout, ..base };
        let plan = BatchPlan {
            batch_size: self.cfg.data.batch_size,
            shuffle: true,
            drop_last: false,
            augment,
            seed: self.cfg.seed,
            epoch,
            stream: 0,
        };
        let shard = self.shard();
        let train = StepIter::new(self.train_set.clone(), self.normalize.clone(), plan, shard, PREFETCH, first);
        Ok(EpochBatches { steps: first + train.remaining(), batches: Box::new(train) })
    }

    /// The step's micro-batches, each with its own forward, drop-path masks keyed by its
    /// batch's place in the epoch (the same masks whichever rank runs it) and batch statistics;
    /// the gradient of the mean loss over all of them and over the ranks.
    fn step(&mut self, epoch: usize, step: usize, micro: Self::Batch) -> Result<StepOutput> {
        let shard = self.shard();
        let micro = micro?;
        let mut batches = Vec::with_capacity(micro.len());
        for (m, b) in micro.into_iter().enumerate() {
            let (x, y) = b.to_device(&self.device)?;
            let key = (self.cfg.seed, epoch, step * shard.group + shard.start + m);
            let drop = self.model.drop_path(self.drop_p, y.dim(0)?, key, &self.device)?;
            batches.push((x, y, drop));
        }
        let (loss_cfg, grad_clip) = (LossConfig::of(&self.cfg), self.cfg.optimizer.grad_clip);
        let params = self.opt.params().to_vec();
        let model = &self.model;
        let out = dist::step_grads(&batches, &[&params], |(x, y, drop)| {
            let (logits, loss) = training_loss(model, x, y, loss_cfg, drop.as_ref())?;
            Ok(MicroOutput { loss, correct: topk_counts(&logits, y)?, n: y.dim(0)? })
        })?;
        self.opt.step_clipped(&out.grads[0], grad_clip)?;
        Ok(StepOutput { loss: out.loss, correct: out.correct, n: out.n })
    }

    fn evaluate(&mut self, sink: &mut dyn MetricsSink) -> Result<Tally> {
        self.evaluate_test(sink)
    }

    fn record_fields(&self, epoch: usize) -> Result<Map<String, Value>> {
        let mut fields = Map::new();
        fields.insert("lr".into(), json!(self.schedule.lr(epoch)));
        fields.insert("drop_path_prob".into(), json!(self.drop_path_prob(epoch)));
        Ok(fields)
    }

    /// Weights, BN statistics and the momentum buffers.
    fn checkpoint_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut tensors = self.model.weights().named_tensors("weights.");
        tensors.extend(self.opt.state("sgd"));
        Ok(tensors)
    }

    fn checkpoint_meta(&self) -> Result<Vec<(String, String)>> {
        Ok(vec![
            ("seed".to_string(), self.cfg.seed.to_string()),
            ("random_draws".to_string(), self.model.stream_position().to_string()),
        ])
    }

    fn restore(&mut self, ck: &LoadedTensors, path: &Path) -> Result<()> {
        let ctx = |e: &dyn std::fmt::Display| Error::run_dir(path, e.to_string());
        self.model.weights().load(&ck.with_prefix("weights."), false).map_err(|e| ctx(&e))?;
        self.opt.load_state("sgd", |n| ck.tensors.get(n).cloned()).map_err(|e| ctx(&e))?;
        self.model.set_stream_position(ck.meta_parse(path, "random_draws")?);
        Ok(())
    }
}

/// Test accuracy and loss of a finished (or checkpointed) training run, on its own data or on
/// `data`, on the run's device or `device`. Uses the final weights, else the last checkpoint.
pub fn evaluate_run(
    dir: &RunDir,
    data: Option<&DataSpec>,
    device: Option<DeviceSpec>,
    sink: &mut dyn MetricsSink,
) -> Result<EvalResult> {
    let cfg = run_config(dir)?.validate()?;
    let device = device.unwrap_or(cfg.device).open()?;
    let spec = data.unwrap_or(&cfg.data.spec);
    let (ds, test) = load_data(&cfg, spec)?;
    let (_, height, width) = ds.train.shape();
    cfg.check_input_size(height, width)?;
    let (path, prefix) = run_weights(dir)?;
    let model = load_model(&cfg, &DataInfo::of(&ds), (&path, &load_tensors(&path, &device)?), prefix, &device)?;
    Ok(EvalResult::from(evaluate_model(&model, &test, &ds.normalize, cfg.data.batch_size, &device, sink)?))
}
