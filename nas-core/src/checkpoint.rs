//! Checkpoint and result files written atomically: the bytes go to a temporary file in the
//! same directory, are synced, and replace the target by rename, so a crash at any moment
//! leaves either the old file or the new one, never a torn one. Tensors are stored as
//! safetensors with string metadata (epoch, step counters, versions) and a CRC-32 of
//! everything else in the file (`crc32`: the tensor index, the other metadata and the
//! data), which loading checks, so a flipped byte anywhere is an error and never a silently
//! different resume.

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

/// The metadata key of the checksum.
pub const CHECKSUM: &str = "crc32";

/// CRC-32 of a safetensors file's content but the checksum itself: every tensor's name,
/// dtype, shape and offsets (by name), every other metadata entry (by key), and the data.
fn content_crc(bytes: &[u8]) -> std::result::Result<u32, String> {
    let (header, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
    let mut h = crc32fast::Hasher::new();
    let mut tensors: Vec<_> = meta.tensors().into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, info) in tensors {
        h.update(format!("{name}\0{:?}\0{:?}\0{:?}\0", info.dtype, info.shape, info.data_offsets).as_bytes());
    }
    let mut entries: Vec<_> = meta.metadata().iter().flatten().filter(|(k, _)| k.as_str() != CHECKSUM).collect();
    entries.sort();
    for (k, v) in entries {
        h.update(format!("{k}\0{v}\0").as_bytes());
    }
    h.update(bytes.get(8 + header..).unwrap_or_default());
    Ok(h.finalize())
}

/// Saves named tensors (copied to the host) and metadata with its checksum as safetensors,
/// atomically.
pub fn save_tensors(path: &Path, tensors: &[(String, Tensor)], mut metadata: HashMap<String, String>) -> Result<()> {
    let host: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<Result<_>>()?;
    let bad = |msg: String| Error::Checkpoint { path: path.into(), msg };
    let serialize = |metadata: HashMap<String, String>| {
        safetensors::serialize(host.iter().map(|(n, t)| (n.as_str(), t)), Some(metadata))
            .map_err(|e| bad(e.to_string()))
    };
    // The data and the tensor index do not depend on the metadata: the checksum of a first
    // serialisation is that of the final one.
    metadata.remove(CHECKSUM);
    let crc = content_crc(&serialize(metadata.clone())?).map_err(bad)?;
    metadata.insert(CHECKSUM.into(), format!("{crc:08x}"));
    write_atomic(path, &serialize(metadata)?)
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
                correct5: self.meta("tally_correct5").map(|_| self.meta_parse(path, "tally_correct5")).transpose()?,
                seen: or_zero("tally_seen")? as usize,
            },
        })
    }
}

/// Reads a safetensors file; one that carries a checksum must match it.
pub fn load_tensors(path: &Path, device: &Device) -> Result<LoadedTensors> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |msg: String| Error::Checkpoint { path: path.into(), msg };
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| bad(format!("unreadable: truncated or not a safetensors file ({e})")))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    if let Some(want) = metadata.get(CHECKSUM) {
        let got = content_crc(&bytes).map_err(&bad)?;
        if u32::from_str_radix(want, 16).ok() != Some(got) {
            return Err(bad(format!(
                "damaged: its content does not match its checksum (crc32 {want}, computed {got:08x}); \
                 the file was changed or corrupted after it was written"
            )));
        }
    }
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
        let pos =
            Position { epoch: 3, step: 7, tally: Tally { loss_sum: 0.1 + 0.2, correct: 5, correct5: None, seen: 9 } };
        let t = Tensor::new(&[0f32], &Device::Cpu)?;
        save_tensors(&path, &[("w".into(), t.clone())], pos.to_meta().into_iter().collect())?;
        assert_eq!(load_tensors(&path, &Device::Cpu)?.position(&path)?, pos);
        let top5 = Position { tally: Tally { correct5: Some(8), ..pos.tally }, ..pos };
        save_tensors(&path, &[("w".into(), t.clone())], top5.to_meta().into_iter().collect())?;
        assert_eq!(load_tensors(&path, &Device::Cpu)?.position(&path)?, top5);
        let epoch_only = HashMap::from([("next_epoch".to_string(), "2".to_string())]);
        save_tensors(&path, &[("w".into(), t)], epoch_only)?;
        assert_eq!(load_tensors(&path, &Device::Cpu)?.position(&path)?, Position::epoch_start(2));
        Ok(())
    }

    /// Checkpoint metadata carries f64s as JSON (the α-Hessian's eigenvalue history); a
    /// resumed run is bit for bit the uninterrupted one only if they read back exactly.
    /// 1.1066411744075975 is an eigenvalue serde_json's default parser read back one ulp off.
    #[test]
    fn json_floats_in_metadata_read_back_bit_for_bit() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut values = vec![1.1066411744075975f64, 0.6934991140489213, f64::MIN_POSITIVE, 1e300, -3.5e-7];
        values.extend((0..10_000).map(|_| f64::from_bits(rng.random::<u64>() >> 2)).filter(|v| v.is_finite()));
        for v in values {
            let text = serde_json::json!([[0, v]]).to_string();
            let back: Vec<(u32, f64)> = serde_json::from_str(&text).unwrap();
            assert_eq!(back[0].1.to_bits(), v.to_bits(), "{v:e} read back from {text}");
        }
    }

    #[test]
    fn a_flipped_byte_anywhere_is_detected() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tmp", e))?;
        let path = dir.path().join("ckpt.safetensors");
        let t = Tensor::new(&[1.5f32, -2.0, 0.25, 8.0], &Device::Cpu)?;
        let meta = HashMap::from([("next_epoch".to_string(), "3".to_string())]);
        save_tensors(&path, &[("w".into(), t)], meta)?;
        let good = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        assert!(load_tensors(&path, &Device::Cpu)?.meta(CHECKSUM).is_some());
        // Every byte after the 8-byte length: the header's JSON and the data.
        let mut undetected = Vec::new();
        for i in 8..good.len() {
            let mut bytes = good.clone();
            bytes[i] ^= 0x04;
            std::fs::write(&path, &bytes).map_err(|e| Error::io(&path, e))?;
            if let Ok(back) = load_tensors(&path, &Device::Cpu) {
                // A flip in JSON whitespace or in the checksum's own key changes nothing read.
                let same = back.tensors["w"].to_vec1::<f32>()? == vec![1.5, -2.0, 0.25, 8.0]
                    && back.meta("next_epoch") == Some("3");
                if !same {
                    undetected.push(i);
                }
            }
        }
        assert!(undetected.is_empty(), "flips at {undetected:?} were read as different content");
        std::fs::write(&path, &good).map_err(|e| Error::io(&path, e))?;
        let mut bytes = good.clone();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        std::fs::write(&path, &bytes).map_err(|e| Error::io(&path, e))?;
        let e = load_tensors(&path, &Device::Cpu).err().expect("detected").to_string();
        assert!(e.contains("ckpt.safetensors") && e.contains("checksum"), "{e}");
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
