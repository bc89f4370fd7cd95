//! Dense k×k convolution without bias (groups 1, dilation 1), square stride and zero padding:
//! the stems' 3×3 convolutions on the images, the auxiliary head's, NAS-Bench-201's 3×3
//! ReLU-conv-BN. On the CPU each batch item is one product of the weight (Co × Ci·K²) with the
//! item's K² shifted windows (`cpu::conv`, im2col), and the weight gradient one product per
//! item summed in fixed groups, where candle's own backward convolves the images with the
//! output gradient as a kernel (a slow direct convolution). On other devices, and for other
//! shapes, it is candle's `conv2d`.
//!
//! Shapes: x (B, Ci, H, W), w (Co, Ci, K, K), y (B, Co, Ho, Wo), Ho = (H + 2p − K)/s + 1.

use candle_core::{bail, CpuStorage, DType, Result, Shape, Tensor};

use crate::cpu::conv as kernels;
#[cfg(feature = "cuda")]
use crate::op::CudaIn;
use crate::op::{forward, grads, CpuIn, Kernels, Op};
#[cfg(feature = "cuda")]
use candle_core::CudaStorage;

/// The shapes of one dense convolution, checked once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConvGeom {
    pub b: usize,
    pub ci: usize,
    pub co: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub stride: usize,
    pub padding: usize,
    pub oh: usize,
    pub ow: usize,
}

impl ConvGeom {
    pub fn new(x: &[usize], wt: &[usize], stride: usize, padding: usize) -> Result<Self> {
        let &[b, ci, h, w] = x else { bail!("conv2d: input must be (B, C, H, W), got {x:?}") };
        let &[co, wci, k, k2] = wt else { bail!("conv2d: weight must be (Co, Ci, K, K), got {wt:?}") };
        if wci != ci || k != k2 || k == 0 {
            bail!("conv2d: weight {wt:?} does not fit input {x:?}");
        }
        let (hp, wp) = (h + 2 * padding, w + 2 * padding);
        if stride == 0 || h == 0 || w == 0 || hp < k || wp < k {
            bail!("conv2d: a {k}x{k} window (stride {stride}) does not fit {h}x{w} padded by {padding}");
        }
        Ok(Self { b, ci, co, h, w, k, stride, padding, oh: (hp - k) / stride + 1, ow: (wp - k) / stride + 1 })
    }

    pub fn out_shape(&self) -> Shape {
        (self.b, self.co, self.oh, self.ow).into()
    }
}

/// The differentiable op: (x, w) → y, on the CPU.
struct Conv2d(ConvGeom);

impl Kernels<2> for Conv2d {
    fn cpu_fwd(&self, s: [CpuIn<'_>; 2]) -> Result<CpuStorage> {
        forward!(cpu: "conv2d", s, |T, [x, w]| Ok(kernels::forward::<T>(x, w, &self.0)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, _: [CudaIn<'_>; 2]) -> Result<CudaStorage> {
        // `conv2d` below hands CUDA tensors to candle's convolution before making this op.
        bail!("conv2d: this op has CPU kernels only; CUDA tensors take candle's conv2d")
    }

    fn bwd(&self, [x, w]: [&Tensor; 2], _: &Tensor, gy: &Tensor) -> Result<[Option<Tensor>; 2]> {
        let want = [x.track_op(), w.track_op()];
        grads!(cpu: "conv2d", [x, w, gy], [x, w], |T, [x, w, gy]| Ok(kernels::backward::<T>([x, w, gy], &self.0, want)))
    }
}

/// Dense convolution without bias: x (B, Ci, H, W), w (Co, Ci, K, K) → (B, Co, Ho, Wo), with
/// the given stride and zero padding on both sides, differentiable in both. CPU f32/f64
/// tensors run the im2col kernels; anything else is candle's `conv2d`.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    let square = matches!(w.dims(), &[_, _, kh, kw] if kh == kw);
    if !(x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64) && square) {
        return x.conv2d(w, padding, stride, 1, 1);
    }
    let g = ConvGeom::new(x.dims(), w.dims(), stride, padding)?;
    x.contiguous()?.apply_op2(&w.contiguous()?, Op::shaped("conv2d", Conv2d(g), |op, _| op.0.out_shape()))
}
