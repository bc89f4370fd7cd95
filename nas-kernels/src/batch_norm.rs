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

use candle_core::{bail, CpuStorage, Result, Tensor, Var};

#[cfg(feature = "cuda")]
use self::device_state::{device_stats, saved, tensor_addr, with_running};
use crate::cpu::batch_norm as kernels;
#[cfg(feature = "cuda")]
use crate::cuda::batch_norm::{self as launch, BnGrad, BnIn};
#[cfg(feature = "cuda")]
use crate::cuda::launch::BnArgs;
#[cfg(feature = "cuda")]
use crate::op::CudaIn;
use crate::op::{forward, grads, CpuIn, Kernels, Op};
use crate::{composed, BnStats};
#[cfg(feature = "cuda")]
use candle_core::CudaStorage;

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

/// The CUDA side of the ops' state: the running statistics' device addresses, and the batch
/// statistics a forward keeps on the device.
#[cfg(feature = "cuda")]
pub(crate) mod device_state {
    use candle_core::{bail, Result, Tensor};

    use super::{Running, SavedStats};
    use crate::cuda::batch_norm::RunningAddrs;
    use crate::cuda::device::{addr, Cuda};

    /// Runs `f` with the device addresses of the running statistics (locked for the call).
    pub(crate) fn with_running<R>(
        running: Option<&Running>,
        f: impl FnOnce(Option<RunningAddrs>) -> Result<R>,
    ) -> Result<R> {
        let Some(r) = running else { return f(None) };
        let (gm, lm) = r.mean.storage_and_layout();
        let (gv, lv) = r.var.storage_and_layout();
        let (candle_core::Storage::Cuda(sm), candle_core::Storage::Cuda(sv)) = (&*gm, &*gv) else {
            bail!("batch_norm: running statistics are not on the GPU")
        };
        let addrs = match r.mean.dtype() {
            candle_core::DType::F32 => (addr::<f32>(sm, lm)?, addr::<f32>(sv, lv)?),
            candle_core::DType::F64 => (addr::<f64>(sm, lm)?, addr::<f64>(sv, lv)?),
            d => bail!("batch_norm: running statistics of {d:?}"),
        };
        // The kernel writes the running statistics in place through these addresses: they are
        // device memory that candle does not otherwise touch while the op runs (one stream).
        f(Some((addrs.0, addrs.1, r.momentum)))
    }

    /// The (2, C) statistics a forward keeps.
    pub(crate) fn saved(be: &Cuda, stats: <Cuda as crate::cuda::Backend>::Buf<f64>, c: usize) -> Result<SavedStats> {
        Ok(SavedStats::Device(be.tensor(stats, (2, c))?))
    }

    /// The device statistics a CUDA forward saved.
    pub(crate) fn device_stats(st: &SavedStats) -> Result<Tensor> {
        match st {
            SavedStats::Device(t) => Ok(t.clone()),
            SavedStats::Host(_) => bail!("batch_norm: host statistics for a CUDA backward"),
        }
    }

    /// The device address of a tensor's data (the saved statistics, f64; the drop-path factors).
    pub(crate) fn tensor_addr<T: crate::cuda::Elem>(t: &Tensor) -> Result<u64> {
        let (g, l) = t.storage_and_layout();
        match &*g {
            candle_core::Storage::Cuda(s) => addr::<T>(s, l),
            _ => bail!("CUDA kernel input is not on the GPU"),
        }
    }
}

/// The CUDA kernels' argument struct for an input of (B, C, H·W) `dims`.
#[cfg(feature = "cuda")]
fn bn_args((b, c, hw): (usize, usize, usize), op: &str) -> Result<BnArgs> {
    let a = BnArgs::of(b, c, hw);
    if a.is_empty() {
        bail!("{op}: empty batch");
    }
    Ok(a)
}

/// Batch normalisation in training mode of an input of (B, C, H·W) `dims`: plain (one input,
/// x) or with affine parameters and per-sample factors (three inputs: x, γβ (2, C), m (B,)).
/// The forward leaves the batch statistics in `stats`; on CUDA it updates `running` in place.
pub(crate) struct BnTrain {
    pub dims: (usize, usize, usize),
    pub eps: f64,
    pub stats: StatsSlot,
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub running: Option<Running>,
}

