//! Hypergradients of the bilevel problem min_α L_val(w*(α), α), w*(α) = argmin_w L_train(w, α),
//! built only from first-order gradients (candle has no double backward). The family, one file
//! per method, each a `Hypergradient`:
//!
//! - `first_order`: ∇_α L_val(w, α) at the current weights (DARTS first order).
//! - `one_stage_rad`: DARTS' second order (Liu et al. 2019, eq. 7–8), reverse mode through one
//!   virtual SGD step.
//! - `truncated_rad`: reverse mode through K virtual SGD steps on K training batches (T-RAD,
//!   Shaban et al. 2019); K = 1 is one-stage RAD. With an `Aggregation`, BDA (Liu et al.
//!   2020): the virtual steps descend both levels' losses, no lower-level singleton assumed.
//! - `neumann`: the implicit-function-theorem gradient with a Neumann-series inverse Hessian
//!   (Lorraine et al. 2020).
//! - `conjugate_gradient`: the implicit gradient with (H + λI)⁻¹ by conjugate gradient
//!   (Pedregosa 2016; Rajeswaran et al. 2019), warm-started from the previous step.
//! - `iaptt`: IAPTT-GM (Liu et al. 2021), reverse mode from an initialisation auxiliary
//!   through the pessimistic truncation of the virtual trajectory.
//! - `forward_mode`: FAD (Franceschi et al. 2017), the tangent dw/dα carried along the real
//!   lower-level steps (`Hypergradient::before_step`), no virtual steps.
//!
//! `hessian` adds the diagnostic R-DARTS follows: the dominant eigenvalue of ∇²_α L_val.
//!
//! The building blocks here: the virtual step `unrolled_weights`
//! w' = w − ξ(μ·m + ∇_w L_train(w, α) + λw) with the real optimiser's momentum buffer m and
//! weight decay λ; and central differences of a gradient along a direction v with
//! ε = 0.01/‖v‖₂ (global norm, as DARTS), which give ∇²_{α,w} L_train · v (`mixed_hvp`) and
//! ∇²_w L_train · v (`hvp`).
//!
//! Weights are only ever changed through a `WeightGuard`, which keeps exact copies and writes
//! them back when dropped, so every method leaves the weights exactly as they were, also after
//! an error half-way. Batch-norm running statistics are buffers, not weights: they are neither
//! perturbed nor decayed. The scalars ε and 1/2ε stay on the device (no host round-trip).

mod conjugate_gradient;
mod first_order;
mod forward_mode;
mod hessian;
mod iaptt;
mod neumann;
mod one_stage_rad;
pub mod toys;
mod truncated_rad;

use candle_core::{Result, Tensor, Var};

pub use conjugate_gradient::ConjugateGradient;
pub use first_order::FirstOrder;
pub use forward_mode::ForwardMode;
pub use hessian::{alpha_hvp, dominant_eigenvalue, ALPHA_FD_STEP, LANCZOS_STEPS};
pub use iaptt::Iaptt;
pub use neumann::{implicit_hypergradient, neumann_inverse_hvp, Neumann};
pub use one_stage_rad::{second_order_hypergradient, OneStageRad};
pub use truncated_rad::{Aggregation, TruncatedRad};

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
    /// How many training batches the problem holds (T-RAD's virtual step t uses batch t).
    fn train_batches(&self) -> usize {
        1
    }
    /// Gradients of the training loss on training batch `k` at the current weights.
    fn train_grads_on(&self, k: usize, want_w: bool, want_a: bool) -> Result<Grads>;
    /// Gradients of the training loss on the first training batch.
    fn train_grads(&self, want_w: bool, want_a: bool) -> Result<Grads> {
        self.train_grads_on(0, want_w, want_a)
    }
    /// Gradients of the validation loss at the current weights.
    fn val_grads(&self, want_w: bool, want_a: bool) -> Result<Grads>;
    /// The validation loss at the current weights (IAPTT-GM reads it after every virtual step).
    fn val_loss(&self) -> Result<f64>;
    /// The box the weights are kept in, where the problem has one (a toy problem's).
    fn weight_box(&self) -> Option<(f64, f64)> {
        None
    }
}

/// One way to compute the architecture gradient of a `Bilevel` problem.
pub trait Hypergradient {
    /// One tensor per architecture parameter. Leaves the weights exactly as they were.
    fn hypergradient(&mut self, p: &dyn Bilevel, st: &SgdState) -> Result<Vec<Tensor>>;

    /// Training batches the method reads (the current one first).
    fn train_batches(&self) -> usize {
        1
    }

    /// Whether the rule follows the real lower-level steps (forward mode's tangent): then
    /// `before_step` precedes each of them.
    fn follows_steps(&self) -> bool {
        false
    }

    /// Called before each real lower-level step, with `p` holding that step's training batch
    /// (its first) and weights, and `st` the state the step takes; leaves the weights and α
    /// exactly as they were.
    fn before_step(&mut self, _p: &dyn Bilevel, _st: &SgdState) -> Result<()> {
        Ok(())
    }

    /// State carried from one step to the next (for checkpoints), by name.
    fn state(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// Restores `state`; `get` looks a name up in the checkpoint.
    fn load_state(&mut self, _get: &dyn Fn(&str) -> Option<Tensor>) -> Result<()> {
        Ok(())
    }
}

/// Exact copies of some variables, written back on `restore` or drop.
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

