//! CPU kernels of batch normalisation and the channel affine map: per-plane partial sums in
//! f64 combined per channel in batch order, then one writing pass.

use std::mem::MaybeUninit;

use candle_core::{bail, Result};
use rayon::prelude::*;

use super::simd::{affine_acc_into, affine_into, bn_grad_into, sum_dot, sum_sumsq};
use super::{Float, Fresh};
use crate::batch_norm::BnBatchStats;

/// Σ f(plane) per channel, planes combined in batch order.
fn per_channel(planes: usize, c: usize, f: impl Fn(usize) -> (f64, f64) + Sync + Send) -> Vec<(f64, f64)> {
    combine_planes((0..planes).into_par_iter().with_min_len(4).map(f).collect(), c)
}

/// Per-plane partial sums (plane p = b·C + channel) added per channel in plane order.
pub(crate) fn combine_planes(partial: Vec<(f64, f64)>, c: usize) -> Vec<(f64, f64)> {
    let mut acc = vec![(0.0, 0.0); c];
    for (p, (a, b)) in partial.into_iter().enumerate() {
        acc[p % c].0 += a;
        acc[p % c].1 += b;
    }
    acc
}

/// The per-channel batch mean and biased variance of x (B, C, HW) (f64 sums).
fn batch_stats<T: Float>(x: &[T], (b, c, hw): (usize, usize, usize), op: &str) -> Result<BnBatchStats> {
    stats_from_sums(&per_channel(b * c, c, |p| sum_sumsq(&x[p * hw..(p + 1) * hw])), b * hw, op)
}

/// The mean and biased variance per channel from its (Σx, Σx²) over `n` values.
fn stats_from_sums(sums: &[(f64, f64)], n: usize, op: &str) -> Result<BnBatchStats> {
    if n == 0 {
        bail!("{op}: empty batch");
    }
    let mean: Vec<f64> = sums.iter().map(|&(s, _)| s / n as f64).collect();
    // Rounding can make E[x²] − μ² slightly negative; clamp that, but keep a NaN (`f64::max`
    // would turn it into 0 and hide a diverged input from the running statistics).
    let var: Vec<f64> = sums
        .iter()
        .zip(&mean)
        .map(|(&(_, q), &mu)| {
            let v = q / n as f64 - mu * mu;
            if v < 0.0 {
                0.0
            } else {
                v
            }
        })
        .collect();
    Ok(BnBatchStats { mean, var, count: n })
}

/// x̂ of x (B, C, HW) and the batch statistics.
pub(crate) fn forward<T: Float>(
    x: &[T],
    (b, c, hw): (usize, usize, usize),
    eps: f64,
) -> Result<(Vec<T>, BnBatchStats)> {
    let st = batch_stats(x, (b, c, hw), "batch_norm")?;
    let scale: Vec<T> = st.var.iter().map(|&v| T::from_f64(1.0 / (v + eps).sqrt())).collect();
    let shift: Vec<T> = st.mean.iter().zip(&st.var).map(|(&m, &v)| T::from_f64(-m / (v + eps).sqrt())).collect();
    let mut y = Fresh::new(x.len());
    y.slots().par_chunks_mut(hw).zip(x.par_chunks(hw)).enumerate().with_min_len(4).for_each(|(p, (yp, xp))| {
        affine_into(yp, xp, scale[p % c], shift[p % c]);
    });
    // SAFETY: the planes of y tile it exactly; affine_into writes every element of each.
    Ok((unsafe { y.assume_init() }, st))
}

/// ∂x from the output x̂ `y` (B, C, HW), ∂y and the batch variance.
pub(crate) fn backward<T: Float>(y: &[T], g: &[T], (b, c, hw): (usize, usize, usize), var: &[f64], eps: f64) -> Vec<T> {
    let n = (b * hw) as f64;
    let sums = per_channel(b * c, c, |p| sum_dot(&g[p * hw..(p + 1) * hw], &y[p * hw..(p + 1) * hw]));
    let coef: Vec<(T, T, T)> = sums
        .iter()
        .zip(var)
        .map(|(&(sg, sgy), &v)| {
            let inv = 1.0 / (v + eps).sqrt();
            (T::from_f64(inv), T::from_f64(inv * sg / n), T::from_f64(inv * sgy / n))
        })
        .collect();
    let mut gx = Fresh::new(y.len());
    gx.slots().par_chunks_mut(hw).enumerate().with_min_len(4).for_each(|(p, gxp)| {
        let (inv, m1, m2) = coef[p % c];
        bn_grad_into(gxp, &g[p * hw..(p + 1) * hw], &y[p * hw..(p + 1) * hw], inv, m1, m2);
    });
    // SAFETY: the planes of gx tile it exactly; bn_grad_into writes every element.
    unsafe { gx.assume_init() }
}

