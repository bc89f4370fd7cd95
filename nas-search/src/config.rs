//! The search configuration: one serialisable value per run, nesting the model, data and
//! optimiser settings, resolved from a preset, an optional JSON config file and command-line
//! flags (in that order of precedence, later wins), validated once into `ValidSearchConfig`
//! and written to the run directory as config.json before anything else.
//!
//! Presets: `darts-1st` (default) and `darts-2nd` with the settings of DARTS' `train_search.py`,
//! `pc-darts` with those of PC-DARTS' `train_search.py`, and `quick`, a small demo.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use nas_core::config_error::{brief, field, ConfigError};
use nas_core::data::DataSpec;
use nas_core::optim::{ScheduleKind, WeightOptimConfig};
use nas_core::DeviceSpec;
use search_spaces::darts::DartsOpSets;
use search_spaces::{NetKind, SearchModelConfig, SpaceKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Error, Result};

/// How the architecture gradient is computed (`nas_core::hypergrad`, one file per method):
/// DARTS §2.3 for the first and second order, truncated reverse mode through K virtual steps
/// (Shaban et al. 2019), the implicit function theorem with a Neumann series (Lorraine et al.
/// 2020) or with conjugate gradient (Pedregosa 2016).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// ∇_α L_val(w, α): DARTS first order.
    FirstOrder,
    /// One-step unrolled (DARTS second order) with a finite-difference Hessian-vector product.
    SecondOrder,
    /// Truncated reverse mode through `unroll_steps` virtual SGD steps (T-RAD).
    Unrolled,
    /// Implicit function theorem with a Neumann-series inverse Hessian.
    Implicit,
    /// Implicit function theorem with the inverse Hessian by conjugate gradient.
    ImplicitCg,
    /// GDAS (Dong & Yang 2019): one op per edge by a hard Gumbel-softmax sample with the
    /// straight-through estimator; alternating weight and α steps.
    Gdas,
    /// SNAS (Xie et al. 2019): a relaxed concrete sample of every edge; weights and α from the
    /// same training batch.
    Snas,
    /// ENAS (Pham et al. 2018, micro search): an LSTM controller samples the child that trains
    /// the shared weights, and learns by REINFORCE from the child's validation accuracy.
    Enas,
    /// Random sampling with weight sharing (Li & Talwalkar 2019): a uniformly sampled child
    /// per batch, the best of N sampled children at the end.
    Random,
}

impl Method {
    /// Whether the method samples ops (`sampling`) rather than following the continuous
    /// relaxation with a hypergradient.
    pub fn is_sampling(self) -> bool {
        matches!(self, Method::Gdas | Method::Snas | Method::Enas | Method::Random)
    }

    /// Training batches one architecture step reads (the current one first).
    pub fn train_batches(self, unroll_steps: usize) -> usize {
        if self == Method::Unrolled {
            unroll_steps
        } else {
            1
        }
    }
}

/// The settings of the architecture gradient.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HypergradConfig {
    pub method: Method,
    pub neumann_steps: usize,
    pub unroll_steps: usize,
    pub cg_steps: usize,
    pub cg_damping: f64,
}

impl From<Method> for HypergradConfig {
    /// The method with the default settings of the presets.
    fn from(method: Method) -> Self {
        Self {
            method,
            neumann_steps: 5,
            unroll_steps: one(),
            cg_steps: default_cg_steps(),
            cg_damping: default_cg_damping(),
        }
    }
}

/// The cost SNAS' resource penalty counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resource {
    /// Parameters of the sampled ops.
    Params,
    /// Mult-adds of the sampled ops' convolutions at the input size of the search.
    MultAdds,
}

/// The settings of the sampling methods (`sampling`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingConfig {
    /// The Gumbel-softmax temperature of the first epoch; None: the method's (GDAS 10, SNAS 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tau_max: Option<f64>,
    /// The temperature of the last epoch; None: the method's (GDAS 0.1, SNAS 0.03).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tau_min: Option<f64>,
    /// SNAS' resource penalty: what it counts, and its weight λ (0: off).
    pub resource: Resource,
    pub resource_weight: f64,
    /// ENAS: controller updates after every epoch (`controller_train_steps`); None: the
    /// reference's (ENAS' micro search 30, AutoDL's NAS-Bench-201 ENAS 50).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controller_steps: Option<usize>,
    /// ENAS: sampled children (one validation batch each) per controller update
    /// (`controller_num_aggregate`); None: the reference's (10, AutoDL 20).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controller_aggregate: Option<usize>,
    /// ENAS and random sampling: children sampled at the end of every epoch, the genotype being
    /// the best of them on one validation batch.
    pub select_samples: usize,
}

