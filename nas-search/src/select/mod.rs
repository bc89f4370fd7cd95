//! Architecture selection on a trained supernet (`nas select`): instead of reading the
//! genotype off α, a selection method decides it from the supernet itself. One method so far,
//! DARTS-PT's perturbation-based selection (`pt`).
//!
//! A selection runs in its own directory inside the search's, `DIR/select-<method>/`
//! (`select_dir`), with its own config.json (the selection's settings and the search's
//! configuration), metrics.jsonl, checkpoint and genotype.json, so the search's files stay as
//! they were and an interrupted selection resumes like any run.

mod projection;
pub mod pt;

use std::path::{Path, PathBuf};

use nas_core::config_error::field;
use nas_core::settings::{self, parse, Flag, Mount};
use nas_core::ConfigError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use pt::{NodeDecision, OpDecision, Projection, PtSelect, Removal};

use crate::config::SearchConfig;

/// The selection methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SelectMethod {
    /// DARTS-PT (Wang et al., ICLR 2021): perturbation-based projection with fine-tuning.
    Pt,
}

impl SelectMethod {
    pub fn name(self) -> &'static str {
        match self {
            SelectMethod::Pt => "pt",
        }
    }
}

impl std::str::FromStr for SelectMethod {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pt" | "darts-pt" => Ok(SelectMethod::Pt),
            _ => Err(format!("unknown selection method `{s}` (expected pt)")),
        }
    }
}

/// The directory of a `method` selection on the search in `search_dir`.
pub fn select_dir(search_dir: &Path, method: SelectMethod) -> PathBuf {
    search_dir.join(format!("select-{}", method.name()))
}

/// DARTS-PT's settings (the `pt` section of a selection's config.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PtConfig {
    /// Fine-tuning epochs between two projections (the reference's `proj_intv`, 5 in its
    /// scripts).
    pub interval: usize,
    /// Search-valid batches each projection evaluation reads (None: the whole half, as the
    /// reference).
    pub eval_batches: Option<usize>,
    /// Keeps α fixed while fine-tuning (the reference's `blank-proj`); by default α takes
    /// first-order DARTS steps as in its `darts-proj`.
    pub freeze_alpha: bool,
}

impl Default for PtConfig {
    fn default() -> Self {
        Self { interval: 5, eval_batches: None, freeze_alpha: false }
    }
}

impl PtConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.interval == 0 {
            return Err(ConfigError::new(format!("{} must be at least 1", field("pt.interval"))));
        }
        if self.eval_batches == Some(0) {
            return Err(ConfigError::new(format!("{} must be at least 1", field("pt.eval_batches"))));
        }
        Ok(())
    }
}

/// DARTS-PT's flags (`nas select --method pt`, `nas search --select pt`).
pub fn pt_flags() -> Vec<Flag> {
    vec![
        Flag::one("proj-interval", "interval", "N", parse::<usize>)
            .help("pt: fine-tuning epochs between two projections [default: 5]"),
        Flag::one("proj-eval-batches", "eval_batches", "N", parse::<usize>)
            .help("pt: search-valid batches each projection evaluates [default: the whole half]"),
        Flag::switch("proj-freeze-alpha", "freeze_alpha")
            .help("pt: keep α fixed while fine-tuning (the reference's blank-proj) instead of first-order steps"),
    ]
}

/// The flags of `nas select`.
pub fn select_flags() -> Vec<Mount> {
    vec![Mount::new("pt", pt_flags()).with_heading("DARTS-PT settings")]
}

/// A selection's configuration (its config.json): the method and its settings, the search it
/// selects from, and that search's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectConfig {
    pub method: SelectMethod,
    /// The search's run directory, whose checkpoint holds the trained supernet.
    pub source: PathBuf,
    pub pt: PtConfig,
    pub search: SearchConfig,
}

impl SelectConfig {
    /// A selection from the search in `source` (its config.json), with `overlay` (the flags'
    /// JSON, `{"pt": {...}}`) laid over the method's defaults.
    pub fn new(method: SelectMethod, source: &Path, overlay: &Value) -> crate::Result<Self> {
        let dir = crate::RunDir::open(source)?;
        let search = SearchConfig::from_value(dir.read_json(nas_core::run_dir::CONFIG)?)?;
        let mut pt = serde_json::json!({ "pt": PtConfig::default() });
        settings::merge(&mut pt, overlay);
        let pt: PtConfig =
            serde_json::from_value(pt["pt"].clone()).map_err(|e| ConfigError::new(format!("{}: {e}", field("pt"))))?;
        Ok(Self { method, source: source.to_path_buf(), pt, search })
    }

    /// Checks the selection's settings and the search's configuration.
    pub fn validate(self) -> crate::Result<ValidSelectConfig> {
        self.pt.validate()?;
        if self.search.progressive.is_some() {
            return Err(crate::Error::config(
                "a progressive search's supernet is its last stage's: select on that stage's directory (stage-<s>)",
            ));
        }
        let search = self.search.clone().validate()?;
        Ok(ValidSelectConfig { cfg: self, search })
    }
}

/// A selection configuration that passed `SelectConfig::validate`.
#[derive(Debug, Clone)]
pub struct ValidSelectConfig {
    cfg: SelectConfig,
    search: crate::ValidSearchConfig,
}

impl ValidSelectConfig {
    pub fn config(&self) -> &SelectConfig {
        &self.cfg
    }

    pub fn search(&self) -> &crate::ValidSearchConfig {
        &self.search
    }
}
