//! Datasets for search and retraining: an in-memory `ImageSet` of u8 CHW images with labels,
//! the data spec (`synthetic`, `cifar10:DIR`, …), loaders for each format, augmentation, and
//! parallel batch assembly.

mod augment;
mod cifar;
mod folder;
mod loader;
mod spec;
mod synthetic;

use std::sync::Arc;

pub use augment::{Augment, Normalize};
pub use cifar::{read_cifar_file, CifarKind};
pub use folder::decode_image;
pub use loader::{BatchIter, BatchPlan, HostBatch, Shard, StepIter};
pub use spec::DataSpec;
pub use synthetic::{synthetic, SYNTHETIC_CLASSES};

use crate::config_error::{brief, ConfigError};
use crate::error::{Error, Result};

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

/// A dataset: training images, test images when the format has them, and its normalisation.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub name: String,
    pub train: Arc<ImageSet>,
    pub test: Option<Arc<ImageSet>>,
    pub num_classes: usize,
    pub normalize: Normalize,
}

/// What to load: the spec, a cap on the training images, whether the test split is needed,
/// the seed for generated data and the side images of a folder dataset are resized to.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub subset: Option<usize>,
    pub with_test: bool,
    pub seed: u64,
    pub image_size: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { subset: None, with_test: false, seed: 0, image_size: 32 }
    }
}

impl Dataset {
    pub fn load(spec: &DataSpec, opts: &LoadOptions) -> Result<Dataset> {
        let mut ds = match spec {
            DataSpec::Synthetic => {
                synthetic(opts.seed, opts.subset.unwrap_or(synthetic::DEFAULT_TRAIN), synthetic::DEFAULT_TEST)
            }
            DataSpec::Cifar10(dir) => cifar::load(dir, CifarKind::Cifar10, opts.with_test)?,
            DataSpec::Cifar100(dir) => cifar::load(dir, CifarKind::Cifar100, opts.with_test)?,
            DataSpec::Folder(dir) => folder::load(dir, opts.image_size, opts.with_test)?,
        };
        if let Some(n) = opts.subset {
            if n == 0 {
                return Err(ConfigError::new(format!("{} must be positive", brief("data.subset"))).into());
            }
            let train = Arc::try_unwrap(ds.train).unwrap_or_else(|a| (*a).clone());
            ds.train = Arc::new(train.truncate(n));
        }
        if ds.train.is_empty() {
            return Err(Error::Invalid(format!("dataset {} has no training images", ds.name)));
        }
        Ok(ds)
    }

    /// DARTS' search split: the first half of the training images trains the weights, the
    /// second half drives the architecture.
    pub fn search_split(&self) -> (Arc<ImageSet>, Arc<ImageSet>) {
        let n = self.train.len();
        let half = n / 2;
        let idx: Vec<usize> = (0..n).collect();
        (Arc::new(self.train.select(&idx[..half])), Arc::new(self.train.select(&idx[half..])))
    }
}