impl Default for SamplingConfig {
    /// The controller's schedule from its reference (`controller`), and AutoDL-Projects' best of
    /// 100 sampled children.
    fn default() -> Self {
        Self {
            tau_max: None,
            tau_min: None,
            resource: Resource::Params,
            resource_weight: 0.0,
            controller_steps: None,
            controller_aggregate: None,
            select_samples: 100,
        }
    }
}

impl SamplingConfig {
    /// The temperatures (first, last epoch) of `method`: GDAS anneals 10 → 0.1 (AutoDL's
    /// `--tau_max 10 --tau_min 0.1`), SNAS 1 → 0.03 (the SNAS paper).
    pub fn taus(&self, method: Method) -> (f64, f64) {
        let (max, min) = if method == Method::Snas { (1.0, 0.03) } else { (10.0, 0.1) };
        (self.tau_max.unwrap_or(max), self.tau_min.unwrap_or(min))
    }
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

macro_rules! kebab_enum_str {
    ($t:ty, $what:literal, [$($v:path => $s:literal),*]) => {
        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> std::result::Result<Self, String> {
                match s {
                    $($s => Ok($v),)*
                    _ => Err(format!(concat!("unknown ", $what, " `{}` (expected {})"), s, [$($s),*].join(", "))),
                }
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $($v => f.write_str($s),)*
                }
            }
        }
    };
}

kebab_enum_str!(Method, "method", [
    Method::FirstOrder => "first-order",
    Method::SecondOrder => "second-order",
    Method::Unrolled => "unrolled",
    Method::Implicit => "implicit",
    Method::ImplicitCg => "implicit-cg",
    Method::Gdas => "gdas",
    Method::Snas => "snas",
    Method::Enas => "enas",
    Method::Random => "random"
]);
kebab_enum_str!(Resource, "resource", [Resource::Params => "params", Resource::MultAdds => "mult-adds"]);
kebab_enum_str!(EarlyStop, "early stop", [EarlyStop::None => "none", EarlyStop::DartsEs => "darts-es"]);

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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchConfig {
    pub preset: String,
    pub space: SpaceKind,
    pub method: Method,
    /// Neumann-series terms J of the implicit method.
    pub neumann_steps: usize,
    /// Virtual SGD steps K of the unrolled method (K = 1: DARTS' second order).
    #[serde(default = "one")]
    pub unroll_steps: usize,
    /// Conjugate-gradient iterations J of the implicit-cg method.
    #[serde(default = "default_cg_steps")]
    pub cg_steps: usize,
    /// Damping λ of the implicit-cg method's system (H + λI)p = ∇_w L_val.
    #[serde(default = "default_cg_damping")]
    pub cg_damping: f64,
    /// The dominant eigenvalue of ∇²_α L_val every N epochs (and after the last); 0: never.
    #[serde(default)]
    pub hessian_every: usize,
    #[serde(default)]
    pub early_stop: EarlyStop,
    pub epochs: usize,
    /// First epoch with architecture updates (PC-DARTS warm-up).
    pub arch_start_epoch: usize,
    pub seed: u64,
    pub device: DeviceSpec,
    pub model: SearchModelConfig,
    pub data: DataConfig,
    pub weight_optimizer: WeightOptimConfig,
    pub arch_optimizer: ArchOptimConfig,
    /// P-DARTS: the stages of a progressive search; None: one search.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progressive: Option<ProgressiveConfig>,
    /// The stage of a progressive search this run is (set by the driver, recorded in metrics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<usize>,
    /// Base dropout rate after skip_connect, scheduled over the epochs as P-DARTS does.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skip_dropout: f64,
    /// The sampling methods' settings (GDAS, SNAS, ENAS, random sampling).
    #[serde(default)]
    pub sampling: SamplingConfig,
}

fn one() -> usize {
    1
}

fn default_cg_steps() -> usize {
    5
}

/// λ = 1, iMAML's proximal weight: a network's training Hessian has negative eigenvalues, and
/// without damping conjugate gradient often meets non-positive curvature at its first
/// iteration, which leaves p = 0 and the first-order gradient.
fn default_cg_damping() -> f64 {
    1.0
}

