//! Depthwise convolution followed by a 1×1 convolution, fused into one differentiable op:
//! the first half of every sep_conv/dil_conv stage. The depthwise output never becomes a
//! tensor: the forward keeps it in a per-task buffer, the backward recomputes it (K² multiply-
//! adds per pixel, cheaper than storing and re-reading it) and keeps its gradient in cache.
//!
//! `relu_dw_pw` is the same with ReLU applied to the input as the depthwise kernel reads it
//! (every sep_conv/dil_conv stage starts with ReLU): the ReLU output never becomes a tensor
//! either, and its backward is a mask applied to the input gradient as it is written.
//!
//! Shapes: x (B, C, H, W), w_dw (C, 1, K, K), w_pw (Co, C, 1, 1) → y (B, Co, Ho, Wo).

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::depthwise::{plane_backward, plane_forward, DwParams, Geom, Scratch};
use super::kernel::{cpu_tensor, fixed_groups, matmul, output_vec, slice, with_slices, Float, Mat};
use super::pointwise::sum_partials;
use crate::{dispatch_dtype, dispatch_float};

#[derive(Debug, Clone, Copy)]
pub(crate) struct SepGeom {
    pub dw: Geom,
    pub b: usize,
    pub co: usize,
}

impl SepGeom {
    pub fn new(x: &[usize], w_dw: &[usize], w_pw: &[usize], p: DwParams) -> Result<Self> {
        let dw = Geom::new(x, w_dw, p)?;
        let co = match w_pw {
            &[co, ci, 1, 1] if ci == dw.c => co,
            _ => bail!("dw_pw: pointwise weight {w_pw:?} does not fit {} channels", dw.c),
        };
        Ok(Self { dw, b: dw.planes / dw.c, co })
    }

    pub fn in_item(&self) -> usize {
        self.dw.c * self.dw.h * self.dw.w
    }

    pub fn plane(&self) -> usize {
        self.dw.oh * self.dw.ow
    }

    /// t = dw(x_b) (or dw(ReLU(x_b))) for one batch item (C × P).
    fn depthwise<T: Float>(&self, xb: &[T], w_dw: &[T], t: &mut [T], sc: &mut Scratch<T>, relu: bool) {
        let (ip, p, kk) = (self.dw.h * self.dw.w, self.plane(), self.dw.k * self.dw.k);
        for c in 0..self.dw.c {
            let (tp, xp, wk) = (&mut t[c * p..(c + 1) * p], &xb[c * ip..(c + 1) * ip], &w_dw[c * kk..(c + 1) * kk]);
            plane_forward(tp, xp, wk, &self.dw, sc, relu);
        }
    }
}

pub(crate) fn forward<T: Float>(x: &[T], w_dw: &[T], w_pw: &[T], g: &SepGeom, relu: bool) -> Vec<T> {
    let (p, c) = (g.plane(), g.dw.c);
    // SAFETY: each batch item's (Co × P) block is one product written with accumulate off,
    // which overwrites all of it; the blocks tile y.
    let mut y = unsafe { output_vec::<T>(g.b * g.co * p) };
    y.par_chunks_mut(g.co * p).enumerate().for_each_init(
        || (vec![T::zero(); c * p], Scratch::new(&g.dw)),
        |(t, sc), (b, yb)| {
            g.depthwise(&x[b * g.in_item()..(b + 1) * g.in_item()], w_dw, t, sc, relu);
            matmul(g.co, p, c, yb, false, Mat::rows(w_pw, c), Mat::rows(t, p));
        },
    );
    y
}

pub(crate) type Grads<T> = (Option<Vec<T>>, Option<Vec<T>>, Option<Vec<T>>);

