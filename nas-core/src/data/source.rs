//! Where `cifar10:PATH` and `cifar100:PATH` find their files. PATH may be:
//!
//! - a folder of the binary version (`data_batch_1.bin`…; CIFAR-100 `train.bin`) or of the
//!   python version (`data_batch_1`… with `batches.meta`; CIFAR-100 `train` with `meta`);
//! - the folder holding one (torchvision's `root`: `cifar-10-batches-py/`,
//!   `cifar-10-batches-bin/`, `cifar-100-python/`, `cifar-100-binary/`), or holding the
//!   downloaded archive itself when it was never unpacked;
//! - an archive (`cifar-10-python.tar.gz`, `cifar-10-binary.tar.gz`, `cifar-100-python.tar.gz`,
//!   `cifar-100-binary.tar.gz`, or any `.tar`, `.tar.gz`, `.tgz` holding one of the folders),
//!   read as it is, without unpacking to disk.
//!
//! An unpacked folder is preferred to an archive next to it. Members of an archive are read
//! only when their names are the dataset's, each at most `MAX_MEMBER` bytes.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::cifar::{read_cifar_file, read_cifar_pickle, CifarKind};
use super::ImageSet;
use crate::error::{Error, Result};

/// The largest archive member read (CIFAR's largest file, CIFAR-100's python `train`, is
/// about 155 MB).
const MAX_MEMBER: u64 = 512 << 20;

/// A file's name and contents.
pub type File = (PathBuf, Vec<u8>);

/// The files of one CIFAR dataset, read.
pub struct CifarFiles {
    /// The python version (pickles) rather than the binary one.
    pub python: bool,
    pub train: Vec<File>,
    /// The test file (read when asked for, `test_file`).
    test: Option<Test>,
    /// The class names' file, when there is one.
    pub meta: Option<File>,
}

/// A test file: read from an archive, or still on disk.
enum Test {
    Read(File),
    OnDisk(PathBuf),
}

/// The two versions' file names.
struct Layout {
    python: bool,
}

impl Layout {
    /// Whether `name` is a training file of this version.
    fn is_train(&self, name: &str, kind: CifarKind) -> bool {
        match (kind, self.python) {
            (CifarKind::Cifar10, false) => {
                name.strip_prefix("data_batch_").and_then(|r| r.strip_suffix(".bin")).is_some_and(is_number)
            }
            (CifarKind::Cifar10, true) => name.strip_prefix("data_batch_").is_some_and(is_number),
            (CifarKind::Cifar100, false) => name == "train.bin",
            (CifarKind::Cifar100, true) => name == "train",
        }
    }

    fn test(&self, kind: CifarKind) -> &'static str {
        self.names(kind).test
    }

    fn meta(&self, kind: CifarKind) -> &'static str {
        self.names(kind).meta
    }

    /// The folder the official archive unpacks to.
    fn folder(&self, kind: CifarKind) -> &'static str {
        self.names(kind).folder
    }

    fn archive(&self, kind: CifarKind) -> &'static str {
        self.names(kind).archive
    }

    fn names(&self, kind: CifarKind) -> &'static Names {
        &NAMES[usize::from(kind == CifarKind::Cifar100)][usize::from(self.python)]
    }
}

/// The file names of one version of one dataset.
struct Names {
    test: &'static str,
    meta: &'static str,
    folder: &'static str,
    archive: &'static str,
}

/// Per dataset (CIFAR-10, CIFAR-100), per version (binary, python).
const NAMES: [[Names; 2]; 2] = [
    [
        Names {
            test: "test_batch.bin",
            meta: "batches.meta.txt",
            folder: "cifar-10-batches-bin",
            archive: "cifar-10-binary.tar.gz",
        },
        Names {
            test: "test_batch",
            meta: "batches.meta",
            folder: "cifar-10-batches-py",
            archive: "cifar-10-python.tar.gz",
        },
    ],
    [
        Names {
            test: "test.bin",
            meta: "fine_label_names.txt",
            folder: "cifar-100-binary",
            archive: "cifar-100-binary.tar.gz",
        },
        Names { test: "test", meta: "meta", folder: "cifar-100-python", archive: "cifar-100-python.tar.gz" },
    ],
];

const LAYOUTS: [Layout; 2] = [Layout { python: false }, Layout { python: true }];

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())
}

/// The number in `data_batch_N[.bin]`, for sorting 2 before 10.
fn batch_number(path: &Path) -> u64 {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.trim_start_matches("data_batch_").trim_end_matches(".bin").parse().unwrap_or(0)
}

fn is_archive(p: &Path) -> bool {
    let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    n.ends_with(".tar.gz") || n.ends_with(".tgz") || n.ends_with(".tar")
}

fn file_names(dir: &Path) -> Result<Vec<String>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    Ok(entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
}

fn read_file(path: PathBuf) -> Result<File> {
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    Ok((path, bytes))
}

