//! The search methods, each behind one interface. A method is one file (or folder) of this
//! module and one line in the `methods!` list below:
//!
//! - `MethodSpec` is its static side: its name, a line about it, whether it samples ops, its
//!   settings (the `method` section of config.json, `{"name": "implicit-cg", "cg_steps": 5,
//!   "cg_damping": 1.0}`) with their defaults, flags and validation, its presets, the charts
//!   of what it records, and how it starts.
//! - `SearchMethod` is a running method: what a step reads, the step itself (weights and
//!   architecture), the end of an epoch, the genotype it returns, the fields it adds to an
//!   epoch's record and its part of a checkpoint.
//!
//! The hypergradient family (first order, DARTS' second order, truncated unrolling, implicit
//! gradients by Neumann series or conjugate gradient) shares one alternating loop
//! (`alternating`): an α step by its `nas_core::hypergrad::Hypergradient` rule on a
//! search-valid batch, then a weight step; each of its files only chooses the rule, and a
//! regularised method adds a term of α to the α step's loss (`alternating::ArchTerm`:
//! β-DARTS). The sampling methods (GDAS, SNAS, ENAS, random sampling) share the Gumbel-softmax
//! loop and samples and the selection of a child (`sampling`, `selection`).
//!
//! The search loop (`search`), the command line and the benchmark know no method by name: they
//! go through `MethodConfig` and `SearchMethod`.

#[macro_use]
mod registry;
pub mod alternating;
mod arch_adam;
pub mod sampling;
pub mod selection;

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use candle_core::{Device, Tensor};
use nas_core::checkpoint::LoadedTensors;
use nas_core::config_error::field;
use nas_core::dist::StepGrads;
use nas_core::hypergrad::Hypergradient;
use nas_core::optim::Sgd;
use nas_core::settings::{self, struct_fields, Flag, TAG};
use nas_core::ConfigError;
use search_spaces::{ArchSample, Genotype, Supernet};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

pub use arch_adam::ArchAdam;

use crate::config::{ArchOptimConfig, SearchConfig};
use crate::step::Batch;
use crate::Result;

methods! {
    /// ∇_α L_val(w, α): DARTS first order.
    FirstOrder => first_order::FirstOrder,
    /// One-step unrolled (DARTS second order) with a finite-difference Hessian-vector product.
    SecondOrder => second_order::SecondOrder,
    /// Truncated reverse mode through K virtual SGD steps (T-RAD).
    Unrolled => unrolled::Unrolled,
    /// BDA: reverse mode through K virtual steps that aggregate both levels' directions.
    Bda => bda::Bda,
    /// IAPTT-GM: steps from an initialisation auxiliary, the pessimistic truncation.
    IapttGm => iaptt::IapttGm,
    /// Forward mode: the tangent dw/dα carried along the real weight steps.
    Fad => fad::Fad,
    /// Implicit function theorem with a Neumann-series inverse Hessian.
    Implicit => implicit::Implicit,
    /// Implicit function theorem with the inverse Hessian by conjugate gradient.
    ImplicitCg => implicit_cg::ImplicitCg,
    /// GDAS: one op per edge by a hard Gumbel-softmax sample, straight-through.
    Gdas => gdas::Gdas,
    /// SNAS: a relaxed concrete sample of every edge, single level.
    Snas => snas::Snas,
    /// ENAS: an LSTM controller samples the child, REINFORCE from its validation accuracy.
    Enas => enas::Enas,
    /// Random sampling with weight sharing, the best of N sampled children.
    Random => random::Random,
    /// β-DARTS: first order with the β-decay regularisation of α.
    BetaDarts => beta_darts::BetaDarts,
    /// SDARTS: a hypergradient method's α step, weight steps with perturbed mixing weights.
    Sdarts => sdarts::Sdarts,
    /// DrNAS: Dirichlet mixing weights with pathwise gradients, first order.
    DrNas => drnas::DrNas,
}

/// The settings of a method: a serialisable struct whose every field has a default
/// (`#[serde(deny_unknown_fields, default)]`).
pub trait Settings: Clone + PartialEq + fmt::Debug + Default + Serialize + DeserializeOwned {}

impl<T: Clone + PartialEq + fmt::Debug + Default + Serialize + DeserializeOwned> Settings for T {}

