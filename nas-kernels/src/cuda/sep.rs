//! Launch sequences of the fused depthwise + 1×1 convolution: the depthwise kernel, then one
//! batched GEMM (the 1×1 weight shared by the batch); backward, the GEMM's input gradient, its
//! weight gradient per item summed over the batch, and the depthwise gradients.

use candle_core::Result;

use super::depthwise::{self, Dw};
use super::{elementwise, Backend, Gemm, Grads};
use crate::cpu::Float;
use crate::sep::SepGeom;

/// The inputs of one fused convolution: x, the depthwise and the 1×1 weights, and whether x
/// is ReLU'd as it is read.
#[derive(Clone, Copy)]
pub(crate) struct Sep<'a> {
    pub x: u64,
    pub w_dw: u64,
    pub w_pw: u64,
    pub g: &'a SepGeom,
    pub relu: bool,
}

impl Sep<'_> {
    /// The depthwise half.
    fn dw(&self) -> Dw<'_> {
        Dw { x: self.x, w: self.w_dw, g: &self.g.dw, relu: self.relu }
    }

    /// (Co, C, P) of the 1×1 product of one batch item.
    fn dims(&self) -> (usize, usize, usize) {
        (self.g.co, self.g.dw.c, self.g.dw.oh * self.g.dw.ow)
    }

    /// Elements of the depthwise output.
    fn t_len(&self) -> usize {
        let (_, c, p) = self.dims();
        self.g.dw.b * c * p
    }
}

/// y = pw(dw([ReLU] x)) into `y`, the depthwise output into `t`.
pub(crate) fn forward_into<B: Backend, T: Float>(be: &B, s: &Sep<'_>, t: u64, y: u64) -> Result<()> {
    depthwise::forward_into::<B, T>(be, &s.dw(), t)?;
    be.gemm::<T>(&Gemm::shared_left(s.w_pw, t, y, s.dims(), s.g.dw.b))
}

/// (y, the depthwise output).
pub(crate) fn forward<B: Backend, T: Float>(be: &B, s: &Sep<'_>) -> Result<(B::Buf<T>, B::Buf<T>)> {
    let (co, _, p) = s.dims();
    let t = be.alloc::<T>(s.t_len())?;
    let y = be.alloc::<T>(s.g.dw.b * co * p)?;
    forward_into::<B, T>(be, s, be.addr(&t), be.addr(&y))?;
    Ok((y, t))
}

/// ∂w_dw into `gdw`, ∂w_pw into `gpw` and, when given, ∂x into `gx`, from ∂y and the forward's
/// depthwise output `t`.
pub(crate) fn backward_into<B: Backend, T: Float>(
    be: &B,
    s: &Sep<'_>,
    [t, gy]: [u64; 2],
    gx: Option<u64>,
    [gdw, gpw]: [u64; 2],
) -> Result<()> {
    let (co, c, _) = s.dims();
    let b = s.g.dw.b;
    let per_item = be.alloc::<T>(b * co * c)?;
    be.gemm::<T>(&Gemm::per_item_outer(gy, t, be.addr(&per_item), s.dims(), b))?;
    elementwise::sum_rows_into::<B, T>(be, be.addr(&per_item), gpw, co * c, b)?;
    let gt = be.alloc::<T>(s.t_len())?;
    be.gemm::<T>(&Gemm::shared_left_t(s.w_pw, gy, be.addr(&gt), s.dims(), b))?;
    depthwise::backward_into::<B, T>(be, &s.dw(), be.addr(&gt), gx, Some(gdw))
}

/// (∂x, ∂w_dw, ∂w_pw) as `want` asks, from ∂y and the forward's depthwise output `t`
/// (recomputed, one kernel, when None).
pub(crate) fn backward<B: Backend, T: Float>(
    be: &B,
    s: &Sep<'_>,
    t: Option<u64>,
    gy: u64,
    want: [bool; 3],
) -> Result<Grads<B, T, 3>> {
    let (co, c, _) = s.dims();
    let recomputed;
    let t = match t {
        Some(t) => t,
        None => {
            recomputed = be.alloc::<T>(s.t_len())?;
            depthwise::forward_into::<B, T>(be, &s.dw(), be.addr(&recomputed))?;
            be.addr(&recomputed)
        }
    };
    let gx = if want[0] { Some(be.alloc::<T>(s.g.dw.b * c * s.g.dw.h * s.g.dw.w)?) } else { None };
    let gdw = be.alloc::<T>(c * s.g.dw.k * s.g.dw.k)?;
    let gpw = be.alloc::<T>(co * c)?;
    let gx_addr = gx.as_ref().map(|b| be.addr(b));
    backward_into::<B, T>(be, s, [t, gy], gx_addr, [be.addr(&gdw), be.addr(&gpw)])?;
    Ok([gx, want[1].then_some(gdw), want[2].then_some(gpw)])
}