impl CifarFiles {
    /// The dataset's files under `spec` (see the module's doc); the test file only when
    /// `with_test`.
    pub fn find(spec: &Path, kind: CifarKind, with_test: bool) -> Result<CifarFiles> {
        if spec.is_file() {
            if !is_archive(spec) {
                return Err(Error::data(spec, "a file that is not a .tar, .tar.gz or .tgz archive of CIFAR"));
            }
            return Self::from_archive(spec, kind, with_test);
        }
        if !spec.is_dir() {
            return Err(Error::data(spec, "no such directory or archive"));
        }
        let names = file_names(spec)?;
        for layout in &LAYOUTS {
            if names.iter().any(|n| layout.is_train(n, kind)) {
                return Self::from_dir(spec, &names, layout, kind, with_test);
            }
        }
        for layout in &LAYOUTS {
            let sub = spec.join(layout.folder(kind));
            if sub.is_dir() {
                return Self::find(&sub, kind, with_test);
            }
        }
        for layout in &LAYOUTS {
            let archive = spec.join(layout.archive(kind));
            if archive.is_file() {
                return Self::from_archive(&archive, kind, with_test);
            }
        }
        let (bin, py) = (&LAYOUTS[0], &LAYOUTS[1]);
        let (bin_train, py_train) = match kind {
            CifarKind::Cifar10 => ("data_batch_*.bin", "data_batch_1… with batches.meta"),
            CifarKind::Cifar100 => ("train.bin", "train with meta"),
        };
        Err(Error::data(
            spec,
            format!(
                "no {} files here: no {bin_train} (binary version), no {py_train} (python version), no folder {} \
                 or {}, no archive {} or {}",
                kind.name(),
                bin.folder(kind),
                py.folder(kind),
                bin.archive(kind),
                py.archive(kind)
            ),
        ))
    }

    fn from_dir(dir: &Path, names: &[String], layout: &Layout, kind: CifarKind, with_test: bool) -> Result<Self> {
        let mut train: Vec<PathBuf> = names.iter().filter(|n| layout.is_train(n, kind)).map(|n| dir.join(n)).collect();
        train.sort_by_key(|p| batch_number(p));
        let train = train.into_iter().map(read_file).collect::<Result<Vec<_>>>()?;
        let test = with_test.then(|| Test::OnDisk(dir.join(layout.test(kind))));
        let meta_path = dir.join(layout.meta(kind));
        let meta = meta_path.is_file().then(|| read_file(meta_path)).transpose()?;
        Ok(CifarFiles { python: layout.python, train, test, meta })
    }

    /// The dataset's members of a (gzipped) tar archive, whichever folder they are in.
    fn from_archive(path: &Path, kind: CifarKind, with_test: bool) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let reader: Box<dyn Read> =
            if name.ends_with(".tar") { Box::new(file) } else { Box::new(flate2::read::GzDecoder::new(file)) };
        let bad = |e: std::io::Error| Error::data(path, format!("not a readable tar archive: {e}"));
        let mut archive = tar::Archive::new(reader);
        // Members by base name, per version.
        let mut found: [BTreeMap<String, File>; 2] = [BTreeMap::new(), BTreeMap::new()];
        for entry in archive.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let member = entry.path().map_err(bad)?.into_owned();
            let Some(base) = member.file_name().and_then(|n| n.to_str()).map(str::to_string) else { continue };
            for (i, layout) in LAYOUTS.iter().enumerate() {
                let wanted = layout.is_train(&base, kind)
                    || (with_test && base == layout.test(kind))
                    || base == layout.meta(kind);
                if !wanted {
                    continue;
                }
                let shown = PathBuf::from(format!("{}:{}", path.display(), member.display()));
                if entry.size() > MAX_MEMBER {
                    return Err(Error::data(&shown, format!("{} bytes, more than any CIFAR file", entry.size())));
                }
                let mut bytes = Vec::with_capacity(entry.size() as usize);
                entry.by_ref().take(MAX_MEMBER).read_to_end(&mut bytes).map_err(bad)?;
                found[i].insert(base.clone(), (shown, bytes));
                break;
            }
        }
        let Some(i) = LAYOUTS.iter().enumerate().position(|(i, l)| found[i].keys().any(|n| l.is_train(n, kind))) else {
            return Err(Error::data(path, format!("the archive holds no {} training files", kind.name())));
        };
        let (layout, mut files) = (&LAYOUTS[i], std::mem::take(&mut found[i]));
        let mut train: Vec<File> = Vec::new();
        let names: Vec<String> = files.keys().filter(|n| layout.is_train(n, kind)).cloned().collect();
        for n in names {
            train.extend(files.remove(&n));
        }
        train.sort_by_key(|(p, _)| batch_number(p));
        let test = if with_test {
            let t = layout.test(kind);
            Some(Test::Read(files.remove(t).ok_or_else(|| Error::data(path, format!("the archive holds no {t}")))?))
        } else {
            None
        };
        let meta = files.remove(layout.meta(kind));
        Ok(CifarFiles { python: layout.python, train, test, meta })
    }

    /// The test file, when it was asked for (read now if it is on disk).
    pub fn test_file(&mut self) -> Result<Option<File>> {
        match self.test.take() {
            Some(Test::Read(f)) => Ok(Some(f)),
            Some(Test::OnDisk(p)) => read_file(p).map(Some),
            None => Ok(None),
        }
    }

    /// Adds the images of one of these files to `set`.
    pub fn read(&self, path: &Path, bytes: &[u8], kind: CifarKind, set: &mut ImageSet) -> Result<()> {
        if self.python {
            read_cifar_pickle(path, bytes, kind, set)
        } else {
            read_cifar_file(path, bytes, kind, set)
        }
    }
}
