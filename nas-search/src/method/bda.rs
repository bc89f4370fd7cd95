//! `bda`: Bi-level Descent Aggregation (Liu et al., ICML 2020; vis-opt-group/BDA,
//! `boml/lower_iter/aggr.py`). The lower level is not assumed to have one solution: its K
//! virtual steps descend an aggregation of both levels' directions,
//! (1 − μ)·∇_w L_train + σ·μ·γ·0.9^k·∇_w L_val at step k (the reference's s = t = γ = 1),
//! and the α gradient is reverse mode through all K aggregated steps with the second
//! derivatives of both losses (finite-difference products at each iterate, as `unrolled`
//! takes them; `nas_core::hypergrad::truncated_rad`). σ = +1 is the optimistic viewpoint of
//! the bilevel survey, σ = −1 the pessimistic one. The reference's few-shot scripts take
//! μ = 0.6 and K = 5; K defaults to 1 here, the cost of `unrolled`'s default, with μ = 0.6.

use std::str::FromStr;

use nas_core::hypergrad::{Aggregation, Hypergradient, TruncatedRad};
use nas_core::settings::{self, Flag};
use nas_core::ConfigError;
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;

use super::alternating::plain_momentum;
use super::{positive, MethodSpec};
use crate::config::SearchConfig;
use crate::Result;

pub struct Bda;

/// Whether the lower level's steps serve the upper level (optimistic) or work against it
/// (pessimistic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Viewpoint {
    #[default]
    Optimistic,
    Pessimistic,
}

impl FromStr for Viewpoint {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "optimistic" => Ok(Viewpoint::Optimistic),
            "pessimistic" => Ok(Viewpoint::Pessimistic),
            _ => Err(format!("unknown viewpoint `{s}` (expected optimistic or pessimistic)")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct BdaConfig {
    /// Aggregated virtual steps K.
    #[default = 1]
    pub unroll_steps: usize,
    /// μ ∈ [0, 1]: the upper level's share of the aggregated direction.
    #[default = 0.6]
    pub bda_mu: f64,
    /// γ: the upper level's coefficient.
    #[default = 1.0]
    pub bda_gamma: f64,
    pub viewpoint: Viewpoint,
}

impl MethodSpec for Bda {
    const NAME: &'static str = "bda";
    const ABOUT: &'static str =
        "BDA: reverse mode through K virtual steps aggregating both levels' directions, --unroll-steps, --bda-mu";
    type Config = BdaConfig;

    fn flags() -> Vec<Flag> {
        vec![
            Flag::one("unroll-steps", "unroll_steps", "K", settings::parse::<usize>)
                .help("unrolled, bda, iaptt-gm: virtual SGD steps K the hypergradient reverses through (unrolled: 1 is second order)"),
            Flag::one("bda-mu", "bda_mu", "μ", settings::parse::<f64>)
                .help("bda: the upper level's share μ ∈ [0, 1] of the aggregated lower-level direction (default 0.6)"),
            Flag::one("bda-gamma", "bda_gamma", "γ", settings::parse::<f64>)
                .help("bda: coefficient γ of the upper level's direction (default 1)"),
            Flag::one("viewpoint", "viewpoint", "V", settings::parse::<Viewpoint>)
                .help("bda: optimistic (the lower level serves the upper) or pessimistic (it works against it)"),
        ]
    }

    fn validate(c: &BdaConfig, s: &SearchConfig) -> Result<(), ConfigError> {
        positive(Self::NAME, "unroll_steps", c.unroll_steps)?;
        if !(0.0..=1.0).contains(&c.bda_mu) {
            return Err(ConfigError::new(format!(
                "{} must be in [0, 1], got {}",
                nas_core::config_error::field("method.bda_mu"),
                c.bda_mu
            )));
        }
        nas_core::config_error::require_finite_non_negative(&[("method.bda_gamma", c.bda_gamma)])?;
        plain_momentum(Self::NAME, s)
    }

    fn hypergradient(c: &BdaConfig) -> Option<Box<dyn Hypergradient>> {
        let sign = if c.viewpoint == Viewpoint::Pessimistic { -1.0 } else { 1.0 };
        Some(Box::new(TruncatedRad::bda(c.unroll_steps, Aggregation { mu: c.bda_mu, gamma: c.bda_gamma, sign })))
    }
}
