//! The search loop (DARTS Alg. 1): every step updates α on a search-valid batch, then the
//! weights on a search-train batch; every epoch ends with an evaluation pass over the
//! search-valid half, the derived genotype, a metrics record and a checkpoint. The epoch loop
//! itself (position, stop, divergence, checkpoints, resume) is `nas_core::epoch`.
//!
//! Reproducibility: the data order and augmentation of an epoch depend only on (seed, epoch),
//! and the checkpoint holds weights, buffers, α, both optimiser states and the run's position
//! (epoch, step, running sums), so a run resumed from it continues exactly as the uninterrupted
//! run would (on CPU).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use nas_core::checkpoint::LoadedTensors;
use nas_core::data::{
    Augment, BatchIter, BatchPlan, Dataset, HostBatch, LoadOptions, Normalize, Samples, Shard, StepIter,
};
use nas_core::dist;
use nas_core::epoch::{evaluate_set, EpochBatches, EpochLoop, EpochTask, StepOutput, PREFETCH};
use nas_core::metrics::{MetricsSink, Position, Tally};
use nas_core::nn::Mode;
use nas_core::optim::{LrSchedule, Sgd};
use nas_core::rng::{self, Purpose};
use search_spaces::{column_map, Child, Genotype, NamedState, Supernet, TaskShape};
use serde_json::{json, Map, Value};

use crate::config::{EarlyStop, ValidSearchConfig};
use crate::early_stop::{DartsEs, EarlyStopDecision, Sample};
use crate::method::alternating::alpha_hessian_eigenvalue;
use crate::method::{MethodContext, SearchMethod, StepAt, StepBatches, WeightStep};
use crate::progressive::skip_dropout_rate;
use crate::run_dir::{RunDir, DATASET, GENOTYPE};
use crate::step::Batch;
use crate::{Error, Result};

/// A search run: the supernet, its two optimisers and the split data, driven epoch by epoch.
pub struct Search {
    task: SearchTask,
    epochs: EpochLoop,
    /// What it searches on (`Dataset::record`), written to the run's dataset.json.
    dataset: serde_json::Value,
}

/// What the epoch loop drives: one search step per batch pair.
struct SearchTask {
    cfg: ValidSearchConfig,
    device: Device,
    net: Box<dyn Supernet>,
    w_opt: Sgd,
    /// How the architecture learns (`method`).
    method: Box<dyn SearchMethod>,
    train_set: Samples,
    valid_set: Samples,
    normalize: Normalize,
    schedule: LrSchedule,
    /// The fixed search-valid batch of the α-Hessian diagnostic (when it is on).
    hessian_batch: Option<Batch>,
    /// The eigenvalue of the epoch that just ended, for its record.
    hessian_eig: Option<f64>,
    /// The eigenvalue history and DARTS-ES' decision.
    eigenvalues: DartsEs,
}

/// The checkpoint metadata holding the eigenvalue history (epoch, eigenvalue, genotype).
const HESSIAN_META: &str = "hessian_eigenvalues";

/// The run directory's record of an early stop.
pub const EARLY_STOP: &str = "early_stop.json";

