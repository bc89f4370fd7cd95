//! The size and options of the networks a run builds, the same settings for every space: the
//! `model` section of a search run's and of a training run's config.json. The spaces check them
//! (`SpaceKind::validate_search`, `SpaceKind::validate_eval`, whose messages name the fields
//! as `model.<field>`) and build from them.

use serde::{Deserialize, Serialize};

/// The supernet of a search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchModelConfig {
    /// Initial channels C.
    pub channels: usize,
    /// Number of cells L (darts); cells per stage N (nb201).
    pub layers: usize,
    /// Intermediate nodes per cell.
    pub steps: usize,
    /// PC-DARTS channel fraction 1/K (1 = all channels).
    pub partial_channels: usize,
    /// PC-DARTS edge normalisation (β).
    pub edge_norm: bool,
    /// Optional cap on skip connections in the derived normal cell (P-DARTS style).
    pub max_skip_connect: Option<usize>,
    /// The candidate ops of the edges (darts); None: every op of the space on every edge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<OpsConfig>,
    /// The stem (darts): `model_search.py`'s CIFAR stem or PC-DARTS' ImageNet stems
    /// (`model_search_imagenet.py`). Absent (CIFAR) in the config.json files written before
    /// it existed, and left out when CIFAR.
    #[serde(default, skip_serializing_if = "NetKind::is_cifar")]
    pub net: NetKind,
}

/// `model.ops`: one op list for every edge, or a list per edge of each cell type (rows in the
/// space's edge order), by op name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OpsConfig {
    Uniform(Vec<String>),
    PerEdge { normal: Vec<Vec<String>>, reduce: Vec<Vec<String>> },
}

/// The network a genotype is retrained as.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalModelConfig {
    /// Initial channels C.
    pub channels: usize,
    /// Number of cells L (darts); cells per stage N (nb201).
    pub layers: usize,
    /// Weight of the auxiliary head's loss (0 = no auxiliary head).
    pub auxiliary_weight: f64,
    /// Final drop-path probability, reached linearly over the epochs.
    pub drop_path: f64,
    /// The skeleton around the cells (darts): DARTS' `NetworkCIFAR` or `NetworkImageNet`.
    /// Absent in the config.json files written before it existed, which are CIFAR networks.
    #[serde(default)]
    pub net: NetKind,
}

/// The skeleton a DARTS network puts around its cells (DARTS `model.py`, PC-DARTS
/// `model_search_imagenet.py`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetKind {
    /// `NetworkCIFAR`: one stride-1 stem conv (3 → 3C), for 32×32 images.
    #[default]
    Cifar,
    /// `NetworkImageNet`: three stride-2 stem convs (3 → C/2 → C → C), for 224×224 images
    /// (the mobile setting); in the search supernet 3 → 3C/2 → 3C → 3C (PC-DARTS).
    ImageNet,
}

impl NetKind {
    pub const ALL: [NetKind; 2] = [NetKind::Cifar, NetKind::ImageNet];

    /// For `skip_serializing_if`: CIFAR, the default, is left out of config.json.
    pub fn is_cifar(&self) -> bool {
        *self == NetKind::Cifar
    }

    pub fn name(self) -> &'static str {
        match self {
            NetKind::Cifar => "cifar",
            NetKind::ImageNet => "imagenet",
        }
    }
}

impl std::fmt::Display for NetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for NetKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown network `{s}` (expected cifar, imagenet)"))
    }
}

/// The classification task a network is built for: its classes and its images' channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskShape {
    pub num_classes: usize,
    pub in_channels: usize,
}
