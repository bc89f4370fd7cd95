//! CPU kernels of the fused sep_conv/dil_conv stage: `sep` for the depthwise + pointwise part,
//! `batch_norm` for the normalisation with its factors and the node's sum.

use candle_core::{bail, CpuStorage, Layout, Result, Shape, Tensor};

use super::batch_norm::{bn_affine_backward, bn_affine_forward};
use super::sep::{self, SepGeom};
use super::{cpu_tensor, slice, with_slices, Float};
use crate::batch_norm::SavedStats;
use crate::stage::DwPwBnStage;
use crate::{dispatch_dtype, dispatch_float};

/// γ and β of the stage (ones and zeros without affine) and the per-sample factors m (ones
/// without drop path), as host vectors.
fn affine_and_factors<T: Float>(op: &DwPwBnStage, gb: &[T], b: usize) -> Result<(Vec<T>, Vec<T>, Vec<T>)> {
    let co = op.sizes.co;
    let (gamma, beta) = if op.sizes.affine {
        (gb[..co].to_vec(), gb[co..].to_vec())
    } else {
        (vec![T::one(); co], vec![T::zero(); co])
    };
    let m = match &op.m {
        Some(m) => with_slices::<T, _>(&[m], |s| Ok(s[0].to_vec()))?,
        None => vec![T::one(); b],
    };
    Ok((gamma, beta, m))
}

fn fwd<T: Float>(
    op: &DwPwBnStage,
    x: (&CpuStorage, &Layout),
    params: (&CpuStorage, &Layout),
    acc: Option<(&CpuStorage, &Layout)>,
) -> Result<(CpuStorage, Shape)> {
    let shapes = op.geom(x.1.dims())?;
    let g = SepGeom::new(&shapes)?;
    let xs = slice::<T>(x.0, x.1, "dw_pw_bn")?;
    let ps = slice::<T>(params.0, params.1, "dw_pw_bn")?;
    if ps.len() != op.sizes.params_len() {
        bail!("dw_pw_bn: {} parameters for {:?}", ps.len(), x.1.dims());
    }
    let [dw, pw, gb] = op.sizes.split(ps);
    let (gamma, beta, m) = affine_and_factors(op, gb, g.b)?;
    let t = sep::forward(xs, dw, pw, &g, op.relu);
    let out_shape = shapes.out_shape();
    let acc = match acc {
        Some((s, l)) => Some(slice::<T>(s, l, "dw_pw_bn")?),
        None => None,
    };
    let (y, st) = bn_affine_forward(&t, (g.b, g.co, g.plane()), &gamma, &beta, &m, acc, op.eps)?;
    op.stats.put(SavedStats::Host(st));
    op.keep(vec![cpu_tensor(t, out_shape.clone())?]);
    Ok((T::to_cpu_storage_owned(y), out_shape))
}

/// y = acc + m·BN(pw(dw([ReLU] x))) on CPU storage.
pub(crate) fn forward(
    op: &DwPwBnStage,
    x: (&CpuStorage, &Layout),
    params: (&CpuStorage, &Layout),
    acc: Option<(&CpuStorage, &Layout)>,
) -> Result<(CpuStorage, Shape)> {
    dispatch_float!("dw_pw_bn", x.0, fwd(op, x, params, acc))
}

fn bwd<T: Float>(
    op: &DwPwBnStage,
    x: &Tensor,
    params: &Tensor,
    gy: &Tensor,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let g = SepGeom::new(&op.geom(x.dims())?)?;
    let st = op.stats.host("dw_pw_bn")?;
    let t = match op.kept()?.first() {
        Some(t) => t.clone(),
        None => bail!("dw_pw_bn: the forward kept no BN input"),
    };
    with_slices::<T, _>(&[x, params, gy, &t], |s| {
        let (xs, ps, gys, ts) = (s[0], s[1], s[2], s[3]);
        let [dw, pw, gb] = op.sizes.split(ps);
        let (gamma, _, m) = affine_and_factors(op, gb, g.b)?;
        let (gt, ggamma, gbeta) = bn_affine_backward(ts, (g.b, g.co, g.plane()), &gamma, &m, gys, &st, op.eps, true);
        let Some(gt) = gt else { bail!("dw_pw_bn: no gradient of the BN input") };
        let (gx, gdw, gpw) = sep::backward(xs, dw, pw, &gt, &g, [x.track_op(), true, true], op.relu);
        let gx = gx.map(|v| cpu_tensor(v, x.shape())).transpose()?;
        let gparams = if params.track_op() {
            let mut v: Vec<T> = Vec::with_capacity(ps.len());
            v.extend(gdw.unwrap_or_default());
            v.extend(gpw.unwrap_or_default());
            if op.sizes.affine {
                v.extend(ggamma.iter().chain(&gbeta).map(|&x| T::from_f64(x)));
            }
            Some(cpu_tensor(v, params.shape())?)
        } else {
            None
        };
        Ok((gx, gparams))
    })
}

/// The gradients of x and of the flat weights of CPU tensors.
pub(crate) fn backward(
    op: &DwPwBnStage,
    x: &Tensor,
    params: &Tensor,
    gy: &Tensor,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    dispatch_dtype!("dw_pw_bn", x.dtype(), bwd(op, x, params, gy))
}
