//! Launch sequences of the elementwise ops (`elementwise.cu`), and their CUDA glue.

use candle_core::Result;

use super::{launch, launch_n, Args, Backend, Grads2, Kernel};
use crate::cpu::Float;

/// max(x, 0) of n elements.
pub(crate) fn relu<B: Backend, T: Float>(be: &B, x: u64, n: usize) -> Result<B::Buf<T>> {
    let y = be.alloc::<T>(n)?;
    launch_n(be, Kernel::ReluFwd, T::DTYPE, n, Args::new().ptr(x).ptr(be.addr(&y)).i64(n as i64))?;
    Ok(y)
}

/// g where y > 0.
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

/// The gradients of y (w·g) and of the scalar weight w (Σ g·y) of w·y, as asked.
pub(crate) fn weighted_backward<B: Backend, T: Float>(
    be: &B,
    y: u64,
    w: u64,
    g: u64,
    n: usize,
    want_y: bool,
    want_w: bool,
) -> Result<Grads2<B, T>> {
    let gy = if want_y { Some(axpy::<B, T>(be, None, g, w, n)?) } else { None };
    let gw = if want_w {
        let gw = be.alloc::<T>(1)?;
        dot_into::<B, T>(be, g, y, be.addr(&gw), n)?;
        Some(gw)
    } else {
        None
    };
    Ok((gy, gw))
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

/// The ops' CUDA entry points on candle storage and tensors.
#[cfg(feature = "cuda")]
pub(crate) mod glue {
    use candle_core::backend::BackendStorage;
    use candle_core::{CudaStorage, Layout, Result, Tensor};

    use super::super::device::{self, Cuda};
    use crate::cpu::Float;
    use crate::dispatch_dtype;

    pub(crate) fn relu(s: &CudaStorage, l: &Layout) -> Result<CudaStorage> {
        fn run<T: Float>(s: &CudaStorage, l: &Layout) -> Result<CudaStorage> {
            let be = Cuda::of(s);
            let y = super::relu::<_, T>(&be, device::addr::<T>(s, l)?, l.shape().elem_count())?;
            Ok(be.storage(y))
        }
        dispatch_dtype!("relu", s.dtype(), run(s, l))
    }

    pub(crate) fn relu_backward(y: &Tensor, gy: &Tensor) -> Result<Tensor> {
        fn run<T: Float>(y: &Tensor, gy: &Tensor) -> Result<Tensor> {
            device::with_inputs::<T, _>(&[y, gy], |be, a| {
                let gx = super::relu_backward::<_, T>(be, a[0], a[1], y.elem_count())?;
                be.tensor(gx, y.shape())
            })
        }
        dispatch_dtype!("relu", y.dtype(), run(y, gy))
    }

    /// acc + w·y (w·y without acc).
    pub(crate) fn axpy(
        acc: Option<(&CudaStorage, &Layout)>,
        y: (&CudaStorage, &Layout),
        w: (&CudaStorage, &Layout),
    ) -> Result<CudaStorage> {
        fn run<T: Float>(
            acc: Option<(&CudaStorage, &Layout)>,
            y: (&CudaStorage, &Layout),
            w: (&CudaStorage, &Layout),
        ) -> Result<CudaStorage> {
            let be = Cuda::of(y.0);
            let n = y.1.shape().elem_count();
            if let Some((_, la)) = acc {
                if la.shape().elem_count() != n {
                    candle_core::bail!("axpy: shapes {:?} and {:?} differ", la.dims(), y.1.dims());
                }
            }
            let acc = acc.map(|(s, l)| device::addr::<T>(s, l)).transpose()?;
            let out = super::axpy::<_, T>(&be, acc, device::addr::<T>(y.0, y.1)?, device::addr::<T>(w.0, w.1)?, n)?;
            Ok(be.storage(out))
        }
        dispatch_dtype!("axpy", y.0.dtype(), run(acc, y, w))
    }

    /// The gradients of y and of the scalar weight w of w·y.
    pub(crate) fn weighted_backward(y: &Tensor, w: &Tensor, gy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        fn run<T: Float>(y: &Tensor, w: &Tensor, gy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
            device::with_inputs::<T, _>(&[y, w, gy], |be, a| {
                let (g_y, g_w) =
                    super::weighted_backward::<_, T>(be, a[0], a[1], a[2], y.elem_count(), y.track_op(), w.track_op())?;
                Ok((
                    g_y.map(|b| be.tensor(b, y.shape())).transpose()?,
                    g_w.map(|b| be.tensor(b, w.shape())).transpose()?,
                ))
            })
        }
        dispatch_dtype!("axpy", y.dtype(), run(y, w, gy))
    }

    pub(crate) fn scale_samples(s1: &CudaStorage, l1: &Layout, s2: &CudaStorage, l2: &Layout) -> Result<CudaStorage> {
        fn run<T: Float>(s1: &CudaStorage, l1: &Layout, s2: &CudaStorage, l2: &Layout) -> Result<CudaStorage> {
            let be = Cuda::of(s1);
            let (n, b) = (l1.shape().elem_count(), l2.shape().elem_count());
            if b == 0 || l1.dims().first() != Some(&b) {
                candle_core::bail!("scale_samples: {b} factors for {:?}", l1.dims());
            }
            let y = super::scale_samples::<_, T>(&be, device::addr::<T>(s1, l1)?, device::addr::<T>(s2, l2)?, n, b)?;
            Ok(be.storage(y))
        }
        dispatch_dtype!("scale_samples", s1.dtype(), run(s1, l1, s2, l2))
    }
}
