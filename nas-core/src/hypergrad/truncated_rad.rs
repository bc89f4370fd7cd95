//! Truncated reverse-mode differentiation (T-RAD, Shaban et al. 2019): K virtual SGD steps
//! from the current weights w₀ on K training batches (batch t for step t, the current batch
//! first), with the real optimiser's lr ξ, momentum μ (its buffer m₀ to start from) and weight
//! decay λ, as PyTorch's SGD takes them:
//!   m_{t+1} = μ·m_t + ∇_w L_t(w_t, α) + λ·w_t,   w_{t+1} = w_t − ξ·m_{t+1},
//! then the exact derivative of L_val(w_K(α), α) by reverse mode through the K steps, the
//! second derivatives by central differences at each stored iterate. The adjoints (w̄ of w_t,
//! a of m_t):
//!   w̄_K = ∇_w L_val(w_K),  a_K = −ξ·w̄_K,  g = ∇_α L_val(w_K),
//!   for t = K−1 … 0:  g += ∇²_{α,w} L_t(w_t)·a_{t+1};
//!                      w̄_t = w̄_{t+1} + (∇²_w L_t(w_t) + λI)·a_{t+1},  a_t = μ·a_{t+1} − ξ·w̄_t
//! (w̄_0 and a_0 are not needed: w₀ and m₀ do not depend on α). Both products at w_t come from
//! the same two gradient evaluations at w_t ± ε·a_{t+1}, so a step costs 3K + 1 evaluations
//! and K weight copies; K = 1 is DARTS' second order (`one_stage_rad`) exactly.
//!
//! BDA (`Aggregation`) takes the same steps and the same reverse pass with L_t replaced by the
//! aggregation (1 − μ)·L_train,t + σμγ0.9^t·L_val: the lower level's steps also follow (or,
//! pessimistic, oppose) the upper level, and the second derivatives are those of both losses.

use candle_core::{Result, Tensor};

use super::{
    axpy, both_sides, difference, next_momentum, scaled, Bilevel, Grads, Hypergradient, SgdState, WeightGuard,
    DARTS_FD_STEP,
};

/// K virtual steps; the second derivatives by central differences with perturbations of
/// norm `fd_step` (DARTS: 0.01); with `aggregate`, BDA's steps.
#[derive(Debug, Clone, Copy)]
pub struct TruncatedRad {
    pub steps: usize,
    pub fd_step: f64,
    pub aggregate: Option<Aggregation>,
}

/// BDA's aggregated lower-level direction (Liu et al. 2020, `boml/lower_iter/aggr.py` with its
/// defaults s = t = 1): virtual step t descends
///   (1 − μ)·∇_w L_train + σ·μ·γ·0.9^t·∇_w L_val,
/// σ = +1 (the optimistic viewpoint: the lower level also serves the upper) or −1 (the
/// pessimistic one: it works against it). The reverse pass then takes the second derivatives
/// of that combination, of both losses, at every iterate: a step costs 6K + 1 gradient
/// evaluations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aggregation {
    /// μ, the upper level's share.
    pub mu: f64,
    /// γ.
    pub gamma: f64,
    /// σ: +1 optimistic, −1 pessimistic.
    pub sign: f64,
}

impl Aggregation {
    /// The weights (of L_train, of L_val) of virtual step t's objective.
    fn weights(&self, t: usize) -> (f64, f64) {
        (1.0 - self.mu, self.sign * self.mu * self.gamma * 0.9f64.powi(t as i32))
    }
}

impl TruncatedRad {
    /// K steps with DARTS' finite-difference step.
    pub fn new(steps: usize) -> Self {
        Self { steps, fd_step: DARTS_FD_STEP, aggregate: None }
    }

    /// BDA: K aggregated steps (`Aggregation`).
    pub fn bda(steps: usize, aggregate: Aggregation) -> Self {
        Self { steps, fd_step: DARTS_FD_STEP, aggregate: Some(aggregate) }
    }

