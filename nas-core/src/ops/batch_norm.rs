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

use super::kernel::{cpu_tensor, output_vec, slice, with_slices, Float};
use super::simd::{affine_acc_into, affine_into, bn_grad_into, sum_dot, sum_sumsq};
use crate::{dispatch_dtype, dispatch_float};

/// Batch statistics of one training-mode forward: per-channel mean and biased variance over
/// `count` values each.
#[derive(Debug, Clone, PartialEq)]
pub struct BnBatchStats {
    pub mean: Vec<f64>,
    pub var: Vec<f64>,
    pub count: usize,
}

impl BnBatchStats {
    /// The statistics as (C,) tensors of x's dtype and device.
    pub fn into_tensors(self, x: &Tensor) -> Result<super::BnStats> {
        let c = self.mean.len();
        let to = |v: Vec<f64>| Tensor::from_vec(v, c, x.device())?.to_dtype(x.dtype());
        Ok(super::BnStats { mean: to(self.mean)?, var: to(self.var)?, count: self.count })
    }
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

/// Where a forward pass leaves its batch statistics, for its backward pass and for the
/// caller's running averages.
#[derive(Default, Clone)]
pub(crate) struct StatsSlot(Arc<Mutex<Option<BnBatchStats>>>);

impl StatsSlot {
    pub(crate) fn put(&self, s: BnBatchStats) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
    }

    pub(crate) fn get(&self, op: &str) -> Result<BnBatchStats> {
        match self.0.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            Some(s) => Ok(s.clone()),
            None => bail!("{op}: no batch statistics (backward before forward)"),
        }
    }
}

struct BatchNormTrain {
    eps: f64,
    stats: StatsSlot,
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
    // SAFETY: the planes of y tile it exactly; affine_into writes every element of each.
    let mut y = unsafe { output_vec::<T>(x.len()) };
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
        // SAFETY: the planes of gx tile it exactly; bn_grad_into writes every element.
        let mut gx = unsafe { output_vec::<T>(y.len()) };
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
        self.stats.put(stats);
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, gy: &Tensor) -> Result<Option<Tensor>> {
        let var = self.stats.get("batch_norm")?.var;
        Ok(Some(dispatch_dtype!("batch_norm", y.dtype(), bwd_impl(y, gy, &var, self.eps))?))
    }
}

