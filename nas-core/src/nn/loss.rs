//! Classification loss and accuracy.

use candle_core::{DType, Result, Tensor};

/// Mean cross-entropy of logits (B, K) against class indices (B,) of dtype u32.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    candle_nn::loss::cross_entropy(logits, targets)
}

/// Number of rows whose arg-max equals the target, as an f32 scalar on the logits' device, so
/// a training loop can read it back together with other steps' values.
pub fn correct_count(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let pred = logits.argmax(1)?.to_dtype(DType::U32)?;
    pred.eq(targets)?.to_dtype(DType::F32)?.sum_all()
}

/// Number of rows whose arg-max equals the target, on the host.
pub fn accuracy_count(logits: &Tensor, targets: &Tensor) -> Result<usize> {
    correct_count(logits, targets)?.to_scalar::<f32>().map(|v| v as usize)
}
