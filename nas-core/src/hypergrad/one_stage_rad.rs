//! One-stage reverse-mode differentiation: DARTS' second-order architecture gradient
//! (Liu et al. 2019, eq. 7–8). One virtual SGD step w' = w − ξ(μ·m + ∇_w L_train(w, α) + λw),
//! then
//!   g = ∇_α L_val(w', α) − ξ·∇²_{α,w} L_train(w, α)·∇_{w'} L_val(w', α),
//! the mixed product by central differences: four gradient evaluations, all training terms on
//! the same batch.

use candle_core::{Result, Tensor};

use super::{mixed_hvp, unrolled_weights, Bilevel, Hypergradient, SgdState, WeightGuard};

#[derive(Debug, Clone, Copy, Default)]
pub struct OneStageRad;

impl Hypergradient for OneStageRad {
    fn hypergradient(&mut self, p: &dyn Bilevel, st: &SgdState) -> Result<Vec<Tensor>> {
        second_order_hypergradient(p, st)
    }
}

/// DARTS' second-order architecture gradient.
pub fn second_order_hypergradient(p: &dyn Bilevel, st: &SgdState) -> Result<Vec<Tensor>> {
    let g_train = p.train_grads(true, false)?.w;
    let (g_alpha, v) = {
        let mut guard = WeightGuard::new(p.weights())?;
        let unrolled = unrolled_weights(guard.saved(), &g_train, st)?;
        guard.set(&unrolled)?;
        let g = p.val_grads(true, true)?;
        guard.restore()?;
        (g.a, g.w)
    };
    let mixed = mixed_hvp(p, &v)?;
    g_alpha.iter().zip(&mixed).map(|(g, m)| g - (m * st.lr)?).collect()
}
