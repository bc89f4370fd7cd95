//! The sampling methods on the shared supernet: instead of running every op of an edge
//! weighted by softmax(α), each forward samples what runs.
//!
//! - **GDAS** (Dong & Yang 2019; AutoDL-Projects `search_model_gdas.py`): per edge a hard
//!   Gumbel-softmax sample, p = softmax((log_softmax(α) + G)/τ), redrawn while p is not
//!   finite; the arg-max op alone runs, weighted by the straight-through h = one_hot − p̂ + p
//!   (p̂ = p without gradient), and every other op of the edge adds its h (zero in value) to
//!   the edge's output so that its logit gets a gradient, as AutoDL's `forward_gdas`. Each
//!   step trains the weights on a search-train batch, then α (Adam) on a search-valid batch,
//!   each with a fresh sample (AutoDL's order). τ falls linearly from `tau_max` to `tau_min`
//!   over the epochs.
//! - **SNAS** (Xie et al. 2019): the relaxed sample softmax((log_softmax(α) + G)/τ) weights
//!   every op; one forward on a search-train batch gives the gradients of the weights (SGD)
//!   and of α (Adam) alike. τ falls exponentially from `tau_max` to `tau_min`. The optional
//!   resource penalty is λ·Σ Z·c / Σ max c over every edge (c: the op's parameters or
//!   mult-adds, summed over the cells that share α), i.e. λ times the expected cost of the
//!   relaxed child as a fraction of the most expensive one; it is differentiated through the
//!   relaxed sample Z.
//! - **ENAS** (Pham et al. 2018, micro search): the controller (`controller`) samples a child
//!   per search-train batch; the child alone trains the shared weights. After every epoch the
//!   controller takes `controller_steps` REINFORCE updates, each from `controller_aggregate`
//!   children rewarded with their accuracy on a search-valid batch.
//! - **Random sampling** (Li & Talwalkar 2019): a uniformly drawn child per batch: in the
//!   darts space two distinct inputs per node with a non-`none` op each, in nb201 one op of
//!   five per edge.
//!
//! ENAS and random sampling end every epoch by sampling `select_samples` children and keeping
//! the most accurate on one search-valid batch: its genotype is the epoch's. The children's
//! accuracies use batch statistics (training-mode batch norm, as ENAS scores its children), and
//! the running statistics are restored afterwards.
//!
//! Every draw comes from the stream `Purpose::Sample` keyed by (epoch, step and role), so a
//! resumed run draws what the uninterrupted one did without saving generator state.

use candle_core::{DType, Device, Tensor, D};
use nas_core::dist::{step_grads, MicroOutput, StepGrads};
use nas_core::hypergrad::WeightGuard;
use nas_core::nn::{correct_count, cross_entropy, softmax_last_dim, Mode};
use nas_core::ops;
use nas_core::optim::{Adam, AdamConfig, Sgd};
use nas_core::rng::{self, Purpose, Rng};
use rand::seq::index::sample as distinct;
use rand::Rng as _;
use search_spaces::darts::edges::node_edges;
use search_spaces::{ArchSample, Child, ChildShape, Genotype, OpCost, Supernet};
use serde_json::{json, Map, Value};

use crate::config::{ArchOptimConfig, Method, Resource, SamplingConfig};
use crate::controller::{Controller, ControllerConfig, ControllerSpec, Metadata, NamedTensors, Sample};
use crate::step::Batch;
use crate::{Error, Result};

/// The role of a draw: the high bits of the stream's second key (the low bits count).
const WEIGHT_DRAW: u64 = 0;
const ARCH_DRAW: u64 = 1 << 40;
const CONTROLLER_DRAW: u64 = 2 << 40;
const SELECT_DRAW: u64 = 3 << 40;

/// Redraws of a Gumbel sample before a non-finite α is reported.
const MAX_REDRAWS: usize = 100;

/// The temperature of `epoch` of `epochs`: GDAS falls linearly (AutoDL: τ_max − (τ_max −
/// τ_min)·e/(E − 1)), SNAS geometrically, both from τ_max at the first epoch to τ_min at the
/// last.
pub fn temperature(method: Method, (max, min): (f64, f64), epoch: usize, epochs: usize) -> f64 {
    let t = if epochs > 1 { epoch as f64 / (epochs - 1) as f64 } else { 0.0 };
    if method == Method::Snas {
        max * (min / max).powf(t)
    } else {
        max - (max - min) * t
    }
}

