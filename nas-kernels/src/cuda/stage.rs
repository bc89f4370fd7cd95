//! Launch sequences of the fused sep_conv/dil_conv stage: the depthwise kernel and the 1×1
//! GEMM (`sep`), then the batch norm with its factors and the node's sum (`batch_norm`);
//! backward the same in reverse, the weight gradients written straight into one flat buffer
//! laid out like the weights.

use candle_core::Result;

use super::batch_norm::{self, BnGrad, BnIn, RunningAddrs};
use super::launch::BnArgs;
use super::sep::{self, Sep};
use super::{Backend, Buf};
use crate::cpu::Float;
use crate::sep::SepGeom;
use crate::stage::Sizes;

/// Addresses of w_dw, w_pw, γ, β in the flat weights (or their gradient) at `p`.
fn parts<T>(p: u64, s: &Sizes) -> [u64; 4] {
    let z = std::mem::size_of::<T>() as u64;
    let dw = (s.c * s.k * s.k) as u64;
    let pw = (s.co * s.c) as u64;
    [p, p + dw * z, p + (dw + pw) * z, p + (dw + pw + s.co as u64) * z]
}

fn bn_args(g: &SepGeom) -> BnArgs {
    BnArgs::of(g.dw.b, g.co, g.dw.oh * g.dw.ow)
}

/// What the forward produces and keeps: the output, the depthwise output, the BN input and
/// the batch statistics.
pub(crate) struct StageOut<B: Backend, T: Float> {
    pub y: B::Buf<T>,
    pub dw: B::Buf<T>,
    pub pre: B::Buf<T>,
    pub stats: B::Buf<f64>,
}

/// One stage's shapes and settings.
#[derive(Clone, Copy)]
pub(crate) struct Stage<'a> {
    pub g: &'a SepGeom,
    pub s: &'a Sizes,
    pub relu: bool,
    pub eps: f64,
    /// The drop-path factors m (B,); None is all ones.
    pub m: Option<u64>,
}

/// acc + m·BN(pw(dw([ReLU] x))) with the flat weights `params`, updating `running`.
pub(crate) fn forward<B: Backend, T: Float>(
    be: &B,
    st: &Stage<'_>,
    [x, params]: [u64; 2],
    acc: Option<u64>,
    running: Option<RunningAddrs>,
) -> Result<StageOut<B, T>> {
    let (g, s) = (st.g, st.s);
    let [w_dw, w_pw, gamma, beta] = parts::<T>(params, s);
    let p = g.dw.oh * g.dw.ow;
    let dw = be.alloc::<T>(g.dw.b * g.dw.c * p)?;
    let pre = be.alloc::<T>(g.dw.b * g.co * p)?;
    let sep = Sep { x, w_dw, w_pw, g, relu: st.relu };
    sep::forward_into::<B, T>(be, &sep, be.addr(&dw), be.addr(&pre))?;
    let y = be.alloc::<T>(g.dw.b * g.co * p)?;
    let (gamma, beta) = if s.affine { (Some(gamma), Some(beta)) } else { (None, None) };
    let i = BnIn { x: be.addr(&pre), gamma, beta, m: st.m, acc, running };
    let stats = batch_norm::forward_into::<B, T>(be, &i, &bn_args(g), st.eps, be.addr(&y))?;
    Ok(StageOut { y, dw, pre, stats })
}

/// (∂x, ∂weights flat).
type StageGrads<B, T> = (Option<Buf<B, T>>, Buf<B, T>);

/// (∂x when `want_x`, ∂weights flat) from ∂y and what the forward kept (the depthwise output,
/// the BN input and the batch statistics).
pub(crate) fn backward<B: Backend, T: Float>(
    be: &B,
    st: &Stage<'_>,
    [x, params, gy]: [u64; 3],
    [dw, pre, stats]: [u64; 3],
    want_x: bool,
) -> Result<StageGrads<B, T>> {
    let (g, s) = (st.g, st.s);
    let [w_dw, w_pw, gamma, _] = parts::<T>(params, s);
    let gparams = be.alloc::<T>(s.params_len())?;
    let [g_dw, g_pw, g_gamma, _] = parts::<T>(be.addr(&gparams), s);
    let a = bn_args(g);
    let gpre = be.alloc::<T>(a.len())?;
    let i = BnGrad { u: pre, gr: gy, gamma: s.affine.then_some(gamma), m: st.m, stats, affine: true };
    batch_norm::backward_into::<B, T>(be, &i, &a, st.eps, be.addr(&gpre), s.affine.then_some(g_gamma))?;
    let gx = if want_x { Some(be.alloc::<T>(g.dw.b * g.dw.c * g.dw.h * g.dw.w)?) } else { None };
    let gx_addr = gx.as_ref().map(|b| be.addr(b));
    let sep = Sep { x, w_dw, w_pw, g, relu: st.relu };
    sep::backward_into::<B, T>(be, &sep, [dw, be.addr(&gpre)], gx_addr, [g_dw, g_pw])?;
    Ok((gx, gparams))
}
