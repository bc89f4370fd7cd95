//! Image-folder datasets (`folder:DIR`), laid out like torchvision's `ImageFolder`:
//! DIR/train/<class>/<image> and DIR/test/<class>/<image> (or DIR/val/…, ImageNet's name, when
//! there is no DIR/test). The classes are the sub-folders of
//! DIR/train in name order; the test split must use the same class names (it may lack some).
//! Any format the `image` crate reads (PNG, JPEG, BMP, GIF) at any size. Hidden files (".…")
//! are skipped; an empty class folder or a missing split is an error naming it.
//!
//! Two ways to read them:
//! - in memory (`load`): every image decoded to RGB and resized to `size`×`size` (bilinear),
//!   in parallel, once; anything that does not decode is an error naming the file;
//! - streamed (`list`, ImageNet networks): only the file names are kept, and every batch
//!   decodes its images when it is assembled (`FileSet`), so a set of any size (1.28M JPEGs)
//!   needs memory for its names and the batches in flight only. A file that does not decode
//!   stops the run when its batch is assembled, naming it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::imageops::FilterType;
use rayon::prelude::*;

use super::transform::{Chw, Rgb};
use super::{Dataset, ImageSet, Normalize, Samples};
use crate::config_error::{brief, ConfigError};
use crate::error::{Error, Result};
use crate::rng::Rng;

/// The entries of `dir` not starting with '.', by name, with whether each is a folder (from
/// the directory listing: no call per file).
fn visible_entries(dir: &Path) -> Result<Vec<(String, bool)>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(|e| Error::io(dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') {
            // A symbolic link counts as what it points to.
            let is_dir = match e.file_type() {
                Ok(t) if t.is_symlink() => e.path().is_dir(),
                Ok(t) => t.is_dir(),
                Err(err) => return Err(Error::io(e.path(), err)),
            };
            out.push((name, is_dir));
        }
    }
    out.sort();
    Ok(out)
}

/// The class folders of a split, by name.
fn class_dirs(split: &Path) -> Result<Vec<(String, PathBuf)>> {
    if !split.is_dir() {
        return Err(Error::data(
            split,
            "no such directory (folder datasets need DIR/train/<class>/ and DIR/test/<class>/)",
        ));
    }
    let mut classes = Vec::new();
    for (name, is_dir) in visible_entries(split)? {
        let p = split.join(&name);
        if is_dir {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            classes.push((name, p));
        } else {
            return Err(Error::data(&p, "expected only class folders here, found a file"));
        }
    }
    if classes.is_empty() {
        return Err(Error::data(split, "no class folders"));
    }
    Ok(classes)
}

/// Decodes one image file to RGB `size`×`size`, channel-major.
pub fn decode_image(path: &Path, bytes: &[u8], size: usize) -> Result<Vec<u8>> {
    let img = image::load_from_memory(bytes).map_err(|e| Error::data(path, format!("not a readable image: {e}")))?;
    let rgb = if img.width() as usize == size && img.height() as usize == size {
        img.to_rgb8()
    } else {
        img.resize_exact(size as u32, size as u32, FilterType::Triangle).to_rgb8()
    };
    let hw = size * size;
    let mut chw = vec![0u8; 3 * hw];
    for (i, px) in rgb.pixels().enumerate() {
        for c in 0..3 {
            chw[c * hw + i] = px.0[c];
        }
    }
    Ok(chw)
}

/// Calls `f` with every class folder of one split in name order: its label (`classes` fixes
/// the label of each class name), its path and its image file names in name order. One class's
/// names are in memory at a time.
fn for_each_class(
    split: &Path,
    classes: &[String],
    mut f: impl FnMut(u32, &Path, Vec<String>) -> Result<()>,
) -> Result<()> {
    for (name, dir) in class_dirs(split)? {
        let Some(label) = classes.iter().position(|c| *c == name) else {
            return Err(Error::data(&dir, format!("class `{name}` does not exist in the training split")));
        };
        let images = visible_entries(&dir)?;
        if images.is_empty() {
            return Err(Error::data(&dir, format!("class folder `{name}` has no images")));
        }
        if let Some((sub, _)) = images.iter().find(|(_, is_dir)| *is_dir) {
            return Err(Error::data(dir.join(sub), "nested folders are not supported inside a class folder"));
        }
        f(label as u32, &dir, images.into_iter().map(|(n, _)| n).collect())?;
    }
    Ok(())
}

