//! `unrolled`: truncated reverse mode (T-RAD, Shaban et al. 2019) through `unroll_steps` K
//! virtual SGD steps with the optimiser's momentum on K search-train batches (the current one
//! first, the others from their own stream of the search-train half), back through them with
//! Hessian- and mixed-Hessian-vector products at each stored iterate
//! (`nas_core::hypergrad::truncated_rad`). K = 1 is DARTS' second order.

use nas_core::hypergrad::{Hypergradient, TruncatedRad};
use nas_core::settings::{self, Flag};
use nas_core::ConfigError;
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;

use super::alternating::plain_momentum;
use super::{positive, MethodSpec};
use crate::config::SearchConfig;
use crate::Result;

pub struct Unrolled;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct UnrolledConfig {
    /// Virtual SGD steps K.
    #[default = 1]
    pub unroll_steps: usize,
}

impl MethodSpec for Unrolled {
    const NAME: &'static str = "unrolled";
    const ABOUT: &'static str = "truncated reverse mode through K virtual SGD steps, --unroll-steps";
    type Config = UnrolledConfig;

    fn flags() -> Vec<Flag> {
        vec![Flag::one("unroll-steps", "unroll_steps", "K", settings::parse::<usize>)
            .help("unrolled, bda, iaptt-gm: virtual SGD steps K the hypergradient reverses through (unrolled: 1 is second order)")]
    }

    fn legacy_fields() -> &'static [(&'static str, &'static str)] {
        &[("unroll_steps", "unroll_steps")]
    }

    fn validate(c: &UnrolledConfig, s: &SearchConfig) -> Result<(), ConfigError> {
        positive(Self::NAME, "unroll_steps", c.unroll_steps)?;
        plain_momentum(Self::NAME, s)
    }

    fn hypergradient(c: &UnrolledConfig) -> Option<Box<dyn Hypergradient>> {
        Some(Box::new(TruncatedRad::new(c.unroll_steps)))
    }
}
