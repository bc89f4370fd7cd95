//! Progressive searches: a sequence of searches with any method of the relaxed supernet, in a
//! space with op sets per edge (darts), each a complete run in `stage-<s>/` of the run
//! directory with its own config, metrics and checkpoint; at the end of a stage every edge drops
//! its weakest ops (`Supernet::prune_ops`).
//!
//! P-DARTS (Chen et al. 2019, chenxin061/pdarts `train_search.py`): stage s builds a fresh
//! network of `layers[s]` cells over the op sets left by the previous stage, with fresh α,
//! optimisers and schedule; after the last stage the final cell is derived with the skip cap
//! (`Supernet::final_genotype`) and written to the run directory's genotype.json. Within a
//! stage the dropout after skip_connect follows P-DARTS' schedule (`skip_dropout_rate`).
//!
//! DrNAS (`net2wider`; xiangning-chen/DrNAS `DARTS-space/train_search.py`): the stages are the
//! epochs of one run of one network. Stage s + 1 starts from stage s's end
//! (`Search::continue_from`): the network with the kept ops widened to the stage's partial
//! channels (`Supernet::widen_from`), the weights' momentum widened alike, α and the
//! architecture optimiser on the kept ops, the random stream; its epochs continue the count and
//! the learning-rate schedule. The genotype is the last stage's.
//!
//! Resume: each stage resumes from its own checkpoint; a finished stage is reopened (its
//! checkpoint holds the final α and, for the next widening, everything else) to give the next
//! stage its op sets, so a run stopped in any stage or between two continues exactly (on CPU).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use nas_core::metrics::MetricsSink;
use search_spaces::{Genotype, OpsConfig};

use crate::config::{ProgressiveConfig, SearchConfig, ValidSearchConfig};
use crate::run_dir::{RunDir, CHECKPOINT, CONFIG, GENOTYPE};
use crate::search::Search;
use crate::{Error, Result};

/// The dropout rate after skip_connect in epoch `epoch` of a stage with base rate `rate`,
/// `epochs` epochs and α frozen for the first `frozen`: rate·(epochs − epoch − 1)/epochs while
/// α is frozen, then rate·exp(−0.2·(epoch − frozen)).
pub fn skip_dropout_rate(rate: f64, epoch: usize, epochs: usize, frozen: usize) -> f64 {
    if epoch < frozen {
        rate * (epochs as f64 - epoch as f64 - 1.0) / epochs as f64
    } else {
        rate * (-0.2 * (epoch - frozen) as f64).exp()
    }
}

/// A progressive search over the stages of its configuration.
pub struct Progressive {
    cfg: ValidSearchConfig,
}

impl Progressive {
    /// `cfg` must have `progressive` set.
    pub fn new(cfg: ValidSearchConfig) -> Result<Self> {
        if cfg.progressive.is_none() {
            return Err(Error::Internal("a progressive search needs `progressive` stages".to_string()));
        }
        let p = Self { cfg };
        p.check_stages()?;
        Ok(p)
    }

    fn stages(&self) -> &ProgressiveConfig {
        self.cfg.progressive.as_ref().expect("checked in new")
    }

    /// The run directory of stage `s`.
    pub fn stage_dir(dir: &RunDir, s: usize) -> PathBuf {
        dir.file(&format!("stage-{s}"))
    }

    /// The stages of the progressive run in `dir` that have begun (their run directory has
    /// its config), in order; none for any other run.
    pub fn begun_stages(dir: &RunDir) -> Result<Vec<RunDir>> {
        (0..)
            .map(|s| Self::stage_dir(dir, s))
            .take_while(|p| p.join(CONFIG).is_file())
            .map(|p| Ok(RunDir::open(&p)?))
            .collect()
    }

