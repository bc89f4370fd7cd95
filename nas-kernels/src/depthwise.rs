//! Depthwise 2-D convolution (`groups == channels`, one k×k filter per channel), the core of
//! DARTS' sep_conv and dil_conv ops, with stride, zero padding and dilation.
//!
//! Shapes: input (B, C, H, W), weight (C, 1, K, K) as in PyTorch, output (B, C, Ho, Wo) with
//! Ho = (H + 2p − d(K−1) − 1)/s + 1. Kernels: `cpu::depthwise` (phase layout, rayon over
//! planes) and `cuda::depthwise` (one thread per output for the forward and the input
//! gradient, a block reduction per channel for the filter gradient).

use candle_core::{bail, CpuStorage, Result, Shape, Tensor};

use crate::cpu::depthwise as kernels;
#[cfg(feature = "cuda")]
use crate::cuda::depthwise::{self as launch, Dw};
#[cfg(feature = "cuda")]
use crate::op::CudaIn;
use crate::op::{forward, grads, CpuIn, Kernels, Op};
#[cfg(feature = "cuda")]
use candle_core::CudaStorage;

/// Hyper-parameters of a depthwise convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DwParams {
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
}

/// The shapes of one depthwise convolution, checked once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DwGeom {
    pub b: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub oh: usize,
    pub ow: usize,
    pub p: DwParams,
}

impl DwGeom {
    pub fn new(x: &[usize], wt: &[usize], p: DwParams) -> Result<Self> {
        let &[b, c, h, w] = x else { bail!("depthwise_conv2d: input must be (B, C, H, W), got {x:?}") };
        let &[wc, one, k, k2] = wt else { bail!("depthwise_conv2d: weight must be (C, 1, K, K), got {wt:?}") };
        if wc != c || one != 1 || k != k2 || k == 0 {
            bail!("depthwise_conv2d: weight {wt:?} does not fit input {x:?}");
        }
        let span = p.dilation * (k - 1) + 1;
        let (hp, wp) = (h + 2 * p.padding, w + 2 * p.padding);
        if p.stride == 0 || p.dilation == 0 || h == 0 || w == 0 || hp < span || wp < span {
            bail!(
                "depthwise_conv2d: a {k}x{k} window (stride {}, dilation {}) does not fit {h}x{w} padded by {}",
                p.stride,
                p.dilation,
                p.padding
            )
        }
        Ok(Self { b, c, h, w, k, oh: (hp - span) / p.stride + 1, ow: (wp - span) / p.stride + 1, p })
    }

    pub fn out_shape(&self) -> Shape {
        (self.b, self.c, self.oh, self.ow).into()
    }
}

/// The differentiable op: (x, w) → y.
struct DepthwiseConv2d(DwGeom);

impl Kernels<2> for DepthwiseConv2d {
    fn cpu_fwd(&self, s: [CpuIn<'_>; 2]) -> Result<CpuStorage> {
        let cg = kernels::Geom::new(&self.0)?;
        forward!(cpu: "depthwise-conv2d", s, |T, [x, w]| Ok(kernels::forward::<T>(x, w, &cg)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: [CudaIn<'_>; 2]) -> Result<CudaStorage> {
        forward!(cuda: "depthwise-conv2d", s, |T, be, [x, w]| launch::forward::<_, T>(be, &Dw { x, w, g: &self.0, relu: false }))
    }

    fn bwd(&self, [x, w]: [&Tensor; 2], _: &Tensor, gy: &Tensor) -> Result<[Option<Tensor>; 2]> {
        let want = [x.track_op(), w.track_op()];
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            return grads!(cuda: "depthwise-conv2d", [x, w, gy], [x, w], |T, be, [x, w, gy]| {
                launch::backward::<_, T>(be, &Dw { x, w, g: &self.0, relu: false }, gy, want)
            });
        }
        let cg = kernels::Geom::new(&self.0)?;
        grads!(cpu: "depthwise-conv2d", [x, w, gy], [x, w], |T, [x, w, gy]| Ok(kernels::backward::<T>(x, w, gy, &cg, want)))
    }
}

/// Depthwise convolution: x (B, C, H, W), w (C, 1, K, K) → (B, C, Ho, Wo), differentiable in
/// both.
pub fn depthwise_conv2d(x: &Tensor, w: &Tensor, p: DwParams) -> Result<Tensor> {
    if !crate::fast(x) {
        return crate::composed::depthwise_conv2d(x, w, p);
    }
    let g = DwGeom::new(x.dims(), w.dims(), p)?;
    x.contiguous()?
        .apply_op2(&w.contiguous()?, Op::shaped("depthwise-conv2d", DepthwiseConv2d(g), |op, _| op.0.out_shape()))
}
