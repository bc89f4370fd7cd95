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
use nas_core::config_error::{field, ConfigError};
use nas_core::optim::{self, Adam, AdamConfig};
use nas_core::{Init, ParamStore};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The sub-key of the controller's initialisation stream, apart from the network's weights.
const INIT_STREAM: u64 = 0x656e_6173;

/// What the controller decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ControllerSpec {
    /// ENAS micro search: for each of the two cell types (normal, then reduce), for each of
    /// `nodes` intermediate nodes, two inputs (attention over the 2 + node earlier states) and
    /// two ops (of `ops`).
    Micro { nodes: usize, ops: usize },
    /// One op per edge, in edge order (NAS-Bench-201: 6 edges, 5 ops).
    PerEdge { edges: usize, ops: usize },
}

impl ControllerSpec {
    /// The length of a `Decisions` for this spec.
    pub fn num_decisions(&self) -> usize {
        match *self {
            ControllerSpec::Micro { nodes, .. } => 2 * 4 * nodes,
            ControllerSpec::PerEdge { edges, .. } => edges,
        }
    }

    /// The number of choices at position `pos` of a `Decisions` (None past the end).
    pub fn choices(&self, pos: usize) -> Option<usize> {
        if pos >= self.num_decisions() {
            return None;
        }
        match *self {
            ControllerSpec::Micro { nodes, ops } => {
                let within = pos % (4 * nodes);
                let (node, slot) = (within / 4, within % 4);
                Some(if slot % 2 == 0 { 2 + node } else { ops })
            }
            ControllerSpec::PerEdge { ops, .. } => Some(ops),
        }
    }

    pub fn ops(&self) -> usize {
        match *self {
            ControllerSpec::Micro { ops, .. } | ControllerSpec::PerEdge { ops, .. } => ops,
        }
    }

    fn validate(&self) -> Result<()> {
        let (name, n) = match *self {
            ControllerSpec::Micro { nodes, .. } => ("nodes", nodes),
            ControllerSpec::PerEdge { edges, .. } => ("edges", edges),
        };
        if n == 0 {
            return bad(format!("the controller needs at least one of its {name}"));
        }
        if self.ops() == 0 {
            return bad("the controller needs at least one op to choose from".into());
        }
        Ok(())
    }
}

/// How the parameters are first drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControllerInit {
    /// ENAS: every parameter U(−0.1, 0.1) (the scope's `random_uniform_initializer`), except
    /// `b_soft`, which starts at 10 for the first two ops and 0 for the rest (`b_init`).
    Enas,
    /// AutoDL: `g_emb` (`input_vars`), the first LSTM layer's weights, `w_emb` and the head's
    /// weight U(−0.1, 0.1) (`nn.init.uniform_`); the rest keeps PyTorch's default for
    /// `nn.LSTM` and `nn.Linear` biases, U(−1/√H, 1/√H): deeper LSTM layers' weights, every
    /// LSTM bias, the head's bias. The attention weights (not in AutoDL) are U(−0.1, 0.1).
    AutoDl,
}

/// How ε enters Adam's step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdamEpsilon {
    /// `torch.optim.Adam` (nas_core's `Adam`): ε is added to the bias-corrected √v̂.
    PyTorch,
    /// `tf.train.AdamOptimizer`: ε is added to √v before the step's bias correction (Kingma
    /// & Ba's "ε̂"), so early steps are damped more: the same as PyTorch's with
    /// ε′ = ε / √(1 − β₂ᵗ).
    TensorFlow,
}

