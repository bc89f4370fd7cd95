//! CPU kernels of the fused elementwise ops: ReLU, w·y, acc + w·y (with the dot product that
//! is the weight's gradient) and the per-sample factor.

use candle_core::{bail, CpuStorage, Layout, Result, Tensor};
use rayon::prelude::*;

use super::{cpu_tensor, slice, with_slices, Float, Fresh, ELEMWISE_CHUNK};
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

/// max(x, 0) of CPU storage.
pub(crate) fn relu_storage(s: &CpuStorage, l: &Layout) -> Result<CpuStorage> {
    dispatch_float!("relu", s, relu_fwd(s, l))
}

/// ∂y·[y > 0] of CPU tensors.
pub(crate) fn relu_backward_tensor(y: &Tensor, gy: &Tensor) -> Result<Tensor> {
    dispatch_dtype!("relu", y.dtype(), relu_bwd(y, gy))
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

/// w·y of CPU storage.
pub(crate) fn scale_storage(s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<CpuStorage> {
    dispatch_float!("scale", s1, scale_fwd(s1, l1, s2, l2))
}

/// The gradients of y and w of CPU tensors.
pub(crate) fn scale_backward_tensors(y: &Tensor, w: &Tensor, gy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
    dispatch_dtype!("scale", y.dtype(), scale_bwd(y, w, gy))
}

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

/// acc + w·y of CPU storage.
pub(crate) fn axpy_storage(s: [(&CpuStorage, &Layout); 3]) -> Result<CpuStorage> {
    let [(s1, l1), (s2, l2), (s3, l3)] = s;
    dispatch_float!("axpy", s1, axpy_fwd(s1, l1, s2, l2, s3, l3))
}

/// The gradients of acc, y and w of CPU tensors.
pub(crate) fn axpy_backward_tensors(
    acc: &Tensor,
    y: &Tensor,
    w: &Tensor,
    gy: &Tensor,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    dispatch_dtype!("axpy", y.dtype(), axpy_bwd(acc, y, w, gy))
}

fn scale_samples_fwd<T: Float>(s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<CpuStorage> {
    let x = slice::<T>(s1, l1, "scale_samples")?;
    let m = slice::<T>(s2, l2, "scale_samples")?;
    let b = l1.dims().first().copied().unwrap_or(0);
    if b != m.len() || b == 0 {
        bail!("scale_samples: {} factors for a batch of {b}", m.len());
    }
    let per = x.len() / b;
    let mut y = Fresh::new(x.len());
    y.slots().par_chunks_mut(per).zip(x.par_chunks(per)).zip(m.par_iter()).for_each(|((y, x), &f)| {
        for (o, &v) in y.iter_mut().zip(x) {
            o.write(v * f);
        }
    });
    // SAFETY: the per-sample chunks tile y and each is written in full.
    Ok(T::to_cpu_storage_owned(unsafe { y.assume_init() }))
}

/// x[b]·m[b] of CPU storage.
pub(crate) fn scale_samples_storage(s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<CpuStorage> {
    dispatch_float!("scale_samples", s1, scale_samples_fwd(s1, l1, s2, l2))
}
