//! CPU kernels of the fused depthwise + 1×1 convolution: the depthwise output never becomes a
//! tensor: the forward keeps it in a per-task buffer, the backward recomputes it (K² multiply-
//! adds per pixel, cheaper than storing and re-reading it, and from the same split of each
//! input plane as the depthwise gradients) and keeps its gradient in cache.
//! With `relu` the input is ReLU'd as the depthwise kernel reads it, and the input gradient is
//! masked as it is written.

use std::mem::MaybeUninit;

use candle_core::Result;
use rayon::prelude::*;

use super::batch_norm::BnAffineGrad;
use super::depthwise::{plane_backward, plane_forward, Geom as DwLayout, Scratch};
use super::{fixed_groups, matmul, sum_partials, Float, Fresh, Mat, Slot};
use crate::sep::SepGeom as Shapes;

#[derive(Debug, Clone, Copy)]
pub(crate) struct SepGeom {
    pub dw: DwLayout,
    pub b: usize,
    pub co: usize,
}

impl SepGeom {
    pub fn new(g: &Shapes) -> Result<Self> {
        Ok(Self { dw: DwLayout::new(&g.dw)?, b: g.dw.b, co: g.co })
    }

    pub fn in_item(&self) -> usize {
        self.dw.c * self.dw.h * self.dw.w
    }

    pub fn plane(&self) -> usize {
        self.dw.oh * self.dw.ow
    }

    /// t = dw(x_b) (or dw(ReLU(x_b))) for one batch item (C × P), every element written.
    fn depthwise<T: Float, S: Slot<T>>(&self, xb: &[T], w_dw: &[T], t: &mut [S], sc: &mut Scratch<T>, relu: bool) {
        let (ip, p, kk) = (self.dw.h * self.dw.w, self.plane(), self.dw.k * self.dw.k);
        for c in 0..self.dw.c {
            let (tp, xp, wk) = (&mut t[c * p..(c + 1) * p], &xb[c * ip..(c + 1) * ip], &w_dw[c * kk..(c + 1) * kk]);
            plane_forward(tp, xp, wk, &self.dw, sc, relu);
        }
    }
}

/// pw(dw(x)), or pw(dw(ReLU(x))) with `relu`.
pub(crate) fn forward<T: Float>(xs: [&[T]; 3], g: &SepGeom, relu: bool) -> Vec<T> {
    forward_with(xs, g, relu, |_| ()).0
}

/// `forward` and, for every output plane (b·Co + o, in that order), `per_plane` of it, taken while
/// the batch item's output is still in cache (the batch norm's sums).
pub(crate) fn forward_with<T: Float, R: Send>(
    [x, w_dw, w_pw]: [&[T]; 3],
    g: &SepGeom,
    relu: bool,
    per_plane: impl Fn(&[T]) -> R + Sync,
) -> (Vec<T>, Vec<R>) {
    let (p, c) = (g.plane(), g.dw.c);
    let mut y = Fresh::new(g.b * g.co * p);
    let per_item: Vec<Vec<R>> = y
        .slots()
        .par_chunks_mut(g.co * p)
        .enumerate()
        .map_init(
            || (vec![T::zero(); c * p], Scratch::new(&g.dw)),
            |(t, sc), (b, yb)| {
                g.depthwise(&x[b * g.in_item()..(b + 1) * g.in_item()], w_dw, t.as_mut_slice(), sc, relu);
                matmul(g.co, p, c, yb, false, Mat::rows(w_pw, c), Mat::rows(t, p));
                // SAFETY: the product above wrote all of yb (accumulate off).
                let yb: &[T] = unsafe { Slot::assume_init(yb) };
                yb.chunks(p).map(&per_plane).collect()
            },
        )
        .collect();
    // SAFETY: each batch item's (Co × P) block is one product written with accumulate off,
    // which writes all of it; the blocks tile y.
    (unsafe { y.assume_init() }, per_item.into_iter().flatten().collect())
}

