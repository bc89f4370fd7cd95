//! DARTS-PT: perturbation-based architecture selection (Wang et al., "Rethinking Architecture
//! Selection in Differentiable NAS", ICLR 2021), following the reference code
//! (ruocwang/darts-pt: `sota/cnn/projection.py` with `model_search_darts_proj.py` for the
//! darts space, `nasbench201/projection.py` for NAS-Bench-201).
//!
//! The supernet of a finished search (any method) is fine-tuned with the weight learning rate
//! divided by 10 while its edges are decided one at a time. The mixing weights of α tensor t are
//! an (E, ops) matrix: softmax(α) on undecided edges, the one-hot of the kept op on decided
//! ones, zeros on edges a node dropped. Every `interval` epochs, before the epoch's steps:
//!
//! - op projection (one random undecided edge per α tensor, normal then reduce): each op of
//!   the edge is removed in turn (its column zeroed, the others not renormalised) and the
//!   supernet evaluated on the search-valid half with batch statistics and no gradients; the
//!   op whose removal leaves the lowest accuracy is kept (the first of equal ones), the edge
//!   becomes its one-hot;
//! - topology projection (darts space, once every edge is decided; one random node with more
//!   than two inputs per α tensor): the edge whose removal (its row zeroed) leaves the highest
//!   accuracy is dropped (the last of equal ones), repeatedly, until two are left.
//!
//! Schedule (the reference's): darts, E edges and N nodes with a choice: E + N projections at
//! epochs 0, I, 2I, … and the last, over I·(E + N − 1) + 1 epochs, the learning rate
//! cosine-annealed from lr/10 to the search's lr_min; nb201: E projections at epochs 0, I, …
//! and the last, over I·(E − 1) epochs, at a constant lr/10. α keeps taking first-order DARTS
//! steps (Adam, the search's settings, fresh moments) on a search-valid batch before every
//! weight step, through the projected weights, unless frozen (`freeze_alpha`, the reference's
//! `blank-proj`). Each epoch ends with an evaluation of the projected supernet (running
//! statistics) like a search's.
//!
//! Departures, documented: the darts space here has `none` on every edge while the reference's
//! DARTS space (`s5`) has not, so `none` is never a candidate there (removing it changes
//! nothing, and a genotype cannot hold it); nb201 candidates include `none` as the reference's.
//! At an interval of 1 the nb201 formula gives E − 1 epochs for E projections, so the run has E
//! epochs. The projection batches are the search-valid half in order without augmentation
//! (the reference's valid queue is shuffled and augmented); the edge draws come from the
//! run's seed (stream `Sample`, keyed by projection and cell type). The reference's fine-tuning
//! continues the search's Adam moments; here they start fresh.
//!
//! Records: each epoch's metrics carry `pt` (the decisions of that epoch: for an op, the cell,
//! edge, kept op and every candidate's accuracy after its removal; for a node, the cell, node,
//! kept and dropped inputs), `pt_decided` (decisions so far) and the projected genotype.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use candle_core::{Device, Tensor};
use nas_core::checkpoint::{load_tensors, LoadedTensors};
use nas_core::data::{Augment, BatchIter, BatchPlan, Normalize, Samples, Shard, StepIter};
use nas_core::dist;
use nas_core::epoch::{evaluate_set, EpochBatches, EpochLoop, EpochTask, StepOutput, PREFETCH};
use nas_core::metrics::{MetricsSink, Position, Tally};
use nas_core::nn::Mode;
use nas_core::optim::{LrSchedule, ScheduleKind, Sgd};
use nas_core::rng::{self, Purpose};
use nas_core::run_dir::CHECKPOINT;
use rand::Rng as _;
use search_spaces::{ArchSample, Genotype, Supernet};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::projection::EDGE_DRAW;
pub use super::projection::{
    batch_accuracy, NodeDecision, OpDecision, Projection, Removal, DECISIONS_CHART, PROJECTION_MODE,
};
use super::ValidSelectConfig;
use crate::method::sampling::micro_output;
use crate::method::ArchAdam;
use crate::run_dir::{RunDir, GENOTYPE};
use crate::search::{supernet_checkpoint, Search};
use crate::step::{weight_step, Batch};
use crate::{Error, Result};

