//! Adam with coupled L2 weight decay, exactly as `torch.optim.Adam(weight_decay=λ)`:
//! g ← g + λw; m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²;
//! w ← w − (lr / (1−β₁ᵗ)) · m / (√v / √(1−β₂ᵗ) + ε).

use candle_core::{Result, Tensor, Var};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

pub struct Adam {
    params: Vec<Var>,
    cfg: AdamConfig,
    step: u64,
    m: Vec<Option<Tensor>>,
    v: Vec<Option<Tensor>>,
}

impl Adam {
    pub fn new(params: Vec<Var>, cfg: AdamConfig) -> Self {
        let n = params.len();
        Self { params, cfg, step: 0, m: vec![None; n], v: vec![None; n] }
    }

    pub fn params(&self) -> &[Var] {
        &self.params
    }

    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    pub fn step(&mut self, grads: &[Option<Tensor>]) -> Result<()> {
        if grads.len() != self.params.len() {
            candle_core::bail!("adam: {} gradients for {} parameters", grads.len(), self.params.len());
        }
        let AdamConfig { lr, beta1, beta2, eps, weight_decay } = self.cfg;
        self.step += 1;
        let t = self.step as i32;
        let bc1 = 1.0 - beta1.powi(t);
        let bc2_sqrt = (1.0 - beta2.powi(t)).sqrt();
        for (i, (p, g)) in self.params.iter().zip(grads).enumerate() {
            let Some(g) = g else { continue };
            // Detached, as SGD's: the moments are carried from step to step.
            let w = p.as_tensor().detach();
            let g = g.detach();
            let g = if weight_decay != 0.0 { (g + (&w * weight_decay)?)? } else { g };
            let m = match self.m[i].take() {
                None => (&g * (1.0 - beta1))?,
                Some(m) => ((m * beta1)? + (&g * (1.0 - beta1))?)?,
            };
            let v = match self.v[i].take() {
                None => (g.sqr()? * (1.0 - beta2))?,
                Some(v) => ((v * beta2)? + (g.sqr()? * (1.0 - beta2))?)?,
            };
            let denom = ((v.sqrt()? / bc2_sqrt)? + eps)?;
            let update = (m.div(&denom)? * (lr / bc1))?;
            p.set(&(w - update)?)?;
            self.m[i] = Some(m);
            self.v[i] = Some(v);
        }
        Ok(())
    }

    /// First and second moments as named tensors (`prefix.m.{i}`, `prefix.v.{i}`).
    pub fn state(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, (m, v)) in self.m.iter().zip(&self.v).enumerate() {
            if let (Some(m), Some(v)) = (m, v) {
                out.push((format!("{prefix}.m.{i}"), m.clone()));
                out.push((format!("{prefix}.v.{i}"), v.clone()));
            }
        }
        out
    }

    pub fn load_state(&mut self, prefix: &str, steps: u64, get: impl Fn(&str) -> Option<Tensor>) -> Result<()> {
        self.step = steps;
        for (i, p) in self.params.iter().enumerate() {
            let load = |name: String| -> Result<Option<Tensor>> {
                match get(&name) {
                    Some(t) if t.shape() == p.shape() => Ok(Some(t.to_dtype(p.dtype())?.to_device(p.device())?)),
                    Some(t) => candle_core::bail!("{name} has shape {:?}, expected {:?}", t.dims(), p.dims()),
                    None => Ok(None),
                }
            };
            self.m[i] = load(format!("{prefix}.m.{i}"))?;
            self.v[i] = load(format!("{prefix}.v.{i}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_torch_adam_by_hand() -> Result<()> {
        let cfg = AdamConfig { lr: 0.01, beta1: 0.5, beta2: 0.999, eps: 1e-8, weight_decay: 0.1 };
        let p = Var::new(&[2.0f64], &Device::Cpu)?;
        let mut opt = Adam::new(vec![p.clone()], cfg);
        let (mut w, mut m, mut v) = (2.0f64, 0.0f64, 0.0f64);
        for (t, g) in [0.3f64, -0.7, 0.05].into_iter().enumerate() {
            opt.step(&[Some(Tensor::new(&[g], &Device::Cpu)?)])?;
            let g = g + 0.1 * w;
            m = 0.5 * m + 0.5 * g;
            v = 0.999 * v + 0.001 * g * g;
            let t = (t + 1) as i32;
            w -= 0.01 / (1.0 - 0.5f64.powi(t)) * m / (v.sqrt() / (1.0 - 0.999f64.powi(t)).sqrt() + 1e-8);
            assert!((p.as_tensor().to_vec1::<f64>()?[0] - w).abs() < 1e-14);
        }
        // The moments record no history (they would hold every earlier step's tensors alive).
        assert!(opt.state("a").iter().all(|(_, t)| !t.track_op()));
        Ok(())
    }
}
