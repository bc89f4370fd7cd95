//! `nas search`: resolve the configuration (preset, config file, flags), prepare the run
//! directory and run the search with progress output.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use nas_search::early_stop::EarlyStopDecision;
use nas_search::{Progressive, Search, SearchConfig};
use serde_json::Value;

use crate::config_flags::{self, ConfigFlags};
use crate::progress::Progress;
use crate::run_setup::{self, RunDirArgs};
use crate::tensorboard::TensorBoardArg;
use crate::Globals;

#[derive(Args, Debug, Default)]
#[command(allow_negative_numbers = true)]
pub struct SearchArgs {
    #[command(flatten)]
    settings: ConfigFlags<config_flags::Search>,
    /// JSON file of configuration values laid over the preset (see config.json of a run)
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    run: RunDirArgs,
    #[command(flatten)]
    tensorboard: TensorBoardArg,
    /// After the last epoch, select the architecture from the supernet (pt: DARTS-PT) in DIR/select-<M>
    #[arg(long, value_name = "M")]
    select: Option<nas_search::select::SelectMethod>,
    #[command(flatten)]
    select_settings: ConfigFlags<config_flags::Select>,
}

impl SearchArgs {
    /// The flags given, the preset's name taken out (it chooses where they are laid).
    fn overlay(&self) -> (Option<String>, Value) {
        let mut overlay = self.settings.overlay();
        let preset = overlay.as_object_mut().and_then(|o| o.remove("preset"));
        (preset.and_then(|p| p.as_str().map(str::to_string)), overlay)
    }

    /// Lays the flags that were given over `c`.
    fn apply(&self, c: &SearchConfig, overlay: &Value) -> anyhow::Result<SearchConfig> {
        if overlay.as_object().is_some_and(|o| o.is_empty()) {
            return Ok(c.clone());
        }
        Ok(c.with_overlay(overlay)?)
    }

    fn resolve(&self) -> anyhow::Result<SearchConfig> {
        let (preset, overlay) = self.overlay();
        let c = match &self.config {
            Some(path) => SearchConfig::from_file(preset.as_deref(), path)?,
            None => SearchConfig::preset(preset.as_deref().unwrap_or("darts-1st"))?,
        };
        self.apply(&c, &overlay)
    }
}

pub fn run(args: SearchArgs, g: &Globals) -> anyhow::Result<()> {
    // Everything that can fail on bad input (flags, config file, data) fails before the run
    // directory is touched, so a bad start leaves no half-written run behind.
    let (cfg, existing) = if args.run.resume {
        let (cfg, dir) = run_setup::reopen(
            args.run.out.as_deref(),
            |v| Ok(serde_json::from_value::<SearchConfig>(v)?),
            |saved| {
                let (preset, overlay) = args.overlay();
                if args.config.is_some() || preset.is_some() {
                    return args.resolve();
                }
                args.apply(&saved, &overlay)
            },
        )?;
        (cfg, Some(dir))
    } else {
        (args.resolve()?, None)
    };
    if cfg.progressive.is_some() {
        if args.select.is_some() {
            anyhow::bail!(
                "--select runs on a single-stage search: use `nas select --run DIR/stage-<s>` after a progressive one"
            );
        }
        return run_progressive(cfg, existing, &args, g);
    }
    let mut search = Search::new(cfg.clone().validate()?).context("cannot start the search")?;
    let mut progress = Progress::new(g.quiet).with_tensorboard(args.tensorboard.open()?);
    let dir = match existing {
        Some(dir) => run_setup::resume(dir, &mut progress, |d| search.resume(d))?,
        None => run_setup::create(args.run.out.clone(), "search", args.run.force, &cfg)?,
    };
    let stop = run_setup::stop_flag();
    let genotype = run_setup::finished("search", &dir, search.run(Some(&dir), &mut progress, &stop))?;
    drop(progress);
    report(&genotype, &dir, &dir)?;
    match args.select {
        Some(method) => {
            drop(search);
            // The selection's events go to DIR/select-<M> of --tensorboard, as its run lies in
            // the search's.
            let tensorboard = TensorBoardArg {
                tensorboard: args.tensorboard.tensorboard.map(|d| nas_search::select::select_dir(&d, method)),
            };
            crate::select_cmd::after_search(method, dir.path(), &args.select_settings.overlay(), &tensorboard, g)
        }
        None => Ok(()),
    }
}

/// Prints the genotype, the final validation accuracy recorded in `last_run` and where the
/// genotype file of `dir` is.
fn report(
    genotype: &search_spaces::Genotype,
    last_run: &nas_search::RunDir,
    dir: &nas_search::RunDir,
) -> anyhow::Result<()> {
    let last = last_run.read_metrics()?.pop();
    let acc = last.as_ref().and_then(|r| r.get("valid_acc")).and_then(|v| v.as_f64());
    let mut text = format!("{genotype}");
    if let Some(acc) = acc {
        text.push_str(&format!("final valid_acc: {acc:.4}\n"));
    }
    let early = last_run.file(nas_search::search::EARLY_STOP);
    if let Ok(stop) = std::fs::read_to_string(&early) {
        let stop: EarlyStopDecision = serde_json::from_str(&stop).with_context(|| format!("{}", early.display()))?;
        text.push_str(&format!(
            "stopped early ({}) at epoch {}: the α-Hessian's eigenvalue grew {:.2}x; genotype of epoch {}\n",
            stop.rule,
            stop.detected_epoch,
            stop.current_average / stop.previous_average,
            stop.stop_epoch
        ));
    }
    text.push_str(&format!("genotype: {}\n", dir.file(nas_search::run_dir::GENOTYPE).display()));
    crate::out(&text)
}

/// A progressive (P-DARTS) search: its stages run in `stage-<s>/` of the run directory.
fn run_progressive(
    cfg: SearchConfig,
    existing: Option<nas_search::RunDir>,
    args: &SearchArgs,
    g: &Globals,
) -> anyhow::Result<()> {
    let progressive = Progressive::new(cfg.clone().validate()?).context("cannot start the search")?;
    let mut progress = Progress::new(g.quiet).with_tensorboard(args.tensorboard.open()?);
    let fresh = existing.is_none();
    let dir = match existing {
        Some(dir) => dir,
        None => run_setup::create(args.run.out.clone(), "search", args.run.force, &cfg)?,
    };
    let stop = run_setup::stop_flag();
    let result = progressive.run(&dir, fresh, &mut progress, &stop);
    drop(progress);
    // The stage the run is in (or ended in): the last that has begun.
    let stage = match Progressive::begun_stages(&dir)?.pop() {
        Some(stage) => stage,
        None => nas_search::RunDir::open(dir.path())?,
    };
    let genotype = run_setup::finished_in("search", &dir, &stage, result)?;
    report(&genotype, &stage, &dir)
}
