//! Fused elementwise ops of the mixed-op hot path, each one node in the autograd graph:
//! ReLU with a single-pass backward, `scale` (w·y) and `axpy` (acc + w·y) with w a
//! one-element tensor, the softmax weight of an op. The weighted sum of a mixed op is one
//! `scale` and a chain of `axpy`, one pass over memory per op output instead of two.

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::kernel::{cpu_tensor, output_vec, slice, with_slices, Float, ELEMWISE_CHUNK};
use crate::{dispatch_dtype, dispatch_float};

fn relu_fwd<T: Float>(s: &CpuStorage, l: &Layout) -> Result<CpuStorage> {
    let x = slice::<T>(s, l, "relu")?;
    let mut y = Vec::with_capacity(x.len());
    y.par_extend(x.par_iter().with_min_len(ELEMWISE_CHUNK).map(|&v| if v > T::zero() { v } else { T::zero() }));
    Ok(T::to_cpu_storage_owned(y))
}

fn relu_bwd<T: Float>(y: &Tensor, gy: &Tensor) -> Result<Tensor> {
    with_slices::<T, _>(&[y, gy], |s| {
        let (y, gy) = (s[0], s[1]);
        let mut gx = Vec::with_capacity(y.len());
        gx.par_extend(y.par_iter().zip(gy.par_iter()).with_min_len(ELEMWISE_CHUNK).map(|(&y, &g)| {
            if y > T::zero() {
                g
            } else {
                T::zero()
            }
        }));
        cpu_tensor(gx, y.len())
    })?
    .reshape(gy.shape())
}

struct Relu;

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        Ok((dispatch_float!("relu", s, relu_fwd(s, l))?, l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, gy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(dispatch_dtype!("relu", y.dtype(), relu_bwd(y, gy))?))
    }
}

/// max(x, 0).
pub fn relu(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Relu)
}

fn scalar<T: Float>(w: &[T], op: &str) -> Result<T> {
    match w {
        [v] => Ok(*v),
        _ => bail!("{op}: the weight must have exactly one element, got {}", w.len()),
    }
}

/// Σ a·b over two equal-length slices, in parallel with a fixed chunking (deterministic).
fn dot<T: Float>(a: &[T], b: &[T]) -> T {
    let partial: Vec<T> = a
        .par_chunks(ELEMWISE_CHUNK)
        .zip(b.par_chunks(ELEMWISE_CHUNK))
        .map(|(x, y)| x.iter().zip(y).fold(T::zero(), |acc, (&p, &q)| acc + p * q))
        .collect();
    partial.into_iter().fold(T::zero(), |a, b| a + b)
}

fn scaled<T: Float>(g: &[T], w: T) -> Vec<T> {
    let mut out = Vec::with_capacity(g.len());
    out.par_extend(g.par_iter().with_min_len(ELEMWISE_CHUNK).map(|&v| v * w));
    out
}

/// w · y.
struct Scale;

fn scale_fwd<T: Float>(s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<CpuStorage> {
    let y = slice::<T>(s1, l1, "scale")?;
    let w = scalar(slice::<T>(s2, l2, "scale")?, "scale")?;
    Ok(T::to_cpu_storage_owned(scaled(y, w)))
}

fn scale_bwd<T: Float>(y: &Tensor, w: &Tensor, gy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
    with_slices::<T, _>(&[y, w, gy], |s| {
        let (yv, wv, g) = (s[0], scalar(s[1], "scale")?, s[2]);
        let gx = if y.track_op() { Some(cpu_tensor(scaled(g, wv), y.shape())?) } else { None };
        let gw = if w.track_op() { Some(cpu_tensor(vec![dot(g, yv)], w.shape())?) } else { None };
        Ok((gx, gw))
    })
}

impl CustomOp2 for Scale {
    fn name(&self) -> &'static str {
        "scale"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        Ok((dispatch_float!("scale", s1, scale_fwd(s1, l1, s2, l2))?, l1.shape().clone()))
    }

    fn bwd(&self, y: &Tensor, w: &Tensor, _res: &Tensor, gy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        dispatch_dtype!("scale", y.dtype(), scale_bwd(y, w, gy))
    }
}

