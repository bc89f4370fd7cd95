//! Launch sequences of the PC-DARTS merge (`partial.cu`).

use candle_core::Result;

use super::launch::PcArgs;
use super::{launch_n, Args, Backend, Grads, Kernel};
use crate::cpu::Float;
use crate::partial::PcGeom;

/// shuffle(cat[y, bypass(x[:, C/K:])], K).
pub(crate) fn forward<B: Backend, T: Float>(be: &B, y: u64, x: u64, g: &PcGeom) -> Result<B::Buf<T>> {
    let a = &PcArgs::new(g);
    let out = be.alloc::<T>(a.out_len())?;
    launch_n(be, Kernel::PcFwd, T::DTYPE, a.out_len(), Args::new().ptr(y).ptr(x).ptr(be.addr(&out)).pod(a))?;
    Ok(out)
}

/// (∂y, ∂x) as `want` asks.
pub(crate) fn backward<B: Backend, T: Float>(
    be: &B,
    x: u64,
    gout: u64,
    g: &PcGeom,
    want: [bool; 2],
) -> Result<Grads<B, T, 2>> {
    let a = &PcArgs::new(g);
    let gy = if want[0] {
        let gy = be.alloc::<T>(a.y_len())?;
        launch_n(be, Kernel::PcBwdY, T::DTYPE, a.y_len(), Args::new().ptr(gout).ptr(be.addr(&gy)).pod(a))?;
        Some(gy)
    } else {
        None
    };
    let gx = if want[1] {
        let gx = be.alloc::<T>(a.x_len())?;
        launch_n(be, Kernel::PcBwdX, T::DTYPE, a.x_len(), Args::new().ptr(gout).ptr(x).ptr(be.addr(&gx)).pod(a))?;
        Some(gx)
    } else {
        None
    };
    Ok([gy, gx])
}
