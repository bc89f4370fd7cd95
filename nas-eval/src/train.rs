//! Retraining a derived network from scratch (DARTS `train.py`): every epoch trains on the
//! whole training split with crop, flip and cutout, drop path at p·epoch/epochs and the
//! auxiliary loss, then evaluates the test split; metrics, a checkpoint and, at the end, the
//! final weights go to the run directory.
//!
//! Reproducibility: the data order, augmentation and drop-path masks of an epoch depend only on
//! (seed, epoch, step), and the checkpoint holds weights, BN statistics, the momentum buffers
//! and the run's position (epoch, step, running sums), so a resumed run ends exactly as the
//! uninterrupted one (CPU). The random streams are keyed, not stateful, so the seed and the
//! position are the RNG state. Checkpoints are written after every epoch and, when the run is
//! stopped (Ctrl-C), at the step where it stopped.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use nas_core::checkpoint::{load_tensors, save_tensors};
use nas_core::data::{Augment, BatchIter, BatchPlan, DataSpec, Dataset, ImageSet, LoadOptions, Normalize};
use nas_core::metrics::{Event, MetricsSink, Position, Tally};
use nas_core::nn::{accuracy_count, cross_entropy, Mode};
use nas_core::optim::{clip_grad_norm, grads_for, CosineAnnealing, Sgd};
use nas_core::run_dir::{RunDir, CHECKPOINT, CONFIG, GENOTYPE, WEIGHTS};
use nas_core::DeviceSpec;
use serde::Serialize;
use serde_json::json;

use crate::config::{TrainConfig, ValidTrainConfig};
use crate::error::{Error, Result};
use crate::model::{DropPath, EvalModel, ModelShape};

const CHECKPOINT_FORMAT: &str = "nas-train-checkpoint-1";
const PREFETCH: usize = 2;

/// One SGD step of the evaluation network: cross-entropy of the logits plus `aux_weight` times
/// that of the auxiliary logits, global-norm clipping, then the update. Returns the total loss
/// (scalar tensor) and the logits.
pub fn train_step(
    model: &EvalModel,
    opt: &mut Sgd,
    x: &Tensor,
    y: &Tensor,
    aux_weight: f64,
    grad_clip: f64,
    drop: Option<&DropPath>,
) -> candle_core::Result<(Tensor, Tensor)> {
    let (logits, aux) = model.forward(x, Mode::TRAIN_WEIGHTS, drop)?;
    let mut loss = cross_entropy(&logits, y)?;
    if let (Some(aux), true) = (aux, aux_weight > 0.0) {
        loss = (loss + (cross_entropy(&aux, y)? * aux_weight)?)?;
    }
    let mut grads = grads_for(&loss.backward()?, opt.params());
    if grad_clip > 0.0 {
        clip_grad_norm(&mut grads, grad_clip)?;
    }
    opt.step(&grads)?;
    Ok((loss, logits))
}

/// What `nas eval` prints.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct EvalResult {
    pub test_acc: f64,
    pub test_loss: f64,
    pub n: usize,
}

fn shape_of(cfg: &TrainConfig, data: &Dataset) -> ModelShape {
    ModelShape {
        channels: cfg.model.channels,
        layers: cfg.model.layers,
        num_classes: data.num_classes,
        in_channels: data.train.channels,
        auxiliary: cfg.model.auxiliary_weight > 0.0,
    }
}

/// The dataset and its (non-empty) test split.
fn load_data(cfg: &TrainConfig, spec: &DataSpec) -> Result<(Dataset, Arc<ImageSet>)> {
    let opts =
        LoadOptions { subset: cfg.data.subset, with_test: true, seed: cfg.seed, image_size: cfg.data.image_size };
    let data = Dataset::load(spec, &opts)?;
    match data.test.clone() {
        Some(test) if !test.is_empty() => Ok((data, test)),
        _ => Err(Error::Config(format!("dataset {} has no test images", data.name))),
    }
}

/// Loss, accuracy and count of `model` in evaluation mode over `set` (no augmentation).
fn evaluate_set(
    model: &EvalModel,
    set: &Arc<ImageSet>,
    normalize: &Normalize,
    batch_size: usize,
    device: &Device,
    sink: &mut dyn MetricsSink,
) -> Result<Tally> {
    let plan = BatchPlan {
        batch_size,
        shuffle: false,
        drop_last: false,
        augment: Augment::NONE,
        seed: 0,
        epoch: 0,
        stream: 2,
    };
    let it = BatchIter::new(set.clone(), normalize.clone(), plan, PREFETCH);
    sink.event(Event::EvalStart { batches: it.remaining() });
    let mut tally = Tally::default();
    for hb in it {
        let (x, y) = hb.to_device(device)?;
        let (logits, _) = model.forward(&x, Mode::EVAL, None)?;
        let loss = cross_entropy(&logits, &y)?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        tally.add(loss, accuracy_count(&logits, &y)?, y.dim(0)?);
    }
    Ok(tally)
}