/// When the projections of a run happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub epochs: usize,
    pub interval: usize,
    /// Projections in all (op projections, then topology projections).
    pub projections: usize,
    pub op_projections: usize,
}

impl Schedule {
    /// The reference's schedule for `edges` op projections and `nodes` topology projections.
    pub fn new(edges: usize, nodes: usize, interval: usize) -> Self {
        let projections = edges + nodes;
        let epochs = if nodes > 0 {
            interval * projections.saturating_sub(1) + 1
        } else if interval == 1 {
            projections
        } else {
            interval * projections.saturating_sub(1)
        };
        Self { epochs, interval, projections, op_projections: edges }
    }

    /// The projection (its index) that happens before the steps of `epoch`.
    pub fn at(&self, epoch: usize) -> Option<usize> {
        if epoch + 1 == self.epochs {
            self.projections.checked_sub(1)
        } else if epoch.is_multiple_of(self.interval) && epoch / self.interval + 1 < self.projections {
            Some(epoch / self.interval)
        } else {
            None
        }
    }
}

/// A DARTS-PT selection run.
pub struct PtSelect {
    task: PtTask,
    epochs: EpochLoop,
}

/// What a projection's decision is, for the records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Decision {
    Op(OpDecision),
    Node(NodeDecision),
}

/// The checkpoint metadata of the projection state.
const STATE_META: &str = "pt_state";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    projection: Projection,
    done: usize,
    epoch_decisions: Vec<Decision>,
}

struct PtTask {
    cfg: ValidSelectConfig,
    device: Device,
    net: Box<dyn Supernet>,
    w_opt: Sgd,
    adam: Option<ArchAdam>,
    train_set: Samples,
    valid_set: Samples,
    normalize: Normalize,
    lr: LrSchedule,
    schedule: Schedule,
    state: State,
}

impl PtSelect {
    /// Loads the search's data and its trained supernet (the checkpoint of `cfg.source`).
    pub fn new(cfg: ValidSelectConfig) -> Result<Self> {
        let parts = Search::new(cfg.search().clone())?.into_parts();
        let net = parts.net;
        if net.arch().params().iter().any(|p| p.name.starts_with("betas")) {
            return Err(Error::config(
                "DARTS-PT selection runs the supernet with projected op weights, which has no edge normalisation (β): \
                 select on a search without edge normalisation",
            ));
        }
        let source = RunDir::open(&cfg.config().source)?;
        let ck_path = source.file(CHECKPOINT);
        if !ck_path.exists() {
            return Err(Error::run_dir(&ck_path, "the search has no checkpoint to select from"));
        }
        let ck = load_tensors(&ck_path, &parts.device)?;
        let at = ck.position(&ck_path)?;
        let s = cfg.search();
        if at.epoch < s.epochs && !source.file(crate::search::EARLY_STOP).exists() {
            return Err(Error::run_dir(
                source.path(),
                format!(
                    "the search has not finished (epoch {} of {}): resume it first (nas search --resume --out {})",
                    at.epoch,
                    s.epochs,
                    source.path().display()
                ),
            ));
        }
        let bad = |e: &dyn std::fmt::Display| Error::checkpoint(&ck_path, e.to_string());
        net.weights().load(&ck.with_prefix("weights."), false).map_err(|e| bad(&e))?;
        net.arch().load(&ck.with_prefix("arch."), false).map_err(|e| bad(&e))?;
        net.set_stream_position(ck.meta_parse(&ck_path, "random_draws")?);
        Self::with_net(cfg, parts.device, net, parts.train_set, parts.valid_set, parts.normalize)
    }

