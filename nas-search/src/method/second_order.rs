//! `second-order`: DARTS' second-order architecture gradient (Liu et al. 2019, eq. 7–8), reverse
//! mode through one virtual SGD step w' = w − ξ(μm + ∇_w L_train + λw) with the
//! mixed-Hessian-vector product by central differences (`nas_core::hypergrad::one_stage_rad`).

use nas_core::hypergrad::{Hypergradient, OneStageRad};
use nas_core::ConfigError;
use serde::{Deserialize, Serialize};

use super::alternating::plain_momentum;
use super::MethodSpec;
use crate::config::SearchConfig;
use crate::Result;

pub struct SecondOrder;

/// No settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecondOrderConfig {}

impl MethodSpec for SecondOrder {
    const NAME: &'static str = "second-order";
    const ABOUT: &'static str = "DARTS' one-step unrolled gradient with a finite-difference Hessian-vector product";
    type Config = SecondOrderConfig;

    fn validate(_: &SecondOrderConfig, s: &SearchConfig) -> Result<(), ConfigError> {
        plain_momentum(Self::NAME, s)
    }

    fn hypergradient(_: &SecondOrderConfig) -> Option<Box<dyn Hypergradient>> {
        Some(Box::new(OneStageRad))
    }
}