    /// The gradients of virtual step t's objective: L_train on batch t, or BDA's combination
    /// of it with L_val.
    fn step_grads(&self, p: &dyn Bilevel, t: usize, want_w: bool, want_a: bool) -> Result<Grads> {
        let train = p.train_grads_on(t, want_w, want_a)?;
        let Some(agg) = self.aggregate else { return Ok(train) };
        let val = p.val_grads(want_w, want_a)?;
        let (cf, cv) = agg.weights(t);
        let mix = |a: &[Tensor], b: &[Tensor]| axpy(&scaled(a, cf)?, cv, b);
        Ok(Grads { w: mix(&train.w, &val.w)?, a: mix(&train.a, &val.a)? })
    }
}

impl Hypergradient for TruncatedRad {
    fn train_batches(&self) -> usize {
        self.steps
    }

    fn hypergradient(&mut self, p: &dyn Bilevel, st: &SgdState) -> Result<Vec<Tensor>> {
        let k = self.steps;
        if k == 0 {
            candle_core::bail!("truncated unrolling needs at least one step");
        }
        if p.train_batches() < k {
            candle_core::bail!("{k} unrolled steps need {k} training batches, the problem has {}", p.train_batches());
        }
        let mut guard = WeightGuard::new(p.weights())?;
        // Forward: the iterates w_0 … w_{K−1}, and w_K.
        let mut iterates: Vec<Vec<Tensor>> = Vec::with_capacity(k);
        let mut w = guard.saved().to_vec();
        let mut m: Vec<Option<Tensor>> =
            (0..w.len()).map(|i| st.momentum_buffers.get(i).copied().flatten().cloned()).collect();
        for t in 0..k {
            if t > 0 {
                guard.set(&w)?;
            }
            let g = self.step_grads(p, t, true, false)?.w;
            let m_next: Vec<Tensor> = w
                .iter()
                .zip(&g)
                .zip(&m)
                .map(|((w, g), m)| next_momentum(w, g, m.as_ref(), st))
                .collect::<Result<_>>()?;
            let w_next = axpy(&w, -st.lr, &m_next)?;
            iterates.push(std::mem::replace(&mut w, w_next));
            m = m_next.into_iter().map(Some).collect();
        }
        guard.set(&w)?;
        let val = p.val_grads(true, true)?;
        drop(w);
        let (g_alpha, _) = reverse_steps(&mut guard, &iterates, val, st, self.fd_step, false, |t, want_w| {
            self.step_grads(p, t, want_w, true)
        })?;
        guard.restore()?;
        Ok(g_alpha)
    }
}

/// Reverse mode through the SGD steps from the stored iterates w_0 … w_{K−1} (step t's
/// objective's gradients at the weights `guard` set, from `grads(t, want_w)`, α always), given
/// `val`, L_val's gradients at w_K: the α gradient and, with `to_start`, w̄_0 = ∂L_val/∂w_0
/// (IAPTT-GM's gradient of its initialisation auxiliary; empty otherwise, which saves the
/// weight part of step 0's products). The recursion with the optimiser's ξ, μ and λ of `st`
/// is the module's.
pub(super) fn reverse_steps(
    guard: &mut WeightGuard,
    iterates: &[Vec<Tensor>],
    val: Grads,
    st: &SgdState,
    fd_step: f64,
    to_start: bool,
    grads: impl Fn(usize, bool) -> Result<Grads>,
) -> Result<(Vec<Tensor>, Vec<Tensor>)> {
    let mut g_alpha = val.a;
    let mut w_bar = val.w;
    let mut a = scaled(&w_bar, -st.lr)?;
    for t in (0..iterates.len()).rev() {
        let want_w = t > 0 || to_start;
        let (plus, minus, inv_2eps) = both_sides(guard, &iterates[t], &a, fd_step, || grads(t, want_w))?;
        let mixed = difference(&plus.a, &minus.a, &inv_2eps)?;
        g_alpha = g_alpha.iter().zip(&mixed).map(|(g, m)| g + m).collect::<Result<_>>()?;
        if want_w {
            let hv = difference(&plus.w, &minus.w, &inv_2eps)?;
            w_bar = axpy(&axpy(&w_bar, 1.0, &hv)?, st.weight_decay, &a)?;
            a = axpy(&scaled(&a, st.momentum)?, -st.lr, &w_bar)?;
        }
    }
    Ok((g_alpha, if to_start { w_bar } else { Vec::new() }))
}