    fn with_net(
        cfg: ValidSelectConfig,
        device: Device,
        net: Box<dyn Supernet>,
        train_set: Samples,
        valid_set: Samples,
        normalize: Normalize,
    ) -> Result<Self> {
        let s = cfg.search();
        let projection = Projection::new(net.as_ref());
        let (edges, nodes) = projection.counts();
        let schedule = Schedule::new(edges, nodes, cfg.config().pt.interval);
        let w = &s.weight_optimizer;
        let mut sgd = w.clone();
        sgd.lr = w.lr / 10.0;
        let w_opt = sgd.optimizer(net.weights().weights());
        // The reference anneals to lr_min in the darts space and keeps lr/10 in nb201.
        let lr = if nodes > 0 {
            LrSchedule {
                kind: ScheduleKind::Cosine,
                max_lr: sgd.lr,
                min_lr: w.lr_min,
                epochs: schedule.epochs,
                warmup_epochs: 0,
            }
        } else {
            LrSchedule {
                kind: ScheduleKind::Step { gamma: 1.0 },
                max_lr: sgd.lr,
                min_lr: sgd.lr,
                epochs: schedule.epochs,
                warmup_epochs: 0,
            }
        };
        let adam = (!cfg.config().pt.freeze_alpha).then(|| ArchAdam::new(net.arch().weights(), &s.arch_optimizer));
        let epochs = EpochLoop::new(schedule.epochs, &device);
        let state = State { projection, done: 0, epoch_decisions: Vec::new() };
        let task = PtTask { cfg, device, net, w_opt, adam, train_set, valid_set, normalize, lr, schedule, state };
        Ok(Self { task, epochs })
    }

    pub fn schedule(&self) -> Schedule {
        self.task.schedule
    }

    pub fn net(&self) -> &dyn Supernet {
        self.task.net.as_ref()
    }

    pub fn projection(&self) -> &Projection {
        &self.task.state.projection
    }

    /// Runs the remaining epochs, writing metrics, checkpoints and, at the end, the genotype
    /// to `dir`.
    pub fn run(&mut self, dir: Option<&RunDir>, sink: &mut dyn MetricsSink, stop: &AtomicBool) -> Result<Genotype> {
        let dir = dir.filter(|_| dist::is_writer());
        self.epochs.run(&mut self.task, dir, sink, stop)?;
        let genotype = self.task.state.projection.genotype(self.task.net.as_ref())?;
        if let Some(dir) = dir {
            dir.write_json(GENOTYPE, &genotype.to_json())?;
        }
        Ok(genotype)
    }

    /// Continues the selection in `dir` from its checkpoint (or from the start).
    pub fn resume(&mut self, dir: &RunDir) -> Result<Position> {
        self.epochs.resume(&mut self.task, dir)
    }
}

impl PtTask {
    fn shard(&self) -> Shard {
        let world = dist::world();
        Shard::of_rank(world.rank(), world.size(), self.cfg.search().data.accumulate)
    }

    fn plan(&self, epoch: usize, stream: u64) -> BatchPlan {
        BatchPlan {
            batch_size: self.cfg.search().data.batch_size,
            shuffle: true,
            drop_last: true,
            augment: if self.train_set.streamed() { Augment::IMAGENET_SEARCH } else { Augment::CIFAR },
            seed: self.cfg.search().seed,
            epoch,
            stream,
        }
    }

    fn to_micro(&self, batches: nas_core::Result<Vec<nas_core::data::HostBatch>>) -> Result<Vec<Batch>> {
        batches?
            .into_iter()
            .map(|b| {
                let (x, y) = b.to_device(&self.device)?;
                Ok(Batch { x, y })
            })
            .collect()
    }

