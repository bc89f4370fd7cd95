//! Plumbing shared by the CPU kernels: the element trait (f32 for training, f64 for gradient
//! checks), contiguous slice access to candle storage, and dtype dispatch.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, Layout, Result, WithDType};
pub use rayon::ThreadPool;

/// Element types the CPU kernels are written for.
pub trait Float: WithDType + num_traits::Float + Send + Sync + std::iter::Sum + 'static {}
impl Float for f32 {}
impl Float for f64 {}

/// The contiguous data of a storage as a slice, or an error naming the op.
pub fn slice<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [T]> {
    let data = T::cpu_storage_as_slice(s)?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("{op}: input must be contiguous"),
    }
}

/// Rejects dtypes other than f32/f64 with a message naming the op.
pub fn unsupported<T>(op: &str, s: &CpuStorage) -> Result<T> {
    bail!("{op}: unsupported dtype {:?} (f32 and f64 only)", s.dtype())
}

/// Calls `$f::<T>` with T matching the storage's float dtype.
#[macro_export]
#[doc(hidden)]
macro_rules! dispatch_float {
    ($op:expr, $storage:expr, $f:ident ( $($arg:expr),* )) => {
        match $storage {
            candle_core::CpuStorage::F32(_) => $f::<f32>($($arg),*),
            candle_core::CpuStorage::F64(_) => $f::<f64>($($arg),*),
            s => $crate::ops::kernel::unsupported($op, s),
        }
    };
}

/// Range of output positions `o` (in `0..n_out`) whose input position `o*stride + off` lies in
/// `0..n_in`; `off` may be negative (padding).
#[inline]
pub fn valid_range(off: isize, stride: usize, n_in: usize, n_out: usize) -> (usize, usize) {
    let s = stride as isize;
    let lo = if off < 0 { ((-off) + s - 1) / s } else { 0 };
    let last_in = n_in as isize - 1 - off;
    if last_in < 0 {
        return (0, 0);
    }
    let hi = ((last_in / s) + 1).min(n_out as isize);
    if hi <= lo {
        (0, 0)
    } else {
        (lo as usize, hi as usize)
    }
}

/// Planes per rayon task so that each task does at least `min_work` multiply-adds.
#[inline]
pub fn planes_per_task(work_per_plane: usize, min_work: usize) -> usize {
    min_work.div_ceil(work_per_plane.max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_range_matches_brute_force() {
        for stride in 1..=3 {
            for n_in in 1..9 {
                for off in -5isize..6 {
                    for n_out in 0..10 {
                        let (lo, hi) = valid_range(off, stride, n_in, n_out);
                        let want: Vec<usize> = (0..n_out)
                            .filter(|&o| {
                                let i = (o * stride) as isize + off;
                                i >= 0 && i < n_in as isize
                            })
                            .collect();
                        let got: Vec<usize> = (lo..hi).collect();
                        assert_eq!(got, want, "stride {stride} n_in {n_in} off {off} n_out {n_out}");
                    }
                }
            }
        }
    }
}

/// Sizes the global rayon pool (call once, before any parallel work).
pub fn init_thread_pool(n: usize) -> std::result::Result<(), rayon::ThreadPoolBuildError> {
    rayon::ThreadPoolBuilder::new().num_threads(n).build_global()
}

/// A pool of `n` threads to run a whole command on (`pool.install(...)`), so that the thread
/// driving the training steps is itself one of the kernels' workers: each parallel kernel then
/// queues its tasks locally and works on them, instead of handing them to another pool and
/// sleeping until they are done (a wake-up of every worker and of the caller per kernel call).
/// On 2 cores, in alternating runs, a retraining step took 11% less time this way and search
/// steps 19–27% less. The data loader keeps the global pool, so a step waiting for a batch
/// never holds up the batch's own assembly.
/// Threads get a main thread's stack: autograd walks the graph recursively.
pub fn compute_pool(n: usize) -> std::result::Result<ThreadPool, rayon::ThreadPoolBuildError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("nas-compute-{i}"))
        .stack_size(64 << 20)
        .build()
}

