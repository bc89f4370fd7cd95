//! CPU kernels of the depthwise convolution: rayon tasks over groups of (batch, channel)
//! planes; within a plane every tap is one long multiply-add in the padded, stride-phased
//! layout of `plane::Window`.

use candle_core::{bail, Result};
use rayon::prelude::*;

use super::plane::Window;
use super::simd::{dots_acc, mask_relu, taps_into};
use super::{planes_per_task, task_chunks, Float, Fresh, Slot};
use crate::depthwise::DwGeom;

/// The shapes (the convolution's own, `DwGeom`, read through `Deref`) and the plane layout the
/// kernels work in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geom {
    conv: DwGeom,
    pub planes: usize,
    pub win: Window,
}

impl std::ops::Deref for Geom {
    type Target = DwGeom;

    #[inline]
    fn deref(&self) -> &DwGeom {
        &self.conv
    }
}

impl Geom {
    pub fn new(g: &DwGeom) -> Result<Self> {
        let Some(win) = Window::new(g.h, g.w, g.k, g.p.stride, g.p.dilation, g.p.padding) else {
            bail!("depthwise_conv2d: no plane layout for {g:?}")
        };
        // The layout's output size is the convolution's (the same formula).
        debug_assert_eq!((win.oh, win.ow), (g.oh, g.ow));
        Ok(Self { conv: *g, planes: g.b * g.c, win })
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

/// One output plane o (oh×ow) = dw(xp) with the K×K filter `wk`, or dw(ReLU(xp)) when `relu`;
/// every element of `o` is written.
pub(crate) fn plane_forward<T: Float, S: Slot<T>>(
    o: &mut [S],
    xp: &[T],
    wk: &[T],
    g: &Geom,
    sc: &mut Scratch<T>,
    relu: bool,
) {
    let win = &g.win;
    if relu {
        win.split_relu(xp, &mut sc.phases);
    } else {
        win.split(xp, &mut sc.phases);
    }
    taps_into(&mut sc.full, &sc.phases, &sc.taps, wk);
    win.extract(&sc.full, o);
}

/// Backward of one plane: the input gradient gx (h×w, every element written) and/or the
/// filter gradient gw (K×K, accumulated) from the output gradient gp (oh×ow), and with `t`
/// the forward's output plane recomputed (oh×ow, every element written) from the same split
/// of the input. With `relu` the plane was dw(ReLU(xp)): gx is zeroed where xp ≤ 0 (a NaN
/// passes, as in PyTorch) and gw and t see ReLU(xp).
#[allow(clippy::too_many_arguments)]
pub(crate) fn plane_backward<T: Float, S: Slot<T>>(
    gx: Option<&mut [S]>,
    gw: Option<&mut [T]>,
    t: Option<&mut [T]>,
    xp: &[T],
    gp: &[T],
    wk: &[T],
    g: &Geom,
    sc: &mut Scratch<T>,
    relu: bool,
) {
    let win = &g.win;
    let (n, m, pl) = (win.full_len(), sc.margin, win.phase_len());
    if gw.is_some() || t.is_some() {
        if relu {
            win.split_relu(xp, &mut sc.phases);
        } else {
            win.split(xp, &mut sc.phases);
        }
    }
    if let Some(t) = t {
        taps_into(&mut sc.full, &sc.phases, &sc.taps, wk);
        win.extract(&sc.full, t);
    }
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
            // SAFETY: merge wrote every element of gx.
            mask_relu(unsafe { S::assume_init(gx) }, xp);
        }
    }
    if let Some(gw) = gw {
        dots_acc(gw, &sc.gpad[m..m + n], &sc.phases, &sc.taps);
    }
}

pub(crate) fn forward<T: Float>(x: &[T], w: &[T], g: &Geom) -> Vec<T> {
    let (ip, op, kk) = (g.h * g.w, g.oh * g.ow, g.k * g.k);
    let mut out = Fresh::new(g.planes * op);
    let tp = g.task_planes();
    out.slots().par_chunks_mut(op * tp).enumerate().for_each_init(
        || Scratch::new(g),
        |sc, (t, chunk)| {
            for (j, o) in chunk.chunks_mut(op).enumerate() {
                let plane = t * tp + j;
                let c = plane % g.c;
                plane_forward(o, &x[plane * ip..(plane + 1) * ip], &w[c * kk..(c + 1) * kk], g, sc, false);
            }
        },
    );
    // SAFETY: the planes tile out and plane_forward writes every output pixel of each.
    unsafe { out.assume_init() }
}

/// Input and/or filter gradients; the filter gradient sums per-plane partials in a fixed
/// order, so it does not depend on scheduling.
pub(crate) fn backward<T: Float>(
    x: &[T],
    w: &[T],
    gy: &[T],
    g: &Geom,
    [want_x, want_w]: [bool; 2],
) -> [Option<Vec<T>>; 2] {
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
                plane_backward(gxp, pwp, None, xp, gp, &w[c * kk..(c + 1) * kk], g, sc, false);
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
    [want_x.then_some(gx), gw]
}
