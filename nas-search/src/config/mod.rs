//! The search configuration: one serialisable value per run, nesting the method, model, data
//! and optimiser settings, resolved from a preset, an optional JSON config file and
//! command-line flags (in that order of precedence, later wins), validated once into
//! `ValidSearchConfig` and written to the run directory as config.json before anything else.
//!
//! The `method` section belongs to the method it names (`method::MethodConfig`: its settings,
//! defaults and checks are the method's), the `model` section's own fields to the space
//! (`search_spaces::SearchModelConfig`). A config file and the flags are JSON overlays laid
//! over the preset by one merge (`nas_core::settings::merge`); `legacy` reads the config.json
//! of runs written before the method section. Presets: `presets`; flags: `flags`.

mod flags;
mod legacy;
mod presets;
mod sections;

use std::path::Path;

use nas_core::config_error::{brief, field, require_finite_non_negative, require_positive, ConfigError};
use nas_core::optim::WeightOptimConfig;
use nas_core::settings::merge;
use nas_core::DeviceSpec;
use search_spaces::{NetKind, SearchModelConfig, SpaceKind};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

pub use self::flags::{search_flags, step_flags};
pub use self::presets::presets;
pub use self::sections::{ArchOptimConfig, DataConfig, EarlyStop, ProgressiveConfig};
pub use crate::method::{Method, MethodConfig};
use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct SearchConfig {
    pub preset: String,
    /// The method and its settings.
    pub method: MethodConfig,
    /// The dominant eigenvalue of ∇²_α L_val every N epochs (and after the last); 0: never.
    pub hessian_every: usize,
    pub early_stop: EarlyStop,
    pub epochs: usize,
    /// First epoch with architecture updates (PC-DARTS warm-up).
    pub arch_start_epoch: usize,
    pub seed: u64,
    pub device: DeviceSpec,
    /// The supernet: its size and its space's own settings (the space of the search).
    pub model: SearchModelConfig,
    pub data: DataConfig,
    pub weight_optimizer: WeightOptimConfig,
    pub arch_optimizer: ArchOptimConfig,
    /// P-DARTS: the stages of a progressive search; None: one search.
    pub progressive: Option<ProgressiveConfig>,
    /// The stage of a progressive search this run is (set by the driver, recorded in metrics).
    pub stage: Option<usize>,
    /// The epoch this run starts at, and the one it stops before (None: `epochs`): a stage of
    /// a run that continues over several (DrNAS' Net2Wider stages: stage s of S stages of E
    /// epochs is epochs s·E to (s+1)·E of a run of `epochs` S·E, whose schedules span them all).
    pub first_epoch: usize,
    pub end_epoch: Option<usize>,
    /// Base dropout rate after skip_connect, scheduled over the epochs as P-DARTS does.
    pub skip_dropout: f64,
}

/// config.json as it is read: the method and the model as JSON, read by their owners.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSearchConfig {
    preset: String,
    space: SpaceKind,
    method: Value,
    #[serde(default)]
    hessian_every: usize,
    #[serde(default)]
    early_stop: EarlyStop,
    epochs: usize,
    arch_start_epoch: usize,
    seed: u64,
    device: DeviceSpec,
    model: Value,
    data: DataConfig,
    weight_optimizer: WeightOptimConfig,
    arch_optimizer: ArchOptimConfig,
    #[serde(default)]
    progressive: Option<ProgressiveConfig>,
    #[serde(default)]
    stage: Option<usize>,
    #[serde(default)]
    first_epoch: usize,
    #[serde(default)]
    end_epoch: Option<usize>,
    #[serde(default)]
    skip_dropout: f64,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

fn is_zero_usize(v: &usize) -> bool {
    *v == 0
}

/// config.json as it is written: `RawSearchConfig`'s fields, the method and the model in
/// their own order.
#[derive(Serialize)]
struct SearchConfigOut<'a> {
    preset: &'a str,
    space: SpaceKind,
    method: &'a MethodConfig,
    hessian_every: usize,
    early_stop: EarlyStop,
    epochs: usize,
    arch_start_epoch: usize,
    seed: u64,
    device: DeviceSpec,
    model: &'a SearchModelConfig,
    data: &'a DataConfig,
    weight_optimizer: &'a WeightOptimConfig,
    arch_optimizer: &'a ArchOptimConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    progressive: &'a Option<ProgressiveConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stage: Option<usize>,
    #[serde(skip_serializing_if = "is_zero_usize")]
    first_epoch: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_epoch: Option<usize>,
    #[serde(skip_serializing_if = "is_zero")]
    skip_dropout: f64,
}

