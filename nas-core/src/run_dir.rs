//! The run directory of a search or a training run: config.json (written first),
//! metrics.jsonl (one record per epoch), genotype.json, checkpoint.safetensors (every epoch)
//! and, for training, weights.safetensors (the final network). Every file but the
//! metrics log is replaced atomically; the log is appended line by line and, on resume,
//! rewritten atomically to the epochs the checkpoint covers (a crash between the two writes
//! can leave one record too many, never a torn checkpoint).
//!
//! A process that writes a run holds an advisory lock on the directory's `.lock` file
//! (`flock`), so a second process (a `--resume` while the first still runs) is refused; the
//! kernel drops the lock when its holder exits, so a killed run leaves none behind.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::checkpoint::write_atomic;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

pub const CONFIG: &str = "config.json";
pub const METRICS: &str = "metrics.jsonl";
pub const GENOTYPE: &str = "genotype.json";
pub const CHECKPOINT: &str = "checkpoint.safetensors";
pub const WEIGHTS: &str = "weights.safetensors";
/// What the run trained on (`Dataset::record`): the dataset and its class names.
pub const DATASET: &str = "dataset.json";
/// The lock file of the process writing the run (it holds that process's id).
pub const LOCK: &str = ".lock";

#[derive(Debug, Clone)]
pub struct RunDir {
    path: PathBuf,
    /// Held while this process writes the run.
    lock: Option<Arc<std::fs::File>>,
}

/// Takes the run's lock, or says which process holds it.
fn take_lock(dir: &Path) -> Result<std::fs::File> {
    let p = dir.join(LOCK);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&p)
        .map_err(|e| Error::run_dir(&p, e.to_string()))?;
    match f.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&p).unwrap_or_default();
            let holder = holder.trim();
            let who = if holder.is_empty() { String::from("another process") } else { format!("process {holder}") };
            return Err(Error::run_dir(
                dir,
                format!("{who} is running in this directory; wait for it to end or stop it first"),
            ));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(Error::run_dir(&p, format!("cannot lock: {e}"))),
    }
    let id = std::process::id().to_string();
    f.set_len(0).and_then(|_| (&f).write_all(id.as_bytes())).map_err(|e| Error::run_dir(&p, e.to_string()))?;
    Ok(f)
}

impl RunDir {
    /// A fresh run directory, locked for this process. An existing non-empty directory is
    /// refused unless `force`, which removes the files this tool writes there (not while
    /// another process runs there).
    pub fn create(path: &Path, force: bool) -> Result<Self> {
        let mut lock = None;
        if path.exists() {
            let non_empty = std::fs::read_dir(path).map_err(|e| Error::run_dir(path, e.to_string()))?.next().is_some();
            if non_empty && !force {
                return Err(Error::RunDirNotEmpty { path: path.to_path_buf() });
            }
            if non_empty {
                lock = Some(take_lock(path)?);
                for f in [CONFIG, METRICS, GENOTYPE, CHECKPOINT, WEIGHTS, DATASET] {
                    let p = path.join(f);
                    if p.exists() {
                        std::fs::remove_file(&p).map_err(|e| Error::run_dir(&p, e.to_string()))?;
                    }
                }
            }
        }
        std::fs::create_dir_all(path).map_err(|e| Error::run_dir(path, format!("cannot create directory: {e}")))?;
        let lock = match lock {
            Some(l) => l,
            None => take_lock(path)?,
        };
        Ok(Self { path: path.to_path_buf(), lock: Some(Arc::new(lock)) })
    }

    /// An existing run directory (for resume and evaluation; not locked).
    pub fn open(path: &Path) -> Result<Self> {
        if !path.join(CONFIG).is_file() {
            return Err(Error::run_dir(path, "not a run directory (no config.json)"));
        }
        Ok(Self { path: path.to_path_buf(), lock: None })
    }