/// A search method as its registration sees it.
pub trait MethodSpec {
    /// The name in config.json and on the command line.
    const NAME: &'static str;
    /// What it does, in one line (`--method`'s help).
    const ABOUT: &'static str;
    /// Whether each forward samples which ops run instead of running the relaxed supernet. Such
    /// a method cannot combine with settings that need every op of an edge (PC-DARTS' partial
    /// channels and edge normalisation), with the α-Hessian diagnostic or with P-DARTS' stages.
    const SAMPLES_OPS: bool = false;
    /// Its settings, the `method` section besides `name`.
    type Config: Settings;

    /// The command-line flags of its settings (under `method`); a flag two methods share is
    /// declared once and listed by both.
    fn flags() -> Vec<Flag> {
        Vec::new()
    }

    /// Top-level config.json fields of runs written before the method section that belong to
    /// its settings: (old path, field).
    fn legacy_fields() -> &'static [(&'static str, &'static str)] {
        &[]
    }

    /// Presets that search with this method (`--preset NAME`).
    fn presets() -> Vec<Preset> {
        Vec::new()
    }

    /// The charts `nas plot` draws of the scalars it adds to an epoch's record.
    fn charts() -> Vec<RecordChart> {
        Vec::new()
    }

    /// Its settings that ask for something only it does (SNAS' resource penalty): given to
    /// another method with a value other than the default, they are refused rather than ignored,
    /// as a setting that only tunes this method is.
    fn requests() -> &'static [&'static str] {
        &[]
    }

    /// What it refuses of its settings and of the rest of the search's; messages name the
    /// settings by their config.json field (`method.cg_steps`).
    fn validate(_cfg: &Self::Config, _search: &SearchConfig) -> std::result::Result<(), ConfigError> {
        Ok(())
    }

    /// The running method for the supernet of `ctx`; a method of the hypergradient family
    /// (`hypergradient`) runs the family's alternating loop with its rule.
    fn build(cfg: &Self::Config, ctx: &MethodContext) -> Result<Box<dyn SearchMethod>> {
        match Self::hypergradient(cfg) {
            Some(rule) => Ok(alternating::Alternating::new(ctx, rule).with_term(Self::arch_term(cfg)).boxed()),
            None => Err(crate::Error::Internal(format!("the {} method builds no search", Self::NAME))),
        }
    }

    /// The architecture-gradient rule of a method of the hypergradient family (None for the
    /// others), for tools that drive the rule themselves.
    fn hypergradient(_cfg: &Self::Config) -> Option<Box<dyn Hypergradient>> {
        None
    }

    /// The term of α a method of the hypergradient family adds to its α step's loss
    /// (β-DARTS' β-decay); None for the others.
    fn arch_term(_cfg: &Self::Config) -> Option<Box<dyn alternating::ArchTerm>> {
        None
    }
}

/// A named search: what it reproduces, and what it sets over `darts-1st` as a config overlay
/// (the way a `--config` file and the flags do).
#[derive(Debug, Clone)]
pub struct Preset {
    pub name: &'static str,
    pub about: &'static str,
    pub overlay: Value,
}

/// A chart of an epoch record's scalars: its title and its curves (record field, legend).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecordChart {
    pub title: &'static str,
    pub curves: &'static [(&'static str, &'static str)],
}

/// The charts of every method's record fields, each title once.
pub fn method_charts() -> Vec<RecordChart> {
    let mut charts: Vec<RecordChart> = Vec::new();
    for c in Method::ALL.iter().flat_map(|m| m.charts()) {
        if !charts.iter().any(|d| d.title == c.title) {
            charts.push(c);
        }
    }
    charts
}

/// What a method starts from.
pub struct MethodContext<'a> {
    pub net: &'a dyn Supernet,
    pub arch_optimizer: &'a ArchOptimConfig,
    pub seed: u64,
    pub epochs: usize,
    pub device: &'a Device,
    /// The weight optimiser's momentum.
    pub weight_momentum: f64,
}

impl<'a> MethodContext<'a> {
    /// The context of a search of `cfg` over `net` on `device`.
    pub fn new(net: &'a dyn Supernet, cfg: &'a SearchConfig, device: &'a Device) -> Self {
        Self {
            net,
            arch_optimizer: &cfg.arch_optimizer,
            seed: cfg.seed,
            epochs: cfg.epochs,
            device,
            weight_momentum: cfg.weight_optimizer.momentum,
        }
    }
}

/// Where in the run a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepAt {
    pub epoch: usize,
    pub step: usize,
}