/// Standard Gumbel noise −ln(−ln U), U uniform on (0, 1).
fn gumbel(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| loop {
            let u: f64 = rng.random();
            let g = -(-u.ln()).ln();
            if g.is_finite() {
                break g as f32;
            }
        })
        .collect()
}

/// log_softmax over the last dimension (−∞ entries, padding columns, stay −∞).
fn log_softmax(x: &Tensor) -> candle_core::Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}

/// softmax((log_softmax(α) + G)/τ) for Gumbel noise G (a tensor like α), and the
/// probabilities on the host; None when they are not finite.
fn relaxed_with(logits: &Tensor, noise: &Tensor, tau: f64) -> Result<Option<(Tensor, Vec<Vec<f32>>)>> {
    let p = softmax_last_dim(&((log_softmax(logits)? + noise)? / tau)?)?;
    let host = p.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    Ok(host.iter().flatten().all(|v| v.is_finite()).then_some((p, host)))
}

/// The relaxed sample with Gumbel noise from `rng`, redrawn (as AutoDL does) while the
/// probabilities are not finite.
fn relaxed(logits: &Tensor, tau: f64, rng: &mut Rng) -> Result<(Tensor, Vec<Vec<f32>>)> {
    let (e, w) = logits.dims2()?;
    for _ in 0..MAX_REDRAWS {
        let g = Tensor::from_vec(gumbel(rng, e * w), (e, w), logits.device())?.to_dtype(logits.dtype())?;
        if let Some(r) = relaxed_with(logits, &g, tau)? {
            return Ok(r);
        }
    }
    Err(Error::config(format!("the Gumbel-softmax sample stayed non-finite over {MAX_REDRAWS} draws: α is not finite")))
}

/// The hard straight-through weights one_hot − p̂ + p of relaxed probabilities `p`, and the
/// arg-max column of every row (the first of equal ones, as torch's `max`).
fn hard(p: &Tensor, host: &[Vec<f32>]) -> Result<(Tensor, Vec<Vec<usize>>)> {
    let (e, w) = p.dims2()?;
    let index: Vec<usize> = host
        .iter()
        .map(|row| row.iter().enumerate().fold(0, |best, (k, &v)| if v > row[best] { k } else { best }))
        .collect();
    let mut one_hot = vec![0f32; e * w];
    for (r, &k) in index.iter().enumerate() {
        one_hot[r * w + k] = 1.0;
    }
    let one_hot = Tensor::from_vec(one_hot, (e, w), p.device())?.to_dtype(p.dtype())?;
    Ok((((one_hot - p.detach())? + p)?, index.into_iter().map(|k| vec![k]).collect()))
}

/// GDAS' hard sample of every α tensor: the arg-max of the relaxed sample on every edge, with
/// the straight-through weights.
pub fn gdas_sample(logits: &[Tensor], tau: f64, rng: &mut Rng) -> Result<ArchSample> {
    let mut weights = Vec::with_capacity(logits.len());
    let mut chosen = Vec::with_capacity(logits.len());
    for l in logits {
        let (p, host) = relaxed(l, tau, rng)?;
        let (w, c) = hard(&p, &host)?;
        weights.push(w);
        chosen.push(c);
    }
    Ok(ArchSample { weights: Some(weights), chosen: Some(chosen), add_unchosen: true })
}

/// GDAS' hard sample for given Gumbel noise (one tensor like each α tensor); None when the
/// probabilities are not finite (the method would redraw).
pub fn gdas_sample_with(logits: &[Tensor], noise: &[Tensor], tau: f64) -> Result<Option<ArchSample>> {
    let mut weights = Vec::with_capacity(logits.len());
    let mut chosen = Vec::with_capacity(logits.len());
    for (l, g) in logits.iter().zip(noise) {
        let Some((p, host)) = relaxed_with(l, g, tau)? else { return Ok(None) };
        let (w, c) = hard(&p, &host)?;
        weights.push(w);
        chosen.push(c);
    }
    Ok(Some(ArchSample { weights: Some(weights), chosen: Some(chosen), add_unchosen: true }))
}

