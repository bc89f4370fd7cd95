//! Launch sequences of the 3×3 pools and the valid average pooling (`pool.cu`).

use candle_core::Result;

use super::launch::{PoolArgs, ValidArgs};
use super::{launch_n, Args, Backend, Buf, Kernel};
use crate::cpu::Float;
use crate::pool::PoolKind;

/// The pooled output and the max-pool taps.
type Pooled<B, T> = (Buf<B, T>, Option<Buf<B, u8>>);

/// The pooled output and, for max pooling, the tap of every output's first maximum.
pub(crate) fn forward<B: Backend, T: Float>(be: &B, x: u64, a: &PoolArgs, kind: PoolKind) -> Result<Pooled<B, T>> {
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
    a: &PoolArgs,
    kind: PoolKind,
) -> Result<B::Buf<T>> {
    let max = kind == PoolKind::Max;
    if max && taps.is_none() {
        candle_core::bail!("max-pool3x3: backward without the forward's taps");
    }
    let gx = be.alloc::<T>(a.in_len())?;
    let args = Args::new().ptr(gy).opt(taps).ptr(be.addr(&gx)).pod(a).flag(max);
    launch_n(be, Kernel::PoolBwd, T::DTYPE, a.in_len(), args)?;
    Ok(gx)
}

pub(crate) fn avg_valid_forward<B: Backend, T: Float>(be: &B, x: u64, a: &ValidArgs) -> Result<B::Buf<T>> {
    let y = be.alloc::<T>(a.out_len())?;
    launch_n(be, Kernel::AvgValidFwd, T::DTYPE, a.out_len(), Args::new().ptr(x).ptr(be.addr(&y)).pod(a))?;
    Ok(y)
}

pub(crate) fn avg_valid_backward<B: Backend, T: Float>(be: &B, gy: u64, a: &ValidArgs) -> Result<B::Buf<T>> {
    let gx = be.alloc::<T>(a.in_len())?;
    launch_n(be, Kernel::AvgValidBwd, T::DTYPE, a.in_len(), Args::new().ptr(gy).ptr(be.addr(&gx)).pod(a))?;
    Ok(gx)
}

/// The ops' CUDA entry points on candle storage and tensors.
#[cfg(feature = "cuda")]
pub(crate) mod glue {
    use candle_core::backend::BackendStorage;
    use candle_core::{CudaStorage, Layout, Result, Tensor};

    use super::super::device::{self, Cuda};
    use super::{PoolArgs, ValidArgs};
    use crate::cpu::Float;
    use crate::dispatch_dtype;
    use crate::pool::{PoolGeom, PoolKind, ValidGeom};

    /// The output and, for max pooling, the taps as a u8 tensor of the output's shape.
    pub(crate) fn forward(
        s: &CudaStorage,
        l: &Layout,
        g: &PoolGeom,
        kind: PoolKind,
    ) -> Result<(CudaStorage, Option<Tensor>)> {
        fn run<T: Float>(
            s: &CudaStorage,
            l: &Layout,
            g: &PoolGeom,
            kind: PoolKind,
        ) -> Result<(CudaStorage, Option<Tensor>)> {
            let be = Cuda::of(s);
            let (y, taps) = super::forward::<_, T>(&be, device::addr::<T>(s, l)?, &PoolArgs::new(g), kind)?;
            let taps = taps.map(|t| be.byte_tensor(t, g.out_shape())).transpose()?;
            Ok((be.storage(y), taps))
        }
        dispatch_dtype!("pool3x3", s.dtype(), run(s, l, g, kind))
    }

    pub(crate) fn backward(gy: &Tensor, g: &PoolGeom, kind: PoolKind, taps: Option<&Tensor>) -> Result<Tensor> {
        fn run<T: Float>(gy: &Tensor, g: &PoolGeom, kind: PoolKind, taps: Option<&Tensor>) -> Result<Tensor> {
            let mut inputs = vec![gy];
            inputs.extend(taps);
            device::with_inputs::<T, _>(&inputs, |be, a| {
                let gx = super::backward::<_, T>(be, a[0], a.get(1).copied(), &PoolArgs::new(g), kind)?;
                be.tensor(gx, (g.b, g.c, g.h, g.w))
            })
        }
        dispatch_dtype!("pool3x3", gy.dtype(), run(gy, g, kind, taps))
    }

    pub(crate) fn avg_valid_forward(s: &CudaStorage, l: &Layout, g: &ValidGeom) -> Result<CudaStorage> {
        fn run<T: Float>(s: &CudaStorage, l: &Layout, g: &ValidGeom) -> Result<CudaStorage> {
            let be = Cuda::of(s);
            Ok(be.storage(super::avg_valid_forward::<_, T>(&be, device::addr::<T>(s, l)?, &ValidArgs::new(g))?))
        }
        dispatch_dtype!("avg_pool_valid", s.dtype(), run(s, l, g))
    }

    pub(crate) fn avg_valid_backward(gy: &Tensor, g: &ValidGeom) -> Result<Tensor> {
        fn run<T: Float>(gy: &Tensor, g: &ValidGeom) -> Result<Tensor> {
            device::with_inputs::<T, _>(&[gy], |be, a| {
                let gx = super::avg_valid_backward::<_, T>(be, a[0], &ValidArgs::new(g))?;
                be.tensor(gx, g.dims.to_vec())
            })
        }
        dispatch_dtype!("avg_pool_valid", gy.dtype(), run(gy, g))
    }
}
