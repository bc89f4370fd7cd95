//! What every custom op shares, so that an op is one `Kernels<N>` impl (made with its checked
//! shapes): its forward on each device and its backward, over arrays of its N inputs. `Op`
//! turns it into candle's `CustomOp1/2/3`; `with_float!` picks the element type of the data;
//! `forward!` and `grads!` hand a kernel the data of its inputs on either device and wrap what
//! it returns (`cpu::{forward, grads}`, with the `cuda` feature `cuda::device::{forward,
//! grads}`).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

/// A CPU input of a forward pass: the storage and its layout.
pub(crate) type CpuIn<'a> = (&'a CpuStorage, &'a Layout);
/// A CUDA input of a forward pass: the storage and its layout.
#[cfg(feature = "cuda")]
pub(crate) type CudaIn<'a> = (&'a candle_core::CudaStorage, &'a Layout);

/// The kernels of a differentiable op of N tensors, made with its checked shapes: the forward
/// on the CPU and on CUDA, each on its own device, and the gradients of the N inputs (None
/// where an input needs none).
pub(crate) trait Kernels<const N: usize>: Send + Sync + 'static {
    fn cpu_fwd(&self, s: [CpuIn<'_>; N]) -> Result<CpuStorage>;
    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: [CudaIn<'_>; N]) -> Result<candle_core::CudaStorage>;
    fn bwd(&self, args: [&Tensor; N], res: &Tensor, grad: &Tensor) -> Result<[Option<Tensor>; N]>;
}

/// A `Kernels` impl with its name and the shape of its output (from the op and its first
/// input's layout), as candle's custom op of its arity.
pub(crate) struct Op<K> {
    name: &'static str,
    kernels: K,
    out: fn(&K, &Layout) -> Shape,
}

impl<K> Op<K> {
    /// An op whose output has the shape of its first input.
    pub fn new(name: &'static str, kernels: K) -> Self {
        Self { name, kernels, out: |_, x| x.shape().clone() }
    }

    /// An op whose output's shape `out` gives (from the op's geometry).
    pub fn shaped(name: &'static str, kernels: K, out: fn(&K, &Layout) -> Shape) -> Self {
        Self { name, kernels, out }
    }
}

/// `CustomOpN` for `Op<K>` with K: `Kernels<N>`: the storages `$s` with layouts `$l`, the
/// arguments `$a` and their gradients `$g` (the gradient type `$grads`).
macro_rules! custom_op {
    ($op:ident, $n:literal, $grads:ty, $([$s:ident, $l:ident, $a:ident, $g:ident]),+) => {
        impl<K: Kernels<$n>> $op for Op<K> {
            fn name(&self) -> &'static str {
                self.name
            }

            fn cpu_fwd(&self, $($s: &CpuStorage, $l: &Layout),+) -> Result<(CpuStorage, Shape)> {
                let s = [$(($s, $l)),+];
                Ok((self.kernels.cpu_fwd(s)?, (self.out)(&self.kernels, s[0].1)))
            }

            #[cfg(feature = "cuda")]
            fn cuda_fwd(
                &self,
                $($s: &candle_core::CudaStorage, $l: &Layout),+
            ) -> Result<(candle_core::CudaStorage, Shape)> {
                let s = [$(($s, $l)),+];
                Ok((self.kernels.cuda_fwd(s)?, (self.out)(&self.kernels, s[0].1)))
            }

            fn bwd(&self, $($a: &Tensor,)+ res: &Tensor, grad: &Tensor) -> Result<$grads> {
                let [$($g),+] = self.kernels.bwd([$($a),+], res, grad)?;
                Ok(($($g),+))
            }
        }
    };
}

custom_op!(CustomOp1, 1, Option<Tensor>, [s1, l1, a1, g1]);
custom_op!(CustomOp2, 2, (Option<Tensor>, Option<Tensor>), [s1, l1, a1, g1], [s2, l2, a2, g2]);
custom_op!(
    CustomOp3,
    3,
    (Option<Tensor>, Option<Tensor>, Option<Tensor>),
    [s1, l1, a1, g1],
    [s2, l2, a2, g2],
    [s3, l3, a3, g3]
);

/// Evaluates `$body` with the type `$T` set to f32 or f64 as `$dtype` says (the kernels'
/// element types); any other dtype returns an error naming the op from the calling function.
macro_rules! with_float {
    ($op:expr, $dtype:expr, |$T:ident| $body:expr) => {
        match $dtype {
            candle_core::DType::F32 => {
                type $T = f32;
                $body
            }
            candle_core::DType::F64 => {
                type $T = f64;
                $body
            }
            d => candle_core::bail!("{}: unsupported dtype {:?} (f32 and f64 only)", $op, d),
        }
    };
}
pub(crate) use with_float;

/// A forward kernel on the data of the inputs `$s` (an array), `$T` their float type: on the
/// CPU the closure gets the inputs' slices and returns the output vector (`cpu::forward`), on
/// CUDA the backend and the inputs' device addresses and returns the output buffer
/// (`cuda::device::forward`). Evaluates to the output storage.
macro_rules! forward {
    (cpu: $op:expr, $s:expr, |$T:ident, [$($x:ident),*]| $body:expr) => {{
        let s = $s;
        $crate::op::with_float!($op, $crate::op::dtype(s[0]), |$T| {
            $crate::cpu::forward::<$T, _>($op, s, |[$($x),*]| $body)
        })
    }};
    (cuda: $op:expr, $s:expr, |$T:ident, $be:ident, [$($x:ident),*]| $body:expr) => {{
        let s = $s;
        $crate::op::with_float!($op, $crate::op::dtype(s[0]), |$T| {
            $crate::cuda::device::forward::<$T, _>(s, |$be, [$($x),*]| $body)
        })
    }};
}
pub(crate) use forward;

/// A backward kernel on the data of the tensors `$inputs` (an array), `$T` their float type,
/// as `forward!`; the closure returns an array of optional gradients, which become tensors
/// shaped like the tensors of `$like` (`cpu::grads`, `cuda::device::grads`).
macro_rules! grads {
    (cpu: $op:expr, $inputs:expr, $like:expr, |$T:ident, [$($x:ident),*]| $body:expr) => {{
        let inputs = $inputs;
        $crate::op::with_float!($op, inputs[0].dtype(), |$T| {
            $crate::cpu::grads::<$T, _, _>(inputs, $like, |[$($x),*]| $body)
        })
    }};
    (cuda: $op:expr, $inputs:expr, $like:expr, |$T:ident, $be:ident, [$($x:ident),*]| $body:expr) => {{
        let inputs = $inputs;
        $crate::op::with_float!($op, inputs[0].dtype(), |$T| {
            $crate::cuda::device::grads::<$T, _, _>(inputs, $like, |$be, [$($x),*]| $body)
        })
    }};
}
pub(crate) use grads;

/// The dtype of a forward input (CPU or CUDA).
pub(crate) fn dtype<S: candle_core::backend::BackendStorage>(s: (&S, &Layout)) -> candle_core::DType {
    s.0.dtype()
}

/// The output gradients as tensors shaped like `like` (None stays None).
pub(crate) fn shaped<B, const N: usize>(
    outs: [Option<B>; N],
    like: [&Tensor; N],
    mut tensor: impl FnMut(B, &Shape) -> Result<Tensor>,
) -> Result<[Option<Tensor>; N]> {
    let mut res: [Option<Tensor>; N] = std::array::from_fn(|_| None);
    for ((r, o), l) in res.iter_mut().zip(outs).zip(like) {
        *r = o.map(|b| tensor(b, l.shape())).transpose()?;
    }
    Ok(res)
}

/// The gradient of an input that passes the output gradient through unchanged (an added
/// accumulator), when it needs one.
pub(crate) fn passed(acc: &Tensor, grad: &Tensor) -> Option<Tensor> {
    acc.track_op().then(|| grad.clone())
}
