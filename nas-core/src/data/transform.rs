//! The ImageNet transforms of DARTS' and PC-DARTS' `train_imagenet.py`, as torchvision applies
//! them to PIL images, on u8 channel-major images of any size:
//! - `RandomResizedCrop(S)`: a box of 8% to 100% of the area with an aspect ratio in [3/4, 4/3]
//!   (log-uniform), up to ten draws, else the central box of the clamped ratio; resized to S×S;
//! - `Resize(R)` + `CenterCrop(S)` for evaluation: the shorter side to R (the longer to
//!   ⌊R·long/short⌋), then the central S×S, R = ⌊S·256/224⌋ (256 for 224);
//! - `ColorJitter(b, c, s, h)`: brightness, contrast, saturation and hue in a random order,
//!   factors uniform in [max(0, 1 − x), 1 + x] (hue: a shift in [−h, h] of a turn), each
//!   adjustment rounding back to u8 as PIL's enhancers do.
//!
//! Resizing is bilinear with the filter widened by the downscaling factor (antialiased), the
//! resampling PIL's `resize(…, BILINEAR)` does, through `fast_image_resize`. Python's rounding
//! (half to even) decides the box sizes and the centre crop's offsets, as in torchvision.

use std::cell::RefCell;

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use rand::Rng as _;

use crate::error::{Error, Result};
use crate::rng::Rng;

/// A u8 image, channel-major (C, H, W).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chw {
    pub data: Vec<u8>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl Chw {
    /// Channel-major copy of interleaved RGB pixels (H, W, 3).
    pub fn from_rgb(rgb: &[u8], height: usize, width: usize) -> Self {
        let hw = height * width;
        let mut data = vec![0u8; 3 * hw];
        let (r, rest) = data.split_at_mut(hw);
        let (g, b) = rest.split_at_mut(hw);
        for (i, px) in rgb.chunks_exact(3).enumerate() {
            r[i] = px[0];
            g[i] = px[1];
            b[i] = px[2];
        }
        Self { data, channels: 3, height, width }
    }

    fn plane(&self, c: usize) -> &[u8] {
        let hw = self.height * self.width;
        &self.data[c * hw..(c + 1) * hw]
    }
}

/// A box of an image in pixels: rows `top..top + height`, columns `left..left + width`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    pub top: usize,
    pub left: usize,
    pub height: usize,
    pub width: usize,
}

/// Python's `round` (half to even) of a non-negative value.
fn py_round(v: f64) -> usize {
    v.round_ties_even().max(0.0) as usize
}

/// torchvision's `RandomResizedCrop.get_params` with scale (0.08, 1) and ratio (3/4, 4/3) for
/// an image of `height`×`width`.
pub fn random_resized_crop_box(height: usize, width: usize, rng: &mut Rng) -> CropBox {
    const SCALE: (f64, f64) = (0.08, 1.0);
    const RATIO: (f64, f64) = (3.0 / 4.0, 4.0 / 3.0);
    let area = (height * width) as f64;
    let (log_lo, log_hi) = (RATIO.0.ln(), RATIO.1.ln());
    for _ in 0..10 {
        let target = area * rng.random_range(SCALE.0..SCALE.1);
        let aspect = rng.random_range(log_lo..log_hi).exp();
        let w = py_round((target * aspect).sqrt());
        let h = py_round((target / aspect).sqrt());
        if 0 < w && w <= width && 0 < h && h <= height {
            let top = rng.random_range(0..=height - h);
            let left = rng.random_range(0..=width - w);
            return CropBox { top, left, height: h, width: w };
        }
    }
    // The whole image, cut to the nearest allowed ratio, in the centre.
    let in_ratio = width as f64 / height as f64;
    let (w, h) = if in_ratio < RATIO.0 {
        (width, py_round(width as f64 / RATIO.0))
    } else if in_ratio > RATIO.1 {
        (py_round(height as f64 * RATIO.1), height)
    } else {
        (width, height)
    };
    CropBox { top: (height - h) / 2, left: (width - w) / 2, height: h, width: w }
}

/// The side evaluation resizes the shorter side to before cropping `size`: ⌊size·256/224⌋.
pub fn eval_resize_side(size: usize) -> usize {
    size * 256 / 224
}

