//! Launch sequences of the 1×1 convolution: the sampled (and ReLU'd) operand where one is
//! needed (`pointwise.cu`), then one batched GEMM with the weight shared by the batch;
//! backward, the GEMM's input gradient written back to the sampled pixels (masked by the
//! ReLU) and its weight gradient per item summed over the batch.

use candle_core::Result;

use super::launch::PwArgs;
use super::{elementwise, launch_n, Args, Backend, Gemm, Grads, Kernel};
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

/// conv(x), or conv(ReLU(x)) with `relu`.
pub(crate) fn forward<B: Backend, T: Float>(be: &B, x: u64, w: u64, g: &PwGeom, relu: bool) -> Result<B::Buf<T>> {
    let (xs, _keep) = operand::<B, T>(be, x, g, &PwArgs::new(g), relu)?;
    let y = be.alloc::<T>(g.b * g.co * g.out_plane())?;
    be.gemm::<T>(&Gemm::shared_left(w, xs, be.addr(&y), dims(g), g.b))?;
    Ok(y)
}

/// (∂x, ∂w) from ∂y, as `want` asks.
pub(crate) fn backward<B: Backend, T: Float>(
    be: &B,
    [x, w, gy]: [u64; 3],
    g: &PwGeom,
    relu: bool,
    want: [bool; 2],
) -> Result<Grads<B, T, 2>> {
    let (co, ci, p) = dims(g);
    let a = &PwArgs::new(g);
    let gx = if want[0] {
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
    let gw = if want[1] {
        let (xs, _keep) = operand::<B, T>(be, x, g, a, relu)?;
        let per_item = be.alloc::<T>(g.b * co * ci)?;
        be.gemm::<T>(&Gemm::per_item_outer(gy, xs, be.addr(&per_item), dims(g), g.b))?;
        let gw = be.alloc::<T>(co * ci)?;
        elementwise::sum_rows_into::<B, T>(be, be.addr(&per_item), be.addr(&gw), co * ci, g.b)?;
        Some(gw)
    } else {
        None
    };
    Ok([gx, gw])
}
