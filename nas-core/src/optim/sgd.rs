//! SGD with momentum and coupled weight decay, exactly as `torch.optim.SGD` (dampening 0,
//! no Nesterov): d = g + λw; m = d on the first step, else μm + d; w ← w − lr·m.

#[cfg(feature = "cuda")]
use candle_core::DType;
use candle_core::{Result, Tensor, Var};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SgdConfig {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
}

pub struct Sgd {
    params: Vec<Var>,
    cfg: SgdConfig,
    lr: f64,
    /// Nesterov momentum (torch's `nesterov=True`): the step is d + μ·m instead of m.
    nesterov: bool,
    momentum_buffers: Vec<Option<Tensor>>,
}

impl Sgd {
    pub fn new(params: Vec<Var>, cfg: SgdConfig) -> Self {
        let n = params.len();
        Self { params, cfg, lr: cfg.lr, nesterov: false, momentum_buffers: vec![None; n] }
    }

    /// With Nesterov momentum, as torch's SGD(nesterov=True).
    pub fn with_nesterov(mut self, nesterov: bool) -> Self {
        self.nesterov = nesterov;
        self
    }

    pub fn nesterov(&self) -> bool {
        self.nesterov
    }

    pub fn params(&self) -> &[Var] {
        &self.params
    }

    pub fn config(&self) -> SgdConfig {
        self.cfg
    }

    pub fn lr(&self) -> f64 {
        self.lr
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// The momentum buffer of parameter `i` (None before its first step).
    pub fn momentum_buffer(&self, i: usize) -> Option<&Tensor> {
        self.momentum_buffers.get(i).and_then(|b| b.as_ref())
    }

    pub fn step(&mut self, grads: &[Option<Tensor>]) -> Result<()> {
        if grads.len() != self.params.len() {
            candle_core::bail!("sgd: {} gradients for {} parameters", grads.len(), self.params.len());
        }
        let SgdConfig { momentum, weight_decay, .. } = self.cfg;
        for ((p, g), buf) in self.params.iter().zip(grads).zip(self.momentum_buffers.iter_mut()) {
            let Some(g) = g else { continue };
            // Detached: the momentum buffer is carried from step to step, and a value derived
            // from the variable itself would keep every earlier step's tensors alive through
            // its recorded history (resident memory grew by ~4 weight copies per step).
            let w = p.as_tensor().detach();
            let g = g.detach();
            let d = if weight_decay != 0.0 { (g + (&w * weight_decay)?)? } else { g };
            let d = if momentum != 0.0 {
                let m = match buf.take() {
                    None => d.clone(),
                    Some(m) => ((m * momentum)? + &d)?,
                };
                *buf = Some(m.clone());
                if self.nesterov {
                    (d + (m * momentum)?)?
                } else {
                    m
                }
            } else {
                d
            };
            p.set(&(w - (d * self.lr)?)?)?;
        }
        Ok(())
    }

    /// One step on the gradients clipped to global norm `max_norm` (none when ≤ 0), as
    /// `clip_grad_norm` then `step`. On CUDA (f32, f64) the whole step is a few multi-tensor
    /// kernel launches that update weights and momentum buffers in place (buffers start at
    /// zero, which gives torch's first step m = d); elsewhere it is the two calls.
    pub fn step_clipped(&mut self, grads: &[Option<Tensor>], max_norm: f64) -> Result<()> {
        if grads.len() != self.params.len() {
            candle_core::bail!("sgd: {} gradients for {} parameters", grads.len(), self.params.len());
        }
        #[cfg(feature = "cuda")]
        if !self.nesterov
            && self.params.first().is_some_and(|p| p.device().is_cuda() && matches!(p.dtype(), DType::F32 | DType::F64))
        {
            return self.step_fused(grads, max_norm);
        }
        let mut grads = grads.to_vec();
        if max_norm > 0.0 {
            super::clip_grad_norm(&mut grads, max_norm)?;
        }
        self.step(&grads)
    }

    #[cfg(feature = "cuda")]
    fn step_fused(&mut self, grads: &[Option<Tensor>], max_norm: f64) -> Result<()> {
        let (mut params, mut gs, mut moms) = (Vec::new(), Vec::new(), Vec::new());
        for ((p, g), buf) in self.params.iter().zip(grads).zip(self.momentum_buffers.iter_mut()) {
            let Some(g) = g else { continue };
            let m = match buf {
                Some(m) => m.clone(),
                None => buf.insert(p.as_tensor().zeros_like()?).clone(),
            };
            params.push(p.as_tensor().clone());
            gs.push(g.contiguous()?);
            moms.push(m);
        }
        let SgdConfig { momentum, weight_decay, .. } = self.cfg;
        let step = crate::ops::cuda::optim::SgdStep { lr: self.lr, momentum, weight_decay, max_norm: Some(max_norm) };
        crate::ops::cuda::optim::glue::sgd_step(&params, &gs, &moms, &step)
    }

    /// Momentum buffers as named tensors for a checkpoint (`prefix.{i}`).
    pub fn state(&self, prefix: &str) -> Vec<(String, Tensor)> {
        self.momentum_buffers
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.as_ref().map(|b| (format!("{prefix}.{i}"), b.clone())))
            .collect()
    }