/// acc + w · y.
struct Axpy;

fn axpy_fwd<T: Float>(
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
    s3: &CpuStorage,
    l3: &Layout,
) -> Result<CpuStorage> {
    let acc = slice::<T>(s1, l1, "axpy")?;
    let y = slice::<T>(s2, l2, "axpy")?;
    let w = scalar(slice::<T>(s3, l3, "axpy")?, "axpy")?;
    if acc.len() != y.len() {
        bail!("axpy: shapes {:?} and {:?} differ", l1.dims(), l2.dims());
    }
    let mut out = Vec::with_capacity(acc.len());
    out.par_extend(acc.par_iter().zip(y.par_iter()).with_min_len(ELEMWISE_CHUNK).map(|(&a, &v)| a + w * v));
    Ok(T::to_cpu_storage_owned(out))
}

fn axpy_bwd<T: Float>(
    acc: &Tensor,
    y: &Tensor,
    w: &Tensor,
    gy: &Tensor,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    with_slices::<T, _>(&[y, w, gy], |s| {
        let (yv, wv, g) = (s[0], scalar(s[1], "axpy")?, s[2]);
        let gy_ = if y.track_op() { Some(cpu_tensor(scaled(g, wv), y.shape())?) } else { None };
        let gw = if w.track_op() { Some(cpu_tensor(vec![dot(g, yv)], w.shape())?) } else { None };
        Ok((gy_, gw))
    })
    .map(|(g_y, g_w)| (acc.track_op().then(|| gy.clone()), g_y, g_w))
}

impl CustomOp3 for Axpy {
    fn name(&self) -> &'static str {
        "axpy"
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
        Ok((dispatch_float!("axpy", s1, axpy_fwd(s1, l1, s2, l2, s3, l3))?, l1.shape().clone()))
    }

    fn bwd(
        &self,
        acc: &Tensor,
        y: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        dispatch_dtype!("axpy", y.dtype(), axpy_bwd(acc, y, w, gy))
    }
}

/// w · y with `w` a one-element tensor.
pub fn scale(y: &Tensor, w: &Tensor) -> Result<Tensor> {
    y.contiguous()?.apply_op2(&w.contiguous()?, Scale)
}

/// acc + w · y with `w` a one-element tensor.
pub fn axpy(acc: &Tensor, y: &Tensor, w: &Tensor) -> Result<Tensor> {
    if acc.shape() != y.shape() {
        bail!("axpy: shapes {:?} and {:?} differ", acc.dims(), y.dims());
    }
    acc.contiguous()?.apply_op3(&y.contiguous()?, &w.contiguous()?, Axpy)
}

/// x[b, …] · m[b]: a per-sample factor (drop path), one pass; no gradient for m.
struct ScaleSamples;

fn scale_samples_fwd<T: Float>(s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<CpuStorage> {
    let x = slice::<T>(s1, l1, "scale_samples")?;
    let m = slice::<T>(s2, l2, "scale_samples")?;
    let b = l1.dims().first().copied().unwrap_or(0);
    if b != m.len() || b == 0 {
        bail!("scale_samples: {} factors for a batch of {b}", m.len());
    }
    let per = x.len() / b;
    // SAFETY: the per-sample chunks tile y and each is written in full.
    let mut y = unsafe { output_vec::<T>(x.len()) };
    y.par_chunks_mut(per).zip(x.par_chunks(per)).zip(m.par_iter()).for_each(|((y, x), &f)| {
        for (o, &v) in y.iter_mut().zip(x) {
            *o = v * f;
        }
    });
    Ok(T::to_cpu_storage_owned(y))
}

impl CustomOp2 for ScaleSamples {
    fn name(&self) -> &'static str {
        "scale_samples"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        Ok((dispatch_float!("scale_samples", s1, scale_samples_fwd(s1, l1, s2, l2))?, l1.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, m: &Tensor, _res: &Tensor, gy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(scale_samples(gy, m)?), None))
    }
}

/// x (B, …) with sample b multiplied by m[b]; m (B,) carries no gradient.
pub fn scale_samples(x: &Tensor, m: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op2(&m.detach().to_dtype(x.dtype())?.contiguous()?, ScaleSamples)
}