#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<T: Float>(
    x: &[T],
    w_dw: &[T],
    w_pw: &[T],
    gy: &[T],
    g: &SepGeom,
    want: [bool; 3],
    relu: bool,
) -> Grads<T> {
    let (p, c, kk, ii) = (g.plane(), g.dw.c, g.dw.k * g.dw.k, g.in_item());
    let ip = g.dw.h * g.dw.w;
    let groups = fixed_groups(g.b, 16);
    // SAFETY: the groups' batch ranges tile gx, and plane_backward overwrites every pixel of
    // every channel plane of every item in its range (merge writes the whole plane).
    let mut gx = if want[0] { unsafe { output_vec::<T>(g.b * ii) } } else { Vec::new() };
    // Carve the input gradient into the groups' batch ranges.
    let mut slots: Vec<&mut [T]> = Vec::with_capacity(groups.len());
    let mut rest: &mut [T] = &mut gx;
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
            let mut sc = Scratch::new(&g.dw);
            for (n, b) in range.enumerate() {
                let xb = &x[b * ii..(b + 1) * ii];
                let gyb = &gy[b * g.co * p..(b + 1) * g.co * p];
                if want[2] {
                    g.depthwise(xb, w_dw, &mut t, &mut sc, relu);
                    matmul(g.co, c, p, &mut gpw, n > 0, Mat::rows(gyb, p), Mat::transposed(&t, p));
                }
                matmul(c, p, g.co, &mut gt, false, Mat::transposed(w_pw, c), Mat::rows(gyb, p));
                for ch in 0..c {
                    let gtp = &gt[ch * p..(ch + 1) * p];
                    let gxp = if want[0] { Some(&mut gx_slot[n * ii + ch * ip..n * ii + (ch + 1) * ip]) } else { None };
                    let gwp = if want[1] { Some(&mut gdw[ch * kk..(ch + 1) * kk]) } else { None };
                    plane_backward(
                        gxp,
                        gwp,
                        &xb[ch * ip..(ch + 1) * ip],
                        gtp,
                        &w_dw[ch * kk..(ch + 1) * kk],
                        &g.dw,
                        &mut sc,
                        relu,
                    );
                }
            }
            (gdw, gpw)
        })
        .collect();
    let (dws, pws): (Vec<Vec<T>>, Vec<Vec<T>>) = partials.into_iter().unzip();
    (want[0].then_some(gx), want[1].then(|| sum_partials(dws, c * kk)), want[2].then(|| sum_partials(pws, g.co * c)))
}

/// pw(dw(x)), or pw(dw(ReLU(x))) with `relu`.
struct DwPw {
    p: DwParams,
    relu: bool,
}

fn fwd_impl<T: Float>(s: [(&CpuStorage, &Layout); 3], g: &SepGeom, relu: bool) -> Result<CpuStorage> {
    let x = slice::<T>(s[0].0, s[0].1, "dw_pw")?;
    let wd = slice::<T>(s[1].0, s[1].1, "dw_pw")?;
    let wp = slice::<T>(s[2].0, s[2].1, "dw_pw")?;
    Ok(T::to_cpu_storage_owned(forward(x, wd, wp, g, relu)))
}

fn bwd_impl<T: Float>(
    x: &Tensor,
    wd: &Tensor,
    wp: &Tensor,
    gy: &Tensor,
    g: &SepGeom,
    relu: bool,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    with_slices::<T, _>(&[x, wd, wp, gy], |s| {
        let want = [x.track_op(), wd.track_op(), wp.track_op()];
        let (gx, gd, gp) = backward(s[0], s[1], s[2], s[3], g, want, relu);
        Ok((
            gx.map(|v| cpu_tensor(v, x.shape())).transpose()?,
            gd.map(|v| cpu_tensor(v, wd.shape())).transpose()?,
            gp.map(|v| cpu_tensor(v, wp.shape())).transpose()?,
        ))
    })
}

impl CustomOp3 for DwPw {
    fn name(&self) -> &'static str {
        if self.relu {
            "relu_dw_pw"
        } else {
            "dw_pw"
        }
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
        let g = SepGeom::new(l1.dims(), l2.dims(), l3.dims(), self.p)?;
        let out = dispatch_float!("dw_pw", s1, fwd_impl([(s1, l1), (s2, l2), (s3, l3)], &g, self.relu))?;
        Ok((out, (g.b, g.co, g.dw.oh, g.dw.ow).into()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        wd: &Tensor,
        wp: &Tensor,
        _res: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = SepGeom::new(x.dims(), wd.dims(), wp.dims(), self.p)?;
        dispatch_dtype!("dw_pw", x.dtype(), bwd_impl(x, wd, wp, gy, &g, self.relu))
    }
}

/// pw(dw(x)): depthwise convolution with `w_dw` then 1×1 convolution with `w_pw`; with
/// `relu`, pw(dw(ReLU(x))).
pub fn dw_pw(x: &Tensor, w_dw: &Tensor, w_pw: &Tensor, p: DwParams, relu: bool) -> Result<Tensor> {
    SepGeom::new(x.dims(), w_dw.dims(), w_pw.dims(), p)?;
    x.contiguous()?.apply_op3(&w_dw.contiguous()?, &w_pw.contiguous()?, DwPw { p, relu })
}
