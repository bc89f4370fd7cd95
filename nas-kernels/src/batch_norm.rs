//! Batch normalisation in training mode and the channel affine map, as differentiable ops.
//!
//! `batch_norm_train` normalises each channel of x (B, C, H, W) with its batch mean and biased
//! variance, x̂ = (x − μ)/√(σ² + ε); its backward is the closed form
//! ∂x = (1/√(σ²+ε)) · (∂x̂ − mean(∂x̂) − x̂ · mean(∂x̂ · x̂)). `batch_norm_affine_train` adds the
//! affine part and a per-sample factor without gradient (drop path): y = m[b]·(γ·x̂ + β), one
//! statistics pass and one writing pass each way where three ops take three of each.
//! `channel_affine` is y = x·scale[c] + shift[c] (BN's affine part, and the whole of BN in
//! evaluation mode).
//!
//! Running statistics follow PyTorch: r ← (1 − momentum)·r + momentum·s with the biased batch
//! mean and the unbiased batch variance. On the CPU the kernels hand the batch statistics to
//! the host, which updates the running buffers; on CUDA the statistics kernel updates them in
//! place and nothing leaves the device.

use std::sync::{Arc, Mutex};

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor, Var};

use super::{cpu, BnStats};

/// Batch statistics of one training-mode forward on the host: per-channel mean and biased
/// variance over `count` values each.
#[derive(Debug, Clone, PartialEq)]
pub struct BnBatchStats {
    pub mean: Vec<f64>,
    pub var: Vec<f64>,
    pub count: usize,
}

impl BnBatchStats {
    /// The statistics as (C,) tensors of x's dtype and device.
    pub fn into_tensors(self, x: &Tensor) -> Result<BnStats> {
        let c = self.mean.len();
        let to = |v: Vec<f64>| Tensor::from_vec(v, c, x.device())?.to_dtype(x.dtype());
        Ok(BnStats { mean: to(self.mean)?, var: to(self.var)?, count: self.count })
    }
}

/// (B, C, H·W) of a (B, C, H, W) or (B, C) input.
pub(crate) fn bn_dims(d: &[usize]) -> Result<(usize, usize, usize)> {
    match *d {
        [b, c, h, w] => Ok((b, c, h * w)),
        [b, c] => Ok((b, c, 1)),
        _ => bail!("batch_norm: expected (B, C, H, W), got {d:?}"),
    }
}

/// What a forward pass keeps of its batch statistics for the backward pass.
#[derive(Debug, Clone)]
pub(crate) enum SavedStats {
    /// CPU kernels: the statistics themselves (also used for the running averages).
    Host(BnBatchStats),
    /// CUDA kernels: mean and variance as one (2, C) f64 tensor on the device; the running
    /// averages were updated in place.
    #[cfg(feature = "cuda")]
    Device(Tensor),
}

/// Where a forward pass leaves its batch statistics, for its backward pass and for the
/// caller's running averages.
#[derive(Default, Clone)]
pub(crate) struct StatsSlot(Arc<Mutex<Option<SavedStats>>>);

impl StatsSlot {
    pub(crate) fn put(&self, s: SavedStats) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
    }

    pub(crate) fn get(&self, op: &str) -> Result<SavedStats> {
        match self.0.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            Some(s) => Ok(s.clone()),
            None => bail!("{op}: no batch statistics (backward before forward)"),
        }
    }

    /// The host statistics (CPU kernels).
    pub(crate) fn host(&self, op: &str) -> Result<BnBatchStats> {
        match self.get(op)? {
            SavedStats::Host(s) => Ok(s),
            #[cfg(feature = "cuda")]
            SavedStats::Device(_) => bail!("{op}: device statistics for a CPU backward"),
        }
    }
}

/// The running statistics a training-mode batch norm updates, with PyTorch's momentum.
#[derive(Clone, Copy)]
pub struct RunningStats<'a> {
    pub mean: &'a Var,
    pub var: &'a Var,
    pub momentum: f64,
}

/// The running statistics as the op keeps them (shared handles of the buffers, which the CUDA
/// kernels update in place).
#[derive(Clone)]
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) struct Running {
    pub mean: Tensor,
    pub var: Tensor,
    pub momentum: f64,
}

impl Running {
    pub fn new(r: Option<RunningStats<'_>>) -> Option<Self> {
        r.map(|r| Self { mean: r.mean.as_tensor().clone(), var: r.var.as_tensor().clone(), momentum: r.momentum })
    }
}

/// r ← (1 − m)·r + m·s for both buffers, the variance unbiased (n/(n − 1)).
pub(crate) fn update_running(r: RunningStats<'_>, s: &BnStats) -> Result<()> {
    let m = r.momentum;
    let unbiased = if s.count > 1 { s.count as f64 / (s.count - 1) as f64 } else { 1.0 };
    let new_mean = ((r.mean.as_tensor() * (1.0 - m))? + (&s.mean * m)?)?;
    let new_var = ((r.var.as_tensor() * (1.0 - m))? + (&s.var * (m * unbiased))?)?;
    r.mean.set(&new_mean)?;
    r.var.set(&new_var)
}

/// After a kernel forward: the host statistics go into the running averages (the CUDA
/// kernels updated them already).
pub(crate) fn finish_running(x: &Tensor, stats: &StatsSlot, r: Option<RunningStats<'_>>, op: &str) -> Result<()> {
    match (stats.get(op)?, r) {
        (SavedStats::Host(s), Some(r)) => update_running(r, &s.into_tensors(x)?),
        _ => Ok(()),
    }
}

#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) struct BatchNormTrain {
    pub eps: f64,
    pub stats: StatsSlot,
    pub running: Option<Running>,
}

