//! The ENAS controller (Pham et al. 2018, "Efficient Neural Architecture Search via Parameter
//! Sharing"): an LSTM policy that emits an architecture one decision at a time, trained by
//! REINFORCE against a moving-average baseline.
//!
//! Two decision spaces:
//! - `ControllerSpec::Micro` follows melodyguan/enas `src/cifar10/micro_controller.py`. The
//!   normal cell is sampled first, then the reduce cell, whose sampler continues the LSTM state
//!   the normal one ended with. A cell starts with two LSTM steps on `g_emb` that stand for the
//!   cell's two inputs: their anchors (what the LSTM reads when an input is chosen) are zeros,
//!   their attention keys are `h·w_attn_1`. For each intermediate node the controller then picks
//!   input 1, input 2 (attention: logits `v_attnᵀ tanh(key_j + h·w_attn_2)` over the 2 + node
//!   earlier states), op 1, op 2 (head `h·w_softᵀ + b_soft`), then takes one more LSTM step
//!   on the last op's embedding, whose output becomes the node's anchor and key.
//! - `ControllerSpec::PerEdge` follows D-X-Y/AutoDL-Projects
//!   `xautodl/models/cell_searchs/search_model_enas_utils.py` (NAS-Bench-201): one op per edge,
//!   each LSTM step reading the previous op's embedding (`g_emb` for the first edge).
//!
//! Logits are divided by the temperature, then squashed to `c·tanh(·)` (attention: c =
//! tanh_constant; ops: tanh_constant / op_tanh_reduce); the ENAS normal cell adds a fixed
//! bias to its op logits after that. The log-probability and the entropy of a sample are
//! summed over all its decisions; the entropy carries no gradient (the reference stops it).
//!
//! The update follows `build_trainer` (ENAS) and `train_controller` (AutoDL): reward =
//! accuracy + entropy_weight·entropy; per sample, in order, the baseline moves first,
//! b ← b − (1 − decay)(b − R), and the advantage is R − b; the loss −log p·(R − b) is
//! averaged over the samples of one update (ENAS' `SyncReplicasOptimizer` and AutoDL's
//! `loss / num_aggregate` both average), then one Adam step.
//!
//! Shapes: batch 1 throughout. H = lstm_size; every LSTM layer maps [1, H] to [1, H]; `g_emb`
//! [1, H]; `w_emb` [ops, H]; `w_soft.weight` [ops, H], `w_soft.bias` [ops]; `w_attn_1`,
//! `w_attn_2` [H, H]; `v_attn` [H, 1].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{DType, Device, Tensor};
use candle_nn::rnn::{LSTMConfig, LSTMState, LSTM, RNN};
use candle_nn::{Linear, Module, VarBuilder};
use nas_core::optim::{self, Adam};
use nas_core::{Init, ParamStore};
use rand::Rng;
use serde::{Deserialize, Serialize};

pub use super::controller_config::ControllerConfig;
use super::controller_config::ControllerInit;
pub use search_spaces::ControllerSpec;
use super::tf_adam::adam_step;
use crate::{Error, Result};

/// The sub-key of the controller's initialisation stream, apart from the network's weights.
const INIT_STREAM: u64 = 0x656e_6173;

pub(super) fn invalid(msg: String) -> Error {
    Error::Core(nas_core::Error::Invalid(msg))
}

/// A sampled architecture: the decisions in the reference's `arc_seq` order.
///
/// Micro: the normal cell's 4·nodes entries, then the reduce cell's; per node
/// `[input 1, op 1, input 2, op 2]` (an input indexes the 2 + node earlier states: 0 and 1
/// are the cell's inputs, 2 + k is node k). The controller decides them in the order
/// input 1, input 2, op 1, op 2, but stores them as ENAS' `arc_seq` does
/// (`start_id + 2·i` for input i, `start_id + 2·i + 1` for op i), which is what its child
/// network reads. PerEdge: one op per edge.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Decisions(pub Vec<usize>);

/// One sample of the policy.
#[derive(Debug, Clone)]
pub struct Sample {
    pub decisions: Decisions,
    /// log p(decisions), a scalar connected to the controller's parameters.
    pub log_prob: Tensor,
    /// The entropy of each decision's distribution, summed; no gradient.
    pub entropy: f64,
    /// The controller and its step count when drawn: a gradient through a sample drawn
    /// before an update would mix old activations with new weights.
    origin: (u64, u64),
}


