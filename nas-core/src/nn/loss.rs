//! Classification loss and accuracy.

use candle_core::{DType, Result, Tensor, D};

/// Mean cross-entropy of logits (B, K) against class indices (B,) of dtype u32.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    candle_nn::loss::cross_entropy(logits, targets)
}

/// Mean cross-entropy against label-smoothed targets q = (1 − ε)·one_hot(y) + ε/K, DARTS'
/// `CrossEntropyLabelSmooth` (its ImageNet recipe, ε = 0.1): mean over the batch of
/// −Σ_k q_k log softmax(x)_k = (1 − ε)·CE(x, y) + ε·mean_k(−log softmax(x)_k).
/// logits (B, K), targets (B,) u32, ε in [0, 1].
pub fn cross_entropy_smoothed(logits: &Tensor, targets: &Tensor, eps: f64) -> Result<Tensor> {
    if !(0.0..=1.0).contains(&eps) {
        candle_core::bail!("label smoothing must be in [0, 1], got {eps}");
    }
    let (b, k) = logits.dims2()?;
    let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = log_p.gather(&targets.reshape((b, 1))?, 1)?.sum_all()?;
    let all = log_p.sum_all()?;
    // −[(1 − ε)·Σ_b log p_{b,y_b} + (ε/K)·Σ_{b,k} log p_{b,k}] / B
    let total = ((picked * (1.0 - eps))? + (all * (eps / k as f64))?)?;
    total * (-1.0 / b as f64)
}

/// Number of rows whose arg-max equals the target, as an f32 scalar on the logits' device, so
/// a training loop can read it back together with other steps' values.
pub fn correct_count(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let pred = logits.argmax(1)?.to_dtype(DType::U32)?;
    pred.eq(targets)?.to_dtype(DType::F32)?.sum_all()
}

/// The top-1 and top-5 counts of a batch as an f32 pair `[top-1, top-5]` on the logits'
/// device: rows whose arg-max is the target (as `correct_count`), and rows with fewer than five
/// logits strictly above the target's (a tie with the fifth counts as a hit; with five classes
/// or fewer every row is a top-5 hit).
pub fn topk_counts(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let b = logits.dim(0)?;
    let target_logit = logits.gather(&targets.reshape((b, 1))?, 1)?;
    let above = logits.broadcast_gt(&target_logit)?.to_dtype(DType::F32)?.sum(1)?;
    let top5 = above.lt(5f64)?.to_dtype(DType::F32)?.sum_all()?;
    Tensor::stack(&[correct_count(logits, targets)?, top5], 0)
}

/// Number of rows whose arg-max equals the target, on the host.
pub fn accuracy_count(logits: &Tensor, targets: &Tensor) -> Result<usize> {
    correct_count(logits, targets)?.to_scalar::<f32>().map(|v| v as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Closed form: row (0, ln 3) against class 1 has p = (1/4, 3/4); with ε = 0.1 and K = 2
    /// the targets are (0.05, 0.95), so the loss is −0.05·ln(1/4) − 0.95·ln(3/4). Row (0, 0)
    /// against class 0 has p = (1/2, 1/2) and loss ln 2 whatever ε is.
    #[test]
    fn smoothed_cross_entropy_matches_the_closed_form() {
        let d = Device::Cpu;
        let logits = Tensor::new(&[[0.0f64, 3f64.ln()], [0.0, 0.0]], &d).unwrap();
        let y = Tensor::new(&[1u32, 0], &d).unwrap();
        let got = cross_entropy_smoothed(&logits, &y, 0.1).unwrap().to_scalar::<f64>().unwrap();
        let row0 = -0.05 * 0.25f64.ln() - 0.95 * 0.75f64.ln();
        let want = (row0 + 2f64.ln()) / 2.0;
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }

    #[test]
    fn no_smoothing_is_cross_entropy_and_full_smoothing_ignores_the_labels() {
        let d = Device::Cpu;
        let logits = Tensor::new(&[[0.3f64, -1.2, 2.0], [1.5, 0.1, -0.4]], &d).unwrap();
        let y = Tensor::new(&[2u32, 1], &d).unwrap();
        let plain = cross_entropy(&logits, &y).unwrap().to_scalar::<f64>().unwrap();
        let eps0 = cross_entropy_smoothed(&logits, &y, 0.0).unwrap().to_scalar::<f64>().unwrap();
        assert!((plain - eps0).abs() < 1e-12, "{plain} vs {eps0}");
        // ε = 1: uniform targets, −mean_k log p_k averaged over rows; the labels do not matter.
        let other = Tensor::new(&[0u32, 0], &d).unwrap();
        let a = cross_entropy_smoothed(&logits, &y, 1.0).unwrap().to_scalar::<f64>().unwrap();
        let b = cross_entropy_smoothed(&logits, &other, 1.0).unwrap().to_scalar::<f64>().unwrap();
        assert!((a - b).abs() < 1e-12);
        assert!(cross_entropy_smoothed(&logits, &y, 1.5).unwrap_err().to_string().contains("label smoothing"));
    }

    /// Row by row against a sort of the logits: the target's place among 7 classes decides
    /// both counts.
    #[test]
    fn top_k_counts_follow_the_target_rank() {
        let d = Device::Cpu;
        let row = [0.7f32, -0.1, 2.5, 1.0, 0.3, -2.0, 1.9];
        // Ranks (0 = largest): 2.5 → 0, 1.9 → 1, 1.0 → 2, 0.7 → 3, 0.3 → 4, −0.1 → 5, −2.0 → 6.
        let logits = Tensor::new(&[row; 7], &d).unwrap();
        let y = Tensor::new(&[2u32, 6, 3, 0, 4, 1, 5], &d).unwrap();
        let got = topk_counts(&logits, &y).unwrap().to_vec1::<f32>().unwrap();
        // Top-1: only the row asking for class 2; top-5: ranks 0 to 4, five rows.
        assert_eq!(got, vec![1.0, 5.0]);
        let few = Tensor::new(&[[0.1f32, 0.2, 0.3], [3.0, 2.0, 1.0]], &d).unwrap();
        let got = topk_counts(&few, &Tensor::new(&[0u32, 0], &d).unwrap()).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(got, vec![1.0, 2.0]);
    }
}