/// The controller's hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerConfig {
    pub lstm_size: usize,
    pub lstm_layers: usize,
    /// Whether the LSTM layers have biases (`nn.LSTM` does; ENAS' `stack_lstm` has none).
    pub lstm_bias: bool,
    pub init: ControllerInit,
    /// c in c·tanh(logits); None leaves the logits unsquashed.
    pub tanh_constant: Option<f64>,
    /// Op logits use tanh_constant / op_tanh_reduce.
    pub op_tanh_reduce: f64,
    /// Logits are divided by it before the tanh; None: not at all.
    pub temperature: Option<f64>,
    /// ENAS' `b_soft_no_learn`: a fixed [0.25, 0.25, −0.25, …] added to the normal cell's op
    /// logits (`use_bias=True` for the first sampler only). Micro only.
    pub normal_op_bias: bool,
    pub entropy_weight: f64,
    pub baseline_decay: f64,
    /// The baseline before the first sample; None: the first sample's accuracy (AutoDL).
    pub initial_baseline: Option<f64>,
    pub adam: AdamConfig,
    pub adam_epsilon: AdamEpsilon,
    /// Global gradient-norm clipping before the Adam step; None: no clipping.
    pub grad_clip: Option<f64>,
    /// Samples per update (the search loop's business; the update takes what it is given).
    pub num_aggregate: usize,
    /// Updates per controller phase (the search loop's business too).
    pub train_steps: usize,
}

impl ControllerConfig {
    /// melodyguan/enas, micro search on CIFAR-10.
    pub fn enas_micro() -> Self {
        Self {
            // src/cifar10/main.py builds the controller with lstm_size=64, lstm_num_layers=1
            // (MicroController's own defaults, 32 and 2, are overridden).
            lstm_size: 64,
            lstm_layers: 1,
            // src/common_ops.py `lstm`: one weight on [x, h], no bias.
            lstm_bias: false,
            // micro_controller.py `_create_params`.
            init: ControllerInit::Enas,
            // scripts/cifar10_micro_search.sh: --controller_tanh_constant=1.10,
            // --controller_op_tanh_reduce=2.5.
            tanh_constant: Some(1.10),
            op_tanh_reduce: 2.5,
            // The script sets no --controller_temperature (only the PTB scripts do: 5.0, 2.0);
            // main.py's default is None.
            temperature: None,
            // micro_controller.py: `_build_sampler(use_bias=True)` for the normal cell.
            normal_op_bias: true,
            // scripts/cifar10_micro_search.sh: --controller_entropy_weight=0.0001.
            entropy_weight: 1e-4,
            // main.py: controller_bl_dec default 0.99 (the script does not set it).
            baseline_decay: 0.99,
            // build_trainer: `tf.Variable(0.0)`.
            initial_baseline: Some(0.0),
            adam: AdamConfig {
                // scripts/cifar10_micro_search.sh: --controller_lr=0.0035 (never decayed:
                // main.py passes lr_dec_every=1000000).
                lr: 0.0035,
                // src/utils.py get_train_ops: AdamOptimizer(beta1=0.0, epsilon=1e-3); β₂ is
                // TensorFlow's default.
                beta1: 0.0,
                beta2: 0.999,
                eps: 1e-3,
                // main.py: controller_l2_reg default 0.0.
                weight_decay: 0.0,
            },
            adam_epsilon: AdamEpsilon::TensorFlow,
            // MicroController: clip_mode=None (main.py passes none).
            grad_clip: None,
            // scripts/cifar10_micro_search.sh: --controller_num_aggregate=10,
            // --controller_train_steps=30.
            num_aggregate: 10,
            train_steps: 30,
        }
    }

