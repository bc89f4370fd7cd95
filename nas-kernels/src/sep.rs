//! Depthwise convolution followed by a 1×1 convolution, fused into one differentiable op:
//! the first half of every sep_conv/dil_conv stage. `relu_dw_pw` is the same with ReLU applied
//! to the input as the depthwise kernel reads it (every sep_conv/dil_conv stage starts with
//! ReLU), so ReLU(x) never becomes a tensor either.
//!
//! Shapes: x (B, C, H, W), w_dw (C, 1, K, K), w_pw (Co, C, 1, 1) → y (B, Co, Ho, Wo).
//! Kernels: `cpu::sep` (the depthwise output kept per task and recomputed in the backward),
//! `cuda::sep` (the depthwise kernel, then one batched GEMM for the 1×1 convolution).

use candle_core::{bail, CpuStorage, Result, Shape, Tensor};

use crate::composed;
use crate::cpu::sep as kernels;
#[cfg(feature = "cuda")]
use crate::cuda::sep::{self as launch, Sep};
use crate::depthwise::{DwGeom, DwParams};
#[cfg(feature = "cuda")]
use crate::op::CudaIn;
use crate::op::{forward, grads, CpuIn, Kernels, Op};
use crate::pointwise::PwParams;
#[cfg(feature = "cuda")]
use candle_core::CudaStorage;

/// The shapes of a fused depthwise + pointwise convolution.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SepGeom {
    pub dw: DwGeom,
    pub co: usize,
}

impl SepGeom {
    pub fn new(x: &[usize], w_dw: &[usize], w_pw: &[usize], p: DwParams) -> Result<Self> {
        let dw = DwGeom::new(x, w_dw, p)?;
        let co = match w_pw {
            &[co, ci, 1, 1] if ci == dw.c => co,
            _ => bail!("dw_pw: pointwise weight {w_pw:?} does not fit {} channels", dw.c),
        };
        Ok(Self { dw, co })
    }

    pub fn out_shape(&self) -> Shape {
        (self.dw.b, self.co, self.dw.oh, self.dw.ow).into()
    }
}

/// pw(dw(x)), or pw(dw(ReLU(x))) with `relu`.
struct DwPw {
    g: SepGeom,
    relu: bool,
}

impl Kernels<3> for DwPw {
    fn cpu_fwd(&self, s: [CpuIn<'_>; 3]) -> Result<CpuStorage> {
        let cg = kernels::SepGeom::new(&self.g)?;
        forward!(cpu: "dw_pw", s, |T, [x, wd, wp]| Ok(kernels::forward::<T>([x, wd, wp], &cg, self.relu)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: [CudaIn<'_>; 3]) -> Result<CudaStorage> {
        forward!(cuda: "dw_pw", s, |T, be, [x, w_dw, w_pw]| {
            Ok(launch::forward::<_, T>(be, &Sep { x, w_dw, w_pw, g: &self.g, relu: self.relu })?.0)
        })
    }

    fn bwd(&self, [x, wd, wp]: [&Tensor; 3], _: &Tensor, gy: &Tensor) -> Result<[Option<Tensor>; 3]> {
        let want = [x.track_op(), wd.track_op(), wp.track_op()];
        // The forward keeps no state: the backward recomputes the depthwise output.
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            return grads!(cuda: "dw_pw", [x, wd, wp, gy], [x, wd, wp], |T, be, [x, w_dw, w_pw, gy]| {
                launch::backward::<_, T>(be, &Sep { x, w_dw, w_pw, g: &self.g, relu: self.relu }, None, gy, want)
            });
        }
        let cg = kernels::SepGeom::new(&self.g)?;
        grads!(cpu: "dw_pw", [x, wd, wp, gy], [x, wd, wp], |T, [x, wd, wp, gy]| {
            Ok(kernels::backward::<T>([x, wd, wp], kernels::OutGrad::Given(gy), &cg, want, self.relu))
        })
    }
}

/// pw(dw(x)): depthwise k×k convolution then 1×1 convolution, w_pw (Co, C, 1, 1).
pub fn dw_pw(x: &Tensor, w_dw: &Tensor, w_pw: &Tensor, p: DwParams) -> Result<Tensor> {
    if !crate::fast(x) {
        let t = composed::depthwise_conv2d(x, w_dw, p)?;
        return composed::conv1x1(&t, w_pw, PwParams { stride: 1, offset: 0 });
    }
    apply(x, w_dw, w_pw, p, false)
}

/// pw(dw(ReLU(x))) as one op: the first stage of every sep_conv and dil_conv.
pub fn relu_dw_pw(x: &Tensor, w_dw: &Tensor, w_pw: &Tensor, p: DwParams) -> Result<Tensor> {
    if !crate::fast(x) {
        return dw_pw(&x.relu()?, w_dw, w_pw, p);
    }
    apply(x, w_dw, w_pw, p, true)
}

/// The op on x (ReLU'd first with `relu`).
fn apply(x: &Tensor, w_dw: &Tensor, w_pw: &Tensor, p: DwParams, relu: bool) -> Result<Tensor> {
    let g = SepGeom::new(x.dims(), w_dw.dims(), w_pw.dims(), p)?;
    let op = Op::shaped(["dw_pw", "relu_dw_pw"][relu as usize], DwPw { g, relu }, |op, _| op.g.out_shape());
    x.contiguous()?.apply_op3(&w_dw.contiguous()?, &w_pw.contiguous()?, op)
}