impl Search {
    /// Loads the data and builds the supernet and both optimisers.
    pub fn new(cfg: ValidSearchConfig) -> Result<Self> {
        let device = cfg.device.open()?;
        let opts = LoadOptions {
            subset: cfg.data.subset,
            seed: cfg.seed,
            image_size: cfg.data.image_size,
            stream: cfg.streams_data(),
            with_test: false,
        };
        let data = Dataset::load(&cfg.data.spec, &opts)?;
        let dataset = data.record();
        let (train_set, valid_set) = match cfg.data.subset_fraction {
            Some([w, a]) => data.train.class_fractions((w, a), cfg.seed),
            None => data.search_split(),
        };
        let (in_channels, height, width) = data.train.shape();
        cfg.check_input_size(height, width)?;
        let step_batch = cfg.data.batch_size * cfg.data.accumulate * dist::world().size();
        if train_set.len() < step_batch {
            return Err(Error::config(format!(
                "the search-train half has {} images, fewer than one step's batch of {step_batch} \
                 (batch size × accumulate × processes)",
                train_set.len(),
            )));
        }
        tracing::info!(
            dataset = %data.name,
            search_train = train_set.len(),
            search_valid = valid_set.len(),
            classes = data.num_classes,
            "data loaded"
        );
        let shape = TaskShape { num_classes: data.num_classes, in_channels };
        let net = cfg.space().build_supernet(&cfg.model, shape, cfg.seed, &device)?;
        tracing::info!(
            space = %cfg.space(),
            weights = net.weights().num_weight_elements(),
            device = ?device,
            "supernet built"
        );
        let w = &cfg.weight_optimizer;
        let w_opt = w.optimizer(net.weights().weights());
        let ctx = MethodContext::new(net.as_ref(), &cfg, &device);
        let method = cfg.method.build(&ctx)?;
        let schedule = w.schedule(cfg.epochs);
        let epochs = EpochLoop::new(cfg.end_epoch.unwrap_or(cfg.epochs), &device).starting_at(cfg.first_epoch);
        let hessian_batch = if cfg.hessian_every > 0 {
            // The first batch of the search-valid half in order, not augmented: the same batch
            // at every epoch, so the eigenvalues compare the network and not the data.
            let plan = BatchPlan {
                batch_size: cfg.data.batch_size,
                shuffle: false,
                drop_last: true,
                augment: Augment::NONE,
                seed: cfg.seed,
                epoch: 0,
                stream: 0,
            };
            let mut it = BatchIter::starting_at(valid_set.clone(), data.normalize.clone(), plan, 1, 0);
            let b = it.next().ok_or_else(|| Error::Data("the search-valid half has no full batch".to_string()))??;
            let (x, y) = b.to_device(&device)?;
            Some(Batch { x, y })
        } else {
            None
        };
        let eigenvalues = DartsEs::new(cfg.hessian_every, cfg.epochs);
        // Every rank starts from rank 0's weights and α (equal anyway: the same seed).
        let world = dist::world();
        let mut vars = net.weights().weights();
        vars.extend(net.arch().weights());
        vars.extend(net.weights().buffers());
        dist::broadcast_vars(world.as_ref(), &vars)?;
        let task = SearchTask {
            hessian_batch,
            hessian_eig: None,
            eigenvalues,
            device,
            net,
            w_opt,
            method,
            train_set,
            valid_set,
            normalize: data.normalize,
            schedule,
            cfg,
        };
        Ok(Self { task, epochs, dataset })
    }

    pub fn config(&self) -> &ValidSearchConfig {
        &self.task.cfg
    }

    pub fn net(&self) -> &dyn Supernet {
        self.task.net.as_ref()
    }

    /// Where the run continues: the next epoch, and the step within it after an interruption.
    pub fn position(&self) -> Position {
        self.epochs.position()
    }

    /// Loss and accuracy of the network in evaluation mode over `set` (no augmentation).
    pub fn evaluate(&self, set: &Samples, sink: &mut dyn MetricsSink) -> Result<(f64, f64)> {
        let t = self.task.evaluate_on(set, sink)?;
        Ok((t.loss(), t.acc()))
    }

