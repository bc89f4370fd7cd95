//! CPU kernels of batch normalisation and the channel affine map: per-plane partial sums in
//! f64 combined per channel in batch order, then one writing pass.

use candle_core::{bail, CpuStorage, Layout, Result, Tensor};
use rayon::prelude::*;

use super::simd::{affine_acc_into, affine_into, bn_grad_into, sum_dot, sum_sumsq};
use super::{cpu_tensor, slice, with_slices, Float, Fresh};
use crate::batch_norm::{bn_dims as dims, check_affine_inputs, BnBatchStats};
use crate::dispatch_dtype;

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
    let mut y = Fresh::new(x.len());
    y.slots().par_chunks_mut(hw).zip(x.par_chunks(hw)).enumerate().with_min_len(4).for_each(|(p, (yp, xp))| {
        affine_into(yp, xp, scale[p % c], shift[p % c]);
    });
    // SAFETY: the planes of y tile it exactly; affine_into writes every element of each.
    let y = unsafe { y.assume_init() };
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
        let mut gx = Fresh::new(y.len());
        gx.slots().par_chunks_mut(hw).enumerate().with_min_len(4).for_each(|(p, gxp)| {
            let (inv, m1, m2) = coef[p % c];
            bn_grad_into(gxp, &g[p * hw..(p + 1) * hw], &y[p * hw..(p + 1) * hw], inv, m1, m2);
        });
        // SAFETY: the planes of gx tile it exactly; bn_grad_into writes every element.
        cpu_tensor(unsafe { gx.assume_init() }, y.len())
    })?
    .reshape(gy.shape())
}

/// x̂ and the batch statistics of CPU storage.
pub(crate) fn forward_storage(s: &CpuStorage, l: &Layout, eps: f64) -> Result<(CpuStorage, BnBatchStats)> {
    crate::dispatch_float!("batch_norm", s, fwd_impl(s, l, eps))
}

/// ∂x from x̂ (`y`) and ∂x̂ of CPU tensors.
pub(crate) fn backward_tensors(y: &Tensor, gy: &Tensor, var: &[f64], eps: f64) -> Result<Tensor> {
    dispatch_dtype!("batch_norm", y.dtype(), bwd_impl(y, gy, var, eps))
}

fn affine_fwd<T: Float>(s: [(&CpuStorage, &Layout); 3]) -> Result<CpuStorage> {
    let x = slice::<T>(s[0].0, s[0].1, "channel_affine")?;
    let a = slice::<T>(s[1].0, s[1].1, "channel_affine")?;
    let b = slice::<T>(s[2].0, s[2].1, "channel_affine")?;
    let (_, c, hw) = dims(s[0].1.dims())?;
    if a.len() != c || b.len() != c {
        bail!("channel_affine: scale/shift must have {c} elements");
    }
    let mut y = Fresh::new(x.len());
    y.slots().par_chunks_mut(hw).zip(x.par_chunks(hw)).enumerate().with_min_len(4).for_each(|(p, (yp, xp))| {
        affine_into(yp, xp, a[p % c], b[p % c]);
    });
    // SAFETY: the planes of y tile it exactly; affine_into writes every element of each.
    Ok(T::to_cpu_storage_owned(unsafe { y.assume_init() }))
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

/// y = x·scale[c] + shift[c] of CPU storage.
pub(crate) fn affine_storage(s: [(&CpuStorage, &Layout); 3]) -> Result<CpuStorage> {
    crate::dispatch_float!("channel_affine", s[0].0, affine_fwd(s))
}

/// The gradients of x, scale and shift of CPU tensors.
pub(crate) fn affine_backward_tensors(
    x: &Tensor,
    a: &Tensor,
    b: &Tensor,
    gy: &Tensor,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    dispatch_dtype!("channel_affine", x.dtype(), affine_bwd(x, a, b, gy))
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
    let y = unsafe { y.assume_init() };
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
        let mut gx = Fresh::new(x.len());
        gx.slots().par_chunks_mut(hw).enumerate().with_min_len(4).for_each(|(p, gxp)| {
            let ch = p % c;
            let (gm, iv, mu) = (gamma[ch].to_f64(), inv[ch], st.mean[ch]);
            // γ·inv·(m·g − Σg'/N − x̂·Σg'x̂/N) with x̂ = (x − μ)·inv, as A·g + B·x + C.
            let a = gm * iv * m[p / c].to_f64();
            let bx = -gm * iv * iv * gxhat[ch] / n;
            let cst = -gm * iv * sums[ch].0 / n + gm * iv * iv * gxhat[ch] * mu / n;
            let (gp, xp) = (&g[p * hw..(p + 1) * hw], &x[p * hw..(p + 1) * hw]);
            bn_grad_into(gxp, gp, xp, T::from_f64(a), T::from_f64(-cst), T::from_f64(-bx));
        });
        // SAFETY: the planes of gx tile it exactly; bn_grad_into writes every element.
        unsafe { gx.assume_init() }
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

/// y = m[b]·(γ·x̂ + β) and the batch statistics of CPU storage (x, γβ (2, C), m (B,)).
pub(crate) fn affine_train_storage(s: [(&CpuStorage, &Layout); 3], eps: f64) -> Result<(CpuStorage, BnBatchStats)> {
    crate::dispatch_float!("batch_norm_affine", s[0].0, affine_train_fwd(s, eps))
}

/// The gradients of x and γβ of CPU tensors.
pub(crate) fn affine_train_backward_tensors(
    x: &Tensor,
    gb: &Tensor,
    m: &Tensor,
    gy: &Tensor,
    st: &BnBatchStats,
    eps: f64,
) -> Result<Grads3> {
    dispatch_dtype!("batch_norm_affine", x.dtype(), affine_train_bwd(x, gb, m, gy, st, eps))
}