/// SNAS' relaxed sample for given Gumbel noise; None when it is not finite.
pub fn snas_sample_with(logits: &[Tensor], noise: &[Tensor], tau: f64) -> Result<Option<ArchSample>> {
    let mut weights = Vec::with_capacity(logits.len());
    for (l, g) in logits.iter().zip(noise) {
        let Some((p, _)) = relaxed_with(l, g, tau)? else { return Ok(None) };
        weights.push(p);
    }
    Ok(Some(ArchSample { weights: Some(weights), chosen: None, add_unchosen: false }))
}

/// SNAS' relaxed sample of every α tensor: every op runs, weighted by it.
pub fn snas_sample(logits: &[Tensor], tau: f64, rng: &mut Rng) -> Result<ArchSample> {
    let weights = logits.iter().map(|l| Ok(relaxed(l, tau, rng)?.0)).collect::<Result<Vec<_>>>()?;
    Ok(ArchSample { weights: Some(weights), chosen: None, add_unchosen: false })
}

/// A uniformly drawn child: per α tensor and edge the chosen columns. `edge_ops` names the
/// columns of every edge (`Supernet::edge_ops`).
pub fn uniform_child(edge_ops: &[Vec<Vec<&str>>], shape: ChildShape, rng: &mut Rng) -> Child {
    edge_ops
        .iter()
        .map(|edges| {
            let mut chosen = vec![Vec::new(); edges.len()];
            match shape {
                ChildShape::OneOpPerEdge => {
                    for (e, ops) in edges.iter().enumerate() {
                        chosen[e].push(rng.random_range(0..ops.len()));
                    }
                }
                ChildShape::TwoInputsPerNode { steps } => {
                    for node in 0..steps {
                        let range = node_edges(node);
                        for j in distinct(rng, range.len(), 2) {
                            let e = range.start + j;
                            let real: Vec<usize> = (0..edges[e].len()).filter(|&k| edges[e][k] != "none").collect();
                            chosen[e].push(real[rng.random_range(0..real.len())]);
                        }
                    }
                }
            }
            chosen
        })
        .collect()
}