    /// Runs the remaining epochs, writing metrics, checkpoints and the genotype to `dir`. After
    /// an early stop the genotype is the one of the epoch the rule chose, and `dir` gets
    /// early_stop.json saying why.
    pub fn run(&mut self, dir: Option<&RunDir>, sink: &mut dyn MetricsSink, stop: &AtomicBool) -> Result<Genotype> {
        // Under data parallelism rank 0 alone writes.
        let dir = dir.filter(|_| dist::is_writer());
        if let Some(dir) = dir {
            dir.write_json(DATASET, &self.dataset)?;
        }
        self.epochs.run(&mut self.task, dir, sink, stop)?;
        let genotype = match self.task.early_stop() {
            Some((decision, genotype)) => {
                tracing::info!(
                    detected_epoch = decision.detected_epoch,
                    stop_epoch = decision.stop_epoch,
                    ratio = decision.current_average / decision.previous_average,
                    "DARTS-ES stopped the search; the genotype is the stop epoch's"
                );
                if let Some(dir) = dir {
                    dir.write_json(
                        EARLY_STOP,
                        &serde_json::to_value(decision).map_err(|e| Error::Internal(e.to_string()))?,
                    )?;
                }
                Genotype::from_json_value(genotype)
                    .map_err(|e| Error::Internal(format!("the stop epoch's genotype: {e}")))?
            }
            None => self.task.genotype()?,
        };
        if let Some(dir) = dir {
            dir.write_json(GENOTYPE, &genotype.to_json())?;
        }
        Ok(genotype)
    }

    /// Continues the run in `dir` from its checkpoint (or from the start when it has none),
    /// dropping metric records the checkpoint does not cover.
    pub fn resume(&mut self, dir: &RunDir) -> Result<Position> {
        self.epochs.resume(&mut self.task, dir)
    }

    /// The next stage of a run that widens one network (DrNAS): this search, whose supernet
    /// keeps some of `prev`'s ops at wider partial channels, takes over `prev`'s state — its
    /// weights and buffers grown by Net2Wider (`Supernet::widen_from`, indices from the stream
    /// of (seed, `stage`)), the weights' momentum grown alike, α and the method's state on the
    /// ops kept (`carry_arch`), and the network's random stream. `prev_dir` names the previous
    /// stage in errors.
    pub(crate) fn continue_from(&mut self, prev: &Search, stage: usize, prev_dir: &Path) -> Result<()> {
        let ctx = |e: &dyn std::fmt::Display| Error::checkpoint(prev_dir, format!("widening to stage {stage}: {e}"));
        let (old, new) = (prev.task.net.as_ref(), self.task.net.as_ref());
        let vars = old.weights().weights().len();
        let momentum: Vec<Option<Tensor>> = (0..vars).map(|i| prev.task.w_opt.momentum_buffer(i).cloned()).collect();
        let mut moms: HashMap<String, Tensor> =
            old.weights().split_by_param(&momentum).map_err(|e| ctx(&e))?.into_iter().collect();
        let mut state = NamedState::new();
        for p in old.weights().params() {
            let m = moms.remove(&p.name);
            state.insert(p.name.clone(), (p.value()?, m));
        }
        let mut rng = rng::stream(self.task.cfg.seed, Purpose::Widen, stage as u64, 0);
        let widened = new.widen_from(old, &state, &mut rng).map_err(|e| ctx(&e))?;
        let mut values = HashMap::new();
        let mut moms = HashMap::new();
        for (name, (v, m)) in widened {
            if let Some(m) = m {
                moms.insert(name.clone(), m);
            }
            values.insert(name, v);
        }
        new.weights().load(&values, false).map_err(|e| ctx(&e))?;
        let per_var = new.weights().join_by_var(&moms).map_err(|e| ctx(&e))?;
        self.task
            .w_opt
            .load_state("sgd", |n| {
                n.strip_prefix("sgd.")
                    .and_then(|i| i.parse::<usize>().ok())
                    .and_then(|i| per_var.get(i).cloned().flatten())
            })
            .map_err(|e| ctx(&e))?;
        let carry = carry_arch(old, new).map_err(|e| ctx(&e))?;
        let arch: HashMap<String, Tensor> =
            old.arch().named_tensors("").into_iter().map(|(n, t)| carry.tensor(&n, t)).collect::<Result<_>>()?;
        new.arch().load(&arch, false).map_err(|e| ctx(&e))?;
        let (tensors, meta) = prev.task.method.state()?;
        let tensors = tensors.into_iter().map(|(n, t)| carry.tensor(&n, t)).collect::<Result<_>>()?;
        let ck = LoadedTensors { tensors, metadata: meta.into_iter().collect() };
        self.task.method.restore(&ck, prev_dir)?;
        new.set_stream_position(old.stream_position());
        Ok(())
    }

