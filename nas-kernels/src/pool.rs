//! 3×3 pooling with padding 1, as DARTS uses it: max pooling (padding never wins) and average
//! pooling with `count_include_pad=False` (each window averages only its in-image pixels).
//! Stride 1 keeps H×W; stride 2 gives ((H−1)/2+1)×((W−1)/2+1), like PyTorch. Max pooling
//! follows PyTorch's max_pool2d scan: a window with a NaN gives NaN, and the gradient goes to
//! the first maximal element of each window in row-major order, or to its last NaN, or, for a
//! window of −∞, to its first in-image pixel (the forward records it). Also the valid k×k
//! average pooling of the auxiliary head.
//!
//! Kernels: `cpu::pool` (phase layout, one long loop per tap), `cuda::pool` (one thread per
//! output forward, one per input for the gradients, which are gathers).

use std::sync::Mutex;

use candle_core::{bail, CpuStorage, Result, Shape, Tensor};

use crate::cpu::pool as kernels;
#[cfg(feature = "cuda")]
use crate::cuda::pool as launch;
#[cfg(feature = "cuda")]
use crate::op::CudaIn;
use crate::op::{forward, grads, CpuIn, Kernels, Op};
#[cfg(feature = "cuda")]
use candle_core::CudaStorage;

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
    g: PoolGeom,
    kind: PoolKind,
    argmax: Mutex<Option<Argmax>>,
}

impl Pool3x3 {
    fn keep(&self, a: Argmax) {
        *self.argmax.lock().unwrap_or_else(|e| e.into_inner()) = Some(a);
    }

    /// The CPU kernels' plane layout.
    fn cpu_geom(&self) -> Result<kernels::Geom> {
        let g = &self.g;
        kernels::Geom::new(&[g.b, g.c, g.h, g.w], g.stride)
    }
}

impl Kernels<1> for Pool3x3 {
    fn cpu_fwd(&self, s: [CpuIn<'_>; 1]) -> Result<CpuStorage> {
        let cg = self.cpu_geom()?;
        forward!(cpu: "pool3x3", s, |T, [x]| {
            let (y, arg) = kernels::forward::<T>(x, &cg, self.kind);
            self.keep(Argmax::Host(arg));
            Ok(y)
        })
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: [CudaIn<'_>; 1]) -> Result<CudaStorage> {
        forward!(cuda: "pool3x3", s, |T, be, [x]| {
            let (y, taps) = launch::forward::<_, T>(be, x, &self.g, self.kind)?;
            if let Some(t) = taps {
                self.keep(Argmax::Device(be.byte_tensor(t, self.g.out_shape())?));
            }
            Ok(y)
        })
    }

    fn bwd(&self, [x]: [&Tensor; 1], _: &Tensor, gy: &Tensor) -> Result<[Option<Tensor>; 1]> {
        let arg = self.argmax.lock().unwrap_or_else(|e| e.into_inner());
        match (&*arg, self.kind) {
            #[cfg(feature = "cuda")]
            (Some(Argmax::Device(taps)), PoolKind::Max) => {
                grads!(cuda: "pool3x3", [gy, taps], [x], |T, be, [gy, t]| {
                    Ok([Some(launch::backward::<_, T>(be, gy, Some(t), &self.g, PoolKind::Max)?)])
                })
            }
            #[cfg(feature = "cuda")]
            (_, PoolKind::Avg) if gy.device().is_cuda() => grads!(cuda: "pool3x3", [gy], [x], |T, be, [gy]| {
                Ok([Some(launch::backward::<_, T>(be, gy, None, &self.g, PoolKind::Avg)?)])
            }),
            (Some(Argmax::Host(arg)), kind) => {
                let cg = self.cpu_geom()?;
                grads!(cpu: "pool3x3", [gy], [x], |T, [gy]| Ok([Some(kernels::backward::<T>(gy, &cg, kind, arg)?)]))
            }
            _ => bail!("pool3x3: backward without its forward"),
        }
    }
}

/// 3×3 max or average pooling (padding 1, average excludes padding) with the given stride,
/// differentiable.
pub fn pool3x3(x: &Tensor, kind: PoolKind, stride: usize) -> Result<Tensor> {
    if !crate::fast(x) {
        return crate::composed::pool3x3(x, kind, stride);
    }
    let g = PoolGeom::new(x.dims(), stride)?;
    let name = match kind {
        PoolKind::Max => "max-pool3x3",
        PoolKind::Avg => "avg-pool3x3",
    };
    x.contiguous()?.apply_op1(Op::shaped(name, Pool3x3 { g, kind, argmax: Mutex::new(None) }, |op, _| op.g.out_shape()))
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

    pub fn out_shape(&self) -> Shape {
        (self.dims[0], self.dims[1], self.oh, self.ow).into()
    }
}

struct AvgPoolValid(ValidGeom);

impl Kernels<1> for AvgPoolValid {
    fn cpu_fwd(&self, s: [CpuIn<'_>; 1]) -> Result<CpuStorage> {
        forward!(cpu: "avg_pool_valid", s, |T, [x]| Ok(kernels::avg_valid_forward::<T>(x, &self.0)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: [CudaIn<'_>; 1]) -> Result<CudaStorage> {
        forward!(cuda: "avg_pool_valid", s, |T, be, [x]| launch::avg_valid_forward::<_, T>(be, x, &self.0))
    }

    fn bwd(&self, [x]: [&Tensor; 1], _: &Tensor, gy: &Tensor) -> Result<[Option<Tensor>; 1]> {
        #[cfg(feature = "cuda")]
        if gy.device().is_cuda() {
            return grads!(cuda: "avg_pool_valid", [gy], [x], |T, be, [gy]| {
                Ok([Some(launch::avg_valid_backward::<_, T>(be, gy, &self.0)?)])
            });
        }
        grads!(cpu: "avg_pool_valid", [gy], [x], |T, [gy]| Ok([Some(kernels::avg_valid_backward::<T>(gy, &self.0))]))
    }
}

/// k×k average pooling with stride s and no padding, differentiable.
pub fn avg_pool_valid(x: &Tensor, k: usize, s: usize) -> Result<Tensor> {
    if !crate::fast(x) {
        return crate::composed::avg_pool_valid(x, k, s);
    }
    let g = ValidGeom::new(x.dims(), k, s)?;
    x.contiguous()?.apply_op1(Op::shaped("avg-pool-valid", AvgPoolValid(g), |op, _| op.0.out_shape()))
}