    /// This run directory, locked for this process (to continue the run). Temporary files
    /// that a killed process left behind mid-write (`.checkpoint.safetensors.tmp…`) are
    /// removed; the files they were meant to replace are intact. (Only the lock holder
    /// removes them: another process may be writing them.)
    pub fn locked(mut self) -> Result<Self> {
        if self.lock.is_some() {
            return Ok(self);
        }
        self.lock = Some(Arc::new(take_lock(&self.path)?));
        if let Ok(entries) = std::fs::read_dir(&self.path) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let ours = [CONFIG, METRICS, GENOTYPE, CHECKPOINT, WEIGHTS, DATASET]
                    .iter()
                    .any(|f| name.strip_prefix('.').is_some_and(|n| n.starts_with(&format!("{f}.tmp"))));
                if ours {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(self)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<()> {
        let mut text =
            serde_json::to_string_pretty(value).map_err(|e| Error::run_dir(self.file(name), e.to_string()))?;
        text.push('\n');
        write_atomic(&self.file(name), text.as_bytes())
    }

    pub fn read_json<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        let p = self.file(name);
        let text = std::fs::read_to_string(&p).map_err(|e| Error::run_dir(&p, e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| Error::run_dir(&p, format!("malformed: {e}")))
    }

    /// Appends one record to metrics.jsonl and syncs it.
    pub fn append_metrics(&self, record: &Value) -> Result<()> {
        let p = self.file(METRICS);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .map_err(|e| Error::run_dir(&p, e.to_string()))?;
        let line = format!("{record}\n");
        f.write_all(line.as_bytes()).and_then(|_| f.sync_data()).map_err(|e| Error::run_dir(&p, e.to_string()))
    }

    /// The complete records of metrics.jsonl. A torn last line (no newline after it: a crash
    /// mid-append) is ignored; any other line that is not a JSON object is an error naming it.
    pub fn read_metrics(&self) -> Result<Vec<Value>> {
        Ok(self.metrics_lines()?.into_iter().map(|(_, r)| r).collect())
    }

    /// Every complete record of metrics.jsonl with its line as written.
    fn metrics_lines(&self) -> Result<Vec<(String, Value)>> {
        let p = self.file(METRICS);
        if !p.exists() {
            return Ok(Vec::new());
        }
        let text = std::fs::read_to_string(&p).map_err(|e| Error::run_dir(&p, e.to_string()))?;
        let torn_tail = !text.is_empty() && !text.ends_with('\n');
        let lines: Vec<&str> = text.lines().collect();
        let mut records = Vec::with_capacity(lines.len());
        for (i, line) in lines.iter().enumerate() {
            match serde_json::from_str::<Value>(line) {
                Ok(r) if r.is_object() => records.push((line.to_string(), r)),
                _ if torn_tail && i + 1 == lines.len() => {}
                Ok(_) => return Err(Error::run_dir(&p, format!("line {} is not a JSON object", i + 1))),
                Err(e) => return Err(Error::run_dir(&p, format!("line {} is not a JSON record: {e}", i + 1))),
            }
        }
        Ok(records)
    }

    /// Keeps only the records of epochs before `epoch`, each line as it was written (a record
    /// parsed and printed again could change in the last digit of a float).
    pub fn truncate_metrics(&self, epoch: usize) -> Result<Vec<Value>> {
        let keep: Vec<(String, Value)> = self
            .metrics_lines()?
            .into_iter()
            .filter(|(_, r)| r.get("epoch").and_then(Value::as_u64).is_some_and(|e| (e as usize) < epoch))
            .collect();
        let text: String = keep.iter().map(|(line, _)| format!("{line}\n")).collect();
        write_atomic(&self.file(METRICS), text.as_bytes())?;
        Ok(keep.into_iter().map(|(_, r)| r).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_ignored_but_corruption_elsewhere_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RunDir::create(&tmp.path().join("run"), false).unwrap();
        let p = dir.file(METRICS);
        std::fs::write(&p, "{\"epoch\":0}\n{\"epoch\":1}\n{\"epo").unwrap();
        assert_eq!(dir.read_metrics().unwrap().len(), 2);
        std::fs::write(&p, "{\"epoch\":0}\n{\"epo\n{\"epoch\":2}\n").unwrap();
        let e = dir.read_metrics().unwrap_err().to_string();
        assert!(e.contains("metrics.jsonl") && e.contains("line 2"), "{e}");
        // A complete last line (with its newline) that is not a record is corruption too.
        std::fs::write(&p, "{\"epoch\":0}\n[1, 2]\n").unwrap();
        let e = dir.read_metrics().unwrap_err().to_string();
        assert!(e.contains("line 2 is not a JSON object"), "{e}");
    }

    #[test]
    fn a_second_writer_is_refused_until_the_first_ends() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("run");
        let first = RunDir::create(&path, false).unwrap();
        first.write_json(CONFIG, &serde_json::json!({})).unwrap();
        // The lock is per open file description, so a second one in this process contends
        // as another process would.
        let e = RunDir::open(&path).unwrap().locked().unwrap_err().to_string();
        assert!(
            e.contains(&format!("process {}", std::process::id())) && e.contains("running in this directory"),
            "{e}"
        );
        let e = RunDir::create(&path, true).unwrap_err().to_string();
        assert!(e.contains("running in this directory"), "{e}");
        // Readers do not need the lock.
        assert!(RunDir::open(&path).unwrap().read_metrics().unwrap().is_empty());
        drop(first);
        RunDir::open(&path).unwrap().locked().unwrap();
    }

    #[test]
    fn truncating_keeps_the_records_as_written() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RunDir::create(&tmp.path().join("run"), false).unwrap();
        // A loss whose shortest form serde_json's default float parser does not read back
        // exactly (seen in a resumed run's metrics).
        let loss: f64 = "2.3019036948680878".parse().unwrap();
        for epoch in 0..3 {
            dir.append_metrics(&serde_json::json!({"epoch": epoch, "valid_loss": loss})).unwrap();
        }
        let before = std::fs::read_to_string(dir.file(METRICS)).unwrap();
        let kept = dir.truncate_metrics(2).unwrap();
        assert_eq!(kept.len(), 2);
        let after = std::fs::read_to_string(dir.file(METRICS)).unwrap();
        assert_eq!(after, before.lines().take(2).map(|l| format!("{l}\n")).collect::<String>());
        assert!(after.contains("2.3019036948680878"), "{after}");
    }
}