    /// The search's device, supernet and data halves, for a run that continues from its
    /// weights (architecture selection, `crate::select`).
    pub(crate) fn into_parts(self) -> SearchParts {
        let t = self.task;
        SearchParts {
            device: t.device,
            net: t.net,
            train_set: t.train_set,
            valid_set: t.valid_set,
            normalize: t.normalize,
        }
    }
}

/// What a search leaves to a run on its supernet: its device, supernet and data halves.
pub(crate) struct SearchParts {
    pub device: Device,
    pub net: Box<dyn Supernet>,
    pub train_set: Samples,
    pub valid_set: Samples,
    pub normalize: Normalize,
}

impl SearchTask {
    /// The dropout rate after skip_connect in `epoch` (P-DARTS' schedule).
    fn skip_dropout(&self, epoch: usize) -> f64 {
        skip_dropout_rate(self.cfg.skip_dropout, epoch, self.cfg.epochs, self.cfg.arch_start_epoch)
    }

    fn plan(&self, epoch: usize, stream: u64) -> BatchPlan {
        BatchPlan {
            batch_size: self.cfg.data.batch_size,
            shuffle: true,
            drop_last: true,
            augment: self.augment(),
            seed: self.cfg.seed,
            epoch,
            stream,
        }
    }

    /// The training augmentation: DARTS' crop and flip, or PC-DARTS' ImageNet random resized
    /// crop and flip for images streamed from files.
    fn augment(&self) -> Augment {
        if self.train_set.streamed() {
            Augment::IMAGENET_SEARCH
        } else {
            Augment::CIFAR
        }
    }

    /// The genotype the search returns now.
    fn genotype(&self) -> Result<Genotype> {
        self.method.genotype(self.net.as_ref())
    }

    /// Whether the steps of the epoch read search-valid batches.
    fn reads_valid(&self, epoch: usize) -> bool {
        epoch >= self.cfg.arch_start_epoch && self.method.reads_valid()
    }

    /// An endless supply of search-valid batches for `epoch`'s end (ENAS' controller and the
    /// selection of a child): passes over the half in their own shuffles (stream 1000 + pass).
    fn end_batches(&self, epoch: usize) -> impl Iterator<Item = nas_core::Result<HostBatch>> {
        let (set, normalize) = (self.valid_set.clone(), self.normalize.clone());
        let plan = BatchPlan { augment: Augment::NONE, ..self.plan(epoch, 0) };
        (0u64..).flat_map(move |pass| {
            BatchIter::starting_at(
                set.clone(),
                normalize.clone(),
                BatchPlan { stream: 1000 + pass, ..plan },
                PREFETCH,
                0,
            )
        })
    }

    fn early_stop(&self) -> Option<&(EarlyStopDecision, Value)> {
        if self.cfg.early_stop == EarlyStop::DartsEs {
            self.eigenvalues.decision()
        } else {
            None
        }
    }

    /// The K − 1 training batches after the current one that each step of T-RAD unrolls
    /// through: from their own streams of the search-train half (stream 2 + p for the p-th
    /// pass over it), so that step s of the epoch always reads the same ones, also after a
    /// resume at step `first`.
    fn unroll_batches(
        &self,
        epoch: usize,
        first: usize,
        steps: usize,
    ) -> Box<dyn Iterator<Item = Vec<nas_core::Result<Vec<HostBatch>>>>> {
        let extra = self.method.extra_train_batches();
        if extra == 0 || steps == 0 {
            return Box::new(std::iter::repeat_with(Vec::new));
        }
        let start = first * extra;
        let (first_pass, offset) = (start / steps, start % steps);
        let (set, normalize, shard) = (self.train_set.clone(), self.normalize.clone(), self.shard());
        let plan = self.plan(epoch, 0);
        let mut batches = (first_pass..).flat_map(move |pass| {
            let plan = BatchPlan { stream: 2 + pass as u64, ..plan };
            let at = if pass == first_pass { offset } else { 0 };
            StepIter::new(set.clone(), normalize.clone(), plan, shard, PREFETCH, at)
        });
        Box::new(std::iter::from_fn(move || Some(batches.by_ref().take(extra).collect())))
    }

