//! The ENAS controller's hyper-parameters (`ControllerConfig`) with the two references'
//! settings, each value traced to its source: melodyguan/enas' micro search on CIFAR-10 and
//! AutoDL-Projects' ENAS on NAS-Bench-201.

use nas_core::config_error::{field, ConfigError};
use nas_core::optim::AdamConfig;
use search_spaces::ControllerSpec;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

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
        validate_spec(spec)?;
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


/// A spec the controller can decide: at least one node or edge, and one op.
fn validate_spec(spec: &ControllerSpec) -> Result<()> {
    let (name, n) = match *spec {
        ControllerSpec::Micro { nodes, .. } => ("nodes", nodes),
        ControllerSpec::PerEdge { edges, .. } => ("edges", edges),
    };
    if n == 0 {
        return bad(format!("the controller needs at least one of its {name}"));
    }
    if spec.ops() == 0 {
        return bad("the controller needs at least one op to choose from".into());
    }
    Ok(())
}

fn bad<T>(msg: String) -> Result<T> {
    Err(Error::Config(ConfigError::new(msg)))
}