/// What one update did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct UpdateStats {
    pub samples: usize,
    pub mean_accuracy: f64,
    /// Accuracy plus the entropy bonus, averaged.
    pub mean_reward: f64,
    pub mean_entropy: f64,
    /// The baseline after the update's samples.
    pub baseline: f64,
    /// −mean(log p·(R − b)).
    pub loss: f64,
    /// The gradient's global norm before clipping.
    pub grad_norm: f64,
}

struct Attention {
    w_1: Tensor,
    w_2: Tensor,
    v: Tensor,
}

/// The per-decision record of one pass of the policy.
struct Trace {
    decisions: Vec<usize>,
    probs: Vec<Vec<f64>>,
    log_prob: Option<Tensor>,
    entropy: f64,
}

/// Picks the decision at a position from its distribution.
type Choose<'a> = dyn FnMut(usize, &[f64]) -> candle_core::Result<usize> + 'a;

/// Tells controllers apart, so that a sample goes back to the one that drew it.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// The ENAS controller: policy, optimiser and baseline.
pub struct Controller {
    pub(super) spec: ControllerSpec,
    pub(super) cfg: ControllerConfig,
    pub(super) dtype: DType,
    pub(super) device: Device,
    pub(super) store: ParamStore,
    g_emb: Tensor,
    lstm: Vec<LSTM>,
    w_emb: Tensor,
    head: Linear,
    attention: Option<Attention>,
    normal_bias: Option<Tensor>,
    pub(super) adam: Adam,
    pub(super) baseline: Option<f64>,
    id: u64,
}

impl Controller {
    /// A controller in f32 whose parameters are drawn from `seed`.
    pub fn new(spec: ControllerSpec, cfg: ControllerConfig, seed: u64, device: &Device) -> Result<Self> {
        Self::with_dtype(spec, cfg, seed, DType::F32, device)
    }

