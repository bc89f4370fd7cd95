//! Batch normalisation kernels. `batch_norm_train` normalises each channel of x (B, C, H, W)
//! with its batch mean and biased variance, x̂ = (x − μ)/√(σ² + ε), and reports μ and σ² for
//! the running statistics; its backward is the closed form
//! ∂x = (1/√(σ²+ε)) · (∂x̂ − mean(∂x̂) − x̂ · mean(∂x̂ · x̂)), one reduction pass and one
//! writing pass. `channel_affine` is y = x·scale[c] + shift[c] (BN's affine part, and the
//! whole of BN in evaluation mode).
//!
//! Per-plane partial sums are accumulated in f64 and combined per channel in batch order.

use std::sync::{Arc, Mutex};

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::kernel::{cpu_tensor, slice, with_slices, Float};
use super::simd::{affine_into, bn_grad_into, sum_dot, sum_sumsq};
use crate::{dispatch_dtype, dispatch_float};

/// Batch statistics of one training-mode forward: per-channel mean and biased variance over
/// `count` values each.
#[derive(Debug, Clone, PartialEq)]
pub struct BnBatchStats {
    pub mean: Vec<f64>,
    pub var: Vec<f64>,
    pub count: usize,
}

fn dims(d: &[usize]) -> Result<(usize, usize, usize)> {
    match *d {
        [b, c, h, w] => Ok((b, c, h * w)),
        [b, c] => Ok((b, c, 1)),
        _ => bail!("batch_norm: expected (B, C, H, W), got {d:?}"),
    }
}

/// Σ f(plane) per channel, planes combined in batch order.
fn per_channel(planes: usize, c: usize, f: impl Fn(usize) -> (f64, f64) + Sync + Send) -> Vec<(f64, f64)> {
    let partial: Vec<(f64, f64)> = (0..planes).into_par_iter().with_min_len(4).map(f).collect();
    let mut acc = vec![(0.0, 0.0); c];
    for (p, (a, b)) in partial.into_iter().enumerate() {
        acc[p % c].0 += a;
        acc[p % c].1 += b;
    }
    acc
}

struct BatchNormTrain {
    eps: f64,
    stats: Arc<Mutex<Option<BnBatchStats>>>,
}

fn fwd_impl<T: Float>(s: &CpuStorage, l: &Layout, eps: f64) -> Result<(CpuStorage, BnBatchStats)> {
    let x = slice::<T>(s, l, "batch_norm")?;
    let (b, c, hw) = dims(l.dims())?;
    let n = b * hw;
    if n == 0 {
        bail!("batch_norm: empty batch");
    }
    let sums = per_channel(b * c, c, |p| sum_sumsq(&x[p * hw..(p + 1) * hw]));
    let mean: Vec<f64> = sums.iter().map(|&(s, _)| s / n as f64).collect();
    let var: Vec<f64> = sums.iter().zip(&mean).map(|(&(_, q), &m)| (q / n as f64 - m * m).max(0.0)).collect();
    let scale: Vec<T> = var.iter().map(|&v| T::from_f64(1.0 / (v + eps).sqrt())).collect();
    let shift: Vec<T> = mean.iter().zip(&var).map(|(&m, &v)| T::from_f64(-m / (v + eps).sqrt())).collect();
    let mut y = vec![T::zero(); x.len()];
    y.par_chunks_mut(hw).zip(x.par_chunks(hw)).enumerate().with_min_len(4).for_each(|(p, (yp, xp))| {
        affine_into(yp, xp, scale[p % c], shift[p % c]);
    });
    Ok((T::to_cpu_storage_owned(y), BnBatchStats { mean, var, count: n }))
}

fn bwd_impl<T: Float>(y: &Tensor, gy: &Tensor, var: &[f64], eps: f64) -> Result<Tensor> {
    let (b, c, hw) = dims(y.dims())?;
    let n = (b * hw) as f64;
    with_slices::<T, _>(&[y, gy], |s| {
        let (y, g) = (s[0], s[1]);
        let sums = per_channel(b * c, c, |p| sum_dot(&g[p * hw..(p + 1) * hw], &y[p * hw..(p + 1) * hw]));
        let coef: Vec<(T, T, T)> = sums
            .iter()
            .zip(var)
            .map(|(&(sg, sgy), &v)| {
                let inv = 1.0 / (v + eps).sqrt();
                (T::from_f64(inv), T::from_f64(inv * sg / n), T::from_f64(inv * sgy / n))
            })
            .collect();
        let mut gx = vec![T::zero(); y.len()];
        gx.par_chunks_mut(hw).enumerate().with_min_len(4).for_each(|(p, gxp)| {
            let (inv, m1, m2) = coef[p % c];
            bn_grad_into(gxp, &g[p * hw..(p + 1) * hw], &y[p * hw..(p + 1) * hw], inv, m1, m2);
        });
        cpu_tensor(gx, y.len())
    })?
    .reshape(gy.shape())
}

