//! Launch sequences of the 3×3 pools and the valid average pooling (`pool.cu`).

use candle_core::Result;

use super::launch::{PoolArgs, ValidArgs};
use super::{launch_n, Args, Backend, Buf, Kernel};
use crate::cpu::Float;
use crate::pool::{PoolGeom, PoolKind, ValidGeom};

/// The pooled output and the max-pool taps.
type Pooled<B, T> = (Buf<B, T>, Option<Buf<B, u8>>);

/// The pooled output and, for max pooling, the tap of every output's first maximum.
pub(crate) fn forward<B: Backend, T: Float>(be: &B, x: u64, g: &PoolGeom, kind: PoolKind) -> Result<Pooled<B, T>> {
    let a = &PoolArgs::new(g);
    let n = a.out_len();
    let y = be.alloc::<T>(n)?;
    match kind {
        PoolKind::Max => {
            let taps = be.alloc::<u8>(n)?;
            let args = Args::new().ptr(x).ptr(be.addr(&y)).ptr(be.addr(&taps)).pod(a);
            launch_n(be, Kernel::PoolMaxFwd, T::DTYPE, n, args)?;
            Ok((y, Some(taps)))
        }
        PoolKind::Avg => {
            launch_n(be, Kernel::PoolAvgFwd, T::DTYPE, n, Args::new().ptr(x).ptr(be.addr(&y)).pod(a))?;
            Ok((y, None))
        }
    }
}

/// ∂x from ∂y (and the forward's taps for max pooling).
pub(crate) fn backward<B: Backend, T: Float>(
    be: &B,
    gy: u64,
    taps: Option<u64>,
    g: &PoolGeom,
    kind: PoolKind,
) -> Result<B::Buf<T>> {
    let a = &PoolArgs::new(g);
    let max = kind == PoolKind::Max;
    if max && taps.is_none() {
        candle_core::bail!("max-pool3x3: backward without the forward's taps");
    }
    let gx = be.alloc::<T>(a.in_len())?;
    let args = Args::new().ptr(gy).opt(taps).ptr(be.addr(&gx)).pod(a).flag(max);
    launch_n(be, Kernel::PoolBwd, T::DTYPE, a.in_len(), args)?;
    Ok(gx)
}

/// The valid average pooling.
pub(crate) fn avg_valid_forward<B: Backend, T: Float>(be: &B, x: u64, g: &ValidGeom) -> Result<B::Buf<T>> {
    let a = &ValidArgs::new(g);
    let y = be.alloc::<T>(a.out_len())?;
    launch_n(be, Kernel::AvgValidFwd, T::DTYPE, a.out_len(), Args::new().ptr(x).ptr(be.addr(&y)).pod(a))?;
    Ok(y)
}

/// ∂x of the valid average pooling.
pub(crate) fn avg_valid_backward<B: Backend, T: Float>(be: &B, gy: u64, g: &ValidGeom) -> Result<B::Buf<T>> {
    let a = &ValidArgs::new(g);
    let gx = be.alloc::<T>(a.in_len())?;
    launch_n(be, Kernel::AvgValidBwd, T::DTYPE, a.in_len(), Args::new().ptr(gy).ptr(be.addr(&gx)).pod(a))?;
    Ok(gx)
}