    /// A guard that writes the copies back even when only someone else changed the variables
    /// (batch-norm statistics updated by forwards).
    pub fn restoring(vars: &'a [Var]) -> Result<Self> {
        let mut g = Self::new(vars)?;
        g.dirty = true;
        Ok(g)
    }

    /// The saved (original) values.
    pub fn saved(&self) -> &[Tensor] {
        &self.saved
    }

    /// Sets the variables to `values`.
    pub fn set(&mut self, values: &[Tensor]) -> Result<()> {
        if values.len() != self.vars.len() {
            candle_core::bail!("weight guard: {} values for {} variables", values.len(), self.vars.len());
        }
        self.dirty = true;
        for (v, t) in self.vars.iter().zip(values) {
            v.set(t)?;
        }
        Ok(())
    }

    /// Writes the saved values back.
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

/// The SGD state the virtual steps use: ξ (the current lr), μ, λ and the momentum buffers.
pub struct SgdState<'a> {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// Per weight; None before the optimiser's first step (no momentum term).
    pub momentum_buffers: Vec<Option<&'a Tensor>>,
}

/// The momentum buffer after one SGD step, m' = μ·m + g + λw (PyTorch's SGD without
/// dampening: the first step's buffer is g + λw).
pub fn next_momentum(w: &Tensor, g: &Tensor, m: Option<&Tensor>, st: &SgdState) -> Result<Tensor> {
    let d = (g + (w * st.weight_decay)?)?;
    match m {
        Some(m) => d + (m * st.momentum)?,
        None => Ok(d),
    }
}

/// w' = w − ξ(μ·m + g + λw).
pub fn unrolled_weights(w: &[Tensor], g: &[Tensor], st: &SgdState) -> Result<Vec<Tensor>> {
    w.iter()
        .zip(g)
        .enumerate()
        .map(|(i, (w, g))| w - (next_momentum(w, g, st.momentum_buffers.get(i).copied().flatten(), st)? * st.lr)?)
        .collect()
}

/// base + scale·dir, `scale` a scalar tensor on the device.
fn offset(base: &[Tensor], dir: &[Tensor], scale: &Tensor) -> Result<Vec<Tensor>> {
    base.iter().zip(dir).map(|(w, d)| w + d.broadcast_mul(scale)?).collect()
}

/// a + s·b.
fn axpy(a: &[Tensor], s: f64, b: &[Tensor]) -> Result<Vec<Tensor>> {
    a.iter().zip(b).map(|(a, b)| a + (b * s)?).collect()
}

fn scaled(a: &[Tensor], s: f64) -> Result<Vec<Tensor>> {
    a.iter().map(|a| a * s).collect()
}

/// Σ aᵢ·bᵢ over all tensors, read back to the host.
fn dot(a: &[Tensor], b: &[Tensor]) -> Result<f64> {
    let mut total = 0.0;
    for (a, b) in a.iter().zip(b) {
        total += (a * b)?.sum_all()?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
    }
    Ok(total)
}

/// DARTS' finite-difference step: the perturbation has norm 0.01 (ε = 0.01/‖v‖).
pub const DARTS_FD_STEP: f64 = 0.01;

/// `eval` at base + εv and at base − εv, ε = step/‖v‖, the variables set through `guard`;
/// returns both results and 1/2ε. The variables are left at base − εv.
fn both_sides<G>(
    guard: &mut WeightGuard,
    base: &[Tensor],
    v: &[Tensor],
    step: f64,
    mut eval: impl FnMut() -> Result<G>,
) -> Result<(G, G, Tensor)> {
    let Some(norm) = global_norm(v)? else { candle_core::bail!("finite difference along no tensors") };
    let norm = norm.maximum(1e-12)?;
    let eps = (norm.recip()? * step)?;
    guard.set(&offset(base, v, &eps)?)?;
    let plus = eval()?;
    guard.set(&offset(base, v, &eps.neg()?)?)?;
    let minus = eval()?;
    let inv_2eps = (norm * (0.5 / step))?; // 1/(2ε) = ‖v‖/(2·step)
    Ok((plus, minus, inv_2eps))
}

/// (plus − minus)/2ε.
fn difference(plus: &[Tensor], minus: &[Tensor], inv_2eps: &Tensor) -> Result<Vec<Tensor>> {
    plus.iter().zip(minus).map(|(a, b)| (a - b)?.broadcast_mul(inv_2eps)).collect()
}

/// Central difference of `grad` along v in the weights, around the current weights.
fn weight_difference(
    p: &dyn Bilevel,
    v: &[Tensor],
    grad: impl Fn(&dyn Bilevel) -> Result<Vec<Tensor>>,
) -> Result<Vec<Tensor>> {
    let mut guard = WeightGuard::new(p.weights())?;
    let base = guard.saved().to_vec();
    let (plus, minus, inv_2eps) = both_sides(&mut guard, &base, v, DARTS_FD_STEP, || grad(p))?;
    guard.restore()?;
    difference(&plus, &minus, &inv_2eps)
}

/// ∇²_{α,w} L_train · v (one tensor per architecture parameter).
pub fn mixed_hvp(p: &dyn Bilevel, v: &[Tensor]) -> Result<Vec<Tensor>> {
    weight_difference(p, v, |p| Ok(p.train_grads(false, true)?.a))
}

/// ∇²_w L_train · v (one tensor per weight).
pub fn hvp(p: &dyn Bilevel, v: &[Tensor]) -> Result<Vec<Tensor>> {
    weight_difference(p, v, |p| Ok(p.train_grads(true, false)?.w))
}
