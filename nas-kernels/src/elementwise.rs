//! Fused elementwise ops of the mixed-op hot path, each one node in the autograd graph:
//! ReLU with a single-pass backward, `scale` (w·y) and `axpy` (acc + w·y) with w a
//! one-element tensor, the softmax weight of an op, whose gradient is the dot product of the
//! output gradient with y. The weighted sum of a mixed op is one `scale` and a chain of
//! `axpy`, one pass over memory per op output instead of two. `scale_samples` multiplies each
//! sample by its drop-path factor. Kernels: `cpu::elementwise`, `cuda::elementwise`.

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use super::cpu;

struct Relu;

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        Ok((cpu::elementwise::relu_storage(s, l)?, l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &candle_core::CudaStorage, l: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        Ok((super::cuda::elementwise::glue::relu(s, l)?, l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, gy: &Tensor) -> Result<Option<Tensor>> {
        #[cfg(feature = "cuda")]
        if y.device().is_cuda() {
            return Ok(Some(super::cuda::elementwise::glue::relu_backward(y, gy)?));
        }
        Ok(Some(cpu::elementwise::relu_backward_tensor(y, gy)?))
    }
}

/// max(x, 0).
pub fn relu(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Relu)
}

/// w · y.
struct Scale;

impl CustomOp2 for Scale {
    fn name(&self) -> &'static str {
        "scale"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        Ok((cpu::elementwise::scale_storage(s1, l1, s2, l2)?, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        Ok((super::cuda::elementwise::glue::axpy(None, (s1, l1), (s2, l2))?, l1.shape().clone()))
    }

    fn bwd(&self, y: &Tensor, w: &Tensor, _res: &Tensor, gy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        #[cfg(feature = "cuda")]
        if y.device().is_cuda() {
            return super::cuda::elementwise::glue::weighted_backward(y, w, gy);
        }
        cpu::elementwise::scale_backward_tensors(y, w, gy)
    }
}

/// acc + w · y.
struct Axpy;

impl CustomOp3 for Axpy {
    fn name(&self) -> &'static str {
        "axpy"
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
        Ok((cpu::elementwise::axpy_storage([(s1, l1), (s2, l2), (s3, l3)])?, l1.shape().clone()))
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
        Ok((super::cuda::elementwise::glue::axpy(Some((s1, l1)), (s2, l2), (s3, l3))?, l1.shape().clone()))
    }

    fn bwd(
        &self,
        acc: &Tensor,
        y: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        #[cfg(feature = "cuda")]
        if y.device().is_cuda() {
            let (g_y, g_w) = super::cuda::elementwise::glue::weighted_backward(y, w, gy)?;
            return Ok((acc.track_op().then(|| gy.clone()), g_y, g_w));
        }
        cpu::elementwise::axpy_backward_tensors(acc, y, w, gy)
    }
}

fn check_weight(w: &Tensor, op: &str) -> Result<()> {
    if w.elem_count() != 1 {
        bail!("{op}: the weight must have exactly one element, got {}", w.elem_count());
    }
    Ok(())
}

/// w · y with `w` a one-element tensor.
pub fn scale(y: &Tensor, w: &Tensor) -> Result<Tensor> {
    check_weight(w, "scale")?;
    y.contiguous()?.apply_op2(&w.contiguous()?, Scale)
}

/// acc + w · y with `w` a one-element tensor.
pub fn axpy(acc: &Tensor, y: &Tensor, w: &Tensor) -> Result<Tensor> {
    if acc.shape() != y.shape() {
        bail!("axpy: shapes {:?} and {:?} differ", acc.dims(), y.dims());
    }
    check_weight(w, "axpy")?;
    acc.contiguous()?.apply_op3(&y.contiguous()?, &w.contiguous()?, Axpy)
}

/// x[b, …] · m[b]: a per-sample factor (drop path), one pass; no gradient for m.
struct ScaleSamples;

impl CustomOp2 for ScaleSamples {
    fn name(&self) -> &'static str {
        "scale_samples"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        Ok((cpu::elementwise::scale_samples_storage(s1, l1, s2, l2)?, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        Ok((super::cuda::elementwise::glue::scale_samples(s1, l1, s2, l2)?, l1.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, m: &Tensor, _res: &Tensor, gy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(scale_samples(gy, m)?), None))
    }
}

/// x (B, …) with sample b multiplied by m[b]; m (B,) carries no gradient.
pub fn scale_samples(x: &Tensor, m: &Tensor) -> Result<Tensor> {
    let b = x.dims().first().copied().unwrap_or(0);
    if b != m.elem_count() || b == 0 {
        bail!("scale_samples: {} factors for a batch of {b}", m.elem_count());
    }
    x.contiguous()?.apply_op2(&m.detach().to_dtype(x.dtype())?.contiguous()?, ScaleSamples)
}