fn is_one(v: &usize) -> bool {
    *v == 1
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

/// P-DARTS' stages (chenxin061/pdarts `train_search.py`): stage s searches a network of
/// `layers[s]` cells over `ops_per_edge[s]` ops on every edge, with dropout rate
/// `skip_dropout[s]` after skip_connect; each stage runs `epochs` epochs with α frozen before
/// `arch_start_epoch`, on a fresh network, α and optimisers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgressiveConfig {
    pub layers: Vec<usize>,
    pub ops_per_edge: Vec<usize>,
    pub skip_dropout: Vec<f64>,
}

pub const PRESETS: [&str; 7] = ["darts-1st", "darts-2nd", "pc-darts", "pc-darts-imagenet", "p-darts", "gdas", "quick"];

impl SearchConfig {
    /// The settings of a named preset.
    pub fn preset(name: &str) -> Result<SearchConfig> {
        // The presets are the DARTS and PC-DARTS papers' searches of the darts space.
        let space = SpaceKind::Darts;
        let (channels, layers) = space.search_sizes(name == "quick");
        let h = HypergradConfig::from(Method::FirstOrder);
        let mut c = SearchConfig {
            preset: name.to_string(),
            space,
            method: h.method,
            neumann_steps: h.neumann_steps,
            unroll_steps: h.unroll_steps,
            cg_steps: h.cg_steps,
            cg_damping: h.cg_damping,
            hessian_every: 0,
            early_stop: EarlyStop::None,
            epochs: 50,
            arch_start_epoch: 0,
            seed: 2,
            device: DeviceSpec::Cpu,
            model: SearchModelConfig {
                channels,
                layers,
                steps: 4,
                partial_channels: 1,
                edge_norm: false,
                max_skip_connect: None,
                ops: None,
                net: NetKind::Cifar,
            },
            data: DataConfig {
                spec: DataSpec::Synthetic,
                subset: None,
                batch_size: 64,
                accumulate: 1,
                image_size: 32,
                subset_fraction: None,
            },
            weight_optimizer: WeightOptimConfig {
                lr: 0.025,
                lr_min: 0.001,
                momentum: 0.9,
                weight_decay: 3e-4,
                grad_clip: 5.0,
                nesterov: false,
                schedule: ScheduleKind::Cosine,
                warmup_epochs: 0,
            },
            arch_optimizer: ArchOptimConfig { lr: 3e-4, beta1: 0.5, beta2: 0.999, weight_decay: 1e-3 },
            progressive: None,
            stage: None,
            skip_dropout: 0.0,
            sampling: SamplingConfig::default(),
        };
        match name {
            "darts-1st" => {}
            "darts-2nd" => c.method = Method::SecondOrder,
            "pc-darts" => {
                c.data.batch_size = 256;
                c.weight_optimizer.lr = 0.1;
                c.weight_optimizer.lr_min = 0.0;
                c.arch_optimizer.lr = 6e-4;
                c.model.partial_channels = 4;
                c.model.edge_norm = true;
                c.arch_start_epoch = 15;
            }
            "pc-darts-imagenet" => {
                // PC-DARTS' `train_search_imagenet.py`: the ImageNet stems at 224, K=2, edge
                // normalisation, 10% of each class for the weights and 2.5% for α, batch 1024,
                // SGD 0.5 cosine to 0 with 5 warm-up epochs (batches over 256), weight decay
                // 3e-4, Adam 6e-3 (0.5, 0.999) with weight decay 1e-3 from epoch 35 of 50.
                c.model.net = NetKind::ImageNet;
                c.model.partial_channels = 2;
                c.model.edge_norm = true;
                c.data.image_size = 224;
                c.data.subset_fraction = Some([0.1, 0.025]);
                c.data.batch_size = 1024;
                c.weight_optimizer.lr = 0.5;
                c.weight_optimizer.lr_min = 0.0;
                c.weight_optimizer.warmup_epochs = 5;
                c.arch_optimizer.lr = 6e-3;
                c.arch_start_epoch = 35;
            }
            "p-darts" => {
                c.epochs = 25;
                c.arch_start_epoch = 10;
                c.data.batch_size = 96;
                c.weight_optimizer.lr_min = 0.0;
                c.arch_optimizer.lr = 6e-4;
                c.model.layers = 5;
                c.model.max_skip_connect = Some(2);
                c.progressive = Some(ProgressiveConfig {
                    layers: vec![5, 11, 17],
                    ops_per_edge: vec![8, 5, 3],
                    skip_dropout: vec![0.0, 0.4, 0.7],
                });
            }
            "gdas" => {
                // AutoDL-Projects' GDAS on NAS-Bench-201 (scripts-search/NAS-Bench-201-algos/
                // GDAS.sh, configs/nas-benchmark/algos/GDAS.config): 250 epochs, batch 64, SGD
                // 0.025 → 0.001 with Nesterov momentum 0.9 and weight decay 5e-4, Adam 3e-4
                // (0.5, 0.999) with weight decay 1e-3, τ 10 → 0.1, clip 5.
                c.set_space(SpaceKind::Nb201);
                c.method = Method::Gdas;
                c.epochs = 250;
                c.weight_optimizer.weight_decay = 5e-4;
                c.weight_optimizer.nesterov = true;
            }
            "quick" => {
                c.data.batch_size = 32;
                c.data.subset = Some(1000);
                c.epochs = 5;
            }
            other => {
                return Err(Error::config(format!("unknown preset `{other}` (expected {})", PRESETS.join(", "))));
            }
        }
        Ok(c)
    }