/// y = x·a[c] + b[c] for x (B, C, HW).
pub(crate) fn affine<T: Float>([x, a, b]: [&[T]; 3], (_, c, hw): (usize, usize, usize)) -> Result<Vec<T>> {
    if a.len() != c || b.len() != c {
        bail!("channel_affine: scale/shift must have {c} elements");
    }
    let mut y = Fresh::new(x.len());
    y.slots().par_chunks_mut(hw).zip(x.par_chunks(hw)).enumerate().with_min_len(4).for_each(|(p, (yp, xp))| {
        affine_into(yp, xp, a[p % c], b[p % c]);
    });
    // SAFETY: the planes of y tile it exactly; affine_into writes every element of each.
    Ok(unsafe { y.assume_init() })
}

/// (∂x, ∂a, ∂b) of `affine` as `want` asks.
pub(crate) fn affine_backward<T: Float>(
    [xv, av, g]: [&[T]; 3],
    (bs, c, hw): (usize, usize, usize),
    want: [bool; 3],
) -> [Option<Vec<T>>; 3] {
    let gx = want[0].then(|| {
        let mut gx = vec![T::zero(); xv.len()];
        gx.par_chunks_mut(hw).zip(g.par_chunks(hw)).enumerate().with_min_len(4).for_each(|(p, (o, gp))| {
            let sa = av[p % c];
            for (o, &gv) in o.iter_mut().zip(gp) {
                *o = gv * sa;
            }
        });
        gx
    });
    if !(want[1] || want[2]) {
        return [gx, None, None];
    }
    // (Σ g, Σ g·x) per channel; the scale gradient is the second.
    let sums = per_channel(bs * c, c, |p| {
        let (s, d) = sum_dot(&g[p * hw..(p + 1) * hw], &xv[p * hw..(p + 1) * hw]);
        (d, s)
    });
    let ga: Vec<T> = sums.iter().map(|s| T::from_f64(s.0)).collect();
    let gb: Vec<T> = sums.iter().map(|s| T::from_f64(s.1)).collect();
    [gx, want[1].then_some(ga), want[2].then_some(gb)]
}

/// y = acc + m[b]·(γ·x̂ + β) over slices: x and acc (B·C·HW), γ and β (C), m (B); the batch
/// statistics of x come with it, from x's per-channel (Σx, Σx²) in `sums` where the caller
/// took them as it wrote x (else read here). Shared by the BN op and the fused conv+BN stage.
#[allow(clippy::too_many_arguments)]
pub(crate) fn bn_affine_forward<T: Float>(
    x: &[T],
    (b, c, hw): (usize, usize, usize),
    gamma: &[T],
    beta: &[T],
    m: &[T],
    acc: Option<&[T]>,
    eps: f64,
    sums: Option<&[(f64, f64)]>,
) -> Result<(Vec<T>, BnBatchStats)> {
    let st = match sums {
        Some(sums) => stats_from_sums(sums, b * hw, "batch_norm_affine")?,
        None => batch_stats(x, (b, c, hw), "batch_norm_affine")?,
    };
    // Per channel: x·γ·inv + (β − μ·γ·inv), then times the sample's factor.
    let coef: Vec<(f64, f64)> = (0..c)
        .map(|ch| {
            let g = gamma[ch].to_f64();
            let inv = 1.0 / (st.var[ch] + eps).sqrt();
            (g * inv, beta[ch].to_f64() - st.mean[ch] * g * inv)
        })
        .collect();
    let mut y = Fresh::new(x.len());
    y.slots().par_chunks_mut(hw).zip(x.par_chunks(hw)).enumerate().with_min_len(4).for_each(|(p, (yp, xp))| {
        let (a, sh) = coef[p % c];
        let f = m[p / c].to_f64();
        let (a, sh) = (T::from_f64(f * a), T::from_f64(f * sh));
        match acc {
            Some(acc) => affine_acc_into(yp, xp, a, sh, &acc[p * hw..(p + 1) * hw]),
            None => affine_into(yp, xp, a, sh),
        }
    });
    // SAFETY: the planes of y tile it exactly; affine_into/affine_acc_into write every element.
    Ok((unsafe { y.assume_init() }, st))
}

/// The input gradient of `bn_affine_forward`, plane by plane: per channel A·g + B·x + C, A
/// times the plane's sample factor; and the γ and β gradients.
pub(crate) struct BnAffineGrad {
    c: usize,
    /// Per channel (γ·inv, B, C).
    coef: Vec<(f64, f64, f64)>,
    m: Vec<f64>,
    pub ggamma: Vec<f64>,
    pub gbeta: Vec<f64>,
}

