//! The architecture step: computes the hypergradient of the validation loss with respect to
//! α and applies Adam (DARTS §2.3). First order: ∇_α L_val(w, α) at the current weights.

use candle_core::{Tensor, Var};
use nas_core::nn::{cross_entropy, Mode};
use nas_core::optim::{grads_for, Adam, AdamConfig, Sgd};
use search_spaces::Supernet;

use crate::config::{ArchOptimConfig, Method};
use crate::error::Result;

/// A batch on the device: images (B, C, H, W) and labels (B,) u32.
#[derive(Debug, Clone)]
pub struct Batch {
    pub x: Tensor,
    pub y: Tensor,
}

pub struct Architect {
    method: Method,
    arch: Vec<Var>,
    opt: Adam,
}

impl Architect {
    pub fn new(arch: Vec<Var>, cfg: &ArchOptimConfig, method: Method) -> Self {
        let opt = Adam::new(
            arch.clone(),
            AdamConfig { lr: cfg.lr, beta1: cfg.beta1, beta2: cfg.beta2, eps: 1e-8, weight_decay: cfg.weight_decay },
        );
        Self { method, arch, opt }
    }

    pub fn optimizer(&self) -> &Adam {
        &self.opt
    }

    pub fn optimizer_mut(&mut self) -> &mut Adam {
        &mut self.opt
    }

    /// The hypergradient of the validation loss with respect to every architecture parameter.
    pub fn hypergradient(
        &self,
        net: &dyn Supernet,
        _train: &Batch,
        valid: &Batch,
        _w_opt: &Sgd,
    ) -> Result<Vec<Option<Tensor>>> {
        match self.method {
            Method::FirstOrder => {
                let loss = cross_entropy(&net.forward(&valid.x, Mode::TRAIN_ARCH)?, &valid.y)?;
                Ok(grads_for(&loss.backward()?, &self.arch))
            }
            m => Err(crate::Error::Config(format!("method {m} is not available yet"))),
        }
    }

    /// One architecture update.
    pub fn step(&mut self, net: &dyn Supernet, train: &Batch, valid: &Batch, w_opt: &Sgd) -> Result<()> {
        let g = self.hypergradient(net, train, valid, w_opt)?;
        self.opt.step(&g)?;
        Ok(())
    }
}

/// One SGD step on the weights with global-norm clipping; returns the loss (scalar tensor)
/// and the logits of the batch.
pub fn weight_step(net: &dyn Supernet, opt: &mut Sgd, batch: &Batch, grad_clip: f64) -> Result<(Tensor, Tensor)> {
    let logits = net.forward(&batch.x, Mode::TRAIN_WEIGHTS)?;
    let loss = cross_entropy(&logits, &batch.y)?;
    let mut grads = grads_for(&loss.backward()?, opt.params());
    if grad_clip > 0.0 {
        nas_core::optim::clip_grad_norm(&mut grads, grad_clip)?;
    }
    opt.step(&grads)?;
    Ok((loss, logits))
}
