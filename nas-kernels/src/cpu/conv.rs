//! CPU kernels of the dense convolution: each batch item's K² shifted windows are copied into
//! a (Ci·K² × Ho·Wo) matrix (im2col, zeros where a window reaches the padding), and the output
//! is one GEMM with the weight (Co × Ci·K²). The weight gradient sums each item's product of
//! the output gradient with that matrix (`sum_products_t`); the input
//! gradient is the weight's transpose times the output gradient, added back into the windows'
//! pixels (col2im).

use rayon::prelude::*;

use super::{matmul, sum_products_t, Float, Fresh, Mat};
use crate::conv::ConvGeom as Geom;

impl Geom {
    fn in_item(&self) -> usize {
        self.ci * self.h * self.w
    }

    fn out_plane(&self) -> usize {
        self.oh * self.ow
    }

    /// Rows of the window matrix: Ci·K².
    fn taps(&self) -> usize {
        self.ci * self.k * self.k
    }

    /// The input row of output row `oy` at kernel row `kh`, if inside the image.
    fn in_row(&self, oy: usize, kh: usize) -> Option<usize> {
        (oy * self.stride + kh).checked_sub(self.padding).filter(|&iy| iy < self.h)
    }

    /// The output columns whose kernel column `kw` falls inside the image: lo..hi.
    fn valid_cols(&self, kw: usize) -> (usize, usize) {
        let s = self.stride;
        let lo = self.padding.saturating_sub(kw).div_ceil(s).min(self.ow);
        // ox·s + kw − p ≤ W − 1.
        let hi = match (self.w - 1 + self.padding).checked_sub(kw) {
            Some(last) => (last / s + 1).min(self.ow),
            None => 0,
        };
        (lo, hi.max(lo))
    }

    /// Calls f(row of the window matrix, input plane offset, kh, kw) for every tap row. The
    /// rows run over (kh, kw, c), channels innermost: each output is then summed in the order
    /// PyTorch's CPU convolution (oneDNN) and candle's sum it, so the two agree bit for bit
    /// (the parity tests' networks amplify a last-bit difference in the stem).
    fn for_each_tap(&self, mut f: impl FnMut(usize, usize, usize, usize)) {
        for kh in 0..self.k {
            for kw in 0..self.k {
                for c in 0..self.ci {
                    f((kh * self.k + kw) * self.ci + c, c * self.h * self.w, kh, kw);
                }
            }
        }
    }

    /// w (Co × Ci × K × K) with each filter's taps in the window matrix's row order
    /// (Co × K × K × Ci); `back` undoes it.
    fn permute_weight<T: Float>(&self, w: &[T], back: bool) -> Vec<T> {
        let (kk, taps) = (self.k * self.k, self.taps());
        let mut out = vec![T::zero(); w.len()];
        for o in 0..self.co {
            for c in 0..self.ci {
                for t in 0..kk {
                    let (pytorch, ours) = (o * taps + c * kk + t, o * taps + t * self.ci + c);
                    if back {
                        out[pytorch] = w[ours];
                    } else {
                        out[ours] = w[pytorch];
                    }
                }
            }
        }
        out
    }

    /// The window matrix (Ci·K² × Ho·Wo) of one batch item `xb` (Ci × H × W).
    fn im2col<T: Float>(&self, xb: &[T], col: &mut [T]) {
        let (p, s, pad) = (self.out_plane(), self.stride, self.padding);
        self.for_each_tap(|r, plane, kh, kw| {
            let (lo, hi) = self.valid_cols(kw);
            for oy in 0..self.oh {
                let dst = &mut col[r * p + oy * self.ow..r * p + (oy + 1) * self.ow];
                let Some(iy) = self.in_row(oy, kh) else {
                    dst.fill(T::zero());
                    continue;
                };
                let src = &xb[plane + iy * self.w..plane + (iy + 1) * self.w];
                dst[..lo].fill(T::zero());
                dst[hi..].fill(T::zero());
                if s == 1 {
                    dst[lo..hi].copy_from_slice(&src[lo + kw - pad..hi + kw - pad]);
                } else {
                    for (ox, d) in dst.iter_mut().enumerate().take(hi).skip(lo) {
                        *d = src[ox * s + kw - pad];
                    }
                }
            }
        });
    }

    /// Adds the window matrix `col` back into the pixels its windows read (gxb, Ci × H × W).
    fn col2im<T: Float>(&self, col: &[T], gxb: &mut [T]) {
        let (p, s, pad) = (self.out_plane(), self.stride, self.padding);
        self.for_each_tap(|r, plane, kh, kw| {
            let (lo, hi) = self.valid_cols(kw);
            for oy in 0..self.oh {
                let Some(iy) = self.in_row(oy, kh) else { continue };
                let src = &col[r * p + oy * self.ow..r * p + (oy + 1) * self.ow];
                let dst = &mut gxb[plane + iy * self.w..plane + (iy + 1) * self.w];
                for (ox, &v) in src.iter().enumerate().take(hi).skip(lo) {
                    dst[ox * s + kw - pad] += v;
                }
            }
        });
    }
}

/// conv(x, w).
pub(crate) fn forward<T: Float>(x: &[T], w: &[T], g: &Geom) -> Vec<T> {
    let (ii, p, taps) = (g.in_item(), g.out_plane(), g.taps());
    let w = &g.permute_weight(w, false);
    let mut y = Fresh::new(g.b * g.co * p);
    y.slots().par_chunks_mut(g.co * p).enumerate().for_each_init(
        || vec![T::zero(); taps * p],
        |col, (b, yb)| {
            g.im2col(&x[b * ii..(b + 1) * ii], col);
            matmul(g.co, p, taps, yb, false, Mat::rows(w, taps), Mat::rows(col, p));
        },
    );
    // SAFETY: each batch item's (Co × P) block is one product written with accumulate off
    // (all of it); the blocks tile y.
    unsafe { y.assume_init() }
}

/// (∂x, ∂w) as `want` asks.
pub(crate) fn backward<T: Float>([x, w, gy]: [&[T]; 3], g: &Geom, [want_x, want_w]: [bool; 2]) -> [Option<Vec<T>>; 2] {
    let (ii, p, taps, op) = (g.in_item(), g.out_plane(), g.taps(), g.co * g.out_plane());
    let gx = want_x.then(|| {
        let w = &g.permute_weight(w, false);
        let mut gx = vec![T::zero(); g.b * ii];
        gx.par_chunks_mut(ii).enumerate().for_each_init(
            || vec![T::zero(); taps * p],
            |gcol, (b, gxb)| {
                let gyb = &gy[b * op..(b + 1) * op];
                matmul(taps, p, g.co, gcol.as_mut_slice(), false, Mat::transposed(w, taps), Mat::rows(gyb, p));
                g.col2im(gcol, gxb);
            },
        );
        gx
    });
    let gw = want_w.then(|| {
        let sum = sum_products_t(g.b, (g.co, taps, p), |b, [col, _], f| {
            col.resize(taps * p, T::zero());
            g.im2col(&x[b * ii..(b + 1) * ii], col);
            f(&gy[b * op..(b + 1) * op], col)
        });
        g.permute_weight(&sum, true)
    });
    [gx, gw]
}
