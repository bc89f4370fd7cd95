//! `implicit-cg`: the implicit-function-theorem gradient with (H + λI)p = ∇_w L_val solved by
//! `cg_steps` J conjugate-gradient iterations (Pedregosa 2016; Rajeswaran et al. 2019),
//! warm-started from the previous step's p, which checkpoints keep
//! (`nas_core::hypergrad::conjugate_gradient`).

use nas_core::config_error::require_finite_non_negative;
use nas_core::hypergrad::{ConjugateGradient, Hypergradient};
use nas_core::settings::{self, Flag};
use nas_core::ConfigError;
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;

use super::alternating::plain_momentum;
use super::{positive, MethodSpec};
use crate::config::SearchConfig;
use crate::Result;

pub struct ImplicitCg;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct ImplicitCgConfig {
    /// Conjugate-gradient iterations J.
    #[default = 5]
    pub cg_steps: usize,
    /// Damping λ of the system (H + λI)p = ∇_w L_val. 1 by default, iMAML's proximal weight: a
    /// network's training Hessian has negative eigenvalues, and without damping conjugate
    /// gradient often meets non-positive curvature at its first iteration, which leaves p = 0
    /// and the first-order gradient.
    #[default = 1.0]
    pub cg_damping: f64,
}

impl MethodSpec for ImplicitCg {
    const NAME: &'static str = "implicit-cg";
    const ABOUT: &'static str =
        "implicit function theorem, the inverse Hessian by conjugate gradient, --cg-steps, --cg-damping";
    type Config = ImplicitCgConfig;

    fn flags() -> Vec<Flag> {
        vec![
            Flag::one("cg-steps", "cg_steps", "J", settings::parse::<usize>)
                .help("implicit-cg: conjugate-gradient iterations J (default 5)"),
            Flag::one("cg-damping", "cg_damping", "λ", settings::parse::<f64>)
                .help("implicit-cg: damping λ of the system (H + λI)p = ∇_w L_val (default 1)"),
        ]
    }

    fn legacy_fields() -> &'static [(&'static str, &'static str)] {
        &[("cg_steps", "cg_steps"), ("cg_damping", "cg_damping")]
    }

    fn validate(c: &ImplicitCgConfig, s: &SearchConfig) -> Result<(), ConfigError> {
        positive(Self::NAME, "cg_steps", c.cg_steps)?;
        require_finite_non_negative(&[("method.cg_damping", c.cg_damping)])?;
        plain_momentum(Self::NAME, s)
    }

    fn hypergradient(c: &ImplicitCgConfig) -> Option<Box<dyn Hypergradient>> {
        Some(Box::new(ConjugateGradient::new(c.cg_steps, c.cg_damping)))
    }
}