/// torchvision's `CenterCrop(size)` box of an image of `height`×`width` (at least size×size).
pub fn centre_crop_box(height: usize, width: usize, size: usize) -> CropBox {
    let top = py_round((height.saturating_sub(size)) as f64 / 2.0);
    let left = py_round((width.saturating_sub(size)) as f64 / 2.0);
    CropBox { top, left, height: size.min(height), width: size.min(width) }
}

/// The output size of torchvision's `Resize(side)`: the shorter side to `side`, the longer to
/// ⌊side·long/short⌋ (height, width).
pub fn resize_shorter_size(height: usize, width: usize, side: usize) -> (usize, usize) {
    if height <= width {
        (side, side * width / height.max(1))
    } else {
        (side * height / width.max(1), side)
    }
}

thread_local! {
    static RESIZER: RefCell<Resizer> = RefCell::new(Resizer::new());
}

/// The box `b` of a `width`-wide image of `pixel` pixels resized to `out_h`×`out_w`
/// (antialiased bilinear), in the same pixel layout.
fn resize_pixels(
    buf: &[u8],
    (height, width): (usize, usize),
    pixel: PixelType,
    b: CropBox,
    (out_h, out_w): (usize, usize),
) -> Result<Vec<u8>> {
    let fail = |e: &dyn std::fmt::Display| Error::Invalid(format!("resizing an image: {e}"));
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)).crop(
        b.left as f64,
        b.top as f64,
        b.width as f64,
        b.height as f64,
    );
    let src = ImageRef::new(width as u32, height as u32, buf, pixel).map_err(|e| fail(&e))?;
    let mut dst = Image::new(out_w as u32, out_h as u32, pixel);
    RESIZER.with(|r| r.borrow_mut().resize(&src, &mut dst, &options)).map_err(|e| fail(&e))?;
    Ok(dst.into_vec())
}

/// The box `b` of `src` resized to `out_h`×`out_w`, every channel alike (antialiased bilinear).
pub fn resize_box(src: &Chw, b: CropBox, out_h: usize, out_w: usize) -> Result<Chw> {
    let hw = out_h * out_w;
    let mut data = Vec::with_capacity(src.channels * hw);
    for c in 0..src.channels {
        data.extend(resize_pixels(src.plane(c), (src.height, src.width), PixelType::U8, b, (out_h, out_w))?);
    }
    Ok(Chw { data, channels: src.channels, height: out_h, width: out_w })
}

/// Interleaved RGB pixels (H, W, 3) of `height`×`width`.
#[derive(Debug, Clone, Copy)]
pub struct Rgb<'a> {
    pub pixels: &'a [u8],
    pub height: usize,
    pub width: usize,
}

impl Rgb<'_> {
    /// The box `b` resized to `out_h`×`out_w`, channel-major: one resize of the interleaved
    /// pixels, then the small output split into planes.
    pub fn resize_box(&self, b: CropBox, out_h: usize, out_w: usize) -> Result<Chw> {
        let out = resize_pixels(self.pixels, (self.height, self.width), PixelType::U8x3, b, (out_h, out_w))?;
        Ok(Chw::from_rgb(&out, out_h, out_w))
    }

    /// `RandomResizedCrop(size)`.
    pub fn random_resized_crop(&self, size: usize, rng: &mut Rng) -> Result<Chw> {
        self.resize_box(random_resized_crop_box(self.height, self.width, rng), size, size)
    }

    /// `Resize(⌊size·256/224⌋)` then `CenterCrop(size)`.
    pub fn resize_centre_crop(&self, size: usize) -> Result<Chw> {
        let (h, w) = resize_shorter_size(self.height, self.width, eval_resize_side(size));
        let full = CropBox { top: 0, left: 0, height: self.height, width: self.width };
        let resized = self.resize_box(full, h, w)?;
        Ok(crop(&resized, centre_crop_box(h, w, size)))
    }
}

/// The box `b` of `src`, copied.
pub fn crop(src: &Chw, b: CropBox) -> Chw {
    let mut data = Vec::with_capacity(src.channels * b.height * b.width);
    for c in 0..src.channels {
        let plane = src.plane(c);
        for y in b.top..b.top + b.height {
            data.extend_from_slice(&plane[y * src.width + b.left..y * src.width + b.left + b.width]);
        }
    }
    Chw { data, channels: src.channels, height: b.height, width: b.width }
}

/// `ColorJitter` strengths; 0 leaves an adjustment out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Jitter {
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
    pub hue: f32,
}

