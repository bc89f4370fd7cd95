//! What retraining needs from any derived network, whatever its space. Each space implements it
//! next to its network and builds it through the registry (`Genotype::build_eval_network`).

use candle_core::{Result, Tensor};
use nas_core::nn::Mode;
use nas_core::params::ParamStore;

pub trait EvalNetwork {
    /// Weights and buffers, under the reference's state_dict names.
    fn weights(&self) -> &ParamStore;
    /// Number of weights without the auxiliary head (how DARTS reports model size).
    fn num_params_without_aux(&self) -> usize;
    /// How many op outputs drop path applies to in one forward pass; 0 without drop path.
    fn num_drop_path_ops(&self) -> usize;
    /// Logits (B, classes) and, in training with an auxiliary head, the auxiliary logits.
    /// `drop_path` (ops, B) holds per-sample factors for the output of every droppable op in
    /// forward order; None disables drop path.
    fn forward(&self, x: &Tensor, mode: Mode, drop_path: Option<&Tensor>) -> Result<(Tensor, Option<Tensor>)>;
    /// Multiply-accumulates of one forward pass on one `height`×`width` image without the
    /// auxiliary head (the darts network's `mult_adds` states the convention); None for a
    /// network that does not count them.
    fn mult_adds(&self, _height: usize, _width: usize) -> Option<crate::Result<u128>> {
        None
    }
    /// The network in evaluation mode (running statistics, no drop path, no auxiliary head)
    /// as ONNX nodes on the images `x` (B, C, H, W, already normalised): the name of the
    /// logits (B, classes).
    fn onnx(&self, g: &mut nas_core::onnx::Graph, x: &str) -> crate::Result<String>;
    /// Position of the network's own random stream (draws of its noise ops so far), which a
    /// checkpoint keeps; 0 for a network that draws nothing.
    fn stream_position(&self) -> u64 {
        0
    }
    fn set_stream_position(&self, _draws: u64) {}
}
