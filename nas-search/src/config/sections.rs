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

/// P-DARTS' stages (chenxin061/pdarts `train_search.py`): stage s searches a network of
/// `layers[s]` cells over `ops_per_edge[s]` ops on every edge, with dropout rate
/// `skip_dropout[s]` after skip_connect; each stage runs `epochs` epochs with α frozen before
/// `arch_start_epoch`, on a fresh network, α and optimisers. A list not given is P-DARTS'.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProgressiveConfig {
    pub layers: Vec<usize>,
    pub ops_per_edge: Vec<usize>,
    pub skip_dropout: Vec<f64>,
}

impl Default for ProgressiveConfig {
    /// P-DARTS' three stages: 5, 11 and 17 cells over 8, 5 and 3 ops, skip dropout 0, 0.4, 0.7.
    fn default() -> Self {
        Self { layers: vec![5, 11, 17], ops_per_edge: vec![8, 5, 3], skip_dropout: vec![0.0, 0.4, 0.7] }
    }
}

impl ProgressiveConfig {
    /// The stage lists' own checks (the space checks the first stage's op count).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::new(m));
        let n = self.layers.len();
        if n == 0 || self.ops_per_edge.len() != n || self.skip_dropout.len() != n {
            return bad(format!(
                "{}, {} and {} must list one value per stage (got {}, {} and {})",
                field("progressive.layers"),
                field("progressive.ops_per_edge"),
                field("progressive.skip_dropout"),
                n,
                self.ops_per_edge.len(),
                self.skip_dropout.len()
            ));
        }
        if self.layers.contains(&0) {
            return bad(format!("{} must be positive", field("progressive.layers")));
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
