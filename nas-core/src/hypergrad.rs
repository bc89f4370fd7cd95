//! Hypergradients of the bilevel problem min_α L_val(w*(α), α), w*(α) = argmin_w L_train(w, α),
//! built only from first-order gradients (candle has no double backward):
//!
//! - `unrolled_weights`: DARTS' virtual step w' = w − ξ(μ·m + ∇_w L_train(w, α) + λw) with the
//!   real optimiser's momentum buffer m and weight decay λ.
//! - `mixed_hvp`: ∇²_{α,w} L_train · v ≈ [∇_α L_train(w + εv) − ∇_α L_train(w − εv)] / 2ε,
//!   and `hvp`: ∇²_w L_train · v the same way, ε = 0.01/‖v‖₂ (global norm over all weights).
//! - `neumann_inverse_hvp`: p = ξ Σ_{j=0..J} (I − ξH)^j v ≈ H⁻¹v.
//! - `second_order_hypergradient` (DARTS 2nd order, Liu et al. 2019, eq. 7–8):
//!   g = ∇_α L_val(w', α) − ξ·∇²_{α,w} L_train(w, α)·∇_{w'} L_val(w', α).
//! - `implicit_hypergradient` (implicit function theorem):
//!   g = ∇_α L_val(w, α) − ∇²_{α,w} L_train(w, α)·p, p ≈ H⁻¹ ∇_w L_val(w, α).
//!
//! Weights are only ever changed through a `WeightGuard`, which keeps exact copies and writes
//! them back when dropped, so an error half-way leaves the weights as they were. Batch-norm
//! running statistics are buffers, not weights: they are neither perturbed nor decayed. The
//! scalars ε and 1/2ε stay on the device (no host round-trip).

use candle_core::{Result, Tensor, Var};

use crate::optim::global_norm;

/// Gradients of one loss: with respect to every weight (`w`) and every architecture parameter
/// (`a`), in the order of `Bilevel::weights` / `Bilevel::arch`; empty when not requested.
#[derive(Debug, Clone, Default)]
pub struct Grads {
    pub w: Vec<Tensor>,
    pub a: Vec<Tensor>,
}

/// A bilevel problem with fixed training and validation batches.
pub trait Bilevel {
    fn weights(&self) -> &[Var];
    fn arch(&self) -> &[Var];
    /// Gradients of the training loss at the current weights.
    fn train_grads(&self, want_w: bool, want_a: bool) -> Result<Grads>;
    /// Gradients of the validation loss at the current weights.
    fn val_grads(&self, want_w: bool, want_a: bool) -> Result<Grads>;
}

/// Exact copies of the weights, written back on `restore` or drop.
pub struct WeightGuard<'a> {
    vars: &'a [Var],
    saved: Vec<Tensor>,
    dirty: bool,
}

impl<'a> WeightGuard<'a> {
    pub fn new(vars: &'a [Var]) -> Result<Self> {
        let saved = vars.iter().map(|v| v.as_tensor().copy()).collect::<Result<_>>()?;
        Ok(Self { vars, saved, dirty: false })
    }

    /// The saved (original) weights.
    pub fn saved(&self) -> &[Tensor] {
        &self.saved
    }

    /// Sets the weights to `values`.
    pub fn set(&mut self, values: &[Tensor]) -> Result<()> {
        if values.len() != self.vars.len() {
            candle_core::bail!("weight guard: {} values for {} weights", values.len(), self.vars.len());
        }
        self.dirty = true;
        for (v, t) in self.vars.iter().zip(values) {
            v.set(t)?;
        }
        Ok(())
    }

    /// Sets the weights to saved + scale·dir, `scale` a scalar tensor on the device.
    pub fn set_offset(&mut self, dir: &[Tensor], scale: &Tensor) -> Result<()> {
        let values: Vec<Tensor> =
            self.saved.iter().zip(dir).map(|(w, d)| w + d.broadcast_mul(scale)?).collect::<Result<_>>()?;
        self.set(&values)
    }

