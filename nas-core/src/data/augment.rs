//! CIFAR augmentation as torchvision does it for DARTS: RandomCrop(size, padding=4) with black
//! padding, RandomHorizontalFlip, ToTensor, Normalize(mean, std), then Cutout (retraining): a
//! square of zeros of side `cutout` centred uniformly in the image, clipped at the border.

use rand::Rng as _;
use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// Per-channel normalisation of pixels scaled to [0, 1].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalize {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// Training-time augmentation; `Augment::NONE` for evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Augment {
    pub crop_padding: usize,
    pub flip: bool,
    pub cutout: usize,
}

impl Augment {
    pub const NONE: Augment = Augment { crop_padding: 0, flip: false, cutout: 0 };
    /// Random crop with padding 4 and horizontal flip (DARTS search and retraining).
    pub const CIFAR: Augment = Augment { crop_padding: 4, flip: true, cutout: 0 };

    /// Writes one normalised, augmented image (C, H, W) from u8 `src` into `dst`.
    pub fn apply(
        &self,
        src: &[u8],
        (c, h, w): (usize, usize, usize),
        norm: &Normalize,
        rng: &mut Rng,
        dst: &mut [f32],
    ) {
        let p = self.crop_padding as isize;
        let (oy, ox) = if p > 0 {
            (rng.random_range(0..=2 * p as i64) as isize - p, rng.random_range(0..=2 * p as i64) as isize - p)
        } else {
            (0, 0)
        };
        let flip = self.flip && rng.random_bool(0.5);
        for ch in 0..c {
            let (mean, std) = (norm.mean[ch % norm.mean.len()], norm.std[ch % norm.std.len()]);
            let scale = 1.0 / (255.0 * std);
            let black = -mean / std;
            let plane = &src[ch * h * w..(ch + 1) * h * w];
            let out = &mut dst[ch * h * w..(ch + 1) * h * w];
            for y in 0..h {
                let sy = y as isize + oy;
                for x in 0..w {
                    let xx = if flip { w - 1 - x } else { x };
                    let sx = xx as isize + ox;
                    out[y * w + x] = if sy >= 0 && sy < h as isize && sx >= 0 && sx < w as isize {
                        plane[sy as usize * w + sx as usize] as f32 * scale - mean / std
                    } else {
                        black
                    };
                }
            }
        }
        if self.cutout > 0 {
            let (cy, cx) = (rng.random_range(0..h) as isize, rng.random_range(0..w) as isize);
            let half = (self.cutout / 2) as isize;
            let (y0, y1) = ((cy - half).max(0) as usize, ((cy + half).min(h as isize)) as usize);
            let (x0, x1) = ((cx - half).max(0) as usize, ((cx + half).min(w as isize)) as usize);
            for ch in 0..c {
                for y in y0..y1 {
                    dst[ch * h * w + y * w + x0..ch * h * w + y * w + x1].fill(0.0);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn norm() -> Normalize {
        Normalize { mean: vec![0.0], std: vec![1.0 / 255.0] }
    }

    #[test]
    fn no_augmentation_is_plain_normalisation() {
        let src: Vec<u8> = (0..2 * 3 * 4).map(|v| v as u8).collect();
        let mut dst = vec![0f32; src.len()];
        Augment::NONE.apply(&src, (2, 3, 4), &norm(), &mut Rng::seed_from_u64(0), &mut dst);
        assert_eq!(dst, src.iter().map(|&v| v as f32).collect::<Vec<_>>());
    }

    /// A crop is a shift of the image with black (zero before normalisation) borders, and the
    /// flip mirrors rows; every output must be one of the 9×9×2 possible shifted images.
    #[test]
    fn crop_and_flip_are_shifts_and_mirrors() {
        let (h, w) = (5, 6);
        let src: Vec<u8> = (1..=(h * w) as u8).collect();
        let aug = Augment { crop_padding: 4, flip: true, cutout: 0 };
        let mut rng = Rng::seed_from_u64(1);
        for _ in 0..50 {
            let mut dst = vec![0f32; h * w];
            aug.apply(&src, (1, h, w), &norm(), &mut rng, &mut dst);
            let mut matched = false;
            for flip in [false, true] {
                for oy in -4isize..=4 {
                    for ox in -4isize..=4 {
                        let want: Vec<f32> = (0..h * w)
                            .map(|i| {
                                let (y, x) = ((i / w) as isize, (i % w) as isize);
                                let x = if flip { w as isize - 1 - x } else { x };
                                let (sy, sx) = (y + oy, x + ox);
                                if sy >= 0 && sy < h as isize && sx >= 0 && sx < w as isize {
                                    src[(sy * w as isize + sx) as usize] as f32
                                } else {
                                    0.0
                                }
                            })
                            .collect();
                        if want == dst {
                            matched = true;
                        }
                    }
                }
            }
            assert!(matched, "{dst:?}");
        }
    }

    #[test]
    fn cutout_zeroes_a_clipped_square() {
        let src = vec![255u8; 16 * 16];
        let aug = Augment { crop_padding: 0, flip: false, cutout: 8 };
        let mut rng = Rng::seed_from_u64(2);
        for _ in 0..20 {
            let mut dst = vec![0f32; 256];
            aug.apply(&src, (1, 16, 16), &norm(), &mut rng, &mut dst);
            let zeros = dst.iter().filter(|&&v| v == 0.0).count();
            assert!((1..=64).contains(&zeros), "{zeros}");
        }
    }
}
