//! CPU kernels of the fused elementwise ops: ReLU, w·y, acc + w·y (with the dot product that
//! is the weight's gradient) and the per-sample factor.

use candle_core::{bail, Result};
use rayon::prelude::*;

use super::{simd, Float, Fresh, ELEMWISE_CHUNK};

/// ReLU as PyTorch's: 0 where x < 0, x otherwise (NaN stays NaN, −0 stays −0).
pub(crate) fn relu<T: Float>(x: &[T]) -> Vec<T> {
    let mut y = Vec::with_capacity(x.len());
    y.par_extend(x.par_iter().with_min_len(ELEMWISE_CHUNK).map(|&v| if v < T::zero() { T::zero() } else { v }));
    y
}

/// ∂y where y > 0 or y is NaN, else 0 (PyTorch's threshold_backward on the output: zero where
/// y ≤ 0).
pub(crate) fn relu_backward<T: Float>(y: &[T], gy: &[T]) -> Vec<T> {
    let mut gx = Vec::with_capacity(y.len());
    gx.par_extend(y.par_iter().zip(gy.par_iter()).with_min_len(ELEMWISE_CHUNK).map(|(&y, &g)| {
        if y <= T::zero() {
            T::zero()
        } else {
            g
        }
    }));
    gx
}

/// The value of a one-element weight.
pub(crate) fn scalar<T: Float>(w: &[T], op: &str) -> Result<T> {
    match w {
        [v] => Ok(*v),
        _ => bail!("{op}: the weight must have exactly one element, got {}", w.len()),
    }
}

/// Σ a·b over two equal-length slices, in parallel with a fixed chunking (deterministic): each
/// chunk summed as `simd::dot` sums (eight lanes), the chunks' sums in order.
fn dot<T: Float>(a: &[T], b: &[T]) -> T {
    let partial: Vec<T> =
        a.par_chunks(ELEMWISE_CHUNK).zip(b.par_chunks(ELEMWISE_CHUNK)).map(|(x, y)| simd::dot(x, y)).collect();
    sum_in_order(partial)
}

/// The chunks' sums of `dot` added in chunk order.
fn sum_in_order<T: Float>(partial: Vec<T>) -> T {
    partial.into_iter().fold(T::zero(), |a, b| a + b)
}

/// w·g.
pub(crate) fn scaled<T: Float>(g: &[T], w: T) -> Vec<T> {
    let mut out = Vec::with_capacity(g.len());
    out.par_extend(g.par_iter().with_min_len(ELEMWISE_CHUNK).map(|&v| v * w));
    out
}

/// The gradients of y (w·g) and of the one-element weight w (Σ g·y) of w·y, as `want` asks;
/// both in one pass over g (each chunk scaled and then summed against y while in cache), the
/// sum the same as `dot`'s.
pub(crate) fn weighted_backward<T: Float>(y: &[T], w: &[T], g: &[T], want: [bool; 2]) -> Result<[Option<Vec<T>>; 2]> {
    let w = scalar(w, "axpy")?;
    if want != [true, true] {
        return Ok([want[0].then(|| scaled(g, w)), want[1].then(|| vec![dot(g, y)])]);
    }
    if g.len() != y.len() {
        bail!("axpy backward: {} gradient values for {} values", g.len(), y.len());
    }
    let mut gy = Fresh::new(g.len());
    let partial: Vec<T> = gy
        .slots()
        .par_chunks_mut(ELEMWISE_CHUNK)
        .zip(g.par_chunks(ELEMWISE_CHUNK))
        .zip(y.par_chunks(ELEMWISE_CHUNK))
        .map(|((o, g), y)| {
            for (o, &v) in o.iter_mut().zip(g) {
                o.write(v * w);
            }
            simd::dot(g, y)
        })
        .collect();
    // SAFETY: the chunks tile gy and each is written in full.
    let gy = unsafe { gy.assume_init() };
    Ok([Some(gy), Some(vec![sum_in_order(partial)])])
}

/// acc + w·y.
pub(crate) fn axpy<T: Float>(acc: &[T], y: &[T], w: &[T]) -> Result<Vec<T>> {
    let w = scalar(w, "axpy")?;
    if acc.len() != y.len() {
        bail!("axpy: {} and {} elements", acc.len(), y.len());
    }
    let mut out = Vec::with_capacity(acc.len());
    out.par_extend(acc.par_iter().zip(y.par_iter()).with_min_len(ELEMWISE_CHUNK).map(|(&a, &v)| a + w * v));
    Ok(out)
}

/// x[b]·m[b] for a batch of m.len() samples.
pub(crate) fn scale_samples<T: Float>(x: &[T], m: &[T]) -> Result<Vec<T>> {
    let b = m.len();
    if b == 0 || !x.len().is_multiple_of(b) {
        bail!("scale_samples: {b} factors for {} values", x.len());
    }
    let per = (x.len() / b).max(1);
    let mut y = Fresh::new(x.len());
    y.slots().par_chunks_mut(per).zip(x.par_chunks(per)).zip(m.par_iter()).for_each(|((y, x), &f)| {
        for (o, &v) in y.iter_mut().zip(x) {
            o.write(v * f);
        }
    });
    // SAFETY: the per-sample chunks tile y and each is written in full.
    Ok(unsafe { y.assume_init() })
}
