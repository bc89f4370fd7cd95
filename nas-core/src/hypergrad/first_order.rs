//! DARTS' first-order architecture gradient (Liu et al. 2019, §2.3 with ξ = 0):
//! g = ∇_α L_val(w, α) at the current weights, one gradient evaluation.

use candle_core::{Result, Tensor};

use super::{Bilevel, Hypergradient, SgdState};

#[derive(Debug, Clone, Copy, Default)]
pub struct FirstOrder;

impl Hypergradient for FirstOrder {
    fn hypergradient(&mut self, p: &dyn Bilevel, _st: &SgdState) -> Result<Vec<Tensor>> {
        Ok(p.val_grads(false, true)?.a)
    }
}
