//! The implicit-function-theorem hypergradient with the inverse Hessian by conjugate gradient
//! (Pedregosa 2016, HOAG; Rajeswaran et al. 2019, iMAML):
//!   solve (H + λI)·p = ∇_w L_val(w, α),  H = ∇²_w L_train(w, α),  then
//!   g = ∇_α L_val(w, α) − ∇²_{α,w} L_train(w, α)·p,
//! with J CG iterations over finite-difference Hessian-vector products, warm-started from the
//! previous architecture step's solution (the system changes little between steps). The
//! training Hessian of a network need not be positive definite: an iteration that meets
//! non-positive curvature (dᵀ(H + λI)d ≤ 0) ends the solve with the current iterate, and the
//! damping λ moves the spectrum up. Cost: 1 + 2J (+2 for the warm start's residual) + 2
//! gradient evaluations; the step sizes are read back to the host once per iteration.

use candle_core::{Result, Tensor};

use super::{axpy, dot, hvp, mixed_hvp, Bilevel, Hypergradient, SgdState};

/// J iterations with damping λ; the previous solution as warm start.
#[derive(Debug, Clone)]
pub struct ConjugateGradient {
    pub steps: usize,
    pub damping: f64,
    warm: Option<Vec<Tensor>>,
}

/// Checkpoint names of the warm start, one per weight.
const STATE: &str = "cg.p.";

impl ConjugateGradient {
    pub fn new(steps: usize, damping: f64) -> Self {
        Self { steps, damping, warm: None }
    }

    /// The last solution p (the next step's warm start).
    pub fn solution(&self) -> Option<&[Tensor]> {
        self.warm.as_deref()
    }

    /// (H + λI)·v.
    fn apply(&self, p: &dyn Bilevel, v: &[Tensor]) -> Result<Vec<Tensor>> {
        axpy(&hvp(p, v)?, self.damping, v)
    }

    /// x ≈ (H + λI)⁻¹·b from x₀ = the warm start (or 0).
    pub fn solve(&self, p: &dyn Bilevel, b: &[Tensor]) -> Result<Vec<Tensor>> {
        let (mut x, mut r) = match &self.warm {
            Some(x0) if x0.len() == b.len() => {
                let r = axpy(b, -1.0, &self.apply(p, x0)?)?;
                (x0.clone(), r)
            }
            _ => (b.iter().map(|t| t.zeros_like()).collect::<Result<Vec<_>>>()?, b.to_vec()),
        };
        let bb = dot(b, b)?;
        let mut rr = dot(&r, &r)?;
        let mut d = r.clone();
        for _ in 0..self.steps {
            // Converged to the precision of the arithmetic: another step would divide 0 by 0.
            if rr <= bb * 1e-28 || rr == 0.0 {
                break;
            }
            let ad = self.apply(p, &d)?;
            let curvature = dot(&d, &ad)?;
            if curvature.is_nan() || curvature <= 0.0 {
                tracing::debug!(curvature, "conjugate gradient met non-positive curvature; solve ended");
                break;
            }
            let step = rr / curvature;
            x = axpy(&x, step, &d)?;
            r = axpy(&r, -step, &ad)?;
            let rr_next = dot(&r, &r)?;
            d = axpy(&r, rr_next / rr, &d)?;
            rr = rr_next;
        }
        Ok(x)
    }
}

impl Hypergradient for ConjugateGradient {
    fn hypergradient(&mut self, p: &dyn Bilevel, _st: &SgdState) -> Result<Vec<Tensor>> {
        let val = p.val_grads(true, true)?;
        let x = self.solve(p, &val.w)?;
        let mixed = mixed_hvp(p, &x)?;
        let g = val.a.iter().zip(&mixed).map(|(g, m)| g - m).collect::<Result<_>>()?;
        self.warm = Some(x.iter().map(Tensor::detach).collect());
        Ok(g)
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        let Some(x) = &self.warm else { return Vec::new() };
        x.iter().enumerate().map(|(i, t)| (format!("{STATE}{i}"), t.clone())).collect()
    }

    fn load_state(&mut self, get: &dyn Fn(&str) -> Option<Tensor>) -> Result<()> {
        let mut x = Vec::new();
        while let Some(t) = get(&format!("{STATE}{}", x.len())) {
            x.push(t);
        }
        self.warm = if x.is_empty() { None } else { Some(x) };
        Ok(())
    }
}