/// The controller's spec and the columns its op choices stand for: in the darts space the
/// edges' non-`none` ops, which must be the same list on every edge of both cell types; in
/// nb201 the five ops.
fn controller_layout(
    edge_ops: &[Vec<Vec<&'static str>>],
    shape: ChildShape,
) -> Result<(ControllerSpec, Vec<Vec<usize>>)> {
    match shape {
        ChildShape::OneOpPerEdge => {
            let edges = edge_ops.first().map_or(0, Vec::len);
            let ops = edge_ops.first().and_then(|e| e.first()).map_or(0, Vec::len);
            Ok((ControllerSpec::PerEdge { edges, ops }, vec![(0..ops).collect()]))
        }
        ChildShape::TwoInputsPerNode { steps } => {
            let real =
                |ops: &[&'static str]| -> Vec<&'static str> { ops.iter().copied().filter(|o| *o != "none").collect() };
            let first = edge_ops.first().and_then(|e| e.first()).map(|o| real(o)).unwrap_or_default();
            let mut columns = Vec::new();
            for edges in edge_ops {
                for ops in edges {
                    if real(ops) != first {
                        return Err(Error::config(
                            "ENAS chooses from one op list: every edge of both cell types needs the same ops"
                                .to_string(),
                        ));
                    }
                }
                let ops = &edges[0];
                columns.push(first.iter().map(|o| ops.iter().position(|x| x == o).unwrap_or(0)).collect());
            }
            Ok((ControllerSpec::Micro { nodes: steps, ops: first.len() }, columns))
        }
    }
}

/// The most accurate of the sampled children of an epoch (ENAS, random sampling).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Selection {
    pub genotype: Value,
    /// Its accuracy on the selection batch.
    pub acc: f64,
    /// How many children were compared.
    pub samples: usize,
}

/// What the controller did in an epoch (means over its updates).
#[derive(Debug, Clone, Copy, Default)]
struct ControllerEpoch {
    reward: f64,
    entropy: f64,
    baseline: f64,
}

/// A sampling method's state: its α optimiser or controller, and the epoch's temperature.
pub struct Sampler {
    method: Method,
    cfg: SamplingConfig,
    seed: u64,
    epochs: usize,
    tau: f64,
    edge_ops: Vec<Vec<Vec<&'static str>>>,
    shape: ChildShape,
    /// Adam over α (GDAS, SNAS).
    adam: Option<Adam>,
    /// ENAS' controller, and the α column of each of its op choices per cell type.
    controller: Option<(Controller, Vec<Vec<usize>>)>,
    /// SNAS' normalised per-column costs, per α tensor, once the input size is known.
    costs: Option<Vec<Tensor>>,
    selection: Option<Selection>,
    controller_epoch: Option<ControllerEpoch>,
}

/// The checkpoint metadata of a sampler.
const SELECTION_META: &str = "sampling_selection";
const CONTROLLER_PREFIX: &str = "controller";

impl Sampler {
    pub fn new(
        net: &dyn Supernet,
        method: Method,
        cfg: &SamplingConfig,
        arch_optimizer: &ArchOptimConfig,
        seed: u64,
        epochs: usize,
        device: &Device,
    ) -> Result<Self> {
        let edge_ops = net.edge_ops();
        let shape = net.child_shape();
        let adam = matches!(method, Method::Gdas | Method::Snas).then(|| {
            let a = arch_optimizer;
            Adam::new(
                net.arch().weights(),
                AdamConfig { lr: a.lr, beta1: a.beta1, beta2: a.beta2, eps: 1e-8, weight_decay: a.weight_decay },
            )
        });
        let controller = if method == Method::Enas {
            let (spec, columns) = controller_layout(&edge_ops, shape)?;
            let mut ccfg = match shape {
                ChildShape::OneOpPerEdge => ControllerConfig::autodl_nb201(),
                ChildShape::TwoInputsPerNode { .. } => ControllerConfig::enas_micro(),
            };
            ccfg.train_steps = cfg.controller_steps.unwrap_or(ccfg.train_steps);
            ccfg.num_aggregate = cfg.controller_aggregate.unwrap_or(ccfg.num_aggregate);
            Some((Controller::new(spec, ccfg, seed, device)?, columns))
        } else {
            None
        };
        let taus = cfg.taus(method);
        Ok(Self {
            method,
            cfg: cfg.clone(),
            seed,
            epochs,
            tau: temperature(method, taus, 0, epochs),
            edge_ops,
            shape,
            adam,
            controller,
            costs: None,
            selection: None,
            controller_epoch: None,
        })
    }

    /// Sets the epoch's temperature.
    pub fn begin_epoch(&mut self, epoch: usize) {
        self.tau = temperature(self.method, self.cfg.taus(self.method), epoch, self.epochs);
        self.controller_epoch = None;
    }

    /// Whether a step reads a search-valid batch (GDAS' α step).
    pub fn uses_valid_batches(&self) -> bool {
        self.method == Method::Gdas
    }

    fn draw(&self, epoch: usize, key: u64) -> Rng {
        rng::stream(self.seed, Purpose::Sample, epoch as u64, key)
    }

    /// A child of ENAS' controller or a uniform one, as chosen columns.
    fn child(&self, rng: &mut Rng) -> Result<(Child, Option<Sample>)> {
        match &self.controller {
            Some((c, columns)) => {
                let s = c.sample(rng)?;
                let chosen = decisions_to_child(&s.decisions.0, columns, &self.edge_ops, self.shape)?;
                Ok((chosen, Some(s)))
            }
            None => Ok((uniform_child(&self.edge_ops, self.shape, rng), None)),
        }
    }

    /// One search step on a step's micro-batches (`--accumulate`, data parallelism: one
    /// sample per step, the same on every rank); returns the weight step's loss, correct count
    /// and size (SNAS' loss includes its resource penalty).
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        net: &dyn Supernet,
        w_opt: &mut Sgd,
        grad_clip: f64,
        epoch: usize,
        step: usize,
        train: &[Batch],
        valid: Option<&[Batch]>,
    ) -> Result<StepGrads> {
        let mut rng = self.draw(epoch, WEIGHT_DRAW + step as u64);
        match self.method {
            Method::Gdas => {
                let sample = gdas_sample(&net.op_logits(Mode::TRAIN_WEIGHTS)?, self.tau, &mut rng)?;
                let out = weight_step(net, w_opt, grad_clip, train, &sample)?;
                if let Some(v) = valid {
                    let mut rng = self.draw(epoch, ARCH_DRAW + step as u64);
                    let sample = gdas_sample(&net.op_logits(Mode::TRAIN_ARCH)?, self.tau, &mut rng)?;
                    let arch = net.arch().weights();
                    let g = step_grads(v, &[&arch], |b| micro_output(net, b, Mode::TRAIN_ARCH, &sample, None))?;
                    if let Some(adam) = &mut self.adam {
                        adam.step(&g.grads[0])?;
                    }
                }
                Ok(out)
            }
            Method::Snas => {
                let sample = snas_sample(&net.op_logits(Mode::TRAIN_ALL)?, self.tau, &mut rng)?;
                let penalty = match train.first() {
                    Some(b) => self.penalty(net, b, &sample)?,
                    None => None,
                };
                let (weights, arch) = (w_opt.params().to_vec(), net.arch().weights());
                let g = step_grads(train, &[&weights, &arch], |b| {
                    micro_output(net, b, Mode::TRAIN_ALL, &sample, penalty.as_ref())
                })?;
                w_opt.step_clipped(&g.grads[0], grad_clip)?;
                if let Some(adam) = &mut self.adam {
                    adam.step(&g.grads[1])?;
                }
                Ok(g)
            }
            Method::Enas | Method::Random => {
                let (chosen, _) = self.child(&mut rng)?;
                let sample = ArchSample { weights: None, chosen: Some(chosen), add_unchosen: false };
                weight_step(net, w_opt, grad_clip, train, &sample)
            }
            m => Err(Error::config(format!("the {m} method is not a sampling method"))),
        }
    }

    /// SNAS' resource penalty of the relaxed sample (None when its weight is 0).
    fn penalty(&mut self, net: &dyn Supernet, train: &Batch, sample: &ArchSample) -> Result<Option<Tensor>> {
        let lambda = self.cfg.resource_weight;
        if lambda == 0.0 {
            return Ok(None);
        }
        let Some(weights) = &sample.weights else { return Ok(None) };
        if self.costs.is_none() {
            let (_, _, h, w) = train.x.dims4()?;
            self.costs = Some(cost_tensors(&net.op_costs(h, w), self.cfg.resource, &weights[0])?);
        }
        let costs = self.costs.as_deref().unwrap_or_default();
        Ok(Some(resource_penalty(weights, costs, lambda)?))
    }

    /// The end of an epoch: ENAS' controller updates, then (ENAS, random sampling) the
    /// selection of the epoch's genotype. `valid` yields search-valid batches, as many as asked.
    pub fn end_epoch(
        &mut self,
        net: &dyn Supernet,
        epoch: usize,
        valid: &mut dyn FnMut() -> Result<Batch>,
    ) -> Result<()> {
        if !matches!(self.method, Method::Enas | Method::Random) {
            return Ok(());
        }
        let buffers = net.weights().buffers();
        let _statistics = WeightGuard::restoring(&buffers)?;
        if let Some((c, _)) = &self.controller {
            let (steps, aggregate) = (c.config().train_steps, c.config().num_aggregate);
            let mut sums = ControllerEpoch::default();
            for k in 0..steps {
                let mut samples = Vec::with_capacity(aggregate);
                for a in 0..aggregate {
                    let mut rng = self.draw(epoch, CONTROLLER_DRAW + (k * aggregate + a) as u64);
                    let (chosen, s) = self.child(&mut rng)?;
                    let batch = valid()?;
                    let acc = child_accuracy(net, &chosen, &batch)?;
                    samples.extend(s.map(|s| (s, acc)));
                }
                let Some((c, _)) = &mut self.controller else { break };
                let stats = c.update(&samples)?;
                sums.reward += stats.mean_reward / steps as f64;
                sums.entropy += stats.mean_entropy / steps as f64;
                sums.baseline = stats.baseline;
            }
            self.controller_epoch = Some(sums);
        }
        let batch = valid()?;
        let mut best: Option<(f64, Child)> = None;
        for i in 0..self.cfg.select_samples {
            let mut rng = self.draw(epoch, SELECT_DRAW + i as u64);
            let (chosen, _) = self.child(&mut rng)?;
            let acc = child_accuracy(net, &chosen, &batch)?;
            if best.as_ref().is_none_or(|(b, _)| acc > *b) {
                best = Some((acc, chosen));
            }
        }
        if let Some((acc, chosen)) = best {
            let genotype = net.genotype_of(&chosen)?.to_json();
            tracing::info!(epoch, acc, genotype = %genotype, "selected the best sampled child");
            self.selection = Some(Selection { genotype, acc, samples: self.cfg.select_samples });
        }
        Ok(())
    }

    /// The genotype the method returns now: the selected child (ENAS, random sampling) or the
    /// derivation from α.
    pub fn genotype(&self, net: &dyn Supernet) -> Result<Genotype> {
        match (&self.selection, self.method) {
            (Some(s), _) => {
                Genotype::from_json_value(&s.genotype).map_err(|e| Error::config(format!("the selected genotype: {e}")))
            }
            (None, Method::Enas | Method::Random) => {
                // Before the first epoch ends: a uniformly drawn child.
                let mut rng = self.draw(0, SELECT_DRAW);
                Ok(net.genotype_of(&uniform_child(&self.edge_ops, self.shape, &mut rng))?)
            }
            _ => Ok(net.genotype()?),
        }
    }

    /// The method's fields of an epoch's metrics record.
    pub fn record_fields(&self, fields: &mut Map<String, Value>) {
        if matches!(self.method, Method::Gdas | Method::Snas) {
            fields.insert("tau".into(), json!(self.tau));
        }
        if let Some(c) = &self.controller_epoch {
            fields.insert("controller_reward".into(), json!(c.reward));
            fields.insert("controller_entropy".into(), json!(c.entropy));
            fields.insert("controller_baseline".into(), json!(c.baseline));
        }
        if let Some(s) = &self.selection {
            fields.insert("select_acc".into(), json!(s.acc));
        }
    }

    pub fn adam(&self) -> Option<&Adam> {
        self.adam.as_ref()
    }

    pub fn adam_mut(&mut self) -> Option<&mut Adam> {
        self.adam.as_mut()
    }

    /// The controller's tensors and the sampler's metadata for a checkpoint.
    pub fn state(&self) -> Result<(NamedTensors, Metadata)> {
        let (tensors, mut meta) = match &self.controller {
            Some((c, _)) => c.state(CONTROLLER_PREFIX)?,
            None => (Vec::new(), Vec::new()),
        };
        if let Some(s) = &self.selection {
            let text = json!({"genotype": s.genotype, "acc": s.acc, "samples": s.samples}).to_string();
            meta.push((SELECTION_META.to_string(), text));
        }
        Ok((tensors, meta))
    }

    /// Restores `state`.
    pub fn load_state(
        &mut self,
        tensors: &dyn Fn(&str) -> Option<Tensor>,
        meta: &dyn Fn(&str) -> Option<String>,
    ) -> Result<()> {
        if let Some((c, _)) = &mut self.controller {
            c.load_state(CONTROLLER_PREFIX, tensors, meta)?;
        }
        self.selection = match meta(SELECTION_META) {
            Some(text) => Some(
                serde_json::from_str(&text)
                    .map_err(|e| Error::config(format!("{SELECTION_META} of the checkpoint: {e}")))?,
            ),
            None => None,
        };
        Ok(())
    }
}

