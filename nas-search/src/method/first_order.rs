//! `first-order`: ∇_α L_val(w, α) at the current weights, DARTS' first-order approximation
//! (Liu et al. 2019, §2.3), in the alternating loop of `alternating`.

use nas_core::hypergrad::{self, Hypergradient};
use serde::{Deserialize, Serialize};

use super::MethodSpec;

pub struct FirstOrder;

/// No settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirstOrderConfig {}

impl MethodSpec for FirstOrder {
    const NAME: &'static str = "first-order";
    const ABOUT: &'static str = "∇_α L_val(w, α), DARTS' first order";
    type Config = FirstOrderConfig;

    fn hypergradient(_: &FirstOrderConfig) -> Option<Box<dyn Hypergradient>> {
        Some(Box::new(hypergrad::FirstOrder))
    }
}