/// The batches of one step, each as its micro-batches (`--accumulate`, data parallelism).
pub struct StepBatches {
    /// The step's search-train batch.
    pub train: Vec<Batch>,
    /// A search-valid batch, when the method reads them (`SearchMethod::reads_valid`) and the
    /// architecture learns in this epoch (`arch_start_epoch`).
    pub valid: Option<Vec<Batch>>,
    /// The further search-train batches of an architecture step
    /// (`SearchMethod::extra_train_batches`), with `valid`.
    pub more_train: Vec<Vec<Batch>>,
}

/// The weight optimiser a step trains the weights with, and its global-norm clip.
pub struct WeightStep<'a> {
    pub opt: &'a mut Sgd,
    pub clip: f64,
}

/// Named tensors of a checkpoint.
pub type NamedTensors = Vec<(String, Tensor)>;
/// Named strings of a checkpoint's metadata.
pub type Metadata = Vec<(String, String)>;

/// A running search method. The search loop owns the supernet, the weight optimiser, the data
/// and the run's position; the method owns how the architecture learns.
pub trait SearchMethod {
    /// Whether its steps read a search-valid batch (when the architecture learns).
    fn reads_valid(&self) -> bool {
        true
    }

    /// Search-train batches an architecture step reads after the current one (T-RAD's K − 1).
    fn extra_train_batches(&self) -> usize {
        0
    }

    /// Prepares epoch `epoch` (a temperature).
    fn begin_epoch(&mut self, _epoch: usize) {}

    /// One search step: the weights always, the architecture when `batches.valid` says so (or
    /// from the training batch, for a single-level method). Returns the weight step's loss,
    /// correct count and size.
    fn step(&mut self, net: &dyn Supernet, w: WeightStep, at: StepAt, batches: StepBatches) -> Result<StepGrads>;

    /// Work after the last step of epoch `epoch` (a controller's updates, the choice of a
    /// child); `valid` yields search-valid batches, as many as asked.
    fn end_epoch(
        &mut self,
        _net: &dyn Supernet,
        _epoch: usize,
        _valid: &mut dyn FnMut() -> Result<Batch>,
    ) -> Result<()> {
        Ok(())
    }

    /// The genotype the search returns now (by default derived from α).
    fn genotype(&self, net: &dyn Supernet) -> Result<Genotype> {
        Ok(net.genotype()?)
    }

    /// The ops an evaluation forward runs; None: the relaxed supernet.
    fn eval_sample(&self, _net: &dyn Supernet) -> Result<Option<ArchSample>> {
        Ok(None)
    }

    /// The method's fields of an epoch's metrics record.
    fn record_fields(&self, _fields: &mut Map<String, Value>) {}

    /// Whether α learns (its values then go into every epoch's record).
    fn learns_alpha(&self) -> bool {
        true
    }

    /// The method's tensors and metadata for a checkpoint.
    fn state(&self) -> Result<(NamedTensors, Metadata)> {
        Ok((Vec::new(), Vec::new()))
    }

    /// Restores `state` from the checkpoint at `path`.
    fn restore(&mut self, _ck: &LoadedTensors, _path: &Path) -> Result<()> {
        Ok(())
    }

    /// Gradient evaluations (forward and backward passes) of the last architecture step.
    fn last_arch_grad_evals(&self) -> usize {
        0
    }
}

impl FromStr for Method {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Method::ALL.iter().copied().find(|m| m.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Method::ALL.iter().map(|m| m.name()).collect();
            format!("unknown method `{s}` (expected {})", names.join(", "))
        })
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<Method> for MethodConfig {
    /// The method with its default settings.
    fn from(m: Method) -> Self {
        m.default_config()
    }
}

impl fmt::Display for MethodConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.method().name())
    }
}