    /// The architecture-gradient settings.
    pub fn hypergrad(&self) -> HypergradConfig {
        HypergradConfig {
            method: self.method,
            neumann_steps: self.neumann_steps,
            unroll_steps: self.unroll_steps,
            cg_steps: self.cg_steps,
            cg_damping: self.cg_damping,
        }
    }

    /// Switches the search space; moving to another space also sets that space's network size
    /// (nb201: C=16 and 5 cells per stage as in the benchmark, C=8 and 2 for `quick`), which
    /// later flags may override.
    pub fn set_space(&mut self, space: SpaceKind) {
        if space != self.space {
            (self.model.channels, self.model.layers) = space.search_sizes(self.preset == "quick");
        }
        self.space = space;
    }

    /// A preset with the fields of a JSON config file laid over it. Unknown fields are errors.
    pub fn from_file(preset: Option<&str>, path: &Path) -> Result<SearchConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::config(format!("{}: {e}", path.display())))?;
        let overlay: Value = serde_json::from_str(&text)
            .map_err(|e| Error::config(format!("{}: malformed JSON: {e}", path.display())))?;
        let name = preset.or_else(|| overlay.get("preset").and_then(Value::as_str)).unwrap_or("darts-1st");
        let base = Self::preset(name)?;
        let mut merged = serde_json::to_value(&base).map_err(|e| Error::config(e.to_string()))?;
        merge(&mut merged, &overlay);
        if let Some(obj) = merged.as_object_mut() {
            obj.insert("preset".into(), Value::String(name.to_string()));
        }
        serde_json::from_value(merged).map_err(|e| Error::config(format!("{}: {e}", path.display())))
    }

    /// Checks every value once; the search only ever sees a validated configuration. Messages
    /// name the settings by their config.json field.
    pub fn validate(self) -> Result<ValidSearchConfig> {
        let bad = |m: String| Err(Error::Config(ConfigError::new(m)));
        let positive = [
            ("epochs", self.epochs),
            ("data.batch_size", self.data.batch_size),
            ("data.accumulate", self.data.accumulate),
            ("data.image_size", self.data.image_size),
            ("model.channels", self.model.channels),
            ("model.layers", self.model.layers),
            ("model.steps", self.model.steps),
            ("model.partial_channels", self.model.partial_channels),
        ];
        for (name, v) in positive {
            if v == 0 {
                return bad(format!("{} must be positive, got 0", field(name)));
            }
        }
        if self.data.subset == Some(0) {
            return bad(format!("{} must be positive, got 0", field("data.subset")));
        }
        if let Some(n) = self.data.subset.filter(|&n| n < 2 * self.data.batch_size) {
            return bad(format!(
                "{} {n} is too small for {} {}: each half of the split needs a full batch",
                brief("data.subset"),
                brief("data.batch_size"),
                self.data.batch_size
            ));
        }
        if let Some([w, a]) = self.data.subset_fraction {
            if !(w > 0.0 && a > 0.0 && w + a <= 1.0) {
                return bad(format!(
                    "{} must be two fractions above 0 summing to at most 1 (weights, α), got {w}, {a}",
                    field("data.subset_fraction")
                ));
            }
        }
        let k = self.model.partial_channels;
        if !self.model.channels.is_multiple_of(k) {
            return bad(format!(
                "{} K={k} must divide {} C={} (PC-DARTS splits every edge's channels K ways)",
                brief("model.partial_channels"),
                brief("model.channels"),
                self.model.channels
            ));
        }
        let method_steps = [
            (Method::Implicit, "neumann_steps", self.neumann_steps),
            (Method::Unrolled, "unroll_steps", self.unroll_steps),
            (Method::ImplicitCg, "cg_steps", self.cg_steps),
        ];
        for (method, name, v) in method_steps {
            if self.method == method && v == 0 {
                return bad(format!("{} must be positive for the {method} method", field(name)));
            }
        }
        if !self.cg_damping.is_finite() || self.cg_damping < 0.0 {
            return bad(format!(
                "{} must be a finite non-negative number, got {}",
                field("cg_damping"),
                self.cg_damping
            ));
        }
        if self.early_stop == EarlyStop::DartsEs && self.hessian_every == 0 {
            return bad(format!(
                "{} darts-es follows the α-Hessian's eigenvalue: {} must be positive (R-DARTS: 2)",
                brief("early_stop"),
                field("hessian_every")
            ));
        }
        if self.arch_start_epoch >= self.epochs && self.arch_start_epoch > 0 {
            return bad(format!(
                "{} {} leaves no architecture updates in {} {}",
                brief("arch_start_epoch"),
                self.arch_start_epoch,
                brief("epochs"),
                self.epochs
            ));
        }
        let w = &self.weight_optimizer;
        let a = &self.arch_optimizer;
        let finite_nonneg = [
            ("weight_optimizer.lr", w.lr),
            ("weight_optimizer.lr_min", w.lr_min),
            ("weight_optimizer.momentum", w.momentum),
            ("weight_optimizer.weight_decay", w.weight_decay),
            ("weight_optimizer.grad_clip", w.grad_clip),
            ("arch_optimizer.lr", a.lr),
            ("arch_optimizer.weight_decay", a.weight_decay),
        ];
        for (name, v) in finite_nonneg {
            if !v.is_finite() || v < 0.0 {
                return bad(format!("{} must be a finite non-negative number, got {v}", field(name)));
            }
        }
        for (name, v) in [("weight_optimizer.lr", w.lr), ("arch_optimizer.lr", a.lr)] {
            if v <= 0.0 {
                return bad(format!("{} must be positive, got 0", field(name)));
            }
        }
        if let Some(e) = w.schedule_error("weight_optimizer") {
            return Err(Error::Config(e));
        }
        if !(0.0..1.0).contains(&a.beta1) || !(0.0..1.0).contains(&a.beta2) {
            return bad(format!(
                "{} and {} must be in [0, 1), got {} and {}",
                field("arch_optimizer.beta1"),
                field("arch_optimizer.beta2"),
                a.beta1,
                a.beta2
            ));
        }
        if !self.skip_dropout.is_finite() || !(0.0..1.0).contains(&self.skip_dropout) {
            return bad(format!("{} must be in [0, 1), got {}", field("skip_dropout"), self.skip_dropout));
        }
        self.validate_sampling()?;
        self.space.validate_search(&self.model)?;
        if let Some(p) = &self.progressive {
            p.validate(self.space, &self.model)?;
        }
        Ok(ValidSearchConfig(self))
    }
}

