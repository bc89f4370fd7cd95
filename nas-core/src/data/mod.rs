//! Datasets for search and retraining: the images of a split (`Samples`: an in-memory
//! `ImageSet` of u8 CHW images with labels, or a `FileSet` streamed from its files), the data
//! spec (`synthetic`, `cifar10:DIR`, …), loaders for each format, augmentation and the ImageNet
//! transforms, and parallel batch assembly.

mod augment;
mod cifar;
mod folder;
mod loader;
pub mod pickle;
mod source;
mod spec;
mod synthetic;
pub mod transform;

use std::sync::Arc;

use rayon::prelude::*;

pub use augment::{Augment, Normalize};
pub use cifar::{read_cifar_file, read_cifar_meta, read_cifar_pickle, CifarKind};
pub use folder::{decode_image, FileSet};
pub use loader::{BatchIter, BatchPlan, HostBatch, Shard, StepIter};
pub use source::CifarFiles;
pub use spec::DataSpec;
pub use synthetic::{synthetic, synthetic_at, SYNTHETIC_CLASSES};

use crate::config_error::{brief, ConfigError};
use crate::error::{Error, Result};
use crate::rng::{self, Purpose, Rng};
use transform::{random_resized_crop_box, resize_box, Chw};

/// Images stored as u8, channel-major (C, H, W) per image, one after another.
#[derive(Debug, Clone)]
pub struct ImageSet {
    pub pixels: Vec<u8>,
    pub labels: Vec<u32>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl ImageSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// The images at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> ImageSet {
        let mut pixels = Vec::with_capacity(indices.len() * self.image_len());
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
        }
        ImageSet {
            pixels,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            channels: self.channels,
            height: self.height,
            width: self.width,
        }
    }

    /// The first `n` images (all of them when `n` is larger).
    pub fn truncate(mut self, n: usize) -> ImageSet {
        if n < self.len() {
            self.pixels.truncate(n * self.image_len());
            self.labels.truncate(n);
        }
        self
    }

    /// Every image resized to `side`×`side` (antialiased bilinear).
    pub fn resized(&self, side: usize) -> Result<ImageSet> {
        let full = transform::CropBox { top: 0, left: 0, height: self.height, width: self.width };
        let images: Vec<Vec<u8>> = (0..self.len())
            .into_par_iter()
            .map(|i| {
                let src = Chw {
                    data: self.image(i).to_vec(),
                    channels: self.channels,
                    height: self.height,
                    width: self.width,
                };
                Ok(resize_box(&src, full, side, side)?.data)
            })
            .collect::<Result<_>>()?;
        Ok(ImageSet {
            pixels: images.concat(),
            labels: self.labels.clone(),
            channels: self.channels,
            height: side,
            width: side,
        })
    }

    /// Per-channel mean and standard deviation of the pixel values scaled to [0, 1].
    pub fn channel_stats(&self) -> Normalize {
        let (c, hw) = (self.channels, self.height * self.width);
        let mut sum = vec![0f64; c];
        let mut sq = vec![0f64; c];
        for img in self.pixels.chunks(c * hw) {
            for (ch, plane) in img.chunks(hw).enumerate() {
                for &p in plane {
                    let v = p as f64 / 255.0;
                    sum[ch] += v;
                    sq[ch] += v * v;
                }
            }
        }
        let n = (self.len() * hw).max(1) as f64;
        let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
        let std: Vec<f32> =
            sum.iter().zip(&sq).map(|(s, q)| ((q / n - (s / n).powi(2)).max(1e-12).sqrt()) as f32).collect();
        Normalize { mean, std }
    }
}

impl Normalize {
    /// torchvision's ImageNet constants: mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225).
    pub fn imagenet() -> Normalize {
        Normalize { mean: vec![0.485, 0.456, 0.406], std: vec![0.229, 0.224, 0.225] }
    }
}

/// The images of a split: decoded in memory, or files decoded as their batches are assembled.
/// Cloning shares the images.
#[derive(Debug, Clone)]
pub enum Samples {
    Memory(Arc<ImageSet>),
    Files(Arc<FileSet>),
}

