//! CIFAR readers, of both versions the dataset is published in (`source` finds the files: a
//! folder, the folder holding it as torchvision's `root`, or the downloaded archive).
//!
//! - Binary version. CIFAR-10: `data_batch_*.bin` and `test_batch.bin`, records of 1 label
//!   byte + 3072 pixel bytes (R, G, B planes of 32×32). CIFAR-100: `train.bin` and `test.bin`,
//!   records of coarse label, fine label, 3072 pixels; the fine label is used. Any number of
//!   records per file; a size that is not a whole number of records, or a label out of range,
//!   is an error naming the file. Class names: `batches.meta.txt`, `fine_label_names.txt`.
//! - Python version (what torchvision downloads). CIFAR-10: `data_batch_1`…`data_batch_5`,
//!   `test_batch`, `batches.meta`; CIFAR-100: `train`, `test`, `meta` (fine labels). Each a
//!   Python 2 pickle read by `pickle`, which accepts only the shape these files have.

use std::path::Path;

use super::pickle::{self, Py};
use super::{source, Dataset, ImageSet, Normalize};
use crate::error::{Error, Result};

pub(super) const PIXELS: usize = 3 * 32 * 32;

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

    pub fn name(self) -> &'static str {
        match self {
            CifarKind::Cifar10 => "cifar10",
            CifarKind::Cifar100 => "cifar100",
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

/// The images and labels of one batch file of the python version (a pickled dict: `data` a
/// uint8 array of N×3072, `labels` — CIFAR-100: `fine_labels` — N ints), given as bytes.
pub fn read_cifar_pickle(path: &Path, bytes: &[u8], kind: CifarKind, set: &mut ImageSet) -> Result<()> {
    let v = pickle::read(bytes).map_err(|e| Error::data(path, format!("not a CIFAR python batch: {e}")))?;
    let bad = |m: String| Error::data(path, m);
    let Some(Py::Array(Some(data))) = v.get("data") else {
        return Err(bad("no `data` array (not a CIFAR python batch)".into()));
    };
    let key = match kind {
        CifarKind::Cifar10 => "labels",
        CifarKind::Cifar100 => "fine_labels",
    };
    let Some(Py::List(labels, _)) = v.get(key) else {
        return Err(bad(format!("no `{key}` list (not a {} python batch)", kind.name())));
    };
    if data.shape != [labels.len(), PIXELS] {
        return Err(bad(format!(
            "`data` has shape {:?}, {} labels need ({}, {PIXELS})",
            data.shape,
            labels.len(),
            labels.len()
        )));
    }
    if labels.is_empty() {
        return Err(bad("no images".into()));
    }
    for (i, l) in labels.iter().enumerate() {
        match l {
            Py::Int(l) if (0..kind.classes() as i64).contains(l) => set.labels.push(*l as u32),
            other => {
                return Err(bad(format!("label {i} is {other:?}, not a class in 0..{}", kind.classes())));
            }
        }
    }
    set.pixels.extend_from_slice(&data.data);
    Ok(())
}

/// The class names of the python version's meta file (`label_names`; CIFAR-100:
/// `fine_label_names`).
pub fn read_cifar_meta(path: &Path, bytes: &[u8], kind: CifarKind) -> Result<Vec<String>> {
    let v = pickle::read(bytes).map_err(|e| Error::data(path, format!("not a CIFAR meta file: {e}")))?;
    let key = match kind {
        CifarKind::Cifar10 => "label_names",
        CifarKind::Cifar100 => "fine_label_names",
    };
    let names: Option<Vec<String>> = match v.get(key) {
        Some(Py::List(items, _)) => items.iter().map(Py::as_text).collect(),
        _ => None,
    };
    match names {
        Some(n) if n.len() == kind.classes() => Ok(n),
        _ => Err(Error::data(path, format!("no `{key}` list of {} names", kind.classes()))),
    }
}

/// The class names of the binary version (`batches.meta.txt`, `fine_label_names.txt`: one
/// per line).
fn read_names_txt(path: &Path, bytes: &[u8], kind: CifarKind) -> Result<Vec<String>> {
    let text = std::str::from_utf8(bytes).map_err(|_| Error::data(path, "class names that are not UTF-8"))?;
    let names: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    if names.len() != kind.classes() {
        return Err(Error::data(path, format!("{} class names, expected {}", names.len(), kind.classes())));
    }
    Ok(names)
}

pub(super) fn load(spec: &Path, kind: CifarKind, with_test: bool) -> Result<Dataset> {
    let mut files = source::CifarFiles::find(spec, kind, with_test)?;
    let mut train = empty_set();
    for (path, bytes) in &files.train {
        files.read(path, bytes, kind, &mut train)?;
    }
    let test = match files.test_file()? {
        Some((path, bytes)) => {
            let mut set = empty_set();
            files.read(&path, &bytes, kind, &mut set)?;
            Some(set.into())
        }
        None => None,
    };
    let class_names = match &files.meta {
        Some((path, bytes)) if files.python => read_cifar_meta(path, bytes, kind)?,
        Some((path, bytes)) => read_names_txt(path, bytes, kind)?,
        None => Vec::new(),
    };
    Ok(Dataset {
        name: kind.name().into(),
        train: train.into(),
        test,
        num_classes: kind.classes(),
        normalize: kind.normalize(),
        class_names,
    })
}

fn empty_set() -> ImageSet {
    ImageSet { pixels: Vec::new(), labels: Vec::new(), channels: 3, height: 32, width: 32 }
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