/// Reads one split into memory; `classes` fixes the label of each class name.
fn read_split(split: &Path, classes: &[String], size: usize) -> Result<ImageSet> {
    let mut files: Vec<(PathBuf, u32)> = Vec::new();
    for_each_class(split, classes, |label, dir, names| {
        files.extend(names.iter().map(|n| (dir.join(n), label)));
        Ok(())
    })?;
    let decoded: Vec<Vec<u8>> = files
        .par_iter()
        .map(|(p, _)| {
            let bytes = std::fs::read(p).map_err(|e| Error::io(p, e))?;
            decode_image(p, &bytes, size)
        })
        .collect::<Result<_>>()?;
    Ok(ImageSet {
        pixels: decoded.concat(),
        labels: files.iter().map(|(_, l)| *l).collect(),
        channels: 3,
        height: size,
        width: size,
    })
}

/// The largest side images are resized to (8192² RGB is 200 MB per image already; beyond
/// it the sizes overflow the image library's u32).
pub const MAX_IMAGE_SIZE: usize = 8192;

fn check_size(size: usize) -> Result<()> {
    if size == 0 {
        return Err(ConfigError::new(format!("{} must be positive", brief("data.image_size"))).into());
    }
    if size > MAX_IMAGE_SIZE {
        return Err(ConfigError::new(format!(
            "{} {size} is too large: images are resized to at most {MAX_IMAGE_SIZE}x{MAX_IMAGE_SIZE}",
            brief("data.image_size")
        ))
        .into());
    }
    Ok(())
}

/// The test split's folder: DIR/test, or ImageNet's DIR/val when there is no DIR/test.
fn test_dir(dir: &Path) -> PathBuf {
    let (test, val) = (dir.join("test"), dir.join("val"));
    if !test.exists() && val.is_dir() {
        val
    } else {
        test
    }
}

/// The class names of a folder dataset (its training split's class folders).
fn classes_of(dir: &Path) -> Result<Vec<String>> {
    if !dir.is_dir() {
        return Err(Error::data(dir, "no such directory"));
    }
    Ok(class_dirs(&dir.join("train"))?.into_iter().map(|(n, _)| n).collect())
}

/// The dataset decoded into memory, normalised by its training images' statistics.
pub(super) fn load(dir: &Path, size: usize, with_test: bool) -> Result<Dataset> {
    check_size(size)?;
    let classes = classes_of(dir)?;
    let train = read_split(&dir.join("train"), &classes, size)?;
    let test = if with_test { Some(read_split(&test_dir(dir), &classes, size)?.into()) } else { None };
    let normalize = train.channel_stats();
    Ok(Dataset {
        name: format!("folder:{}", dir.display()),
        num_classes: classes.len(),
        train: train.into(),
        test,
        normalize,
        class_names: classes,
    })
}

/// The dataset streamed from its files at `size`×`size`, with ImageNet's normalisation.
pub(super) fn list(dir: &Path, size: usize, with_test: bool) -> Result<Dataset> {
    check_size(size)?;
    let classes = classes_of(dir)?;
    let split = |path: &Path| -> Result<Samples> { Ok(Samples::Files(Arc::new(FileSet::list(path, &classes, size)?))) };
    Ok(Dataset {
        name: format!("folder:{}", dir.display()),
        num_classes: classes.len(),
        train: split(&dir.join("train"))?,
        test: if with_test { Some(split(&test_dir(dir))?) } else { None },
        normalize: Normalize::imagenet(),
        class_names: classes,
    })
}

/// The files of a streamed split and their labels; images come out `size`×`size` RGB. File
/// names are kept in one string (1.28M paths take tens of MB, not a `PathBuf` each).
#[derive(Debug, Clone)]
pub struct FileSet {
    /// The folder of each file, shared by the sets `select` cuts from this one.
    dirs: Arc<Vec<PathBuf>>,
    names: Arc<String>,
    /// Per file: its folder, and its name's byte range in `names`.
    entries: Vec<(u32, u64, u32)>,
    labels: Vec<u32>,
    size: usize,
}

