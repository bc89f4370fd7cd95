//! The search loop (DARTS Alg. 1): every step updates α on a search-valid batch, then the
//! weights on a search-train batch; every epoch ends with an evaluation pass over the
//! search-valid half, the derived genotype, a metrics record and a checkpoint.
//!
//! Reproducibility: the data order and augmentation of an epoch depend only on (seed, epoch),
//! and the checkpoint holds weights, buffers, α, both optimiser states and the run's position
//! (epoch, step, running sums), so a run resumed from it continues exactly as the uninterrupted
//! run would (on CPU). Checkpoints are written at the end of every epoch and, when the run is
//! stopped (Ctrl-C), at the step where it stopped.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use nas_core::checkpoint::{load_tensors, save_tensors};
use nas_core::data::{Augment, BatchIter, BatchPlan, Dataset, ImageSet, LoadOptions, Normalize};
use nas_core::metrics::{Event, MetricsSink, Position, Tally};
use nas_core::nn::{accuracy_count, cross_entropy, Mode};
use nas_core::optim::{CosineAnnealing, Sgd};
use search_spaces::darts::{DartsSupernet, DartsSupernetConfig};
use search_spaces::{Genotype, Nb201Config, Nb201Network, Supernet};
use serde_json::json;

use crate::architect::Architect;
use crate::config::{Space, ValidSearchConfig};
use crate::error::{Error, Result};
use crate::run_dir::{RunDir, CHECKPOINT, GENOTYPE};
use crate::step::{weight_step, Batch};

const CHECKPOINT_FORMAT: &str = "nas-search-checkpoint-1";
const PREFETCH: usize = 2;

/// Builds the supernet a configuration describes.
pub fn build_supernet(
    cfg: &ValidSearchConfig,
    num_classes: usize,
    in_channels: usize,
    device: &Device,
) -> Result<Box<dyn Supernet>> {
    match cfg.space {
        Space::Darts => {
            let net_cfg = DartsSupernetConfig {
                channels: cfg.model.channels,
                layers: cfg.model.layers,
                num_classes,
                steps: cfg.model.steps,
                multiplier: cfg.model.steps,
                stem_multiplier: 3,
                in_channels,
                partial_channels: cfg.model.partial_channels,
                edge_norm: cfg.model.edge_norm,
                max_skip_connect: cfg.model.max_skip_connect,
            };
            Ok(Box::new(DartsSupernet::new(net_cfg, cfg.seed, DType::F32, device)?))
        }
        Space::Nb201 => {
            let net_cfg = Nb201Config {
                channels: cfg.model.channels,
                cells_per_stage: cfg.model.layers,
                num_classes,
                in_channels,
            };
            Ok(Box::new(Nb201Network::search(net_cfg, cfg.seed, DType::F32, device)?))
        }
    }
}

pub struct Search {
    cfg: ValidSearchConfig,
    device: Device,
    net: Box<dyn Supernet>,
    w_opt: Sgd,
    architect: Architect,
    train_set: Arc<ImageSet>,
    valid_set: Arc<ImageSet>,
    normalize: Normalize,
    schedule: CosineAnnealing,
    position: Position,
}

