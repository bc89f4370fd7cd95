//! The differentiable custom ops of DARTS-style architecture search (depthwise and dilated
//! convolutions, padded 3×3 pooling, batch norm, the fused sep_conv/dil_conv stage, the
//! PC-DARTS merge, the mixed op's weighted sums) with their kernels, below nas-core as
//! candle-kernels sits below candle-core. Each public function runs its custom op where the
//! tensor's device has kernels for it (CPU, and CUDA when built with the `cuda` feature; f32 and
//! f64) and otherwise the composed candle version in `composed`, which also serves as the
//! reference in tests. One op is one struct whose `cpu_fwd`, `cuda_fwd` and `bwd` run on the
//! tensor's own device: the op files here hold the structs and the shapes, `cpu/` the CPU
//! kernels, `cuda/` the CUDA kernels (`.cu` sources, their launch sequences, and the host
//! emulation that runs them on a CPU for the tests). `launch_count` counts the GPU work a step
//! submits (CUPTI).

mod batch_norm;
pub mod composed;
pub mod cpu;
#[doc(hidden)]
pub mod cuda;
mod depthwise;
mod elementwise;
#[cfg(feature = "cuda")]
pub mod launch_count;
mod op;
mod partial;
mod pointwise;
mod pool;
mod sep;
mod stage;
pub mod testing;

use candle_core::{DType, Result, Tensor};

pub use batch_norm::{batch_norm_affine_train, BnBatchStats, RunningStats};
pub use depthwise::DwParams;
pub use pointwise::PwParams;
pub use pool::PoolKind;
pub use stage::{dw_pw_bn_train, StageParts, StageWeights};

/// Whether the custom kernels handle this tensor: f32 or f64 on the CPU, or on CUDA when the
/// CUDA kernels are compiled in.
pub(crate) fn fast(x: &Tensor) -> bool {
    let device = x.device().is_cpu() || (cfg!(feature = "cuda") && x.device().is_cuda());
    device && matches!(x.dtype(), DType::F32 | DType::F64)
}

/// max(x, 0).
pub fn relu(x: &Tensor) -> Result<Tensor> {
    if fast(x) {
        elementwise::relu(x)
    } else {
        x.relu()
    }
}

/// w · y, `w` a one-element tensor (a mixed-op weight).
pub fn scale(y: &Tensor, w: &Tensor) -> Result<Tensor> {
    if fast(y) {
        elementwise::scale(y, w)
    } else {
        y.broadcast_mul(w)
    }
}

/// acc + w · y, `w` a one-element tensor.
pub fn axpy(acc: &Tensor, y: &Tensor, w: &Tensor) -> Result<Tensor> {
    if fast(y) {
        elementwise::axpy(acc, y, w)
    } else {
        acc + y.broadcast_mul(w)?
    }
}

/// acc + w·y, starting the sum when `acc` is None; `w` an optional one-element weight (1 when
/// absent). The running sum of a mixed op or a cell node.
pub fn accumulate(acc: Option<Tensor>, y: Tensor, w: Option<&Tensor>) -> Result<Tensor> {
    match (acc, w) {
        (None, None) => Ok(y),
        (None, Some(w)) => scale(&y, w),
        (Some(a), None) => a + y,
        (Some(a), Some(w)) => axpy(&a, &y, w),
    }
}

/// Depthwise convolution: x (B, C, H, W), w (C, 1, K, K) → (B, C, Ho, Wo).
pub fn depthwise_conv2d(x: &Tensor, w: &Tensor, p: DwParams) -> Result<Tensor> {
    if fast(x) {
        depthwise::depthwise_conv2d(x, w, p)
    } else {
        composed::depthwise_conv2d(x, w, p)
    }
}

/// pw(dw(x)): depthwise k×k convolution then 1×1 convolution, w_pw (Co, C, 1, 1).
pub fn dw_pw(x: &Tensor, w_dw: &Tensor, w_pw: &Tensor, p: DwParams) -> Result<Tensor> {
    if fast(x) {
        sep::dw_pw(x, w_dw, w_pw, p, false)
    } else {
        composed::conv1x1(&composed::depthwise_conv2d(x, w_dw, p)?, w_pw, PwParams { stride: 1, offset: 0 })
    }
}