impl From<ImageSet> for Samples {
    fn from(set: ImageSet) -> Self {
        Samples::Memory(Arc::new(set))
    }
}

impl Samples {
    pub fn len(&self) -> usize {
        match self {
            Samples::Memory(s) => s.len(),
            Samples::Files(f) => f.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn labels(&self) -> &[u32] {
        match self {
            Samples::Memory(s) => &s.labels,
            Samples::Files(f) => f.labels(),
        }
    }

    /// (channels, height, width) of the images batches hold.
    pub fn shape(&self) -> (usize, usize, usize) {
        match self {
            Samples::Memory(s) => (s.channels, s.height, s.width),
            Samples::Files(f) => (3, f.size(), f.size()),
        }
    }

    /// The decoded images, when they are in memory.
    pub fn in_memory(&self) -> Option<&ImageSet> {
        match self {
            Samples::Memory(s) => Some(s),
            Samples::Files(_) => None,
        }
    }

    /// Whether the images are read from their files batch by batch.
    pub fn streamed(&self) -> bool {
        matches!(self, Samples::Files(_))
    }

    /// The images at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Samples {
        match self {
            Samples::Memory(s) => s.select(indices).into(),
            Samples::Files(f) => Samples::Files(Arc::new(f.select(indices))),
        }
    }

    /// The first `n` images (all of them when `n` is larger).
    pub fn truncate(self, n: usize) -> Samples {
        if n >= self.len() {
            return self;
        }
        match self {
            Samples::Memory(s) => Arc::try_unwrap(s).unwrap_or_else(|a| (*a).clone()).truncate(n).into(),
            Samples::Files(f) => Samples::Files(Arc::new(f.select(&(0..n).collect::<Vec<_>>()))),
        }
    }

    /// Writes image `i`, augmented with draws from `rng` and normalised, into `dst` (C, H, W).
    /// Without a resized crop or colour jitter an in-memory image is read in place.
    pub fn write(&self, i: usize, augment: &Augment, norm: &Normalize, rng: &mut Rng, dst: &mut [f32]) -> Result<()> {
        let shape = self.shape();
        let img = match self {
            Samples::Memory(s) if !augment.transforms() => {
                augment.apply(s.image(i), shape, norm, rng, dst);
                return Ok(());
            }
            Samples::Memory(s) => {
                let (channels, height, width) = shape;
                let img = Chw { data: s.image(i).to_vec(), channels, height, width };
                if augment.resized_crop {
                    resize_box(&img, random_resized_crop_box(height, width, rng), height, width)?
                } else {
                    img
                }
            }
            Samples::Files(f) => f.load(i, augment.resized_crop, rng)?,
        };
        let mut img = img;
        augment.jitter.apply(&mut img, rng);
        augment.apply(&img.data, shape, norm, rng, dst);
        Ok(())
    }

    /// Per class, disjoint random draws of `fractions.0` and `fractions.1` of its images (at
    /// least one each where the class has two or more), keyed by `seed`; each part in class
    /// then draw order. PC-DARTS' ImageNet search: 10% trains the weights, 2.5% the α.
    pub fn class_fractions(&self, fractions: (f64, f64), seed: u64) -> (Samples, Samples) {
        use rand::seq::SliceRandom;
        let labels = self.labels();
        let classes = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
        for (i, &l) in labels.iter().enumerate() {
            by_class[l as usize].push(i);
        }
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for (c, mut idx) in by_class.into_iter().enumerate() {
            idx.shuffle(&mut rng::stream(seed, Purpose::Shuffle, u64::MAX, c as u64));
            let n = idx.len();
            let take = |f: f64| if n >= 2 { ((f * n as f64).round() as usize).max(1) } else { 0 };
            let na = take(fractions.0).min(n);
            let nb = take(fractions.1).min(n - na);
            a.extend_from_slice(&idx[..na]);
            b.extend_from_slice(&idx[na..na + nb]);
        }
        (self.select(&a), self.select(&b))
    }
}

/// A dataset: training images, test images when the format has them, and its normalisation.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub name: String,
    pub train: Samples,
    pub test: Option<Samples>,
    pub num_classes: usize,
    pub normalize: Normalize,
    /// The classes' names when the data names them (CIFAR's meta files, a folder's class
    /// folders); empty otherwise.
    pub class_names: Vec<String>,
}

