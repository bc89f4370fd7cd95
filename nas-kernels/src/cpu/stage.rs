//! CPU kernels of the fused sep_conv/dil_conv stage: `sep` for the depthwise + pointwise part,
//! `batch_norm` for the normalisation with its factors and the node's sum.

use candle_core::Result;

use super::batch_norm::{bn_affine_forward, combine_planes, BnAffineGrad};
use super::sep::{self, SepGeom};
use super::simd::sum_sumsq;
use super::{cpu_tensor, with_slices, Float};
use crate::batch_norm::SavedStats;
use crate::stage::DwPwBnStage;

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

/// y = acc + m·BN(pw(dw([ReLU] x))); keeps the BN input and the batch statistics in `op`.
pub(crate) fn forward<T: Float>(op: &DwPwBnStage, x: &[T], ps: &[T], acc: Option<&[T]>) -> Result<Vec<T>> {
    let g = SepGeom::new(&op.g)?;
    let [dw, pw, gb] = op.sizes.split(ps);
    let (gamma, beta, m) = affine_and_factors(op, gb, g.b)?;
    // The batch norm's sums of each plane of t as it is written (one read of t less).
    let (t, planes) = sep::forward_with([x, dw, pw], &g, op.relu, sum_sumsq);
    let sums = combine_planes(planes, g.co);
    let (y, st) = bn_affine_forward(&t, (g.b, g.co, g.plane()), &gamma, &beta, &m, acc, op.eps, Some(&sums))?;
    op.stats.put(SavedStats::Host(st));
    op.keep(vec![cpu_tensor(t, op.g.out_shape())?]);
    Ok(y)
}

/// (∂x, ∂weights flat) as `want` asks, from ∂y and the forward's BN input `t`.
pub(crate) fn backward<T: Float>(
    op: &DwPwBnStage,
    [xs, ps, gys, ts]: [&[T]; 4],
    want: [bool; 2],
) -> Result<[Option<Vec<T>>; 2]> {
    let g = SepGeom::new(&op.g)?;
    let st = op.stats.host("dw_pw_bn")?;
    let [dw, pw, gb] = op.sizes.split(ps);
    let (gamma, _, m) = affine_and_factors(op, gb, g.b)?;
    // The BN input's gradient is made item by item inside the convolutions' backward.
    let bn = BnAffineGrad::new(ts, gys, (g.b, g.co, g.plane()), &gamma, &m, &st, op.eps);
    let gt = sep::OutGrad::ThroughBn { gy: gys, t: ts, bn: &bn };
    let [gx, gdw, gpw] = sep::backward([xs, dw, pw], gt, &g, [want[0], true, true], op.relu);
    let (ggamma, gbeta) = (&bn.ggamma, &bn.gbeta);
    let gparams = want[1].then(|| {
        let mut v: Vec<T> = Vec::with_capacity(ps.len());
        v.extend(gdw.unwrap_or_default());
        v.extend(gpw.unwrap_or_default());
        if op.sizes.affine {
            v.extend(ggamma.iter().chain(gbeta).map(|&x| T::from_f64(x)));
        }
        v
    });
    Ok([gx, gparams])
}