/// pw(dw(ReLU(x))) as one op: the first stage of every sep_conv and dil_conv.
pub fn relu_dw_pw(x: &Tensor, w_dw: &Tensor, w_pw: &Tensor, p: DwParams) -> Result<Tensor> {
    if fast(x) {
        sep::dw_pw(x, w_dw, w_pw, p, true)
    } else {
        dw_pw(&x.relu()?, w_dw, w_pw, p)
    }
}

/// 3×3 max or average pooling (padding 1, average excludes padding) with the given stride.
pub fn pool3x3(x: &Tensor, kind: PoolKind, stride: usize) -> Result<Tensor> {
    if fast(x) {
        pool::pool3x3(x, kind, stride)
    } else {
        composed::pool3x3(x, kind, stride)
    }
}

/// 1×1 convolution without bias, sampling x at offset + stride·i: x (B, Ci, H, W),
/// w (Co, Ci, 1, 1).
pub fn conv1x1(x: &Tensor, w: &Tensor, p: PwParams) -> Result<Tensor> {
    if fast(x) {
        pointwise::conv1x1(x, w, p, false)
    } else {
        composed::conv1x1(x, w, p)
    }
}

/// conv1x1(ReLU(x)) as one op (ReLU-conv-BN and FactorizedReduce start with ReLU).
pub fn relu_conv1x1(x: &Tensor, w: &Tensor, p: PwParams) -> Result<Tensor> {
    if fast(x) {
        pointwise::conv1x1(x, w, p, true)
    } else {
        composed::conv1x1(&x.relu()?, w, p)
    }
}

/// Batch statistics of a training-mode batch norm: per-channel mean and biased variance (C,),
/// detached, and the number of values each was taken over.
pub struct BnStats {
    pub mean: Tensor,
    pub var: Tensor,
    pub count: usize,
}

/// Training-mode normalisation without affine parameters: x̂ = (x − μ)/√(σ² + ε) per channel,
/// updating the running statistics `running`.
pub fn batch_norm_train(x: &Tensor, eps: f64, running: Option<RunningStats<'_>>) -> Result<Tensor> {
    if fast(x) {
        batch_norm::batch_norm_train(x, eps, running)
    } else {
        let (y, s) = composed::batch_norm_train(x, eps)?;
        if let Some(r) = running {
            batch_norm::update_running(r, &s)?;
        }
        Ok(y)
    }
}

/// y = x·scale[c] + shift[c] for x (B, C, H, W).
pub fn channel_affine(x: &Tensor, scale: &Tensor, shift: &Tensor) -> Result<Tensor> {
    if fast(x) {
        batch_norm::channel_affine(x, scale, shift)
    } else {
        composed::channel_affine(x, scale, shift)
    }
}

/// k×k average pooling with stride s and no padding.
pub fn avg_pool_valid(x: &Tensor, k: usize, s: usize) -> Result<Tensor> {
    if fast(x) {
        pool::avg_pool_valid(x, k, s)
    } else {
        composed::avg_pool_valid(x, k, s)
    }
}

/// x (B, …) with sample b multiplied by m[b] (drop path); m (B,) carries no gradient.
pub fn scale_samples(x: &Tensor, m: &Tensor) -> Result<Tensor> {
    if fast(x) {
        elementwise::scale_samples(x, m)
    } else {
        let mut shape = vec![1usize; x.rank()];
        shape[0] = m.elem_count();
        x.broadcast_mul(&m.detach().to_dtype(x.dtype())?.reshape(shape)?)
    }
}

/// x[:, :, ::s, ::s].
pub fn subsample(x: &Tensor, s: usize) -> Result<Tensor> {
    composed::subsample(x, s)
}

/// The output of a PC-DARTS partial-channel edge: shuffle(cat[y, bypass(x[:, C/K:])], K) with
/// y (B, C/K, Ho, Wo) the op mixture on the first C/K channels of x (B, C, H, W) and the
/// bypass the identity (stride 1) or 2×2 max pooling (stride 2).
pub fn pc_merge(y: &Tensor, x: &Tensor, k: usize, stride: usize) -> Result<Tensor> {
    if fast(x) {
        partial::pc_merge(y, x, k, stride)
    } else {
        composed::pc_merge(y, x, k, stride)
    }
}
