//! The search spaces, and the one place the rest of the workspace reaches them through. A space
//! is a folder of this crate whose `space.rs` implements `SearchSpace`; the `spaces!` list at
//! the bottom registers it, which gives it a `SpaceKind` and a `Genotype` variant and routes
//! every question about a space (its settings, networks, genotypes and pictures) to it.
//!
//! Adding a space: its folder (declared in lib.rs), and one line in that list.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;
use nas_core::ConfigError;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::diagram::{ArchTable, CellGraph};
use crate::error::Result;
use crate::eval_network::EvalNetwork;
use crate::model_config::{EvalModelConfig, SearchModelConfig, TaskShape};
use crate::supernet::Supernet;

/// What a search space provides. Networks are built in f32; settings messages name the fields
/// of the `model` section as `model.<field>`.
pub trait SearchSpace {
    /// The space's name in config.json, genotype.json and on the command line.
    const NAME: &'static str;
    /// Whether its evaluation network has an auxiliary head.
    const AUXILIARY_HEAD: bool;
    /// Whether its evaluation network uses drop path.
    const DROP_PATH: bool;

    /// A derived architecture of the space.
    type Genotype: Clone + PartialEq + Eq + fmt::Debug + fmt::Display;

    /// The genotype's genotype.json form (with `"space": NAME`).
    fn genotype_to_json(g: &Self::Genotype) -> Value;
    fn genotype_from_json(v: &Value) -> Result<Self::Genotype>;
    /// A genotype written as a name rather than a file (a built-in name, the space's own
    /// string form); None when `name` is neither.
    fn named_genotype(name: &str) -> Option<Result<Self::Genotype>>;
    /// The built-in genotype names, for messages.
    fn builtin_names() -> Vec<&'static str>;
    /// The genotype's cells as graphs.
    fn cell_graphs(g: &Self::Genotype) -> Vec<CellGraph>;

    /// The network size (channels, layers) a search starts from; `quick` for the demo preset.
    fn search_sizes(quick: bool) -> (usize, usize);
    /// What this space refuses of a supernet's settings (beyond what every space checks).
    fn validate_search(m: &SearchModelConfig) -> Result<(), ConfigError>;
    /// Whether images of `height`×`width` fit the supernet.
    fn check_search_input_size(m: &SearchModelConfig, height: usize, width: usize) -> Result<(), ConfigError>;
    fn build_supernet(m: &SearchModelConfig, task: TaskShape, seed: u64, device: &Device) -> Result<Box<dyn Supernet>>;
    /// The α matrices of the supernet's `arch_json`.
    fn arch_tables() -> Vec<ArchTable>;

    /// The retraining network's size and options (DARTS' recipe, the benchmark's sizes).
    fn eval_defaults() -> EvalModelConfig;
    /// What this space refuses of a retraining network's settings.
    fn validate_eval(m: &EvalModelConfig) -> Result<(), ConfigError>;
    /// Whether images of `height`×`width` fit the retraining network.
    fn check_input_size(m: &EvalModelConfig, height: usize, width: usize) -> Result<(), ConfigError>;
    fn build_eval_network(
        g: &Self::Genotype,
        m: &EvalModelConfig,
        task: TaskShape,
        seed: u64,
        device: &Device,
    ) -> Result<Box<dyn EvalNetwork>>;
    /// The retraining network's size in words, for messages ("C=36, L=20").
    fn describe_size(m: &EvalModelConfig) -> String;
}

