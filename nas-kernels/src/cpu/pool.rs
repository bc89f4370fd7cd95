//! CPU kernels of the 3×3 pools (padded, stride-phased layout of `plane::Window`, −∞ padding
//! for max and 0 for average, one long loop per tap) and of the valid average pooling.

use candle_core::{bail, Result};
use rayon::prelude::*;

use super::plane::Window;
use super::simd::{axpy, max_args_row, max_taps_into, mul_into, taps_into};
use super::{planes_per_task, Float, Fresh};
use crate::pool::{PoolKind, ValidGeom};

#[derive(Debug, Clone, Copy)]
pub(crate) struct Geom {
    b: usize,
    c: usize,
    win: Window,
}

impl Geom {
    pub fn new(dims: &[usize], stride: usize) -> Result<Self> {
        let &[b, c, h, w] = dims else { bail!("pool3x3: input must be (B, C, H, W), got {dims:?}") };
        let Some(win) = Window::new(h, w, 3, stride, 1, 1) else {
            bail!("pool3x3: cannot pool {dims:?} with stride {stride}")
        };
        Ok(Self { b, c, win })
    }

    fn planes(&self) -> usize {
        self.b * self.c
    }

    fn in_plane(&self) -> usize {
        self.win.h * self.win.w
    }

    fn out_plane(&self) -> usize {
        self.win.oh * self.win.ow
    }

    fn task_planes(&self) -> usize {
        planes_per_task(self.win.full_len() * 9, 1 << 15)
    }

    fn pad<T: Float>(kind: PoolKind) -> T {
        match kind {
            PoolKind::Max => T::neg_infinity(),
            PoolKind::Avg => T::zero(),
        }
    }
}

/// The pooled planes and, for max pooling, the in-plane index PyTorch's max_pool2d would
/// record for every output (its first maximum in row-major order, or its last NaN, which is
/// then the output), which is all the backward pass needs.
pub(crate) fn forward<T: Float>(x: &[T], g: &Geom, kind: PoolKind) -> (Vec<T>, Vec<u32>) {
    let (ip, op, n) = (g.in_plane(), g.out_plane(), g.win.full_len());
    let inv: Vec<T> = g.win.inv_counts();
    let taps: Vec<usize> = (0..9).map(|t| g.win.tap(t / 3, t % 3)).collect();
    let tags: Vec<T> = (0..9).map(|t| T::from_f64(((t / 3) * g.win.w + t % 3) as f64)).collect();
    let mut out = Fresh::new(g.planes() * op);
    let mut arg = vec![0u32; if kind == PoolKind::Max { g.planes() * op } else { 0 }];
    let tp = g.task_planes();
    let tasks = g.planes().div_ceil(tp);
    let arg_chunks = super::task_chunks(&mut arg, op * tp, tasks);
    let jobs: Vec<_> =
        out.slots().chunks_mut(op * tp).zip(arg_chunks).enumerate().map(|(t, (c, a))| (t, c, a)).collect();
    jobs.into_par_iter().for_each_init(
        || (vec![Geom::pad::<T>(kind); g.win.phases_len()], vec![T::zero(); n], vec![T::zero(); n]),
        |(phases, full, best), (t, chunk, mut args)| {
            for (j, o) in chunk.chunks_mut(op).enumerate() {
                let plane = t * tp + j;
                g.win.split(&x[plane * ip..(plane + 1) * ip], phases);
                match kind {
                    PoolKind::Avg => {
                        // The nine taps summed from zero in order (as a cleared sum with an
                        // add per tap would), then scaled by 1/count.
                        taps_into(full, phases, &taps, &[T::one(); 9]);
                        mul_into(full, &inv);
                    }
                    PoolKind::Max => {
                        // PyTorch's scan in row-major tap order: a strictly greater value or a
                        // NaN replaces the maximum and its tag. A tap's tag is its offset
                        // kh·W + kw in the image from the window's padded top-left corner; −1
                        // marks a window that nothing replaced.
                        let w = g.win.w;
                        max_taps_into(full, best, phases, &taps, &tags);
                        if let Some(a) = args.as_deref_mut() {
                            let a = &mut a[j * op..(j + 1) * op];
                            let (s, ws) = (g.win.s, n / g.win.oh);
                            for oy in 0..g.win.oh {
                                // Padded (oy·s + kh, ox·s + kw) minus the padding of 1. A winner
                                // is never padding (−∞ replaces nothing). A window of −∞ alone:
                                // PyTorch names its first in-image pixel, its top-left corner
                                // clipped to the image.
                                let hit0 = (oy * s * w) as i64 - w as i64 - 1;
                                let corner_row = (((oy * s).max(1) - 1) * w) as i64;
                                let row = &mut a[oy * g.win.ow..(oy + 1) * g.win.ow];
                                max_args_row(row, &best[oy * ws..oy * ws + g.win.ow], hit0, corner_row, s);
                            }
                        }
                    }
                }
                g.win.extract(full, o);
            }
        },
    );
    // SAFETY: the planes tile out and extract writes every pixel of each.
    (unsafe { out.assume_init() }, arg)
}

