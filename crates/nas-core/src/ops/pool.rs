//! 3×3 pooling with padding 1, as DARTS uses it: max pooling (padding never wins) and average
//! pooling with `count_include_pad=False` (each window averages only its in-image pixels).
//! Stride 1 keeps H×W; stride 2 gives ((H−1)/2+1)×((W−1)/2+1), like PyTorch.
//!
//! Max-pool gradients go to the first maximal element of each window in row-major order,
//! which is PyTorch's tie rule.

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::kernel::{planes_per_task, slice, Float};
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
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    s: usize,
}

impl Geom {
    fn new(dims: &[usize], stride: usize) -> Result<Self> {
        let &[b, c, h, w] = dims else { bail!("pool3x3: input must be (B, C, H, W), got {dims:?}") };
        if stride == 0 || h == 0 || w == 0 {
            bail!("pool3x3: empty input {dims:?} or zero stride");
        }
        Ok(Self { b, c, h, w, oh: (h - 1) / stride + 1, ow: (w - 1) / stride + 1, s: stride })
    }

    fn planes(&self) -> usize {
        self.b * self.c
    }

    /// Input rows (or columns) covered by output position `o`: [o·s − 1, o·s + 1] ∩ [0, n).
    #[inline]
    fn window(o: usize, s: usize, n: usize) -> (usize, usize) {
        let c = o * s;
        (c.saturating_sub(1), (c + 2).min(n))
    }

    fn task_planes(&self) -> usize {
        planes_per_task(self.oh * self.ow * 9, 1 << 15)
    }
}

fn forward<T: Float>(x: &[T], g: &Geom, kind: PoolKind) -> Vec<T> {
    let (ip, op) = (g.h * g.w, g.oh * g.ow);
    let mut out = vec![T::zero(); g.planes() * op];
    let tp = g.task_planes();
    out.par_chunks_mut(op * tp).enumerate().for_each(|(t, chunk)| {
        for (j, o) in chunk.chunks_mut(op).enumerate() {
            let xp = &x[(t * tp + j) * ip..(t * tp + j + 1) * ip];
            for oy in 0..g.oh {
                let (y0, y1) = Geom::window(oy, g.s, g.h);
                for ox in 0..g.ow {
                    let (x0, x1) = Geom::window(ox, g.s, g.w);
                    o[oy * g.ow + ox] = match kind {
                        PoolKind::Avg => {
                            let mut acc = T::zero();
                            for iy in y0..y1 {
                                for &v in &xp[iy * g.w + x0..iy * g.w + x1] {
                                    acc += v;
                                }
                            }
                            acc / T::from_f64(((y1 - y0) * (x1 - x0)) as f64)
                        }
                        PoolKind::Max => {
                            let mut m = T::neg_infinity();
                            for iy in y0..y1 {
                                for &v in &xp[iy * g.w + x0..iy * g.w + x1] {
                                    if v > m || v.is_nan() {
                                        m = v;
                                    }
                                }
                            }
                            m
                        }
                    };
                }
            }
        }
    });
    out
}

/// Scatters each output gradient back to its window (avg) or its first maximum (max).
fn backward<T: Float>(x: Option<&[T]>, gy: &[T], g: &Geom) -> Vec<T> {
    let (ip, op) = (g.h * g.w, g.oh * g.ow);
    let mut gx = vec![T::zero(); g.planes() * ip];
    let tp = g.task_planes();
    gx.par_chunks_mut(ip * tp).enumerate().for_each(|(t, chunk)| {
        for (j, gxp) in chunk.chunks_mut(ip).enumerate() {
            let plane = t * tp + j;
            let gp = &gy[plane * op..(plane + 1) * op];
            for oy in 0..g.oh {
                let (y0, y1) = Geom::window(oy, g.s, g.h);
                for ox in 0..g.ow {
                    let (x0, x1) = Geom::window(ox, g.s, g.w);
                    let gv = gp[oy * g.ow + ox];
                    match x {
                        None => {
                            let gv = gv / T::from_f64(((y1 - y0) * (x1 - x0)) as f64);
                            for iy in y0..y1 {
                                for v in &mut gxp[iy * g.w + x0..iy * g.w + x1] {
                                    *v += gv;
                                }
                            }
                        }
                        Some(x) => {
                            let xp = &x[plane * ip..(plane + 1) * ip];
                            let (mut best, mut m) = (y0 * g.w + x0, T::neg_infinity());
                            'scan: for iy in y0..y1 {
                                for ix in x0..x1 {
                                    let v = xp[iy * g.w + ix];
                                    if v > m || v.is_nan() {
                                        m = v;
                                        best = iy * g.w + ix;
                                        if v.is_nan() {
                                            break 'scan;
                                        }
                                    }
                                }
                            }
                            gxp[best] += gv;
                        }
                    }
                }
            }
        }
    });
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
        Ok((out, (g.b, g.c, g.oh, g.ow).into()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, gy: &Tensor) -> Result<Option<Tensor>> {
        let g = Geom::new(x.dims(), self.stride)?;
        let gy = gy.contiguous()?;
        Ok(Some(match self.kind {
            PoolKind::Avg => gy.apply_op1_no_bwd(&AvgPoolGrad(g))?,
            PoolKind::Max => x.apply_op2_no_bwd(&gy, &MaxPoolGrad(g))?,
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
        Ok((dispatch_float!("avg-pool3x3-grad", s, run(s, l, g))?, (g.b, g.c, g.h, g.w).into()))
    }
}

struct MaxPoolGrad(Geom);

impl CustomOp2 for MaxPoolGrad {
    fn name(&self) -> &'static str {
        "max-pool3x3-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        fn run<T: Float>(s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, g: &Geom) -> Result<CpuStorage> {
            let x = slice::<T>(s1, l1, "max-pool3x3-grad")?;
            let gy = slice::<T>(s2, l2, "max-pool3x3-grad")?;
            Ok(T::to_cpu_storage_owned(backward(Some(x), gy, g)))
        }
        let g = &self.0;
        Ok((dispatch_float!("max-pool3x3-grad", s1, run(s1, l1, s2, l2, g))?, (g.b, g.c, g.h, g.w).into()))
    }
}

/// 3×3 pooling with padding 1 and the given stride, differentiable.
pub fn pool3x3(x: &Tensor, kind: PoolKind, stride: usize) -> Result<Tensor> {
    Geom::new(x.dims(), stride)?;
    x.contiguous()?.apply_op1(Pool3x3 { kind, stride })
}
