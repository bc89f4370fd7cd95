//! 3×3 pooling with padding 1, as DARTS uses it: max pooling (padding never wins) and average
//! pooling with `count_include_pad=False` (each window averages only its in-image pixels).
//! Stride 1 keeps H×W; stride 2 gives ((H−1)/2+1)×((W−1)/2+1), like PyTorch. Max-pool
//! gradients go to the first maximal element of each window in row-major order, PyTorch's tie
//! rule (the forward records it). Also the valid k×k average pooling of the auxiliary head.
//!
//! Kernels: `cpu::pool` (phase layout, one long loop per tap), `cuda::pool` (one thread per
//! output forward, one per input for the gradients, which are gathers).

use std::sync::Mutex;

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

use super::cpu;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Avg,
}

/// The shapes of a 3×3 pooling with padding 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PoolGeom {
    pub b: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    pub stride: usize,
}

impl PoolGeom {
    pub fn new(dims: &[usize], stride: usize) -> Result<Self> {
        let &[b, c, h, w] = dims else { bail!("pool3x3: input must be (B, C, H, W), got {dims:?}") };
        if stride == 0 || h == 0 || w == 0 {
            bail!("pool3x3: cannot pool {dims:?} with stride {stride}")
        }
        Ok(Self { b, c, h, w, oh: (h - 1) / stride + 1, ow: (w - 1) / stride + 1, stride })
    }

    pub fn out_shape(&self) -> Shape {
        (self.b, self.c, self.oh, self.ow).into()
    }
}

/// What a max-pool forward records for its backward: the in-plane index of each output's
/// maximum (CPU), or its tap 0..9 in the 3×3 window (CUDA, one byte per output).
pub(crate) enum Argmax {
    Host(Vec<u32>),
    #[cfg(feature = "cuda")]
    Device(Tensor),
}

struct Pool3x3 {
    kind: PoolKind,
    stride: usize,
    argmax: Mutex<Option<Argmax>>,
}

impl Pool3x3 {
    fn keep(&self, a: Argmax) {
        *self.argmax.lock().unwrap_or_else(|e| e.into_inner()) = Some(a);
    }
}

impl CustomOp1 for Pool3x3 {
    fn name(&self) -> &'static str {
        match self.kind {
            PoolKind::Max => "max-pool3x3",
            PoolKind::Avg => "avg-pool3x3",
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = PoolGeom::new(l.dims(), self.stride)?;
        let (out, arg) = cpu::pool::forward_storage(s, l, self.kind, self.stride)?;
        self.keep(Argmax::Host(arg));
        Ok((out, g.out_shape()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &candle_core::CudaStorage, l: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        let g = PoolGeom::new(l.dims(), self.stride)?;
        let (out, arg) = super::cuda::pool::glue::forward(s, l, &g, self.kind)?;
        if let Some(arg) = arg {
            self.keep(Argmax::Device(arg));
        }
        Ok((out, g.out_shape()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, gy: &Tensor) -> Result<Option<Tensor>> {
        let arg = self.argmax.lock().unwrap_or_else(|e| e.into_inner());
        #[cfg(feature = "cuda")]
        let g = PoolGeom::new(x.dims(), self.stride)?;
        let gx = match (&*arg, self.kind) {
            #[cfg(feature = "cuda")]
            (Some(Argmax::Device(a)), PoolKind::Max) => super::cuda::pool::glue::backward(gy, &g, self.kind, Some(a))?,
            #[cfg(feature = "cuda")]
            (_, PoolKind::Avg) if gy.device().is_cuda() => super::cuda::pool::glue::backward(gy, &g, self.kind, None)?,
            (Some(Argmax::Host(a)), _) => cpu::pool::backward_tensor(x, gy, self.kind, self.stride, a)?,
            _ => bail!("{}: backward without its forward", self.name()),
        };
        Ok(Some(gx))
    }
}

/// 3×3 pooling with padding 1 and the given stride, differentiable.
pub fn pool3x3(x: &Tensor, kind: PoolKind, stride: usize) -> Result<Tensor> {
    PoolGeom::new(x.dims(), stride)?;
    x.contiguous()?.apply_op1(Pool3x3 { kind, stride, argmax: Mutex::new(None) })
}

/// k×k average pooling with stride s and no padding (the auxiliary head's 5×5/3): every
/// window lies inside the image, so each averages exactly k² values.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ValidGeom {
    pub planes: usize,
    pub dims: [usize; 4],
    pub k: usize,
    pub s: usize,
    pub oh: usize,
    pub ow: usize,
}

impl ValidGeom {
    pub fn new(dims: &[usize], k: usize, s: usize) -> Result<Self> {
        let &[b, c, h, w] = dims else { bail!("avg_pool_valid: input must be (B, C, H, W), got {dims:?}") };
        if k == 0 || s == 0 || h < k || w < k {
            bail!("avg_pool_valid: cannot pool {h}x{w} with a {k}x{k} window and stride {s}");
        }
        Ok(Self { planes: b * c, dims: [b, c, h, w], k, s, oh: (h - k) / s + 1, ow: (w - k) / s + 1 })
    }

    pub fn in_plane(&self) -> usize {
        self.dims[2] * self.dims[3]
    }

    pub fn out_plane(&self) -> usize {
        self.oh * self.ow
    }

    pub fn out_shape(&self) -> Shape {
        (self.dims[0], self.dims[1], self.oh, self.ow).into()
    }

    /// Calls `f(out_index, in_index)` for every (output, input) pair of a plane's windows.
    #[inline]
    pub fn for_each_tap(&self, mut f: impl FnMut(usize, usize)) {
        let w = self.dims[3];
        for oy in 0..self.oh {
            for ox in 0..self.ow {
                for ky in 0..self.k {
                    let row = (oy * self.s + ky) * w + ox * self.s;
                    for kx in 0..self.k {
                        f(oy * self.ow + ox, row + kx);
                    }
                }
            }
        }
    }
}

struct AvgPoolValid {
    k: usize,
    s: usize,
}

impl CustomOp1 for AvgPoolValid {
    fn name(&self) -> &'static str {
        "avg-pool-valid"
    }

    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = ValidGeom::new(l.dims(), self.k, self.s)?;
        Ok((cpu::pool::avg_valid_storage(st, l, &g)?, g.out_shape()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, st: &candle_core::CudaStorage, l: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        let g = ValidGeom::new(l.dims(), self.k, self.s)?;
        Ok((super::cuda::pool::glue::avg_valid_forward(st, l, &g)?, g.out_shape()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, gy: &Tensor) -> Result<Option<Tensor>> {
        let g = ValidGeom::new(x.dims(), self.k, self.s)?;
        #[cfg(feature = "cuda")]
        if gy.device().is_cuda() {
            return Ok(Some(super::cuda::pool::glue::avg_valid_backward(gy, &g)?));
        }
        Ok(Some(cpu::pool::avg_valid_backward_tensor(gy, &g)?))
    }
}

/// k×k average pooling with stride s and no padding, differentiable.
pub fn avg_pool_valid(x: &Tensor, k: usize, s: usize) -> Result<Tensor> {
    ValidGeom::new(x.dims(), k, s)?;
    x.contiguous()?.apply_op1(AvgPoolValid { k, s })
}
