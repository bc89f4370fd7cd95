//! Bias-free convolutions with PyTorch's default initialisation
//! (U(±1/√fan_in), fan_in = C_in/groups · K²). State-dict name: weight.

use candle_core::{Result, Tensor};

use super::Mode;
use crate::ops::{self, PwParams};
use crate::params::{Init, ParamBuilder};

/// A dense k×k convolution (the stem), weight (Co, Ci, K, K).
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    pub fn new(
        pb: &ParamBuilder,
        ci: usize,
        co: usize,
        k: usize,
        stride: usize,
        padding: usize,
    ) -> crate::Result<Self> {
        let bound = 1.0 / ((ci * k * k) as f64).sqrt();
        let weight = pb.weight("weight", (co, ci, k, k), Init::Uniform(bound))?;
        Ok(Self { weight, stride, padding })
    }

    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let w = mode.w(&self.weight);
        let (co, ci, kh, kw) = w.dims4()?;
        let (b, _, h, wd) = x.dims4()?;
        if self.padding == 0 && (h, wd) == (kh, kw) {
            // The kernel covers the whole input (the auxiliary head's 2×2 conv on 2×2 maps): one
            // output pixel, a plain matrix product. candle's conv2d backward is far slower and
            // allocates gigabytes here.
            let y = x.flatten_from(1)?.matmul(&w.reshape((co, ci * kh * kw))?.t()?)?;
            return y.reshape((b, co, 1, 1));
        }
        x.conv2d(&w, self.padding, self.stride, 1, 1)
    }
}

/// A 1×1 convolution, weight (Co, Ci, 1, 1), sampling its input at offset + stride·i
/// (FactorizedReduce uses stride 2 with offsets 0 and 1).
#[derive(Debug, Clone)]
pub struct Conv1x1 {
    weight: Tensor,
    sampling: PwParams,
}

impl Conv1x1 {
    pub fn new(pb: &ParamBuilder, ci: usize, co: usize, stride: usize) -> crate::Result<Self> {
        Self::with_offset(pb, ci, co, stride, 0)
    }

    pub fn with_offset(pb: &ParamBuilder, ci: usize, co: usize, stride: usize, offset: usize) -> crate::Result<Self> {
        let bound = 1.0 / (ci as f64).sqrt();
        let weight = pb.weight("weight", (co, ci, 1, 1), Init::Uniform(bound))?;
        Ok(Self { weight, sampling: PwParams { stride, offset } })
    }

    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        ops::conv1x1(x, &mode.w(&self.weight), self.sampling)
    }

    /// forward(ReLU(x)) as one op.
    pub fn forward_relu(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        ops::relu_conv1x1(x, &mode.w(&self.weight), self.sampling)
    }
}
