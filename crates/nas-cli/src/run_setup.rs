//! What `nas search` and `nas train` share around a run: the default run directory name,
//! creating a fresh run directory (config.json first), reopening one for `--resume` with a
//! check that the options agree with the saved configuration, and the Ctrl-C flag.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use nas_core::run_dir::{RunDir, CONFIG};
use serde::Serialize;
use serde_json::Value;

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
    Ok((saved, dir))
}

/// A fresh run directory with config.json written.
pub fn create<C: Serialize>(out: Option<PathBuf>, kind: &str, force: bool, cfg: &C) -> anyhow::Result<RunDir> {
    let dir = RunDir::create(&out.unwrap_or_else(|| default_out(kind)), force)?;
    dir.write_json(CONFIG, cfg)?;
    Ok(dir)
}

/// Set by Ctrl-C; the training loops stop at the next step.
pub fn stop_flag() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let _ = ctrlc::set_handler(move || s.store(true, Ordering::SeqCst));
    stop
}