/// Max-pool backward: each output gradient goes to the input its forward picked.
fn max_backward<T: Float>(arg: &[u32], gy: &[T], g: &Geom) -> Vec<T> {
    let (ip, op) = (g.in_plane(), g.out_plane());
    let mut gx = vec![T::zero(); g.planes() * ip];
    gx.par_chunks_mut(ip).enumerate().with_min_len(8).for_each(|(plane, gxp)| {
        for (&a, &gv) in arg[plane * op..(plane + 1) * op].iter().zip(&gy[plane * op..(plane + 1) * op]) {
            gxp[a as usize] += gv;
        }
    });
    gx
}

/// Avg-pool backward: scatters each output gradient, weighted by 1/count, over its window.
fn avg_backward<T: Float>(gy: &[T], g: &Geom) -> Vec<T> {
    let (ip, op, n) = (g.in_plane(), g.out_plane(), g.win.full_len());
    let inv: Vec<T> = g.win.inv_counts();
    let mut gx = vec![T::zero(); g.planes() * ip];
    let tp = g.task_planes();
    gx.par_chunks_mut(ip * tp).enumerate().for_each_init(
        || (vec![T::zero(); g.win.phases_len()], vec![T::zero(); n]),
        |(gphases, gfull), (t, chunk)| {
            for (j, gxp) in chunk.chunks_mut(ip).enumerate() {
                let plane = t * tp + j;
                g.win.embed(&gy[plane * op..(plane + 1) * op], gfull);
                mul_into(gfull, &inv);
                gphases.fill(T::zero());
                for tap in 0..9 {
                    let s = g.win.tap(tap / 3, tap % 3);
                    axpy(&mut gphases[s..s + n], T::one(), gfull);
                }
                g.win.merge(gphases, gxp);
            }
        },
    );
    gx
}

/// ∂x from ∂y (and the forward's arg-max indices for max pooling).
pub(crate) fn backward<T: Float>(gy: &[T], g: &Geom, kind: PoolKind, arg: &[u32]) -> Result<Vec<T>> {
    Ok(match kind {
        PoolKind::Avg => avg_backward(gy, g),
        PoolKind::Max if arg.len() == g.planes() * g.out_plane() => max_backward(arg, gy, g),
        PoolKind::Max => bail!("max-pool3x3: backward without its forward"),
    })
}

/// The valid average pooling.
pub(crate) fn avg_valid_forward<T: Float>(x: &[T], g: &ValidGeom) -> Vec<T> {
    let (ip, op) = (g.in_plane(), g.out_plane());
    let inv = T::from_f64(1.0 / (g.k * g.k) as f64);
    let mut out = vec![T::zero(); g.planes * op];
    out.par_chunks_mut(op).zip(x.par_chunks(ip)).with_min_len(64).for_each(|(o, x)| {
        g.for_each_tap(|oi, ii| o[oi] += x[ii]);
        o.iter_mut().for_each(|v| *v *= inv);
    });
    out
}

/// ∂x of the valid average pooling.
pub(crate) fn avg_valid_backward<T: Float>(gy: &[T], g: &ValidGeom) -> Vec<T> {
    let (ip, op) = (g.in_plane(), g.out_plane());
    let inv = T::from_f64(1.0 / (g.k * g.k) as f64);
    let mut gx = vec![T::zero(); g.planes * ip];
    gx.par_chunks_mut(ip).zip(gy.par_chunks(op)).with_min_len(64).for_each(|(gx, gy)| {
        g.for_each_tap(|oi, ii| gx[ii] += gy[oi] * inv);
    });
    gx
}
