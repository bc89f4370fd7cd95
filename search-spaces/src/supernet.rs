//! What the search loop needs from any supernet, whatever its space.

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
}

impl Supernet for crate::darts::DartsSupernet {
    fn forward(&self, x: &Tensor, mode: Mode) -> candle_core::Result<Tensor> {
        crate::darts::DartsSupernet::forward(self, x, mode)
    }

    fn weights(&self) -> &ParamStore {
        crate::darts::DartsSupernet::weights(self)
    }

    fn arch(&self) -> &ParamStore {
        crate::darts::DartsSupernet::arch(self)
    }

    fn genotype(&self) -> crate::Result<Genotype> {
        Ok(Genotype::Darts(crate::darts::DartsSupernet::genotype(self, self.config().max_skip_connect)?))
    }

    fn arch_json(&self) -> crate::Result<Value> {
        Ok(crate::darts::DartsSupernet::arch_json(self)?)
    }
}

impl Supernet for crate::nb201::Nb201Network {
    fn forward(&self, x: &Tensor, mode: Mode) -> candle_core::Result<Tensor> {
        crate::nb201::Nb201Network::forward(self, x, mode)
    }

    fn weights(&self) -> &ParamStore {
        crate::nb201::Nb201Network::weights(self)
    }

    fn arch(&self) -> &ParamStore {
        crate::nb201::Nb201Network::arch(self)
    }

    fn genotype(&self) -> crate::Result<Genotype> {
        Ok(Genotype::Nb201(crate::nb201::Nb201Network::genotype(self)?))
    }

    fn arch_json(&self) -> crate::Result<Value> {
        Ok(crate::nb201::Nb201Network::arch_json(self)?)
    }
}