/// Runs `f` on the contiguous CPU data of `tensors` (made contiguous first). For backward
/// passes, which receive tensors rather than storages.
pub fn with_slices<T: Float, R>(tensors: &[&candle_core::Tensor], f: impl FnOnce(&[&[T]]) -> Result<R>) -> Result<R> {
    let owned: Vec<candle_core::Tensor> = tensors.iter().map(|t| t.contiguous()).collect::<Result<_>>()?;
    let guards: Vec<_> = owned.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices: Vec<&[T]> = Vec::with_capacity(guards.len());
    for (g, l) in &guards {
        match &**g {
            candle_core::Storage::Cpu(s) => slices.push(slice::<T>(s, l, "backward")?),
            _ => bail!("backward kernel called on a non-CPU tensor"),
        }
    }
    f(&slices)
}

/// A vector of `n` elements for a kernel output that is written in full before anything
/// reads it: it skips clearing `n` elements that are overwritten next anyway (candle's own CPU
/// kernels allocate their outputs the same way). Every caller states why each element is
/// written.
///
/// # Safety
/// The caller must write every element before reading any and before the vector leaves the
/// kernel.
#[allow(clippy::uninit_vec)] // deliberate: see above
pub unsafe fn output_vec<T: Float>(n: usize) -> Vec<T> {
    let mut v = Vec::with_capacity(n);
    // SAFETY: capacity is n; the caller writes all n elements before any read.
    unsafe { v.set_len(n) };
    v
}

/// A CPU tensor from kernel output.
pub fn cpu_tensor<T: Float>(v: Vec<T>, shape: impl Into<candle_core::Shape>) -> Result<candle_core::Tensor> {
    candle_core::Tensor::from_vec(v, shape, &candle_core::Device::Cpu)
}

/// Calls `$f::<T>` with T matching a tensor's float dtype.
#[macro_export]
#[doc(hidden)]
macro_rules! dispatch_dtype {
    ($op:expr, $dtype:expr, $f:ident ( $($arg:expr),* )) => {
        match $dtype {
            candle_core::DType::F32 => $f::<f32>($($arg),*),
            candle_core::DType::F64 => $f::<f64>($($arg),*),
            d => candle_core::bail!("{}: unsupported dtype {:?} (f32 and f64 only)", $op, d),
        }
    };
}

/// Elements per rayon task for simple elementwise kernels.
pub const ELEMWISE_CHUNK: usize = 1 << 14;

/// A read-only matrix view: element (i, j) is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct Mat<'a, T> {
    pub data: &'a [T],
    pub rs: usize,
    pub cs: usize,
}

impl<'a, T> Mat<'a, T> {
    /// Row-major `rows × cols`.
    pub fn rows(data: &'a [T], cols: usize) -> Self {
        Self { data, rs: cols, cs: 1 }
    }

    /// The transpose of a row-major matrix with `cols` columns.
    pub fn transposed(data: &'a [T], cols: usize) -> Self {
        Self { data, rs: 1, cs: cols }
    }

    fn fits(&self, r: usize, c: usize) -> bool {
        r == 0 || c == 0 || (r - 1) * self.rs + (c - 1) * self.cs < self.data.len()
    }
}

/// dst (m × n, row-major) = A (m × k) · B (k × n), or dst += A · B when `accumulate`.
/// Single-threaded: callers parallelise over independent products.
pub fn matmul<T: Float>(m: usize, n: usize, k: usize, dst: &mut [T], accumulate: bool, a: Mat<'_, T>, b: Mat<'_, T>) {
    assert!(dst.len() >= m * n && a.fits(m, k) && b.fits(k, n), "matmul: operand too small");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(T::zero());
        }
        return;
    }
    // SAFETY: the bounds of every operand were checked above; dst does not alias a or b.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Splits `0..n` into at most `max_groups` contiguous ranges of near-equal length. The split
/// depends only on `n`, so per-group partial sums reduce in the same order on any machine.
pub fn fixed_groups(n: usize, max_groups: usize) -> Vec<std::ops::Range<usize>> {
    let g = n.clamp(1, max_groups.max(1));
    (0..g).map(|i| (i * n / g)..((i + 1) * n / g)).filter(|r| !r.is_empty()).collect()
}

/// `buf` cut into `tasks` chunks of `chunk` elements (the last may be shorter), or `tasks`
/// Nones when `buf` is empty (an output nobody asked for).
pub fn task_chunks<T>(buf: &mut [T], chunk: usize, tasks: usize) -> Vec<Option<&mut [T]>> {
    if buf.is_empty() {
        (0..tasks).map(|_| None).collect()
    } else {
        let mut v: Vec<Option<&mut [T]>> = buf.chunks_mut(chunk.max(1)).map(Some).collect();
        v.resize_with(tasks, || None);
        v
    }
}
