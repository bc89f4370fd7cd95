//! P-DARTS' progressive search (Chen et al. 2019, chenxin061/pdarts `train_search.py`): a
//! sequence of searches with any method of the relaxed supernet, in a space with op sets per
//! edge (darts), each a complete run in `stage-<s>/` of the run directory with its own config,
//! metrics and checkpoint. Stage s builds a fresh network of `layers[s]` cells over the op sets
//! left by the previous stage, with fresh α, optimisers and schedule; at its end every edge
//! drops its weakest ops (`Supernet::prune_ops`), and after the last stage the final cell is
//! derived with the skip cap (`Supernet::final_genotype`) and written to the run directory's
//! genotype.json. Within a stage the dropout after skip_connect follows P-DARTS' schedule
//! (`skip_dropout_rate`).
//!
//! Resume: each stage resumes from its own checkpoint; a finished stage is reopened (its
//! checkpoint holds the final α) to give the next stage its op sets, so a run stopped in any
//! stage or between two continues exactly (on CPU).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use nas_core::metrics::MetricsSink;
use search_spaces::{Genotype, OpsConfig};

use crate::config::{ProgressiveConfig, SearchConfig, ValidSearchConfig};
use crate::run_dir::{RunDir, CONFIG, GENOTYPE};
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
        Ok(Self { cfg })
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

    /// The search of stage `s` over the op sets `ops` (None: the configured ones).
    fn stage_config(&self, s: usize, ops: Option<OpsConfig>) -> SearchConfig {
        let p = self.stages();
        let mut c = self.cfg.clone().into_inner();
        c.progressive = None;
        c.stage = Some(s);
        c.model.layers = p.layers[s];
        c.model.space = c.model.space.for_stage(ops);
        c.skip_dropout = p.skip_dropout[s];
        c
    }

    /// Runs (or continues) every stage in `dir`. `fresh`: a new run, whose stage directories
    /// from an earlier run in `dir` are removed first.
    pub fn run(&self, dir: &RunDir, fresh: bool, sink: &mut dyn MetricsSink, stop: &AtomicBool) -> Result<Genotype> {
        let p = self.stages();
        let stages = p.layers.len();
        if fresh {
            for s in 0..stages {
                let d = Self::stage_dir(dir, s);
                if d.exists() {
                    std::fs::remove_dir_all(&d).map_err(|e| Error::run_dir(&d, e.to_string()))?;
                }
            }
        }
        let mut ops: Option<OpsConfig> = None;
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
                search.resume(&d)?;
                d
            } else {
                let d = RunDir::create(&path, false)?;
                d.write_json(CONFIG, &cfg)?;
                d
            };
            search.run(Some(&stage_dir), sink, stop)?;
            if s + 1 < stages {
                let drop = p.ops_per_edge[s] - p.ops_per_edge[s + 1];
                ops = Some(search.net().prune_ops(drop).map_err(|e| Error::config(format!("after stage {s}: {e}")))?);
                tracing::info!(stage = s, kept = p.ops_per_edge[s + 1], "ops dropped");
                continue;
            }
            let genotype = search.net().final_genotype(self.cfg.model.space.skip_cap())?;
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
