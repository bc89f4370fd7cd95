//! The GPU as a `Backend`: buffers are candle's CUDA slices, kernels come from the fat
//! binaries build.rs compiles from the `.cu` sources (sm_90 code with a PTX fallback, loaded
//! once per device, functions cached), the
//! batched products are cuBLAS strided-batched GEMMs, and everything runs on the device's
//! stream: nothing is copied to the host.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::cublas::{result as cublas, sys as cublas_sys};
use candle_core::cuda_backend::cudarc::driver::{self, CudaFunction, CudaModule, CudaSlice, DevicePtr};
use candle_core::cuda_backend::cudarc::nvrtc::Ptx;
use candle_core::cuda_backend::{DeviceId, WrapErr};
use candle_core::op::BackpropOp;
use candle_core::{bail, CudaDevice, CudaStorage, DType, Layout, Result, Shape, Storage, Tensor};

use super::launch::Launch;
use super::{Args, Backend, Elem, Gemm, Kernel, Source};
use crate::cpu::Float;

/// The fat binary of a source: sm_90 code and compute_90 PTX (build.rs).
fn fatbin(source: Source) -> &'static [u8] {
    match source {
        Source::Elementwise => include_bytes!(concat!(env!("OUT_DIR"), "/elementwise.fatbin")),
        Source::Depthwise => include_bytes!(concat!(env!("OUT_DIR"), "/depthwise.fatbin")),
        Source::Pool => include_bytes!(concat!(env!("OUT_DIR"), "/pool.fatbin")),
        Source::Pointwise => include_bytes!(concat!(env!("OUT_DIR"), "/pointwise.fatbin")),
        Source::Partial => include_bytes!(concat!(env!("OUT_DIR"), "/partial.fatbin")),
        Source::BatchNorm => include_bytes!(concat!(env!("OUT_DIR"), "/batch_norm.fatbin")),
        Source::Optim => include_bytes!(concat!(env!("OUT_DIR"), "/optim.fatbin")),
    }
}

type FunctionKey = (DeviceId, Kernel, DType);
type Modules = HashMap<(DeviceId, Source), Arc<CudaModule>>;

/// The loaded kernel functions, one module per source and device: a function is looked up in
/// its module once, not on every launch.
fn function(dev: &CudaDevice, k: Kernel, dtype: DType) -> Result<CudaFunction> {
    static FUNCTIONS: OnceLock<Mutex<HashMap<FunctionKey, CudaFunction>>> = OnceLock::new();
    static MODULES: OnceLock<Mutex<Modules>> = OnceLock::new();
    let functions = FUNCTIONS.get_or_init(Default::default);
    let key = (dev.id(), k, dtype);
    if let Some(f) = functions.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(f.clone());
    }
    let source = k.source();
    let module = {
        let mut modules = MODULES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
        match modules.get(&(dev.id(), source)) {
            Some(m) => m.clone(),
            None => {
                let ctx = dev.cuda_stream().context().clone();
                let m = ctx.load_module(Ptx::from_binary(fatbin(source).to_vec())).w()?;
                modules.insert((dev.id(), source), m.clone());
                m
            }
        }
    };
    let f = module.load_function(&k.entry(dtype)?).w()?;
    functions.lock().unwrap_or_else(|e| e.into_inner()).insert(key, f.clone());
    Ok(f)
}

/// The CUDA backend of one device.
pub(crate) struct Cuda {
    dev: CudaDevice,
}

impl Cuda {
    pub fn new(dev: &CudaDevice) -> Self {
        Self { dev: dev.clone() }
    }

    pub fn of(s: &CudaStorage) -> Self {
        Self::new(s.device())
    }

    /// A buffer as candle storage.
    pub fn storage<T: Float>(&self, b: CudaSlice<T>) -> CudaStorage {
        CudaStorage::wrap_cuda_slice(b, self.dev.clone())
    }

    /// A buffer as a tensor of `shape` (contiguous, no gradient history).
    pub fn tensor<T: Float>(&self, b: CudaSlice<T>, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if b.len() < shape.elem_count() {
            bail!("kernel output of {} elements for shape {shape:?}", b.len());
        }
        Ok(Tensor::from_storage(Storage::Cuda(self.storage(b)), shape, BackpropOp::none(), false))
    }

    /// A byte buffer as a u8 tensor.
    pub fn byte_tensor(&self, b: CudaSlice<u8>, shape: impl Into<Shape>) -> Result<Tensor> {
        let storage = CudaStorage::wrap_cuda_slice(b, self.dev.clone());
        Ok(Tensor::from_storage(Storage::Cuda(storage), shape, BackpropOp::none(), false))
    }
}

/// The device address of the contiguous data of `s` under `l`.
pub(crate) fn addr<T: Elem>(s: &CudaStorage, l: &Layout) -> Result<u64> {
    let Some((start, _)) = l.contiguous_offsets() else { bail!("CUDA kernel input must be contiguous") };
    let slice = s.as_cuda_slice::<T>()?;
    let stream = s.device().cuda_stream();
    let (ptr, _sync) = slice.device_ptr(&stream);
    Ok(ptr + (start * std::mem::size_of::<T>()) as u64)
}