    /// One evaluation of projected weights over the search-valid half in order (or its first
    /// `eval_batches` batches), with batch statistics.
    fn evaluate_projected(&self, weights: &[Tensor]) -> Result<(usize, usize)> {
        let plan = BatchPlan {
            batch_size: self.cfg.search().data.batch_size,
            shuffle: false,
            drop_last: false,
            augment: Augment::NONE,
            seed: self.cfg.search().seed,
            epoch: 0,
            stream: 3,
        };
        let it = BatchIter::new(self.valid_set.clone(), self.normalize.clone(), plan, PREFETCH);
        let limit = self.cfg.config().pt.eval_batches.unwrap_or(usize::MAX);
        let (mut correct, mut n) = (0, 0);
        for hb in it.take(limit) {
            let (x, y) = hb?.to_device(&self.device)?;
            let (c, m) = batch_accuracy(self.net.as_ref(), weights, &[Batch { x, y }])?;
            correct += c;
            n += m;
        }
        if n == 0 {
            return Err(Error::Data("the search-valid half has no images to evaluate projections on".into()));
        }
        Ok((correct, n))
    }

    /// Projection `k`: op projections first, then topology projections, one per α tensor.
    fn project(&mut self, k: usize) -> Result<Vec<Decision>> {
        let seed = self.cfg.search().seed;
        let mut proj = self.state.projection.clone();
        let mut decisions = Vec::new();
        let net = self.net.as_ref();
        for t in 0..proj.cells() {
            let mut rng = rng::stream(seed, Purpose::Sample, k as u64, EDGE_DRAW + t as u64);
            let mut eval = |w: &[Tensor]| self.evaluate_projected(w);
            if k < self.schedule.op_projections {
                let edges = proj.undecided_edges(t);
                if edges.is_empty() {
                    continue;
                }
                let e = edges[rng.random_range(0..edges.len())];
                let d = proj.project_op(net, t, e, &mut eval)?;
                tracing::info!(cell = t, edge = e, op = %d.op, "pt: op projected");
                decisions.push(Decision::Op(d));
            } else {
                let nodes = proj.undecided_nodes(t);
                if nodes.is_empty() {
                    continue;
                }
                let node = nodes[rng.random_range(0..nodes.len())];
                let d = proj.project_node(net, t, node, &mut eval)?;
                tracing::info!(cell = t, node, kept = ?d.kept, "pt: node projected");
                decisions.push(Decision::Node(d));
            }
        }
        self.state.projection = proj;
        Ok(decisions)
    }
}

type LoadedStep = nas_core::Result<Vec<nas_core::data::HostBatch>>;

impl EpochTask for PtTask {
    type Batch = (LoadedStep, Option<LoadedStep>);
    const CHECKPOINT_FORMAT: &'static str = "nas-select-pt-checkpoint-1";
    const CHECKPOINT_KIND: &'static str = "DARTS-PT selection";

    fn begin_epoch(&mut self, epoch: usize, first: usize) -> Result<EpochBatches<Self::Batch>> {
        self.w_opt.set_lr(self.lr.lr(epoch));
        if first == 0 {
            self.state.epoch_decisions.clear();
            if let Some(k) = self.schedule.at(epoch).filter(|&k| k == self.state.done) {
                self.state.epoch_decisions = self.project(k)?;
                self.state.done += 1;
            }
        }
        let shard = self.shard();
        let batches = |set: &Samples, stream| {
            StepIter::new(set.clone(), self.normalize.clone(), self.plan(epoch, stream), shard, PREFETCH, first)
        };
        let train = batches(&self.train_set, 0);
        let steps = first + train.remaining();
        let batches: Box<dyn Iterator<Item = Self::Batch>> = if self.adam.is_some() {
            Box::new(train.zip(batches(&self.valid_set, 1).map(Some)))
        } else {
            Box::new(train.map(|t| (t, None)))
        };
        Ok(EpochBatches { steps, batches })
    }

