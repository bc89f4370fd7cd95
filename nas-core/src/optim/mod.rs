//! Optimisers with PyTorch semantics, gradient clipping, learning-rate schedules and the
//! weight-optimiser settings of a run.
//!
//! Gradients are passed as one `Option<Tensor>` per parameter, aligned with the optimiser's
//! parameter list; `None` (no gradient reached the parameter) leaves it untouched, as PyTorch
//! does for a parameter whose `.grad` is None.

mod adam;
mod clip;
mod schedule;
mod sgd;
mod weight_optim;

pub use adam::{Adam, AdamConfig};
pub use clip::{clip_grad_norm, global_norm};
pub use schedule::{CosineAnnealing, LrSchedule, ScheduleKind};
pub use sgd::{Sgd, SgdConfig};
pub use weight_optim::{lr_flag, schedule_flags, WeightOptimConfig};

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

/// The gradients of `params` from a backward pass, in order.
pub fn grads_for(store: &GradStore, params: &[Var]) -> Vec<Option<Tensor>> {
    params.iter().map(|p| store.get(p.as_tensor()).cloned()).collect()
}
