//! What the search loop needs from any supernet, whatever its space. Each space implements it
//! next to its supernet and builds it through the registry (`SpaceKind::build_supernet`).

use candle_core::Tensor;
use nas_core::nn::Mode;
use nas_core::params::ParamStore;
use serde_json::Value;

use crate::genotype::Genotype;

pub trait Supernet {
    /// Logits (B, classes).
    fn forward(&self, x: &Tensor, mode: Mode) -> candle_core::Result<Tensor>;
    /// Network weights and buffers.
    fn weights(&self) -> &ParamStore;
    /// Architecture parameters (α, β).
    fn arch(&self) -> &ParamStore;
    /// The discrete architecture the current α derives.
    fn genotype(&self) -> crate::Result<Genotype>;
    /// Architecture parameters as JSON for the metrics log.
    fn arch_json(&self) -> crate::Result<Value>;
    /// Position of the network's own random stream (draws of its noise ops so far), which a
    /// checkpoint keeps; 0 for a network that draws nothing.
    fn stream_position(&self) -> u64 {
        0
    }
    fn set_stream_position(&self, _draws: u64) {}
    /// The dropout probability after skip_connect in training (P-DARTS); networks without
    /// it ignore it.
    fn set_skip_dropout(&self, _p: f64) {}
    /// The concrete network, for drivers of one space (P-DARTS' stages read the darts
    /// supernet's op sets and weights).
    fn as_any(&self) -> &dyn std::any::Any;
}
