//! The architecture step: computes the hypergradient of the validation loss with respect to
//! α by one of the methods of `nas_core::hypergrad` (first order, DARTS' second order,
//! truncated unrolling, Neumann or conjugate-gradient implicit, each using the weight
//! optimiser's current lr, momentum buffers and weight decay) and applies Adam (DARTS §2.3).
//!
//! Every forward of one architecture step starts from the same position of the supernet's
//! random stream (R-DARTS' noise op, P-DARTS' dropout after skip_connect), so the finite
//! differences compare the same random draws (common random numbers); the stream continues
//! from where the last of them left it.

use std::cell::Cell;

use candle_core::{Tensor, Var};
use nas_core::dist;
use nas_core::hypergrad::{
    self, Bilevel, ConjugateGradient, FirstOrder, Grads, Hypergradient, Neumann, OneStageRad, SgdState, TruncatedRad,
};
use nas_core::nn::{correct_count, cross_entropy, Mode};
use nas_core::optim::{Adam, AdamConfig, Sgd};
use search_spaces::Supernet;

use crate::config::{ArchOptimConfig, HypergradConfig, Method};
use crate::step::Batch;
use crate::Result;

/// The supernet with fixed batches (training batches for the virtual steps, one validation
/// batch), as the bilevel problem the hypergradients need. Each batch is a step's
/// micro-batches (`--accumulate`); every gradient is that of the mean loss over them and over
/// the world's ranks (`nas_core::dist::step_grads`), so every method computes the
/// hypergradient of the global batch, and under data parallelism all ranks the same one.
pub struct SupernetProblem<'a> {
    pub net: &'a dyn Supernet,
    pub weights: &'a [Var],
    pub arch: &'a [Var],
    pub train: Vec<Vec<Batch>>,
    pub valid: Vec<Batch>,
    /// The random-stream position every forward starts from.
    pub stream: u64,
    /// Gradient evaluations (forward and backward passes of a whole step) so far.
    pub evals: Cell<usize>,
}

impl<'a> SupernetProblem<'a> {
    /// Batches of one micro-batch each.
    pub fn new(net: &'a dyn Supernet, weights: &'a [Var], arch: &'a [Var], train: &[Batch], valid: &Batch) -> Self {
        Self::with_micro(net, weights, arch, train.iter().map(|b| vec![b.clone()]).collect(), vec![valid.clone()])
    }

    pub fn with_micro(
        net: &'a dyn Supernet,
        weights: &'a [Var],
        arch: &'a [Var],
        train: Vec<Vec<Batch>>,
        valid: Vec<Batch>,
    ) -> Self {
        Self { net, weights, arch, train, valid, stream: net.stream_position(), evals: Cell::new(0) }
    }

    fn grads(&self, micro: &[Batch], want_w: bool, want_a: bool) -> candle_core::Result<Grads> {
        self.evals.set(self.evals.get() + 1);
        let mode = Mode { train: true, grad_weights: want_w, grad_arch: want_a };
        let none: &[Var] = &[];
        let lists = [if want_w { self.weights } else { none }, if want_a { self.arch } else { none }];
        let out = dist::step_grads(micro, &lists, |b| {
            self.net.set_stream_position(self.stream);
            let logits = self.net.forward(&b.x, mode)?;
            let loss = cross_entropy(&logits, &b.y)?;
            Ok(dist::MicroOutput { loss, correct: correct_count(&logits, &b.y)?, n: b.y.dim(0)? })
        })?;
        let take = |vars: &[Var], grads: &[Option<Tensor>]| -> candle_core::Result<Vec<Tensor>> {
            vars.iter()
                .zip(grads)
                .map(|(v, g)| match g {
                    Some(g) => Ok(g.clone()),
                    None => v.as_tensor().zeros_like(),
                })
                .collect()
        };
        Ok(Grads { w: take(lists[0], &out.grads[0])?, a: take(lists[1], &out.grads[1])? })
    }
}

impl Bilevel for SupernetProblem<'_> {
    fn weights(&self) -> &[Var] {
        self.weights
    }

    fn arch(&self) -> &[Var] {
        self.arch
    }

    fn train_batches(&self) -> usize {
        self.train.len()
    }

    fn train_grads_on(&self, k: usize, want_w: bool, want_a: bool) -> candle_core::Result<Grads> {
        let Some(b) = self.train.get(k) else {
            candle_core::bail!("training batch {k} of {} asked for", self.train.len());
        };
        self.grads(b, want_w, want_a)
    }

    fn val_grads(&self, want_w: bool, want_a: bool) -> candle_core::Result<Grads> {
        self.grads(&self.valid, want_w, want_a)
    }
}

/// The method object of a configuration.
fn method(cfg: &HypergradConfig) -> Box<dyn Hypergradient> {
    match cfg.method {
        Method::FirstOrder => Box::new(FirstOrder),
        Method::SecondOrder => Box::new(OneStageRad),
        Method::Unrolled => Box::new(TruncatedRad::new(cfg.unroll_steps)),
        Method::Implicit => Box::new(Neumann { terms: cfg.neumann_steps }),
        Method::ImplicitCg => Box::new(ConjugateGradient::new(cfg.cg_steps, cfg.cg_damping)),
        // The sampling methods learn α in `sampling`, not through an architect; the one
        // `nas bench` times for them is first order, the cost of GDAS' α step.
        Method::Gdas | Method::Snas | Method::Enas | Method::Random => Box::new(FirstOrder),
    }
}