/// Training-mode normalisation of x (B, C, H, W) without affine parameters; returns x̂ and
/// the batch statistics.
pub fn batch_norm_train(x: &Tensor, eps: f64) -> Result<(Tensor, BnBatchStats)> {
    let stats = StatsSlot::default();
    let y = x.contiguous()?.apply_op1(BatchNormTrain { eps, stats: stats.clone() })?;
    Ok((y, stats.get("batch_norm")?))
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
    // SAFETY: the planes of y tile it exactly; affine_into writes every element of each.
    let mut y = unsafe { output_vec::<T>(x.len()) };
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

/// Training-mode batch norm with its affine part and a per-sample factor in one op:
/// y[b, c] = m[b]·(γ[c]·x̂[b, c] + β[c]). The factor is drop path's mask (1 without it); it gets
/// no gradient. γ and β come as one (2, C) tensor. One statistics pass and one writing pass
/// forward, one reduction pass and one writing pass backward, where BN, affine and drop path
/// as three ops take three of each and two intermediate tensors.
struct BatchNormAffineTrain {
    eps: f64,
    stats: StatsSlot,
}

fn check_affine_inputs(x: &[usize], gb: &[usize], m: usize) -> Result<(usize, usize, usize)> {
    let (b, c, hw) = dims(x)?;
    if gb != [2, c] {
        bail!("batch_norm_affine: γ/β must be (2, {c}), got {gb:?}");
    }
    if m != b {
        bail!("batch_norm_affine: {m} sample factors for a batch of {b}");
    }
    Ok((b, c, hw))
}

/// y = acc + m[b]·(γ·x̂ + β) over slices: x and acc (B·C·HW), γ and β (C), m (B); the batch
/// statistics of x come with it. Shared by the BN op and the fused conv+BN stage.
#[allow(clippy::too_many_arguments)]
pub(crate) fn bn_affine_forward<T: Float>(
    x: &[T],
    (b, c, hw): (usize, usize, usize),
    gamma: &[T],
    beta: &[T],
    m: &[T],
    acc: Option<&[T]>,
    eps: f64,
) -> Result<(Vec<T>, BnBatchStats)> {
    let n = b * hw;
    if n == 0 {
        bail!("batch_norm_affine: empty batch");
    }
    let sums = per_channel(b * c, c, |p| sum_sumsq(&x[p * hw..(p + 1) * hw]));
    let mean: Vec<f64> = sums.iter().map(|&(s, _)| s / n as f64).collect();
    let var: Vec<f64> = sums.iter().zip(&mean).map(|(&(_, q), &mu)| (q / n as f64 - mu * mu).max(0.0)).collect();
    // Per channel: x·γ·inv + (β − μ·γ·inv), then times the sample's factor.
    let coef: Vec<(f64, f64)> = (0..c)
        .map(|ch| {
            let g = gamma[ch].to_f64();
            let inv = 1.0 / (var[ch] + eps).sqrt();
            (g * inv, beta[ch].to_f64() - mean[ch] * g * inv)
        })
        .collect();
    // SAFETY: the planes of y tile it exactly; affine_into/affine_acc_into write every element.
    let mut y = unsafe { output_vec::<T>(x.len()) };
    y.par_chunks_mut(hw).zip(x.par_chunks(hw)).enumerate().with_min_len(4).for_each(|(p, (yp, xp))| {
        let (a, sh) = coef[p % c];
        let f = m[p / c].to_f64();
        let (a, sh) = (T::from_f64(f * a), T::from_f64(f * sh));
        match acc {
            Some(acc) => affine_acc_into(yp, xp, a, sh, &acc[p * hw..(p + 1) * hw]),
            None => affine_into(yp, xp, a, sh),
        }
    });
    Ok((y, BnBatchStats { mean, var, count: n }))
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
    let n = (b * hw) as f64;
    // Per channel Σ g' and Σ g'·x with g' = m[b]·g, the gradient before the factor.
    let sums = per_channel(b * c, c, |p| {
        let (sg, sgx) = sum_dot(&g[p * hw..(p + 1) * hw], &x[p * hw..(p + 1) * hw]);
        let f = m[p / c].to_f64();
        (f * sg, f * sgx)
    });
    let inv: Vec<f64> = st.var.iter().map(|&v| 1.0 / (v + eps).sqrt()).collect();
    // Σ g'·x̂ per channel: the γ gradient; Σ g' is the β gradient.
    let gxhat: Vec<f64> = (0..c).map(|ch| inv[ch] * (sums[ch].1 - st.mean[ch] * sums[ch].0)).collect();
    let gx = want_x.then(|| {
        // SAFETY: the planes of gx tile it exactly; bn_grad_into writes every element.
        let mut gx = unsafe { output_vec::<T>(x.len()) };
        gx.par_chunks_mut(hw).enumerate().with_min_len(4).for_each(|(p, gxp)| {
            let ch = p % c;
            let (gm, iv, mu) = (gamma[ch].to_f64(), inv[ch], st.mean[ch]);
            // γ·inv·(m·g − Σg'/N − x̂·Σg'x̂/N) with x̂ = (x − μ)·inv, as A·g + B·x + C.
            let a = gm * iv * m[p / c].to_f64();
            let bx = -gm * iv * iv * gxhat[ch] / n;
            let cst = -gm * iv * sums[ch].0 / n + gm * iv * iv * gxhat[ch] * mu / n;
            let (gp, xp) = (&g[p * hw..(p + 1) * hw], &x[p * hw..(p + 1) * hw]);
            bn_grad_into(gxp, gp, xp, T::from_f64(a), T::from_f64(-cst), T::from_f64(-bx));
        });
        gx
    });
    (gx, gxhat, sums.into_iter().map(|s| s.0).collect())
}

fn affine_train_fwd<T: Float>(s: [(&CpuStorage, &Layout); 3], eps: f64) -> Result<(CpuStorage, BnBatchStats)> {
    let x = slice::<T>(s[0].0, s[0].1, "batch_norm_affine")?;
    let gb = slice::<T>(s[1].0, s[1].1, "batch_norm_affine")?;
    let m = slice::<T>(s[2].0, s[2].1, "batch_norm_affine")?;
    let d = check_affine_inputs(s[0].1.dims(), s[1].1.dims(), m.len())?;
    let c = d.1;
    let (y, st) = bn_affine_forward(x, d, &gb[..c], &gb[c..], m, None, eps)?;
    Ok((T::to_cpu_storage_owned(y), st))
}

type Grads3 = (Option<Tensor>, Option<Tensor>, Option<Tensor>);

fn affine_train_bwd<T: Float>(
    x: &Tensor,
    gb: &Tensor,
    m: &Tensor,
    gy: &Tensor,
    st: &BnBatchStats,
    eps: f64,
) -> Result<Grads3> {
    let d = check_affine_inputs(x.dims(), gb.dims(), m.elem_count())?;
    with_slices::<T, _>(&[x, gb, m, gy], |s| {
        let (gx, ggamma, gbeta) = bn_affine_backward(s[0], d, &s[1][..d.1], s[2], s[3], st, eps, x.track_op());
        let gx = gx.map(|v| cpu_tensor(v, x.shape())).transpose()?;
        let ggb = if gb.track_op() {
            let v: Vec<T> = ggamma.iter().chain(&gbeta).map(|&v| T::from_f64(v)).collect();
            Some(cpu_tensor(v, gb.shape())?)
        } else {
            None
        };
        Ok((gx, ggb, None))
    })
}

impl CustomOp3 for BatchNormAffineTrain {
    fn name(&self) -> &'static str {
        "batch-norm-affine-train"
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
        let (out, stats) =
            dispatch_float!("batch_norm_affine", s1, affine_train_fwd([(s1, l1), (s2, l2), (s3, l3)], self.eps))?;
        self.stats.put(stats);
        Ok((out, l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, gb: &Tensor, m: &Tensor, _res: &Tensor, gy: &Tensor) -> Result<Grads3> {
        let st = self.stats.get("batch_norm_affine")?;
        dispatch_dtype!("batch_norm_affine", x.dtype(), affine_train_bwd(x, gb, m, gy, &st, self.eps))
    }
}

/// The per-sample factors m (B,) of x's dtype that the fused training ops take as an input
/// without a gradient: `sample_scale` detached (drop path), or ones.
pub(crate) fn sample_factors(x: &Tensor, sample_scale: Option<&Tensor>) -> Result<Tensor> {
    match sample_scale {
        Some(m) => m.detach().to_dtype(x.dtype())?.contiguous(),
        None => Tensor::ones(x.dim(0)?, x.dtype(), x.device()),
    }
}

/// y = m[b]·(γ·x̂ + β) in training mode, with the batch statistics; `m` (B,) defaults to ones.
pub fn batch_norm_affine_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    sample_scale: Option<&Tensor>,
    eps: f64,
) -> Result<(Tensor, BnBatchStats)> {
    let m = sample_factors(x, sample_scale)?;
    let gb = Tensor::stack(&[gamma, beta], 0)?;
    let stats = StatsSlot::default();
    let y = x.contiguous()?.apply_op3(&gb, &m, BatchNormAffineTrain { eps, stats: stats.clone() })?;
    Ok((y, stats.get("batch_norm_affine")?))
}
