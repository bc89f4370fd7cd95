//! Classification loss and accuracy.

use candle_core::{Result, Tensor};

/// Mean cross-entropy of logits (B, K) against class indices (B,) of dtype u32.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    candle_nn::loss::cross_entropy(logits, targets)
}

/// Number of rows whose arg-max equals the target.
pub fn accuracy_count(logits: &Tensor, targets: &Tensor) -> Result<usize> {
    let pred = logits.argmax(1)?.to_dtype(candle_core::DType::U32)?;
    pred.eq(targets)?.to_dtype(candle_core::DType::F32)?.sum_all()?.to_scalar::<f32>().map(|v| v as usize)
}
