//! Depthwise 2-D convolution (`groups == channels`, one k×k filter per channel), the core of
//! DARTS' sep_conv and dil_conv ops, with stride, zero padding and dilation.
//!
//! Shapes: input (B, C, H, W), weight (C, 1, K, K) as in PyTorch, output (B, C, Ho, Wo) with
//! Ho = (H + 2p − d(K−1) − 1)/s + 1. The CPU kernels run one rayon task per group of
//! (batch, channel) planes; every tap is a strided axpy over a row, so the inner loops are
//! contiguous for stride 1 and vectorise.

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::kernel::{planes_per_task, slice, valid_range, Float};
use crate::dispatch_float;

/// Hyper-parameters of a depthwise convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DwParams {
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
}

/// Everything the kernels need, derived once from the input and weight shapes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geom {
    pub planes: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub oh: usize,
    pub ow: usize,
    pub p: DwParams,
}

impl Geom {
    pub fn new(x: &[usize], wt: &[usize], p: DwParams) -> Result<Self> {
        let &[b, c, h, w] = x else { bail!("depthwise_conv2d: input must be (B, C, H, W), got {x:?}") };
        let &[wc, one, k, k2] = wt else { bail!("depthwise_conv2d: weight must be (C, 1, K, K), got {wt:?}") };
        if wc != c || one != 1 || k != k2 || k == 0 {
            bail!("depthwise_conv2d: weight {wt:?} does not fit input {x:?}");
        }
        if p.stride == 0 || p.dilation == 0 {
            bail!("depthwise_conv2d: stride and dilation must be positive");
        }
        let span = p.dilation * (k - 1) + 1;
        if h + 2 * p.padding < span || w + 2 * p.padding < span {
            bail!("depthwise_conv2d: input {h}x{w} smaller than the kernel span {span}");
        }
        let oh = (h + 2 * p.padding - span) / p.stride + 1;
        let ow = (w + 2 * p.padding - span) / p.stride + 1;
        Ok(Self { planes: b * c, c, h, w, k, oh, ow, p })
    }

    fn out_shape(&self) -> Shape {
        (self.planes / self.c, self.c, self.oh, self.ow).into()
    }

    fn in_shape(&self) -> Shape {
        (self.planes / self.c, self.c, self.h, self.w).into()
    }

    /// Offset of tap (kh or kw) relative to the output position times stride.
    #[inline]
    fn off(&self, tap: usize) -> isize {
        (tap * self.p.dilation) as isize - self.p.padding as isize
    }

    fn task_planes(&self) -> usize {
        planes_per_task(self.oh * self.ow * self.k * self.k, 1 << 15)
    }
}

/// y[oy, ox] += wv · x[oy·s + dy, ox·s + dx] over the valid output window of one tap.
#[inline]
fn tap_forward<T: Float>(out: &mut [T], x: &[T], wv: T, g: &Geom, kh: usize, kw: usize) {
    let (dy, dx) = (g.off(kh), g.off(kw));
    let s = g.p.stride;
    let (y0, y1) = valid_range(dy, s, g.h, g.oh);
    let (x0, x1) = valid_range(dx, s, g.w, g.ow);
    if x0 >= x1 {
        return;
    }
    for oy in y0..y1 {
        let iy = (oy * s) as isize + dy;
        let irow = &x[iy as usize * g.w..(iy as usize + 1) * g.w];
        let orow = &mut out[oy * g.ow + x0..oy * g.ow + x1];
        let ix0 = ((x0 * s) as isize + dx) as usize;
        if s == 1 {
            for (o, &i) in orow.iter_mut().zip(&irow[ix0..ix0 + (x1 - x0)]) {
                *o += wv * i;
            }
        } else {
            for (o, &i) in orow.iter_mut().zip(irow[ix0..].iter().step_by(s)) {
                *o += wv * i;
            }
        }
    }
}

