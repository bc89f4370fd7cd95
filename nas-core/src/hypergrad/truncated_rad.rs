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

use candle_core::{Result, Tensor};

use super::{
    axpy, both_sides, difference, next_momentum, scaled, Bilevel, Hypergradient, SgdState, WeightGuard, DARTS_FD_STEP,
};

/// K virtual steps; the second derivatives by central differences with perturbations of
/// norm `fd_step` (DARTS: 0.01).
#[derive(Debug, Clone, Copy)]
pub struct TruncatedRad {
    pub steps: usize,
    pub fd_step: f64,
}

impl TruncatedRad {
    /// K steps with DARTS' finite-difference step.
    pub fn new(steps: usize) -> Self {
        Self { steps, fd_step: DARTS_FD_STEP }
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
            let g = p.train_grads_on(t, true, false)?.w;
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
        // Reverse.
        let mut g_alpha = val.a;
        let mut w_bar = val.w;
        let mut a = scaled(&w_bar, -st.lr)?;
        for t in (0..k).rev() {
            let want_w = t > 0;
            let (plus, minus, inv_2eps) =
                both_sides(&mut guard, &iterates[t], &a, self.fd_step, || p.train_grads_on(t, want_w, true))?;
            let mixed = difference(&plus.a, &minus.a, &inv_2eps)?;
            g_alpha = g_alpha.iter().zip(&mixed).map(|(g, m)| g + m).collect::<Result<_>>()?;
            if want_w {
                let hv = difference(&plus.w, &minus.w, &inv_2eps)?;
                w_bar = axpy(&axpy(&w_bar, 1.0, &hv)?, st.weight_decay, &a)?;
                a = axpy(&scaled(&a, st.momentum)?, -st.lr, &w_bar)?;
            }
        }
        guard.restore()?;
        Ok(g_alpha)
    }
}
