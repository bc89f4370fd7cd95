//! Adam with ε added TensorFlow's way (`tf.train.AdamOptimizer`, which ENAS' controller
//! uses): ε is added to √v before the step's bias correction, so early steps are damped more
//! than by PyTorch's Adam, which adds it to the bias-corrected √v̂.

use std::collections::HashMap;

use candle_core::Tensor;
use nas_core::optim::{Adam, AdamConfig};

use super::controller_config::AdamEpsilon;

/// One Adam step with ε as `style` wants it. nas_core's Adam adds ε PyTorch's way; for
/// TensorFlow's the optimiser is rebuilt for this step with ε′ = ε/√(1 − β₂ᵗ), its moments
/// and count carried over, which gives TensorFlow's step exactly (up to rounding).
pub fn adam_step(
    adam: &mut Adam,
    base: AdamConfig,
    style: AdamEpsilon,
    grads: &[Option<Tensor>],
) -> candle_core::Result<()> {
    if style == AdamEpsilon::TensorFlow {
        let steps = adam.steps_taken();
        let t = i32::try_from(steps + 1).unwrap_or(i32::MAX);
        let cfg = AdamConfig { eps: base.eps / (1.0 - base.beta2.powi(t)).sqrt(), ..base };
        let moments: HashMap<String, Tensor> = adam.state("adam").into_iter().collect();
        let mut rebuilt = Adam::new(adam.params().to_vec(), cfg);
        rebuilt.load_state("adam", steps, |n| moments.get(n).cloned())?;
        *adam = rebuilt;
    }
    adam.step(grads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// TensorFlow's `AdamOptimizer` update written out (its documented form):
    /// lr_t = lr·√(1−β₂ᵗ)/(1−β₁ᵗ); w ← w − lr_t·m/(√v + ε).
    #[test]
    fn tensorflow_epsilon_matches_its_update_by_hand() -> candle_core::Result<()> {
        let base = AdamConfig { lr: 0.01, beta1: 0.0, beta2: 0.999, eps: 1e-3, weight_decay: 0.0 };
        let p = Var::new(&[0.5f64], &Device::Cpu)?;
        let mut opt = Adam::new(vec![p.clone()], base);
        let (mut w, mut m, mut v) = (0.5f64, 0.0f64, 0.0f64);
        for (t, g) in [0.02f64, -0.01, 0.005, 0.03].into_iter().enumerate() {
            adam_step(&mut opt, base, AdamEpsilon::TensorFlow, &[Some(Tensor::new(&[g], &Device::Cpu)?)])?;
            let t = (t + 1) as i32;
            m = base.beta1 * m + (1.0 - base.beta1) * g;
            v = base.beta2 * v + (1.0 - base.beta2) * g * g;
            let lr_t = base.lr * (1.0 - base.beta2.powi(t)).sqrt() / (1.0 - base.beta1.powi(t));
            w -= lr_t * m / (v.sqrt() + base.eps);
            let got = p.as_tensor().to_vec1::<f64>()?[0];
            assert!((got - w).abs() < 1e-15, "step {t}: {got} vs {w}");
        }
        // PyTorch's ε gives a visibly different first step at this gradient size, so the test
        // tells the two apart: TF divides by √v + ε = 0.02·√0.001 + 0.001, PyTorch by
        // √v/√0.001 + ε = 0.02 + 0.001.
        let q = Var::new(&[0.5f64], &Device::Cpu)?;
        let mut torch = Adam::new(vec![q.clone()], base);
        adam_step(&mut torch, base, AdamEpsilon::PyTorch, &[Some(Tensor::new(&[0.02f64], &Device::Cpu)?)])?;
        let tf_first = 0.5 - base.lr * 0.001f64.sqrt() * 0.02 / (0.02 * 0.001f64.sqrt() + base.eps);
        let torch_first = q.as_tensor().to_vec1::<f64>()?[0];
        assert!((torch_first - (0.5 - base.lr * 0.02 / 0.021)).abs() < 1e-15);
        assert!((torch_first - tf_first).abs() > 1e-3);
        Ok(())
    }
}