impl Search {
    /// Loads the data and builds the supernet and both optimisers.
    pub fn new(cfg: ValidSearchConfig) -> Result<Self> {
        let device = cfg.device.open()?;
        let data = Dataset::load(
            &cfg.data.spec,
            &LoadOptions { subset: cfg.data.subset, seed: cfg.seed, ..LoadOptions::default() },
        )?;
        let (train_set, valid_set) = data.search_split();
        if train_set.len() < cfg.data.batch_size {
            return Err(Error::Config(format!(
                "the search-train half has {} images, fewer than one batch of {}",
                train_set.len(),
                cfg.data.batch_size
            )));
        }
        tracing::info!(
            dataset = %data.name,
            search_train = train_set.len(),
            search_valid = valid_set.len(),
            classes = data.num_classes,
            "data loaded"
        );
        let net = build_supernet(&cfg, data.num_classes, data.train.channels, &device)?;
        tracing::info!(
            space = %cfg.space,
            weights = net.weights().num_weight_elements(),
            device = ?device,
            "supernet built"
        );
        let w = &cfg.weight_optimizer;
        let w_opt = Sgd::new(net.weights().weights(), w.sgd());
        let architect = Architect::new(
            net.weights().weights(),
            net.arch().weights(),
            &cfg.arch_optimizer,
            cfg.method,
            cfg.neumann_steps,
        );
        let schedule = w.schedule(cfg.epochs);
        Ok(Self {
            device,
            net,
            w_opt,
            architect,
            train_set,
            valid_set,
            normalize: data.normalize,
            schedule,
            position: Position::default(),
            cfg,
        })
    }

    pub fn config(&self) -> &ValidSearchConfig {
        &self.cfg
    }

    pub fn net(&self) -> &dyn Supernet {
        self.net.as_ref()
    }

    /// Where the run continues: the next epoch, and the step within it after an interruption.
    pub fn position(&self) -> Position {
        self.position
    }

    fn plan(&self, epoch: usize, stream: u64, augment: Augment, shuffle: bool, drop_last: bool) -> BatchPlan {
        BatchPlan {
            batch_size: self.cfg.data.batch_size,
            shuffle,
            drop_last,
            augment,
            seed: self.cfg.seed,
            epoch,
            stream,
        }
    }

    fn to_batch(&self, b: nas_core::data::HostBatch) -> Result<Batch> {
        let (x, y) = b.to_device(&self.device)?;
        Ok(Batch { x, y })
    }

