//! CPU kernels of the PC-DARTS merge: one pass per output plane (a copy, or the 2×2 maximum
//! of the bypass channels on reducing edges), and a backward pass that writes both gradients
//! directly.

use rayon::prelude::*;

use super::{put_all, Float, Fresh, Slot};
use crate::partial::PcGeom as Geom;

/// Offset in an x plane of the maximum of the 2×2 window of output pixel (i, j) by PyTorch's
/// max_pool2d rule: ties go to the first in row-major order, and a NaN wins (the last one).
fn argmax<T: Float>(g: &Geom, xp: &[T], i: usize, j: usize) -> usize {
    let mut best = 2 * i * g.w + 2 * j;
    for (di, dj) in [(0, 1), (1, 0), (1, 1)] {
        let at = (2 * i + di) * g.w + 2 * j + dj;
        if xp[at] > xp[best] || xp[at].is_nan() {
            best = at;
        }
    }
    best
}

/// shuffle(cat[y, bypass(x[:, C/K:])], K).
pub(crate) fn forward<T: Float>(y: &[T], x: &[T], g: &Geom) -> Vec<T> {
    let (po, pi) = (g.ho * g.wo, g.h * g.w);
    let mut out = Fresh::new(g.b * g.c * po);
    out.slots().par_chunks_mut(po).enumerate().for_each(|(plane, op)| {
        let (b, q) = (plane / g.c, g.source(plane % g.c));
        if q < g.ca {
            put_all(op, &y[(b * g.ca + q) * po..][..po]);
        } else {
            let xp = &x[(b * g.c + q) * pi..][..pi];
            if g.stride == 1 {
                put_all(op, xp);
            } else {
                for i in 0..g.ho {
                    for j in 0..g.wo {
                        op[i * g.wo + j].put(xp[argmax(g, xp, i, j)]);
                    }
                }
            }
        }
    });
    // SAFETY: the planes tile out and each is written in full above.
    unsafe { out.assume_init() }
}

/// (∂y, ∂x) as `want` asks.
pub(crate) fn backward<T: Float>(x: &[T], gout: &[T], g: &Geom, [want_y, want_x]: [bool; 2]) -> [Option<Vec<T>>; 2] {
    let (po, pi) = (g.ho * g.wo, g.h * g.w);
    let inverse = |q: usize| (q % (g.c / g.k)) * g.k + q / (g.c / g.k);
    let mut gy = Fresh::new(if want_y { g.b * g.ca * po } else { 0 });
    gy.slots().par_chunks_mut(po).enumerate().for_each(|(plane, gp)| {
        let (b, q) = (plane / g.ca, plane % g.ca);
        put_all(gp, &gout[(b * g.c + inverse(q)) * po..][..po]);
    });
    // SAFETY: the planes tile gy and each is copied in full above.
    let gy = unsafe { gy.assume_init() };
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
    [want_y.then_some(gy), want_x.then_some(gx)]
}
