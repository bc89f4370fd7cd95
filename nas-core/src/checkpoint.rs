//! Checkpoint and result files written atomically: the bytes go to a temporary file in the
//! same directory, are synced, and replace the target by rename, so a crash at any moment
//! leaves either the old file or the new one, never a torn one. Tensors are stored as
//! safetensors with string metadata (epoch, step counters, versions).

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::metrics::{Position, Tally};

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename is durable once the directory entry is.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Saves named tensors (copied to the host) and metadata as safetensors, atomically.
pub fn save_tensors(path: &Path, tensors: &[(String, Tensor)], metadata: HashMap<String, String>) -> Result<()> {
    let host: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(host.iter().map(|(n, t)| (n.as_str(), t)), Some(metadata))
        .map_err(|e| Error::Checkpoint { path: path.into(), msg: e.to_string() })?;
    write_atomic(path, &bytes)
}

/// Tensors and metadata read back from a safetensors file.
pub struct LoadedTensors {
    pub tensors: HashMap<String, Tensor>,
    pub metadata: HashMap<String, String>,
}

impl LoadedTensors {
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    /// The tensors whose names start with `prefix`, under the rest of their names.
    pub fn with_prefix(&self, prefix: &str) -> HashMap<String, Tensor> {
        self.tensors.iter().filter_map(|(k, v)| k.strip_prefix(prefix).map(|n| (n.to_string(), v.clone()))).collect()
    }

    /// A metadata value parsed as `T`, or an error naming the key.
    pub fn meta_parse<T: std::str::FromStr>(&self, path: &Path, key: &str) -> Result<T> {
        self.meta(key)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Error::Checkpoint { path: path.into(), msg: format!("missing or invalid metadata `{key}`") })
    }
}

impl LoadedTensors {
    /// The run position a checkpoint was written at (`Position::to_meta`). Checkpoints
    /// written between epochs may carry only `next_epoch`.
    pub fn position(&self, path: &Path) -> Result<Position> {
        let or_zero = |key: &str| -> Result<u64> {
            match self.meta(key) {
                None => Ok(0),
                Some(_) => self.meta_parse(path, key),
            }
        };
        Ok(Position {
            epoch: self.meta_parse(path, "next_epoch")?,
            step: or_zero("next_step")? as usize,
            tally: Tally {
                loss_sum: f64::from_bits(or_zero("tally_loss_bits")?),
                correct: or_zero("tally_correct")? as usize,
                seen: or_zero("tally_seen")? as usize,
            },
        })
    }
}

pub fn load_tensors(path: &Path, device: &Device) -> Result<LoadedTensors> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |msg: String| Error::Checkpoint { path: path.into(), msg };
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| bad(format!("unreadable: truncated or not a safetensors file ({e})")))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let tensors = candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| bad(e.to_string()))?;
    Ok(LoadedTensors { tensors, metadata })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_metadata() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tmp", e))?;
        let path = dir.path().join("ckpt.safetensors");
        let t = Tensor::new(&[1.5f32, -2.0], &Device::Cpu)?;
        let meta = HashMap::from([("epoch".to_string(), "3".to_string())]);
        save_tensors(&path, &[("w".into(), t)], meta)?;
        let back = load_tensors(&path, &Device::Cpu)?;
        assert_eq!(back.tensors["w"].to_vec1::<f32>()?, vec![1.5, -2.0]);
        assert_eq!(back.meta_parse::<usize>(&path, "epoch")?, 3);
        assert!(back.meta_parse::<usize>(&path, "step").is_err());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
        Ok(())
    }

    #[test]
    fn positions_round_trip_exactly() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tmp", e))?;
        let path = dir.path().join("ckpt.safetensors");
        let pos = Position { epoch: 3, step: 7, tally: Tally { loss_sum: 0.1 + 0.2, correct: 5, seen: 9 } };
        let t = Tensor::new(&[0f32], &Device::Cpu)?;
        save_tensors(&path, &[("w".into(), t.clone())], pos.to_meta().into_iter().collect())?;
        assert_eq!(load_tensors(&path, &Device::Cpu)?.position(&path)?, pos);
        let epoch_only = HashMap::from([("next_epoch".to_string(), "2".to_string())]);
        save_tensors(&path, &[("w".into(), t)], epoch_only)?;
        assert_eq!(load_tensors(&path, &Device::Cpu)?.position(&path)?, Position::epoch_start(2));
        Ok(())
    }

    #[test]
    fn truncated_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.safetensors");
        std::fs::write(&path, b"\x10\x00\x00").unwrap();
        let e = load_tensors(&path, &Device::Cpu).err().unwrap().to_string();
        assert!(e.contains("bad.safetensors"), "{e}");
    }
}