    /// The search of stage `s` over the op sets `ops` (None: the configured ones). With
    /// Net2Wider the stages are the epochs of one run: stage s of S stages of E epochs runs
    /// epochs s·E to (s+1)·E of S·E, α frozen for the first `arch_start_epoch` of them.
    fn stage_config(&self, s: usize, ops: Option<OpsConfig>) -> SearchConfig {
        let p = self.stages();
        let mut c = self.cfg.clone().into_inner();
        c.progressive = None;
        c.stage = Some(s);
        c.model.layers = p.layers_of(s, c.model.layers);
        c.model.space = c.model.space.for_stage(ops, p.partial_channels.get(s).copied());
        c.skip_dropout = p.skip_dropout_of(s);
        if p.net2wider {
            let e = c.epochs;
            c.first_epoch = s * e;
            c.end_epoch = Some((s + 1) * e);
            c.arch_start_epoch += s * e;
            c.epochs = p.stages() * e;
        }
        c
    }

    /// Checks every stage's settings before the first runs (partial channels that do not
    /// divide the channels, say), over the configured op sets.
    fn check_stages(&self) -> Result<()> {
        for s in 0..self.stages().stages() {
            self.stage_config(s, None).validate().map_err(|e| Error::config(format!("stage {s}: {e}")))?;
        }
        Ok(())
    }

    /// Runs (or continues) every stage in `dir`. `fresh`: a new run, whose stage directories
    /// from an earlier run in `dir` are removed first.
    pub fn run(&self, dir: &RunDir, fresh: bool, sink: &mut dyn MetricsSink, stop: &AtomicBool) -> Result<Genotype> {
        let p = self.stages();
        let stages = p.stages();
        if fresh {
            for s in 0..stages {
                let d = Self::stage_dir(dir, s);
                if d.exists() {
                    std::fs::remove_dir_all(&d).map_err(|e| Error::run_dir(&d, e.to_string()))?;
                }
            }
        }
        let mut ops: Option<OpsConfig> = None;
        // With Net2Wider, the finished previous stage, whose state the next one takes over.
        let mut prev: Option<Search> = None;
        for s in 0..stages {
            let cfg = self.stage_config(s, ops.take());
            let mut search = Search::new(cfg.clone().validate()?)?;
            let path = Self::stage_dir(dir, s);
            let stage_dir = if path.join(CONFIG).is_file() {
                let d = RunDir::open(&path)?.locked()?;
                let saved: SearchConfig = d.read_json(CONFIG)?;
                if saved != cfg {
                    return Err(Error::run_dir(
                        &path,
                        "this stage's config.json differs from what the run's settings give it",
                    ));
                }
                d
            } else {
                let d = RunDir::create(&path, false)?;
                d.write_json(CONFIG, &cfg)?;
                d
            };
            // A stage resumes from its checkpoint; a widening stage without one starts from the
            // previous stage's end, at its first epoch.
            let started = stage_dir.file(CHECKPOINT).is_file();
            search.resume(&stage_dir)?;
            if let Some(prev) = prev.take().filter(|_| !started) {
                search.continue_from(&prev, s, &Self::stage_dir(dir, s - 1))?;
                tracing::info!(stage = s, "the previous stage's network widened");
            }
            let genotype = search.run(Some(&stage_dir), sink, stop)?;
            if s + 1 < stages {
                let drop = p.ops_per_edge[s] - p.ops_per_edge[s + 1];
                ops = Some(search.net().prune_ops(drop).map_err(|e| Error::config(format!("after stage {s}: {e}")))?);
                tracing::info!(stage = s, kept = p.ops_per_edge[s + 1], "ops dropped");
                if p.net2wider {
                    prev = Some(search);
                }
                continue;
            }
            // DrNAS derives the last stage's genotype as any search does; P-DARTS its own way.
            let genotype =
                if p.net2wider { genotype } else { search.net().final_genotype(self.cfg.model.space.skip_cap())? };
            dir.write_json(GENOTYPE, &genotype.to_json())?;
            return Ok(genotype);
        }
        Err(Error::Internal("a progressive search without stages".to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropout_schedule_follows_the_reference_formulas() {
        let r = |e| skip_dropout_rate(0.4, e, 25, 10);
        // 0.4·24/25, 0.4·15/25, then 0.4·e^0 and 0.4·e^−1.
        for (got, want) in [(r(0), 0.384), (r(9), 0.24), (r(10), 0.4), (r(15), 0.147_151_776_468_576_93)] {
            assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        }
        assert_eq!(skip_dropout_rate(0.0, 3, 25, 10), 0.0);
    }
}
