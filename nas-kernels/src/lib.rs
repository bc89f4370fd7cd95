//! The differentiable custom ops of DARTS-style architecture search (dense, depthwise and dilated
//! convolutions, padded 3×3 pooling, batch norm, the fused sep_conv/dil_conv stage, the
//! PC-DARTS merge, the mixed op's weighted sums) with their kernels, below nas-core as
//! candle-kernels sits below candle-core. Each public function runs its custom op where the
//! tensor's device has kernels for it (CPU, and CUDA when built with the `cuda` feature; f32 and
//! f64) and otherwise the composed candle version in `composed`, which also serves as the
//! reference in tests. One op is one struct whose `cpu_fwd`, `cuda_fwd` and `bwd` run on the
//! tensor's own device (a `Kernels<N>` impl, see `op`): the op files here hold the structs,
//! the shapes and the public functions, `cpu/` the CPU kernels, `cuda/` the CUDA kernels (`.cu`
//! sources, their launch sequences, and the host emulation that runs them on a CPU for the
//! tests). `launch_count` counts the GPU work a step submits (CUPTI). See this crate's README.md
//! ("Adding a kernel to an existing `.cu` file") for how to add a kernel.

mod batch_norm;
pub mod composed;
mod conv;
pub mod cpu;
#[doc(hidden)]
pub mod cuda;
mod depthwise;
mod elementwise;
#[cfg(feature = "cuda")]
pub mod launch_count;
pub mod limits;
mod op;
mod partial;
mod pointwise;
mod pool;
mod sep;
mod stage;
pub mod testing;

use candle_core::{DType, Result, Tensor};

// The public functions and types of the op files are the crate's API.
pub use batch_norm::*;
pub use conv::*;
pub use depthwise::*;
pub use elementwise::*;
pub use partial::*;
pub use pointwise::*;
pub use pool::*;
pub use sep::*;
pub use stage::*;

/// Whether the custom kernels handle this tensor: f32 or f64 on the CPU, or on CUDA when the
/// CUDA kernels are compiled in; elsewhere each op runs its composed version.
pub(crate) fn fast(x: &Tensor) -> bool {
    let device = x.device().is_cpu() || (cfg!(feature = "cuda") && x.device().is_cuda());
    device && matches!(x.dtype(), DType::F32 | DType::F64)
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

/// Batch statistics of a training-mode batch norm: per-channel mean and biased variance (C,),
/// detached, and the number of values each was taken over.
pub struct BnStats {
    pub mean: Tensor,
    pub var: Tensor,
    pub count: usize,
}

/// x[:, :, ::s, ::s].
pub fn subsample(x: &Tensor, s: usize) -> Result<Tensor> {
    composed::subsample(x, s)
}
