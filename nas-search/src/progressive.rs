//! P-DARTS' progressive search (Chen et al. 2019, chenxin061/pdarts `train_search.py`): a
//! sequence of searches of the darts space, each a complete run in `stage-<s>/` of the run
//! directory with its own config, metrics and checkpoint. Stage s builds a fresh network of
//! `layers[s]` cells over the op sets left by the previous stage, with fresh α, optimisers and
//! schedule; at its end every edge drops its weakest ops (`pdarts::drop_weakest`), and after
//! the last stage the final cell is derived with the skip cap (`pdarts::derive_final`) and
//! written to the run directory's genotype.json.
//!
//! Resume: each stage resumes from its own checkpoint; a finished stage is reopened (its
//! checkpoint holds the final α) to give the next stage its op sets, so a run stopped in any
//! stage or between two continues exactly (on CPU).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use nas_core::metrics::MetricsSink;
use search_spaces::darts::{pdarts, DartsGenotype, DartsOpSets, DartsSupernet};
use search_spaces::Genotype;

use crate::config::{ProgressiveConfig, SearchConfig, ValidSearchConfig};
use crate::run_dir::{RunDir, CONFIG, GENOTYPE};
use crate::search::Search;
use crate::{Error, Result};

/// The darts supernet of a stage's search.
fn darts(search: &Search) -> Result<&DartsSupernet> {
    search
        .net()
        .as_any()
        .downcast_ref::<DartsSupernet>()
        .ok_or_else(|| Error::config("a progressive search needs the darts space"))
}

/// A progressive search over the stages of its configuration.
pub struct Progressive {
    cfg: ValidSearchConfig,
}

impl Progressive {
    /// `cfg` must have `progressive` set.
    pub fn new(cfg: ValidSearchConfig) -> Result<Self> {
        if cfg.progressive.is_none() {
            return Err(Error::config("a progressive search needs `progressive` stages"));
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
    fn stage_config(&self, s: usize, ops: Option<&DartsOpSets>) -> SearchConfig {
        let p = self.stages();
        let mut c = self.cfg.clone().into_inner();
        c.progressive = None;
        c.stage = Some(s);
        c.model.layers = p.layers[s];
        c.model.max_skip_connect = None;
        c.skip_dropout = p.skip_dropout[s];
        if let Some(ops) = ops {
            c.model.ops = Some(ops.to_config());
        }
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
        let mut ops: Option<DartsOpSets> = None;
        for s in 0..stages {
            let cfg = self.stage_config(s, ops.as_ref());
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
            let net = darts(&search)?;
            let (sets, [wn, wr]) = (net.op_sets().clone(), net.op_weights()?);
            if s + 1 < stages {
                let drop = p.ops_per_edge[s] - p.ops_per_edge[s + 1];
                let cell = |ops: &[Vec<_>], w: &[Vec<f32>]| {
                    pdarts::drop_weakest(ops, w, drop, false)
                        .map_err(|e| Error::config(format!("after stage {s}: {e}")))
                };
                ops = Some(DartsOpSets { normal: cell(&sets.normal, &wn)?, reduce: cell(&sets.reduce, &wr)? });
                tracing::info!(stage = s, kept = p.ops_per_edge[s + 1], "ops dropped");
                continue;
            }
            let steps = self.cfg.model.steps;
            let concat: Vec<usize> = (2..2 + steps).collect();
            let genotype: Genotype = DartsGenotype {
                normal: pdarts::derive_final(&sets.normal, &wn, steps, self.cfg.model.max_skip_connect),
                normal_concat: concat.clone(),
                reduce: pdarts::derive_final(&sets.reduce, &wr, steps, None),
                reduce_concat: concat,
            }
            .into();
            dir.write_json(GENOTYPE, &genotype.to_json())?;
            return Ok(genotype);
        }
        Err(Error::config("a progressive search needs at least one stage"))
    }
}
