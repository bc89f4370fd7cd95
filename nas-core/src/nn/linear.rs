//! Fully connected layer y = x Wᵀ + b, PyTorch initialisation. State-dict names: weight, bias.

use candle_core::{Result, Tensor};

use super::Mode;
use crate::params::{Init, ParamBuilder};

#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    pub fn new(pb: &ParamBuilder, fan_in: usize, fan_out: usize) -> crate::Result<Self> {
        let bound = 1.0 / (fan_in as f64).sqrt();
        Ok(Self {
            weight: pb.weight("weight", (fan_out, fan_in), Init::Uniform(bound))?,
            bias: pb.weight("bias", fan_out, Init::Uniform(bound))?,
        })
    }

    /// x (B, fan_in) → (B, fan_out).
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        x.matmul(&mode.w(&self.weight).t()?)?.broadcast_add(&mode.w(&self.bias))
    }

    /// Multiply-accumulates for one input row: fan_in·fan_out (the bias adds not counted).
    pub fn mult_adds(&self) -> u128 {
        self.weight.elem_count() as u128
    }
}