/// The gradient of the output pw(dw(x)): given whole, or made batch item by batch item from
/// the gradient of a batch norm after it and the output itself (the fused stage: the BN
/// input's gradient is never written out, each item's is made where it is used).
pub(crate) enum OutGrad<'a, T> {
    Given(&'a [T]),
    ThroughBn { gy: &'a [T], t: &'a [T], bn: &'a BnAffineGrad },
}

/// (∂x, ∂w_dw, ∂w_pw) as `want` asks.
pub(crate) fn backward<T: Float>(
    [x, w_dw, w_pw]: [&[T]; 3],
    gy: OutGrad<'_, T>,
    g: &SepGeom,
    want: [bool; 3],
    relu: bool,
) -> [Option<Vec<T>>; 3] {
    let (p, c, kk, ii) = (g.plane(), g.dw.c, g.dw.k * g.dw.k, g.in_item());
    let ip = g.dw.h * g.dw.w;
    let groups = fixed_groups(g.b, 16);
    let mut gx = Fresh::new(if want[0] { g.b * ii } else { 0 });
    // Carve the input gradient into the groups' batch ranges.
    let mut slots: Vec<&mut [MaybeUninit<T>]> = Vec::with_capacity(groups.len());
    let mut rest = gx.slots();
    for r in &groups {
        let take = if want[0] { r.len() * ii } else { 0 };
        let (head, tail) = rest.split_at_mut(take);
        slots.push(head);
        rest = tail;
    }
    let partials: Vec<(Vec<T>, Vec<T>)> = groups
        .into_par_iter()
        .zip(slots.into_par_iter())
        .map(|(range, gx_slot)| {
            let mut gdw = vec![T::zero(); if want[1] { c * kk } else { 0 }];
            let mut gpw = vec![T::zero(); if want[2] { g.co * c } else { 0 }];
            let mut t = vec![T::zero(); if want[2] { c * p } else { 0 }];
            let mut gt = vec![T::zero(); c * p];
            let mut through_bn = vec![T::zero(); if matches!(gy, OutGrad::ThroughBn { .. }) { g.co * p } else { 0 }];
            let mut sc = Scratch::new(&g.dw);
            for (n, b) in range.enumerate() {
                let xb = &x[b * ii..(b + 1) * ii];
                let item = b * g.co * p..(b + 1) * g.co * p;
                let gyb: &[T] = match &gy {
                    OutGrad::Given(gy) => &gy[item],
                    OutGrad::ThroughBn { gy, t, bn } => {
                        let (gy, t) = (&gy[item.clone()], &t[item]);
                        for (o, dst) in through_bn.chunks_mut(p).enumerate() {
                            let plane = o * p..(o + 1) * p;
                            // SAFETY: MaybeUninit<T> has T's layout, and `plane` only writes
                            // values of T (every element).
                            let dst = unsafe { &mut *(dst as *mut [T] as *mut [MaybeUninit<T>]) };
                            bn.plane(b * g.co + o, &gy[plane.clone()], &t[plane], dst);
                        }
                        &through_bn
                    }
                };
                matmul(c, p, g.co, &mut gt, false, Mat::transposed(w_pw, c), Mat::rows(gyb, p));
                // Per channel: the depthwise output recomputed (for the 1×1 weights' gradient)
                // from the same split of the input as the depthwise gradients.
                for ch in 0..c {
                    let gtp = &gt[ch * p..(ch + 1) * p];
                    let gxp = if want[0] { Some(&mut gx_slot[n * ii + ch * ip..n * ii + (ch + 1) * ip]) } else { None };
                    let gwp = if want[1] { Some(&mut gdw[ch * kk..(ch + 1) * kk]) } else { None };
                    let tp = if want[2] { Some(&mut t[ch * p..(ch + 1) * p]) } else { None };
                    plane_backward(
                        gxp,
                        gwp,
                        tp,
                        &xb[ch * ip..(ch + 1) * ip],
                        gtp,
                        &w_dw[ch * kk..(ch + 1) * kk],
                        &g.dw,
                        &mut sc,
                        relu,
                    );
                }
                if want[2] {
                    matmul(g.co, c, p, &mut gpw, n > 0, Mat::rows(gyb, p), Mat::transposed(&t, p));
                }
            }
            (gdw, gpw)
        })
        .collect();
    let (dws, pws): (Vec<Vec<T>>, Vec<Vec<T>>) = partials.into_iter().unzip();
    // SAFETY: the groups' batch ranges tile gx, and plane_backward writes every pixel of every
    // channel plane of every item in its range (merge writes the whole plane).
    let gx = unsafe { gx.assume_init() };
    [want[0].then_some(gx), want[1].then(|| sum_partials(dws, c * kk)), want[2].then(|| sum_partials(pws, g.co * c))]
}