    /// D-X-Y/AutoDL-Projects, ENAS on NAS-Bench-201.
    pub fn autodl_nb201() -> Self {
        Self {
            // search_model_enas_utils.py Controller defaults: lstm_size=32, lstm_num_layers=2,
            // tanh_constant=2.5, temperature=5.0; `nn.LSTM` has biases.
            lstm_size: 32,
            lstm_layers: 2,
            lstm_bias: true,
            init: ControllerInit::AutoDl,
            tanh_constant: Some(2.5),
            op_tanh_reduce: 1.0,
            temperature: Some(5.0),
            normal_op_bias: false,
            // scripts-search/NAS-Bench-201-algos/ENAS.sh: --controller_entropy_weight 0.0001,
            // --controller_bl_dec 0.99.
            entropy_weight: 1e-4,
            baseline_decay: 0.99,
            // exps/NAS-Bench-201-algos/ENAS.py: `if config.baseline is None: baseline = val_top1`.
            initial_baseline: None,
            // configs/nas-benchmark/algos/ENAS.config: controller_lr 0.001,
            // controller_betas [0, 0.999], controller_eps 0.001 (torch.optim.Adam).
            adam: AdamConfig { lr: 0.001, beta1: 0.0, beta2: 0.999, eps: 1e-3, weight_decay: 0.0 },
            adam_epsilon: AdamEpsilon::PyTorch,
            // ENAS.py train_controller: clip_grad_norm_(controller.parameters(), 5.0).
            grad_clip: Some(5.0),
            // ENAS.sh: --controller_num_aggregate 20, --controller_train_steps 50.
            num_aggregate: 20,
            train_steps: 50,
        }
    }

    /// Checks every value against `spec`; messages name the settings `controller.<field>`.
    pub fn validate(&self, spec: &ControllerSpec) -> Result<()> {
        spec.validate()?;
        let f = |name: &str| field(&format!("controller.{name}"));
        for (name, v) in [
            ("lstm_size", self.lstm_size),
            ("lstm_layers", self.lstm_layers),
            ("num_aggregate", self.num_aggregate),
            ("train_steps", self.train_steps),
        ] {
            if v == 0 {
                return bad(format!("{} must be positive, got 0", f(name)));
            }
        }
        let optional = [
            ("tanh_constant", self.tanh_constant),
            ("temperature", self.temperature),
            ("grad_clip", self.grad_clip),
            ("op_tanh_reduce", Some(self.op_tanh_reduce)),
            ("adam.lr", Some(self.adam.lr)),
            ("adam.eps", Some(self.adam.eps)),
        ];
        for (name, v) in optional {
            if let Some(v) = v.filter(|v| !(v.is_finite() && *v > 0.0)) {
                return bad(format!("{} must be positive and finite, got {v}", f(name)));
            }
        }
        for (name, v) in [("adam.beta1", self.adam.beta1), ("adam.beta2", self.adam.beta2)] {
            if !(0.0..1.0).contains(&v) {
                return bad(format!("{} must lie in [0, 1), got {v}", f(name)));
            }
        }
        if !(0.0..=1.0).contains(&self.baseline_decay) {
            return bad(format!("{} must lie in [0, 1], got {}", f("baseline_decay"), self.baseline_decay));
        }
        let finite = [
            ("entropy_weight", Some(self.entropy_weight)),
            ("initial_baseline", self.initial_baseline),
            ("adam.weight_decay", Some(self.adam.weight_decay)),
        ];
        for (name, v) in finite {
            if let Some(v) = v.filter(|v| !v.is_finite()) {
                return bad(format!("{} must be finite, got {v}", f(name)));
            }
        }
        if self.adam.weight_decay < 0.0 {
            return bad(format!("{} must not be negative, got {}", f("adam.weight_decay"), self.adam.weight_decay));
        }
        if self.normal_op_bias && !matches!(spec, ControllerSpec::Micro { .. }) {
            return bad(format!("{} applies to the micro space's normal cell only", f("normal_op_bias")));
        }
        Ok(())
    }
}

fn bad<T>(msg: String) -> Result<T> {
    Err(Error::Config(ConfigError::new(msg)))
}