impl SearchConfig {
    /// The settings a sampling method needs, and the relaxation features it cannot have.
    fn validate_sampling(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(ConfigError::new(m)));
        let m = self.method;
        let second_order = matches!(m, Method::SecondOrder | Method::Unrolled | Method::Implicit | Method::ImplicitCg);
        if second_order && self.weight_optimizer.nesterov {
            return bad(format!(
                "{} and the {m} method: its virtual steps are plain momentum SGD",
                field("weight_optimizer.nesterov")
            ));
        }
        if !m.is_sampling() {
            return Ok(());
        }
        if self.model.partial_channels != 1 || self.model.edge_norm {
            return bad(format!(
                "the {m} method samples whole ops: {} must be 1 and {} off (PC-DARTS)",
                field("model.partial_channels"),
                field("model.edge_norm")
            ));
        }
        if self.early_stop != EarlyStop::None || self.hessian_every > 0 {
            return bad(format!(
                "the {m} method has no α-Hessian: {} and {} are for the gradient methods",
                field("early_stop"),
                field("hessian_every")
            ));
        }
        if self.progressive.is_some() {
            return bad(format!("the {m} method does not run in a progressive search (P-DARTS)"));
        }
        let s = &self.sampling;
        let (max, min) = s.taus(m);
        if !(max.is_finite() && min.is_finite() && min > 0.0 && max >= min) {
            return bad(format!(
                "{} and {} must be finite with 0 < tau_min ≤ tau_max, got {max} and {min}",
                field("sampling.tau_max"),
                field("sampling.tau_min")
            ));
        }
        if !s.resource_weight.is_finite() || s.resource_weight < 0.0 {
            return bad(format!(
                "{} must be a finite non-negative number, got {}",
                field("sampling.resource_weight"),
                s.resource_weight
            ));
        }
        if s.resource_weight > 0.0 && m != Method::Snas {
            return bad(format!("{} is SNAS' penalty; the {m} method has none", field("sampling.resource_weight")));
        }
        let counts = [
            (Method::Enas, "sampling.controller_steps", s.controller_steps.unwrap_or(1)),
            (Method::Enas, "sampling.controller_aggregate", s.controller_aggregate.unwrap_or(1)),
            (Method::Enas, "sampling.select_samples", s.select_samples),
            (Method::Random, "sampling.select_samples", s.select_samples),
        ];
        for (method, name, v) in counts {
            if m == method && v == 0 {
                return bad(format!("{} must be positive for the {m} method", field(name)));
            }
        }
        Ok(())
    }
}