    /// Writes the saved weights back.
    pub fn restore(&mut self) -> Result<()> {
        if self.dirty {
            for (v, t) in self.vars.iter().zip(&self.saved) {
                v.set(t)?;
            }
            self.dirty = false;
        }
        Ok(())
    }
}

impl Drop for WeightGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.restore() {
            tracing::error!("could not restore the weights after a hypergradient step: {e}");
        }
    }
}

/// The SGD state the virtual step uses: ξ (the current lr), μ, λ and the momentum buffers.
pub struct SgdState<'a> {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// Per weight; None before the optimiser's first step (no momentum term).
    pub momentum_buffers: Vec<Option<&'a Tensor>>,
}

/// w' = w − ξ(μ·m + g + λw).
pub fn unrolled_weights(w: &[Tensor], g: &[Tensor], st: &SgdState) -> Result<Vec<Tensor>> {
    w.iter()
        .zip(g)
        .enumerate()
        .map(|(i, (w, g))| {
            let mut d = (g + (w * st.weight_decay)?)?;
            if let Some(Some(m)) = st.momentum_buffers.get(i) {
                d = (d + (*m * st.momentum)?)?;
            }
            w - (d * st.lr)?
        })
        .collect()
}

/// Central difference of `grad` along v: [grad(w + εv) − grad(w − εv)] / 2ε, ε = 0.01/‖v‖.
fn central_difference(
    p: &dyn Bilevel,
    v: &[Tensor],
    grad: impl Fn(&dyn Bilevel) -> Result<Vec<Tensor>>,
) -> Result<Vec<Tensor>> {
    let Some(norm) = global_norm(v)? else { candle_core::bail!("finite difference along no tensors") };
    let norm = norm.maximum(1e-12)?;
    let eps = (norm.recip()? * 0.01)?;
    let mut guard = WeightGuard::new(p.weights())?;
    guard.set_offset(v, &eps)?;
    let plus = grad(p)?;
    guard.set_offset(v, &eps.neg()?)?;
    let minus = grad(p)?;
    guard.restore()?;
    let inv_2eps = (norm * 50.0)?; // 1/(2ε) = ‖v‖/0.02
    plus.iter().zip(&minus).map(|(a, b)| (a - b)?.broadcast_mul(&inv_2eps)).collect()
}

/// ∇²_{α,w} L_train · v (one tensor per architecture parameter).
pub fn mixed_hvp(p: &dyn Bilevel, v: &[Tensor]) -> Result<Vec<Tensor>> {
    central_difference(p, v, |p| Ok(p.train_grads(false, true)?.a))
}

/// ∇²_w L_train · v (one tensor per weight).
pub fn hvp(p: &dyn Bilevel, v: &[Tensor]) -> Result<Vec<Tensor>> {
    central_difference(p, v, |p| Ok(p.train_grads(true, false)?.w))
}

/// p = ξ Σ_{j=0..J} (I − ξH)^j v, the truncated Neumann series of H⁻¹v (converges when
/// ‖I − ξH‖ < 1).
pub fn neumann_inverse_hvp(p: &dyn Bilevel, v: &[Tensor], xi: f64, terms: usize) -> Result<Vec<Tensor>> {
    let mut cur: Vec<Tensor> = v.to_vec();
    let mut sum: Vec<Tensor> = v.to_vec();
    for _ in 0..terms {
        let hv = hvp(p, &cur)?;
        cur = cur.iter().zip(&hv).map(|(c, h)| c - (h * xi)?).collect::<Result<_>>()?;
        sum = sum.iter().zip(&cur).map(|(s, c)| s + c).collect::<Result<_>>()?;
    }
    sum.iter().map(|s| s * xi).collect()
}

/// DARTS' second-order architecture gradient (all training terms on the same batch).
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

/// Implicit-function hypergradient with a J-term Neumann series (ξ the series step).
pub fn implicit_hypergradient(p: &dyn Bilevel, xi: f64, terms: usize) -> Result<Vec<Tensor>> {
    let val = p.val_grads(true, true)?;
    let q = neumann_inverse_hvp(p, &val.w, xi, terms)?;
    let mixed = mixed_hvp(p, &q)?;
    val.a.iter().zip(&mixed).map(|(g, m)| g - m).collect()
}
