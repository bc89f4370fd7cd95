//! `unrolled`: truncated reverse mode (T-RAD, Shaban et al. 2019) through `unroll_steps` K
//! virtual SGD steps with the optimiser's momentum on K search-train batches (the current one
//! first, the others from their own stream of the search-train half), back through them with
//! Hessian- and mixed-Hessian-vector products at each stored iterate
//! (`nas_core::hypergrad::truncated_rad`). K = 1 is DARTS' second order.

use nas_core::hypergrad::{Hypergradient, TruncatedRad};
use nas_core::settings::{self, Flag};
use nas_core::ConfigError;
use serde::{Deserialize, Serialize};

use super::alternating::{plain_momentum, Alternating};
use super::{positive, MethodContext, MethodSpec, SearchMethod};
use crate::config::SearchConfig;
use crate::Result;

pub struct Unrolled;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UnrolledConfig {
    /// Virtual SGD steps K.
    pub unroll_steps: usize,
}

impl Default for UnrolledConfig {
    fn default() -> Self {
        Self { unroll_steps: 1 }
    }
}

impl MethodSpec for Unrolled {
    const NAME: &'static str = "unrolled";
    const ABOUT: &'static str = "truncated reverse mode through K virtual SGD steps, --unroll-steps";
    const SAMPLES_OPS: bool = false;
    type Config = UnrolledConfig;

    fn flags() -> Vec<Flag> {
        vec![Flag::one(
            "unroll-steps",
            "unroll_steps",
            "K",
            "unrolled: virtual SGD steps K the hypergradient reverses through (1: second order)",
            settings::parse::<usize>,
        )]
    }

    fn legacy_fields() -> &'static [(&'static str, &'static str)] {
        &[("unroll_steps", "unroll_steps")]
    }

    fn validate(c: &UnrolledConfig, s: &SearchConfig) -> Result<(), ConfigError> {
        positive(Self::NAME, "unroll_steps", c.unroll_steps)?;
        plain_momentum(Self::NAME, s)
    }

    fn build(c: &UnrolledConfig, ctx: &MethodContext) -> Result<Box<dyn SearchMethod>> {
        Ok(Alternating::boxed(ctx, Box::new(TruncatedRad::new(c.unroll_steps))))
    }

    fn hypergradient(c: &UnrolledConfig) -> Option<Box<dyn Hypergradient>> {
        Some(Box::new(TruncatedRad::new(c.unroll_steps)))
    }
}
