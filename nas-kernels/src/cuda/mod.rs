//! The CUDA kernels of the custom ops: the `.cu` sources in this folder, their launch
//! geometry (`launch`), and for every op the sequence of launches it makes (the op modules
//! here), written once against a `Backend`: the GPU (`device`, with the `cuda` feature), or
//! the kernels' host build (`host`), which runs the same kernel code on the CPU over the same
//! grids — the CPU tests check the CUDA arithmetic, indexing and launch sequences against the
//! CPU kernels through it.
//!
//! Kernels take their arguments as cuLaunchKernel does, an array of pointers to each value;
//! `Args` builds it. Every kernel has an f32 and an f64 entry point (`name_f32`, `name_f64`).

pub(crate) mod batch_norm;
pub(crate) mod depthwise;
#[cfg(feature = "cuda")]
pub(crate) mod device;
pub(crate) mod elementwise;
pub mod host;
pub mod launch;
pub mod optim;
pub(crate) mod partial;
pub(crate) mod pointwise;
pub(crate) mod pool;
pub(crate) mod sep;
pub(crate) mod stage;

use candle_core::{DType, Result};

use launch::Launch;

/// The kernel sources, one PTX module each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Elementwise,
    Depthwise,
    Pool,
    Pointwise,
    Partial,
    BatchNorm,
    Optim,
}

impl Source {
    pub const ALL: [Source; 7] = [
        Source::Elementwise,
        Source::Depthwise,
        Source::Pool,
        Source::Pointwise,
        Source::Partial,
        Source::BatchNorm,
        Source::Optim,
    ];

    /// The file name without `.cu`.
    pub fn file(self) -> &'static str {
        match self {
            Source::Elementwise => "elementwise",
            Source::Depthwise => "depthwise",
            Source::Pool => "pool",
            Source::Pointwise => "pointwise",
            Source::Partial => "partial",
            Source::BatchNorm => "batch_norm",
            Source::Optim => "optim",
        }
    }
}

/// Calls `$m!` with the table of kernels: variant, base name, source.
macro_rules! with_kernels {
    ($m:ident) => {
        $m! {
            ReluFwd relu_fwd Elementwise,
            ReluBwd relu_bwd Elementwise,
            Axpy axpy Elementwise,
            DotPartial dot_partial Elementwise,
            SumPartials sum_partials Elementwise,
            ScaleSamples scale_samples Elementwise,
            SumRows sum_rows Elementwise,
            DwFwd dw_fwd Depthwise,
            DwBwdX dw_bwd_x Depthwise,
            DwBwdWPartial dw_bwd_w_partial Depthwise,
            DwBwdWFinish dw_bwd_w_finish Depthwise,
            PoolMaxFwd pool_max_fwd Pool,
            PoolAvgFwd pool_avg_fwd Pool,
            PoolBwd pool_bwd Pool,
            AvgValidFwd avg_valid_fwd Pool,
            AvgValidBwd avg_valid_bwd Pool,
            PwGather pw_gather Pointwise,
            PwScatter pw_scatter Pointwise,
            PcFwd pc_fwd Partial,
            PcBwdY pc_bwd_y Partial,
            PcBwdX pc_bwd_x Partial,
            BnPartial bn_partial BatchNorm,
            BnFwdFinish bn_fwd_finish BatchNorm,
            BnFwdApply bn_fwd_apply BatchNorm,
            BnBwdFinish bn_bwd_finish BatchNorm,
            BnBwdApply bn_bwd_apply BatchNorm,
            BnSumsOut bn_sums_out BatchNorm,
            ChanAffine chan_affine BatchNorm,
            MtSumsq mt_sumsq Optim,
            MtClipFactor mt_clip_factor Optim,
            MtSgd mt_sgd Optim,
        }
    };
}
pub(crate) use with_kernels;

macro_rules! define_kernels {
    ($($variant:ident $name:ident $source:ident,)*) => {
        /// A kernel of the `.cu` sources (each with an f32 and an f64 entry point).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Kernel {
            $($variant,)*
        }

        impl Kernel {
            pub const ALL: &'static [Kernel] = &[$(Kernel::$variant,)*];

            pub fn name(self) -> &'static str {
                match self {
                    $(Kernel::$variant => stringify!($name),)*
                }
            }

            pub fn source(self) -> Source {
                match self {
                    $(Kernel::$variant => Source::$source,)*
                }
            }
        }
    };
}
with_kernels!(define_kernels);

