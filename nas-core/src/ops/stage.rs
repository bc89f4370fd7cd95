//! One stage of a sep_conv or dil_conv in training as a single differentiable op:
//! [ReLU →] depthwise k×k → 1×1 → batch norm with affine γ, β (batch statistics) → times the
//! drop-path factor m[b] [→ plus `acc`, the other edge into the same node]. The stage leaves
//! one tensor in the autograd graph where the separate ops left two (and their sum a third):
//! candle's backward gives every graph tensor a zeroed gradient buffer and adds into it, so
//! each tensor that is not there saves a clear and an add pass over its size.
//!
//! Shapes: x (B, C, H, W); the parameters travel as one flat tensor
//! [w_dw (C·K²) | w_pw (Co·C) | γ (Co) | β (Co) | m (B)], m without gradient; acc and the
//! output (B, Co, Ho, Wo). The depthwise+pointwise output is kept for the backward pass.

use std::sync::Mutex;

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use super::batch_norm::{bn_affine_backward, bn_affine_forward, sample_factors, BnBatchStats, StatsSlot};
use super::depthwise::DwParams;
use super::kernel::{cpu_tensor, slice, with_slices, Float};
use super::sep::{self, SepGeom};
use crate::{dispatch_dtype, dispatch_float};

#[derive(Debug, Clone, Copy)]
struct Sizes {
    c: usize,
    k: usize,
    co: usize,
    b: usize,
}

impl Sizes {
    fn params_len(&self) -> usize {
        self.c * self.k * self.k + self.co * self.c + 2 * self.co + self.b
    }

    /// (w_dw, w_pw, γ, β, m) of the flat parameter vector.
    fn split<'a, T>(&self, v: &'a [T]) -> [&'a [T]; 5] {
        let (dw, rest) = v.split_at(self.c * self.k * self.k);
        let (pw, rest) = rest.split_at(self.co * self.c);
        let (gamma, rest) = rest.split_at(self.co);
        let (beta, m) = rest.split_at(self.co);
        [dw, pw, gamma, beta, m]
    }
}

struct DwPwBnStage {
    p: DwParams,
    relu: bool,
    eps: f64,
    sizes: Sizes,
    stats: StatsSlot,
    /// The depthwise+pointwise output of the forward pass (the BN input).
    t: Mutex<Option<Tensor>>,
}

impl DwPwBnStage {
    fn geom(&self, x: &[usize]) -> Result<SepGeom> {
        let s = self.sizes;
        SepGeom::new(x, &[s.c, 1, s.k, s.k], &[s.co, s.c, 1, 1], self.p)
    }

    fn fwd<T: Float>(
        &self,
        x: (&CpuStorage, &Layout),
        params: (&CpuStorage, &Layout),
        acc: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.geom(x.1.dims())?;
        let xs = slice::<T>(x.0, x.1, "dw_pw_bn")?;
        let ps = slice::<T>(params.0, params.1, "dw_pw_bn")?;
        if ps.len() != self.sizes.params_len() || g.b != self.sizes.b {
            bail!("dw_pw_bn: {} parameters for {:?}", ps.len(), x.1.dims());
        }
        let [dw, pw, gamma, beta, m] = self.sizes.split(ps);
        let t = sep::forward(xs, dw, pw, &g, self.relu);
        let out_shape: Shape = (g.b, g.co, g.dw.oh, g.dw.ow).into();
        let acc = match acc {
            Some((s, l)) if l.dims() == out_shape.dims() => Some(slice::<T>(s, l, "dw_pw_bn")?),
            Some((_, l)) => bail!("dw_pw_bn: accumulator {:?} does not match the output {:?}", l.dims(), out_shape),
            None => None,
        };
        let (y, st) = bn_affine_forward(&t, (g.b, g.co, g.plane()), gamma, beta, m, acc, self.eps)?;
        self.stats.put(st);
        *self.t.lock().unwrap_or_else(|e| e.into_inner()) = Some(cpu_tensor(t, out_shape.clone())?);
        Ok((T::to_cpu_storage_owned(y), out_shape))
    }

