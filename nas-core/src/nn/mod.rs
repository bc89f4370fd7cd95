//! Layers shared by every search space and network: batch norm, convolutions, linear, and the
//! forward `Mode` that says which parameters need gradients.

mod batch_norm;
mod conv;
mod linear;
mod loss;

pub use batch_norm::BatchNorm2d;
pub use conv::{out_side, size_product, Conv1x1, Conv2d};
pub use linear::Linear;
pub use loss::{accuracy_count, correct_count, cross_entropy, cross_entropy_smoothed, topk_counts};

/// Softmax over the last dimension, differentiable (architecture weights).
pub fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    candle_nn::ops::softmax(x, candle_core::D::Minus1)
}

use candle_core::Tensor;

/// How a forward pass runs: training (batch statistics, running-stat updates) or evaluation,
/// and which parameter groups the backward pass needs. A group that needs no gradient is
/// detached at its use, so the backward pass skips its gradients entirely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    pub train: bool,
    pub grad_weights: bool,
    pub grad_arch: bool,
}

impl Mode {
    /// Inference: running statistics, no gradients.
    pub const EVAL: Mode = Mode { train: false, grad_weights: false, grad_arch: false };
    /// Training forward for a weight step: gradients of the weights only.
    pub const TRAIN_WEIGHTS: Mode = Mode { train: true, grad_weights: true, grad_arch: false };
    /// Training forward for an architecture step: gradients of α (and β) only.
    pub const TRAIN_ARCH: Mode = Mode { train: true, grad_weights: false, grad_arch: true };
    /// Training forward with gradients of everything.
    pub const TRAIN_ALL: Mode = Mode { train: true, grad_weights: true, grad_arch: true };

    /// A weight as the forward pass should see it.
    #[inline]
    pub fn w(&self, t: &Tensor) -> Tensor {
        if self.grad_weights {
            t.clone()
        } else {
            t.detach()
        }
    }

    /// An architecture parameter as the forward pass should see it.
    #[inline]
    pub fn arch(&self, t: &Tensor) -> Tensor {
        if self.grad_arch {
            t.clone()
        } else {
            t.detach()
        }
    }
}