fn invalid(msg: String) -> Error {
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

/// Named tensors of a checkpoint.
pub type NamedTensors = Vec<(String, Tensor)>;
/// Named strings of a checkpoint's metadata.
pub type Metadata = Vec<(String, String)>;

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
    spec: ControllerSpec,
    cfg: ControllerConfig,
    dtype: DType,
    device: Device,
    store: ParamStore,
    g_emb: Tensor,
    lstm: Vec<LSTM>,
    w_emb: Tensor,
    head: Linear,
    attention: Option<Attention>,
    normal_bias: Option<Tensor>,
    adam: Adam,
    baseline: Option<f64>,
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

    /// The whole state for a checkpoint: copies of the parameters (`prefix.<name>`) and the
    /// Adam moments (`prefix.adam.m.<i>`, `prefix.adam.v.<i>`) as tensors; the spec, the
    /// Adam step count and the baseline (its f64 bits, or `none`) as metadata.
    pub fn state(&self, prefix: &str) -> candle_core::Result<(NamedTensors, Metadata)> {
        let mut tensors = Vec::new();
        for p in self.store.params() {
            // A copy: the optimiser updates the variables in place.
            tensors.push((format!("{prefix}.{}", p.name), p.value()?.copy()?));
        }
        tensors.extend(self.adam.state(&format!("{prefix}.adam")));
        let spec = serde_json::to_string(&self.spec).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let baseline = self.baseline.map_or_else(|| "none".to_string(), |b| b.to_bits().to_string());
        let meta = vec![
            (format!("{prefix}.spec"), spec),
            (format!("{prefix}.adam_steps"), self.steps().to_string()),
            (format!("{prefix}.baseline_bits"), baseline),
        ];
        Ok((tensors, meta))
    }

    /// Restores what `state(prefix)` saved; all or nothing: on an error the controller is
    /// unchanged. The spec must match (parameter shapes alone cannot tell 4 edges from 6).
    pub fn load_state(
        &mut self,
        prefix: &str,
        tensors: &dyn Fn(&str) -> Option<Tensor>,
        meta: &dyn Fn(&str) -> Option<String>,
    ) -> Result<()> {
        let key = |k: &str| format!("{prefix}.{k}");
        let need = |k: &str| meta(&key(k)).ok_or_else(|| invalid(format!("controller state lacks `{}`", key(k))));
        let spec: ControllerSpec = serde_json::from_str(&need("spec")?)
            .map_err(|e| invalid(format!("controller state `{}`: {e}", key("spec"))))?;
        if spec != self.spec {
            return Err(invalid(format!("controller state is for {spec:?}, this controller decides {:?}", self.spec)));
        }
        let steps_text = need("adam_steps")?;
        let steps: u64 = steps_text
            .parse()
            .map_err(|e| invalid(format!("controller state `{}` = {steps_text:?}: {e}", key("adam_steps"))))?;
        let baseline = match need("baseline_bits")?.as_str() {
            "none" => None,
            s => Some(f64::from_bits(
                s.parse().map_err(|e| invalid(format!("controller state `{}` = {s:?}: {e}", key("baseline_bits"))))?,
            )),
        };
        let mut values = Vec::new();
        for p in self.store.params() {
            let name = key(&p.name);
            let t = tensors(&name).ok_or_else(|| invalid(format!("controller state lacks tensor `{name}`")))?;
            if t.dims() != p.dims() {
                return Err(invalid(format!(
                    "controller state tensor `{name}` has shape {:?}, expected {:?}",
                    t.dims(),
                    p.dims()
                )));
            }
            // A copy, so that loading a controller's own tensors is no self-assignment.
            values.push((p, t.to_dtype(self.dtype)?.to_device(&self.device)?.copy()?));
        }
        let mut adam = Adam::new(self.adam.params().to_vec(), self.cfg.adam);
        adam.load_state(&key("adam"), steps, tensors)
            .map_err(|e| invalid(format!("controller state `{}`: {e}", key("adam"))))?;
        for (p, t) in values {
            p.var.set(&t)?;
        }
        self.adam = adam;
        self.baseline = baseline;
        Ok(())
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

/// One Adam step with ε as `style` wants it. nas_core's Adam adds ε PyTorch's way; for
/// TensorFlow's the optimiser is rebuilt for this step with ε′ = ε/√(1 − β₂ᵗ), its moments
/// and count carried over, which gives TensorFlow's step exactly (up to rounding).
fn adam_step(
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
    use candle_core::Var;

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