impl CustomOp1 for BatchNormTrain {
    fn name(&self) -> &'static str {
        "batch-norm-train"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (out, stats) = dispatch_float!("batch_norm", s, fwd_impl(s, l, self.eps))?;
        *self.stats.lock().unwrap_or_else(|e| e.into_inner()) = Some(stats);
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, gy: &Tensor) -> Result<Option<Tensor>> {
        let var = match self.stats.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            Some(s) => s.var.clone(),
            None => bail!("batch_norm: backward before forward"),
        };
        Ok(Some(dispatch_dtype!("batch_norm", y.dtype(), bwd_impl(y, gy, &var, self.eps))?))
    }
}

/// Training-mode normalisation of x (B, C, H, W) without affine parameters; returns x̂ and
/// the batch statistics.
pub fn batch_norm_train(x: &Tensor, eps: f64) -> Result<(Tensor, BnBatchStats)> {
    let stats = Arc::new(Mutex::new(None));
    let y = x.contiguous()?.apply_op1(BatchNormTrain { eps, stats: stats.clone() })?;
    let s = stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match s {
        Some(s) => Ok((y, s)),
        None => bail!("batch_norm: statistics missing after forward"),
    }
}

struct ChannelAffine;

fn affine_fwd<T: Float>(s: [(&CpuStorage, &Layout); 3]) -> Result<CpuStorage> {
    let x = slice::<T>(s[0].0, s[0].1, "channel_affine")?;
    let a = slice::<T>(s[1].0, s[1].1, "channel_affine")?;
    let b = slice::<T>(s[2].0, s[2].1, "channel_affine")?;
    let (_, c, hw) = dims(s[0].1.dims())?;
    if a.len() != c || b.len() != c {
        bail!("channel_affine: scale/shift must have {c} elements");
    }
    let mut y = vec![T::zero(); x.len()];
    y.par_chunks_mut(hw).zip(x.par_chunks(hw)).enumerate().with_min_len(4).for_each(|(p, (yp, xp))| {
        affine_into(yp, xp, a[p % c], b[p % c]);
    });
    Ok(T::to_cpu_storage_owned(y))
}

fn affine_bwd<T: Float>(
    x: &Tensor,
    a: &Tensor,
    b: &Tensor,
    gy: &Tensor,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let (bs, c, hw) = dims(x.dims())?;
    with_slices::<T, _>(&[x, a, gy], |s| {
        let (xv, av, g) = (s[0], s[1], s[2]);
        let gx = if x.track_op() {
            let mut gx = vec![T::zero(); xv.len()];
            gx.par_chunks_mut(hw).zip(g.par_chunks(hw)).enumerate().with_min_len(4).for_each(|(p, (o, gp))| {
                let sa = av[p % c];
                for (o, &gv) in o.iter_mut().zip(gp) {
                    *o = gv * sa;
                }
            });
            Some(cpu_tensor(gx, x.shape())?)
        } else {
            None
        };
        let (ga, gb) = if a.track_op() || b.track_op() {
            // (Σ g, Σ g·x) per channel; the scale gradient is the second.
            let sums = per_channel(bs * c, c, |p| {
                let (s, d) = sum_dot(&g[p * hw..(p + 1) * hw], &xv[p * hw..(p + 1) * hw]);
                (d, s)
            });
            let ga: Vec<T> = sums.iter().map(|s| T::from_f64(s.0)).collect();
            let gb: Vec<T> = sums.iter().map(|s| T::from_f64(s.1)).collect();
            (
                a.track_op().then(|| cpu_tensor(ga, a.shape())).transpose()?,
                b.track_op().then(|| cpu_tensor(gb, b.shape())).transpose()?,
            )
        } else {
            (None, None)
        };
        Ok((gx, ga, gb))
    })
}

impl CustomOp3 for ChannelAffine {
    fn name(&self) -> &'static str {
        "channel-affine"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Ok((dispatch_float!("channel_affine", s1, affine_fwd([(s1, l1), (s2, l2), (s3, l3)]))?, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        dispatch_dtype!("channel_affine", x.dtype(), affine_bwd(x, a, b, gy))
    }
}

/// y = x·scale[c] + shift[c] for x (B, C, H, W), scale and shift (C,).
pub fn channel_affine(x: &Tensor, scale: &Tensor, shift: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op3(&scale.contiguous()?, &shift.contiguous()?, ChannelAffine)
}
