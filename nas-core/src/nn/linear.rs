//! Fully connected layer y = x Wᵀ + b, PyTorch initialisation. State-dict names: weight, bias.

use candle_core::{Result, Tensor};

use super::Mode;
use crate::onnx::{Attr, Graph};
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

    /// `forward` as an ONNX Gemm node on `x` (B, fan_in).
    pub fn onnx(&self, g: &mut Graph, x: &str) -> crate::Result<String> {
        let w = g.weight("weight", &self.weight)?;
        let b = g.weight("bias", &self.bias)?;
        Ok(g.node("Gemm", &[x, &w, &b], vec![Attr::Int("transB", 1)]))
    }

    /// Multiply-accumulates for one input row: fan_in·fan_out (the bias adds not counted).
    pub fn mult_adds(&self) -> u128 {
        self.weight.elem_count() as u128
    }
}