/// gx[oy·s + dy, ox·s + dx] += wv · gy[oy, ox]: the transpose of `tap_forward`.
#[inline]
fn tap_backward<T: Float>(gx: &mut [T], gy: &[T], wv: T, g: &Geom, kh: usize, kw: usize) {
    let (dy, dx) = (g.off(kh), g.off(kw));
    let s = g.p.stride;
    let (y0, y1) = valid_range(dy, s, g.h, g.oh);
    let (x0, x1) = valid_range(dx, s, g.w, g.ow);
    if x0 >= x1 {
        return;
    }
    for oy in y0..y1 {
        let iy = ((oy * s) as isize + dy) as usize;
        let grow = &gy[oy * g.ow + x0..oy * g.ow + x1];
        let xrow = &mut gx[iy * g.w..(iy + 1) * g.w];
        let ix0 = ((x0 * s) as isize + dx) as usize;
        if s == 1 {
            for (o, &gv) in xrow[ix0..ix0 + (x1 - x0)].iter_mut().zip(grow) {
                *o += wv * gv;
            }
        } else {
            for (o, &gv) in xrow[ix0..].iter_mut().step_by(s).zip(grow) {
                *o += wv * gv;
            }
        }
    }
}

/// Σ gy[oy, ox] · x[oy·s + dy, ox·s + dx] over the valid window of one tap.
#[inline]
fn tap_dot<T: Float>(x: &[T], gy: &[T], g: &Geom, kh: usize, kw: usize) -> T {
    let (dy, dx) = (g.off(kh), g.off(kw));
    let s = g.p.stride;
    let (y0, y1) = valid_range(dy, s, g.h, g.oh);
    let (x0, x1) = valid_range(dx, s, g.w, g.ow);
    let mut acc = T::zero();
    if x0 >= x1 {
        return acc;
    }
    for oy in y0..y1 {
        let iy = ((oy * s) as isize + dy) as usize;
        let grow = &gy[oy * g.ow + x0..oy * g.ow + x1];
        let xrow = &x[iy * g.w..(iy + 1) * g.w];
        let ix0 = ((x0 * s) as isize + dx) as usize;
        if s == 1 {
            acc += grow.iter().zip(&xrow[ix0..ix0 + (x1 - x0)]).map(|(&a, &b)| a * b).sum::<T>();
        } else {
            acc += grow.iter().zip(xrow[ix0..].iter().step_by(s)).map(|(&a, &b)| a * b).sum::<T>();
        }
    }
    acc
}

/// One output plane: o = dw(xp) with the K×K filter `wk` (o must be zeroed).
pub(crate) fn plane_forward<T: Float>(o: &mut [T], xp: &[T], wk: &[T], g: &Geom) {
    for kh in 0..g.k {
        for kw in 0..g.k {
            tap_forward(o, xp, wk[kh * g.k + kw], g, kh, kw);
        }
    }
}

/// One input-gradient plane: gx += dwᵀ(gp) (gx must be zeroed for a fresh gradient).
pub(crate) fn plane_grad_input<T: Float>(gx: &mut [T], gp: &[T], wk: &[T], g: &Geom) {
    for kh in 0..g.k {
        for kw in 0..g.k {
            tap_backward(gx, gp, wk[kh * g.k + kw], g, kh, kw);
        }
    }
}

/// Adds one plane's contribution to the K×K filter gradient `gw`.
pub(crate) fn plane_grad_weight<T: Float>(gw: &mut [T], xp: &[T], gp: &[T], g: &Geom) {
    for kh in 0..g.k {
        for kw in 0..g.k {
            gw[kh * g.k + kw] += tap_dot(xp, gp, g, kh, kw);
        }
    }
}

pub(crate) fn forward<T: Float>(x: &[T], w: &[T], g: &Geom) -> Vec<T> {
    let (ip, op, kk) = (g.h * g.w, g.oh * g.ow, g.k * g.k);
    let mut out = vec![T::zero(); g.planes * op];
    let tp = g.task_planes();
    out.par_chunks_mut(op * tp).enumerate().for_each(|(t, chunk)| {
        for (j, o) in chunk.chunks_mut(op).enumerate() {
            let plane = t * tp + j;
            let c = plane % g.c;
            plane_forward(o, &x[plane * ip..(plane + 1) * ip], &w[c * kk..(c + 1) * kk], g);
        }
    });
    out
}

pub(crate) fn grad_input<T: Float>(gy: &[T], w: &[T], g: &Geom) -> Vec<T> {
    let (ip, op, kk) = (g.h * g.w, g.oh * g.ow, g.k * g.k);
    let mut gx = vec![T::zero(); g.planes * ip];
    let tp = g.task_planes();
    gx.par_chunks_mut(ip * tp).enumerate().for_each(|(t, chunk)| {
        for (j, xg) in chunk.chunks_mut(ip).enumerate() {
            let plane = t * tp + j;
            let c = plane % g.c;
            plane_grad_input(xg, &gy[plane * op..(plane + 1) * op], &w[c * kk..(c + 1) * kk], g);
        }
    });
    gx
}

