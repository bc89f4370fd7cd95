//! `implicit`: the implicit-function-theorem gradient with the inverse training Hessian by a
//! Neumann series of `neumann_steps` J terms (Lorraine et al. 2020,
//! `nas_core::hypergrad::neumann`).

use nas_core::hypergrad::{Hypergradient, Neumann};
use nas_core::settings::{self, Flag};
use nas_core::ConfigError;
use serde::{Deserialize, Serialize};

use super::alternating::{plain_momentum, Alternating};
use super::{positive, MethodContext, MethodSpec, SearchMethod};
use crate::config::SearchConfig;
use crate::Result;

pub struct Implicit;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImplicitConfig {
    /// Neumann-series terms J.
    pub neumann_steps: usize,
}

impl Default for ImplicitConfig {
    fn default() -> Self {
        Self { neumann_steps: 5 }
    }
}

impl MethodSpec for Implicit {
    const NAME: &'static str = "implicit";
    const ABOUT: &'static str = "implicit function theorem, the inverse Hessian by a Neumann series, --neumann-steps";
    const SAMPLES_OPS: bool = false;
    type Config = ImplicitConfig;

    fn flags() -> Vec<Flag> {
        vec![Flag::one(
            "neumann-steps",
            "neumann_steps",
            "J",
            "implicit: Neumann-series terms J of the inverse Hessian (default 5)",
            settings::parse::<usize>,
        )]
    }

    fn legacy_fields() -> &'static [(&'static str, &'static str)] {
        &[("neumann_steps", "neumann_steps")]
    }

    fn validate(c: &ImplicitConfig, s: &SearchConfig) -> Result<(), ConfigError> {
        positive(Self::NAME, "neumann_steps", c.neumann_steps)?;
        plain_momentum(Self::NAME, s)
    }

    fn build(c: &ImplicitConfig, ctx: &MethodContext) -> Result<Box<dyn SearchMethod>> {
        Ok(Alternating::boxed(ctx, Box::new(Neumann { terms: c.neumann_steps })))
    }

    fn hypergradient(c: &ImplicitConfig) -> Option<Box<dyn Hypergradient>> {
        Some(Box::new(Neumann { terms: c.neumann_steps }))
    }
}
