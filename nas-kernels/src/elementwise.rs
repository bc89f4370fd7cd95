//! Fused elementwise ops of the mixed-op hot path, each one node in the autograd graph:
//! ReLU with a single-pass backward, `scale` (w·y) and `axpy` (acc + w·y) with w a
//! one-element tensor, the softmax weight of an op, whose gradient is the dot product of the
//! output gradient with y. The weighted sum of a mixed op is one `scale` and a chain of
//! `axpy`, one pass over memory per op output instead of two. `scale_samples` multiplies each
//! sample by its drop-path factor. Kernels: `cpu::elementwise`, `cuda::elementwise`.

use candle_core::{bail, CpuStorage, Result, Tensor};

use crate::cpu::elementwise as kernels;
#[cfg(feature = "cuda")]
use crate::cuda::elementwise as launch;
use crate::fast;
#[cfg(feature = "cuda")]
use crate::op::CudaIn;
use crate::op::{forward, grads, passed, CpuIn, Kernels, Op};
#[cfg(feature = "cuda")]
use candle_core::CudaStorage;

struct Relu;

impl Kernels<1> for Relu {
    fn cpu_fwd(&self, s: [CpuIn<'_>; 1]) -> Result<CpuStorage> {
        forward!(cpu: "relu", s, |T, [x]| Ok(kernels::relu::<T>(x)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: [CudaIn<'_>; 1]) -> Result<CudaStorage> {
        let n = s[0].1.shape().elem_count();
        forward!(cuda: "relu", s, |T, be, [x]| launch::relu::<_, T>(be, x, n))
    }

    fn bwd(&self, _: [&Tensor; 1], y: &Tensor, gy: &Tensor) -> Result<[Option<Tensor>; 1]> {
        #[cfg(feature = "cuda")]
        if y.device().is_cuda() {
            let n = y.elem_count();
            return grads!(cuda: "relu", [y, gy], [y], |T, be, [y, gy]| {
                Ok([Some(launch::relu_backward::<_, T>(be, y, gy, n)?)])
            });
        }
        grads!(cpu: "relu", [y, gy], [y], |T, [y, gy]| Ok([Some(kernels::relu_backward::<T>(y, gy))]))
    }
}

/// ReLU as PyTorch's: 0 where x < 0, x otherwise, so a NaN stays NaN (and stops a diverging
/// run at the step where it appears instead of being cleared).
pub fn relu(x: &Tensor) -> Result<Tensor> {
    if !fast(x) {
        return x.relu();
    }
    x.contiguous()?.apply_op1(Op::new("relu", Relu))
}

/// The gradients of y and of the one-element weight w of w·y.
fn weighted_backward(y: &Tensor, w: &Tensor, gy: &Tensor) -> Result<[Option<Tensor>; 2]> {
    let want = [y.track_op(), w.track_op()];
    #[cfg(feature = "cuda")]
    if y.device().is_cuda() {
        let n = y.elem_count();
        return grads!(cuda: "axpy", [y, w, gy], [y, w], |T, be, [y, w, g]| {
            launch::weighted_backward::<_, T>(be, [y, w, g], n, want)
        });
    }
    grads!(cpu: "axpy", [y, w, gy], [y, w], |T, [y, w, g]| kernels::weighted_backward::<T>(y, w, g, want))
}

/// w · y.
struct Scale;

impl Kernels<2> for Scale {
    fn cpu_fwd(&self, s: [CpuIn<'_>; 2]) -> Result<CpuStorage> {
        forward!(cpu: "scale", s, |T, [y, w]| Ok(kernels::scaled::<T>(y, kernels::scalar(w, "scale")?)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: [CudaIn<'_>; 2]) -> Result<CudaStorage> {
        let n = s[0].1.shape().elem_count();
        forward!(cuda: "scale", s, |T, be, [y, w]| launch::axpy::<_, T>(be, None, y, w, n))
    }

    fn bwd(&self, [y, w]: [&Tensor; 2], _: &Tensor, gy: &Tensor) -> Result<[Option<Tensor>; 2]> {
        weighted_backward(y, w, gy)
    }
}

/// acc + w · y.
struct Axpy;

impl Kernels<3> for Axpy {
    fn cpu_fwd(&self, s: [CpuIn<'_>; 3]) -> Result<CpuStorage> {
        forward!(cpu: "axpy", s, |T, [acc, y, w]| kernels::axpy::<T>(acc, y, w))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: [CudaIn<'_>; 3]) -> Result<CudaStorage> {
        let n = s[0].1.shape().elem_count();
        forward!(cuda: "axpy", s, |T, be, [acc, y, w]| launch::axpy::<_, T>(be, Some(acc), y, w, n))
    }

    fn bwd(&self, [acc, y, w]: [&Tensor; 3], _: &Tensor, gy: &Tensor) -> Result<[Option<Tensor>; 3]> {
        let [g_y, g_w] = weighted_backward(y, w, gy)?;
        Ok([passed(acc, gy), g_y, g_w])
    }
}

fn check_weight(w: &Tensor, op: &str) -> Result<()> {
    if w.elem_count() != 1 {
        bail!("{op}: the weight must have exactly one element, got {}", w.elem_count());
    }
    Ok(())
}

/// w · y, `w` a one-element tensor (a mixed-op weight).
pub fn scale(y: &Tensor, w: &Tensor) -> Result<Tensor> {
    if !fast(y) {
        return y.broadcast_mul(w);
    }
    check_weight(w, "scale")?;
    y.contiguous()?.apply_op2(&w.contiguous()?, Op::new("scale", Scale))
}

/// acc + w · y, `w` a one-element tensor.
pub fn axpy(acc: &Tensor, y: &Tensor, w: &Tensor) -> Result<Tensor> {
    if !fast(y) {
        return acc + y.broadcast_mul(w)?;
    }
    if acc.shape() != y.shape() {
        bail!("axpy: shapes {:?} and {:?} differ", acc.dims(), y.dims());
    }
    check_weight(w, "axpy")?;
    acc.contiguous()?.apply_op3(&y.contiguous()?, &w.contiguous()?, Op::new("axpy", Axpy))
}

/// x[b, …] · m[b]: a per-sample factor (drop path), one pass; no gradient for m.
struct ScaleSamples;

impl Kernels<2> for ScaleSamples {
    fn cpu_fwd(&self, s: [CpuIn<'_>; 2]) -> Result<CpuStorage> {
        forward!(cpu: "scale_samples", s, |T, [x, m]| kernels::scale_samples::<T>(x, m))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: [CudaIn<'_>; 2]) -> Result<CudaStorage> {
        let (n, b) = (s[0].1.shape().elem_count(), s[1].1.shape().elem_count());
        forward!(cuda: "scale_samples", s, |T, be, [x, m]| launch::scale_samples::<_, T>(be, x, m, n, b))
    }

    fn bwd(&self, [_, m]: [&Tensor; 2], _: &Tensor, gy: &Tensor) -> Result<[Option<Tensor>; 2]> {
        Ok([Some(scale_samples(gy, m)?), None])
    }
}

/// x (B, …) with sample b multiplied by m[b] (drop path); m (B,) carries no gradient.
pub fn scale_samples(x: &Tensor, m: &Tensor) -> Result<Tensor> {
    if !fast(x) {
        let mut shape = vec![1usize; x.rank()];
        shape[0] = m.elem_count();
        return x.broadcast_mul(&m.detach().to_dtype(x.dtype())?.reshape(shape)?);
    }
    let b = x.dims().first().copied().unwrap_or(0);
    if b != m.elem_count() || b == 0 {
        bail!("scale_samples: {} factors for a batch of {b}", m.elem_count());
    }
    x.contiguous()?.apply_op2(&m.detach().to_dtype(x.dtype())?.contiguous()?, Op::new("scale_samples", ScaleSamples))
}