impl FileSet {
    /// The images of one split, listed class by class.
    fn list(split: &Path, classes: &[String], size: usize) -> Result<Self> {
        let (mut dirs, mut names, mut entries, mut labels) = (Vec::new(), String::new(), Vec::new(), Vec::new());
        for_each_class(split, classes, |label, dir, files| {
            let d = dirs.len() as u32;
            dirs.push(dir.to_path_buf());
            for name in files {
                entries.push((d, names.len() as u64, name.len() as u32));
                names.push_str(&name);
                labels.push(label);
            }
            Ok(())
        })?;
        names.shrink_to_fit();
        entries.shrink_to_fit();
        labels.shrink_to_fit();
        Ok(Self { dirs: Arc::new(dirs), names: Arc::new(names), entries, labels, size })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// The side images come out at.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The path of file `i`.
    pub fn path(&self, i: usize) -> PathBuf {
        let (dir, start, len) = self.entries[i];
        self.dirs[dir as usize].join(&self.names[start as usize..start as usize + len as usize])
    }

    /// The files at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> FileSet {
        FileSet {
            dirs: self.dirs.clone(),
            names: self.names.clone(),
            entries: indices.iter().map(|&i| self.entries[i]).collect(),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            size: self.size,
        }
    }

    /// Image `i` decoded and brought to `size`×`size`: a random resized crop (training), or
    /// the resize and centre crop of evaluation.
    pub fn load(&self, i: usize, resized_crop: bool, rng: &mut Rng) -> Result<Chw> {
        let path = self.path(i);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let img = image::load_from_memory(&bytes)
            .map_err(|e| Error::data(&path, format!("not a readable image: {e}")))?
            .to_rgb8();
        let rgb = Rgb { pixels: img.as_raw(), height: img.height() as usize, width: img.width() as usize };
        let out =
            if resized_crop { rgb.random_resized_crop(self.size, rng) } else { rgb.resize_centre_crop(self.size) };
        out.map_err(|e| Error::data(&path, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_png(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
        let img = image::RgbImage::from_pixel(w, h, image::Rgb(rgb));
        img.save(path).unwrap();
    }

    fn tree(root: &Path) {
        for split in ["train", "test"] {
            for (class, colour) in [("cat", [200u8, 10, 10]), ("dog", [10, 200, 10])] {
                let d = root.join(split).join(class);
                std::fs::create_dir_all(&d).unwrap();
                write_png(&d.join("a.png"), 40, 20, colour);
                write_png(&d.join("b.png"), 8, 8, colour);
            }
        }
    }

    #[test]
    fn reads_resizes_and_labels_by_folder_name() {
        let tmp = tempfile::tempdir().unwrap();
        tree(tmp.path());
        std::fs::write(tmp.path().join("train/cat/.DS_Store"), b"junk").unwrap();
        let ds = load(tmp.path(), 16, true).unwrap();
        assert_eq!(ds.num_classes, 2);
        let train = ds.train.in_memory().unwrap();
        assert_eq!(train.labels, vec![0, 0, 1, 1]);
        assert_eq!((train.channels, train.height, train.width), (3, 16, 16));
        assert_eq!(ds.test.as_ref().unwrap().len(), 4);
        // A uniform image stays uniform when resized: red plane 200, green 10 for a cat.
        let img = train.image(0);
        assert!(img[..256].iter().all(|&v| v == 200) && img[256..512].iter().all(|&v| v == 10));
    }

    #[test]
    fn bad_folders_name_the_problem() {
        let tmp = tempfile::tempdir().unwrap();
        tree(tmp.path());
        std::fs::write(tmp.path().join("train/dog/broken.jpg"), b"definitely not a jpeg").unwrap();
        let e = load(tmp.path(), 16, true).unwrap_err().to_string();
        assert!(e.contains("broken.jpg") && e.contains("not a readable image"), "{e}");

        std::fs::remove_file(tmp.path().join("train/dog/broken.jpg")).unwrap();
        std::fs::create_dir_all(tmp.path().join("train/bird")).unwrap();
        let e = load(tmp.path(), 16, true).unwrap_err().to_string();
        assert!(e.contains("bird") && e.contains("has no images"), "{e}");

        std::fs::remove_dir(tmp.path().join("train/bird")).unwrap();
        std::fs::create_dir_all(tmp.path().join("test/fish")).unwrap();
        write_png(&tmp.path().join("test/fish/x.png"), 4, 4, [0, 0, 0]);
        let e = load(tmp.path(), 16, true).unwrap_err().to_string();
        assert!(e.contains("class `fish` does not exist"), "{e}");

        let e = load(&tmp.path().join("nope"), 16, true).unwrap_err().to_string();
        assert!(e.contains("no such directory"), "{e}");
    }

    /// A streamed set keeps names only; its batches decode every image at the set's size with
    /// the ImageNet transforms, the same for the same seed; an undecodable file stops its batch
    /// with an error naming it.
    #[test]
    fn streamed_folders_decode_batch_by_batch() {
        use crate::data::{Augment, BatchIter, BatchPlan};
        let tmp = tempfile::tempdir().unwrap();
        tree(tmp.path());
        // ImageNet names its test split `val`.
        std::fs::rename(tmp.path().join("test"), tmp.path().join("val")).unwrap();
        let ds = list(tmp.path(), 32, true).unwrap();
        assert!(ds.train.streamed() && ds.train.in_memory().is_none());
        assert_eq!((ds.train.len(), ds.train.shape(), ds.num_classes), (4, (3, 32, 32), 2));
        assert_eq!(ds.normalize, Normalize::imagenet());
        let plan = |augment| BatchPlan {
            batch_size: 2,
            shuffle: false,
            drop_last: false,
            augment,
            seed: 1,
            epoch: 0,
            stream: 0,
        };
        let read = |set: &Samples, augment| -> Result<Vec<_>> {
            BatchIter::new(set.clone(), ds.normalize.clone(), plan(augment), 1).collect()
        };
        let a = read(&ds.train, Augment::IMAGENET).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].shape, (2, 3, 32, 32));
        assert_eq!(a.iter().flat_map(|b| b.labels.clone()).collect::<Vec<_>>(), vec![0, 0, 1, 1]);
        let b = read(&ds.train, Augment::IMAGENET).unwrap();
        assert_eq!(a[1].images, b[1].images, "the same draws for the same seed and position");
        // Evaluation: the resize and centre crop of a uniform image is uniform, (v/255 − m)/s.
        let e = read(ds.test.as_ref().unwrap(), Augment::NONE).unwrap();
        let red = (200.0 / 255.0 - 0.485) / 0.229;
        assert!(e[0].images[..1024].iter().all(|v| (v - red).abs() < 1e-5), "{}", e[0].images[0]);

        // First of its class: the first image of step 1's first micro-batch below.
        std::fs::write(tmp.path().join("train/dog/0broken.jpg"), b"definitely not a jpeg").unwrap();
        let ds = list(tmp.path(), 32, false).unwrap();
        assert_eq!(ds.train.len(), 5, "listing reads no image");
        let e = read(&ds.train, Augment::IMAGENET).unwrap_err().to_string();
        assert!(e.contains("broken.jpg") && e.contains("not a readable image"), "{e}");
        // Steps of two micro-batches: the failed batch is the step's error, not a short step.
        let steps = crate::data::StepIter::new(
            ds.train.clone(),
            ds.normalize.clone(),
            BatchPlan { batch_size: 1, ..plan(Augment::IMAGENET) },
            crate::data::Shard::of_rank(0, 1, 2),
            1,
            0,
        );
        let e = steps.collect::<Result<Vec<_>>>().unwrap_err().to_string();
        assert!(e.contains("broken.jpg"), "{e}");
    }

    /// Per class, disjoint draws of the asked fractions (rounded, at least one), the same for
    /// the same seed.
    #[test]
    fn class_fractions_are_disjoint_per_class_draws() {
        let labels: Vec<u32> = (0..3u32).flat_map(|c| std::iter::repeat_n(c, 40 + 20 * c as usize)).collect();
        let n = labels.len();
        let set: Samples =
            ImageSet { pixels: (0..n).map(|i| i as u8).collect(), labels, channels: 1, height: 1, width: 1 }.into();
        let (w, a) = set.class_fractions((0.1, 0.025), 3);
        let count = |s: &Samples, c: u32| s.labels().iter().filter(|&&l| l == c).count();
        for (c, size) in [(0, 40), (1, 60), (2, 80)] {
            assert_eq!(count(&w, c), (size as f64 * 0.1).round() as usize);
            assert_eq!(count(&a, c), ((size as f64 * 0.025).round() as usize).max(1));
        }
        let pixels = |s: &Samples| s.in_memory().unwrap().pixels.clone();
        let (pw, pa) = (pixels(&w), pixels(&a));
        assert!(pw.iter().all(|p| !pa.contains(p)), "the two parts share an image");
        let (w2, _) = set.class_fractions((0.1, 0.025), 3);
        let (w3, _) = set.class_fractions((0.1, 0.025), 4);
        assert_eq!(pixels(&w2), pw);
        assert_ne!(pixels(&w3), pw);
    }
}