    /// This process's micro-batches of every step: `accumulate` of the step's
    /// accumulate × ranks batches.
    fn shard(&self) -> Shard {
        let world = dist::world();
        Shard::of_rank(world.rank(), world.size(), self.cfg.data.accumulate)
    }

    /// A step's micro-batches on the device, or the error that stopped assembling them.
    fn to_micro(&self, batches: nas_core::Result<Vec<HostBatch>>) -> Result<Vec<Batch>> {
        batches?.into_iter().map(|b| self.to_batch(b)).collect()
    }

    fn to_batch(&self, b: HostBatch) -> Result<Batch> {
        let (x, y) = b.to_device(&self.device)?;
        Ok(Batch { x, y })
    }

    /// The network in evaluation mode over `set`: the relaxed supernet, or the ops the method
    /// evaluates (a sampling method's: the child of the current genotype).
    fn evaluate_on(&self, set: &Samples, sink: &mut dyn MetricsSink) -> Result<Tally> {
        let net = self.net.as_ref();
        let (batch, device) = (self.cfg.data.batch_size, &self.device);
        match self.method.eval_sample(net)? {
            None => evaluate_set(set, &self.normalize, batch, device, sink, |x| net.forward(x, Mode::EVAL)),
            Some(sample) => {
                evaluate_set(set, &self.normalize, batch, device, sink, |x| net.forward_sampled(x, Mode::EVAL, &sample))
            }
        }
    }
}

/// A step's micro-batches as the loader assembled them (or its error).
type LoadedStep = nas_core::Result<Vec<HostBatch>>;

impl EpochTask for SearchTask {
    /// A search-train step (this process's micro-batches of it) and, once architecture updates
    /// are on, a search-valid step and the further training steps of an unrolled step.
    type Batch = (LoadedStep, Option<(LoadedStep, Vec<LoadedStep>)>);
    const CHECKPOINT_FORMAT: &'static str = "nas-search-checkpoint-3";
    const CHECKPOINT_KIND: &'static str = "search";

    fn begin_epoch(&mut self, epoch: usize, first: usize) -> Result<EpochBatches<Self::Batch>> {
        self.w_opt.set_lr(self.schedule.lr(epoch));
        self.net.set_skip_dropout(self.skip_dropout(epoch));
        self.method.begin_epoch(epoch);
        let shard = self.shard();
        let batches = |set: &Samples, stream| {
            StepIter::new(set.clone(), self.normalize.clone(), self.plan(epoch, stream), shard, PREFETCH, first)
        };
        let train = batches(&self.train_set, 0);
        let steps = first + train.remaining();
        let batches: Box<dyn Iterator<Item = Self::Batch>> = if self.reads_valid(epoch) {
            // The epoch ends with the shorter of the two halves.
            let arch = batches(&self.valid_set, 1).zip(self.unroll_batches(epoch, first, steps));
            Box::new(train.zip(arch.map(Some)))
        } else {
            Box::new(train.map(|t| (t, None)))
        };
        Ok(EpochBatches { steps, batches })
    }

    fn step(&mut self, epoch: usize, step: usize, (train, valid): Self::Batch) -> Result<StepOutput> {
        let train = self.to_micro(train)?;
        let (valid, more_train) = match valid {
            Some((vb, more)) => {
                let more = more.into_iter().map(|m| self.to_micro(m)).collect::<Result<Vec<_>>>()?;
                (Some(self.to_micro(vb)?), more)
            }
            None => (None, Vec::new()),
        };
        let w = WeightStep { opt: &mut self.w_opt, clip: self.cfg.weight_optimizer.grad_clip };
        let out =
            self.method.step(self.net.as_ref(), w, StepAt { epoch, step }, StepBatches { train, valid, more_train })?;
        Ok(StepOutput { loss: out.loss, correct: out.correct, n: out.n })
    }