impl BnAffineGrad {
    /// From x (the BN input), ∂y, γ, the sample factors m and the forward's statistics: the
    /// per-channel sums Σ g', Σ g'·x with g' = m[b]·g (one pass over g and x).
    pub fn new<T: Float>(
        x: &[T],
        g: &[T],
        (b, c, hw): (usize, usize, usize),
        gamma: &[T],
        m: &[T],
        st: &BnBatchStats,
        eps: f64,
    ) -> Self {
        let n = (b * hw) as f64;
        let sums = per_channel(b * c, c, |p| {
            let (sg, sgx) = sum_dot(&g[p * hw..(p + 1) * hw], &x[p * hw..(p + 1) * hw]);
            let f = m[p / c].to_f64();
            (f * sg, f * sgx)
        });
        let inv: Vec<f64> = st.var.iter().map(|&v| 1.0 / (v + eps).sqrt()).collect();
        // Σ g'·x̂ per channel: the γ gradient; Σ g' is the β gradient.
        let ggamma: Vec<f64> = (0..c).map(|ch| inv[ch] * (sums[ch].1 - st.mean[ch] * sums[ch].0)).collect();
        // γ·inv·(m·g − Σg'/N − x̂·Σg'x̂/N) with x̂ = (x − μ)·inv, as A·g + B·x + C.
        let coef = (0..c)
            .map(|ch| {
                let (gm, iv, mu) = (gamma[ch].to_f64(), inv[ch], st.mean[ch]);
                let bx = -gm * iv * iv * ggamma[ch] / n;
                let cst = -gm * iv * sums[ch].0 / n + gm * iv * iv * ggamma[ch] * mu / n;
                (gm * iv, bx, cst)
            })
            .collect();
        let m = m.iter().map(|&v| candle_core::WithDType::to_f64(v)).collect();
        Self { c, coef, m, ggamma, gbeta: sums.into_iter().map(|s| s.0).collect() }
    }

    /// ∂x of plane p (= b·C + channel) from its ∂y and x, every element of `out` written.
    pub fn plane<T: Float>(&self, p: usize, g: &[T], x: &[T], out: &mut [MaybeUninit<T>]) {
        let (a, bx, cst) = self.coef[p % self.c];
        let a = a * self.m[p / self.c];
        bn_grad_into(out, g, x, T::from_f64(a), T::from_f64(-cst), T::from_f64(-bx));
    }
}

/// Backward of `bn_affine_forward` (the accumulator's gradient is the output gradient itself):
/// the input gradient if `want_x`, and the γ and β gradients.
#[allow(clippy::too_many_arguments)]
pub(crate) fn bn_affine_backward<T: Float>(
    x: &[T],
    (b, c, hw): (usize, usize, usize),
    gamma: &[T],
    m: &[T],
    g: &[T],
    st: &BnBatchStats,
    eps: f64,
    want_x: bool,
) -> (Option<Vec<T>>, Vec<f64>, Vec<f64>) {
    let grad = BnAffineGrad::new(x, g, (b, c, hw), gamma, m, st, eps);
    let gx = want_x.then(|| {
        let mut gx = Fresh::new(x.len());
        gx.slots().par_chunks_mut(hw).enumerate().with_min_len(4).for_each(|(p, gxp)| {
            grad.plane(p, &g[p * hw..(p + 1) * hw], &x[p * hw..(p + 1) * hw], gxp);
        });
        // SAFETY: the planes of gx tile it exactly; bn_grad_into writes every element.
        unsafe { gx.assume_init() }
    });
    (gx, grad.ggamma, grad.gbeta)
}

/// y = m[b]·(γ·x̂ + β) and the batch statistics of x (B, C, HW), γβ (2·C), m (B).
pub(crate) fn affine_train<T: Float>(
    [x, gb, m]: [&[T]; 3],
    d: (usize, usize, usize),
    eps: f64,
) -> Result<(Vec<T>, BnBatchStats)> {
    bn_affine_forward(x, d, &gb[..d.1], &gb[d.1..], m, None, eps, None)
}

/// (∂x, ∂γβ) of `affine_train` as `want` asks.
pub(crate) fn affine_train_backward<T: Float>(
    [x, gb, m, gy]: [&[T]; 4],
    d: (usize, usize, usize),
    st: &BnBatchStats,
    eps: f64,
    want: [bool; 2],
) -> [Option<Vec<T>>; 2] {
    let (gx, ggamma, gbeta) = bn_affine_backward(x, d, &gb[..d.1], m, gy, st, eps, want[0]);
    [gx, want[1].then(|| ggamma.iter().chain(&gbeta).map(|&v| T::from_f64(v)).collect())]
}
