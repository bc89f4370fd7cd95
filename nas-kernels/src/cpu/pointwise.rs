//! CPU kernels of the 1×1 convolution: each batch item is one GEMM (Co × Ci)·(Ci × Ho·Wo);
//! batch items run in parallel, and the weight gradient sums fixed batch groups in a fixed
//! order (deterministic). Strided/offset sampling and the ReLU are applied to each item's
//! operand as it is copied for the product, and the ReLU's backward masks the input gradient.

use rayon::prelude::*;

use super::simd::{mask_relu, relu_in_place, relu_into};
use super::{matmul, sum_products_t, Float, Fresh, Mat, Slot};
use crate::pointwise::PwGeom as Geom;

impl Geom {
    /// Copies the sampled pixels of one batch item (Ci × H × W) into `dst` (Ci × Ho·Wo).
    pub fn gather<T: Float>(&self, x: &[T], dst: &mut [T]) {
        let (s, o) = (self.p.stride, self.p.offset);
        for c in 0..self.ci {
            let src = &x[c * self.in_plane()..(c + 1) * self.in_plane()];
            let d = &mut dst[c * self.out_plane()..(c + 1) * self.out_plane()];
            for i in 0..self.oh {
                let row = &src[(o + s * i) * self.w..];
                for j in 0..self.ow {
                    d[i * self.ow + j] = row[o + s * j];
                }
            }
        }
    }

    /// Adds `src` (Ci × Ho·Wo) into the sampled pixels of `dst` (Ci × H × W).
    pub fn scatter<T: Float>(&self, src: &[T], dst: &mut [T]) {
        let (s, o) = (self.p.stride, self.p.offset);
        for c in 0..self.ci {
            let sp = &src[c * self.out_plane()..(c + 1) * self.out_plane()];
            let d = &mut dst[c * self.in_plane()..(c + 1) * self.in_plane()];
            for i in 0..self.oh {
                for j in 0..self.ow {
                    let v = &mut d[(o + s * i) * self.w + o + s * j];
                    *v += sp[i * self.ow + j];
                }
            }
        }
    }
}

impl Geom {
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
            self.gather(xb, buf);
            if relu {
                relu_in_place(buf);
            }
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

/// (gx, gw) of one convolution; either may be skipped.
pub(crate) fn backward<T: Float>(
    [x, w, gy]: [&[T]; 3],
    g: &Geom,
    [want_x, want_w]: [bool; 2],
    relu: bool,
) -> [Option<Vec<T>>; 2] {
    let (ip, op, p) = (g.ci * g.in_plane(), g.co * g.out_plane(), g.out_plane());
    let gx = want_x.then(|| {
        let mut gx = Fresh::new(g.b * ip);
        gx.slots().par_chunks_mut(ip).enumerate().for_each(|(b, gxb)| {
            let gyb = &gy[b * op..(b + 1) * op];
            let gxb: &mut [T] = if g.dense() {
                matmul(g.ci, p, g.co, gxb, false, Mat::transposed(w, g.ci), Mat::rows(gyb, p));
                // SAFETY: the product (accumulate off) wrote all of gxb.
                unsafe { Slot::assume_init(gxb) }
            } else {
                gxb.iter_mut().for_each(|v| v.put(T::zero()));
                // SAFETY: every element was just written.
                let gxb = unsafe { Slot::assume_init(gxb) };
                let mut gs = vec![T::zero(); g.ci * p];
                matmul(g.ci, p, g.co, &mut gs, false, Mat::transposed(w, g.ci), Mat::rows(gyb, p));
                g.scatter(&gs, gxb);
                gxb
            };
            if relu {
                mask_relu(gxb, &x[b * ip..(b + 1) * ip]);
            }
        });
        // SAFETY: the batch items' blocks tile gx and each is written in full above.
        unsafe { gx.assume_init() }
    });
    let gw = want_w.then(|| {
        sum_products_t(g.b, (g.co, g.ci, p), |b, buf, f| {
            f(&gy[b * op..(b + 1) * op], g.operand(&x[b * ip..(b + 1) * ip], buf, relu))
        })
    });
    [gx, gw]
}