    /// The method's end of the epoch, then the α-Hessian's eigenvalue at the epochs it is due,
    /// and DARTS-ES' rule.
    fn end_epoch(&mut self, epoch: usize) -> Result<()> {
        let mut batches = self.end_batches(epoch);
        let device = self.device.clone();
        let mut next = move || -> Result<Batch> {
            let b =
                batches.next().ok_or_else(|| Error::Data("the search-valid half has no full batch".to_string()))??;
            let (x, y) = b.to_device(&device)?;
            Ok(Batch { x, y })
        };
        self.method.end_epoch(self.net.as_ref(), epoch, &mut next)?;
        self.hessian_eig = None;
        let Some(batch) = &self.hessian_batch else { return Ok(()) };
        if !DartsEs::computes_at(self.cfg.hessian_every, epoch, self.cfg.epochs) {
            return Ok(());
        }
        let started = Instant::now();
        let ev = alpha_hessian_eigenvalue(self.net.as_ref(), batch, epoch as u64 ^ (self.cfg.seed << 20))?;
        tracing::info!(epoch, hessian_eig = ev, seconds = started.elapsed().as_secs_f64(), "α-Hessian eigenvalue");
        self.hessian_eig = Some(ev);
        self.eigenvalues.push(epoch, ev, self.net.genotype()?.to_json());
        Ok(())
    }

    fn stopped_early(&self) -> bool {
        self.early_stop().is_some()
    }

    fn evaluate(&mut self, sink: &mut dyn MetricsSink) -> Result<Tally> {
        self.evaluate_on(&self.valid_set, sink)
    }

    fn record_fields(&self, epoch: usize) -> Result<Map<String, Value>> {
        let mut fields = Map::new();
        fields.insert("lr".into(), json!(self.schedule.lr(epoch)));
        if let Some(stage) = self.cfg.stage {
            fields.insert("stage".into(), json!(stage));
        }
        if self.cfg.skip_dropout > 0.0 {
            fields.insert("skip_dropout".into(), json!(self.skip_dropout(epoch)));
        }
        if let Some(ev) = self.hessian_eig {
            fields.insert("hessian_eig".into(), json!(ev));
        }
        if let Some((d, _)) = self.early_stop().filter(|(d, _)| d.detected_epoch == epoch) {
            fields.insert("early_stop_epoch".into(), json!(d.stop_epoch));
        }
        self.method.record_fields(&mut fields);
        fields.insert("genotype".into(), self.genotype()?.to_json());
        if self.method.learns_alpha() {
            fields.insert("alpha".into(), self.net.arch_json()?);
        }
        Ok(fields)
    }

    /// Weights, buffers, α, the weight optimiser's state and the method's.
    fn checkpoint_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut tensors = supernet_checkpoint(self.net.as_ref(), &self.w_opt);
        tensors.extend(self.method.state()?.0);
        Ok(tensors)
    }

    fn checkpoint_meta(&self) -> Result<Vec<(String, String)>> {
        let mut meta = vec![("random_draws".to_string(), self.net.stream_position().to_string())];
        meta.extend(self.method.state()?.1);
        if self.hessian_batch.is_some() {
            meta.push((HESSIAN_META.to_string(), json!(self.eigenvalues.samples()).to_string()));
        }
        Ok(meta)
    }

    fn restore(&mut self, ck: &LoadedTensors, path: &Path) -> Result<()> {
        let ctx = |e: &dyn std::fmt::Display| Error::checkpoint(path, e.to_string());
        self.net.weights().load(&ck.with_prefix("weights."), false).map_err(|e| ctx(&e))?;
        self.net.arch().load(&ck.with_prefix("arch."), false).map_err(|e| ctx(&e))?;
        self.w_opt.load_state("sgd", |n| ck.tensors.get(n).cloned()).map_err(|e| ctx(&e))?;
        self.net.set_stream_position(ck.meta_parse(path, "random_draws")?);
        self.method.restore(ck, path)?;
        if self.hessian_batch.is_some() {
            let text = ck.meta(HESSIAN_META).ok_or_else(|| ctx(&format!("no {HESSIAN_META} in the checkpoint")))?;
            let samples: Vec<Sample> =
                serde_json::from_str(text).map_err(|e| ctx(&format!("{HESSIAN_META} of the checkpoint: {e}")))?;
            self.eigenvalues = DartsEs::replay(self.cfg.hessian_every, self.cfg.epochs, samples);
        }
        Ok(())
    }
}

