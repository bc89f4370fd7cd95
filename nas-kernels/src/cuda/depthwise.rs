//! Launch sequences of the depthwise convolution (`depthwise.cu`).

use candle_core::Result;

use super::launch::{self, DwArgs};
use super::{launch_n, Args, Backend, Grads, Kernel};
use crate::cpu::Float;
use crate::depthwise::DwGeom;

/// The inputs of one depthwise convolution: x, the filters, and whether x is ReLU'd as it is
/// read.
#[derive(Clone, Copy)]
pub(crate) struct Dw<'a> {
    pub x: u64,
    pub w: u64,
    pub g: &'a DwGeom,
    pub relu: bool,
}

/// y = dw([ReLU] x) into `y`.
pub(crate) fn forward_into<B: Backend, T: Float>(be: &B, d: &Dw<'_>, y: u64) -> Result<()> {
    let a = DwArgs::new(d.g);
    launch_n(be, Kernel::DwFwd, T::DTYPE, a.out_len(), Args::new().ptr(d.x).ptr(d.w).ptr(y).pod(&a).flag(d.relu))
}

/// y = dw([ReLU] x).
pub(crate) fn forward<B: Backend, T: Float>(be: &B, d: &Dw<'_>) -> Result<B::Buf<T>> {
    let y = be.alloc::<T>(DwArgs::new(d.g).out_len())?;
    forward_into::<B, T>(be, d, be.addr(&y))?;
    Ok(y)
}

/// ∂x into `gx` and/or ∂w into `gw` from ∂y; with `relu` the convolution read ReLU(x).
pub(crate) fn backward_into<B: Backend, T: Float>(
    be: &B,
    d: &Dw<'_>,
    gy: u64,
    gx: Option<u64>,
    gw: Option<u64>,
) -> Result<()> {
    let (a, x, w) = (DwArgs::new(d.g), d.x, d.w);
    if let Some(gx) = gx {
        let args = Args::new().ptr(gy).ptr(w).ptr(x).ptr(gx).pod(&a).flag(d.relu);
        launch_n(be, Kernel::DwBwdX, T::DTYPE, a.in_len(), args)?;
    }
    if let Some(gw) = gw {
        if a.taps() > launch::MAX_TAPS {
            candle_core::bail!("depthwise_conv2d: CUDA filter gradients take kernels up to 5x5, got {}x{}", a.k, a.k);
        }
        let parts = be.alloc::<f64>(a.c as usize * a.splits as usize * a.taps())?;
        let l = launch::channel_reduce(a.c as usize, a.splits as usize);
        let args = Args::new().ptr(x).ptr(gy).ptr(be.addr(&parts)).pod(&a).flag(d.relu);
        be.launch(Kernel::DwBwdWPartial, T::DTYPE, l, args)?;
        let n = a.c as usize * a.taps();
        launch_n(be, Kernel::DwBwdWFinish, T::DTYPE, n, Args::new().ptr(be.addr(&parts)).ptr(gw).pod(&a))?;
    }
    Ok(())
}

/// (∂x, ∂w) from ∂y, as `want` asks.
pub(crate) fn backward<B: Backend, T: Float>(be: &B, d: &Dw<'_>, gy: u64, want: [bool; 2]) -> Result<Grads<B, T, 2>> {
    let a = DwArgs::new(d.g);
    let gx = if want[0] { Some(be.alloc::<T>(a.in_len())?) } else { None };
    let gw = if want[1] { Some(be.alloc::<T>(a.c as usize * a.taps())?) } else { None };
    backward_into::<B, T>(be, d, gy, gx.as_ref().map(|b| be.addr(b)), gw.as_ref().map(|b| be.addr(b)))?;
    Ok([gx, gw])
}
