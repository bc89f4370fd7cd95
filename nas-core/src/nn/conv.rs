//! Bias-free convolutions with PyTorch's default initialisation
//! (U(±1/√fan_in), fan_in = C_in/groups · K²). State-dict name: weight.

use candle_core::{Result, Tensor};

use super::Mode;
use crate::onnx::{ConvParams, Graph};
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
        ops::conv2d(x, &w, self.stride, self.padding)
    }

    /// `forward` as an ONNX Conv node on `x`, its weight under the scope.
    pub fn onnx(&self, g: &mut Graph, x: &str) -> crate::Result<String> {
        let w = g.weight("weight", &self.weight)?;
        Ok(g.conv(x, &w, self.weight.dim(2)?, ConvParams::dense(self.stride, self.padding)))
    }

    /// The output size and the multiply-accumulates (K²·C_in·C_out per output pixel) for one
    /// input image of `h`×`w`; None when the kernel does not fit.
    pub fn mult_adds(&self, (h, w): (usize, usize)) -> Option<((usize, usize), u128)> {
        let (co, ci, kh, kw) = self.weight.dims4().ok()?;
        let ho = out_side(h, kh, self.stride, self.padding, 1)?;
        let wo = out_side(w, kw, self.stride, self.padding, 1)?;
        Some(((ho, wo), size_product(&[kh, kw, ci, co, ho, wo])))
    }
}

/// The product of sizes, wide enough for any network's mult-adds.
pub fn size_product(sizes: &[usize]) -> u128 {
    sizes.iter().map(|&s| s as u128).product()
}

/// Output side of a convolution or pooling window, ⌊(n + 2p − d·(k − 1) − 1)/s⌋ + 1 (PyTorch's
/// formula); None when the window does not fit.
pub fn out_side(n: usize, k: usize, stride: usize, padding: usize, dilation: usize) -> Option<usize> {
    let span = dilation.checked_mul(k.checked_sub(1)?)?.checked_add(1)?;
    let padded = n.checked_add(padding.checked_mul(2)?)?;
    if stride == 0 || padded < span {
        return None;
    }
    Some((padded - span) / stride + 1)
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

    /// `forward` as ONNX nodes on `x`: a Slice for the sampling offset, then the Conv.
    pub fn onnx(&self, g: &mut Graph, x: &str) -> crate::Result<String> {
        let PwParams { stride, offset } = self.sampling;
        let w = g.weight("weight", &self.weight)?;
        let x = g.subsample(x, offset, 1);
        Ok(g.conv(&x, &w, 1, ConvParams::dense(stride, 0)))
    }

    /// forward(ReLU(x)) as one op.
    pub fn forward_relu(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        ops::relu_conv1x1(x, &mode.w(&self.weight), self.sampling)
    }

    /// The output size and the multiply-accumulates (C_in·C_out per output pixel) for one
    /// input image of `h`×`w`; None when nothing is left to sample.
    pub fn mult_adds(&self, (h, w): (usize, usize)) -> Option<((usize, usize), u128)> {
        let (co, ci, _, _) = self.weight.dims4().ok()?;
        let PwParams { stride, offset } = self.sampling;
        if stride == 0 || h <= offset || w <= offset {
            return None;
        }
        let (ho, wo) = ((h - offset).div_ceil(stride), (w - offset).div_ceil(stride));
        Some(((ho, wo), size_product(&[ci, co, ho, wo])))
    }
}
