//! 3×3 pooling with padding 1, as DARTS uses it: max pooling (padding never wins) and average
//! pooling with `count_include_pad=False` (each window averages only its in-image pixels).
//! Stride 1 keeps H×W; stride 2 gives ((H−1)/2+1)×((W−1)/2+1), like PyTorch.
//!
//! Max-pool gradients go to the first maximal element of each window in row-major order,
//! which is PyTorch's tie rule; NaN propagates. The kernels work in the padded, stride-phased
//! layout of `plane::Window` (−∞ padding for max, 0 for average), one long loop per tap.

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::kernel::{planes_per_task, slice, Float};
use super::plane::{axpy, Window};
use crate::dispatch_float;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Avg,
}

#[derive(Debug, Clone, Copy)]
struct Geom {
    b: usize,
    c: usize,
    win: Window,
}

impl Geom {
    fn new(dims: &[usize], stride: usize) -> Result<Self> {
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

    fn in_shape(&self) -> Shape {
        (self.b, self.c, self.win.h, self.win.w).into()
    }

    fn out_shape(&self) -> Shape {
        (self.b, self.c, self.win.oh, self.win.ow).into()
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

#[inline]
fn max_nan<T: Float>(m: T, v: T) -> T {
    if v > m || v.is_nan() {
        v
    } else {
        m
    }
}

fn forward<T: Float>(x: &[T], g: &Geom, kind: PoolKind) -> Vec<T> {
    let (ip, op, n) = (g.in_plane(), g.out_plane(), g.win.full_len());
    let inv: Vec<T> = g.win.inv_counts();
    let mut out = vec![T::zero(); g.planes() * op];
    let tp = g.task_planes();
    out.par_chunks_mut(op * tp).enumerate().for_each_init(
        || (vec![Geom::pad::<T>(kind); g.win.phases_len()], vec![T::zero(); n]),
        |(phases, full), (t, chunk)| {
            for (j, o) in chunk.chunks_mut(op).enumerate() {
                let plane = t * tp + j;
                g.win.split(&x[plane * ip..(plane + 1) * ip], phases);
                match kind {
                    PoolKind::Avg => {
                        full.fill(T::zero());
                        for tap in 0..9 {
                            let s = g.win.tap(tap / 3, tap % 3);
                            axpy(full, T::one(), &phases[s..s + n]);
                        }
                        for (v, &c) in full.iter_mut().zip(&inv) {
                            *v *= c;
                        }
                    }
                    PoolKind::Max => {
                        full.fill(T::neg_infinity());
                        for tap in 0..9 {
                            let s = g.win.tap(tap / 3, tap % 3);
                            for (m, &v) in full.iter_mut().zip(&phases[s..s + n]) {
                                *m = max_nan(*m, v);
                            }
                        }
                    }
                }
                g.win.extract(full, o);
            }
        },
    );
    out
}

/// Scatters each output gradient back to its window (avg, weighted by 1/count) or to its
/// first maximum (max; needs x and the forward output y).
fn backward<T: Float>(xy: Option<(&[T], &[T])>, gy: &[T], g: &Geom) -> Vec<T> {
    let (ip, op, n) = (g.in_plane(), g.out_plane(), g.win.full_len());
    let inv: Vec<T> = g.win.inv_counts();
    let mut gx = vec![T::zero(); g.planes() * ip];
    let tp = g.task_planes();
    let pad = if xy.is_some() { T::neg_infinity() } else { T::zero() };
    gx.par_chunks_mut(ip * tp).enumerate().for_each_init(
        || {
            let ph = vec![pad; g.win.phases_len()];
            (ph, vec![T::zero(); g.win.phases_len()], vec![T::zero(); n], vec![T::zero(); n], vec![false; n])
        },
        |(phases, gphases, gfull, yfull, done), (t, chunk)| {
            for (j, gxp) in chunk.chunks_mut(ip).enumerate() {
                let plane = t * tp + j;
                g.win.embed(&gy[plane * op..(plane + 1) * op], gfull);
                gphases.fill(T::zero());
                match xy {
                    None => {
                        for (v, &c) in gfull.iter_mut().zip(&inv) {
                            *v *= c;
                        }
                        for tap in 0..9 {
                            let s = g.win.tap(tap / 3, tap % 3);
                            axpy(&mut gphases[s..s + n], T::one(), gfull);
                        }
                    }
                    Some((x, y)) => {
                        g.win.split(&x[plane * ip..(plane + 1) * ip], phases);
                        g.win.embed(&y[plane * op..(plane + 1) * op], yfull);
                        done.fill(false);
                        for tap in 0..9 {
                            let s = g.win.tap(tap / 3, tap % 3);
                            let dst = &mut gphases[s..s + n];
                            let src = &phases[s..s + n];
                            for i in 0..n {
                                let (v, m) = (src[i], yfull[i]);
                                if !done[i] && (v == m || (v.is_nan() && m.is_nan())) {
                                    dst[i] += gfull[i];
                                    done[i] = true;
                                }
                            }
                        }
                    }
                }
                g.win.merge(gphases, gxp);
            }
        },
    );
    gx
}

struct Pool3x3 {
    kind: PoolKind,
    stride: usize,
}

impl CustomOp1 for Pool3x3 {
    fn name(&self) -> &'static str {
        match self.kind {
            PoolKind::Max => "max-pool3x3",
            PoolKind::Avg => "avg-pool3x3",
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = Geom::new(l.dims(), self.stride)?;
        fn run<T: Float>(s: &CpuStorage, l: &Layout, g: &Geom, kind: PoolKind) -> Result<CpuStorage> {
            Ok(T::to_cpu_storage_owned(forward(slice::<T>(s, l, "pool3x3")?, g, kind)))
        }
        let out = dispatch_float!("pool3x3", s, run(s, l, &g, self.kind))?;
        Ok((out, g.out_shape()))
    }

    fn bwd(&self, x: &Tensor, y: &Tensor, gy: &Tensor) -> Result<Option<Tensor>> {
        let g = Geom::new(x.dims(), self.stride)?;
        let gy = gy.contiguous()?;
        Ok(Some(match self.kind {
            PoolKind::Avg => gy.apply_op1_no_bwd(&AvgPoolGrad(g))?,
            PoolKind::Max => x.apply_op3_no_bwd(&y.contiguous()?, &gy, &MaxPoolGrad(g))?,
        }))
    }
}

struct AvgPoolGrad(Geom);

impl CustomOp1 for AvgPoolGrad {
    fn name(&self) -> &'static str {
        "avg-pool3x3-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        fn run<T: Float>(s: &CpuStorage, l: &Layout, g: &Geom) -> Result<CpuStorage> {
            Ok(T::to_cpu_storage_owned(backward(None, slice::<T>(s, l, "avg-pool3x3-grad")?, g)))
        }
        let g = &self.0;
        Ok((dispatch_float!("avg-pool3x3-grad", s, run(s, l, g))?, g.in_shape()))
    }
}

/// (x, y, gy) → gx.
struct MaxPoolGrad(Geom);

impl candle_core::CustomOp3 for MaxPoolGrad {
    fn name(&self) -> &'static str {
        "max-pool3x3-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        fn run<T: Float>(s: [(&CpuStorage, &Layout); 3], g: &Geom) -> Result<CpuStorage> {
            let x = slice::<T>(s[0].0, s[0].1, "max-pool3x3-grad")?;
            let y = slice::<T>(s[1].0, s[1].1, "max-pool3x3-grad")?;
            let gy = slice::<T>(s[2].0, s[2].1, "max-pool3x3-grad")?;
            Ok(T::to_cpu_storage_owned(backward(Some((x, y)), gy, g)))
        }
        let g = &self.0;
        Ok((dispatch_float!("max-pool3x3-grad", s1, run([(s1, l1), (s2, l2), (s3, l3)], g))?, g.in_shape()))
    }
}

/// 3×3 pooling with padding 1 and the given stride, differentiable.
pub fn pool3x3(x: &Tensor, kind: PoolKind, stride: usize) -> Result<Tensor> {
    Geom::new(x.dims(), stride)?;
    x.contiguous()?.apply_op1(Pool3x3 { kind, stride })
}