impl CustomOp1 for BatchNormTrain {
    fn name(&self) -> &'static str {
        "batch-norm-train"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (out, stats) = cpu::batch_norm::forward_storage(s, l, self.eps)?;
        self.stats.put(SavedStats::Host(stats));
        Ok((out, l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &candle_core::CudaStorage, l: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        let out = super::cuda::batch_norm::glue::forward(s, l, self)?;
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, gy: &Tensor) -> Result<Option<Tensor>> {
        #[cfg(feature = "cuda")]
        if y.device().is_cuda() {
            return Ok(Some(super::cuda::batch_norm::glue::backward_plain(
                y,
                gy,
                &self.stats.get("batch_norm")?,
                self.eps,
            )?));
        }
        let var = self.stats.host("batch_norm")?.var;
        Ok(Some(cpu::batch_norm::backward_tensors(y, gy, &var, self.eps)?))
    }
}

/// Training-mode normalisation of x (B, C, H, W) without affine parameters, updating the
/// running statistics `running`.
pub fn batch_norm_train(x: &Tensor, eps: f64, running: Option<RunningStats<'_>>) -> Result<Tensor> {
    let stats = StatsSlot::default();
    let op = BatchNormTrain { eps, stats: stats.clone(), running: Running::new(running) };
    let y = x.contiguous()?.apply_op1(op)?;
    finish_running(x, &stats, running, "batch_norm")?;
    Ok(y)
}

struct ChannelAffine;

impl CustomOp3 for ChannelAffine {
    fn name(&self) -> &'static str {
        "channel-affine"
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
        Ok((cpu::batch_norm::affine_storage([(s1, l1), (s2, l2), (s3, l3)])?, l1.shape().clone()))
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
        Ok((super::cuda::batch_norm::glue::channel_affine([(s1, l1), (s2, l2), (s3, l3)])?, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            return super::cuda::batch_norm::glue::channel_affine_backward(x, a, b, gy);
        }
        cpu::batch_norm::affine_backward_tensors(x, a, b, gy)
    }
}

/// y = x·scale[c] + shift[c] for x (B, C, H, W), scale and shift (C,).
pub fn channel_affine(x: &Tensor, scale: &Tensor, shift: &Tensor) -> Result<Tensor> {
    let (_, c, _) = bn_dims(x.dims())?;
    if scale.elem_count() != c || shift.elem_count() != c {
        bail!("channel_affine: scale/shift must have {c} elements");
    }
    x.contiguous()?.apply_op3(&scale.contiguous()?, &shift.contiguous()?, ChannelAffine)
}

/// Checks x (B, C, …), γβ (2, C) and m (B,); returns (B, C, H·W).
pub(crate) fn check_affine_inputs(x: &[usize], gb: &[usize], m: usize) -> Result<(usize, usize, usize)> {
    let (b, c, hw) = bn_dims(x)?;
    if gb != [2, c] {
        bail!("batch_norm_affine: γ/β must be (2, {c}), got {gb:?}");
    }
    if m != b {
        bail!("batch_norm_affine: {m} sample factors for a batch of {b}");
    }
    Ok((b, c, hw))
}

#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) struct BatchNormAffineTrain {
    pub eps: f64,
    pub stats: StatsSlot,
    pub running: Option<Running>,
}

type Grads3 = (Option<Tensor>, Option<Tensor>, Option<Tensor>);

impl CustomOp3 for BatchNormAffineTrain {
    fn name(&self) -> &'static str {
        "batch-norm-affine-train"
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
        let (out, stats) = cpu::batch_norm::affine_train_storage([(s1, l1), (s2, l2), (s3, l3)], self.eps)?;
        self.stats.put(SavedStats::Host(stats));
        Ok((out, l1.shape().clone()))
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
        check_affine_inputs(l1.dims(), l2.dims(), l3.shape().elem_count())?;
        let out = super::cuda::batch_norm::glue::forward_affine((s1, l1), (s2, l2), (s3, l3), self)?;
        Ok((out, l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, gb: &Tensor, m: &Tensor, _res: &Tensor, gy: &Tensor) -> Result<Grads3> {
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            let st = self.stats.get("batch_norm_affine")?;
            return super::cuda::batch_norm::glue::backward_affine(x, gb, m, gy, &st, self.eps);
        }
        let st = self.stats.host("batch_norm_affine")?;
        cpu::batch_norm::affine_train_backward_tensors(x, gb, m, gy, &st, self.eps)
    }
}

/// The per-sample factors m (B,) of x's dtype that the fused training ops take as an input
/// without a gradient: `sample_scale` detached (drop path), or ones.
pub(crate) fn sample_factors(x: &Tensor, sample_scale: Option<&Tensor>) -> Result<Tensor> {
    match sample_scale {
        Some(m) => m.detach().to_dtype(x.dtype())?.contiguous(),
        None => Tensor::ones(x.dim(0)?, x.dtype(), x.device()),
    }
}

/// y = m[b]·(γ·x̂ + β) in training mode, updating the running statistics; `m` (B,) defaults
/// to ones.
pub fn batch_norm_affine_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    sample_scale: Option<&Tensor>,
    eps: f64,
    running: Option<RunningStats<'_>>,
) -> Result<Tensor> {
    let m = sample_factors(x, sample_scale)?;
    let gb = Tensor::stack(&[gamma, beta], 0)?;
    check_affine_inputs(x.dims(), gb.dims(), m.elem_count())?;
    let stats = StatsSlot::default();
    let op = BatchNormAffineTrain { eps, stats: stats.clone(), running: Running::new(running) };
    let y = x.contiguous()?.apply_op3(&gb, &m, op)?;
    finish_running(x, &stats, running, "batch_norm_affine")?;
    Ok(y)
}
