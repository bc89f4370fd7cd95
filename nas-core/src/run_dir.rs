//! The run directory of a search or a training run: config.json (written first),
//! metrics.jsonl (one record per epoch), genotype.json, checkpoint.safetensors (every epoch)
//! and, for training, weights.safetensors (the final network). Every file but the
//! metrics log is replaced atomically; the log is appended line by line and, on resume,
//! rewritten atomically to the epochs the checkpoint covers (a crash between the two writes
//! can leave one record too many, never a torn checkpoint).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::checkpoint::write_atomic;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

pub const CONFIG: &str = "config.json";
pub const METRICS: &str = "metrics.jsonl";
pub const GENOTYPE: &str = "genotype.json";
pub const CHECKPOINT: &str = "checkpoint.safetensors";
pub const WEIGHTS: &str = "weights.safetensors";

#[derive(Debug, Clone)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// A fresh run directory. An existing non-empty directory is refused unless `force`, which
    /// removes the files this tool writes there.
    pub fn create(path: &Path, force: bool) -> Result<Self> {
        if path.exists() {
            let non_empty = std::fs::read_dir(path).map_err(|e| Error::run_dir(path, e.to_string()))?.next().is_some();
            if non_empty && !force {
                return Err(Error::RunDirNotEmpty { path: path.to_path_buf() });
            }
            if non_empty {
                for f in [CONFIG, METRICS, GENOTYPE, CHECKPOINT, WEIGHTS] {
                    let p = path.join(f);
                    if p.exists() {
                        std::fs::remove_file(&p).map_err(|e| Error::run_dir(&p, e.to_string()))?;
                    }
                }
            }
        }
        std::fs::create_dir_all(path).map_err(|e| Error::run_dir(path, format!("cannot create directory: {e}")))?;
        Ok(Self { path: path.to_path_buf() })
    }

    /// An existing run directory (for resume and evaluation). Temporary files that a killed
    /// process left behind mid-write (`.checkpoint.safetensors.tmp…`) are removed; the files
    /// they were meant to replace are intact.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.join(CONFIG).is_file() {
            return Err(Error::run_dir(path, "not a run directory (no config.json)"));
        }
        if let Ok(entries) = std::fs::read_dir(path) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let ours = [CONFIG, METRICS, GENOTYPE, CHECKPOINT, WEIGHTS]
                    .iter()
                    .any(|f| name.strip_prefix('.').is_some_and(|n| n.starts_with(&format!("{f}.tmp"))));
                if ours {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(Self { path: path.to_path_buf() })
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

    /// The complete records of metrics.jsonl (a torn last line is ignored).
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
        Ok(text.lines().filter_map(|l| Some((l.to_string(), serde_json::from_str(l).ok()?))).collect())
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