    /// Trains the rest of the epoch at `self.position`; returns the running train loss and
    /// accuracy. A raised `stop` ends it before the next step with a checkpoint of the
    /// position (in `dir`) and `Error::Interrupted`.
    fn train_epoch(&mut self, dir: Option<&RunDir>, sink: &mut dyn MetricsSink, stop: &AtomicBool) -> Result<Tally> {
        let Position { epoch, step: first, mut tally } = self.position;
        let lr = self.schedule.lr(epoch);
        self.w_opt.set_lr(lr);
        let batches = |s: &Self, set: &Arc<ImageSet>, stream: u64| {
            let plan = s.plan(epoch, stream, Augment::CIFAR, true, true);
            BatchIter::starting_at(set.clone(), s.normalize.clone(), plan, PREFETCH, first)
        };
        let train = batches(self, &self.train_set, 0);
        let arch_on = epoch >= self.cfg.arch_start_epoch;
        let mut valid = arch_on.then(|| batches(self, &self.valid_set, 1));
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
            let tb = self.to_batch(hb)?;
            if let Some(v) = valid.as_mut() {
                let Some(vb) = v.next() else { break };
                let vb = self.to_batch(vb)?;
                self.architect.step(self.net.as_ref(), &tb, &vb, &self.w_opt)?;
            }
            let arch_done = Instant::now();
            let (loss, logits) =
                weight_step(self.net.as_ref(), &mut self.w_opt, &tb, self.cfg.weight_optimizer.grad_clip)?;
            tracing::debug!(epoch, step, weight_step_s = arch_done.elapsed().as_secs_f64(), "weight step");
            let loss = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !loss.is_finite() {
                return Err(Error::Diverged { epoch, step, loss });
            }
            tally.add(loss, accuracy_count(&logits, &tb.y)?, tb.y.dim(0)?);
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

    /// Loss and accuracy of the network in evaluation mode over `set` (no augmentation).
    pub fn evaluate(&self, set: &Arc<ImageSet>, sink: &mut dyn MetricsSink) -> Result<(f64, f64)> {
        let plan = self.plan(0, 2, Augment::NONE, false, false);
        let it = BatchIter::new(set.clone(), self.normalize.clone(), plan, PREFETCH);
        sink.event(Event::EvalStart { batches: it.remaining() });
        let mut tally = Tally::default();
        for hb in it {
            let b = self.to_batch(hb)?;
            let logits = self.net.forward(&b.x, Mode::EVAL)?;
            let loss = cross_entropy(&logits, &b.y)?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            tally.add(loss, accuracy_count(&logits, &b.y)?, b.y.dim(0)?);
        }
        Ok((tally.loss(), tally.acc()))
    }

    /// Runs the remaining epochs, writing metrics, checkpoints and the genotype to `dir`.
    pub fn run(&mut self, dir: Option<&RunDir>, sink: &mut dyn MetricsSink, stop: &AtomicBool) -> Result<Genotype> {
        while self.position.epoch < self.cfg.epochs {
            let epoch = self.position.epoch;
            let started = Instant::now();
            let train = self.train_epoch(dir, sink, stop)?;
            let (valid_loss, valid_acc) = self.evaluate(&self.valid_set.clone(), sink)?;
            if !valid_loss.is_finite() {
                // The last step left the weights unusable; the previous checkpoint stays.
                return Err(Error::DivergedValid { epoch, loss: valid_loss });
            }
            let genotype = self.net.genotype()?;
            let record = json!({
                "epoch": epoch,
                "train_loss": train.loss(),
                "train_acc": train.acc(),
                "valid_loss": valid_loss,
                "valid_acc": valid_acc,
                "lr": self.schedule.lr(epoch),
                "seconds": started.elapsed().as_secs_f64(),
                "genotype": genotype.to_json(),
                "alpha": self.net.arch_json()?,
            });
            self.position = Position::epoch_start(epoch + 1);
            if let Some(dir) = dir {
                dir.append_metrics(&record)?;
                self.save_checkpoint(&dir.file(CHECKPOINT))?;
                tracing::info!(epoch, path = %dir.file(CHECKPOINT).display(), "checkpoint written");
            }
            sink.event(Event::EpochEnd { record: &record });
        }
        let genotype = self.net.genotype()?;
        if let Some(dir) = dir {
            dir.write_json(GENOTYPE, &genotype.to_json())?;
        }
        Ok(genotype)
    }

    /// Writes weights, buffers, α, optimiser states and the run's position, atomically.
    pub fn save_checkpoint(&self, path: &Path) -> Result<()> {
        let mut tensors: Vec<(String, Tensor)> = Vec::new();
        tensors.extend(self.net.weights().named_tensors("weights."));
        tensors.extend(self.net.arch().named_tensors("arch."));
        tensors.extend(self.w_opt.state("sgd"));
        tensors.extend(self.architect.optimizer().state("adam"));
        let mut meta = HashMap::from([
            ("format".to_string(), CHECKPOINT_FORMAT.to_string()),
            ("adam_steps".to_string(), self.architect.optimizer().steps_taken().to_string()),
        ]);
        meta.extend(self.position.to_meta());
        Ok(save_tensors(path, &tensors, meta)?)
    }

    /// Restores a checkpoint written by `save_checkpoint`; returns the position to continue at.
    pub fn load_checkpoint(&mut self, path: &Path) -> Result<Position> {
        let ck = load_tensors(path, &self.device)?;
        if ck.meta("format") != Some(CHECKPOINT_FORMAT) {
            return Err(Error::run_dir(path, "not a search checkpoint of this version"));
        }
        let ctx = |e: nas_core::Error| Error::run_dir(path, e.to_string());
        self.net.weights().load(&ck.with_prefix("weights."), false).map_err(ctx)?;
        self.net.arch().load(&ck.with_prefix("arch."), false).map_err(ctx)?;
        self.w_opt.load_state("sgd", |n| ck.tensors.get(n).cloned())?;
        let steps: u64 = ck.meta_parse(path, "adam_steps")?;
        self.architect.optimizer_mut().load_state("adam", steps, |n| ck.tensors.get(n).cloned())?;
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
