//! `implicit`: the implicit-function-theorem gradient with the inverse training Hessian by a
//! Neumann series of `neumann_steps` J terms (Lorraine et al. 2020,
//! `nas_core::hypergrad::neumann`).

use nas_core::hypergrad::{Hypergradient, Neumann};
use nas_core::settings::{self, Flag};
use nas_core::ConfigError;
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;

use super::alternating::plain_momentum;
use super::{positive, MethodSpec};
use crate::config::SearchConfig;
use crate::Result;

pub struct Implicit;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct ImplicitConfig {
    /// Neumann-series terms J.
    #[default = 5]
    pub neumann_steps: usize,
}

impl MethodSpec for Implicit {
    const NAME: &'static str = "implicit";
    const ABOUT: &'static str = "implicit function theorem, the inverse Hessian by a Neumann series, --neumann-steps";
    type Config = ImplicitConfig;

    fn flags() -> Vec<Flag> {
        vec![Flag::one("neumann-steps", "neumann_steps", "J", settings::parse::<usize>)
            .help("implicit: Neumann-series terms J of the inverse Hessian (default 5)")]
    }

    fn legacy_fields() -> &'static [(&'static str, &'static str)] {
        &[("neumann_steps", "neumann_steps")]
    }

    fn validate(c: &ImplicitConfig, s: &SearchConfig) -> Result<(), ConfigError> {
        positive(Self::NAME, "neumann_steps", c.neumann_steps)?;
        plain_momentum(Self::NAME, s)
    }

    fn hypergradient(c: &ImplicitConfig) -> Option<Box<dyn Hypergradient>> {
        Some(Box::new(Neumann { terms: c.neumann_steps }))
    }
}
