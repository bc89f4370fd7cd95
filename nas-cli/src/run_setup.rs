//! What `nas search` and `nas train` share around a run: the default run directory name,
//! creating a fresh run directory (config.json first), reopening one for `--resume` with a
//! check that the options agree with the saved configuration, resuming it, the Ctrl-C flag, and
//! the messages of a run that stopped early (interrupted, diverged).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;
use nas_core::dist;
use nas_core::metrics::{Event, MetricsSink, Position};
use nas_core::run_dir::{RunDir, CHECKPOINT, CONFIG};
use nas_core::{RunError, RunResult};
use serde::Serialize;
use serde_json::Value;

/// Where a search or retraining run lives, and whether it starts over or continues.
#[derive(Args, Debug, Default)]
pub struct RunDirArgs {
    /// Run directory (default: runs/<command>-<date>-<time>)
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Continue the run in --out from its last checkpoint
    #[arg(long, conflicts_with = "force")]
    pub resume: bool,
    /// Overwrite an existing run directory
    #[arg(long)]
    pub force: bool,
}

/// runs/<kind>-YYYYMMDD-HHMMSS (UTC).
pub fn default_out(kind: &str) -> PathBuf {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    PathBuf::from(format!("runs/{kind}-{y:04}{m:02}{d:02}-{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60))
}

/// The run in `out` and its saved configuration, after checking that the options given now
/// (`given`, computed from the saved one) change nothing.
pub fn reopen<C: PartialEq + Clone>(
    out: Option<&Path>,
    parse: impl FnOnce(Value) -> anyhow::Result<C>,
    given: impl FnOnce(C) -> anyhow::Result<C>,
) -> anyhow::Result<(C, RunDir)> {
    let Some(out) = out else { bail!("--resume needs --out DIR, the run to continue") };
    let dir = RunDir::open(out)?;
    let saved = parse(dir.read_json(CONFIG)?).with_context(|| dir.file(CONFIG).display().to_string())?;
    if given(saved.clone())? != saved {
        bail!(
            "{}: the given options differ from the run's saved configuration ({}); resume with the same options or none",
            out.display(),
            dir.file(CONFIG).display()
        );
    }
    // Locked only once the resume is accepted: a refused one leaves the directory as it was.
    // Under data parallelism rank 0 holds the lock for all ranks.
    if dist::is_writer() {
        Ok((saved, dir.locked()?))
    } else {
        Ok((saved, dir))
    }
}

/// A fresh run directory with config.json written.
/// Under data parallelism rank 0 creates it and the other ranks open it once it exists.
pub fn create<C: Serialize>(out: Option<PathBuf>, kind: &str, force: bool, cfg: &C) -> anyhow::Result<RunDir> {
    let world = dist::world();
    if world.size() > 1 && out.is_none() {
        bail!("a run of {} processes needs --out DIR, the same directory for every rank", world.size());
    }
    let path = out.unwrap_or_else(|| default_out(kind));
    let made = if dist::is_writer() {
        RunDir::create(&path, force)
            .map_err(|e| match e {
                nas_core::Error::RunDirNotEmpty { .. } => {
                    anyhow::anyhow!("{e} (use --resume to continue it or --force to overwrite it)")
                }
                e => e.into(),
            })
            .and_then(|dir| {
                dir.write_json(CONFIG, cfg)?;
                Ok(Some(dir))
            })
    } else {
        Ok(None)
    };
    // Every rank waits here for rank 0's directory, and learns whether it could make it.
    let failed = dist::any(world.as_ref(), made.is_err())?;
    match made? {
        Some(dir) => Ok(dir),
        None if failed => bail!("rank 0 could not create the run directory {}", path.display()),
        None => Ok(RunDir::open(&path)?),
    }
}

/// Set by Ctrl-C (SIGINT or SIGTERM); the training loops checkpoint and stop before their
/// next step. A second Ctrl-C ends the process at once (the last checkpoint stays intact:
/// every file is replaced atomically).
pub fn stop_flag() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let _ = ctrlc::set_handler(move || {
        if s.swap(true, Ordering::SeqCst) {
            eprintln!("interrupted again: stopping now");
            std::process::exit(INTERRUPTED_EXIT);
        }
        eprintln!("interrupted: finishing the current step and writing a checkpoint (Ctrl-C again to stop now)");
    });
    stop
}

/// Exit status of a run stopped by Ctrl-C, as a shell reports SIGINT.
pub const INTERRUPTED_EXIT: i32 = 130;

/// A run that stopped on Ctrl-C after checkpointing; `main` exits with `INTERRUPTED_EXIT`.
#[derive(Debug)]
pub struct Interrupted(pub String);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Interrupted {}

/// Continues the run in `dir` with `resume` (which loads its checkpoint) and notes where on
/// `progress`.
pub fn resume(
    dir: RunDir,
    progress: &mut dyn MetricsSink,
    resume: impl FnOnce(&RunDir) -> RunResult<Position>,
) -> anyhow::Result<RunDir> {
    let at = resume(&dir)?;
    progress.event(Event::Message(&format!(
        "resuming {} at epoch {}, step {}",
        dir.path().display(),
        at.epoch + 1,
        at.step
    )));
    Ok(dir)
}

/// The outcome of a run `command` (search, train) in `dir`, with what to do next when it was
/// interrupted or diverged.
pub fn finished<T>(command: &str, dir: &RunDir, result: RunResult<T>) -> anyhow::Result<T> {
    finished_in(command, dir, dir, result)
}

/// `finished` for a run whose checkpoints are in `checkpoints` (a progressive search's
/// current stage) and which resumes from `dir`.
pub fn finished_in<T>(command: &str, dir: &RunDir, checkpoints: &RunDir, result: RunResult<T>) -> anyhow::Result<T> {
    match result {
        Err(RunError::Interrupted { epoch, step }) => Err(interrupted(command, dir, checkpoints, epoch, step)),
        Err(e @ (RunError::Diverged { .. } | RunError::DivergedValid { .. })) => Err(diverged(e, checkpoints)),
        r => Ok(r?),
    }
}

/// The error of a run `command` (search, train) interrupted before `step` of `epoch`.
fn interrupted(command: &str, dir: &RunDir, checkpoints: &RunDir, epoch: usize, step: usize) -> anyhow::Error {
    anyhow::Error::new(Interrupted(format!(
        "interrupted at epoch {}, step {step}: checkpoint written to {}; continue with `nas {command} --resume --out {}`",
        epoch + 1,
        checkpoints.file(CHECKPOINT).display(),
        dir.path().display()
    )))
}

/// A divergence error with what is kept: the checkpoint of the last completed epoch, if any.
fn diverged(err: impl std::fmt::Display, dir: &RunDir) -> anyhow::Error {
    let ck = dir.file(CHECKPOINT);
    if ck.exists() {
        anyhow::anyhow!("{err}; the last good checkpoint is kept in {} (try a smaller --lr in a new run)", ck.display())
    } else {
        anyhow::anyhow!("{err}; no epoch completed, so there is no checkpoint (try a smaller --lr)")
    }
}