/// How α and what has α's shape carry over to a supernet that keeps some of the ops: the
/// architecture parameters by name and position, and per α tensor (the first parameters, in
/// `Supernet::edge_ops`' order) the old column of each new column.
struct CarryArch {
    /// (name, old dims, new tensor) of every architecture parameter, in order.
    params: Vec<(String, Vec<usize>, Tensor)>,
    cols: Child,
}

fn carry_arch(old: &dyn Supernet, new: &dyn Supernet) -> Result<CarryArch> {
    let cols = column_map(&old.edge_ops(), &new.edge_ops())?;
    let (old_p, new_p) = (old.arch().params(), new.arch().params());
    if old_p.len() != new_p.len() || old_p.iter().zip(&new_p).any(|(a, b)| a.name != b.name) {
        return Err(Error::Internal("the two stages' architecture parameters differ".to_string()));
    }
    let params = old_p
        .iter()
        .zip(&new_p)
        .map(|(o, n)| Ok((n.name.clone(), o.dims().to_vec(), n.value()?)))
        .collect::<Result<_>>()?;
    Ok(CarryArch { params, cols })
}

impl CarryArch {
    /// The next stage's value of `t`, named `name`: an architecture parameter, or a tensor of
    /// the method's state named `….{j}` with the shape of parameter j (an optimiser's moment of
    /// it). An α tensor keeps the columns of the ops kept (other columns: the new supernet's
    /// values); anything else carries over as it is.
    fn tensor(&self, name: &str, t: Tensor) -> Result<(String, Tensor)> {
        let j = match self.params.iter().position(|(n, _, _)| n == name) {
            Some(j) => Some(j),
            None => name
                .rsplit_once('.')
                .and_then(|(_, j)| j.parse::<usize>().ok())
                .filter(|&j| self.params.get(j).is_some_and(|(_, dims, _)| dims.as_slice() == t.dims())),
        };
        let Some(j) = j.filter(|&j| j < self.cols.len()) else { return Ok((name.to_string(), t)) };
        let (_, _, init) = &self.params[j];
        let (dtype, device) = (t.dtype(), t.device().clone());
        let old = t.to_dtype(DType::F64)?.to_vec2::<f64>()?;
        let mut out = init.to_dtype(DType::F64)?.to_vec2::<f64>()?;
        for (e, cols) in self.cols[j].iter().enumerate() {
            for (c, &oc) in cols.iter().enumerate() {
                out[e][c] = old[e][oc];
            }
        }
        let out = Tensor::new(out, &device)?.to_dtype(dtype)?;
        Ok((name.to_string(), out))
    }
}

/// A supernet's weights, buffers and α and its weight optimiser's state, under the names a
/// search's checkpoint gives them (a selection's checkpoint too).
pub(crate) fn supernet_checkpoint(net: &dyn Supernet, w_opt: &Sgd) -> Vec<(String, Tensor)> {
    let mut tensors = net.weights().named_tensors("weights.");
    tensors.extend(net.arch().named_tensors("arch."));
    tensors.extend(w_opt.state("sgd"));
    tensors
}
