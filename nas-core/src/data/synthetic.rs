//! The embedded `synthetic` dataset: 10 classes of 32×32 RGB images generated from the seed
//! (drawn at another side with `synthetic_at`: the same patterns over the same 32-unit square,
//! sampled at S×S pixel centres).
//!
//! Every image mixes two random colours through a spatial pattern and adds pixel noise, so
//! colour says nothing about the class; only the structure does: the orientation of stripes
//! (4 classes), checkerboards, concentric rings, a disc, a square, a cross, or scattered dots,
//! each with random period, phase, size and position. Telling them apart needs both local
//! (orientation, texture) and larger-scale (shape) features, which is what the cell's choice
//! between convolutions, dilations and pooling is about.

use std::f32::consts::PI;

use rand::Rng as _;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

use super::{Dataset, ImageSet};
use crate::rng::{self, Purpose, Rng};

pub const SYNTHETIC_CLASSES: [&str; 10] = [
    "horizontal_stripes",
    "vertical_stripes",
    "diagonal_stripes",
    "antidiagonal_stripes",
    "checkerboard",
    "rings",
    "disc",
    "square",
    "cross",
    "dots",
];

pub(super) const DEFAULT_TRAIN: usize = 10_000;
pub(super) const DEFAULT_TEST: usize = 2_000;
const SIZE: usize = 32;

/// Pattern value in [0, 1] at (y, x) for one image, from parameters drawn once per image.
fn pattern(class: usize, rng: &mut Rng) -> Box<dyn Fn(f32, f32) -> f32> {
    let period: f32 = rng.random_range(4.0..10.0);
    let phase: f32 = rng.random_range(0.0..2.0 * PI);
    let cy: f32 = rng.random_range(8.0..24.0);
    let cx: f32 = rng.random_range(8.0..24.0);
    let wave = move |t: f32| 0.5 + 0.5 * (2.0 * PI * t / period + phase).sin();
    match class {
        0 => Box::new(move |y, _| wave(y)),
        1 => Box::new(move |_, x| wave(x)),
        2 => Box::new(move |y, x| wave((x + y) / std::f32::consts::SQRT_2)),
        3 => Box::new(move |y, x| wave((x - y) / std::f32::consts::SQRT_2)),
        4 => {
            let cell: f32 = rng.random_range(3.0..7.0);
            let (oy, ox): (f32, f32) = (rng.random_range(0.0..cell * 2.0), rng.random_range(0.0..cell * 2.0));
            Box::new(move |y, x| (((y + oy) / cell).floor() + ((x + ox) / cell).floor()).rem_euclid(2.0))
        }
        5 => Box::new(move |y, x| wave(((y - cy).powi(2) + (x - cx).powi(2)).sqrt())),
        6 => {
            let r: f32 = rng.random_range(6.0..12.0);
            Box::new(move |y, x| if (y - cy).powi(2) + (x - cx).powi(2) <= r * r { 1.0 } else { 0.0 })
        }
        7 => {
            let h: f32 = rng.random_range(5.0..11.0);
            Box::new(move |y, x| if (y - cy).abs() <= h && (x - cx).abs() <= h { 1.0 } else { 0.0 })
        }
        8 => {
            let w: f32 = rng.random_range(2.0..4.0);
            Box::new(move |y, x| if (y - cy).abs() <= w || (x - cx).abs() <= w { 1.0 } else { 0.0 })
        }
        _ => {
            let n = rng.random_range(6..14);
            let dots: Vec<(f32, f32, f32)> = (0..n)
                .map(|_| (rng.random_range(0.0..32.0), rng.random_range(0.0..32.0), rng.random_range(1.5..3.0)))
                .collect();
            Box::new(move |y, x| {
                let hit = dots.iter().any(|&(dy, dx, r)| (y - dy).powi(2) + (x - dx).powi(2) <= r * r);
                if hit {
                    1.0
                } else {
                    0.0
                }
            })
        }
    }
}