    fn bwd<T: Float>(&self, x: &Tensor, params: &Tensor, gy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = self.geom(x.dims())?;
        let st: BnBatchStats = self.stats.get("dw_pw_bn")?;
        let Some(t) = self.t.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            bail!("dw_pw_bn: backward before forward")
        };
        with_slices::<T, _>(&[x, params, gy, &t], |s| {
            let (xs, ps, gys, ts) = (s[0], s[1], s[2], s[3]);
            let [dw, pw, gamma, _, m] = self.sizes.split(ps);
            let (gt, ggamma, gbeta) =
                bn_affine_backward(ts, (g.b, g.co, g.plane()), gamma, m, gys, &st, self.eps, true);
            let Some(gt) = gt else { bail!("dw_pw_bn: no gradient of the BN input") };
            let (gx, gdw, gpw) = sep::backward(xs, dw, pw, &gt, &g, [x.track_op(), true, true], self.relu);
            let gx = gx.map(|v| cpu_tensor(v, x.shape())).transpose()?;
            let gparams = if params.track_op() {
                let mut v: Vec<T> = Vec::with_capacity(ps.len());
                v.extend(gdw.unwrap_or_default());
                v.extend(gpw.unwrap_or_default());
                v.extend(ggamma.iter().chain(&gbeta).map(|&x| T::from_f64(x)));
                v.resize(ps.len(), T::zero());
                Some(cpu_tensor(v, params.shape())?)
            } else {
                None
            };
            Ok((gx, gparams))
        })
    }
}

impl CustomOp2 for DwPwBnStage {
    fn name(&self) -> &'static str {
        "dw_pw_bn"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch_float!("dw_pw_bn", s1, fwd_none(self, (s1, l1), (s2, l2)))
    }

    fn bwd(&self, x: &Tensor, params: &Tensor, _res: &Tensor, gy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        dispatch_dtype!("dw_pw_bn", x.dtype(), bwd_of(self, x, params, gy))
    }
}

impl CustomOp3 for DwPwBnStage {
    fn name(&self) -> &'static str {
        "dw_pw_bn_acc"
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
        dispatch_float!("dw_pw_bn", s1, fwd_acc(self, (s1, l1), (s2, l2), (s3, l3)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        acc: &Tensor,
        _res: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (gx, gp) = dispatch_dtype!("dw_pw_bn", x.dtype(), bwd_of(self, x, params, gy))?;
        Ok((gx, gp, acc.track_op().then(|| gy.clone())))
    }
}

fn fwd_none<T: Float>(
    op: &DwPwBnStage,
    x: (&CpuStorage, &Layout),
    p: (&CpuStorage, &Layout),
) -> Result<(CpuStorage, Shape)> {
    op.fwd::<T>(x, p, None)
}

fn fwd_acc<T: Float>(
    op: &DwPwBnStage,
    x: (&CpuStorage, &Layout),
    p: (&CpuStorage, &Layout),
    acc: (&CpuStorage, &Layout),
) -> Result<(CpuStorage, Shape)> {
    op.fwd::<T>(x, p, Some(acc))
}

fn bwd_of<T: Float>(op: &DwPwBnStage, x: &Tensor, p: &Tensor, gy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
    op.bwd::<T>(x, p, gy)
}

/// The weights of a stage.
pub struct StageWeights<'a> {
    pub w_dw: &'a Tensor,
    pub w_pw: &'a Tensor,
    pub gamma: &'a Tensor,
    pub beta: &'a Tensor,
}

/// `acc + m·BN_γβ(pw(dw([ReLU] x)))` in training mode as one op, with the batch statistics.
pub fn dw_pw_bn_train(
    x: &Tensor,
    w: StageWeights<'_>,
    p: DwParams,
    relu: bool,
    sample_scale: Option<&Tensor>,
    acc: Option<&Tensor>,
    eps: f64,
) -> Result<(Tensor, BnBatchStats)> {
    let (b, c, _, _) = x.dims4()?;
    let (co, k) = (w.w_pw.dim(0)?, w.w_dw.dim(2)?);
    let m = sample_factors(x, sample_scale)?;
    let flat = |t: &Tensor| t.flatten_all();
    let params = Tensor::cat(&[flat(w.w_dw)?, flat(w.w_pw)?, flat(w.gamma)?, flat(w.beta)?, m], 0)?;
    let op =
        DwPwBnStage { p, relu, eps, sizes: Sizes { c, k, co, b }, stats: StatsSlot::default(), t: Mutex::new(None) };
    let stats = op.stats.clone();
    let geom = op.geom(x.dims())?;
    if params.elem_count() != op.sizes.params_len() || geom.co != co {
        bail!("dw_pw_bn: weights {:?}, {:?} do not fit input {:?}", w.w_dw.dims(), w.w_pw.dims(), x.dims());
    }
    let x = x.contiguous()?;
    let y = match acc {
        Some(a) => x.apply_op3(&params, &a.contiguous()?, op)?,
        None => x.apply_op2(&params, op)?,
    };
    Ok((y, stats.get("dw_pw_bn")?))
}
