//! Differentiable tensor ops for the DARTS op set. Each public function picks the fast custom
//! kernel where the device has one and otherwise the composed candle version in `composed`.

pub mod composed;
mod depthwise;
pub mod kernel;
mod pool;

use candle_core::{Result, Tensor};

pub use depthwise::DwParams;
pub use pool::PoolKind;

/// Depthwise convolution: x (B, C, H, W), w (C, 1, K, K) → (B, C, Ho, Wo).
pub fn depthwise_conv2d(x: &Tensor, w: &Tensor, p: DwParams) -> Result<Tensor> {
    if x.device().is_cpu() {
        depthwise::depthwise_conv2d(x, w, p)
    } else {
        composed::depthwise_conv2d(x, w, p)
    }
}

/// 3×3 max or average pooling (padding 1, average excludes padding) with the given stride.
pub fn pool3x3(x: &Tensor, kind: PoolKind, stride: usize) -> Result<Tensor> {
    if x.device().is_cpu() {
        pool::pool3x3(x, kind, stride)
    } else {
        composed::pool3x3(x, kind, stride)
    }
}

/// 1×1 convolution without bias as a batched matrix product: x (B, Ci, H, W), w (Co, Ci, 1, 1).
pub fn conv1x1(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (b, ci, h, wd) = x.dims4()?;
    let co = w.dim(0)?;
    let w = w.reshape((co, ci))?.broadcast_left(b)?;
    w.matmul(&x.reshape((b, ci, h * wd))?)?
        .reshape((b, co, h, wd))
}

/// k×k average pooling with stride s and no padding.
pub fn avg_pool_valid(x: &Tensor, k: usize, s: usize) -> Result<Tensor> {
    composed::avg_pool_valid(x, k, s)
}

/// x[:, :, ::s, ::s].
pub fn subsample(x: &Tensor, s: usize) -> Result<Tensor> {
    composed::subsample(x, s)
}