impl Serialize for SearchConfig {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        SearchConfigOut {
            preset: &self.preset,
            space: self.model.kind(),
            method: &self.method,
            hessian_every: self.hessian_every,
            early_stop: self.early_stop,
            epochs: self.epochs,
            arch_start_epoch: self.arch_start_epoch,
            seed: self.seed,
            device: self.device,
            model: &self.model,
            data: &self.data,
            weight_optimizer: &self.weight_optimizer,
            arch_optimizer: &self.arch_optimizer,
            progressive: &self.progressive,
            stage: self.stage,
            first_epoch: self.first_epoch,
            end_epoch: self.end_epoch,
            skip_dropout: self.skip_dropout,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for SearchConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        SearchConfig::from_value(Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl SearchConfig {
    /// The space of the search.
    pub fn space(&self) -> SpaceKind {
        self.model.kind()
    }

    /// Reads a config.json: the current form, or one written before the method section
    /// (`legacy`).
    pub fn from_value(mut v: Value) -> std::result::Result<SearchConfig, ConfigError> {
        legacy::migrate(&mut v);
        let raw: RawSearchConfig = serde_json::from_value(v).map_err(|e| ConfigError::plain(e.to_string()))?;
        Ok(SearchConfig {
            method: MethodConfig::from_json(&raw.method)?,
            model: SearchModelConfig::from_json(raw.space, &raw.model)?,
            preset: raw.preset,
            hessian_every: raw.hessian_every,
            early_stop: raw.early_stop,
            epochs: raw.epochs,
            arch_start_epoch: raw.arch_start_epoch,
            seed: raw.seed,
            device: raw.device,
            data: raw.data,
            weight_optimizer: raw.weight_optimizer,
            arch_optimizer: raw.arch_optimizer,
            progressive: raw.progressive,
            stage: raw.stage,
            first_epoch: raw.first_epoch,
            end_epoch: raw.end_epoch,
            skip_dropout: raw.skip_dropout,
        })
    }

    /// The configuration as config.json holds it.
    pub fn to_value(&self) -> Result<Value> {
        serde_json::to_value(self).map_err(|e| Error::Internal(format!("a search configuration as JSON: {e}")))
    }

    /// These settings with `overlay` (the command line's flags as JSON) laid over them. A new
    /// space starts from its own supernet settings at its search size (the demo's with the
    /// `quick` preset), which the overlay's `model` fields then change; DARTS-ES asked for
    /// without an eigenvalue interval gets R-DARTS' every second epoch.
    pub fn with_overlay(&self, overlay: &Value) -> Result<SearchConfig> {
        let mut v = self.to_value()?;
        if let Some(space) = overlay.get("space") {
            let space: SpaceKind = serde_json::from_value(space.clone())
                .map_err(|e| Error::Config(ConfigError::new(format!("{}: {e}", field("space")))))?;
            if space != self.space() {
                let model = SearchModelConfig::default_for(space, self.preset == "quick");
                v["model"] = serde_json::to_value(model).map_err(|e| Error::Internal(e.to_string()))?;
            }
        }
        merge(&mut v, overlay);
        let darts_es = overlay.get("early_stop").and_then(Value::as_str) == Some("darts-es");
        if darts_es && overlay.get("hessian_every").is_none() && self.hessian_every == 0 {
            // R-DARTS computes the eigenvalue every second epoch for DARTS-ES.
            v["hessian_every"] = Value::from(2);
        }
        Ok(SearchConfig::from_value(v)?)
    }

    /// A preset with the fields of a JSON config file laid over it. Unknown fields are errors.
    pub fn from_file(preset: Option<&str>, path: &Path) -> Result<SearchConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::config(format!("{}: {e}", path.display())))?;
        let overlay: Value = serde_json::from_str(&text)
            .map_err(|e| Error::config(format!("{}: malformed JSON: {e}", path.display())))?;
        let name = preset.or_else(|| overlay.get("preset").and_then(Value::as_str)).unwrap_or("darts-1st");
        let mut merged = Self::preset(name)?.to_value()?;
        merge(&mut merged, &overlay);
        merged["preset"] = Value::String(name.to_string());
        SearchConfig::from_value(merged).map_err(|e| Error::Config(e.context(path.display())))
    }

    /// Checks every value once; the search only ever sees a validated configuration. Messages
    /// name the settings by their config.json field.
    pub fn validate(self) -> Result<ValidSearchConfig> {
        let bad = |m: String| Err(Error::Config(ConfigError::new(m)));
        require_positive(&[
            ("epochs", self.epochs),
            ("data.batch_size", self.data.batch_size),
            ("data.accumulate", self.data.accumulate),
            ("data.image_size", self.data.image_size),
            ("model.channels", self.model.channels),
            ("model.layers", self.model.layers),
            ("data.subset", self.data.subset.unwrap_or(1)),
        ])?;
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
        self.space().validate_search(&self.model)?;
        if self.early_stop == EarlyStop::DartsEs && self.hessian_every == 0 {
            return bad(format!(
                "{} darts-es follows the α-Hessian's eigenvalue: {} must be positive (R-DARTS: 2)",
                brief("early_stop"),
                field("hessian_every")
            ));
        }
        let end = self.end_epoch.unwrap_or(self.epochs);
        if end > self.epochs || self.first_epoch >= end {
            return bad(format!(
                "{} {} and {} {end} leave no epochs of {} {}",
                brief("first_epoch"),
                self.first_epoch,
                brief("end_epoch"),
                brief("epochs"),
                self.epochs
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
        require_finite_non_negative(&[
            ("weight_optimizer.lr", w.lr),
            ("weight_optimizer.lr_min", w.lr_min),
            ("weight_optimizer.momentum", w.momentum),
            ("weight_optimizer.weight_decay", w.weight_decay),
            ("weight_optimizer.grad_clip", w.grad_clip),
            ("arch_optimizer.lr", a.lr),
            ("arch_optimizer.weight_decay", a.weight_decay),
        ])?;
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
        self.method.validate(&self)?;
        if let Some(p) = &self.progressive {
            p.validate()?;
            self.model.space.validate_stages(p.ops_per_edge[0])?;
        }
        Ok(ValidSearchConfig(self))
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
        self.model.net() == NetKind::ImageNet
    }

    /// Checks that images of `height`×`width` fit the supernet (its reductions, and the
    /// ImageNet stems, halve them evenly).
    pub fn check_input_size(&self, height: usize, width: usize) -> Result<()> {
        Ok(self.space().check_search_input_size(&self.model, height, width)?)
    }
}

#[cfg(test)]
mod tests;