/// A micro-batch's forward with the ops of `sample`; the loss plus `penalty` when given.
fn micro_output(
    net: &dyn Supernet,
    b: &Batch,
    mode: Mode,
    sample: &ArchSample,
    penalty: Option<&Tensor>,
) -> candle_core::Result<MicroOutput> {
    let logits = net.forward_sampled(&b.x, mode, sample)?;
    let loss = cross_entropy(&logits, &b.y)?;
    let loss = match penalty {
        Some(p) => (loss + p)?,
        None => loss,
    };
    Ok(MicroOutput { loss, correct: correct_count(&logits, &b.y)?, n: b.y.dim(0)? })
}

/// A weight step on a step's micro-batches with the ops of `sample`.
fn weight_step(
    net: &dyn Supernet,
    w_opt: &mut Sgd,
    grad_clip: f64,
    train: &[Batch],
    sample: &ArchSample,
) -> Result<StepGrads> {
    let params = w_opt.params().to_vec();
    let out = step_grads(train, &[&params], |b| micro_output(net, b, Mode::TRAIN_WEIGHTS, sample, None))?;
    w_opt.step_clipped(&out.grads[0], grad_clip)?;
    Ok(out)
}

/// The accuracy of a child on a batch, with batch statistics and no gradients.
fn child_accuracy(net: &dyn Supernet, chosen: &[Vec<Vec<usize>>], batch: &Batch) -> Result<f64> {
    let sample = ArchSample { weights: None, chosen: Some(chosen.to_vec()), add_unchosen: false };
    let mode = Mode { train: true, grad_weights: false, grad_arch: false };
    let logits = net.forward_sampled(&batch.x, mode, &sample)?;
    let correct = correct_count(&logits, &batch.y)?.to_scalar::<f32>()? as f64;
    Ok(correct / batch.y.dim(0)? as f64)
}