/// Runs `f` with the backend of the tensors' device and the device addresses of their
/// contiguous data (made contiguous first); the storages stay locked for reading until `f`
/// returns. For backward passes, which receive tensors.
pub(crate) fn with_inputs<T: Float, R>(tensors: &[&Tensor], f: impl FnOnce(&Cuda, &[u64]) -> Result<R>) -> Result<R> {
    let owned: Vec<Tensor> = tensors.iter().map(|t| t.contiguous()).collect::<Result<_>>()?;
    let guards: Vec<_> = owned.iter().map(|t| t.storage_and_layout()).collect();
    let mut addrs = Vec::with_capacity(guards.len());
    let mut dev = None;
    for (g, l) in &guards {
        match &**g {
            Storage::Cuda(s) => {
                addrs.push(if s.dtype() == DType::U8 { addr::<u8>(s, l)? } else { addr::<T>(s, l)? });
                dev.get_or_insert_with(|| Cuda::of(s));
            }
            _ => bail!("CUDA kernel called with a tensor that is not on the GPU"),
        }
    }
    match dev {
        Some(be) => f(&be, &addrs),
        None => bail!("CUDA kernel called without inputs"),
    }
}

impl Backend for Cuda {
    type Buf<T: Elem> = CudaSlice<T>;

    fn alloc<T: Elem>(&self, n: usize) -> Result<CudaSlice<T>> {
        // SAFETY: every kernel output is written in full before it is read (the host build
        // of each launch sequence checks this on poisoned buffers).
        unsafe { self.dev.alloc::<T>(n.max(1)) }
    }

    fn zeros<T: Elem>(&self, n: usize) -> Result<CudaSlice<T>> {
        self.dev.alloc_zeros::<T>(n.max(1))
    }

    fn addr<T: Elem>(&self, b: &CudaSlice<T>) -> u64 {
        let stream = self.dev.cuda_stream();
        let (ptr, _sync) = b.device_ptr(&stream);
        ptr
    }

    fn launch(&self, k: Kernel, dtype: DType, l: Launch, mut args: Args) -> Result<()> {
        let f = function(&self.dev, k, dtype)?;
        let stream = self.dev.cuda_stream();
        // The driver launches in the calling thread's current context (candle's own calls
        // make it current the same way).
        stream.context().bind_to_thread().w()?;
        let mut ptrs = args.pointers();
        let grid = (l.grid[0], l.grid[1], l.grid[2]);
        let block = (l.block[0], l.block[1], l.block[2]);
        // SAFETY: `ptrs` holds one pointer per kernel parameter, in order and of the
        // parameter's size (the host build of the same sequence runs these arguments through
        // the same kernel code); the buffers they address live until the stream reaches the
        // kernel (candle frees device memory in stream order).
        unsafe { driver::result::launch_kernel(f.cu_function(), grid, block, 0, stream.cu_stream(), &mut ptrs) }.w()?;
        Ok(())
    }

    fn gemm<T: Float>(&self, g: &Gemm) -> Result<()> {
        let blas = self.dev.cublas_handle();
        let op = |t: bool| {
            if t {
                cublas_sys::cublasOperation_t::CUBLAS_OP_T
            } else {
                cublas_sys::cublasOperation_t::CUBLAS_OP_N
            }
        };
        let int = |v: usize| -> Result<i32> {
            i32::try_from(v).map_err(|_| candle_core::Error::Msg(format!("GEMM dimension {v} exceeds i32")))
        };
        let (m, n, k) = (int(g.m)?, int(g.n)?, int(g.k)?);
        let (lda, ldb, ldc, batch) = (int(g.lda.max(1))?, int(g.ldb.max(1))?, int(g.ldc.max(1))?, int(g.batch)?);
        let (sa, sb, sc) = (g.stride_a as i64, g.stride_b as i64, g.stride_c as i64);
        // SAFETY: the operands are device buffers covering the product's definition (their
        // sizes follow from the same arguments, checked by the host build), on the handle's
        // stream, which is the device's.
        unsafe {
            match T::DTYPE {
                DType::F32 => {
                    let (alpha, beta) = (1f32, 0f32);
                    cublas::sgemm_strided_batched(
                        *blas.handle(),
                        op(g.trans_a),
                        op(g.trans_b),
                        m,
                        n,
                        k,
                        &alpha,
                        g.a as *const f32,
                        lda,
                        sa,
                        g.b as *const f32,
                        ldb,
                        sb,
                        &beta,
                        g.c as *mut f32,
                        ldc,
                        sc,
                        batch,
                    )
                }
                DType::F64 => {
                    let (alpha, beta) = (1f64, 0f64);
                    cublas::dgemm_strided_batched(
                        *blas.handle(),
                        op(g.trans_a),
                        op(g.trans_b),
                        m,
                        n,
                        k,
                        &alpha,
                        g.a as *const f64,
                        lda,
                        sa,
                        g.b as *const f64,
                        ldb,
                        sb,
                        &beta,
                        g.c as *mut f64,
                        ldc,
                        sc,
                        batch,
                    )
                }
                d => bail!("GEMM: unsupported dtype {d:?}"),
            }
        }
        .map_err(|e| candle_core::Error::Msg(format!("cuBLAS: {e:?}")))
    }
}
