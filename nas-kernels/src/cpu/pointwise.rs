//! CPU kernels of the 1×1 convolution: each batch item is one GEMM (Co × Ci)·(Ci × Ho·Wo);
//! batch items run in parallel, and the weight gradient sums fixed batch groups in a fixed
//! order (deterministic). Strided/offset sampling and the ReLU are applied to each item's
//! operand as it is copied for the product, and the ReLU's backward masks the input gradient.

use std::mem::MaybeUninit;
use std::sync::{Mutex, PoisonError};

use rayon::prelude::*;

use super::simd::{mask_relu, relu_into};
use super::{matmul, sum_products_t, Float, Fresh, Mat, Slot};
use crate::pointwise::PwGeom as Geom;

impl Geom {
    /// Copies the sampled pixels of one batch item (Ci × H × W) into `dst` (Ci × Ho·Wo),
    /// ReLU'd (as `relu_into`) with `relu`.
    fn gather<T: Float>(&self, x: &[T], dst: &mut [T], relu: bool) {
        let (s, o, w) = (self.p.stride, self.p.offset, self.w);
        for (src, d) in x.chunks_exact(self.in_plane()).zip(dst.chunks_exact_mut(self.out_plane())).take(self.ci) {
            for (i, drow) in d.chunks_exact_mut(self.ow).enumerate() {
                let row = src[(o + s * i) * w + o..].iter().step_by(s);
                for (d, &v) in drow.iter_mut().zip(row) {
                    *d = if relu && v < T::zero() { T::zero() } else { v };
                }
            }
        }
    }

    /// The input gradient of one batch item (Ci × H × W, every element written) from the
    /// product's (Ci × Ho·Wo): each sampled pixel's value, zero where nothing was sampled, and
    /// zero where `mask` (the sampled input, Ci × Ho·Wo, when the convolution ReLU'd it) is
    /// ≤ 0, as `mask_relu` (a NaN passes its gradient).
    fn scatter_into<T: Float, S: Slot<T>>(&self, src: &[T], mask: Option<&[T]>, dst: &mut [S]) {
        let (s, o, w, ip, opl) = (self.p.stride, self.p.offset, self.w, self.in_plane(), self.out_plane());
        for (c, (sp, dp)) in src.chunks_exact(opl).zip(dst.chunks_exact_mut(ip)).take(self.ci).enumerate() {
            dp.iter_mut().for_each(|v| v.put(T::zero()));
            for (i, srow) in sp.chunks_exact(self.ow).enumerate() {
                let drow = dp[(o + s * i) * w + o..].iter_mut().step_by(s);
                match mask {
                    None => drow.zip(srow).for_each(|(d, &v)| d.put(v)),
                    Some(m) => drow
                        .zip(srow)
                        .zip(&m[c * opl + i * self.ow..])
                        .for_each(|((d, &v), &mv)| d.put(if mv <= T::zero() { T::zero() } else { v })),
                }
            }
        }
    }

    /// The (Ci × Ho·Wo) operand of batch item `xb`: xb itself when dense without ReLU, else
    /// its sampled (and ReLU'd) copy in `buf`.
    fn operand<'a, T: Float>(&self, xb: &'a [T], buf: &'a mut Vec<T>, relu: bool) -> &'a [T] {
        if self.dense() && !relu {
            return xb;
        }
        buf.resize(self.ci * self.out_plane(), T::zero());
        if self.dense() {
            relu_into(buf, xb);
        } else {
            self.gather(xb, buf, relu);
        }
        buf
    }
}

/// conv(x), or conv(ReLU(x)) with `relu`.
pub(crate) fn forward<T: Float>(x: &[T], w: &[T], g: &Geom, relu: bool) -> Vec<T> {
    let (ip, op) = (g.ci * g.in_plane(), g.co * g.out_plane());
    let mut y = Fresh::new(g.b * op);
    y.slots().par_chunks_mut(op).enumerate().for_each_init(Vec::new, |buf, (b, yb)| {
        let xm = g.operand(&x[b * ip..(b + 1) * ip], buf, relu);
        matmul(g.co, g.out_plane(), g.ci, yb, false, Mat::rows(w, g.ci), Mat::rows(xm, g.out_plane()));
    });
    // SAFETY: each batch item's block is one product written with accumulate off (all of it).
    unsafe { y.assume_init() }
}

/// (gx, gw) of one convolution; either may be skipped. With both, each batch item's input
/// gradient is made where its weight-gradient operand is (the ReLU'd, sampled input, which
/// also masks the gradient, read once per item and still in cache).
pub(crate) fn backward<T: Float>(
    [x, w, gy]: [&[T]; 3],
    g: &Geom,
    [want_x, want_w]: [bool; 2],
    relu: bool,
) -> [Option<Vec<T>>; 2] {
    let (ip, op, p) = (g.ci * g.in_plane(), g.co * g.out_plane(), g.out_plane());
    let mut gx = Fresh::new(if want_x { g.b * ip } else { 0 });
    let items: Vec<Mutex<&mut [MaybeUninit<T>]>> = gx.slots().chunks_mut(ip.max(1)).map(Mutex::new).collect();
    // Item b's input gradient from its operand xm (`Geom::operand`): ReLU(x) ≤ 0 exactly where
    // x ≤ 0 (±0 and NaN included), so xm masks as x would.
    let item_gx = |b: usize, xm: &[T], gs: &mut Vec<T>| {
        let mut slot = items[b].lock().unwrap_or_else(PoisonError::into_inner);
        let (gxb, gyb) = (&mut **slot, &gy[b * op..(b + 1) * op]);
        if g.dense() {
            matmul(g.ci, p, g.co, gxb, false, Mat::transposed(w, g.ci), Mat::rows(gyb, p));
            if relu {
                // SAFETY: the product (accumulate off) wrote all of gxb.
                mask_relu(unsafe { Slot::assume_init(gxb) }, xm);
            }
        } else {
            gs.resize(g.ci * p, T::zero());
            matmul(g.ci, p, g.co, gs, false, Mat::transposed(w, g.ci), Mat::rows(gyb, p));
            g.scatter_into(gs, relu.then_some(xm), gxb);
        }
    };
    let gw = want_w.then(|| {
        sum_products_t(g.b, (g.co, g.ci, p), |b, [buf, gs], f| {
            let xm = g.operand(&x[b * ip..(b + 1) * ip], buf, relu);
            if want_x {
                item_gx(b, xm, gs);
            }
            f(&gy[b * op..(b + 1) * op], xm)
        })
    });
    if want_x && !want_w {
        (0..g.b).into_par_iter().for_each_init(
            || [Vec::new(), Vec::new()],
            |[buf, gs], b| item_gx(b, g.operand(&x[b * ip..(b + 1) * ip], buf, relu), gs),
        );
    }
    drop(items);
    // SAFETY: with want_x every batch item's block, and the blocks tile gx, was written in
    // full by item_gx above (by the product, or by scatter_into).
    [want_x.then(|| unsafe { gx.assume_init() }), gw]
}
