//! `nas select --run DIR --method pt`: architecture selection on the trained supernet of a
//! finished search (DARTS-PT, `nas_search::select`), in its own run directory (by default
//! DIR/select-pt/) so that the search's files stay as they are; `--resume` continues an
//! interrupted selection.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use nas_search::select::{select_dir, PtSelect, SelectConfig, SelectMethod};

use crate::config_flags::{self, ConfigFlags};
use crate::progress::Progress;
use crate::run_setup;
use crate::tensorboard::TensorBoardArg;
use crate::Globals;

#[derive(Args, Debug)]
pub struct SelectArgs {
    /// Run directory of the finished search whose supernet to select from
    #[arg(long, value_name = "DIR")]
    run: PathBuf,
    /// Selection method: pt (DARTS-PT, perturbation-based projection with fine-tuning)
    #[arg(long, value_name = "M", default_value = "pt")]
    method: SelectMethod,
    #[command(flatten)]
    settings: ConfigFlags<config_flags::Select>,
    /// Selection directory [default: DIR/select-<method>]
    #[arg(long, value_name = "OUT")]
    out: Option<PathBuf>,
    /// Continue the selection in its directory from its last checkpoint
    #[arg(long, conflicts_with = "force")]
    resume: bool,
    /// Overwrite an existing selection directory
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    tensorboard: TensorBoardArg,
}

pub fn run(args: SelectArgs, g: &Globals) -> anyhow::Result<()> {
    let out = args.out.clone().unwrap_or_else(|| select_dir(&args.run, args.method));
    let given = SelectConfig::new(args.method, &args.run, &args.settings.overlay())?;
    let (cfg, existing) = if args.resume {
        let (cfg, dir) = run_setup::reopen(
            Some(&out),
            |v| Ok(serde_json::from_value::<SelectConfig>(v)?),
            |saved: SelectConfig| {
                // Flags not given keep the saved values; the search's configuration is the saved one.
                let overlay = args.settings.overlay();
                let pt = if args.settings.is_empty() {
                    saved.pt.clone()
                } else {
                    SelectConfig::new(args.method, &saved.source, &overlay)?.pt
                };
                Ok(SelectConfig { pt, method: args.method, ..saved })
            },
        )?;
        (cfg, Some(dir))
    } else {
        (given, None)
    };
    run_selection(cfg, existing, out, args.force, &args.tensorboard, g)
}

/// After `nas search --select M`: the selection of the search in `search_dir`, continued when
/// its directory has begun one.
pub fn after_search(
    method: SelectMethod,
    search_dir: &std::path::Path,
    overlay: &serde_json::Value,
    tensorboard: &TensorBoardArg,
    g: &Globals,
) -> anyhow::Result<()> {
    let out = select_dir(search_dir, method);
    let cfg = SelectConfig::new(method, search_dir, overlay)?;
    if out.join(nas_core::run_dir::CONFIG).exists() {
        let (cfg, dir) = run_setup::reopen(
            Some(&out),
            |v| Ok(serde_json::from_value::<SelectConfig>(v)?),
            |saved: SelectConfig| Ok(SelectConfig { pt: cfg.pt.clone(), method, ..saved }),
        )?;
        return run_selection(cfg, Some(dir), out, false, tensorboard, g);
    }
    run_selection(cfg, None, out, false, tensorboard, g)
}

/// Runs (or continues, in `existing`) the selection `cfg` in `out`, and reports its genotype.
pub fn run_selection(
    cfg: SelectConfig,
    existing: Option<nas_search::RunDir>,
    out: PathBuf,
    force: bool,
    tensorboard: &TensorBoardArg,
    g: &Globals,
) -> anyhow::Result<()> {
    let mut select = PtSelect::new(cfg.clone().validate()?).context("cannot start the selection")?;
    let mut progress = Progress::new(g.quiet).with_tensorboard(tensorboard.open()?);
    let dir = match existing {
        Some(dir) => run_setup::resume(dir, &mut progress, |d| select.resume(d))?,
        None => run_setup::create(Some(out), "select", force, &cfg)?,
    };
    let stop = run_setup::stop_flag();
    let result = select.run(Some(&dir), &mut progress, &stop);
    let genotype = match result {
        Err(nas_search::Error::Interrupted { epoch, step }) => {
            return Err(anyhow::Error::new(run_setup::Interrupted(format!(
                "interrupted at epoch {}, step {step}: continue with `nas select --run {} --resume --out {}`",
                epoch + 1,
                cfg.source.display(),
                dir.path().display()
            ))));
        }
        r => r?,
    };
    drop(progress);
    let last = dir.read_metrics()?.pop();
    let acc = last.as_ref().and_then(|r| r.get("valid_acc")).and_then(|v| v.as_f64());
    let mut text = format!("{genotype}");
    if let Some(acc) = acc {
        text.push_str(&format!("final valid_acc: {acc:.4}\n"));
    }
    text.push_str(&format!("genotype: {}\n", dir.file(nas_search::run_dir::GENOTYPE).display()));
    crate::out(&text)
}
