//! Depthwise 2-D convolution (`groups == channels`, one k×k filter per channel), the core of
//! DARTS' sep_conv and dil_conv ops, with stride, zero padding and dilation.
//!
//! Shapes: input (B, C, H, W), weight (C, 1, K, K) as in PyTorch, output (B, C, Ho, Wo) with
//! Ho = (H + 2p − d(K−1) − 1)/s + 1. The CPU kernels run rayon tasks over groups of
//! (batch, channel) planes; within a plane every tap is one long multiply-add in the padded,
//! stride-phased layout of `plane::Window`.

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::kernel::{cpu_tensor, output_vec, planes_per_task, slice, task_chunks, with_slices, Float};
use super::plane::Window;
use super::simd::{dot, mask_positive, taps_into};
use crate::{dispatch_dtype, dispatch_float};

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
    pub win: Window,
}

impl Geom {
    pub fn new(x: &[usize], wt: &[usize], p: DwParams) -> Result<Self> {
        let &[b, c, h, w] = x else { bail!("depthwise_conv2d: input must be (B, C, H, W), got {x:?}") };
        let &[wc, one, k, k2] = wt else { bail!("depthwise_conv2d: weight must be (C, 1, K, K), got {wt:?}") };
        if wc != c || one != 1 || k != k2 || k == 0 {
            bail!("depthwise_conv2d: weight {wt:?} does not fit input {x:?}");
        }
        let Some(win) = Window::new(h, w, k, p.stride, p.dilation, p.padding) else {
            bail!(
                "depthwise_conv2d: a {k}x{k} window (stride {}, dilation {}) does not fit {h}x{w} padded by {}",
                p.stride,
                p.dilation,
                p.padding
            )
        };
        Ok(Self { planes: b * c, c, h, w, k, oh: win.oh, ow: win.ow, win })
    }

    fn out_shape(&self) -> Shape {
        (self.planes / self.c, self.c, self.oh, self.ow).into()
    }

    fn in_shape(&self) -> Shape {
        (self.planes / self.c, self.c, self.h, self.w).into()
    }

    fn task_planes(&self) -> usize {
        planes_per_task(self.win.full_len() * self.k * self.k, 1 << 15)
    }
}

/// Per-task buffers in the phase layout: the padded input and the output, the output
/// gradient behind a zero margin (its scratch columns stay zero) and the input gradient, and
/// the tap offsets of both directions.
pub(crate) struct Scratch<T> {
    phases: Vec<T>,
    full: Vec<T>,
    /// `margin` zeros, the output gradient (`full_len`), zeros up to `margin + phase_len`.
    gpad: Vec<T>,
    gphases: Vec<T>,
    /// Start of tap (kh, kw) in `phases`, kh-major (the order of the filter's elements).
    taps: Vec<usize>,
    /// Per phase of the input gradient: the filter indices of the taps that land in it and
    /// where in `gpad` each tap's read starts, so that the input gradient is a gather.
    back: Vec<(Vec<usize>, Vec<usize>)>,
    margin: usize,
    wbuf: Vec<T>,
}

impl<T: Float> Scratch<T> {
    pub fn new(g: &Geom) -> Self {
        let win = &g.win;
        let taps: Vec<usize> = (0..g.k * g.k).map(|t| win.tap(t / g.k, t % g.k)).collect();
        let pl = win.phase_len();
        let margin = taps.iter().map(|t| t % pl).max().unwrap_or(0);
        let mut back = vec![(Vec::new(), Vec::new()); win.phases_len() / pl];
        for (i, &t) in taps.iter().enumerate() {
            let (idx, offs) = &mut back[t / pl];
            idx.push(i);
            offs.push(margin - t % pl);
        }
        Self {
            phases: vec![T::zero(); win.phases_len()],
            full: vec![T::zero(); win.full_len()],
            gpad: vec![T::zero(); margin + pl],
            gphases: vec![T::zero(); win.phases_len()],
            taps,
            back,
            margin,
            wbuf: Vec::with_capacity(g.k * g.k),
        }
    }
}

/// One output plane o (oh×ow) = dw(xp) with the K×K filter `wk`, or dw(ReLU(xp)) when `relu`.
pub(crate) fn plane_forward<T: Float>(o: &mut [T], xp: &[T], wk: &[T], g: &Geom, sc: &mut Scratch<T>, relu: bool) {
    let win = &g.win;
    if relu {
        win.split_relu(xp, &mut sc.phases);
    } else {
        win.split(xp, &mut sc.phases);
    }
    taps_into(&mut sc.full, &sc.phases, &sc.taps, wk);
    win.extract(&sc.full, o);
}