/// The state prefix of the method in checkpoints.
const METHOD_STATE: &str = "hypergrad.";

pub struct Architect {
    method: Box<dyn Hypergradient>,
    weights: Vec<Var>,
    arch: Vec<Var>,
    opt: Adam,
    last_evals: usize,
}

impl Architect {
    /// An architect for the supernet with these weights and architecture parameters.
    pub fn new(
        weights: Vec<Var>,
        arch: Vec<Var>,
        cfg: &ArchOptimConfig,
        hypergrad: impl Into<HypergradConfig>,
    ) -> Self {
        let opt = Adam::new(
            arch.clone(),
            AdamConfig { lr: cfg.lr, beta1: cfg.beta1, beta2: cfg.beta2, eps: 1e-8, weight_decay: cfg.weight_decay },
        );
        Self { method: method(&hypergrad.into()), weights, arch, opt, last_evals: 0 }
    }

    pub fn optimizer(&self) -> &Adam {
        &self.opt
    }

    pub fn optimizer_mut(&mut self) -> &mut Adam {
        &mut self.opt
    }

    /// Training batches one step reads: the current one, then `train_batches() − 1` more.
    pub fn train_batches(&self) -> usize {
        self.method.train_batches()
    }

    /// Gradient evaluations (forward and backward passes) of the last architecture step.
    pub fn last_grad_evals(&self) -> usize {
        self.last_evals
    }

    /// The method's state carried between steps (conjugate gradient's warm start).
    pub fn method_state(&self) -> Vec<(String, Tensor)> {
        self.method.state().into_iter().map(|(n, t)| (format!("{METHOD_STATE}{n}"), t)).collect()
    }

    /// Restores `method_state`; `get` looks a name up in the checkpoint.
    pub fn load_method_state(&mut self, get: &dyn Fn(&str) -> Option<Tensor>) -> Result<()> {
        Ok(self.method.load_state(&|n| get(&format!("{METHOD_STATE}{n}")))?)
    }

    /// The hypergradient of the validation loss with respect to every architecture parameter;
    /// `train` holds the current training batch first, and at least `train_batches()` (the
    /// method refuses fewer).
    pub fn hypergradient(
        &mut self,
        net: &dyn Supernet,
        train: &[Batch],
        valid: &Batch,
        w_opt: &Sgd,
    ) -> Result<Vec<Option<Tensor>>> {
        let train = train.iter().map(|b| vec![b.clone()]).collect();
        self.hypergradient_micro(net, train, vec![valid.clone()], w_opt)
    }

    /// `hypergradient` for batches of micro-batches (`--accumulate`, data parallelism).
    pub fn hypergradient_micro(
        &mut self,
        net: &dyn Supernet,
        train: Vec<Vec<Batch>>,
        valid: Vec<Batch>,
        w_opt: &Sgd,
    ) -> Result<Vec<Option<Tensor>>> {
        let problem = SupernetProblem::with_micro(net, &self.weights, &self.arch, train, valid);
        let cfg = w_opt.config();
        let st = SgdState {
            lr: w_opt.lr(),
            momentum: cfg.momentum,
            weight_decay: cfg.weight_decay,
            momentum_buffers: (0..self.weights.len()).map(|i| w_opt.momentum_buffer(i)).collect(),
        };
        let g = self.method.hypergradient(&problem, &st)?;
        self.last_evals = problem.evals.get();
        Ok(g.into_iter().map(Some).collect())
    }

    /// One architecture update.
    pub fn step(&mut self, net: &dyn Supernet, train: &[Batch], valid: &Batch, w_opt: &Sgd) -> Result<()> {
        let g = self.hypergradient(net, train, valid, w_opt)?;
        self.opt.step(&g)?;
        Ok(())
    }

    /// One architecture update from batches of micro-batches.
    pub fn step_micro(
        &mut self,
        net: &dyn Supernet,
        train: Vec<Vec<Batch>>,
        valid: Vec<Batch>,
        w_opt: &Sgd,
    ) -> Result<()> {
        let g = self.hypergradient_micro(net, train, valid, w_opt)?;
        self.opt.step(&g)?;
        Ok(())
    }
}

/// The largest eigenvalue of ∇²_α L_val on `valid` (R-DARTS' diagnostic), `start` choosing
/// the iteration's start vector. The weights, α, the batch-norm statistics and the random
/// stream are as they were afterwards, so a search with the diagnostic takes the same steps
/// as one without.
pub fn alpha_hessian_eigenvalue(net: &dyn Supernet, valid: &Batch, start: u64) -> Result<f64> {
    let weights = net.weights().weights();
    let arch = net.arch().weights();
    let buffers = net.weights().buffers();
    let _statistics = hypergrad::WeightGuard::restoring(&buffers)?;
    let problem = SupernetProblem::new(net, &weights, &arch, &[], valid);
    let ev = hypergrad::dominant_eigenvalue(&problem, start);
    net.set_stream_position(problem.stream);
    Ok(ev?)
}