impl MethodConfig {
    /// The `method` section of a config.json: `{"name": …, <settings>}`. A setting of another
    /// method is refused naming that method.
    pub fn from_json(v: &Value) -> std::result::Result<MethodConfig, ConfigError> {
        let Value::Object(map) = v else {
            return Err(ConfigError::new(format!("{} must be an object with a `name`", field("method"))));
        };
        let mut own = map.clone();
        let name = match own.remove(TAG) {
            Some(Value::String(s)) => s,
            _ => return Err(ConfigError::new(format!("{} must name a method", field("method.name")))),
        };
        let Some(method) = Method::ALL.iter().copied().find(|m| m.name() == name) else {
            let names: Vec<String> = Method::ALL.iter().map(|m| format!("`{}`", m.name())).collect();
            return Err(ConfigError::new(format!(
                "{}: unknown variant `{name}`, expected one of {}",
                field("method.name"),
                names.join(", ")
            )));
        };
        let fields = method.fields();
        let foreign: Vec<String> = own.keys().filter(|k| !fields.contains(&k.as_str())).cloned().collect();
        for k in foreign {
            let path = format!("method.{k}");
            let owners: Vec<Method> =
                Method::ALL.iter().copied().filter(|m| m.fields().contains(&k.as_str())).collect();
            let Some(owner) = owners.first() else {
                return Err(ConfigError::new(format!(
                    "unknown setting `{k}` of the {method} method (its settings: {})",
                    if fields.is_empty() { "none".to_string() } else { fields.join(", ") }
                )));
            };
            let names: Vec<&str> = owners.iter().map(|m| m.name()).collect();
            let value = own.remove(&k).unwrap_or(Value::Null);
            // A setting that only tunes another method changes nothing here; one that asks
            // for what only its method does (SNAS' penalty) cannot be honoured.
            let asks =
                owners.iter().any(|o| o.requests().contains(&k.as_str()) && o.default_setting(&k) != Some(&value));
            if asks {
                let about = owner.flags().into_iter().find(|f| f.field == k).map(|f| format!(" ({})", f.help));
                return Err(ConfigError::new(format!(
                    "{} is a setting of the {} method{}{}, not of the {method} method",
                    field(&path),
                    names.join(" and "),
                    if names.len() > 1 { "s" } else { "" },
                    about.unwrap_or_default(),
                )));
            }
            tracing::warn!("{path} is a setting of the {} method; the {method} method ignores it", names.join(" and "));
        }
        method.parse_settings(Value::Object(own)).map_err(|e| ConfigError::new(format!("{}: {e}", field("method"))))
    }

    /// The section as config.json holds it.
    pub fn to_json(&self) -> std::result::Result<Value, String> {
        serde_json::to_value(self).map_err(|e| e.to_string())
    }

    /// Checks the method's settings and what it cannot combine with.
    pub fn validate(&self, s: &SearchConfig) -> std::result::Result<(), ConfigError> {
        let m = self.method();
        if m.samples_ops() {
            if let Some(why) = s.model.space.needs_every_op() {
                return Err(ConfigError::new(format!("the {m} method samples whole ops: {why}")));
            }
            if s.early_stop != crate::config::EarlyStop::None || s.hessian_every > 0 {
                return Err(ConfigError::new(format!(
                    "the {m} method has no α-Hessian: {} and {} are for the gradient methods",
                    field("early_stop"),
                    field("hessian_every")
                )));
            }
            if s.progressive.is_some() {
                return Err(ConfigError::new(format!("the {m} method does not run in a progressive search (P-DARTS)")));
            }
        }
        self.validate_own(s)
    }
}

/// A method's section as config.json holds it: its name, then its settings.
#[derive(Serialize)]
struct Tagged<'a, T: Serialize> {
    name: &'a str,
    #[serde(flatten)]
    settings: &'a T,
}

/// `--method`, with every registered method in its help.
pub fn method_flag() -> Flag {
    let list: Vec<String> = Method::ALL.iter().map(|m| format!("{} ({})", m.name(), m.about())).collect();
    Flag::one("method", "name", "M", settings::parse::<Method>).help(format!("Search method: {}", list.join("; ")))
}

impl<'de> Deserialize<'de> for MethodConfig {
    /// A method section nested in another's settings (SDARTS' `arch_step`).
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        MethodConfig::from_json(&v).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Method {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// Every method's flags, each declared once (flags that several methods share are listed by
/// each of them and kept once here).
pub fn method_flags() -> Vec<Flag> {
    let mut flags = vec![method_flag()];
    flags.extend(method_setting_flags());
    flags
}

/// The flags of every method's settings, without `--method`, each declared once.
pub fn method_setting_flags() -> Vec<Flag> {
    let mut flags: Vec<Flag> = Vec::new();
    for m in Method::ALL {
        for f in m.flags() {
            if !flags.iter().any(|g| g.long == f.long) {
                flags.push(f);
            }
        }
    }
    flags
}

/// `nas bilevel`'s flags: the methods' settings (under `method`), each method taking its own.
pub fn bilevel_flags() -> Vec<nas_core::settings::Mount> {
    vec![nas_core::settings::Mount::new("method", method_setting_flags()).with_heading("Method settings")]
}

/// A positive count of a method's settings, or the message naming it.
pub fn positive(method: &str, name: &str, v: usize) -> std::result::Result<(), ConfigError> {
    if v == 0 {
        return Err(ConfigError::new(format!(
            "{} must be positive for the {method} method",
            field(&format!("method.{name}"))
        )));
    }
    Ok(())
}
