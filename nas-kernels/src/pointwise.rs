//! 1×1 convolution without bias, optionally strided with an offset: y[b, o, i, j] =
//! Σ_c w[o, c] · x[b, c, off + s·i, off + s·j]. Stride 2 with offsets 0 and 1 are the two
//! halves of FactorizedReduce (conv on x and on x[:, :, 1:, 1:]), without materialising the
//! subsampled input as a separate tensor. With `relu` the op is conv(ReLU(x)) (ReLU-conv-BN,
//! FactorizedReduce), and ReLU(x) never becomes a tensor.
//!
//! Shapes: x (B, Ci, H, W), w (Co, Ci, 1, 1), y (B, Co, Ho, Wo), Ho = (H − off − 1)/s + 1.
//! Kernels: `cpu::pointwise` (one GEMM per batch item in parallel), `cuda::pointwise` (a
//! gather of the sampled, ReLU'd input where needed, then one batched cuBLAS GEMM).

use candle_core::{bail, CpuStorage, Result, Shape, Tensor};

use crate::composed;
use crate::cpu::pointwise as kernels;
#[cfg(feature = "cuda")]
use crate::cuda::pointwise as launch;
#[cfg(feature = "cuda")]
use crate::op::CudaIn;
use crate::op::{forward, grads, CpuIn, Kernels, Op};
#[cfg(feature = "cuda")]
use candle_core::CudaStorage;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PwParams {
    pub stride: usize,
    pub offset: usize,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct PwGeom {
    pub b: usize,
    pub ci: usize,
    pub co: usize,
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    pub p: PwParams,
}

impl PwGeom {
    pub fn new(x: &[usize], wt: &[usize], p: PwParams) -> Result<Self> {
        let &[b, ci, h, w] = x else { bail!("conv1x1: input must be (B, C, H, W), got {x:?}") };
        let (co, wci) = match wt {
            &[co, wci, 1, 1] | &[co, wci] => (co, wci),
            _ => bail!("conv1x1: weight must be (Co, Ci, 1, 1), got {wt:?}"),
        };
        if wci != ci {
            bail!("conv1x1: weight {wt:?} does not fit input {x:?}");
        }
        if p.stride == 0 || p.offset >= h || p.offset >= w {
            bail!("conv1x1: bad stride {} / offset {} for {h}x{w}", p.stride, p.offset);
        }
        let oh = (h - p.offset - 1) / p.stride + 1;
        let ow = (w - p.offset - 1) / p.stride + 1;
        Ok(Self { b, ci, co, h, w, oh, ow, p })
    }

    pub fn dense(&self) -> bool {
        self.p.stride == 1 && self.p.offset == 0
    }

    pub fn in_plane(&self) -> usize {
        self.h * self.w
    }

    pub fn out_plane(&self) -> usize {
        self.oh * self.ow
    }

    pub fn out_shape(&self) -> Shape {
        (self.b, self.co, self.oh, self.ow).into()
    }
}

/// conv(x), or conv(ReLU(x)) with `relu`.
struct Conv1x1 {
    g: PwGeom,
    relu: bool,
}

impl Kernels<2> for Conv1x1 {
    fn cpu_fwd(&self, s: [CpuIn<'_>; 2]) -> Result<CpuStorage> {
        forward!(cpu: "conv1x1", s, |T, [x, w]| Ok(kernels::forward::<T>(x, w, &self.g, self.relu)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: [CudaIn<'_>; 2]) -> Result<CudaStorage> {
        forward!(cuda: "conv1x1", s, |T, be, [x, w]| launch::forward::<_, T>(be, x, w, &self.g, self.relu))
    }

    fn bwd(&self, [x, w]: [&Tensor; 2], _: &Tensor, gy: &Tensor) -> Result<[Option<Tensor>; 2]> {
        let (g, want) = (&self.g, [x.track_op(), w.track_op()]);
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            return grads!(cuda: "conv1x1", [x, w, gy], [x, w], |T, be, [x, w, gy]| {
                launch::backward::<_, T>(be, [x, w, gy], g, self.relu, want)
            });
        }
        grads!(cpu: "conv1x1", [x, w, gy], [x, w], |T, [x, w, gy]| Ok(kernels::backward::<T>([x, w, gy], g, want, self.relu)))
    }
}

/// 1×1 convolution without bias, sampling x at offset + stride·i: x (B, Ci, H, W),
/// w (Co, Ci, 1, 1).
pub fn conv1x1(x: &Tensor, w: &Tensor, p: PwParams) -> Result<Tensor> {
    if !crate::fast(x) {
        return composed::conv1x1(x, w, p);
    }
    apply(x, w, p, false)
}

/// conv1x1(ReLU(x)) as one op (ReLU-conv-BN and FactorizedReduce start with ReLU).
pub fn relu_conv1x1(x: &Tensor, w: &Tensor, p: PwParams) -> Result<Tensor> {
    if !crate::fast(x) {
        return composed::conv1x1(&x.relu()?, w, p);
    }
    apply(x, w, p, true)
}

/// The op on x (ReLU'd first with `relu`).
fn apply(x: &Tensor, w: &Tensor, p: PwParams, relu: bool) -> Result<Tensor> {
    let g = PwGeom::new(x.dims(), w.dims(), p)?;
    let op = Op::shaped(["conv1x1", "relu_conv1x1"][relu as usize], Conv1x1 { g, relu }, |op, _| op.g.out_shape());
    x.contiguous()?.apply_op2(&w.contiguous()?, op)
}