impl Jitter {
    pub const NONE: Jitter = Jitter { brightness: 0.0, contrast: 0.0, saturation: 0.0, hue: 0.0 };
    /// `ColorJitter(0.4, 0.4, 0.4, 0.2)` of the DARTS ImageNet recipe.
    pub const IMAGENET: Jitter = Jitter { brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.2 };

    pub fn is_none(&self) -> bool {
        *self == Jitter::NONE
    }

    /// The adjustments (0 brightness, 1 contrast, 2 saturation, 3 hue) in the order drawn, each
    /// with its factor (the hue's shift), as `ColorJitter.get_params` draws them.
    pub fn draw(&self, rng: &mut Rng) -> Vec<(usize, f32)> {
        let mut order = [0usize, 1, 2, 3];
        for i in (1..4).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
        let factor = |x: f32, rng: &mut Rng| rng.random_range((1.0 - x).max(0.0)..=1.0 + x);
        let mut out = Vec::with_capacity(4);
        for k in order {
            let strength = [self.brightness, self.contrast, self.saturation, self.hue][k];
            if strength > 0.0 {
                let f = if k == 3 { rng.random_range(-strength..=strength) } else { factor(strength, rng) };
                out.push((k, f));
            }
        }
        out
    }

    /// Applies a random jitter to an RGB image in place.
    pub fn apply(&self, img: &mut Chw, rng: &mut Rng) {
        if self.is_none() || img.channels != 3 {
            return;
        }
        for (k, f) in self.draw(rng) {
            match k {
                0 => brightness(img, f),
                1 => contrast(img, f),
                2 => saturation(img, f),
                _ => hue(img, f),
            }
        }
    }
}

/// PIL's `Image.blend(a, b, f)` of one value: a + f·(b − a), clipped and truncated to u8.
fn blend(a: f32, b: f32, f: f32) -> u8 {
    (a + f * (b - a)).clamp(0.0, 255.0) as u8
}

/// PIL's RGB → L: (299 R + 587 G + 114 B) / 1000 in 16-bit fixed point, rounded.
fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((r as u32 * 19595 + g as u32 * 38470 + b as u32 * 7471 + 0x8000) >> 16) as u8
}

/// `ImageEnhance.Brightness`: a blend with black.
pub fn brightness(img: &mut Chw, f: f32) {
    for v in &mut img.data {
        *v = blend(0.0, *v as f32, f);
    }
}

/// `ImageEnhance.Contrast`: a blend with the grey of the image's mean luma (rounded).
pub fn contrast(img: &mut Chw, f: f32) {
    let hw = img.height * img.width;
    let (r, rest) = img.data.split_at(hw);
    let (g, b) = rest.split_at(hw);
    let sum: u64 = (0..hw).map(|i| luma(r[i], g[i], b[i]) as u64).sum();
    let mean = (sum as f64 / hw.max(1) as f64 + 0.5).floor() as f32;
    for v in &mut img.data {
        *v = blend(mean, *v as f32, f);
    }
}

/// `ImageEnhance.Color`: a blend of every pixel with its own luma.
pub fn saturation(img: &mut Chw, f: f32) {
    let hw = img.height * img.width;
    let (r, rest) = img.data.split_at_mut(hw);
    let (g, b) = rest.split_at_mut(hw);
    for i in 0..hw {
        let l = luma(r[i], g[i], b[i]) as f32;
        r[i] = blend(l, r[i] as f32, f);
        g[i] = blend(l, g[i] as f32, f);
        b[i] = blend(l, b[i] as f32, f);
    }
}

