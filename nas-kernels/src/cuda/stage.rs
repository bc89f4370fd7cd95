//! Launch sequences of the fused sep_conv/dil_conv stage: the depthwise kernel and the 1×1
//! GEMM (`sep`), then the batch norm with its factors and the node's sum (`batch_norm`);
//! backward the same in reverse, the weight gradients written straight into one flat buffer
//! laid out like the weights.

use candle_core::Result;

use super::batch_norm::{self, RunningAddrs};
use super::launch::BnArgs;
use super::{sep, Backend, Buf};
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

#[allow(clippy::too_many_arguments)]
pub(crate) fn forward<B: Backend, T: Float>(
    be: &B,
    x: u64,
    params: u64,
    m: Option<u64>,
    acc: Option<u64>,
    running: Option<RunningAddrs>,
    g: &SepGeom,
    s: &Sizes,
    relu: bool,
    eps: f64,
) -> Result<StageOut<B, T>> {
    let [w_dw, w_pw, gamma, beta] = parts::<T>(params, s);
    let p = g.dw.oh * g.dw.ow;
    let dw = be.alloc::<T>(g.dw.b * g.dw.c * p)?;
    let pre = be.alloc::<T>(g.dw.b * g.co * p)?;
    sep::forward_into::<B, T>(be, x, w_dw, w_pw, g, relu, be.addr(&dw), be.addr(&pre))?;
    let y = be.alloc::<T>(g.dw.b * g.co * p)?;
    let (gamma, beta) = if s.affine { (Some(gamma), Some(beta)) } else { (None, None) };
    let a = bn_args(g);
    let stats =
        batch_norm::forward_into::<B, T>(be, be.addr(&pre), gamma, beta, m, acc, running, &a, eps, be.addr(&y))?;
    Ok(StageOut { y, dw, pre, stats })
}

/// (∂x, ∂weights flat).
type StageGrads<B, T> = (Option<Buf<B, T>>, Buf<B, T>);

/// (∂x when `want_x`, ∂weights flat) from ∂y and what the forward kept.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<B: Backend, T: Float>(
    be: &B,
    x: u64,
    params: u64,
    m: Option<u64>,
    kept: (u64, u64, u64),
    gy: u64,
    g: &SepGeom,
    s: &Sizes,
    relu: bool,
    eps: f64,
    want_x: bool,
) -> Result<StageGrads<B, T>> {
    let (dw, pre, stats) = kept;
    let [w_dw, w_pw, gamma, _] = parts::<T>(params, s);
    let gparams = be.alloc::<T>(s.params_len())?;
    let [g_dw, g_pw, g_gamma, _] = parts::<T>(be.addr(&gparams), s);
    let a = bn_args(g);
    let gpre = be.alloc::<T>(a.len())?;
    let gamma = s.affine.then_some(gamma);
    let ggb = s.affine.then_some(g_gamma);
    batch_norm::backward_into::<B, T>(be, pre, gy, gamma, m, stats, &a, eps, true, be.addr(&gpre), ggb)?;
    let gx = if want_x { Some(be.alloc::<T>(g.dw.b * g.dw.c * g.dw.h * g.dw.w)?) } else { None };
    let gx_addr = gx.as_ref().map(|b| be.addr(b));
    sep::backward_into::<B, T>(be, x, w_dw, w_pw, dw, be.addr(&gpre), g, relu, gx_addr, g_dw, g_pw)?;
    Ok((gx, gparams))
}

/// The op's CUDA entry points on candle storage and tensors.
#[cfg(feature = "cuda")]
pub(crate) mod glue {
    use candle_core::backend::BackendStorage;
    use candle_core::{bail, CudaStorage, Layout, Result, Shape, Tensor};

    use super::super::batch_norm::glue::{device_stats, saved, stats_addr, with_running};
    use super::super::device::{self, Cuda};
    use crate::cpu::Float;
    use crate::dispatch_dtype;
    use crate::stage::DwPwBnStage;

    /// The address of the op's drop-path factors (None: all ones).
    fn factors_addr<T: Float>(op: &DwPwBnStage) -> Result<Option<u64>> {
        let Some(m) = &op.m else { return Ok(None) };
        let (g, l) = m.storage_and_layout();
        match &*g {
            candle_core::Storage::Cuda(s) => Ok(Some(device::addr::<T>(s, l)?)),
            _ => bail!("dw_pw_bn: drop-path factors are not on the GPU"),
        }
    }

    pub(crate) fn forward(
        op: &DwPwBnStage,
        x: (&CudaStorage, &Layout),
        params: (&CudaStorage, &Layout),
        acc: Option<(&CudaStorage, &Layout)>,
    ) -> Result<(CudaStorage, Shape)> {
        fn run<T: Float>(
            op: &DwPwBnStage,
            x: (&CudaStorage, &Layout),
            params: (&CudaStorage, &Layout),
            acc: Option<(&CudaStorage, &Layout)>,
        ) -> Result<(CudaStorage, Shape)> {
            let g = op.geom(x.1.dims())?;
            if params.1.shape().elem_count() != op.sizes.params_len() {
                bail!("dw_pw_bn: {} parameters for {:?}", params.1.shape().elem_count(), x.1.dims());
            }
            let be = Cuda::of(x.0);
            let (xa, pa) = (device::addr::<T>(x.0, x.1)?, device::addr::<T>(params.0, params.1)?);
            let acc = acc.map(|(s, l)| device::addr::<T>(s, l)).transpose()?;
            let m = factors_addr::<T>(op)?;
            let out = with_running(op.running.as_ref(), |r| {
                super::forward::<_, T>(&be, xa, pa, m, acc, r, &g, &op.sizes, op.relu, op.eps)
            })?;
            let shape = g.out_shape();
            let dw_shape = (g.dw.b, g.dw.c, g.dw.oh, g.dw.ow);
            op.keep(vec![be.tensor(out.dw, dw_shape)?, be.tensor(out.pre, shape.clone())?]);
            op.stats.put(saved(&be, out.stats, g.co)?);
            Ok((be.storage(out.y), shape))
        }
        dispatch_dtype!("dw_pw_bn", x.0.dtype(), run(op, x, params, acc))
    }

    pub(crate) fn backward(
        op: &DwPwBnStage,
        x: &Tensor,
        params: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        fn run<T: Float>(
            op: &DwPwBnStage,
            x: &Tensor,
            params: &Tensor,
            gy: &Tensor,
        ) -> Result<(Option<Tensor>, Option<Tensor>)> {
            let g = op.geom(x.dims())?;
            let kept = op.kept()?;
            let [dw, pre] = kept.as_slice() else { bail!("dw_pw_bn: the forward kept {} tensors", kept.len()) };
            let stats = device_stats(&op.stats.get("dw_pw_bn")?)?;
            device::with_inputs::<T, _>(&[x, params, gy, dw, pre], |be, a| {
                let m = factors_addr::<T>(op)?;
                let kept = (a[3], a[4], stats_addr(&stats)?);
                let (gx, gp) = super::backward::<_, T>(
                    be,
                    a[0],
                    a[1],
                    m,
                    kept,
                    a[2],
                    &g,
                    &op.sizes,
                    op.relu,
                    op.eps,
                    x.track_op(),
                )?;
                Ok((
                    gx.map(|b| be.tensor(b, x.shape())).transpose()?,
                    params.track_op().then(|| be.tensor(gp, params.shape())).transpose()?,
                ))
            })
        }
        dispatch_dtype!("dw_pw_bn", x.dtype(), run(op, x, params, gy))
    }
}