/// SNAS' resource penalty λ·Σ_t Σ Z_t ⊙ c_t of relaxed weights Z (one per α tensor) and
/// normalised costs c (`cost_tensors`).
pub fn resource_penalty(weights: &[Tensor], costs: &[Tensor], lambda: f64) -> Result<Tensor> {
    if weights.len() != costs.len() {
        return Err(Error::config(format!("{} weight tensors for {} cost tensors", weights.len(), costs.len())));
    }
    let mut total: Option<Tensor> = None;
    for (z, c) in weights.iter().zip(costs) {
        total = Some(ops::accumulate(total, (z * c)?.sum_all()?, None)?);
    }
    match total {
        Some(t) => Ok((t * lambda)?),
        None => Err(Error::config("a resource penalty of no α tensors".to_string())),
    }
}

/// The per-column costs as (E, width) tensors like `like`, divided by the cost of the most
/// expensive child (the sum of every edge's largest cost).
pub fn cost_tensors(costs: &[Vec<Vec<OpCost>>], resource: Resource, like: &Tensor) -> Result<Vec<Tensor>> {
    let value = |c: &OpCost| match resource {
        Resource::Params => c.params,
        Resource::MultAdds => c.mult_adds,
    };
    let most: f64 = costs.iter().flatten().map(|row| row.iter().map(value).fold(0.0, f64::max)).sum();
    if most <= 0.0 {
        return Err(Error::config(format!("SNAS' {resource} penalty: no op of the supernet has a cost")));
    }
    costs
        .iter()
        .map(|rows| {
            let width = rows.iter().map(Vec::len).max().unwrap_or(0);
            let flat: Vec<f32> = rows
                .iter()
                .flat_map(|r| (0..width).map(move |k| r.get(k).map_or(0.0, |c| (value(c) / most) as f32)))
                .collect();
            Ok(Tensor::from_vec(flat, (rows.len(), width), like.device())?.to_dtype(like.dtype())?)
        })
        .collect()
}