pub(crate) fn grad_weight<T: Float>(x: &[T], gy: &[T], g: &Geom) -> Vec<T> {
    let (ip, op, kk) = (g.h * g.w, g.oh * g.ow, g.k * g.k);
    // Per-plane partial sums in parallel, then a fixed-order reduction over the batch so the
    // result does not depend on scheduling.
    let mut partial = vec![T::zero(); g.planes * kk];
    let tp = g.task_planes();
    partial.par_chunks_mut(kk * tp).enumerate().for_each(|(t, chunk)| {
        for (j, pw) in chunk.chunks_mut(kk).enumerate() {
            let plane = t * tp + j;
            plane_grad_weight(pw, &x[plane * ip..(plane + 1) * ip], &gy[plane * op..(plane + 1) * op], g);
        }
    });
    let mut gw = vec![T::zero(); g.c * kk];
    for (plane, pw) in partial.chunks(kk).enumerate() {
        let c = plane % g.c;
        for (a, &b) in gw[c * kk..(c + 1) * kk].iter_mut().zip(pw) {
            *a += b;
        }
    }
    gw
}

/// The differentiable op: (x, w) → y.
struct DepthwiseConv2d(DwParams);

impl CustomOp2 for DepthwiseConv2d {
    fn name(&self) -> &'static str {
        "depthwise-conv2d"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = Geom::new(l1.dims(), l2.dims(), self.0)?;
        fn run<T: Float>(s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, g: &Geom) -> Result<CpuStorage> {
            let x = slice::<T>(s1, l1, "depthwise-conv2d")?;
            let w = slice::<T>(s2, l2, "depthwise-conv2d")?;
            Ok(T::to_cpu_storage_owned(forward(x, w, g)))
        }
        Ok((dispatch_float!("depthwise-conv2d", s1, run(s1, l1, s2, l2, &g))?, g.out_shape()))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, gy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = Geom::new(x.dims(), w.dims(), self.0)?;
        let gy = gy.contiguous()?;
        let gx = if x.track_op() { Some(gy.apply_op2_no_bwd(w, &DwGradInput(g))?) } else { None };
        let gw = if w.track_op() { Some(x.apply_op2_no_bwd(&gy, &DwGradWeight(g))?) } else { None };
        Ok((gx, gw))
    }
}

/// (gy, w) → gx.
struct DwGradInput(Geom);

impl CustomOp2 for DwGradInput {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-grad-input"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        fn run<T: Float>(s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, g: &Geom) -> Result<CpuStorage> {
            let gy = slice::<T>(s1, l1, "depthwise-conv2d-grad-input")?;
            let w = slice::<T>(s2, l2, "depthwise-conv2d-grad-input")?;
            Ok(T::to_cpu_storage_owned(grad_input(gy, w, g)))
        }
        let g = &self.0;
        Ok((dispatch_float!("depthwise-conv2d-grad-input", s1, run(s1, l1, s2, l2, g))?, g.in_shape()))
    }
}

/// (x, gy) → gw.
struct DwGradWeight(Geom);

impl CustomOp2 for DwGradWeight {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-grad-weight"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        fn run<T: Float>(s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, g: &Geom) -> Result<CpuStorage> {
            let x = slice::<T>(s1, l1, "depthwise-conv2d-grad-weight")?;
            let gy = slice::<T>(s2, l2, "depthwise-conv2d-grad-weight")?;
            Ok(T::to_cpu_storage_owned(grad_weight(x, gy, g)))
        }
        let g = &self.0;
        Ok((dispatch_float!("depthwise-conv2d-grad-weight", s1, run(s1, l1, s2, l2, g))?, (g.c, 1, g.k, g.k).into()))
    }
}

/// Depthwise convolution of `x` (B, C, H, W) with `w` (C, 1, K, K), differentiable in both.
pub fn depthwise_conv2d(x: &Tensor, w: &Tensor, p: DwParams) -> Result<Tensor> {
    Geom::new(x.dims(), w.dims(), p)?;
    x.contiguous()?.apply_op2(&w.contiguous()?, DepthwiseConv2d(p))
}
