//! Launch sequences of the depthwise convolution (`depthwise.cu`), and their CUDA glue.

use candle_core::Result;

use super::launch::{self, DwArgs};
use super::{launch_n, Args, Backend, Grads2, Kernel};
use crate::cpu::Float;

/// y = dw([ReLU] x) into `y`.
pub(crate) fn forward_into<B: Backend, T: Float>(be: &B, x: u64, w: u64, y: u64, a: &DwArgs, relu: bool) -> Result<()> {
    launch_n(be, Kernel::DwFwd, T::DTYPE, a.out_len(), Args::new().ptr(x).ptr(w).ptr(y).pod(a).flag(relu))
}

/// y = dw([ReLU] x).
pub(crate) fn forward<B: Backend, T: Float>(be: &B, x: u64, w: u64, a: &DwArgs, relu: bool) -> Result<B::Buf<T>> {
    let y = be.alloc::<T>(a.out_len())?;
    forward_into::<B, T>(be, x, w, be.addr(&y), a, relu)?;
    Ok(y)
}

/// ∂x into `gx` and/or ∂w into `gw` from ∂y; with `relu` the convolution read ReLU(x).
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_into<B: Backend, T: Float>(
    be: &B,
    x: u64,
    w: u64,
    gy: u64,
    a: &DwArgs,
    relu: bool,
    gx: Option<u64>,
    gw: Option<u64>,
) -> Result<()> {
    if let Some(gx) = gx {
        launch_n(
            be,
            Kernel::DwBwdX,
            T::DTYPE,
            a.in_len(),
            Args::new().ptr(gy).ptr(w).ptr(x).ptr(gx).pod(a).flag(relu),
        )?;
    }
    if let Some(gw) = gw {
        if a.taps() > launch::MAX_TAPS {
            candle_core::bail!("depthwise_conv2d: CUDA filter gradients take kernels up to 5x5, got {}x{}", a.k, a.k);
        }
        let parts = be.alloc::<f64>(a.c as usize * a.splits as usize * a.taps())?;
        let l = launch::channel_reduce(a.c as usize, a.splits as usize);
        be.launch(
            Kernel::DwBwdWPartial,
            T::DTYPE,
            l,
            Args::new().ptr(x).ptr(gy).ptr(be.addr(&parts)).pod(a).flag(relu),
        )?;
        let n = a.c as usize * a.taps();
        launch_n(be, Kernel::DwBwdWFinish, T::DTYPE, n, Args::new().ptr(be.addr(&parts)).ptr(gw).pod(a))?;
    }
    Ok(())
}

/// (∂x, ∂w) as `want` asks.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<B: Backend, T: Float>(
    be: &B,
    x: u64,
    w: u64,
    gy: u64,
    a: &DwArgs,
    relu: bool,
    want: (bool, bool),
) -> Result<Grads2<B, T>> {
    let gx = if want.0 { Some(be.alloc::<T>(a.in_len())?) } else { None };
    let gw = if want.1 { Some(be.alloc::<T>(a.c as usize * a.taps())?) } else { None };
    backward_into::<B, T>(be, x, w, gy, a, relu, gx.as_ref().map(|b| be.addr(b)), gw.as_ref().map(|b| be.addr(b)))?;
    Ok((gx, gw))
}

/// The op's CUDA entry points on candle storage and tensors.
#[cfg(feature = "cuda")]
pub(crate) mod glue {
    use candle_core::backend::BackendStorage;
    use candle_core::{CudaStorage, Layout, Result, Tensor};

    use super::super::device::{self, Cuda};
    use super::DwArgs;
    use crate::cpu::Float;
    use crate::depthwise::DwGeom;
    use crate::dispatch_dtype;

    pub(crate) fn forward(
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        g: &DwGeom,
        relu: bool,
    ) -> Result<CudaStorage> {
        fn run<T: Float>(
            s1: &CudaStorage,
            l1: &Layout,
            s2: &CudaStorage,
            l2: &Layout,
            g: &DwGeom,
            relu: bool,
        ) -> Result<CudaStorage> {
            let be = Cuda::of(s1);
            let (x, w) = (device::addr::<T>(s1, l1)?, device::addr::<T>(s2, l2)?);
            Ok(be.storage(super::forward::<_, T>(&be, x, w, &DwArgs::new(g), relu)?))
        }
        dispatch_dtype!("depthwise-conv2d", s1.dtype(), run(s1, l1, s2, l2, g, relu))
    }

    pub(crate) fn backward(
        x: &Tensor,
        w: &Tensor,
        gy: &Tensor,
        g: &DwGeom,
        want: (bool, bool),
        relu: bool,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        fn run<T: Float>(
            x: &Tensor,
            w: &Tensor,
            gy: &Tensor,
            g: &DwGeom,
            want: (bool, bool),
            relu: bool,
        ) -> Result<(Option<Tensor>, Option<Tensor>)> {
            device::with_inputs::<T, _>(&[x, w, gy], |be, a| {
                let (gx, gw) = super::backward::<_, T>(be, a[0], a[1], a[2], &DwArgs::new(g), relu, want)?;
                Ok((gx.map(|b| be.tensor(b, x.shape())).transpose()?, gw.map(|b| be.tensor(b, w.shape())).transpose()?))
            })
        }
        dispatch_dtype!("depthwise-conv2d", x.dtype(), run(x, w, gy, g, want, relu))
    }
}