pub struct Trainer {
    cfg: ValidTrainConfig,
    device: Device,
    model: EvalModel,
    opt: Sgd,
    train_set: Arc<ImageSet>,
    test_set: Arc<ImageSet>,
    normalize: Normalize,
    schedule: CosineAnnealing,
    position: Position,
}

impl Trainer {
    /// Loads the data and builds the network and its optimiser.
    pub fn new(cfg: ValidTrainConfig) -> Result<Self> {
        let device = cfg.device.open()?;
        let (data, test_set) = load_data(&cfg, &cfg.data.spec)?;
        cfg.check_input_size(data.train.height, data.train.width)?;
        if data.train.len() < cfg.data.batch_size {
            return Err(Error::Config(format!(
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
            "data loaded"
        );
        let model = EvalModel::new(&cfg.genotype, shape_of(&cfg, &data), cfg.seed, &device)?;
        tracing::info!(weights = model.weights().num_weight_elements(), device = ?device, "network built");
        let o = &cfg.optimizer;
        let opt = Sgd::new(model.weights().weights(), o.sgd());
        let schedule = o.schedule(cfg.epochs);
        Ok(Self {
            device,
            model,
            opt,
            train_set: data.train,
            test_set,
            normalize: data.normalize,
            schedule,
            position: Position::default(),
            cfg,
        })
    }

    pub fn config(&self) -> &ValidTrainConfig {
        &self.cfg
    }

    pub fn model(&self) -> &EvalModel {
        &self.model
    }

    /// Where the run continues: the next epoch, and the step within it after an interruption.
    pub fn position(&self) -> Position {
        self.position
    }

    /// The drop-path probability of an epoch: p·epoch/epochs, as DARTS ramps it.
    pub fn drop_path_prob(&self, epoch: usize) -> f64 {
        self.cfg.model.drop_path * epoch as f64 / self.cfg.epochs as f64
    }

    /// Trains the rest of the epoch at `self.position`. A raised `stop` ends it before the next
    /// step with a checkpoint of the position (in `dir`) and `Error::Interrupted`.
    fn train_epoch(&mut self, dir: Option<&RunDir>, sink: &mut dyn MetricsSink, stop: &AtomicBool) -> Result<Tally> {
        let Position { epoch, step: first, mut tally } = self.position;
        self.opt.set_lr(self.schedule.lr(epoch));
        let drop_p = self.drop_path_prob(epoch);
        let augment = Augment { crop_padding: 4, flip: true, cutout: self.cfg.data.cutout };
        let plan = BatchPlan {
            batch_size: self.cfg.data.batch_size,
            shuffle: true,
            drop_last: false,
            augment,
            seed: self.cfg.seed,
            epoch,
            stream: 0,
        };
        let train = BatchIter::starting_at(self.train_set.clone(), self.normalize.clone(), plan, PREFETCH, first);
        let steps = first + train.remaining();
        sink.event(Event::EpochStart { epoch, epochs: self.cfg.epochs, steps });
        let (started, seen_before) = (Instant::now(), tally.seen);
        for (step, hb) in (first..).zip(train) {
            if stop.load(Ordering::Relaxed) {
                self.position = Position { epoch, step, tally };
                if let Some(dir) = dir {
                    self.save_checkpoint(&dir.file(CHECKPOINT))?;
                }
                return Err(Error::Interrupted { epoch, step });
            }
            let (x, y) = hb.to_device(&self.device)?;
            let drop = self.model.drop_path(drop_p, y.dim(0)?, (self.cfg.seed, epoch, step), &self.device)?;
            let o = &self.cfg.optimizer;
            let (loss, logits) = train_step(
                &self.model,
                &mut self.opt,
                &x,
                &y,
                self.cfg.model.auxiliary_weight,
                o.grad_clip,
                drop.as_ref(),
            )?;
            let loss = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !loss.is_finite() {
                return Err(Error::Diverged { epoch, step, loss });
            }
            tally.add(loss, accuracy_count(&logits, &y)?, y.dim(0)?);
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            sink.event(Event::Step {
                step: step + 1,
                steps,
                loss: tally.loss(),
                acc: tally.acc(),
                samples_per_s: (tally.seen - seen_before) as f64 / secs,
            });
        }
        Ok(tally)
    }

    /// Test loss, accuracy and count of the current network.
    pub fn evaluate(&self, sink: &mut dyn MetricsSink) -> Result<EvalResult> {
        let t =
            evaluate_set(&self.model, &self.test_set, &self.normalize, self.cfg.data.batch_size, &self.device, sink)?;
        Ok(EvalResult { test_acc: t.acc(), test_loss: t.loss(), n: t.seen })
    }

    /// Runs the remaining epochs, writing metrics and checkpoints to `dir` and, at the end,
    /// the genotype and the final weights. Returns the last epoch's test result.
    pub fn run(&mut self, dir: Option<&RunDir>, sink: &mut dyn MetricsSink, stop: &AtomicBool) -> Result<EvalResult> {
        let mut last = None;
        while self.position.epoch < self.cfg.epochs {
            let epoch = self.position.epoch;
            let started = Instant::now();
            let train = self.train_epoch(dir, sink, stop)?;
            let test = self.evaluate(sink)?;
            if !test.test_loss.is_finite() {
                // The last step left the weights unusable; the previous checkpoint stays.
                return Err(Error::DivergedValid { epoch, loss: test.test_loss });
            }
            let record = json!({
                "epoch": epoch,
                "train_loss": train.loss(),
                "train_acc": train.acc(),
                "valid_loss": test.test_loss,
                "valid_acc": test.test_acc,
                "lr": self.schedule.lr(epoch),
                "drop_path_prob": self.drop_path_prob(epoch),
                "seconds": started.elapsed().as_secs_f64(),
            });
            self.position = Position::epoch_start(epoch + 1);
            if let Some(dir) = dir {
                dir.append_metrics(&record)?;
                self.save_checkpoint(&dir.file(CHECKPOINT))?;
                tracing::info!(epoch, path = %dir.file(CHECKPOINT).display(), "checkpoint written");
            }
            sink.event(Event::EpochEnd { record: &record });
            last = Some(test);
        }
        let result = match last {
            Some(r) => r,
            None => self.evaluate(sink)?,
        };
        if let Some(dir) = dir {
            dir.write_json(GENOTYPE, &self.cfg.genotype.to_json())?;
            self.save_weights(&dir.file(WEIGHTS))?;
        }
        Ok(result)
    }

    /// The network's weights and BN statistics under the reference's state_dict names.
    pub fn save_weights(&self, path: &Path) -> Result<()> {
        let tensors = self.model.weights().named_tensors("");
        let meta = HashMap::from([("genotype".to_string(), self.cfg.genotype.to_json().to_string())]);
        Ok(save_tensors(path, &tensors, meta)?)
    }

    /// Writes weights, BN statistics, momentum buffers and the run's position, atomically.
    pub fn save_checkpoint(&self, path: &Path) -> Result<()> {
        let mut tensors = self.model.weights().named_tensors("weights.");
        tensors.extend(self.opt.state("sgd"));
        let mut meta = HashMap::from([
            ("format".to_string(), CHECKPOINT_FORMAT.to_string()),
            ("seed".to_string(), self.cfg.seed.to_string()),
        ]);
        meta.extend(self.position.to_meta());
        Ok(save_tensors(path, &tensors, meta)?)
    }

    /// Restores a checkpoint written by `save_checkpoint`; returns the position to continue at.
    pub fn load_checkpoint(&mut self, path: &Path) -> Result<Position> {
        let ck = load_tensors(path, &self.device)?;
        if ck.meta("format") != Some(CHECKPOINT_FORMAT) {
            return Err(Error::run_dir(path, "not a training checkpoint of this version"));
        }
        self.model
            .weights()
            .load(&ck.with_prefix("weights."), false)
            .map_err(|e| Error::run_dir(path, e.to_string()))?;
        self.opt.load_state("sgd", |n| ck.tensors.get(n).cloned()).map_err(|e| Error::run_dir(path, e.to_string()))?;
        self.position = ck.position(path)?;
        Ok(self.position)
    }

    /// Continues the run in `dir` from its checkpoint (or from the start when it has none),
    /// dropping metric records the checkpoint does not cover.
    pub fn resume(&mut self, dir: &RunDir) -> Result<Position> {
        let ck = dir.file(CHECKPOINT);
        let position = if ck.exists() { self.load_checkpoint(&ck)? } else { Position::default() };
        dir.truncate_metrics(position.epoch)?;
        Ok(position)
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
    let cfg = TrainConfig::from_json_value(dir.read_json(CONFIG)?)
        .map_err(|e| Error::run_dir(dir.file(CONFIG), e.to_string()))?
        .validate()?;
    let device = device.unwrap_or(cfg.device).open()?;
    let spec = data.unwrap_or(&cfg.data.spec);
    let (ds, test) = load_data(&cfg, spec)?;
    cfg.check_input_size(ds.train.height, ds.train.width)?;
    let model = EvalModel::new(&cfg.genotype, shape_of(&cfg, &ds), cfg.seed, &device)?;
    let (path, prefix) = if dir.file(WEIGHTS).exists() {
        (dir.file(WEIGHTS), "")
    } else if dir.file(CHECKPOINT).exists() {
        (dir.file(CHECKPOINT), "weights.")
    } else {
        return Err(Error::run_dir(dir.path(), "no weights.safetensors nor checkpoint.safetensors to evaluate"));
    };
    model.weights().load(&load_tensors(&path, &device)?.with_prefix(prefix), false).map_err(|e| {
        Error::run_dir(&path, format!("{e} (was the network trained on data with the same classes and image size?)"))
    })?;
    let t = evaluate_set(&model, &test, &ds.normalize, cfg.data.batch_size, &device, sink)?;
    Ok(EvalResult { test_acc: t.acc(), test_loss: t.loss(), n: t.seen })
}
