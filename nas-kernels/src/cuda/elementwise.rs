//! Launch sequences of the elementwise ops (`elementwise.cu`).

use candle_core::Result;

use super::{launch, launch_n, Args, Backend, Grads, Kernel};
use crate::cpu::Float;

/// ReLU (0 where x < 0, x otherwise; NaN kept) of n elements.
pub(crate) fn relu<B: Backend, T: Float>(be: &B, x: u64, n: usize) -> Result<B::Buf<T>> {
    let y = be.alloc::<T>(n)?;
    launch_n(be, Kernel::ReluFwd, T::DTYPE, n, Args::new().ptr(x).ptr(be.addr(&y)).i64(n as i64))?;
    Ok(y)
}

/// 0 where y ≤ 0, g otherwise (a NaN y passes g).
pub(crate) fn relu_backward<B: Backend, T: Float>(be: &B, y: u64, g: u64, n: usize) -> Result<B::Buf<T>> {
    let gx = be.alloc::<T>(n)?;
    launch_n(be, Kernel::ReluBwd, T::DTYPE, n, Args::new().ptr(y).ptr(g).ptr(be.addr(&gx)).i64(n as i64))?;
    Ok(gx)
}

/// acc + w[0]·y, or w[0]·y without acc, into `out`.
pub(crate) fn axpy_into<B: Backend, T: Float>(
    be: &B,
    acc: Option<u64>,
    y: u64,
    w: u64,
    out: u64,
    n: usize,
) -> Result<()> {
    launch_n(be, Kernel::Axpy, T::DTYPE, n, Args::new().opt(acc).ptr(y).ptr(w).ptr(out).i64(n as i64))
}

/// acc + w[0]·y, or w[0]·y without acc.
pub(crate) fn axpy<B: Backend, T: Float>(be: &B, acc: Option<u64>, y: u64, w: u64, n: usize) -> Result<B::Buf<T>> {
    let out = be.alloc::<T>(n)?;
    axpy_into::<B, T>(be, acc, y, w, be.addr(&out), n)?;
    Ok(out)
}

/// Σ a·b into the one-element `out` (block partial sums in f64, then their ordered sum).
pub(crate) fn dot_into<B: Backend, T: Float>(be: &B, a: u64, b: u64, out: u64, n: usize) -> Result<()> {
    let l = launch::reduce_1d(n);
    let parts = be.alloc::<f64>(l.grid[0] as usize)?;
    be.launch(Kernel::DotPartial, T::DTYPE, l, Args::new().ptr(a).ptr(b).ptr(be.addr(&parts)).i64(n as i64))?;
    let args = Args::new().ptr(be.addr(&parts)).i64(l.grid[0] as i64).ptr(out);
    be.launch(Kernel::SumPartials, T::DTYPE, launch::elementwise(1), args)
}

/// The gradients of y (w·g) and of the scalar weight w (Σ g·y) of w·y, as `want` asks.
pub(crate) fn weighted_backward<B: Backend, T: Float>(
    be: &B,
    [y, w, g]: [u64; 3],
    n: usize,
    want: [bool; 2],
) -> Result<Grads<B, T, 2>> {
    let gy = if want[0] { Some(axpy::<B, T>(be, None, g, w, n)?) } else { None };
    let gw = if want[1] {
        let gw = be.alloc::<T>(1)?;
        dot_into::<B, T>(be, g, y, be.addr(&gw), n)?;
        Some(gw)
    } else {
        None
    };
    Ok([gy, gw])
}

/// x[i]·m[i / (n / batch)]: each of `batch` samples times its factor.
pub(crate) fn scale_samples<B: Backend, T: Float>(be: &B, x: u64, m: u64, n: usize, batch: usize) -> Result<B::Buf<T>> {
    let y = be.alloc::<T>(n)?;
    let per = (n / batch.max(1)) as i64;
    launch_n(be, Kernel::ScaleSamples, T::DTYPE, n, Args::new().ptr(x).ptr(m).ptr(be.addr(&y)).i64(n as i64).i64(per))?;
    Ok(y)
}

/// out[i] = Σ_j parts[j·n + i] over `rows` rows, into `out`.
pub(crate) fn sum_rows_into<B: Backend, T: Float>(be: &B, parts: u64, out: u64, n: usize, rows: usize) -> Result<()> {
    launch_n(be, Kernel::SumRows, T::DTYPE, n, Args::new().ptr(parts).ptr(out).i64(n as i64).i64(rows as i64))
}