/// What to load: the spec, a cap on the training images, whether the test split is needed,
/// the seed for generated data, the side images of a folder dataset come out at, and whether
/// a folder dataset is streamed from its files (ImageNet networks) or decoded into memory.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub subset: Option<usize>,
    pub with_test: bool,
    pub seed: u64,
    pub image_size: usize,
    pub stream: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { subset: None, with_test: false, seed: 0, image_size: 32, stream: false }
    }
}

/// An image side as `--image-size` gives it: positive.
fn check_side(side: usize) -> Result<usize> {
    if side == 0 {
        return Err(ConfigError::new(format!("{} must be positive", brief("data.image_size"))).into());
    }
    Ok(side)
}

impl Dataset {
    /// The dataset with its in-memory images resized to `side`×`side` (antialiased bilinear,
    /// as a folder's images are), or itself when they already are: CIFAR's 32×32 images at
    /// another `--image-size`.
    fn resized(mut self, side: usize) -> Result<Dataset> {
        check_side(side)?;
        let resize = |s: Samples| -> Result<Samples> {
            match s {
                Samples::Memory(set) if (set.height, set.width) != (side, side) => Ok(set.resized(side)?.into()),
                other => Ok(other),
            }
        };
        self.train = resize(self.train)?;
        self.test = self.test.map(resize).transpose()?;
        Ok(self)
    }

    /// What a run records of its data (`dataset.json` in its directory): the dataset, its
    /// number of classes and their names (empty when the data names none), its image counts,
    /// the shape (C, H, W) of an image as the network sees it and the per-channel
    /// normalisation of pixels scaled to [0, 1] (what an exported network puts first).
    pub fn record(&self) -> serde_json::Value {
        let (c, h, w) = self.train.shape();
        serde_json::json!({
            "name": self.name,
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "train_images": self.train.len(),
            "test_images": self.test.as_ref().map(|t| t.len()),
            "image_shape": [c, h, w],
            "normalize": self.normalize,
        })
    }

    pub fn load(spec: &DataSpec, opts: &LoadOptions) -> Result<Dataset> {
        let mut ds = match spec {
            DataSpec::Synthetic => synthetic::synthetic_at(
                opts.seed,
                opts.subset.unwrap_or(synthetic::DEFAULT_TRAIN),
                synthetic::DEFAULT_TEST,
                check_side(opts.image_size)?,
            ),
            DataSpec::Cifar10(dir) => cifar::load(dir, CifarKind::Cifar10, opts.with_test)?.resized(opts.image_size)?,
            DataSpec::Cifar100(dir) => {
                cifar::load(dir, CifarKind::Cifar100, opts.with_test)?.resized(opts.image_size)?
            }
            DataSpec::Folder(dir) if opts.stream => folder::list(dir, opts.image_size, opts.with_test)?,
            DataSpec::Folder(dir) => folder::load(dir, opts.image_size, opts.with_test)?,
        };
        if let Some(n) = opts.subset {
            if n == 0 {
                return Err(ConfigError::new(format!("{} must be positive", brief("data.subset"))).into());
            }
            ds.train = ds.train.truncate(n);
        }
        if ds.train.is_empty() {
            return Err(Error::Invalid(format!("dataset {} has no training images", ds.name)));
        }
        Ok(ds)
    }

    /// DARTS' search split: the first half of the training images trains the weights, the
    /// second half drives the architecture.
    pub fn search_split(&self) -> (Samples, Samples) {
        let n = self.train.len();
        let half = n / 2;
        let idx: Vec<usize> = (0..n).collect();
        (self.train.select(&idx[..half]), self.train.select(&idx[half..]))
    }
}
