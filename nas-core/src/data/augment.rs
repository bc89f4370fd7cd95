//! Augmentation as torchvision does it for DARTS. CIFAR: RandomCrop(size, padding=4) with black
//! padding, RandomHorizontalFlip, ToTensor, Normalize(mean, std), then Cutout (retraining): a
//! square of zeros of side `cutout` centred uniformly in the image, clipped at the border.
//! ImageNet: RandomResizedCrop and ColorJitter (`transform`) before the flip and the
//! normalisation; the source of the images applies the crop (`Samples::write`).

use rand::Rng as _;
use serde::{Deserialize, Serialize};

use super::transform::Jitter;
use crate::rng::Rng;

/// Per-channel normalisation of pixels scaled to [0, 1].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalize {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// Training-time augmentation; `Augment::NONE` for evaluation (which, for images streamed
/// from files, is the resize and centre crop).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Augment {
    pub crop_padding: usize,
    pub flip: bool,
    pub cutout: usize,
    /// `RandomResizedCrop` of every image to the set's size.
    pub resized_crop: bool,
    pub jitter: Jitter,
}

impl Augment {
    pub const NONE: Augment =
        Augment { crop_padding: 0, flip: false, cutout: 0, resized_crop: false, jitter: Jitter::NONE };
    /// Random crop with padding 4 and horizontal flip (DARTS search and retraining).
    pub const CIFAR: Augment = Augment { crop_padding: 4, flip: true, ..Augment::NONE };
    /// Random resized crop, horizontal flip and colour jitter (0.4, 0.4, 0.4, 0.2): DARTS' and
    /// PC-DARTS' ImageNet retraining.
    pub const IMAGENET: Augment = Augment { flip: true, resized_crop: true, jitter: Jitter::IMAGENET, ..Augment::NONE };
    /// Random resized crop and horizontal flip: PC-DARTS' ImageNet search (both halves).
    pub const IMAGENET_SEARCH: Augment = Augment { flip: true, resized_crop: true, ..Augment::NONE };

    /// Whether images need a working copy before `apply` (a crop to resize or colours to
    /// change).
    pub fn transforms(&self) -> bool {
        self.resized_crop || !self.jitter.is_none()
    }

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
        let aug = Augment::CIFAR;
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

    /// The zeroed pixels of one cutout draw as a rectangle `[y0, y1) × [x0, x1)`, after checking
    /// that every channel has exactly those pixels zeroed and every other pixel keeps its
    /// normalised value `(v / 255 − mean) / std`.
    fn zeroed_rectangle(
        src: &[u8],
        dst: &[f32],
        (c, h, w): (usize, usize, usize),
        norm: &Normalize,
    ) -> (usize, usize, usize, usize) {
        let zero = |y: usize, x: usize| dst[y * w + x] == 0.0;
        let rows: Vec<usize> = (0..h).filter(|&y| (0..w).any(|x| zero(y, x))).collect();
        let cols: Vec<usize> = (0..w).filter(|&x| (0..h).any(|y| zero(y, x))).collect();
        assert!(!rows.is_empty(), "cutout zeroed nothing");
        let (y0, y1, x0, x1) = (rows[0], rows[rows.len() - 1] + 1, cols[0], cols[cols.len() - 1] + 1);
        for ch in 0..c {
            let (mean, std) = (norm.mean[ch], norm.std[ch]);
            for y in 0..h {
                for x in 0..w {
                    let i = ch * h * w + y * w + x;
                    if (y0..y1).contains(&y) && (x0..x1).contains(&x) {
                        assert_eq!(dst[i], 0.0, "channel {ch} ({y}, {x}) inside the window");
                    } else {
                        let want = (src[i] as f32 / 255.0 - mean) / std;
                        assert!((dst[i] - want).abs() < 1e-5, "channel {ch} ({y}, {x}): {} vs {want}", dst[i]);
                    }
                }
            }
        }
        (y0, y1, x0, x1)
    }

