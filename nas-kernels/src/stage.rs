//! One stage of a sep_conv or dil_conv in training as a single differentiable op:
//! [ReLU →] depthwise k×k → 1×1 → batch norm (batch statistics, affine γ, β or none) → times
//! the drop-path factor m[b] [→ plus `acc`, the other edge into the same node]. The stage
//! leaves one tensor in the autograd graph where the separate ops left two (and their sum a
//! third): candle's backward gives every graph tensor a zeroed gradient buffer and adds into
//! it, so each tensor that is not there saves a clear and an add pass over its size (and, on
//! CUDA, two kernel launches).
//!
//! Shapes: x (B, C, H, W); the weights travel as one flat tensor
//! [w_dw (C·K²) | w_pw (Co·C) | γ (Co) | β (Co)] (γ, β only with `affine`); m (B,) has no
//! gradient; acc and the output (B, Co, Ho, Wo). The BN input is kept for the backward pass
//! (and on CUDA the depthwise output too; the CPU recomputes it).

use std::sync::Mutex;

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use super::batch_norm::{finish_running, Running, RunningStats, StatsSlot};
use super::cpu;
use super::depthwise::DwParams;
use super::sep::SepGeom;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    pub c: usize,
    pub k: usize,
    pub co: usize,
    pub affine: bool,
}

impl Sizes {
    pub fn params_len(&self) -> usize {
        self.c * self.k * self.k + self.co * self.c + if self.affine { 2 * self.co } else { 0 }
    }

    /// (w_dw, w_pw, γβ) of the flat weight vector; γβ empty without affine.
    pub fn split<'a, T>(&self, v: &'a [T]) -> [&'a [T]; 3] {
        let (dw, rest) = v.split_at(self.c * self.k * self.k);
        let (pw, gb) = rest.split_at(self.co * self.c);
        [dw, pw, gb]
    }
}

#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) struct DwPwBnStage {
    pub p: DwParams,
    pub relu: bool,
    pub eps: f64,
    pub sizes: Sizes,
    /// The drop-path factors m (B,) of x's dtype; None is all ones.
    pub m: Option<Tensor>,
    pub stats: StatsSlot,
    pub running: Option<Running>,
    /// What the forward pass keeps for the backward pass: the BN input, and on CUDA the
    /// depthwise output.
    pub saved: Mutex<Option<Vec<Tensor>>>,
}

impl DwPwBnStage {
    pub fn geom(&self, x: &[usize]) -> Result<SepGeom> {
        let s = self.sizes;
        SepGeom::new(x, &[s.c, 1, s.k, s.k], &[s.co, s.c, 1, 1], self.p)
    }

    pub fn keep(&self, t: Vec<Tensor>) {
        *self.saved.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
    }

    pub fn kept(&self) -> Result<Vec<Tensor>> {
        match self.saved.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            Some(t) => Ok(t),
            None => bail!("dw_pw_bn: backward before forward"),
        }
    }

    fn backward(&self, x: &Tensor, params: &Tensor, gy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            return super::cuda::stage::glue::backward(self, x, params, gy);
        }
        cpu::stage::backward(self, x, params, gy)
    }
}

impl CustomOp2 for DwPwBnStage {
    fn name(&self) -> &'static str {
        "dw_pw_bn"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        cpu::stage::forward(self, (s1, l1), (s2, l2), None)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::stage::glue::forward(self, (s1, l1), (s2, l2), None)
    }

    fn bwd(&self, x: &Tensor, params: &Tensor, _res: &Tensor, gy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        self.backward(x, params, gy)
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
        cpu::stage::forward(self, (s1, l1), (s2, l2), Some((s3, l3)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::stage::glue::forward(self, (s1, l1), (s2, l2), Some((s3, l3)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        acc: &Tensor,
        _res: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (gx, gp) = self.backward(x, params, gy)?;
        Ok((gx, gp, acc.track_op().then(|| gy.clone())))
    }
}

/// The weights of a stage: one flat tensor [w_dw | w_pw | γ | β] (γ, β only when `affine`),
/// with the depthwise kernel size `k` and the output channels `co`.
pub struct StageWeights<'a> {
    pub flat: &'a Tensor,
    pub k: usize,
    pub co: usize,
    pub affine: bool,
}

/// `acc + m·BN(pw(dw([ReLU] x)))` in training mode as one op, updating `running`.
#[allow(clippy::too_many_arguments)]
pub fn dw_pw_bn_train(
    x: &Tensor,
    w: StageWeights<'_>,
    p: DwParams,
    relu: bool,
    sample_scale: Option<&Tensor>,
    acc: Option<&Tensor>,
    eps: f64,
    running: Option<RunningStats<'_>>,
) -> Result<Tensor> {
    let (b, c, _, _) = x.dims4()?;
    let sizes = Sizes { c, k: w.k, co: w.co, affine: w.affine };
    if w.flat.rank() != 1 || w.flat.elem_count() != sizes.params_len() {
        bail!("dw_pw_bn: {:?} weights for {c} channels, k={} and {} outputs", w.flat.dims(), w.k, w.co);
    }
    let m = match sample_scale {
        Some(m) if m.elem_count() == b => Some(m.detach().to_dtype(x.dtype())?.contiguous()?),
        Some(m) => bail!("dw_pw_bn: {} sample factors for a batch of {b}", m.elem_count()),
        None => None,
    };
    let stats = StatsSlot::default();
    let op = DwPwBnStage {
        p,
        relu,
        eps,
        sizes,
        m,
        stats: stats.clone(),
        running: Running::new(running),
        saved: Mutex::new(None),
    };
    let out = op.geom(x.dims())?.out_shape();
    let x = x.contiguous()?;
    let y = match acc {
        Some(a) if a.shape() == &out => x.apply_op3(&w.flat.contiguous()?, &a.contiguous()?, op)?,
        Some(a) => bail!("dw_pw_bn: accumulator {:?} does not match the output {:?}", a.dims(), out),
        None => x.apply_op2(&w.flat.contiguous()?, op)?,
    };
    finish_running(&x, &stats, running, "dw_pw_bn")?;
    Ok(y)
}
