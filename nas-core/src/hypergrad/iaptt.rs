//! IAPTT-GM (Liu et al., NeurIPS 2021; vis-opt-group/IAPTT-GM, `experiment/Numerical.py`):
//! the lower level's trajectory starts from an initialisation auxiliary z, an upper-level
//! variable of its own, and the hypergradient back-propagates through the pessimistic
//! truncation of that trajectory:
//!   w_0 = z,  w_{t+1} = w_t − ξ∇_w L_train(w_t, α)  for t < K,
//!   k̄ = argmax_{k ≥ 1} L_val(w_k)  (the first maximum),
//!   g = d L_val(w_k̄, α)/dα,  ∂ L_val(w_k̄)/∂z  by reverse mode through the k̄ steps,
//! then z ← z − η_z·∂L_val/∂z (clamped to the problem's weight box, where it has one).
//!
//! In a search z is the weights' starting point of each α step's virtual trajectory: the
//! current weights at the first step, then carried from step to step by its own SGD (kept in
//! checkpoints); the real weight step is untouched. The virtual steps are plain SGD with the
//! optimiser's current lr ξ on the current training batch, as the reference's inner loop. The
//! reverse pass is `truncated_rad::reverse_steps` with no momentum and no weight decay, carried
//! down to w̄_0 = ∂/∂z. A step costs 2K + 2k̄ + 1 gradient evaluations and K loss evaluations.

use candle_core::{Result, Tensor};

use super::truncated_rad::reverse_steps;
use super::{axpy, Bilevel, Hypergradient, SgdState, WeightGuard, DARTS_FD_STEP};

/// Checkpoint names of z, one per weight.
const STATE: &str = "iaptt.z.";

#[derive(Debug, Clone)]
pub struct Iaptt {
    /// Virtual steps K.
    pub steps: usize,
    /// z's step size η_z.
    pub z_lr: f64,
    pub fd_step: f64,
    z: Option<Vec<Tensor>>,
    /// k̄ of the last step.
    truncation: usize,
}

impl Iaptt {
    pub fn new(steps: usize, z_lr: f64) -> Self {
        Self { steps, z_lr, fd_step: DARTS_FD_STEP, z: None, truncation: 0 }
    }

    /// k̄ of the last step: the number of virtual steps the hypergradient went through.
    pub fn truncation(&self) -> usize {
        self.truncation
    }

    /// The initialisation auxiliary z (None before the first step).
    pub fn z(&self) -> Option<&[Tensor]> {
        self.z.as_deref()
    }
}

impl Hypergradient for Iaptt {
    fn hypergradient(&mut self, p: &dyn Bilevel, st: &SgdState) -> Result<Vec<Tensor>> {
        let k = self.steps;
        if k == 0 {
            candle_core::bail!("IAPTT-GM needs at least one virtual step");
        }
        let mut guard = WeightGuard::new(p.weights())?;
        // Detached: z is carried from step to step, and the saved copies of the variables
        // record where they came from.
        let z = match &self.z {
            Some(z) => z.clone(),
            None => guard.saved().iter().map(Tensor::detach).collect(),
        };
        // Forward from z, L_val after every step.
        let mut iterates: Vec<Vec<Tensor>> = Vec::with_capacity(k + 1);
        let mut values = Vec::with_capacity(k);
        let mut w = z.clone();
        for _ in 0..k {
            guard.set(&w)?;
            let g = p.train_grads(true, false)?.w;
            let next = axpy(&w, -st.lr, &g)?;
            iterates.push(std::mem::replace(&mut w, next));
            guard.set(&w)?;
            values.push(p.val_loss()?);
        }
        iterates.push(w);
        // The first maximum: k̄ = argmax + 1 steps (values[i] is L_val after i + 1 steps).
        let kbar = 1 + values.iter().enumerate().fold(0, |best, (i, v)| if *v > values[best] { i } else { best });
        self.truncation = kbar;
        guard.set(&iterates[kbar])?;
        let val = p.val_grads(true, true)?;
        // Reverse through steps k̄ − 1 … 0 (plain SGD: no momentum, no weight decay), down to w̄_0.
        let plain = SgdState { lr: st.lr, momentum: 0.0, weight_decay: 0.0, momentum_buffers: Vec::new() };
        let (g_alpha, w_bar) =
            reverse_steps(&mut guard, &iterates[..kbar], val, &plain, self.fd_step, true, |_, _| {
                p.train_grads(true, true)
            })?;
        guard.restore()?;
        let z_next = axpy(&z, -self.z_lr, &w_bar)?;
        self.z = Some(match p.weight_box() {
            Some((lo, hi)) => z_next.iter().map(|t| t.clamp(lo, hi).map(|t| t.detach())).collect::<Result<_>>()?,
            None => z_next.iter().map(Tensor::detach).collect(),
        });
        Ok(g_alpha)
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        self.z.iter().flatten().enumerate().map(|(i, t)| (format!("{STATE}{i}"), t.clone())).collect()
    }

    fn load_state(&mut self, get: &dyn Fn(&str) -> Option<Tensor>) -> Result<()> {
        let mut z = Vec::new();
        while let Some(t) = get(&format!("{STATE}{}", z.len())) {
            z.push(t);
        }
        self.z = (!z.is_empty()).then_some(z);
        Ok(())
    }
}