/// The chosen columns of the controller's decisions (`Controller`'s order).
fn decisions_to_child(
    decisions: &[usize],
    columns: &[Vec<usize>],
    edge_ops: &[Vec<Vec<&str>>],
    shape: ChildShape,
) -> Result<Child> {
    let bad = || Error::config(format!("the controller's decisions {decisions:?} do not fit the space"));
    let mut chosen: Child = edge_ops.iter().map(|e| vec![Vec::new(); e.len()]).collect();
    match shape {
        ChildShape::OneOpPerEdge => {
            for (e, &op) in decisions.iter().enumerate() {
                let col = *columns[0].get(op).ok_or_else(bad)?;
                chosen[0].get_mut(e).ok_or_else(bad)?.push(col);
            }
        }
        ChildShape::TwoInputsPerNode { steps } => {
            // Per cell type and node, as ENAS' arc_seq: input 1, op 1, input 2, op 2.
            let mut d = decisions.iter().copied();
            for (t, cell) in chosen.iter_mut().enumerate() {
                for node in 0..steps {
                    let (i1, o1, i2, o2) = (d.next(), d.next(), d.next(), d.next());
                    let (Some(i1), Some(i2), Some(o1), Some(o2)) = (i1, i2, o1, o2) else { return Err(bad()) };
                    for (input, op) in [(i1, o1), (i2, o2)] {
                        if input >= node + 2 {
                            return Err(bad());
                        }
                        let col = *columns[t].get(op).ok_or_else(bad)?;
                        cell[node_edges(node).start + input].push(col);
                    }
                }
            }
        }
    }
    Ok(chosen)
}