    fn step(&mut self, _epoch: usize, _step: usize, (train, valid): Self::Batch) -> Result<StepOutput> {
        let train = self.to_micro(train)?;
        let net = self.net.as_ref();
        let proj = &self.state.projection;
        let valid = valid.map(|v| self.to_micro(v)).transpose()?;
        if let (Some(adam), Some(valid)) = (self.adam.as_mut(), valid) {
            let arch = net.arch().weights();
            let sample = ArchSample {
                weights: Some(proj.weights(net, Mode::TRAIN_ARCH, Removal::None)?),
                chosen: None,
                add_unchosen: false,
            };
            let g =
                dist::step_grads(&valid, &[&arch], |b| micro_output(net, b, Mode::TRAIN_ARCH, Some(&sample), None))?;
            adam.step(&g.grads[0])?;
        }
        let sample = ArchSample {
            weights: Some(proj.weights(net, Mode::TRAIN_WEIGHTS, Removal::None)?),
            chosen: None,
            add_unchosen: false,
        };
        let clip = self.cfg.search().weight_optimizer.grad_clip;
        let out = weight_step(net, &mut self.w_opt, &train, clip, Some(&sample))?;
        Ok(StepOutput { loss: out.loss, correct: out.correct, n: out.n })
    }

    fn evaluate(&mut self, sink: &mut dyn MetricsSink) -> Result<Tally> {
        let net = self.net.as_ref();
        let weights = self.state.projection.weights(net, Mode::EVAL, Removal::None)?;
        let sample = ArchSample { weights: Some(weights), chosen: None, add_unchosen: false };
        let s = self.cfg.search();
        evaluate_set(&self.valid_set, &self.normalize, s.data.batch_size, &self.device, sink, |x| {
            net.forward_sampled(x, Mode::EVAL, &sample)
        })
    }

    fn record_fields(&self, epoch: usize) -> Result<Map<String, Value>> {
        let mut fields = Map::new();
        fields.insert("lr".into(), json!(self.lr.lr(epoch)));
        if !self.state.epoch_decisions.is_empty() {
            fields.insert("pt".into(), json!(self.state.epoch_decisions));
        }
        fields.insert("pt_decided".into(), json!(self.state.done));
        fields.insert("genotype".into(), self.state.projection.genotype(self.net.as_ref())?.to_json());
        if self.adam.is_some() {
            fields.insert("alpha".into(), self.net.arch_json()?);
        }
        Ok(fields)
    }

    fn checkpoint_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut tensors = supernet_checkpoint(self.net.as_ref(), &self.w_opt);
        if let Some(adam) = &self.adam {
            tensors.extend(adam.state().0);
        }
        Ok(tensors)
    }

    fn checkpoint_meta(&self) -> Result<Vec<(String, String)>> {
        let mut meta = vec![
            ("random_draws".to_string(), self.net.stream_position().to_string()),
            (STATE_META.to_string(), serde_json::to_string(&self.state).map_err(|e| Error::Internal(e.to_string()))?),
        ];
        if let Some(adam) = &self.adam {
            meta.extend(adam.state().1);
        }
        Ok(meta)
    }

    fn restore(&mut self, ck: &LoadedTensors, path: &Path) -> Result<()> {
        let ctx = |e: &dyn std::fmt::Display| Error::checkpoint(path, e.to_string());
        self.net.weights().load(&ck.with_prefix("weights."), false).map_err(|e| ctx(&e))?;
        self.net.arch().load(&ck.with_prefix("arch."), false).map_err(|e| ctx(&e))?;
        self.w_opt.load_state("sgd", |n| ck.tensors.get(n).cloned()).map_err(|e| ctx(&e))?;
        self.net.set_stream_position(ck.meta_parse(path, "random_draws")?);
        if let Some(adam) = &mut self.adam {
            adam.restore(ck, path)?;
        }
        let text = ck.meta(STATE_META).ok_or_else(|| ctx(&format!("no {STATE_META} in the checkpoint")))?;
        self.state = serde_json::from_str(text).map_err(|e| ctx(&format!("{STATE_META}: {e}")))?;
        Ok(())
    }
}
