//! Launch sequences of the PC-DARTS merge (`partial.cu`).

use candle_core::Result;

use super::launch::PcArgs;
use super::{launch_n, Args, Backend, Grads2, Kernel};
use crate::cpu::Float;

pub(crate) fn forward<B: Backend, T: Float>(be: &B, y: u64, x: u64, a: &PcArgs) -> Result<B::Buf<T>> {
    let out = be.alloc::<T>(a.out_len())?;
    launch_n(be, Kernel::PcFwd, T::DTYPE, a.out_len(), Args::new().ptr(y).ptr(x).ptr(be.addr(&out)).pod(a))?;
    Ok(out)
}

/// (∂y, ∂x) as `want` asks.
pub(crate) fn backward<B: Backend, T: Float>(
    be: &B,
    x: u64,
    gout: u64,
    a: &PcArgs,
    want: (bool, bool),
) -> Result<Grads2<B, T>> {
    let gy = if want.0 {
        let gy = be.alloc::<T>(a.y_len())?;
        launch_n(be, Kernel::PcBwdY, T::DTYPE, a.y_len(), Args::new().ptr(gout).ptr(be.addr(&gy)).pod(a))?;
        Some(gy)
    } else {
        None
    };
    let gx = if want.1 {
        let gx = be.alloc::<T>(a.x_len())?;
        launch_n(be, Kernel::PcBwdX, T::DTYPE, a.x_len(), Args::new().ptr(gout).ptr(x).ptr(be.addr(&gx)).pod(a))?;
        Some(gx)
    } else {
        None
    };
    Ok((gy, gx))
}

/// The op's CUDA entry points on candle storage and tensors.
#[cfg(feature = "cuda")]
pub(crate) mod glue {
    use candle_core::backend::BackendStorage;
    use candle_core::{CudaStorage, Layout, Result, Tensor};

    use super::super::device::{self, Cuda};
    use super::PcArgs;
    use crate::cpu::Float;
    use crate::dispatch_dtype;
    use crate::partial::PcGeom;

    pub(crate) fn forward(
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        g: &PcGeom,
    ) -> Result<CudaStorage> {
        fn run<T: Float>(
            s1: &CudaStorage,
            l1: &Layout,
            s2: &CudaStorage,
            l2: &Layout,
            g: &PcGeom,
        ) -> Result<CudaStorage> {
            let be = Cuda::of(s1);
            let (y, x) = (device::addr::<T>(s1, l1)?, device::addr::<T>(s2, l2)?);
            Ok(be.storage(super::forward::<_, T>(&be, y, x, &PcArgs::new(g))?))
        }
        dispatch_dtype!("pc_merge", s1.dtype(), run(s1, l1, s2, l2, g))
    }

    pub(crate) fn backward(
        y: &Tensor,
        x: &Tensor,
        gout: &Tensor,
        g: &PcGeom,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        fn run<T: Float>(
            y: &Tensor,
            x: &Tensor,
            gout: &Tensor,
            g: &PcGeom,
        ) -> Result<(Option<Tensor>, Option<Tensor>)> {
            device::with_inputs::<T, _>(&[x, gout], |be, a| {
                let (gy, gx) = super::backward::<_, T>(be, a[0], a[1], &PcArgs::new(g), (y.track_op(), x.track_op()))?;
                Ok((gy.map(|b| be.tensor(b, y.shape())).transpose()?, gx.map(|b| be.tensor(b, x.shape())).transpose()?))
            })
        }
        dispatch_dtype!("pc_merge", x.dtype(), run(y, x, gout, g))
    }
}