fn random_colour(rng: &mut Rng) -> [f32; 3] {
    [rng.random(), rng.random(), rng.random()]
}

fn luminance(c: &[f32; 3]) -> f32 {
    0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
}

/// Writes image `index` of `split` (class `index % 10`) into `out` (3×side×side, CHW).
fn render(seed: u64, split: u64, index: usize, side: usize, out: &mut [u8]) {
    let mut rng = rng::stream(seed, Purpose::Dataset, split, index as u64);
    let class = index % SYNTHETIC_CLASSES.len();
    let p = pattern(class, &mut rng);
    let (a, b) = loop {
        let (a, b) = (random_colour(&mut rng), random_colour(&mut rng));
        if (luminance(&a) - luminance(&b)).abs() > 0.25 {
            break (a, b);
        }
    };
    let noise: f32 = rng.random_range(0.03..0.12);
    let hw = side * side;
    let unit = SIZE as f32 / side as f32;
    for y in 0..side {
        for x in 0..side {
            let t = p((y as f32 + 0.5) * unit, (x as f32 + 0.5) * unit);
            for ch in 0..3 {
                let z: f32 = StandardNormal.sample(&mut rng);
                let v = a[ch] * (1.0 - t) + b[ch] * t + noise * z;
                out[ch * hw + y * side + x] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
    }
}

fn generate(seed: u64, split: u64, n: usize, side: usize) -> ImageSet {
    let len = 3 * side * side;
    let mut pixels = vec![0u8; n * len];
    pixels.par_chunks_mut(len).enumerate().for_each(|(i, img)| render(seed, split, i, side, img));
    ImageSet {
        pixels,
        labels: (0..n).map(|i| (i % SYNTHETIC_CLASSES.len()) as u32).collect(),
        channels: 3,
        height: side,
        width: side,
    }
}

/// The synthetic dataset with `n_train` training and `n_test` test images of 32×32.
pub fn synthetic(seed: u64, n_train: usize, n_test: usize) -> Dataset {
    synthetic_at(seed, n_train, n_test, SIZE)
}

/// `synthetic` drawn at `side`×`side` pixels (at 32, the same images).
pub fn synthetic_at(seed: u64, n_train: usize, n_test: usize, side: usize) -> Dataset {
    let train = generate(seed, 0, n_train, side);
    let normalize = train.channel_stats();
    Dataset {
        name: "synthetic".into(),
        train: train.into(),
        test: Some(generate(seed, 1, n_test, side).into()),
        num_classes: SYNTHETIC_CLASSES.len(),
        normalize,
        class_names: SYNTHETIC_CLASSES.iter().map(|c| c.to_string()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_balanced_and_seed_dependent() {
        let [a, b, c] = [(3, 40), (3, 40), (4, 40)].map(|(s, n)| synthetic(s, n, 10));
        let [at, bt, ct] = [&a, &b, &c].map(|d| d.train.in_memory().unwrap());
        assert_eq!(at.pixels, bt.pixels);
        assert_ne!(at.pixels, ct.pixels);
        assert_ne!(at.image(0), a.test.as_ref().unwrap().in_memory().unwrap().image(0));
        for k in 0..10u32 {
            assert_eq!(at.labels.iter().filter(|&&l| l == k).count(), 4);
        }
    }

    /// Colour alone must not identify the class: per-class mean colours stay close together.
    #[test]
    fn class_mean_colours_are_similar() {
        let ds = synthetic(0, 2000, 0);
        let t = ds.train.in_memory().unwrap();
        let mut means = vec![[0f64; 3]; 10];
        for i in 0..t.len() {
            let img = t.image(i);
            for (ch, plane) in img.chunks(1024).enumerate() {
                means[t.labels[i] as usize][ch] += plane.iter().map(|&p| p as f64).sum::<f64>() / 1024.0 / 200.0;
            }
        }
        for m in &means {
            for ch in 0..3 {
                assert!((m[ch] - 127.5).abs() < 25.0, "class mean colour {m:?}");
            }
        }
    }
}
