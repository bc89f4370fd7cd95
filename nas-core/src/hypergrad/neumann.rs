//! The implicit-function-theorem hypergradient with a Neumann-series inverse Hessian
//! (Lorraine et al. 2020):
//!   g = ∇_α L_val(w, α) − ∇²_{α,w} L_train(w, α)·p,  p = ξ Σ_{j=0..J} (I − ξH)^j ∇_w L_val(w, α),
//! H = ∇²_w L_train, ξ the weight optimiser's lr. 1 + 2J + 2 gradient evaluations.

use candle_core::{Result, Tensor};

use super::{axpy, hvp, mixed_hvp, scaled, Bilevel, Hypergradient, SgdState};

/// J Neumann terms, ξ the current weight lr.
#[derive(Debug, Clone, Copy)]
pub struct Neumann {
    pub terms: usize,
}

impl Hypergradient for Neumann {
    fn hypergradient(&mut self, p: &dyn Bilevel, st: &SgdState) -> Result<Vec<Tensor>> {
        implicit_hypergradient(p, st.lr, self.terms)
    }
}

/// p = ξ Σ_{j=0..J} (I − ξH)^j v, the truncated Neumann series of H⁻¹v (converges when
/// ‖I − ξH‖ < 1).
pub fn neumann_inverse_hvp(p: &dyn Bilevel, v: &[Tensor], xi: f64, terms: usize) -> Result<Vec<Tensor>> {
    let mut cur: Vec<Tensor> = v.to_vec();
    let mut sum: Vec<Tensor> = v.to_vec();
    for _ in 0..terms {
        cur = axpy(&cur, -xi, &hvp(p, &cur)?)?;
        sum = sum.iter().zip(&cur).map(|(s, c)| s + c).collect::<Result<_>>()?;
    }
    scaled(&sum, xi)
}

/// Implicit-function hypergradient with a J-term Neumann series (ξ the series step).
pub fn implicit_hypergradient(p: &dyn Bilevel, xi: f64, terms: usize) -> Result<Vec<Tensor>> {
    let val = p.val_grads(true, true)?;
    let q = neumann_inverse_hvp(p, &val.w, xi, terms)?;
    let mixed = mixed_hvp(p, &q)?;
    val.a.iter().zip(&mixed).map(|(g, m)| g - m).collect()
}
