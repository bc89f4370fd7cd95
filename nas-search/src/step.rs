//! The weight half of a search step (DARTS Alg. 1, step 2): one SGD step on the weights from a
//! search-train batch, w ← w − ξ∇_w L_train(w, α), with global-norm clipping as
//! `torch.nn.utils.clip_grad_norm_`; the relaxed supernet's, or a sampling method's with the
//! ops of its sample. The architecture half is the method's (`method`).

use candle_core::Tensor;
use nas_core::dist::{self, StepGrads};
use nas_core::nn::Mode;
use nas_core::optim::Sgd;
use search_spaces::{ArchSample, Supernet};

use crate::method::sampling::micro_output;
use crate::Result;

/// A batch on the device: images (B, C, H, W) and labels (B,) u32.
#[derive(Debug, Clone)]
pub struct Batch {
    pub x: Tensor,
    pub y: Tensor,
}

/// One SGD step on the mean loss of a step's micro-batches (each with its own forward and
/// batch statistics; gradients accumulated, and averaged over the world's ranks by
/// `nas_core::dist::step_grads`) with global-norm clipping, running the ops of `sample` (None:
/// the relaxed supernet); returns the step's loss, correct count and size.
pub fn weight_step(
    net: &dyn Supernet,
    opt: &mut Sgd,
    micro: &[Batch],
    grad_clip: f64,
    sample: Option<&ArchSample>,
) -> Result<StepGrads> {
    let params = opt.params().to_vec();
    let out = dist::step_grads(micro, &[&params], |b| micro_output(net, b, Mode::TRAIN_WEIGHTS, sample, None))?;
    opt.step_clipped(&out.grads[0], grad_clip)?;
    Ok(out)
}
