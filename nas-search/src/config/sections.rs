//! The sections of a search configuration besides the method and the model: the data, Adam on
//! α, DARTS-ES early stopping and P-DARTS' stages.

use nas_core::config_error::field;
use nas_core::data::DataSpec;
use nas_core::ConfigError;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    pub spec: DataSpec,
    /// Use only the first N training images (split 50/50 into search-train and search-valid).
    pub subset: Option<usize>,
    /// The micro-batch of one forward (per process under data parallelism).
    pub batch_size: usize,
    /// Micro-batches per optimiser step (`--accumulate`): the step's batch is
    /// accumulate × batch_size × ranks.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub accumulate: usize,
    /// Side images of a folder dataset come out at (resized in memory, or cropped when
    /// streamed).
    #[serde(default = "size32", skip_serializing_if = "is_32")]
    pub image_size: usize,
    /// Per class, the fractions of the training images that train the weights and the α
    /// (PC-DARTS on ImageNet: 0.1 and 0.025), drawn disjointly from the seed, instead of the
    /// two halves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset_fraction: Option<[f64; 2]>,
}

fn one() -> usize {
    1
}

fn is_one(v: &usize) -> bool {
    *v == 1
}

fn size32() -> usize {
    32
}

fn is_32(v: &usize) -> bool {
    *v == 32
}

/// Adam for the architecture parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchOptimConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub weight_decay: f64,
}

/// When a search ends before its last epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EarlyStop {
    /// Never: every epoch runs.
    #[default]
    None,
    /// R-DARTS' DARTS-ES: stop when the local average of the α-Hessian's dominant eigenvalue
    /// has grown by more than 1.3× (`early_stop`).
    DartsEs,
}

nas_core::named_enum!(EarlyStop, "early stop", [EarlyStop::None => "none", EarlyStop::DartsEs => "darts-es"]);

/// The stages of a progressive search. P-DARTS (chenxin061/pdarts `train_search.py`): stage s
/// searches a network of `layers[s]` cells over `ops_per_edge[s]` ops on every edge, with
/// dropout rate `skip_dropout[s]` after skip_connect; each stage runs `epochs` epochs with α
/// frozen before `arch_start_epoch`, on a fresh network, α and optimisers. DrNAS
/// (xiangning-chen/DrNAS `DARTS-space/train_search.py`, `net2wider`): the stages continue one
/// network, each with its own partial channels `partial_channels[s]` (6 then 4), widened by
/// Net2Wider between stages. A list not given is P-DARTS'; `layers`, `skip_dropout` and
/// `partial_channels` may be empty: `model.layers`, no dropout and `model.partial_channels` in
/// every stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProgressiveConfig {
    pub layers: Vec<usize>,
    pub ops_per_edge: Vec<usize>,
    pub skip_dropout: Vec<f64>,
    /// The partial-channel factor K of each stage.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub partial_channels: Vec<usize>,
    /// DrNAS: stage s + 1 continues stage s — its supernet's weights and their momentum widened
    /// to the new partial channels (Net2Wider: the new channels copy random old ones), its
    /// buffers, α and the architecture optimiser's state on the ops kept, its random stream —
    /// and the stages are the epochs of one run (one learning-rate schedule over all of them,
    /// α frozen for the first `arch_start_epoch` of each). False: P-DARTS' fresh stages.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub net2wider: bool,
}

impl Default for ProgressiveConfig {
    /// P-DARTS' three stages: 5, 11 and 17 cells over 8, 5 and 3 ops, skip dropout 0, 0.4, 0.7.
    fn default() -> Self {
        Self {
            layers: vec![5, 11, 17],
            ops_per_edge: vec![8, 5, 3],
            skip_dropout: vec![0.0, 0.4, 0.7],
            partial_channels: Vec::new(),
            net2wider: false,
        }
    }
}

impl ProgressiveConfig {
    /// The number of stages.
    pub fn stages(&self) -> usize {
        self.ops_per_edge.len()
    }

    /// The cells of stage `s`'s network (`model_layers`: the model's).
    pub fn layers_of(&self, s: usize, model_layers: usize) -> usize {
        self.layers.get(s).copied().unwrap_or(model_layers)
    }

    /// The dropout rate after skip_connect of stage `s`.
    pub fn skip_dropout_of(&self, s: usize) -> f64 {
        self.skip_dropout.get(s).copied().unwrap_or(0.0)
    }

    /// The stage lists' own checks (the space checks the first stage's op count).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::new(m));
        let n = self.stages();
        let per_stage = |len: usize| len == n || len == 0;
        if n == 0
            || !per_stage(self.layers.len())
            || !per_stage(self.skip_dropout.len())
            || !per_stage(self.partial_channels.len())
        {
            return bad(format!(
                "{}, {}, {} and {} must list one value per stage (got {}, {}, {} and {}; all but the \
                 ops may be empty)",
                field("progressive.ops_per_edge"),
                field("progressive.layers"),
                field("progressive.skip_dropout"),
                field("progressive.partial_channels"),
                n,
                self.layers.len(),
                self.skip_dropout.len(),
                self.partial_channels.len()
            ));
        }
        if self.layers.contains(&0) {
            return bad(format!("{} must be positive", field("progressive.layers")));
        }
        if self.partial_channels.contains(&0) {
            return bad(format!("{} must be positive", field("progressive.partial_channels")));
        }
        if self.net2wider {
            if self.layers.windows(2).any(|w| w[1] != w[0]) {
                return bad(format!(
                    "{} continues one network: {} must be the same in every stage, got {:?}",
                    field("progressive.net2wider"),
                    field("progressive.layers"),
                    self.layers
                ));
            }
            if self.partial_channels.windows(2).any(|w| w[1] > w[0]) {
                return bad(format!(
                    "{} only widens: {} must not grow from stage to stage, got {:?}",
                    field("progressive.net2wider"),
                    field("progressive.partial_channels"),
                    self.partial_channels
                ));
            }
            if self.skip_dropout.iter().any(|&p| p != 0.0) {
                return bad(format!(
                    "{} has no dropout after skip_connect (P-DARTS' schedule is per fresh stage): {} must be 0",
                    field("progressive.net2wider"),
                    field("progressive.skip_dropout")
                ));
            }
        }
        if self.ops_per_edge.windows(2).any(|w| w[1] >= w[0]) || self.ops_per_edge.last() == Some(&0) {
            return bad(format!(
                "{} must decrease from stage to stage and stay positive, got {:?}",
                field("progressive.ops_per_edge"),
                self.ops_per_edge
            ));
        }
        if self.skip_dropout.iter().any(|p| !p.is_finite() || !(0.0..1.0).contains(p)) {
            return bad(format!(
                "{} must be in [0, 1), got {:?}",
                field("progressive.skip_dropout"),
                self.skip_dropout
            ));
        }
        Ok(())
    }
}
