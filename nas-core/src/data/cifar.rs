//! CIFAR binary format readers. CIFAR-10: `data_batch_*.bin` and `test_batch.bin`, records of
//! 1 label byte + 3072 pixel bytes (R, G, B planes of 32×32). CIFAR-100: `train.bin` and
//! `test.bin`, records of coarse label, fine label, 3072 pixels; the fine label is used. Any
//! number of records per file; a size that is not a whole number of records, or a label out
//! of range, is an error naming the file.

use std::path::{Path, PathBuf};

use super::{Dataset, ImageSet, Normalize};
use crate::error::{Error, Result};

const PIXELS: usize = 3 * 32 * 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CifarKind {
    Cifar10,
    Cifar100,
}

impl CifarKind {
    fn label_bytes(self) -> usize {
        match self {
            CifarKind::Cifar10 => 1,
            CifarKind::Cifar100 => 2,
        }
    }

    pub fn classes(self) -> usize {
        match self {
            CifarKind::Cifar10 => 10,
            CifarKind::Cifar100 => 100,
        }
    }

    fn normalize(self) -> Normalize {
        match self {
            CifarKind::Cifar10 => Normalize {
                mean: vec![0.491_399_7, 0.482_158_3, 0.446_531_2],
                std: vec![0.247_032_3, 0.243_485_05, 0.261_587_7],
            },
            CifarKind::Cifar100 => Normalize {
                mean: vec![0.507_075_2, 0.486_548_9, 0.440_917_9],
                std: vec![0.267_334_3, 0.256_438_8, 0.276_150_5],
            },
        }
    }
}

/// Parses the records of one file (given as bytes, for fuzzing and tests) into `set`.
pub fn read_cifar_file(path: &Path, bytes: &[u8], kind: CifarKind, set: &mut ImageSet) -> Result<()> {
    let rec = kind.label_bytes() + PIXELS;
    if bytes.is_empty() {
        return Err(Error::data(path, "file is empty"));
    }
    if !bytes.len().is_multiple_of(rec) {
        return Err(Error::data(
            path,
            format!(
                "{} bytes is not a whole number of {rec}-byte records (truncated, oversized or not a CIFAR file)",
                bytes.len()
            ),
        ));
    }
    for (i, r) in bytes.chunks_exact(rec).enumerate() {
        let label = r[kind.label_bytes() - 1] as u32;
        if label as usize >= kind.classes() {
            return Err(Error::data(
                path,
                format!("record {i}: label {label} out of range (expected 0..{})", kind.classes()),
            ));
        }
        set.labels.push(label);
        set.pixels.extend_from_slice(&r[kind.label_bytes()..]);
    }
    Ok(())
}

fn read_files(files: &[PathBuf], kind: CifarKind) -> Result<ImageSet> {
    let mut set = ImageSet { pixels: Vec::new(), labels: Vec::new(), channels: 3, height: 32, width: 32 };
    for f in files {
        let bytes = std::fs::read(f).map_err(|e| Error::io(f, e))?;
        read_cifar_file(f, &bytes, kind, &mut set)?;
    }
    Ok(set)
}

fn train_files(dir: &Path, kind: CifarKind) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Err(Error::data(dir, "no such directory"));
    }
    match kind {
        CifarKind::Cifar100 => Ok(vec![dir.join("train.bin")]),
        CifarKind::Cifar10 => {
            let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("data_batch_") && n.ends_with(".bin"))
                })
                .collect();
            if files.is_empty() {
                return Err(Error::data(dir, "no data_batch_*.bin files (CIFAR-10 binary version expected)"));
            }
            files.sort();
            Ok(files)
        }
    }
}

pub(super) fn load(dir: &Path, kind: CifarKind, with_test: bool) -> Result<Dataset> {
    let train = read_files(&train_files(dir, kind)?, kind)?;
    let test = if with_test {
        let name = match kind {
            CifarKind::Cifar10 => "test_batch.bin",
            CifarKind::Cifar100 => "test.bin",
        };
        Some(read_files(&[dir.join(name)], kind)?.into())
    } else {
        None
    };
    Ok(Dataset {
        name: match kind {
            CifarKind::Cifar10 => "cifar10".into(),
            CifarKind::Cifar100 => "cifar100".into(),
        },
        train: train.into(),
        test,
        num_classes: kind.classes(),
        normalize: kind.normalize(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty() -> ImageSet {
        ImageSet { pixels: vec![], labels: vec![], channels: 3, height: 32, width: 32 }
    }

    #[test]
    fn reads_any_number_of_records() {
        let mut bytes = Vec::new();
        for label in [3u8, 9, 0] {
            bytes.push(label);
            bytes.extend(std::iter::repeat_n(label, PIXELS));
        }
        let mut set = empty();
        read_cifar_file(Path::new("x.bin"), &bytes, CifarKind::Cifar10, &mut set).unwrap();
        assert_eq!(set.labels, vec![3, 9, 0]);
        assert_eq!(set.image(1)[0], 9);
    }

    #[test]
    fn rejects_truncated_and_bad_labels() {
        let mut set = empty();
        let e = read_cifar_file(Path::new("t.bin"), &[0u8; 3000], CifarKind::Cifar10, &mut set).unwrap_err();
        assert!(e.to_string().contains("t.bin") && e.to_string().contains("truncated"), "{e}");
        let mut rec = vec![10u8];
        rec.extend(std::iter::repeat_n(0u8, PIXELS));
        let e = read_cifar_file(Path::new("l.bin"), &rec, CifarKind::Cifar10, &mut set).unwrap_err();
        assert!(e.to_string().contains("label 10 out of range"), "{e}");
        let mut rec = vec![1u8, 100];
        rec.extend(std::iter::repeat_n(0u8, PIXELS));
        assert!(read_cifar_file(Path::new("c.bin"), &rec, CifarKind::Cifar100, &mut set).is_err());
        assert!(read_cifar_file(Path::new("e.bin"), &[], CifarKind::Cifar10, &mut set).is_err());
    }
}