/// Backward of one plane: the input gradient gx (h×w, overwritten) and/or the filter
/// gradient gw (K×K, accumulated) from the output gradient gp (oh×ow). With `relu` the plane
/// was dw(ReLU(xp)): gx is masked by xp > 0 and gw sees ReLU(xp).
#[allow(clippy::too_many_arguments)]
pub(crate) fn plane_backward<T: Float>(
    gx: Option<&mut [T]>,
    gw: Option<&mut [T]>,
    xp: &[T],
    gp: &[T],
    wk: &[T],
    g: &Geom,
    sc: &mut Scratch<T>,
    relu: bool,
) {
    let win = &g.win;
    let (n, m, pl) = (win.full_len(), sc.margin, win.phase_len());
    win.embed(gp, &mut sc.gpad[m..m + n]);
    if let Some(gx) = gx {
        // gx[j] = Σ_t w_t·gfull[j − tap_t] per phase: the transposed convolution as a gather,
        // the taps summed in filter order as the scatter (zeroed buffer, axpy per tap) would.
        for (q, (idx, offs)) in sc.back.iter().enumerate() {
            let dst = &mut sc.gphases[q * pl..(q + 1) * pl];
            sc.wbuf.clear();
            sc.wbuf.extend(idx.iter().map(|&i| wk[i]));
            taps_into(dst, &sc.gpad, offs, &sc.wbuf);
        }
        win.merge(&sc.gphases, gx);
        if relu {
            mask_positive(gx, xp);
        }
    }
    if let Some(gw) = gw {
        if relu {
            win.split_relu(xp, &mut sc.phases);
        } else {
            win.split(xp, &mut sc.phases);
        }
        let gfull = &sc.gpad[m..m + n];
        for (i, &t) in sc.taps.iter().enumerate() {
            gw[i] += dot(gfull, &sc.phases[t..t + n]);
        }
    }
}

pub(crate) fn forward<T: Float>(x: &[T], w: &[T], g: &Geom) -> Vec<T> {
    let (ip, op, kk) = (g.h * g.w, g.oh * g.ow, g.k * g.k);
    // SAFETY: the planes tile out and extract writes every output pixel of each.
    let mut out = unsafe { output_vec::<T>(g.planes * op) };
    let tp = g.task_planes();
    out.par_chunks_mut(op * tp).enumerate().for_each_init(
        || Scratch::new(g),
        |sc, (t, chunk)| {
            for (j, o) in chunk.chunks_mut(op).enumerate() {
                let plane = t * tp + j;
                let c = plane % g.c;
                plane_forward(o, &x[plane * ip..(plane + 1) * ip], &w[c * kk..(c + 1) * kk], g, sc, false);
            }
        },
    );
    out
}

/// Input and/or filter gradients; the filter gradient sums per-plane partials in a fixed
/// order, so it does not depend on scheduling.
pub(crate) fn backward<T: Float>(
    x: &[T],
    w: &[T],
    gy: &[T],
    g: &Geom,
    want_x: bool,
    want_w: bool,
) -> (Option<Vec<T>>, Option<Vec<T>>) {
    let (ip, op, kk) = (g.h * g.w, g.oh * g.ow, g.k * g.k);
    let mut gx = vec![T::zero(); if want_x { g.planes * ip } else { 0 }];
    let mut partial = vec![T::zero(); if want_w { g.planes * kk } else { 0 }];
    let tp = g.task_planes();
    let tasks = g.planes.div_ceil(tp);
    let gx_chunks = task_chunks(&mut gx, ip * tp, tasks);
    let pw_chunks = task_chunks(&mut partial, kk * tp, tasks);
    let jobs: Vec<_> = gx_chunks.into_iter().zip(pw_chunks).enumerate().map(|(t, (a, b))| (t, a, b)).collect();
    jobs.into_par_iter().for_each_init(
        || Scratch::new(g),
        |sc, (t, mut gxc, mut pwc)| {
            for j in 0..tp {
                let plane = t * tp + j;
                if plane >= g.planes {
                    break;
                }
                let c = plane % g.c;
                let gxp = gxc.as_deref_mut().map(|s| &mut s[j * ip..(j + 1) * ip]);
                let pwp = pwc.as_deref_mut().map(|s| &mut s[j * kk..(j + 1) * kk]);
                let (xp, gp) = (&x[plane * ip..(plane + 1) * ip], &gy[plane * op..(plane + 1) * op]);
                plane_backward(gxp, pwp, xp, gp, &w[c * kk..(c + 1) * kk], g, sc, false);
            }
        },
    );
    let gw = want_w.then(|| {
        let mut gw = vec![T::zero(); g.c * kk];
        for (plane, pw) in partial.chunks(kk).enumerate() {
            let c = plane % g.c;
            for (a, &b) in gw[c * kk..(c + 1) * kk].iter_mut().zip(pw) {
                *a += b;
            }
        }
        gw
    });
    (want_x.then_some(gx), gw)
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
        fn run<T: Float>(x: &Tensor, w: &Tensor, gy: &Tensor, g: &Geom) -> Result<(Option<Tensor>, Option<Tensor>)> {
            with_slices::<T, _>(&[x, w, gy], |s| {
                let (gx, gw) = backward(s[0], s[1], s[2], g, x.track_op(), w.track_op());
                Ok((
                    gx.map(|v| cpu_tensor(v, g.in_shape())).transpose()?,
                    gw.map(|v| cpu_tensor(v, w.shape())).transpose()?,
                ))
            })
        }
        dispatch_dtype!("depthwise-conv2d", x.dtype(), run(x, w, gy, &g))
    }
}

/// Depthwise convolution of `x` (B, C, H, W) with `w` (C, 1, K, K), differentiable in both.
pub fn depthwise_conv2d(x: &Tensor, w: &Tensor, p: DwParams) -> Result<Tensor> {
    Geom::new(x.dims(), w.dims(), p)?;
    x.contiguous()?.apply_op2(&w.contiguous()?, DepthwiseConv2d(p))
}
