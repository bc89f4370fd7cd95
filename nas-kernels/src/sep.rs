//! Depthwise convolution followed by a 1×1 convolution, fused into one differentiable op:
//! the first half of every sep_conv/dil_conv stage. `relu_dw_pw` is the same with ReLU applied
//! to the input as the depthwise kernel reads it (every sep_conv/dil_conv stage starts with
//! ReLU), so ReLU(x) never becomes a tensor either.
//!
//! Shapes: x (B, C, H, W), w_dw (C, 1, K, K), w_pw (Co, C, 1, 1) → y (B, Co, Ho, Wo).
//! Kernels: `cpu::sep` (the depthwise output kept per task and recomputed in the backward),
//! `cuda::sep` (the depthwise kernel, then one batched GEMM for the 1×1 convolution).

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

use super::cpu;
use super::depthwise::{DwGeom, DwParams};

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
    p: DwParams,
    relu: bool,
}

impl CustomOp3 for DwPw {
    fn name(&self) -> &'static str {
        if self.relu {
            "relu_dw_pw"
        } else {
            "dw_pw"
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = SepGeom::new(l1.dims(), l2.dims(), l3.dims(), self.p)?;
        Ok((cpu::sep::forward_storage([(s1, l1), (s2, l2), (s3, l3)], &g, self.relu)?, g.out_shape()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let g = SepGeom::new(l1.dims(), l2.dims(), l3.dims(), self.p)?;
        Ok((super::cuda::sep::glue::forward([(s1, l1), (s2, l2), (s3, l3)], &g, self.relu)?, g.out_shape()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        wd: &Tensor,
        wp: &Tensor,
        _res: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = SepGeom::new(x.dims(), wd.dims(), wp.dims(), self.p)?;
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            return super::cuda::sep::glue::backward(x, wd, wp, gy, &g, self.relu);
        }
        cpu::sep::backward_tensors(x, wd, wp, gy, &g, self.relu)
    }
}

/// pw(dw(x)): depthwise convolution with `w_dw` then 1×1 convolution with `w_pw`; with
/// `relu`, pw(dw(ReLU(x))).
pub fn dw_pw(x: &Tensor, w_dw: &Tensor, w_pw: &Tensor, p: DwParams, relu: bool) -> Result<Tensor> {
    SepGeom::new(x.dims(), w_dw.dims(), w_pw.dims(), p)?;
    x.contiguous()?.apply_op3(&w_dw.contiguous()?, &w_pw.contiguous()?, DwPw { p, relu })
}