impl Kernel {
    /// The entry point for `dtype`: `name_f32` or `name_f64`.
    pub fn entry(self, dtype: DType) -> Result<String> {
        match dtype {
            DType::F32 => Ok(format!("{}_f32", self.name())),
            DType::F64 => Ok(format!("{}_f64", self.name())),
            d => candle_core::bail!("{}: no CUDA kernel for {d:?}", self.name()),
        }
    }
}

/// Element types of kernel buffers.
pub trait Elem: Copy + Send + Sync + 'static + DeviceElem {
    /// What a fresh host buffer is filled with, so that an element no kernel wrote stands out.
    const POISON: Self;
    const ZERO: Self;
}

impl Elem for f32 {
    const POISON: Self = f32::NAN;
    const ZERO: Self = 0.0;
}

impl Elem for f64 {
    const POISON: Self = f64::NAN;
    const ZERO: Self = 0.0;
}

impl Elem for u8 {
    const POISON: Self = 0xee;
    const ZERO: Self = 0;
}

/// What device buffers of an element type need (nothing without the `cuda` feature).
#[cfg(feature = "cuda")]
pub trait DeviceElem:
    candle_core::cuda_backend::CudaDType
    + candle_core::cuda_backend::cudarc::driver::DeviceRepr
    + candle_core::cuda_backend::cudarc::driver::ValidAsZeroBits
{
}
#[cfg(feature = "cuda")]
impl<T> DeviceElem for T where
    T: candle_core::cuda_backend::CudaDType
        + candle_core::cuda_backend::cudarc::driver::DeviceRepr
        + candle_core::cuda_backend::cudarc::driver::ValidAsZeroBits
{
}
/// What device buffers of an element type need (nothing without the `cuda` feature).
#[cfg(not(feature = "cuda"))]
pub trait DeviceElem {}
#[cfg(not(feature = "cuda"))]
impl<T> DeviceElem for T {}

/// Argument structs passed by value: `#[repr(C)]` with 64-bit fields only.
///
/// # Safety
/// The implementing type is `#[repr(C)]`, every field is an `i64`, and it matches the C struct
/// of the same name in common.cuh.
pub unsafe trait KernelStruct: Copy {
    fn words(&self) -> &[i64] {
        // SAFETY: by the trait's contract the value is a sequence of i64 fields without padding.
        unsafe { std::slice::from_raw_parts(self as *const Self as *const i64, std::mem::size_of::<Self>() / 8) }
    }
}

// SAFETY: each is #[repr(C)] with i64 fields only, in common.cuh's order (see launch.rs).
unsafe impl KernelStruct for launch::DwArgs {}
unsafe impl KernelStruct for launch::PoolArgs {}
unsafe impl KernelStruct for launch::ValidArgs {}
unsafe impl KernelStruct for launch::PwArgs {}
unsafe impl KernelStruct for launch::BnArgs {}
unsafe impl KernelStruct for launch::PcArgs {}
unsafe impl KernelStruct for launch::MtList {}

/// A kernel's arguments in order, each in its own 8-byte-aligned slot (a scalar narrower than
/// 8 bytes sits in the low bytes, which is where a little-endian reader of its size looks).
#[derive(Default)]
pub struct Args(Vec<Box<[u64]>>);

impl Args {
    pub fn new() -> Self {
        Self::default()
    }

    /// A buffer address (0 for a null pointer).
    pub fn ptr(mut self, addr: u64) -> Self {
        self.0.push(Box::new([addr]));
        self
    }

    /// An optional buffer address (null when None).
    pub fn opt(self, addr: Option<u64>) -> Self {
        self.ptr(addr.unwrap_or(0))
    }

    pub fn i64(mut self, v: i64) -> Self {
        self.0.push(Box::new([v as u64]));
        self
    }

    pub fn i32(mut self, v: i32) -> Self {
        self.0.push(Box::new([v as u32 as u64]));
        self
    }

    pub fn flag(self, v: bool) -> Self {
        self.i32(v as i32)
    }

    pub fn f64(mut self, v: f64) -> Self {
        self.0.push(Box::new([v.to_bits()]));
        self
    }

    pub fn pod<S: KernelStruct>(mut self, s: &S) -> Self {
        self.0.push(s.words().iter().map(|&w| w as u64).collect());
        self
    }

    /// The pointer array a launch takes; valid while `self` lives.
    pub fn pointers(&mut self) -> Vec<*mut std::ffi::c_void> {
        self.0.iter_mut().map(|slot| slot.as_mut_ptr().cast()).collect()
    }
}

