//! The hypergradient family's search step (DARTS Alg. 1): an architecture step on a
//! search-valid batch, then a weight step on the search-train batch. The architecture step
//! computes the hypergradient of the validation loss with respect to α by the method's
//! `nas_core::hypergrad::Hypergradient` rule (first order, DARTS' second order, truncated
//! unrolling, Neumann or conjugate-gradient implicit, each using the weight optimiser's current
//! lr, momentum buffers and weight decay) and applies Adam (DARTS §2.3). Each method of the
//! family is a file that chooses its rule (`MethodSpec::hypergradient`); this one is the rest.
//!
//! Every forward of one architecture step starts from the same position of the supernet's
//! random stream (R-DARTS' noise op, P-DARTS' dropout after skip_connect), so the finite
//! differences compare the same random draws (common random numbers); the stream continues
//! from where the last of them left it.

use std::cell::Cell;
use std::path::Path;

use candle_core::{Tensor, Var};
use nas_core::checkpoint::LoadedTensors;
use nas_core::config_error::field;
use nas_core::dist::{self, StepGrads};
use nas_core::hypergrad::{self, Bilevel, Grads, Hypergradient, SgdState};
use nas_core::nn::{correct_count, cross_entropy, Mode};
use nas_core::optim::Sgd;
use nas_core::ConfigError;
use search_spaces::{ArchSample, Supernet};
use serde_json::{Map, Value};

use super::{ArchAdam, Metadata, MethodContext, NamedTensors, SearchMethod, StepAt, StepBatches, WeightStep};
use crate::config::{ArchOptimConfig, SearchConfig};
use crate::step::{weight_step, Batch};
use crate::{Error, Result};

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

    /// The mean loss over the search-valid micro-batches, across processes (no gradient).
    fn val_loss(&self) -> candle_core::Result<f64> {
        let none: &[Var] = &[];
        let mode = Mode { train: true, grad_weights: false, grad_arch: false };
        let out = dist::step_grads(&self.valid, &[none, none], |b| {
            self.net.set_stream_position(self.stream);
            let logits = self.net.forward(&b.x, mode)?;
            let loss = cross_entropy(&logits, &b.y)?;
            Ok(dist::MicroOutput { loss, correct: correct_count(&logits, &b.y)?, n: b.y.dim(0)? })
        })?;
        out.loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()
    }
}

/// The state prefix of the rule in checkpoints.
const RULE_STATE: &str = "hypergrad.";

/// The architecture step: a hypergradient rule and Adam over α.
pub struct Architect {
    rule: Box<dyn Hypergradient>,
    weights: Vec<Var>,
    arch: Vec<Var>,
    adam: ArchAdam,
    last_evals: usize,
}

impl Architect {
    /// An architect for the supernet with these weights and architecture parameters.
    pub fn new(weights: Vec<Var>, arch: Vec<Var>, cfg: &ArchOptimConfig, rule: Box<dyn Hypergradient>) -> Self {
        let adam = ArchAdam::new(arch.clone(), cfg);
        Self { rule, weights, arch, adam, last_evals: 0 }
    }

    pub fn optimizer(&self) -> &nas_core::optim::Adam {
        self.adam.optimizer()
    }

    /// Training batches one step reads: the current one, then `train_batches() − 1` more.
    pub fn train_batches(&self) -> usize {
        self.rule.train_batches()
    }

    /// Gradient evaluations (forward and backward passes) of the last architecture step.
    pub fn last_grad_evals(&self) -> usize {
        self.last_evals
    }