impl ProgressiveConfig {
    fn validate(&self, space: SpaceKind, model: &SearchModelConfig) -> Result<()> {
        let bad = |m: String| Err(Error::Config(ConfigError::new(m)));
        if space != SpaceKind::Darts {
            return bad("a progressive search (P-DARTS) needs the darts space".to_string());
        }
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
        // The first stage searches the op sets as given (the space has checked them).
        let sets = DartsOpSets::from_config(model.ops.as_ref(), model.steps).map_err(Error::config)?;
        let first = self.ops_per_edge[0];
        if sets.normal.iter().chain(&sets.reduce).any(|r| r.len() != first) {
            return bad(format!(
                "{} starts at {first} ops per edge, but {} does not give every edge {first} ops",
                field("progressive.ops_per_edge"),
                brief("model.ops")
            ));
        }
        Ok(())
    }
}

/// Recursively lays `overlay` over `base` (objects merge, everything else replaces).
fn merge(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// A configuration that passed `SearchConfig::validate`.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidSearchConfig(SearchConfig);

impl std::ops::Deref for ValidSearchConfig {
    type Target = SearchConfig;
    fn deref(&self) -> &SearchConfig {
        &self.0
    }
}

impl ValidSearchConfig {
    pub fn into_inner(self) -> SearchConfig {
        self.0
    }

    /// Whether a folder dataset is streamed from its files (ImageNet-scale searches) rather
    /// than decoded into memory.
    pub fn streams_data(&self) -> bool {
        self.model.net == NetKind::ImageNet
    }

    /// Checks that images of `height`×`width` fit the supernet (its reductions, and the
    /// ImageNet stems, halve them evenly).
    pub fn check_input_size(&self, height: usize, width: usize) -> Result<()> {
        Ok(self.space.check_search_input_size(&self.model, height, width)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_follow_the_design() {
        let d = SearchConfig::preset("darts-1st").unwrap();
        assert_eq!((d.data.batch_size, d.epochs, d.model.channels, d.model.layers), (64, 50, 16, 8));
        assert_eq!((d.weight_optimizer.lr, d.weight_optimizer.lr_min, d.arch_optimizer.lr), (0.025, 0.001, 3e-4));
        assert_eq!(SearchConfig::preset("darts-2nd").unwrap().method, Method::SecondOrder);
        let p = SearchConfig::preset("pc-darts").unwrap();
        assert_eq!(
            (p.data.batch_size, p.model.partial_channels, p.model.edge_norm, p.arch_start_epoch),
            (256, 4, true, 15)
        );
        assert_eq!((p.weight_optimizer.lr, p.weight_optimizer.lr_min, p.arch_optimizer.lr), (0.1, 0.0, 6e-4));
        let q = SearchConfig::preset("quick").unwrap();
        assert!(q.data.subset.unwrap() <= 2000);
        assert!(SearchConfig::preset("nope").unwrap_err().to_string().contains("unknown preset `nope`"));
    }

    #[test]
    fn p_darts_preset_has_the_reference_settings() {
        // chenxin061/pdarts train_search.py and the P-DARTS paper: three stages of 5, 11 and
        // 17 cells at C=16, 25 epochs each with α frozen for 10, 8/5/3 ops per edge, skip
        // dropout 0.0/0.4/0.7, batch 96, SGD 0.025 cosine to 0, momentum 0.9, wd 3e-4, clip 5,
        // Adam 6e-4 (0.5, 0.999) wd 1e-3, first order, 2 skip connections in the final cell.
        let c = SearchConfig::preset("p-darts").unwrap();
        let p = c.progressive.clone().unwrap();
        assert_eq!((p.layers, p.ops_per_edge, p.skip_dropout), (vec![5, 11, 17], vec![8, 5, 3], vec![0.0, 0.4, 0.7]));
        assert_eq!((c.epochs, c.arch_start_epoch, c.data.batch_size, c.model.channels), (25, 10, 96, 16));
        let w = &c.weight_optimizer;
        assert_eq!((w.lr, w.lr_min, w.momentum, w.weight_decay, w.grad_clip), (0.025, 0.0, 0.9, 3e-4, 5.0));
        let a = &c.arch_optimizer;
        assert_eq!((a.lr, a.beta1, a.beta2, a.weight_decay), (6e-4, 0.5, 0.999, 1e-3));
        assert_eq!((c.method, c.model.max_skip_connect, c.model.ops.clone()), (Method::FirstOrder, Some(2), None));
        c.validate().unwrap();
        for (bad, want) in [
            (
                ProgressiveConfig { layers: vec![5, 11], ops_per_edge: vec![8, 5, 3], skip_dropout: vec![0.0; 3] },
                "one value per stage",
            ),
            (
                ProgressiveConfig { layers: vec![5, 11], ops_per_edge: vec![8, 8], skip_dropout: vec![0.0; 2] },
                "must decrease",
            ),
            (
                ProgressiveConfig { layers: vec![5, 11], ops_per_edge: vec![8, 5], skip_dropout: vec![0.0, 1.0] },
                "[0, 1)",
            ),
        ] {
            let mut c = SearchConfig::preset("p-darts").unwrap();
            c.progressive = Some(bad);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn validation_names_the_problem() {
        let mut c = SearchConfig::preset("darts-1st").unwrap();
        c.model.partial_channels = 3;
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("model.partial_channels K=3 must divide model.channels C=16"), "{e}");
        let fields: Vec<_> = e.config_error().unwrap().fields().collect();
        assert_eq!(fields, ["model.partial_channels", "model.channels"]);
        let mut c = SearchConfig::preset("darts-1st").unwrap();
        c.data.batch_size = 0;
        assert!(c.validate().unwrap_err().to_string().contains("data.batch_size must be positive"));
        let mut c = SearchConfig::preset("darts-1st").unwrap();
        c.weight_optimizer.lr = f64::NAN;
        assert!(c.validate().is_err());
    }

    #[test]
    fn config_file_overlays_and_rejects_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.json");
        std::fs::write(&p, r#"{"preset":"quick","epochs":2,"model":{"channels":4}}"#).unwrap();
        let c = SearchConfig::from_file(None, &p).unwrap();
        assert_eq!((c.preset.as_str(), c.epochs, c.model.channels, c.model.layers), ("quick", 2, 4, 5));
        std::fs::write(&p, r#"{"model":{"chanels":4}}"#).unwrap();
        let e = SearchConfig::from_file(None, &p).unwrap_err().to_string();
        assert!(e.contains("chanels"), "{e}");
        std::fs::write(&p, r#"{"epochs":"#).unwrap();
        assert!(SearchConfig::from_file(None, &p).unwrap_err().to_string().contains("malformed JSON"));
    }

    #[test]
    fn round_trips_through_json() {
        let c = SearchConfig::preset("pc-darts").unwrap();
        let back: SearchConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(c, back);
    }
}
