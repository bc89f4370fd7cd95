//! `implicit-cg`: the implicit-function-theorem gradient with (H + λI)p = ∇_w L_val solved by
//! `cg_steps` J conjugate-gradient iterations (Pedregosa 2016; Rajeswaran et al. 2019),
//! warm-started from the previous step's p, which checkpoints keep
//! (`nas_core::hypergrad::conjugate_gradient`).

use nas_core::config_error::field;
use nas_core::hypergrad::{ConjugateGradient, Hypergradient};
use nas_core::settings::{self, Flag};
use nas_core::ConfigError;
use serde::{Deserialize, Serialize};

use super::alternating::{plain_momentum, Alternating};
use super::{positive, MethodContext, MethodSpec, SearchMethod};
use crate::config::SearchConfig;
use crate::Result;

pub struct ImplicitCg;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImplicitCgConfig {
    /// Conjugate-gradient iterations J.
    pub cg_steps: usize,
    /// Damping λ of the system (H + λI)p = ∇_w L_val.
    pub cg_damping: f64,
}

impl Default for ImplicitCgConfig {
    /// λ = 1, iMAML's proximal weight: a network's training Hessian has negative eigenvalues,
    /// and without damping conjugate gradient often meets non-positive curvature at its first
    /// iteration, which leaves p = 0 and the first-order gradient.
    fn default() -> Self {
        Self { cg_steps: 5, cg_damping: 1.0 }
    }
}

impl MethodSpec for ImplicitCg {
    const NAME: &'static str = "implicit-cg";
    const ABOUT: &'static str =
        "implicit function theorem, the inverse Hessian by conjugate gradient, --cg-steps, --cg-damping";
    const SAMPLES_OPS: bool = false;
    type Config = ImplicitCgConfig;

    fn flags() -> Vec<Flag> {
        vec![
            Flag::one(
                "cg-steps",
                "cg_steps",
                "J",
                "implicit-cg: conjugate-gradient iterations J (default 5)",
                settings::parse::<usize>,
            ),
            Flag::one(
                "cg-damping",
                "cg_damping",
                "λ",
                "implicit-cg: damping λ of the system (H + λI)p = ∇_w L_val (default 1)",
                settings::parse::<f64>,
            ),
        ]
    }

    fn legacy_fields() -> &'static [(&'static str, &'static str)] {
        &[("cg_steps", "cg_steps"), ("cg_damping", "cg_damping")]
    }

    fn validate(c: &ImplicitCgConfig, s: &SearchConfig) -> Result<(), ConfigError> {
        positive(Self::NAME, "cg_steps", c.cg_steps)?;
        if !c.cg_damping.is_finite() || c.cg_damping < 0.0 {
            return Err(ConfigError::new(format!(
                "{} must be a finite non-negative number, got {}",
                field("method.cg_damping"),
                c.cg_damping
            )));
        }
        plain_momentum(Self::NAME, s)
    }

    fn build(c: &ImplicitCgConfig, ctx: &MethodContext) -> Result<Box<dyn SearchMethod>> {
        Ok(Alternating::boxed(ctx, Box::new(ConjugateGradient::new(c.cg_steps, c.cg_damping))))
    }

    fn hypergradient(c: &ImplicitCgConfig) -> Option<Box<dyn Hypergradient>> {
        Some(Box::new(ConjugateGradient::new(c.cg_steps, c.cg_damping)))
    }
}