    /// The hypergradient of the validation loss with respect to every architecture parameter;
    /// `train` holds the current training batch first, and at least `train_batches()` (the
    /// rule refuses fewer).
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
        let g = self.rule.hypergradient(&problem, &sgd_state(w_opt, self.weights.len()))?;
        self.last_evals = problem.evals.get();
        Ok(g.into_iter().map(Some).collect())
    }

    /// Lets a rule that follows the real weight steps (forward mode) follow the one about to be
    /// taken on `train` (its micro-batches) by `w_opt`. Its forwards start from the stream
    /// position the step will start from and leave the batch-norm statistics as they were, so
    /// the step is the one taken without it; their gradient evaluations count to the step's.
    pub fn before_weight_step(&mut self, net: &dyn Supernet, train: &[Batch], w_opt: &Sgd) -> Result<()> {
        if !self.rule.follows_steps() {
            return Ok(());
        }
        let buffers = net.weights().buffers();
        let _statistics = hypergrad::WeightGuard::restoring(&buffers)?;
        let problem = SupernetProblem::with_micro(net, &self.weights, &self.arch, vec![train.to_vec()], Vec::new());
        self.rule.before_step(&problem, &sgd_state(w_opt, self.weights.len()))?;
        net.set_stream_position(problem.stream);
        self.last_evals += problem.evals.get();
        Ok(())
    }

    /// One architecture update.
    pub fn step(&mut self, net: &dyn Supernet, train: &[Batch], valid: &Batch, w_opt: &Sgd) -> Result<()> {
        let g = self.hypergradient(net, train, valid, w_opt)?;
        self.adam.step(&g)
    }

    /// One architecture update from batches of micro-batches, with `term`'s gradient added to
    /// the hypergradient.
    pub fn step_micro(
        &mut self,
        net: &dyn Supernet,
        train: Vec<Vec<Batch>>,
        valid: Vec<Batch>,
        w_opt: &Sgd,
        term: Option<&dyn ArchTerm>,
    ) -> Result<()> {
        let mut g = self.hypergradient_micro(net, train, valid, w_opt)?;
        if let Some(term) = term {
            let grads = term.value(net)?.backward()?;
            for (v, g) in self.arch.iter().zip(g.iter_mut()) {
                if let (Some(t), Some(g)) = (grads.get(v.as_tensor()), g.as_mut()) {
                    *g = (&*g + t)?;
                }
            }
        }
        self.adam.step(&g)
    }
}

/// The SGD state of `w_opt`'s next step over `n` weights.
pub fn sgd_state(w_opt: &Sgd, n: usize) -> SgdState<'_> {
    let cfg = w_opt.config();
    SgdState {
        lr: w_opt.lr(),
        momentum: cfg.momentum,
        weight_decay: cfg.weight_decay,
        momentum_buffers: (0..n).map(|i| w_opt.momentum_buffer(i)).collect(),
    }
}

/// A term of α alone added to the loss of the α step (β-DARTS' β-decay; the hypergradient gets
/// its gradient added), with its own schedule over the epochs.
pub trait ArchTerm {
    /// Prepares epoch `epoch` of a run of `epochs` (its weight's schedule).
    fn begin_epoch(&mut self, _epoch: usize, _epochs: usize) {}
    /// The term, a scalar differentiable in α (from `Supernet::op_logits(Mode::TRAIN_ARCH)`).
    fn value(&self, net: &dyn Supernet) -> candle_core::Result<Tensor>;
    /// Its fields of an epoch's record.
    fn record_fields(&self, _fields: &mut Map<String, Value>) {}
}

/// The mixing weights the weight step runs instead of softmax(α) (SDARTS' perturbed weights);
/// the α step is not touched.
pub trait WeightMixing {
    /// Prepares epoch `epoch` of a run of `epochs` (its schedule).
    fn begin_epoch(&mut self, _epoch: usize, _epochs: usize) {}
    /// The mixing weights of the weight step at `at` on the search-train batch `train` (its
    /// micro-batches), as a sample of weights alone (`ArchSample::weights`).
    fn mixing(&mut self, net: &dyn Supernet, at: StepAt, train: &[Batch]) -> Result<ArchSample>;
    /// Its fields of an epoch's record.
    fn record_fields(&self, _fields: &mut Map<String, Value>) {}
}

/// A method of the hypergradient family: the alternating α and weight steps of an `Architect`,
/// the α step's loss with an optional term of α (`ArchTerm`), the weight step with optional
/// mixing weights of its own (`WeightMixing`).
pub struct Alternating {
    architect: Architect,
    term: Option<Box<dyn ArchTerm>>,
    mixing: Option<Box<dyn WeightMixing>>,
    epochs: usize,
}

