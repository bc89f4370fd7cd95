//! The size and options of the networks a run builds: the `model` section of a search run's and
//! of a training run's config.json. A supernet's settings are its size plus its space's own
//! (`SpaceModel`); a retraining network's are the same for every space. The spaces check them
//! (`SpaceKind::validate_search`, `SpaceKind::validate_eval`, whose messages name the fields
//! as `model.<field>`) and build from them.

use nas_core::config_error::field;
use nas_core::settings::{parse, Flag};
use nas_core::ConfigError;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::registry::{SpaceKind, SpaceModel};

/// The supernet of a search: its size, which every space has, and the space's own settings
/// (`SearchSpace::SearchModel`: the darts space's nodes, partial channels, edge normalisation,
/// skip cap, op sets and stem; nothing more for nb201). config.json writes them as one flat
/// `model` object; which fields it may hold depends on the run's `space`
/// (`SearchModelConfig::from_json`).
#[derive(Debug, Clone, PartialEq)]
pub struct SearchModelConfig {
    /// Initial channels C.
    pub channels: usize,
    /// Number of cells L (darts); cells per stage N (nb201).
    pub layers: usize,
    /// The space's own settings; their variant is the run's space.
    pub space: SpaceModel,
}

impl SearchModelConfig {
    /// The space's default supernet at the size a search starts from (`quick`: the demo's).
    pub fn default_for(space: SpaceKind, quick: bool) -> Self {
        let (channels, layers) = space.search_sizes(quick);
        Self { channels, layers, space: space.default_search_model() }
    }

    /// The space these settings are for.
    pub fn kind(&self) -> SpaceKind {
        self.space.kind()
    }

    /// The skeleton around the cells (the ImageNet stems are the darts space's).
    pub fn net(&self) -> NetKind {
        self.space.net()
    }

    /// The darts space's own settings, when the search is of that space.
    pub fn darts(&self) -> Option<&crate::darts::DartsSearchModel> {
        match &self.space {
            SpaceModel::Darts(d) => Some(d),
            _ => None,
        }
    }

    /// `darts`, to change them.
    pub fn darts_mut(&mut self) -> Option<&mut crate::darts::DartsSearchModel> {
        match &mut self.space {
            SpaceModel::Darts(d) => Some(d),
            _ => None,
        }
    }

    /// The `model` object of a config.json for `space`: `channels`, `layers` and the space's
    /// own fields. A field only another space has is refused naming that space; fields that
    /// config.json files of every space held before the settings were per space are dropped
    /// where they hold the value that changed nothing.
    pub fn from_json(space: SpaceKind, v: &Value) -> Result<Self, ConfigError> {
        let Value::Object(map) = v else {
            return Err(ConfigError::new(format!("{} must be an object", field("model"))));
        };
        let mut own = map.clone();
        let mut size = |name: &str| -> Result<usize, ConfigError> {
            let v = own
                .remove(name)
                .ok_or_else(|| ConfigError::new(format!("{} is missing", field(&format!("model.{name}")))))?;
            serde_json::from_value(v).map_err(|e| ConfigError::new(format!("{}: {e}", field(&format!("model.{name}")))))
        };
        let (channels, layers) = (size("channels")?, size("layers")?);
        Ok(Self { channels, layers, space: space.search_model_from_json(own)? })
    }
}

/// `model` as config.json holds it: the size, then the space's own settings.
#[derive(Serialize)]
struct Flat<'a> {
    channels: usize,
    layers: usize,
    #[serde(flatten)]
    space: &'a SpaceModel,
}

impl Serialize for SearchModelConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Flat { channels: self.channels, layers: self.layers, space: &self.space }.serialize(s)
    }
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

/// `--channels` and `--layers` (under `model`), every space's and every network's size.
pub fn size_flags() -> Vec<Flag> {
    vec![
        Flag::one("channels", "channels", "C", parse::<usize>)
            .help("Initial channels C (search: 16, quick 8; retraining: 36 for darts, 16 for nb201)"),
        Flag::one("layers", "layers", "L", parse::<usize>).help(
            "Number of cells L (darts); cells per stage N (nb201) (search: 8, quick 5; retraining: 20 for darts, \
             5 for nb201)",
        ),
    ]
}

/// The retraining network's own flags (under `model`): the auxiliary head's weight and drop
/// path.
pub fn eval_model_flags() -> Vec<Flag> {
    vec![
        Flag::one("auxiliary-weight", "auxiliary_weight", "W", parse::<f64>)
            .help("Loss weight of the auxiliary head; 0 removes the head (darts: 0.4)"),
        Flag::one("drop-path", "drop_path", "P", parse::<f64>)
            .help("Final drop-path probability, ramped linearly over the epochs (darts: 0.2)"),
    ]
}

/// `--net`, the skeleton around the cells (search and retraining: `model.net`).
pub fn net_flag() -> Flag {
    Flag::one("net", "net", "NET", parse::<NetKind>).help(
        "The skeleton around the cells (darts): cifar (one stride-1 stem conv) or imagenet (three \
         stride-2 stem convs, image sides divisible by 32: PC-DARTS' ImageNet search, which reaches \
         the cells at 28×28 from 224×224; in nas train NetworkImageNet at 224×224 with the \
         mobile-setting recipe; folder datasets are streamed from their files)",
    )
}