/// Declares `SpaceKind` and `Genotype` with a variant per listed space, and routes each of
/// their methods to the space's `SearchSpace` implementation.
macro_rules! spaces {
    ($($(#[$doc:meta])* $kind:ident => $space:ty),+ $(,)?) => {
        /// A registered search space.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum SpaceKind {
            $($(#[$doc])* $kind,)+
        }

        /// A derived architecture of any registered space.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Genotype {
            $($(#[$doc])* $kind(<$space as SearchSpace>::Genotype),)+
        }

        $(impl From<<$space as SearchSpace>::Genotype> for Genotype {
            fn from(g: <$space as SearchSpace>::Genotype) -> Self {
                Genotype::$kind(g)
            }
        })+

        impl SpaceKind {
            /// Every space, in registration order.
            pub const ALL: &'static [SpaceKind] = &[$(SpaceKind::$kind,)+];

            pub fn name(self) -> &'static str {
                match self { $(SpaceKind::$kind => <$space as SearchSpace>::NAME,)+ }
            }

            pub fn has_auxiliary_head(self) -> bool {
                match self { $(SpaceKind::$kind => <$space as SearchSpace>::AUXILIARY_HEAD,)+ }
            }

            pub fn has_drop_path(self) -> bool {
                match self { $(SpaceKind::$kind => <$space as SearchSpace>::DROP_PATH,)+ }
            }

            /// A genotype of this space from its genotype.json form.
            pub fn genotype_from_json(self, v: &Value) -> Result<Genotype> {
                match self { $(SpaceKind::$kind => Ok(<$space as SearchSpace>::genotype_from_json(v)?.into()),)+ }
            }

            /// A genotype of this space given by name; None when `name` is none of its names.
            pub fn named_genotype(self, name: &str) -> Option<Result<Genotype>> {
                match self {
                    $(SpaceKind::$kind => <$space as SearchSpace>::named_genotype(name).map(|g| g.map(Genotype::from)),)+
                }
            }

            pub fn builtin_names(self) -> Vec<&'static str> {
                match self { $(SpaceKind::$kind => <$space as SearchSpace>::builtin_names(),)+ }
            }

            pub fn search_sizes(self, quick: bool) -> (usize, usize) {
                match self { $(SpaceKind::$kind => <$space as SearchSpace>::search_sizes(quick),)+ }
            }

            pub fn validate_search(self, m: &SearchModelConfig) -> Result<(), ConfigError> {
                match self { $(SpaceKind::$kind => <$space as SearchSpace>::validate_search(m),)+ }
            }

            pub fn check_search_input_size(
                self,
                m: &SearchModelConfig,
                height: usize,
                width: usize,
            ) -> Result<(), ConfigError> {
                match self { $(SpaceKind::$kind => <$space as SearchSpace>::check_search_input_size(m, height, width),)+ }
            }

            pub fn build_supernet(
                self,
                m: &SearchModelConfig,
                task: TaskShape,
                seed: u64,
                device: &Device,
            ) -> Result<Box<dyn Supernet>> {
                match self { $(SpaceKind::$kind => <$space as SearchSpace>::build_supernet(m, task, seed, device),)+ }
            }

            pub fn arch_tables(self) -> Vec<ArchTable> {
                match self { $(SpaceKind::$kind => <$space as SearchSpace>::arch_tables(),)+ }
            }

            pub fn eval_defaults(self) -> EvalModelConfig {
                match self { $(SpaceKind::$kind => <$space as SearchSpace>::eval_defaults(),)+ }
            }

            pub fn validate_eval(self, m: &EvalModelConfig) -> Result<(), ConfigError> {
                match self { $(SpaceKind::$kind => <$space as SearchSpace>::validate_eval(m),)+ }
            }

            pub fn check_input_size(self, m: &EvalModelConfig, height: usize, width: usize) -> Result<(), ConfigError> {
                match self { $(SpaceKind::$kind => <$space as SearchSpace>::check_input_size(m, height, width),)+ }
            }

            pub fn describe_size(self, m: &EvalModelConfig) -> String {
                match self { $(SpaceKind::$kind => <$space as SearchSpace>::describe_size(m),)+ }
            }
        }

        impl Genotype {
            /// The space of this genotype.
            pub fn kind(&self) -> SpaceKind {
                match self { $(Genotype::$kind(_) => SpaceKind::$kind,)+ }
            }

            /// The genotype.json form.
            pub fn to_json(&self) -> Value {
                match self { $(Genotype::$kind(g) => <$space as SearchSpace>::genotype_to_json(g),)+ }
            }

            /// The genotype's cells as graphs.
            pub fn cell_graphs(&self) -> Vec<CellGraph> {
                match self { $(Genotype::$kind(g) => <$space as SearchSpace>::cell_graphs(g),)+ }
            }

            /// A freshly initialised retraining network of this genotype (weights drawn from
            /// `seed`).
            pub fn build_eval_network(
                &self,
                m: &EvalModelConfig,
                task: TaskShape,
                seed: u64,
                device: &Device,
            ) -> Result<Box<dyn EvalNetwork>> {
                match self {
                    $(Genotype::$kind(g) => <$space as SearchSpace>::build_eval_network(g, m, task, seed, device),)+
                }
            }
        }

        impl fmt::Display for Genotype {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self { $(Genotype::$kind(g) => g.fmt(f),)+ }
            }
        }
    };
}

impl SpaceKind {
    /// The space called `name`.
    pub fn parse(name: &str) -> std::result::Result<Self, String> {
        Self::ALL.iter().copied().find(|k| k.name() == name).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|k| k.name()).collect();
            format!("unknown space `{name}` (expected {})", names.join(", "))
        })
    }
}

impl FromStr for SpaceKind {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Self::parse(s)
    }
}

impl fmt::Display for SpaceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for SpaceKind {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for SpaceKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Self::parse(&name).map_err(serde::de::Error::custom)
    }
}

spaces! {
    /// The DARTS CNN cell space, with PC-DARTS' partial channels and edge normalisation.
    Darts => crate::darts::Darts,
    /// The NAS-Bench-201 cell space.
    Nb201 => crate::nb201::Nb201,
}
