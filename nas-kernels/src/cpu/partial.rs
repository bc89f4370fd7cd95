//! CPU kernels of the PC-DARTS merge: one pass per output plane (a copy, or the 2×2 maximum
//! of the bypass channels on reducing edges), and a backward pass that writes both gradients
//! directly.

use candle_core::{CpuStorage, Layout, Result, Tensor};
use rayon::prelude::*;

use super::{cpu_tensor, slice, with_slices, Float};
use crate::partial::PcGeom as Geom;
use crate::{dispatch_dtype, dispatch_float};

/// Offset in an x plane of the maximum of the 2×2 window of output pixel (i, j); ties go to
/// the first in row-major order.
fn argmax<T: Float>(g: &Geom, xp: &[T], i: usize, j: usize) -> usize {
    let mut best = 2 * i * g.w + 2 * j;
    for (di, dj) in [(0, 1), (1, 0), (1, 1)] {
        let at = (2 * i + di) * g.w + 2 * j + dj;
        if xp[at] > xp[best] {
            best = at;
        }
    }
    best
}

fn forward<T: Float>(y: &[T], x: &[T], g: &Geom) -> Vec<T> {
    let (po, pi) = (g.ho * g.wo, g.h * g.w);
    let mut out = vec![T::zero(); g.b * g.c * po];
    out.par_chunks_mut(po).enumerate().for_each(|(plane, op)| {
        let (b, q) = (plane / g.c, g.source(plane % g.c));
        if q < g.ca {
            op.copy_from_slice(&y[(b * g.ca + q) * po..][..po]);
        } else {
            let xp = &x[(b * g.c + q) * pi..][..pi];
            if g.stride == 1 {
                op.copy_from_slice(xp);
            } else {
                for i in 0..g.ho {
                    for j in 0..g.wo {
                        op[i * g.wo + j] = xp[argmax(g, xp, i, j)];
                    }
                }
            }
        }
    });
    out
}

fn backward<T: Float>(x: &[T], gout: &[T], g: &Geom, want_y: bool, want_x: bool) -> (Vec<T>, Vec<T>) {
    let (po, pi) = (g.ho * g.wo, g.h * g.w);
    let inverse = |q: usize| (q % (g.c / g.k)) * g.k + q / (g.c / g.k);
    let mut gy = vec![T::zero(); if want_y { g.b * g.ca * po } else { 0 }];
    gy.par_chunks_mut(po).enumerate().for_each(|(plane, gp)| {
        let (b, q) = (plane / g.ca, plane % g.ca);
        gp.copy_from_slice(&gout[(b * g.c + inverse(q)) * po..][..po]);
    });
    let mut gx = vec![T::zero(); if want_x { g.b * g.c * pi } else { 0 }];
    gx.par_chunks_mut(pi).enumerate().for_each(|(plane, gp)| {
        let (b, q) = (plane / g.c, plane % g.c);
        if q < g.ca {
            return;
        }
        let src = &gout[(b * g.c + inverse(q)) * po..][..po];
        if g.stride == 1 {
            gp.copy_from_slice(src);
        } else {
            let xp = &x[(b * g.c + q) * pi..][..pi];
            for i in 0..g.ho {
                for j in 0..g.wo {
                    gp[argmax(g, xp, i, j)] = src[i * g.wo + j];
                }
            }
        }
    });
    (gy, gx)
}

fn fwd_impl<T: Float>(s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, g: &Geom) -> Result<CpuStorage> {
    Ok(T::to_cpu_storage_owned(forward(slice::<T>(s1, l1, "pc_merge")?, slice::<T>(s2, l2, "pc_merge")?, g)))
}

fn bwd_impl<T: Float>(y: &Tensor, x: &Tensor, gout: &Tensor, g: &Geom) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let (want_y, want_x) = (y.track_op(), x.track_op());
    with_slices::<T, _>(&[x, gout], |s| {
        let (gy, gx) = backward(s[0], s[1], g, want_y, want_x);
        let gy = if want_y { Some(cpu_tensor(gy, y.shape())?) } else { None };
        let gx = if want_x { Some(cpu_tensor(gx, x.shape())?) } else { None };
        Ok((gy, gx))
    })
}

/// The merged output of CPU storage (y, x).
pub(crate) fn forward_storage(
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
    g: &Geom,
) -> Result<CpuStorage> {
    dispatch_float!("pc_merge", s1, fwd_impl(s1, l1, s2, l2, g))
}

/// The gradients of y and x of CPU tensors.
pub(crate) fn backward_tensors(
    y: &Tensor,
    x: &Tensor,
    gout: &Tensor,
    g: &Geom,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    dispatch_dtype!("pc_merge", y.dtype(), bwd_impl(y, x, gout, g))
}