impl Kernels<1> for BnTrain {
    fn cpu_fwd(&self, s: [CpuIn<'_>; 1]) -> Result<CpuStorage> {
        forward!(cpu: "batch_norm", s, |T, [x]| {
            let (y, stats) = kernels::forward::<T>(x, self.dims, self.eps)?;
            self.stats.put(SavedStats::Host(stats));
            Ok(y)
        })
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: [CudaIn<'_>; 1]) -> Result<CudaStorage> {
        let a = bn_args(self.dims, "batch_norm")?;
        forward!(cuda: "batch_norm", s, |T, be, [x]| {
            let out = with_running(self.running.as_ref(), |running| {
                launch::forward::<_, T>(be, &BnIn { x, running, ..Default::default() }, &a, self.eps)
            })?;
            self.stats.put(saved(be, out.stats, a.c as usize)?);
            Ok(out.y)
        })
    }

    fn bwd(&self, [x]: [&Tensor; 1], y: &Tensor, gy: &Tensor) -> Result<[Option<Tensor>; 1]> {
        #[cfg(feature = "cuda")]
        if y.device().is_cuda() {
            let (a, stats) = (bn_args(self.dims, "batch_norm")?, device_stats(&self.stats.get("batch_norm")?)?);
            return grads!(cuda: "batch_norm", [y, gy], [x], |T, be, [u, gr]| {
                let i = BnGrad { u, gr, gamma: None, m: None, stats: tensor_addr::<f64>(&stats)?, affine: false };
                Ok([Some(launch::backward::<_, T>(be, &i, &a, self.eps, false)?.0)])
            });
        }
        let var = self.stats.host("batch_norm")?.var;
        grads!(cpu: "batch_norm", [y, gy], [x], |T, [y, gy]| {
            Ok([Some(kernels::backward::<T>(y, gy, self.dims, &var, self.eps))])
        })
    }
}

impl Kernels<3> for BnTrain {
    fn cpu_fwd(&self, s: [CpuIn<'_>; 3]) -> Result<CpuStorage> {
        forward!(cpu: "batch_norm_affine", s, |T, [x, gb, m]| {
            let (y, stats) = kernels::affine_train::<T>([x, gb, m], self.dims, self.eps)?;
            self.stats.put(SavedStats::Host(stats));
            Ok(y)
        })
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: [CudaIn<'_>; 3]) -> Result<CudaStorage> {
        let a = bn_args(self.dims, "batch_norm_affine")?;
        forward!(cuda: "batch_norm_affine", s, |T, be, [x, gb, m]| {
            let beta = gb + (a.c as u64) * std::mem::size_of::<T>() as u64;
            let out = with_running(self.running.as_ref(), |running| {
                let i = BnIn { x, gamma: Some(gb), beta: Some(beta), m: Some(m), acc: None, running };
                launch::forward::<_, T>(be, &i, &a, self.eps)
            })?;
            self.stats.put(saved(be, out.stats, a.c as usize)?);
            Ok(out.y)
        })
    }

    fn bwd(&self, [x, gb, m]: [&Tensor; 3], _: &Tensor, gy: &Tensor) -> Result<[Option<Tensor>; 3]> {
        let want = [x.track_op(), gb.track_op()];
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            let a = bn_args(self.dims, "batch_norm_affine")?;
            let stats = device_stats(&self.stats.get("batch_norm_affine")?)?;
            let [gx, ggb] = grads!(cuda: "batch_norm_affine", [x, gb, m, gy], [x, gb], |T, be, [u, gamma, m, gr]| {
                let stats = tensor_addr::<f64>(&stats)?;
                let i = BnGrad { u, gr, gamma: Some(gamma), m: Some(m), stats, affine: true };
                let (gx, ggb) = launch::backward::<_, T>(be, &i, &a, self.eps, want[1])?;
                Ok([want[0].then_some(gx), ggb])
            })?;
            return Ok([gx, ggb, None]);
        }
        let st = self.stats.host("batch_norm_affine")?;
        let [gx, ggb] = grads!(cpu: "batch_norm_affine", [x, gb, m, gy], [x, gb], |T, [x, gb, m, gy]| {
            Ok(kernels::affine_train_backward::<T>([x, gb, m, gy], self.dims, &st, self.eps, want))
        })?;
        Ok([gx, ggb, None])
    }
}

/// Training-mode normalisation without affine parameters: x̂ = (x − μ)/√(σ² + ε) per channel
/// of x (B, C, H, W), updating the running statistics `running`.
pub fn batch_norm_train(x: &Tensor, eps: f64, running: Option<RunningStats<'_>>) -> Result<Tensor> {
    if !crate::fast(x) {
        let (y, s) = composed::batch_norm_train(x, eps)?;
        if let Some(r) = running {
            update_running(r, &s)?;
        }
        return Ok(y);
    }
    let stats = StatsSlot::default();
    let op = BnTrain { dims: bn_dims(x.dims())?, eps, stats: stats.clone(), running: Running::new(running) };
    let y = x.contiguous()?.apply_op1(Op::new("batch-norm-train", op))?;
    finish_running(x, &stats, running, "batch_norm")?;
    Ok(y)
}

/// y = x·scale[c] + shift[c] for an input of (B, C, H·W) `dims`.
struct ChannelAffine((usize, usize, usize));

impl Kernels<3> for ChannelAffine {
    fn cpu_fwd(&self, s: [CpuIn<'_>; 3]) -> Result<CpuStorage> {
        forward!(cpu: "channel_affine", s, |T, [x, a, b]| kernels::affine::<T>([x, a, b], self.0))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: [CudaIn<'_>; 3]) -> Result<CudaStorage> {
        let (b, c, hw) = self.0;
        let a = BnArgs::of(b, c, hw);
        forward!(cuda: "channel_affine", s, |T, be, [x, scale, shift]| {
            launch::channel_affine::<_, T>(be, x, scale, Some(shift), &a)
        })
    }

    fn bwd(&self, [x, a, b]: [&Tensor; 3], _: &Tensor, gy: &Tensor) -> Result<[Option<Tensor>; 3]> {
        let want = [x.track_op(), a.track_op(), b.track_op()];
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            let (bs, c, hw) = self.0;
            let args = BnArgs::of(bs, c, hw);
            return grads!(cuda: "channel_affine", [x, a, gy], [x, a, b], |T, be, [x, a, gy]| {
                launch::channel_affine_backward::<_, T>(be, [x, a, gy], &args, want)
            });
        }
        grads!(cpu: "channel_affine", [x, a, gy], [x, a, b], |T, [x, a, gy]| {
            Ok(kernels::affine_backward::<T>([x, a, gy], self.0, want))
        })
    }
}

/// y = x·scale[c] + shift[c] for x (B, C, H, W), scale and shift (C,).
pub fn channel_affine(x: &Tensor, scale: &Tensor, shift: &Tensor) -> Result<Tensor> {
    if !crate::fast(x) {
        return composed::channel_affine(x, scale, shift);
    }
    let dims = bn_dims(x.dims())?;
    if scale.elem_count() != dims.1 || shift.elem_count() != dims.1 {
        bail!("channel_affine: scale/shift must have {} elements", dims.1);
    }
    let op = Op::new("channel-affine", ChannelAffine(dims));
    x.contiguous()?.apply_op3(&scale.contiguous()?, &shift.contiguous()?, op)
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

/// The per-sample factors m (B,) of x's dtype that the fused training ops take as an input
/// without a gradient: `sample_scale` detached (drop path), or ones.
pub(crate) fn sample_factors(x: &Tensor, sample_scale: Option<&Tensor>) -> Result<Tensor> {
    match sample_scale {
        Some(m) => m.detach().to_dtype(x.dtype())?.contiguous(),
        None => Tensor::ones(x.dim(0)?, x.dtype(), x.device()),
    }
}

/// Training-mode batch norm with affine parameters γ, β (C,), optionally times a per-sample
/// factor `sample_scale` (B,) that gets no gradient (drop path): y = m[b]·(γ·x̂ + β) (m
/// defaults to ones); updates the running statistics `running`.
pub fn batch_norm_affine_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    sample_scale: Option<&Tensor>,
    eps: f64,
    running: Option<RunningStats<'_>>,
) -> Result<Tensor> {
    if !crate::fast(x) {
        let (y, s) = composed::batch_norm_train(x, eps)?;
        if let Some(r) = running {
            update_running(r, &s)?;
        }
        let y = composed::channel_affine(&y, gamma, beta)?;
        return match sample_scale {
            Some(m) => crate::scale_samples(&y, m),
            None => Ok(y),
        };
    }
    let m = sample_factors(x, sample_scale)?;
    let gb = Tensor::stack(&[gamma, beta], 0)?;
    let dims = check_affine_inputs(x.dims(), gb.dims(), m.elem_count())?;
    let stats = StatsSlot::default();
    let op = BnTrain { dims, eps, stats: stats.clone(), running: Running::new(running) };
    let y = x.contiguous()?.apply_op3(&gb, &m, Op::new("batch-norm-affine-train", op))?;
    finish_running(x, &stats, running, "batch_norm_affine")?;
    Ok(y)
}