    /// A controller in `dtype` (f64 for finite-difference checks). The values are drawn on
    /// the host from the seed's ChaCha stream (`ParamStore`), so they do not depend on the
    /// dtype's rounding beyond the cast, nor on candle's generator.
    pub fn with_dtype(
        spec: ControllerSpec,
        cfg: ControllerConfig,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate(&spec)?;
        let (h, ops) = (cfg.lstm_size, spec.ops());
        let store = ParamStore::new(seed, INIT_STREAM);
        let pb = store.builder(dtype, device);
        let small = Init::Uniform(0.1);
        let torch_default = Init::Uniform(1.0 / (h as f64).sqrt());
        let (deep, bias) = match cfg.init {
            ControllerInit::Enas => (small, small),
            ControllerInit::AutoDl => (torch_default, torch_default),
        };

        let g_emb = pb.weight("g_emb", (1, h), small)?;
        let lp = pb.pp("w_lstm");
        let mut lstm_tensors = HashMap::new();
        for l in 0..cfg.lstm_layers {
            let w = if l == 0 { small } else { deep };
            for name in [format!("weight_ih_l{l}"), format!("weight_hh_l{l}")] {
                lstm_tensors.insert(name.clone(), lp.weight(&name, (4 * h, h), w)?);
            }
            if cfg.lstm_bias {
                for name in [format!("bias_ih_l{l}"), format!("bias_hh_l{l}")] {
                    lstm_tensors.insert(name.clone(), lp.weight(&name, 4 * h, bias)?);
                }
            }
        }
        // candle-nn's LSTM (gates i, f, g, o) reads the store's own tensors, so gradients
        // and in-place updates reach it; the reference's gate order (i, f, o, g) differs
        // only by a permutation of rows whose init is symmetric.
        let vb = VarBuilder::from_tensors(lstm_tensors, dtype, device);
        let b_init = cfg.lstm_bias.then_some(candle_nn::Init::Const(0.0));
        let lstm = (0..cfg.lstm_layers)
            .map(|l| {
                let lc =
                    LSTMConfig { layer_idx: l, b_ih_init: b_init, b_hh_init: b_init, ..LSTMConfig::default_no_bias() };
                LSTM::new(h, h, lc, vb.clone())
            })
            .collect::<candle_core::Result<Vec<_>>>()?;

        let w_emb = pb.weight("w_emb", (ops, h), small)?;
        let sp = pb.pp("w_soft");
        let head_w = sp.weight("weight", (ops, h), small)?;
        let head_b = match cfg.init {
            ControllerInit::Enas => {
                let b = sp.weight("bias", ops, Init::Const(0.0))?;
                let init: Vec<f64> = (0..ops).map(|i| if i < 2 { 10.0 } else { 0.0 }).collect();
                set_param(&store, "w_soft.bias", &Tensor::new(init, device)?.to_dtype(dtype)?)?;
                b
            }
            ControllerInit::AutoDl => sp.weight("bias", ops, bias)?,
        };
        let head = Linear::new(head_w, Some(head_b));
        let attention = match spec {
            ControllerSpec::Micro { .. } => Some(Attention {
                w_1: pb.weight("w_attn_1", (h, h), small)?,
                w_2: pb.weight("w_attn_2", (h, h), small)?,
                v: pb.weight("v_attn", (h, 1), small)?,
            }),
            ControllerSpec::PerEdge { .. } => None,
        };
        let normal_bias = if cfg.normal_op_bias {
            let b: Vec<f64> = (0..ops).map(|i| if i < 2 { 0.25 } else { -0.25 }).collect();
            Some(Tensor::from_vec(b, (1, ops), device)?.to_dtype(dtype)?)
        } else {
            None
        };
        let adam = Adam::new(store.weights(), cfg.adam);
        Ok(Self {
            spec,
            cfg,
            dtype,
            device: device.clone(),
            store,
            g_emb,
            lstm,
            w_emb,
            head,
            attention,
            normal_bias,
            adam,
            baseline: cfg.initial_baseline,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    pub fn spec(&self) -> &ControllerSpec {
        &self.spec
    }

    pub fn config(&self) -> &ControllerConfig {
        &self.cfg
    }

    /// The named parameters (`g_emb`, `w_lstm.weight_ih_l0`, …, `w_soft.bias`, `w_attn_1`, …).
    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    /// The moving baseline; None before the first sample when it starts from one.
    pub fn baseline(&self) -> Option<f64> {
        self.baseline
    }

    /// Updates taken (Adam steps).
    pub fn steps(&self) -> u64 {
        self.adam.steps_taken()
    }

    /// Draws an architecture with `rng`.
    pub fn sample(&self, rng: &mut impl Rng) -> candle_core::Result<Sample> {
        let mut draw = |_pos: usize, probs: &[f64]| Ok(categorical(probs, rng.random::<f64>()));
        let trace = self.run(&mut draw)?;
        Ok(Sample {
            decisions: Decisions(trace.decisions),
            log_prob: self.total(trace.log_prob)?,
            entropy: trace.entropy,
            origin: (self.id, self.steps()),
        })
    }

    /// log p(decisions) under the current policy (teacher forcing), connected to the
    /// parameters: what `sample` gave for the same decisions.
    pub fn log_prob(&self, decisions: &Decisions) -> candle_core::Result<Tensor> {
        let trace = self.force(decisions)?;
        self.total(trace.log_prob)
    }

    /// The distribution each decision was drawn from, given the earlier decisions, in the
    /// `Decisions` order (e.g. op probabilities for a plot).
    pub fn distributions(&self, decisions: &Decisions) -> candle_core::Result<Vec<Vec<f64>>> {
        Ok(self.force(decisions)?.probs)
    }

    /// The REINFORCE surrogate −mean(A·log p) over (sample, advantage) pairs: its gradient is
    /// the policy-gradient estimate the update descends.
    pub fn reinforce_loss(&self, terms: &[(&Sample, f64)]) -> candle_core::Result<Tensor> {
        if terms.is_empty() {
            candle_core::bail!("the REINFORCE loss needs at least one sample");
        }
        let mut loss: Option<Tensor> = None;
        for (i, (s, adv)) in terms.iter().enumerate() {
            if s.origin != (self.id, self.steps()) {
                candle_core::bail!(
                    "sample {i} was not drawn by this controller at its current step {} (its \
                     gradient would mix old activations with new weights): draw samples after each update",
                    self.steps()
                );
            }
            let t = (&s.log_prob * *adv)?;
            loss = Some(match loss {
                None => t,
                Some(l) => (l + t)?,
            });
        }
        self.total(loss)? * (-1.0 / terms.len() as f64)
    }

    /// One REINFORCE step from samples drawn at the current step and their accuracies (the
    /// reward before the entropy bonus), in the order they were drawn.
    pub fn update(&mut self, samples: &[(Sample, f64)]) -> Result<UpdateStats> {
        if samples.is_empty() {
            return Err(invalid("a controller update needs at least one sample".into()));
        }
        let decay = self.cfg.baseline_decay;
        let mut baseline = self.baseline;
        let (mut acc_sum, mut reward_sum, mut ent_sum) = (0.0, 0.0, 0.0);
        let mut terms = Vec::with_capacity(samples.len());
        for (i, (s, acc)) in samples.iter().enumerate() {
            if !acc.is_finite() {
                return Err(invalid(format!("controller update: the accuracy of sample {i} is {acc}")));
            }
            let reward = acc + self.cfg.entropy_weight * s.entropy;
            // ENAS updates the baseline before the advantage (`control_dependencies`);
            // AutoDL starts it at the first accuracy.
            let b = match baseline {
                None => *acc,
                Some(b) => b - (1.0 - decay) * (b - reward),
            };
            baseline = Some(b);
            terms.push((s, reward - b));
            acc_sum += acc;
            reward_sum += reward;
            ent_sum += s.entropy;
        }
        let loss = self.reinforce_loss(&terms)?;
        let grads = loss.backward()?;
        let mut grads = optim::grads_for(&grads, self.adam.params());
        let norm = match self.cfg.grad_clip {
            Some(max) => optim::clip_grad_norm(&mut grads, max)?,
            None => optim::global_norm(grads.iter().flatten())?,
        };
        let grad_norm = match norm {
            Some(n) => n.to_dtype(DType::F64)?.to_scalar::<f64>()?,
            None => 0.0,
        };
        adam_step(&mut self.adam, self.cfg.adam, self.cfg.adam_epsilon, &grads)?;
        self.baseline = baseline;
        let n = samples.len() as f64;
        Ok(UpdateStats {
            samples: samples.len(),
            mean_accuracy: acc_sum / n,
            mean_reward: reward_sum / n,
            mean_entropy: ent_sum / n,
            baseline: baseline.unwrap_or(0.0),
            loss: loss.to_dtype(DType::F64)?.to_scalar::<f64>()?,
            grad_norm,
        })
    }

    fn total(&self, sum: Option<Tensor>) -> candle_core::Result<Tensor> {
        match sum {
            Some(t) => Ok(t),
            None => Tensor::zeros((), self.dtype, &self.device),
        }
    }

    fn force(&self, decisions: &Decisions) -> candle_core::Result<Trace> {
        let n = self.spec.num_decisions();
        if decisions.0.len() != n {
            candle_core::bail!("{} decisions given, the controller of {:?} makes {n}", decisions.0.len(), self.spec);
        }
        self.run(&mut |pos, _| Ok(decisions.0[pos]))
    }

    /// One pass of the policy; `choose` picks each decision (sampling or teacher forcing).
    fn run(&self, choose: &mut Choose<'_>) -> candle_core::Result<Trace> {
        let n = self.spec.num_decisions();
        let mut trace = Trace { decisions: vec![0; n], probs: vec![Vec::new(); n], log_prob: None, entropy: 0.0 };
        let mut state = self.lstm.iter().map(|l| l.zero_state(1)).collect::<candle_core::Result<Vec<_>>>()?;
        let op_tanh = self.cfg.tanh_constant.map(|c| c / self.cfg.op_tanh_reduce);
        match (self.spec, &self.attention) {
            (ControllerSpec::PerEdge { edges, .. }, _) => {
                let mut inputs = self.g_emb.clone();
                for edge in 0..edges {
                    let h = self.lstm_step(&inputs, &mut state)?;
                    let logits = self.squash(self.head.forward(&h)?, op_tanh)?;
                    let op = self.decide(&logits, edge, choose, &mut trace)?;
                    inputs = self.w_emb.narrow(0, op, 1)?;
                }
            }
            (ControllerSpec::Micro { nodes, .. }, Some(attn)) => {
                for cell in 0..2 {
                    let base = cell * 4 * nodes;
                    let bias = if cell == 0 { self.normal_bias.as_ref() } else { None };
                    let mut anchors = Vec::with_capacity(nodes + 2);
                    let mut keys = Vec::with_capacity(nodes + 2);
                    for _ in 0..2 {
                        let h = self.lstm_step(&self.g_emb, &mut state)?;
                        keys.push(h.matmul(&attn.w_1)?);
                        anchors.push(h.zeros_like()?);
                    }
                    let mut inputs = self.g_emb.clone();
                    for node in 0..nodes {
                        let k = Tensor::cat(&keys, 0)?;
                        for i in 0..2 {
                            let h = self.lstm_step(&inputs, &mut state)?;
                            let q = k.broadcast_add(&h.matmul(&attn.w_2)?)?.tanh()?.matmul(&attn.v)?;
                            let logits = self.squash(q.reshape((1, node + 2))?, self.cfg.tanh_constant)?;
                            let j = self.decide(&logits, base + 4 * node + 2 * i, choose, &mut trace)?;
                            inputs = anchors[j].clone();
                        }
                        for i in 0..2 {
                            let h = self.lstm_step(&inputs, &mut state)?;
                            let mut logits = self.squash(self.head.forward(&h)?, op_tanh)?;
                            if let Some(b) = bias {
                                logits = (logits + b)?;
                            }
                            let op = self.decide(&logits, base + 4 * node + 2 * i + 1, choose, &mut trace)?;
                            inputs = self.w_emb.narrow(0, op, 1)?;
                        }
                        let h = self.lstm_step(&inputs, &mut state)?;
                        keys.push(h.matmul(&attn.w_1)?);
                        anchors.push(h);
                    }
                }
            }
            (ControllerSpec::Micro { .. }, None) => candle_core::bail!("micro controller without attention weights"),
        }
        Ok(trace)
    }

    /// One step of the stacked LSTM; returns the top layer's output.
    fn lstm_step(&self, x: &Tensor, state: &mut [LSTMState]) -> candle_core::Result<Tensor> {
        let mut input = x.clone();
        for (layer, s) in self.lstm.iter().zip(state.iter_mut()) {
            *s = layer.step(&input, s)?;
            input = s.h().clone();
        }
        Ok(input)
    }

    fn squash(&self, logits: Tensor, tanh_constant: Option<f64>) -> candle_core::Result<Tensor> {
        let logits = match self.cfg.temperature {
            Some(t) => (logits / t)?,
            None => logits,
        };
        match tanh_constant {
            Some(c) => logits.tanh()? * c,
            None => Ok(logits),
        }
    }

    /// Picks the decision at `pos` from logits [1, n] and records it.
    fn decide(
        &self,
        logits: &Tensor,
        pos: usize,
        choose: &mut Choose<'_>,
        trace: &mut Trace,
    ) -> candle_core::Result<usize> {
        let host: Vec<f64> = logits.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
        let max = host.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let exp: Vec<f64> = host.iter().map(|l| (l - max).exp()).collect();
        let z: f64 = exp.iter().sum();
        let probs: Vec<f64> = exp.iter().map(|e| e / z).collect();
        let idx = choose(pos, &probs)?;
        if idx >= probs.len() {
            candle_core::bail!("decision {pos} is {idx}, but there are {} choices there", probs.len());
        }
        trace.entropy -= probs.iter().filter(|p| **p > 0.0).map(|p| p * p.ln()).sum::<f64>();
        let lp = candle_nn::ops::log_softmax(logits, 1)?.narrow(1, idx, 1)?.reshape(())?;
        trace.log_prob = Some(match trace.log_prob.take() {
            None => lp,
            Some(t) => (t + lp)?,
        });
        trace.decisions[pos] = idx;
        trace.probs[pos] = probs;
        Ok(idx)
    }
}

/// The index where the cumulative probability first exceeds `u` ∈ [0, 1); rounding that
/// leaves the sum below `u` falls to the last choice of positive probability.
fn categorical(probs: &[f64], u: f64) -> usize {
    let mut acc = 0.0;
    for (i, p) in probs.iter().enumerate() {
        acc += p;
        if u < acc {
            return i;
        }
    }
    probs.iter().rposition(|p| *p > 0.0).unwrap_or(0)
}

fn set_param(store: &ParamStore, name: &str, value: &Tensor) -> Result<()> {
    let p = store.get(name).ok_or_else(|| invalid(format!("controller has no parameter `{name}`")))?;
    p.var.set(value)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categorical_covers_the_unit_interval() {
        let p = [0.25, 0.0, 0.75];
        assert_eq!(categorical(&p, 0.0), 0);
        assert_eq!(categorical(&p, 0.2499), 0);
        assert_eq!(categorical(&p, 0.25), 2);
        assert_eq!(categorical(&p, 0.999_999_9), 2);
        // A sum rounded below u falls to the last possible choice, never to one of p = 0.
        assert_eq!(categorical(&[0.5, 0.499_999, 0.0], 0.999_999_9), 1);
    }
}