/// A hue rotation by `shift` of a turn: RGB → HSV, H + shift (mod 1), back, rounded to u8.
/// In the units of the pixels: with max, min and δ = max − min of a pixel, H·6 is its sector
/// plus the fraction f, and the sector's channels are max, min + δ·f, max − δ·f or min.
pub fn hue(img: &mut Chw, shift: f32) {
    let hw = img.height * img.width;
    let (r, rest) = img.data.split_at_mut(hw);
    let (g, b) = rest.split_at_mut(hw);
    let turn = shift * 6.0;
    for i in 0..hw {
        let (rf, gf, bf) = (r[i] as f32, g[i] as f32, b[i] as f32);
        let max = rf.max(gf).max(bf);
        let min = rf.min(gf).min(bf);
        let delta = max - min;
        if delta <= 0.0 {
            continue; // grey: no hue to turn
        }
        let inv = 1.0 / delta;
        let h = if max == rf {
            let h = (gf - bf) * inv;
            if h < 0.0 {
                h + 6.0
            } else {
                h
            }
        } else if max == gf {
            (bf - rf) * inv + 2.0
        } else {
            (rf - gf) * inv + 4.0
        };
        // h + turn lies in (−6, 12): one wrap brings it into [0, 6).
        let mut h = h + turn;
        if h < 0.0 {
            h += 6.0;
        } else if h >= 6.0 {
            h -= 6.0;
        }
        let sector = (h as usize).min(5);
        let frac = h - sector as f32;
        let (rise, fall) = (min + delta * frac, max - delta * frac);
        let (nr, ng, nb) = match sector {
            0 => (max, rise, min),
            1 => (fall, max, min),
            2 => (min, max, rise),
            3 => (min, fall, max),
            4 => (rise, min, max),
            _ => (max, min, fall),
        };
        // Round half up (v ≥ 0); `as` saturates at 255.
        (r[i], g[i], b[i]) = ((nr + 0.5) as u8, (ng + 0.5) as u8, (nb + 0.5) as u8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn uniform(rgb: [u8; 3], h: usize, w: usize) -> Chw {
        let hw = h * w;
        let mut data = Vec::with_capacity(3 * hw);
        for v in rgb {
            data.extend(std::iter::repeat_n(v, hw));
        }
        Chw { data, channels: 3, height: h, width: w }
    }

    /// Every box lies inside the image, covers 8–100% of it (up to the rounding of its sides)
    /// with a ratio in [3/4, 4/3]; the draws spread over the allowed range.
    #[test]
    fn random_resized_crop_boxes_obey_scale_and_ratio() {
        let mut rng = Rng::seed_from_u64(4);
        let (h, w) = (375, 500);
        let (mut small, mut large) = (0, 0);
        for _ in 0..2000 {
            let b = random_resized_crop_box(h, w, &mut rng);
            assert!(b.top + b.height <= h && b.left + b.width <= w, "{b:?}");
            let frac = (b.height * b.width) as f64 / (h * w) as f64;
            let ratio = b.width as f64 / b.height as f64;
            assert!((0.075..=1.0).contains(&frac), "{b:?}: area {frac}");
            assert!((0.74..=1.36).contains(&ratio), "{b:?}: ratio {ratio}");
            small += usize::from(frac < 0.2);
            large += usize::from(frac > 0.8);
        }
        assert!(small > 100 && large > 50, "{small} small, {large} large boxes");
        // A 10:1 strip cannot hold a box of ratio ≤ 4/3 and ≥ 8% area every time: whatever
        // the draws, the box is inside and of an allowed ratio (the fallback clamps it).
        for _ in 0..200 {
            let b = random_resized_crop_box(20, 200, &mut rng);
            assert!(b.top + b.height <= 20 && b.left + b.width <= 200 && b.width <= 27, "{b:?}");
        }
    }

    #[test]
    fn centre_crop_and_resize_sizes_follow_torchvision() {
        assert_eq!(eval_resize_side(224), 256);
        assert_eq!(resize_shorter_size(375, 500, 256), (256, 341));
        assert_eq!(resize_shorter_size(500, 333, 256), (384, 256));
        // (256 − 224)/2 = 16; (341 − 224)/2 = 58.5 rounds to 58 (half to even).
        assert_eq!(centre_crop_box(256, 341, 224), CropBox { top: 16, left: 58, height: 224, width: 224 });
        let rgb: Vec<u8> = (0..375 * 500).flat_map(|_| [10u8, 20, 30]).collect();
        let out = Rgb { pixels: &rgb, height: 375, width: 500 }.resize_centre_crop(224).unwrap();
        assert_eq!((out.height, out.width), (224, 224));
        assert_eq!(out, uniform([10, 20, 30], 224, 224), "a uniform image stays uniform");
    }

    /// A horizontal ramp resized by half: each output pixel averages the source pixels under
    /// its (widened) triangle filter, so the ramp stays a ramp of half the slope.
    #[test]
    fn downscaling_averages_and_the_box_selects() {
        let (h, w) = (4, 16);
        let data: Vec<u8> = (0..h).flat_map(|_| (0..w).map(|x| (x * 16) as u8)).collect();
        let img = Chw { data, channels: 1, height: h, width: w };
        let out = resize_box(&img, CropBox { top: 0, left: 0, height: h, width: w }, 2, 8).unwrap();
        for row in out.data.chunks(8) {
            for x in 1..7 {
                // Output pixel x is centred on source 2x + 0.5, value 16·(2x + 0.5).
                let want = 16.0 * (2.0 * x as f32 + 0.5);
                assert!((row[x] as f32 - want).abs() <= 1.0, "{row:?}");
            }
        }
        let b = CropBox { top: 1, left: 4, height: 2, width: 8 };
        assert_eq!(resize_box(&img, b, 2, 8).unwrap(), crop(&img, b), "same size: a copy of the box");
    }

    #[test]
    fn colour_adjustments_match_their_closed_forms() {
        let mut img = uniform([100, 50, 200], 2, 2);
        brightness(&mut img, 1.5);
        assert_eq!(img, uniform([150, 75, 255], 2, 2), "scaled, clipped at 255");
        let mut grey = uniform([90, 90, 90], 2, 2);
        saturation(&mut grey, 0.0);
        hue(&mut grey, 0.3);
        assert_eq!(grey, uniform([90, 90, 90], 2, 2), "grey has no saturation or hue to change");
        let mut img = uniform([200, 100, 0], 1, 2);
        saturation(&mut img, 0.0);
        let l = luma(200, 100, 0);
        assert_eq!(img, uniform([l, l, l], 1, 2));
        // Half black, half white: mean luma 127.5 → 128; factor 0 gives that grey.
        let mut img = Chw { data: vec![0, 255, 0, 255, 0, 255], channels: 3, height: 1, width: 2 };
        contrast(&mut img, 0.0);
        assert!(img.data.iter().all(|&v| v == 128), "{:?}", img.data);
        // A third of a turn takes red to green, and green to blue.
        let mut red = uniform([255, 0, 0], 1, 1);
        hue(&mut red, 1.0 / 3.0);
        assert_eq!(red, uniform([0, 255, 0], 1, 1));
        hue(&mut red, 1.0 / 3.0);
        assert_eq!(red, uniform([0, 0, 255], 1, 1));
    }

    /// Closed forms (yellow + 60° is green; orange (255, 128, 0) + 180° is (0, 255 − 128, 255)),
    /// and a turn back undoes a turn up to rounding.
    #[test]
    fn hue_turns_around_the_colour_wheel() {
        let mut yellow = uniform([255, 255, 0], 1, 1);
        hue(&mut yellow, 1.0 / 6.0);
        assert_eq!(yellow, uniform([0, 255, 0], 1, 1));
        let mut orange = uniform([255, 128, 0], 1, 1);
        hue(&mut orange, 0.5);
        assert_eq!(orange, uniform([0, 127, 255], 1, 1));
        let mut rng = Rng::seed_from_u64(9);
        let data: Vec<u8> = (0..3 * 500).map(|_| rng.random()).collect();
        let img = Chw { data, channels: 3, height: 20, width: 25 };
        for shift in [0.05f32, 0.2, -0.2, -0.13] {
            let mut turned = img.clone();
            hue(&mut turned, shift);
            assert_ne!(turned, img);
            hue(&mut turned, -shift);
            let worst = turned.data.iter().zip(&img.data).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
            assert!(worst <= 3, "shift {shift}: off by {worst} levels after turning back");
        }
    }

    /// The factors lie in their ranges, every order of the four occurs, and an adjustment of
    /// strength 0 is left out.
    #[test]
    fn jitter_draws_every_order_within_the_ranges() {
        let mut rng = Rng::seed_from_u64(7);
        let mut orders = std::collections::HashSet::new();
        for _ in 0..2000 {
            let d = Jitter::IMAGENET.draw(&mut rng);
            assert_eq!(d.len(), 4);
            for &(k, f) in &d {
                let ok = if k == 3 { (-0.2..=0.2).contains(&f) } else { (0.6..=1.4).contains(&f) };
                assert!(ok, "adjustment {k} factor {f}");
            }
            orders.insert(d.iter().map(|p| p.0).collect::<Vec<_>>());
        }
        assert_eq!(orders.len(), 24);
        let only_hue = Jitter { hue: 0.1, ..Jitter::NONE };
        let d = only_hue.draw(&mut rng);
        assert!(d.len() == 1 && d[0].0 == 3);
    }
}
