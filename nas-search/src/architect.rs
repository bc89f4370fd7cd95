//! The architecture step: computes the hypergradient of the validation loss with respect to
//! α and applies Adam (DARTS §2.3). First order: ∇_α L_val(w, α) at the current weights;
//! second order: DARTS' one-step unrolled gradient; implicit: the implicit-function-theorem
//! gradient with a Neumann series (both from `nas_core::hypergrad`, using the weight
//! optimiser's current lr, momentum buffers and weight decay).

use candle_core::{Tensor, Var};
use nas_core::hypergrad::{self, Bilevel, Grads, SgdState};
use nas_core::nn::{cross_entropy, Mode};
use nas_core::optim::{grads_for, Adam, AdamConfig, Sgd};
use search_spaces::Supernet;

use crate::config::{ArchOptimConfig, Method};
use crate::step::Batch;
use crate::Result;

/// The supernet with a fixed batch pair, as the bilevel problem the hypergradients need.
struct SupernetProblem<'a> {
    net: &'a dyn Supernet,
    weights: &'a [Var],
    arch: &'a [Var],
    train: &'a Batch,
    valid: &'a Batch,
}

impl SupernetProblem<'_> {
    fn grads(&self, b: &Batch, want_w: bool, want_a: bool) -> candle_core::Result<Grads> {
        let mode = Mode { train: true, grad_weights: want_w, grad_arch: want_a };
        let loss = cross_entropy(&self.net.forward(&b.x, mode)?, &b.y)?;
        let store = loss.backward()?;
        let take = |vars: &[Var]| -> candle_core::Result<Vec<Tensor>> {
            vars.iter()
                .map(|v| match store.get(v.as_tensor()) {
                    Some(g) => Ok(g.clone()),
                    None => v.as_tensor().zeros_like(),
                })
                .collect()
        };
        Ok(Grads {
            w: if want_w { take(self.weights)? } else { Vec::new() },
            a: if want_a { take(self.arch)? } else { Vec::new() },
        })
    }
}

impl Bilevel for SupernetProblem<'_> {
    fn weights(&self) -> &[Var] {
        self.weights
    }

    fn arch(&self) -> &[Var] {
        self.arch
    }

    fn train_grads(&self, want_w: bool, want_a: bool) -> candle_core::Result<Grads> {
        self.grads(self.train, want_w, want_a)
    }

    fn val_grads(&self, want_w: bool, want_a: bool) -> candle_core::Result<Grads> {
        self.grads(self.valid, want_w, want_a)
    }
}

pub struct Architect {
    method: Method,
    neumann_steps: usize,
    weights: Vec<Var>,
    arch: Vec<Var>,
    opt: Adam,
}

impl Architect {
    /// An architect for the supernet with these weights and architecture parameters.
    pub fn new(weights: Vec<Var>, arch: Vec<Var>, cfg: &ArchOptimConfig, method: Method, neumann_steps: usize) -> Self {
        let opt = Adam::new(
            arch.clone(),
            AdamConfig { lr: cfg.lr, beta1: cfg.beta1, beta2: cfg.beta2, eps: 1e-8, weight_decay: cfg.weight_decay },
        );
        Self { method, neumann_steps, weights, arch, opt }
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
        train: &Batch,
        valid: &Batch,
        w_opt: &Sgd,
    ) -> Result<Vec<Option<Tensor>>> {
        let problem = SupernetProblem { net, weights: &self.weights, arch: &self.arch, train, valid };
        let g = match self.method {
            Method::FirstOrder => {
                let loss = cross_entropy(&net.forward(&valid.x, Mode::TRAIN_ARCH)?, &valid.y)?;
                return Ok(grads_for(&loss.backward()?, &self.arch));
            }
            Method::SecondOrder => {
                let cfg = w_opt.config();
                let st = SgdState {
                    lr: w_opt.lr(),
                    momentum: cfg.momentum,
                    weight_decay: cfg.weight_decay,
                    momentum_buffers: (0..self.weights.len()).map(|i| w_opt.momentum_buffer(i)).collect(),
                };
                hypergrad::second_order_hypergradient(&problem, &st)?
            }
            Method::Implicit => hypergrad::implicit_hypergradient(&problem, w_opt.lr(), self.neumann_steps)?,
        };
        Ok(g.into_iter().map(Some).collect())
    }

    /// One architecture update.
    pub fn step(&mut self, net: &dyn Supernet, train: &Batch, valid: &Batch, w_opt: &Sgd) -> Result<()> {
        let g = self.hypergradient(net, train, valid, w_opt)?;
        self.opt.step(&g)?;
        Ok(())
    }
}
