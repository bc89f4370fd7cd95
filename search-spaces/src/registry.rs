//! The search spaces, and the one place the rest of the workspace reaches them through. A space
//! is a folder of this crate whose `space.rs` implements `SearchSpace`; the `spaces!` list at
//! the bottom registers it, which gives it a `SpaceKind` and a `Genotype` variant and routes
//! every question about a space (its settings, networks, genotypes and pictures) to it.
//!
//! Adding a space: its folder (declared in lib.rs), and one line in that list.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;
use nas_core::config_error::{brief, field};
use nas_core::settings::{struct_fields, Flag};
use nas_core::ConfigError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::diagram::{ArchTable, CellGraph};
use crate::error::Result;
use crate::eval_network::EvalNetwork;
use crate::model_config::{EvalModelConfig, NetKind, OpsConfig, SearchModelConfig, TaskShape};
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
    /// The space's own supernet settings, next to `channels` and `layers` in `model` (a
    /// `#[serde(deny_unknown_fields, default)]` struct: every field has its default).
    type SearchModel: Clone + PartialEq + fmt::Debug + Default + Serialize + DeserializeOwned;
    /// The command-line flags of those settings (under `model`).
    fn search_model_flags() -> Vec<Flag> {
        Vec::new()
    }
    /// `model` fields that config.json files of every space held before the settings were per
    /// space, with the value that changed nothing: dropped where they hold it.
    fn legacy_model_fields() -> Vec<(&'static str, Value)> {
        Vec::new()
    }
    /// Other names of the space on the command line and the `model` fields each sets
    /// (`--space s1`: the darts space with R-DARTS' S1 op sets).
    fn aliases() -> Vec<(&'static str, Value)> {
        Vec::new()
    }
    /// The skeleton around the cells.
    fn net(_own: &Self::SearchModel) -> NetKind {
        NetKind::Cifar
    }
    /// Why a method that samples whole ops cannot search this supernet (settings that need
    /// every op of an edge to run, as a sentence naming them); None when it can.
    fn needs_every_op(_own: &Self::SearchModel) -> Option<String> {
        None
    }
    /// Whether the space has P-DARTS' stages (op sets pruned from stage to stage,
    /// `Supernet::prune_ops`).
    const STAGES: bool = false;
    /// What a progressive search of `first_ops` ops per edge in its first stage needs of the
    /// settings (only asked of spaces with `STAGES`).
    fn validate_stages(_own: &Self::SearchModel, _first_ops: usize) -> Result<(), ConfigError> {
        Ok(())
    }
    /// The settings of a stage's supernet: the op sets `ops` (None: as configured), the partial
    /// channels `partial_channels` (None: as configured) and no skip cap (the final derivation
    /// applies it, `skip_cap`).
    fn stage_model(
        own: &Self::SearchModel,
        _ops: Option<OpsConfig>,
        _partial_channels: Option<usize>,
    ) -> Self::SearchModel {
        own.clone()
    }
    /// The cap on skip connections of the derived normal cell.
    fn skip_cap(_own: &Self::SearchModel) -> Option<usize> {
        None
    }
    /// What this space refuses of a supernet's settings (beyond what every space checks); `m`
    /// holds this space's own settings (`SpaceModel`).
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

        /// A space's own supernet settings (`SearchSpace::SearchModel`); the variant is the
        /// space of the search.
        #[derive(Debug, Clone, PartialEq)]
        pub enum SpaceModel {
            $($(#[$doc])* $kind(<$space as SearchSpace>::SearchModel),)+
        }

        impl Serialize for SpaceModel {
            /// The space's own settings in their struct's order.
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                match self { $(SpaceModel::$kind(m) => m.serialize(s),)+ }
            }
        }

        impl SpaceModel {
            /// The space these settings are for.
            pub fn kind(&self) -> SpaceKind {
                match self { $(SpaceModel::$kind(_) => SpaceKind::$kind,)+ }
            }

            /// The settings as `model` fields.
            pub fn to_json(&self) -> std::result::Result<Map<String, Value>, String> {
                let v = match self { $(SpaceModel::$kind(m) => serde_json::to_value(m),)+ };
                match v.map_err(|e| e.to_string())? {
                    Value::Object(m) => Ok(m),
                    other => Err(format!("a space's model settings are not an object: {other}")),
                }
            }

            pub fn net(&self) -> NetKind {
                match self { $(SpaceModel::$kind(m) => <$space as SearchSpace>::net(m),)+ }
            }

            /// See `SearchSpace::needs_every_op`.
            pub fn needs_every_op(&self) -> Option<String> {
                match self { $(SpaceModel::$kind(m) => <$space as SearchSpace>::needs_every_op(m),)+ }
            }

            pub fn skip_cap(&self) -> Option<usize> {
                match self { $(SpaceModel::$kind(m) => <$space as SearchSpace>::skip_cap(m),)+ }
            }

            /// See `SearchSpace::stage_model`.
            pub fn for_stage(&self, ops: Option<OpsConfig>, partial_channels: Option<usize>) -> SpaceModel {
                match self {
                    $(SpaceModel::$kind(m) =>
                        SpaceModel::$kind(<$space as SearchSpace>::stage_model(m, ops, partial_channels)),)+
                }
            }

            /// See `SearchSpace::validate_stages`; spaces without stages refuse.
            pub fn validate_stages(&self, first_ops: usize) -> std::result::Result<(), ConfigError> {
                if !self.kind().has_stages() {
                    let with: Vec<&str> =
                        SpaceKind::ALL.iter().filter(|k| k.has_stages()).map(|k| k.name()).collect();
                    return Err(ConfigError::new(format!(
                        "a progressive search (P-DARTS) needs the {} space, not {} {}",
                        with.join(" or "),
                        brief("space"),
                        self.kind()
                    )));
                }
                match self { $(SpaceModel::$kind(m) => <$space as SearchSpace>::validate_stages(m, first_ops),)+ }
            }
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

            /// The space's own supernet settings at their defaults.
            pub fn default_search_model(self) -> SpaceModel {
                match self { $(SpaceKind::$kind => SpaceModel::$kind(Default::default()),)+ }
            }

            /// The fields of the space's own supernet settings.
            pub fn search_model_fields(self) -> &'static [&'static str] {
                match self { $(SpaceKind::$kind => struct_fields::<<$space as SearchSpace>::SearchModel>(),)+ }
            }

            /// The flags of the space's own supernet settings (under `model`).
            pub fn search_model_flags(self) -> Vec<Flag> {
                match self { $(SpaceKind::$kind => <$space as SearchSpace>::search_model_flags(),)+ }
            }

            /// Other names of the space and the `model` fields they set (`SearchSpace::aliases`).
            pub fn aliases(self) -> Vec<(&'static str, Value)> {
                match self { $(SpaceKind::$kind => <$space as SearchSpace>::aliases(),)+ }
            }

            pub fn has_stages(self) -> bool {
                match self { $(SpaceKind::$kind => <$space as SearchSpace>::STAGES,)+ }
            }

            fn legacy_model_fields(self) -> Vec<(&'static str, Value)> {
                match self { $(SpaceKind::$kind => <$space as SearchSpace>::legacy_model_fields(),)+ }
            }

            fn parse_search_model(self, own: Map<String, Value>) -> std::result::Result<SpaceModel, serde_json::Error> {
                match self {
                    $(SpaceKind::$kind => serde_json::from_value(Value::Object(own)).map(SpaceModel::$kind),)+
                }
            }

            pub fn validate_search(self, m: &SearchModelConfig) -> Result<(), ConfigError> {
                self.own_model(m)?;
                match self { $(SpaceKind::$kind => <$space as SearchSpace>::validate_search(m),)+ }
            }

            pub fn check_search_input_size(
                self,
                m: &SearchModelConfig,
                height: usize,
                width: usize,
            ) -> Result<(), ConfigError> {
                self.own_model(m)?;
                match self { $(SpaceKind::$kind => <$space as SearchSpace>::check_search_input_size(m, height, width),)+ }
            }

            pub fn build_supernet(
                self,
                m: &SearchModelConfig,
                task: TaskShape,
                seed: u64,
                device: &Device,
            ) -> Result<Box<dyn Supernet>> {
                self.own_model(m).map_err(|e| crate::Error::Config(e.to_string()))?;
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
    /// Checks that `m` holds this space's own settings.
    fn own_model(self, m: &SearchModelConfig) -> Result<(), ConfigError> {
        match m.space.kind() {
            k if k == self => Ok(()),
            k => Err(ConfigError::plain(format!("{k} model settings for a {self} search"))),
        }
    }

    /// The space's own `model` fields of a config.json (`SearchModelConfig::from_json`, the
    /// size taken out): legacy fields at their neutral values dropped, a field of another
    /// space refused naming it.
    pub fn search_model_from_json(self, mut own: Map<String, Value>) -> Result<SpaceModel, ConfigError> {
        for (k, neutral) in self.legacy_model_fields() {
            if own.get(k) == Some(&neutral) {
                own.remove(k);
            }
        }
        let fields = self.search_model_fields();
        if let Some(k) = own.keys().find(|k| !fields.contains(&k.as_str())) {
            let path = format!("model.{k}");
            let owners: Vec<&str> =
                Self::ALL.iter().filter(|o| o.search_model_fields().contains(&k.as_str())).map(|o| o.name()).collect();
            return Err(ConfigError::new(if owners.is_empty() {
                let mut known = vec!["channels", "layers"];
                known.extend(fields);
                format!("unknown field `{k}` in {} (the {self} space's fields: {})", field("model"), known.join(", "))
            } else {
                format!(
                    "{} applies to the {} space only, not to {} {self}",
                    brief(&path),
                    owners.join(" and "),
                    brief("space")
                )
            }));
        }
        self.parse_search_model(own).map_err(|e| ConfigError::new(format!("{}: {e}", field("model"))))
    }

    /// The space a `--space` name stands for, with the `model` fields an alias sets (`s1`:
    /// darts with S1's op sets).
    pub fn choice(name: &str) -> std::result::Result<(SpaceKind, Option<Value>), String> {
        let lower = name.to_ascii_lowercase();
        for &kind in Self::ALL {
            if kind.name() == lower {
                return Ok((kind, None));
            }
            if let Some((_, model)) = kind.aliases().into_iter().find(|(a, _)| *a == lower) {
                return Ok((kind, Some(model)));
            }
        }
        let mut names: Vec<String> = Self::ALL.iter().map(|k| k.name().to_string()).collect();
        names.extend(Self::ALL.iter().flat_map(|k| k.aliases()).map(|(a, _)| a.to_string()));
        let last = names.pop().unwrap_or_default();
        Err(format!("unknown space `{name}` (expected {} or {last})", names.join(", ")))
    }

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