    /// DARTS' `utils.Cutout`: centre `y ~ U{0..h}`, rows `clip(y − L/2, 0, h)..clip(y + L/2, 0,
    /// h)` (integer `L/2`), the same for columns, on every channel. Each window recovers its
    /// centre, so the test also checks that every centre occurs about equally often.
    #[test]
    fn cutout_zeroes_a_clipped_square() {
        let (c, h, w, len) = (3, 16, 12, 8);
        // No source value normalises to 0 ((v/255 − 0.5)/0.25 = 0 needs v = 127.5), so every zero
        // comes from the cutout.
        let norm = Normalize { mean: vec![0.5, 0.5, 0.5], std: vec![0.25, 0.5, 0.125] };
        let src: Vec<u8> = (0..c * h * w).map(|i| (i * 37 % 256) as u8).collect();
        let aug = Augment { cutout: len, ..Augment::NONE };
        let mut rng = Rng::seed_from_u64(2);
        let half = len / 2;
        let window = |centre: usize, size: usize| (centre.saturating_sub(half), (centre + half).min(size));
        let (mut rows_seen, mut cols_seen) = (vec![0usize; h], vec![0usize; w]);
        let draws = 1200;
        let mut min_area = usize::MAX;
        for _ in 0..draws {
            let mut dst = vec![f32::NAN; c * h * w];
            aug.apply(&src, (c, h, w), &norm, &mut rng, &mut dst);
            let (y0, y1, x0, x1) = zeroed_rectangle(&src, &dst, (c, h, w), &norm);
            let cy = (0..h).find(|&cy| window(cy, h) == (y0, y1));
            let cx = (0..w).find(|&cx| window(cx, w) == (x0, x1));
            let (Some(cy), Some(cx)) = (cy, cx) else {
                panic!("rows {y0}..{y1}, columns {x0}..{x1} is no clipped {len}×{len} window");
            };
            rows_seen[cy] += 1;
            cols_seen[cx] += 1;
            let (dy, dx) = (y1 - y0, x1 - x0);
            assert!(dy <= len && dx <= len, "{dy}×{dx}");
            if (half..=h - half).contains(&cy) && (half..=w - half).contains(&cx) {
                assert_eq!((dy, dx), (len, len), "centre ({cy}, {cx}) is far from the border");
            }
            // The strongest clipping (a centre in a corner) leaves an (L/2)×(L/2) window.
            assert!(dy * dx >= half * half, "{dy}×{dx}");
            min_area = min_area.min(dy * dx);
        }
        assert_eq!(min_area, 16, "no draw hit a corner");
        // Uniform centres: 1200/16 = 75 per row (σ ≈ 8.4), 1200/12 = 100 per column (σ ≈ 9.6).
        for (seen, n) in [(&rows_seen, h), (&cols_seen, w)] {
            let expect = draws as f64 / n as f64;
            for (i, &k) in seen.iter().enumerate() {
                assert!((k as f64 - expect).abs() < 5.0 * expect.sqrt(), "centre {i} drawn {k} times of {draws}");
            }
        }
    }

    /// An odd length zeroes a side of `2·⌊L/2⌋` as DARTS' integer `L // 2` does.
    #[test]
    fn odd_cutout_length_zeroes_an_even_side() {
        let (h, w) = (20, 20);
        let norm = Normalize { mean: vec![0.5], std: vec![0.25] };
        let src: Vec<u8> = (0..h * w).map(|i| (i * 37 % 256) as u8).collect();
        let aug = Augment { cutout: 5, ..Augment::NONE };
        let mut rng = Rng::seed_from_u64(3);
        let mut interior = 0;
        for _ in 0..200 {
            let mut dst = vec![f32::NAN; h * w];
            aug.apply(&src, (1, h, w), &norm, &mut rng, &mut dst);
            let (y0, y1, x0, x1) = zeroed_rectangle(&src, &dst, (1, h, w), &norm);
            assert!(y1 - y0 <= 4 && x1 - x0 <= 4, "{y0}..{y1} × {x0}..{x1}");
            if y0 > 0 && x0 > 0 && y1 < h && x1 < w {
                assert_eq!((y1 - y0, x1 - x0), (4, 4));
                interior += 1;
            }
        }
        assert!(interior > 100, "{interior}");
    }
}
