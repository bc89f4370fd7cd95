//! Launch sequences of the fused depthwise + 1×1 convolution: the depthwise kernel, then one
//! batched GEMM (the 1×1 weight shared by the batch); backward, the GEMM's input gradient, its
//! weight gradient per item summed over the batch, and the depthwise gradients.

use candle_core::Result;

use super::launch::DwArgs;
use super::{depthwise, elementwise, Backend, Buf, Gemm};
use crate::cpu::Float;
use crate::sep::SepGeom;

/// (Co, C, P) of the 1×1 product of one batch item.
fn dims(g: &SepGeom) -> (usize, usize, usize) {
    (g.co, g.dw.c, g.dw.oh * g.dw.ow)
}

/// y = pw(dw([ReLU] x)) into `y`, the depthwise output into `t`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_into<B: Backend, T: Float>(
    be: &B,
    x: u64,
    w_dw: u64,
    w_pw: u64,
    g: &SepGeom,
    relu: bool,
    t: u64,
    y: u64,
) -> Result<()> {
    depthwise::forward_into::<B, T>(be, x, w_dw, t, &DwArgs::new(&g.dw), relu)?;
    be.gemm::<T>(&Gemm::shared_left(w_pw, t, y, dims(g), g.dw.b))
}

/// (y, the depthwise output).
pub(crate) fn forward<B: Backend, T: Float>(
    be: &B,
    x: u64,
    w_dw: u64,
    w_pw: u64,
    g: &SepGeom,
    relu: bool,
) -> Result<(B::Buf<T>, B::Buf<T>)> {
    let (co, c, p) = dims(g);
    let t = be.alloc::<T>(g.dw.b * c * p)?;
    let y = be.alloc::<T>(g.dw.b * co * p)?;
    forward_into::<B, T>(be, x, w_dw, w_pw, g, relu, be.addr(&t), be.addr(&y))?;
    Ok((y, t))
}

/// ∂w_dw into `gdw`, ∂w_pw into `gpw` and, when given, ∂x into `gx`, from ∂y and the forward's
/// depthwise output `t`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_into<B: Backend, T: Float>(
    be: &B,
    x: u64,
    w_dw: u64,
    w_pw: u64,
    t: u64,
    gy: u64,
    g: &SepGeom,
    relu: bool,
    gx: Option<u64>,
    gdw: u64,
    gpw: u64,
) -> Result<()> {
    let (co, c, p) = dims(g);
    let b = g.dw.b;
    let per_item = be.alloc::<T>(b * co * c)?;
    be.gemm::<T>(&Gemm::per_item_outer(gy, t, be.addr(&per_item), dims(g), b))?;
    elementwise::sum_rows_into::<B, T>(be, be.addr(&per_item), gpw, co * c, b)?;
    let gt = be.alloc::<T>(b * c * p)?;
    be.gemm::<T>(&Gemm::shared_left_t(w_pw, gy, be.addr(&gt), dims(g), b))?;
    depthwise::backward_into::<B, T>(be, x, w_dw, be.addr(&gt), &DwArgs::new(&g.dw), relu, gx, Some(gdw))
}

/// (∂x, ∂w_dw, ∂w_pw).
type SepGrads<B, T> = (Option<Buf<B, T>>, Buf<B, T>, Buf<B, T>);

/// (∂x when `want_x`, ∂w_dw, ∂w_pw).
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<B: Backend, T: Float>(
    be: &B,
    x: u64,
    w_dw: u64,
    w_pw: u64,
    t: u64,
    gy: u64,
    g: &SepGeom,
    relu: bool,
    want_x: bool,
) -> Result<SepGrads<B, T>> {
    let (co, c, _) = dims(g);
    let gx = if want_x { Some(be.alloc::<T>(g.dw.b * c * g.dw.h * g.dw.w)?) } else { None };
    let gdw = be.alloc::<T>(c * g.dw.k * g.dw.k)?;
    let gpw = be.alloc::<T>(co * c)?;
    let gx_addr = gx.as_ref().map(|b| be.addr(b));
    backward_into::<B, T>(be, x, w_dw, w_pw, t, gy, g, relu, gx_addr, be.addr(&gdw), be.addr(&gpw))?;
    Ok((gx, gdw, gpw))
}

/// The op's CUDA entry points on candle storage and tensors. The forward keeps no state: the
/// backward recomputes the depthwise output (one kernel).
#[cfg(feature = "cuda")]
pub(crate) mod glue {
    use candle_core::backend::BackendStorage;
    use candle_core::{CudaStorage, Layout, Result, Tensor};

    use super::super::device::{self, Cuda};
    use super::super::Backend;
    use crate::cpu::Float;
    use crate::dispatch_dtype;
    use crate::sep::SepGeom;

    type Grads3 = (Option<Tensor>, Option<Tensor>, Option<Tensor>);

    pub(crate) fn forward(s: [(&CudaStorage, &Layout); 3], g: &SepGeom, relu: bool) -> Result<CudaStorage> {
        fn run<T: Float>(s: [(&CudaStorage, &Layout); 3], g: &SepGeom, relu: bool) -> Result<CudaStorage> {
            let be = Cuda::of(s[0].0);
            let [x, wd, wp] = [0, 1, 2].map(|i| device::addr::<T>(s[i].0, s[i].1));
            let (y, _) = super::forward::<_, T>(&be, x?, wd?, wp?, g, relu)?;
            Ok(be.storage(y))
        }
        dispatch_dtype!("dw_pw", s[0].0.dtype(), run(s, g, relu))
    }

    pub(crate) fn backward(
        x: &Tensor,
        wd: &Tensor,
        wp: &Tensor,
        gy: &Tensor,
        g: &SepGeom,
        relu: bool,
    ) -> Result<Grads3> {
        fn run<T: Float>(x: &Tensor, wd: &Tensor, wp: &Tensor, gy: &Tensor, g: &SepGeom, relu: bool) -> Result<Grads3> {
            device::with_inputs::<T, _>(&[x, wd, wp, gy], |be, a| {
                let t = be.alloc::<T>(g.dw.b * g.dw.c * g.dw.oh * g.dw.ow)?;
                super::depthwise::forward_into::<_, T>(be, a[0], a[1], be.addr(&t), &super::DwArgs::new(&g.dw), relu)?;
                let (gx, gdw, gpw) =
                    super::backward::<_, T>(be, a[0], a[1], a[2], be.addr(&t), a[3], g, relu, x.track_op())?;
                Ok((
                    gx.map(|b| be.tensor(b, x.shape())).transpose()?,
                    wd.track_op().then(|| be.tensor(gdw, wd.shape())).transpose()?,
                    wp.track_op().then(|| be.tensor(gpw, wp.shape())).transpose()?,
                ))
            })
        }
        dispatch_dtype!("dw_pw", x.dtype(), run(x, wd, wp, gy, g, relu))
    }
}
