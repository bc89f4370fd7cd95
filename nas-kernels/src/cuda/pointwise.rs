//! Launch sequences of the 1×1 convolution: the sampled (and ReLU'd) operand where one is
//! needed (`pointwise.cu`), then one batched GEMM with the weight shared by the batch;
//! backward, the GEMM's input gradient written back to the sampled pixels (masked by the
//! ReLU) and its weight gradient per item summed over the batch.

use candle_core::Result;

use super::launch::PwArgs;
use super::{elementwise, launch_n, Args, Backend, Gemm, Grads2, Kernel};
use crate::cpu::Float;
use crate::pointwise::PwGeom;

/// (Co, Ci, P) of one batch item's product.
fn dims(g: &PwGeom) -> (usize, usize, usize) {
    (g.co, g.ci, g.out_plane())
}

/// The GEMM operand: x itself when dense without ReLU, else its gathered copy (kept alive by
/// the returned buffer).
fn operand<B: Backend, T: Float>(
    be: &B,
    x: u64,
    g: &PwGeom,
    a: &PwArgs,
    relu: bool,
) -> Result<(u64, Option<B::Buf<T>>)> {
    if g.dense() && !relu {
        return Ok((x, None));
    }
    let xs = be.alloc::<T>(a.sampled_len())?;
    launch_n(be, Kernel::PwGather, T::DTYPE, a.sampled_len(), Args::new().ptr(x).ptr(be.addr(&xs)).pod(a).flag(relu))?;
    Ok((be.addr(&xs), Some(xs)))
}

pub(crate) fn forward<B: Backend, T: Float>(
    be: &B,
    x: u64,
    w: u64,
    g: &PwGeom,
    a: &PwArgs,
    relu: bool,
) -> Result<B::Buf<T>> {
    let (xs, _keep) = operand::<B, T>(be, x, g, a, relu)?;
    let y = be.alloc::<T>(g.b * g.co * g.out_plane())?;
    be.gemm::<T>(&Gemm::shared_left(w, xs, be.addr(&y), dims(g), g.b))?;
    Ok(y)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<B: Backend, T: Float>(
    be: &B,
    x: u64,
    w: u64,
    gy: u64,
    g: &PwGeom,
    a: &PwArgs,
    relu: bool,
    want: (bool, bool),
) -> Result<Grads2<B, T>> {
    let (co, ci, p) = dims(g);
    let gx = if want.0 {
        let gs = be.alloc::<T>(g.b * ci * p)?;
        be.gemm::<T>(&Gemm::shared_left_t(w, gy, be.addr(&gs), dims(g), g.b))?;
        if g.dense() && !relu {
            Some(gs)
        } else {
            let gx = be.alloc::<T>(a.in_len())?;
            let args = Args::new().ptr(be.addr(&gs)).ptr(x).ptr(be.addr(&gx)).pod(a).flag(relu);
            launch_n(be, Kernel::PwScatter, T::DTYPE, a.in_len(), args)?;
            Some(gx)
        }
    } else {
        None
    };
    let gw = if want.1 {
        let (xs, _keep) = operand::<B, T>(be, x, g, a, relu)?;
        let per_item = be.alloc::<T>(g.b * co * ci)?;
        be.gemm::<T>(&Gemm::per_item_outer(gy, xs, be.addr(&per_item), dims(g), g.b))?;
        let gw = be.alloc::<T>(co * ci)?;
        elementwise::sum_rows_into::<B, T>(be, be.addr(&per_item), be.addr(&gw), co * ci, g.b)?;
        Some(gw)
    } else {
        None
    };
    Ok((gx, gw))
}

/// The op's CUDA entry points on candle storage and tensors.
#[cfg(feature = "cuda")]
pub(crate) mod glue {
    use candle_core::backend::BackendStorage;
    use candle_core::{CudaStorage, Layout, Result, Tensor};

    use super::super::device::{self, Cuda};
    use super::PwArgs;
    use crate::cpu::Float;
    use crate::dispatch_dtype;
    use crate::pointwise::PwGeom;

    pub(crate) fn forward(
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        g: &PwGeom,
        relu: bool,
    ) -> Result<CudaStorage> {
        fn run<T: Float>(
            s1: &CudaStorage,
            l1: &Layout,
            s2: &CudaStorage,
            l2: &Layout,
            g: &PwGeom,
            relu: bool,
        ) -> Result<CudaStorage> {
            let be = Cuda::of(s1);
            let (x, w) = (device::addr::<T>(s1, l1)?, device::addr::<T>(s2, l2)?);
            Ok(be.storage(super::forward::<_, T>(&be, x, w, g, &PwArgs::new(g), relu)?))
        }
        dispatch_dtype!("conv1x1", s1.dtype(), run(s1, l1, s2, l2, g, relu))
    }

    pub(crate) fn backward(
        x: &Tensor,
        w: &Tensor,
        gy: &Tensor,
        g: &PwGeom,
        relu: bool,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        fn run<T: Float>(
            x: &Tensor,
            w: &Tensor,
            gy: &Tensor,
            g: &PwGeom,
            relu: bool,
        ) -> Result<(Option<Tensor>, Option<Tensor>)> {
            device::with_inputs::<T, _>(&[x, w, gy], |be, a| {
                let want = (x.track_op(), w.track_op());
                let (gx, gw) = super::backward::<_, T>(be, a[0], a[1], a[2], g, &PwArgs::new(g), relu, want)?;
                Ok((gx.map(|b| be.tensor(b, x.shape())).transpose()?, gw.map(|b| be.tensor(b, w.shape())).transpose()?))
            })
        }
        dispatch_dtype!("conv1x1", x.dtype(), run(x, w, gy, g, relu))
    }
}