    /// Restores momentum buffers saved by `state`.
    pub fn load_state(&mut self, prefix: &str, get: impl Fn(&str) -> Option<Tensor>) -> Result<()> {
        for (i, (p, b)) in self.params.iter().zip(self.momentum_buffers.iter_mut()).enumerate() {
            *b = match get(&format!("{prefix}.{i}")) {
                Some(t) if t.shape() == p.shape() => Some(t.to_dtype(p.dtype())?.to_device(p.device())?),
                Some(t) => candle_core::bail!("momentum buffer {i} has shape {:?}, expected {:?}", t.dims(), p.dims()),
                None => None,
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Two steps by hand: w=1, g=0.5 then g=0.25, lr 0.1, μ 0.9, λ 0.01.
    #[test]
    fn matches_torch_sgd_by_hand() -> Result<()> {
        let p = Var::new(&[1.0f64], &Device::Cpu)?;
        let mut opt = Sgd::new(vec![p.clone()], SgdConfig { lr: 0.1, momentum: 0.9, weight_decay: 0.01 });
        opt.step(&[Some(Tensor::new(&[0.5f64], &Device::Cpu)?)])?;
        let d1 = 0.5 + 0.01 * 1.0;
        let w1 = 1.0 - 0.1 * d1;
        assert!((p.as_tensor().to_vec1::<f64>()?[0] - w1).abs() < 1e-15);
        opt.step(&[Some(Tensor::new(&[0.25f64], &Device::Cpu)?)])?;
        let m2 = 0.9 * d1 + (0.25 + 0.01 * w1);
        let w2 = w1 - 0.1 * m2;
        assert!((p.as_tensor().to_vec1::<f64>()?[0] - w2).abs() < 1e-15);
        opt.step(&[None])?;
        assert!((p.as_tensor().to_vec1::<f64>()?[0] - w2).abs() < 1e-15);
        // The buffer records no history (it would hold every earlier step's tensors alive).
        assert!(!opt.momentum_buffer(0).unwrap().track_op());
        Ok(())
    }

    /// torch.optim.SGD(nesterov=True): b = μb + d, then w −= lr·(d + μb); the same two steps.
    #[test]
    fn nesterov_matches_torch_sgd_by_hand() -> Result<()> {
        let p = Var::new(&[1.0f64], &Device::Cpu)?;
        let cfg = SgdConfig { lr: 0.1, momentum: 0.9, weight_decay: 0.01 };
        let mut opt = Sgd::new(vec![p.clone()], cfg).with_nesterov(true);
        opt.step(&[Some(Tensor::new(&[0.5f64], &Device::Cpu)?)])?;
        let d1 = 0.5 + 0.01 * 1.0;
        let b1 = d1;
        let w1 = 1.0 - 0.1 * (d1 + 0.9 * b1);
        assert!((p.as_tensor().to_vec1::<f64>()?[0] - w1).abs() < 1e-15);
        opt.step_clipped(&[Some(Tensor::new(&[0.25f64], &Device::Cpu)?)], 0.0)?;
        let d2 = 0.25 + 0.01 * w1;
        let b2 = 0.9 * b1 + d2;
        let w2 = w1 - 0.1 * (d2 + 0.9 * b2);
        assert!((p.as_tensor().to_vec1::<f64>()?[0] - w2).abs() < 1e-15);
        // The buffer is the plain momentum buffer, as torch keeps it.
        assert!((opt.momentum_buffer(0).unwrap().to_vec1::<f64>()?[0] - b2).abs() < 1e-15);
        Ok(())
    }
}
