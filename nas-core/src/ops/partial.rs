//! The output side of a PC-DARTS partial-channel edge as one op: given the op mixture y on the
//! first C/K channels and the edge input x, builds shuffle(cat[y, bypass(x[:, C/K:])], K)
//! where the bypass is the identity, or 2×2 max pooling with stride 2 on reducing edges
//! (floor mode; ties go to the first maximum in row-major order, as in PyTorch). One pass
//! over memory instead of a narrow, a pooling, a concat and a transposed copy, and a backward
//! pass that writes both gradients directly.
//!
//! Shapes: y (B, C/K, Ho, Wo), x (B, C, H, W) with Ho = H, Wo = W (stride 1) or Ho = ⌊H/2⌋,
//! Wo = ⌊W/2⌋ (stride 2); output (B, C, Ho, Wo). Concatenated channel q = g·(C/K) + i goes to
//! output channel i·K + g.

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::kernel::{cpu_tensor, slice, with_slices, Float};
use crate::{dispatch_dtype, dispatch_float};

#[derive(Debug, Clone, Copy)]
struct Geom {
    b: usize,
    c: usize,
    ca: usize,
    k: usize,
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
    stride: usize,
}

impl Geom {
    fn new(y: &[usize], x: &[usize], k: usize, stride: usize) -> Result<Self> {
        let &[b, c, h, w] = x else { bail!("pc_merge: x must be (B, C, H, W), got {x:?}") };
        if k == 0 || c % k != 0 {
            bail!("pc_merge: K={k} must divide C={c}");
        }
        let ca = c / k;
        let (ho, wo) = match stride {
            1 => (h, w),
            2 => (h / 2, w / 2),
            s => bail!("pc_merge: stride {s} (expected 1 or 2)"),
        };
        if y != [b, ca, ho, wo] {
            bail!("pc_merge: y is {y:?}, expected {:?} for x {x:?} with K={k}, stride {stride}", [b, ca, ho, wo]);
        }
        Ok(Self { b, c, ca, k, h, w, ho, wo, stride })
    }

    /// Concatenated channel feeding output channel o.
    fn source(&self, o: usize) -> usize {
        (o % self.k) * (self.c / self.k) + o / self.k
    }

    /// Offset in an x plane of the maximum of the 2×2 window of output pixel (i, j).
    fn argmax<T: Float>(&self, xp: &[T], i: usize, j: usize) -> usize {
        let mut best = 2 * i * self.w + 2 * j;
        for (di, dj) in [(0, 1), (1, 0), (1, 1)] {
            let at = (2 * i + di) * self.w + 2 * j + dj;
            if xp[at] > xp[best] {
                best = at;
            }
        }
        best
    }
}

fn forward<T: Float>(y: &[T], x: &[T], g: &Geom) -> Vec<T> {
    let (po, pi) = (g.ho * g.wo, g.h * g.w);
    let mut out = vec![T::zero(); g.b * g.c * po];
    out.par_chunks_mut(po).enumerate().for_each(|(plane, op)| {
        let (b, q) = (plane / g.c, g.source(plane % g.c));
        if q < g.ca {
            op.copy_from_slice(&y[(b * g.ca + q) * po..][..po]);
        } else {
            let xp = &x[(b * g.c + q) * pi..][..pi];
            if g.stride == 1 {
                op.copy_from_slice(xp);
            } else {
                for i in 0..g.ho {
                    for j in 0..g.wo {
                        op[i * g.wo + j] = xp[g.argmax(xp, i, j)];
                    }
                }
            }
        }
    });
    out
}

fn backward<T: Float>(x: &[T], gout: &[T], g: &Geom, want_y: bool, want_x: bool) -> (Vec<T>, Vec<T>) {
    let (po, pi) = (g.ho * g.wo, g.h * g.w);
    let inverse = |q: usize| (q % (g.c / g.k)) * g.k + q / (g.c / g.k);
    let mut gy = vec![T::zero(); if want_y { g.b * g.ca * po } else { 0 }];
    gy.par_chunks_mut(po).enumerate().for_each(|(plane, gp)| {
        let (b, q) = (plane / g.ca, plane % g.ca);
        gp.copy_from_slice(&gout[(b * g.c + inverse(q)) * po..][..po]);
    });
    let mut gx = vec![T::zero(); if want_x { g.b * g.c * pi } else { 0 }];
    gx.par_chunks_mut(pi).enumerate().for_each(|(plane, gp)| {
        let (b, q) = (plane / g.c, plane % g.c);
        if q < g.ca {
            return;
        }
        let src = &gout[(b * g.c + inverse(q)) * po..][..po];
        if g.stride == 1 {
            gp.copy_from_slice(src);
        } else {
            let xp = &x[(b * g.c + q) * pi..][..pi];
            for i in 0..g.ho {
                for j in 0..g.wo {
                    gp[g.argmax(xp, i, j)] = src[i * g.wo + j];
                }
            }
        }
    });
    (gy, gx)
}

struct PcMerge {
    k: usize,
    stride: usize,
}

fn fwd_impl<T: Float>(s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, g: &Geom) -> Result<CpuStorage> {
    Ok(T::to_cpu_storage_owned(forward(slice::<T>(s1, l1, "pc_merge")?, slice::<T>(s2, l2, "pc_merge")?, g)))
}

fn bwd_impl<T: Float>(y: &Tensor, x: &Tensor, gout: &Tensor, g: &Geom) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let (want_y, want_x) = (y.track_op(), x.track_op());
    with_slices::<T, _>(&[x, gout], |s| {
        let (gy, gx) = backward(s[0], s[1], g, want_y, want_x);
        let gy = if want_y { Some(cpu_tensor(gy, y.shape())?) } else { None };
        let gx = if want_x { Some(cpu_tensor(gx, x.shape())?) } else { None };
        Ok((gy, gx))
    })
}

impl CustomOp2 for PcMerge {
    fn name(&self) -> &'static str {
        "pc_merge"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = Geom::new(l1.dims(), l2.dims(), self.k, self.stride)?;
        Ok((dispatch_float!("pc_merge", s1, fwd_impl(s1, l1, s2, l2, &g))?, (g.b, g.c, g.ho, g.wo).into()))
    }

    fn bwd(&self, y: &Tensor, x: &Tensor, _res: &Tensor, gout: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = Geom::new(y.dims(), x.dims(), self.k, self.stride)?;
        dispatch_dtype!("pc_merge", y.dtype(), bwd_impl(y, x, gout, &g))
    }
}

/// shuffle(cat[y, bypass(x[:, C/K:])], K) on CPU tensors.
pub fn pc_merge(y: &Tensor, x: &Tensor, k: usize, stride: usize) -> Result<Tensor> {
    Geom::new(y.dims(), x.dims(), k, stride)?;
    y.contiguous()?.apply_op2(&x.contiguous()?, PcMerge { k, stride })
}