impl Alternating {
    /// The family's loop with `rule` as its architecture gradient.
    pub fn new(ctx: &MethodContext, rule: Box<dyn Hypergradient>) -> Self {
        let net = ctx.net;
        let architect = Architect::new(net.weights().weights(), net.arch().weights(), ctx.arch_optimizer, rule);
        Self { architect, term: None, mixing: None, epochs: ctx.epochs }
    }

    /// The same with `term` added to the α step's loss.
    pub fn with_term(self, term: Option<Box<dyn ArchTerm>>) -> Self {
        Self { term, ..self }
    }

    /// The same with the weight step's mixing weights from `mixing`.
    pub fn with_mixing(self, mixing: Box<dyn WeightMixing>) -> Self {
        Self { mixing: Some(mixing), ..self }
    }

    pub fn boxed(self) -> Box<dyn SearchMethod> {
        Box::new(self)
    }
}

impl SearchMethod for Alternating {
    fn extra_train_batches(&self) -> usize {
        self.architect.train_batches().saturating_sub(1)
    }

    fn begin_epoch(&mut self, epoch: usize) {
        if let Some(t) = &mut self.term {
            t.begin_epoch(epoch, self.epochs);
        }
        if let Some(m) = &mut self.mixing {
            m.begin_epoch(epoch, self.epochs);
        }
    }

    fn step(&mut self, net: &dyn Supernet, w: WeightStep, at: StepAt, b: StepBatches) -> Result<StepGrads> {
        if let Some(valid) = b.valid {
            let mut train = vec![b.train.clone()];
            train.extend(b.more_train);
            self.architect.step_micro(net, train, valid, w.opt, self.term.as_deref())?;
            self.architect.before_weight_step(net, &b.train, w.opt)?;
        }
        let arch_done = std::time::Instant::now();
        let sample = match &mut self.mixing {
            Some(m) => Some(m.mixing(net, at, &b.train)?),
            None => None,
        };
        let out = weight_step(net, w.opt, &b.train, w.clip, sample.as_ref())?;
        tracing::debug!(
            epoch = at.epoch,
            step = at.step,
            weight_step_s = arch_done.elapsed().as_secs_f64(),
            "weight step"
        );
        Ok(out)
    }

    fn record_fields(&self, fields: &mut Map<String, Value>) {
        if let Some(t) = &self.term {
            t.record_fields(fields);
        }
        if let Some(m) = &self.mixing {
            m.record_fields(fields);
        }
    }

    /// Adam's moments and steps, and the rule's own state (conjugate gradient's warm start).
    fn state(&self) -> Result<(NamedTensors, Metadata)> {
        let a = &self.architect;
        let (mut tensors, meta) = a.adam.state();
        tensors.extend(a.rule.state().into_iter().map(|(n, t)| (format!("{RULE_STATE}{n}"), t)));
        Ok((tensors, meta))
    }

    fn restore(&mut self, ck: &LoadedTensors, path: &Path) -> Result<()> {
        let a = &mut self.architect;
        a.adam.restore(ck, path)?;
        a.rule
            .load_state(&|n| ck.tensors.get(&format!("{RULE_STATE}{n}")).cloned())
            .map_err(|e| Error::checkpoint(path, e.to_string()))
    }

    fn last_arch_grad_evals(&self) -> usize {
        self.architect.last_grad_evals()
    }
}

/// The methods whose virtual steps follow the weight optimiser refuse Nesterov momentum: their
/// virtual steps are plain momentum SGD.
pub fn plain_momentum(method: &str, s: &SearchConfig) -> std::result::Result<(), ConfigError> {
    if s.weight_optimizer.nesterov {
        return Err(ConfigError::new(format!(
            "{} and the {method} method: its virtual steps are plain momentum SGD",
            field("weight_optimizer.nesterov")
        )));
    }
    Ok(())
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