/// One cuBLAS-style strided batched product, column-major:
/// C_i = op(A_i)·op(B_i) for i in 0..batch, A_i at a + i·stride_a (elements), op(X) = Xᵀ when
/// its flag is set; C is m×n, op(A) m×k, op(B) k×n.
#[derive(Debug, Clone, Copy)]
pub struct Gemm {
    pub trans_a: bool,
    pub trans_b: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: u64,
    pub lda: usize,
    pub stride_a: usize,
    pub b: u64,
    pub ldb: usize,
    pub stride_b: usize,
    pub c: u64,
    pub ldc: usize,
    pub stride_c: usize,
    pub batch: usize,
}

impl Gemm {
    /// Y_b = W·X_b for row-major W (rows×inner) shared by the batch and X_b (inner×cols),
    /// Y_b (rows×cols) row-major, items `x_stride` and `y_stride` elements apart.
    pub fn shared_left(w: u64, x: u64, y: u64, (rows, inner, cols): (usize, usize, usize), batch: usize) -> Self {
        // Row-major M is column-major Mᵀ: Y_bᵀ (cols×rows) = X_bᵀ (cols×inner) · Wᵀ (inner×rows).
        Self {
            trans_a: false,
            trans_b: false,
            m: cols,
            n: rows,
            k: inner,
            a: x,
            lda: cols,
            stride_a: inner * cols,
            b: w,
            ldb: inner,
            stride_b: 0,
            c: y,
            ldc: cols,
            stride_c: rows * cols,
            batch,
        }
    }

    /// X_b = Wᵀ·Y_b for row-major W (rows×inner) and Y_b (rows×cols): the input gradient of
    /// `shared_left`.
    pub fn shared_left_t(w: u64, y: u64, x: u64, (rows, inner, cols): (usize, usize, usize), batch: usize) -> Self {
        // X_bᵀ (cols×inner) = Y_bᵀ (cols×rows) · W (rows×inner); W row-major is column-major
        // (inner×rows), transposed to (rows×inner).
        Self {
            trans_a: false,
            trans_b: true,
            m: cols,
            n: inner,
            k: rows,
            a: y,
            lda: cols,
            stride_a: rows * cols,
            b: w,
            ldb: inner,
            stride_b: 0,
            c: x,
            ldc: cols,
            stride_c: inner * cols,
            batch,
        }
    }

    /// G_b = Y_b·X_bᵀ (rows×inner, row-major) for Y_b (rows×cols) and X_b (inner×cols): the
    /// per-item weight gradient of `shared_left`, summed over the batch afterwards.
    pub fn per_item_outer(y: u64, x: u64, g: u64, (rows, inner, cols): (usize, usize, usize), batch: usize) -> Self {
        // G_bᵀ (inner×rows) = X_b (inner×cols) · Y_bᵀ (cols×rows): X_b row-major is
        // column-major (cols×inner), transposed; Y_b row-major is column-major (cols×rows).
        Self {
            trans_a: true,
            trans_b: false,
            m: inner,
            n: rows,
            k: cols,
            a: x,
            lda: cols,
            stride_a: inner * cols,
            b: y,
            ldb: cols,
            stride_b: rows * cols,
            c: g,
            ldc: inner,
            stride_c: rows * inner,
            batch,
        }
    }
}

/// Where the kernels run: allocation, kernel launches and batched products.
pub trait Backend {
    type Buf<T: Elem>;
    /// A buffer of `n` elements with unspecified contents (every kernel output is written in
    /// full).
    fn alloc<T: Elem>(&self, n: usize) -> Result<Self::Buf<T>>;
    fn zeros<T: Elem>(&self, n: usize) -> Result<Self::Buf<T>>;
    /// The address kernels see.
    fn addr<T: Elem>(&self, b: &Self::Buf<T>) -> u64;
    fn launch(&self, k: Kernel, dtype: DType, l: Launch, args: Args) -> Result<()>;
    fn gemm<T: crate::cpu::Float>(&self, g: &Gemm) -> Result<()>;
}

/// A buffer of backend B.
pub(crate) type Buf<B, T> = <B as Backend>::Buf<T>;
/// Two optional gradients.
pub(crate) type Grads2<B, T> = (Option<Buf<B, T>>, Option<Buf<B, T>>);

/// Launches `k` over a grid-stride loop of `n` elements (nothing when n is 0).
pub(crate) fn launch_n<B: Backend>(be: &B, k: Kernel, dtype: DType, n: usize, args: Args) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    be.launch(k, dtype, launch::elementwise(n), args)
}
