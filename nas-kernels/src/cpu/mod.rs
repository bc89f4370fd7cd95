//! The CPU kernels of the custom ops (rayon-parallel over batch×channel planes, SIMD inner
//! loops) and their plumbing: the element trait (f32 for training, f64 for gradient checks),
//! contiguous slice access to candle storage and tensors (`forward`, `grads`), output buffers
//! that are written before they are read, the matrix product and the thread pools.

pub(crate) mod batch_norm;
pub(crate) mod conv;
pub(crate) mod depthwise;
pub(crate) mod elementwise;
pub(crate) mod partial;
pub(crate) mod plane;
pub(crate) mod pointwise;
pub(crate) mod pool;
pub(crate) mod sep;
pub(crate) mod simd;
pub(crate) mod stage;

use std::mem::MaybeUninit;

use rayon::prelude::*;

use candle_core::{bail, CpuStorage, Layout, Result, WithDType};
pub use rayon::ThreadPool;

use crate::op::{shaped, CpuIn};

/// Element types the CPU kernels are written for.
pub trait Float: WithDType + num_traits::Float + Send + Sync + std::iter::Sum + super::cuda::Elem + 'static {}
impl Float for f32 {}
impl Float for f64 {}

/// The contiguous data of a storage as a slice, or an error naming the op.
pub(crate) fn slice<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [T]> {
    let data = T::cpu_storage_as_slice(s)?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("{op}: input must be contiguous"),
    }
}

/// The contiguous data of forward inputs as slices.
pub(crate) fn slices<'a, T: Float, const N: usize>(s: [CpuIn<'a>; N], op: &str) -> Result<[&'a [T]; N]> {
    let mut out: [&[T]; N] = [&[]; N];
    for (o, (st, l)) in out.iter_mut().zip(s) {
        *o = slice::<T>(st, l, op)?;
    }
    Ok(out)
}

/// Runs a forward kernel on the contiguous data of its inputs; its output as CPU storage.
pub(crate) fn forward<T: Float, const N: usize>(
    op: &str,
    s: [CpuIn<'_>; N],
    f: impl FnOnce([&[T]; N]) -> Result<Vec<T>>,
) -> Result<CpuStorage> {
    Ok(T::to_cpu_storage_owned(f(slices(s, op)?)?))
}

/// Runs a backward kernel on the contiguous data of `inputs`; its outputs become tensors
/// shaped like `like`.
pub(crate) fn grads<T: Float, const M: usize, const N: usize>(
    inputs: [&candle_core::Tensor; M],
    like: [&candle_core::Tensor; N],
    f: impl FnOnce([&[T]; M]) -> Result<[Option<Vec<T>>; N]>,
) -> Result<[Option<candle_core::Tensor>; N]> {
    let outs = with_slices::<T, _>(&inputs, |s| match <[&[T]; M]>::try_from(s) {
        Ok(s) => f(s),
        Err(_) => bail!("backward: {} inputs for {M}", s.len()),
    })?;
    shaped(outs, like, |v, shape| cpu_tensor(v, shape))
}

/// Planes per rayon task so that each task does at least `min_work` multiply-adds.
#[inline]
pub(crate) fn planes_per_task(work_per_plane: usize, min_work: usize) -> usize {
    min_work.div_ceil(work_per_plane.max(1)).max(1)
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
pub(crate) fn with_slices<T: Float, R>(
    tensors: &[&candle_core::Tensor],
    f: impl FnOnce(&[&[T]]) -> Result<R>,
) -> Result<R> {
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

/// An element a kernel writes its result into: a value that is already there (a reused
/// buffer, which may also be read), or a slot of a fresh output buffer (`Fresh`), which must
/// only be written. Kernels that fill both kinds are generic over it.
pub(crate) trait Slot<T: Copy>: Sized + Send {
    /// Whether the slot holds a value before it is written (so it may be read or added to).
    const INIT: bool;
    fn put(&mut self, v: T);
    /// The slots as values once each of them has been written.
    ///
    /// # Safety
    /// Every element of `s` holds a value: it was written with `put`, or `Self::INIT`.
    unsafe fn assume_init(s: &mut [Self]) -> &mut [T];
}

impl<T: Copy + Send> Slot<T> for T {
    const INIT: bool = true;
    #[inline(always)]
    fn put(&mut self, v: T) {
        *self = v;
    }
    unsafe fn assume_init(s: &mut [T]) -> &mut [T] {
        s
    }
}

impl<T: Copy + Send> Slot<T> for MaybeUninit<T> {
    const INIT: bool = false;
    #[inline(always)]
    fn put(&mut self, v: T) {
        self.write(v);
    }
    unsafe fn assume_init(s: &mut [Self]) -> &mut [T] {
        // SAFETY: MaybeUninit<T> has T's layout, and the caller guarantees every element
        // has been written.
        unsafe { &mut *(s as *mut [MaybeUninit<T>] as *mut [T]) }
    }
}

/// `dst[i] = src[i]` over the common length.
#[inline]
pub(crate) fn put_all<T: Copy, S: Slot<T>>(dst: &mut [S], src: &[T]) {
    for (d, &v) in dst.iter_mut().zip(src) {
        d.put(v);
    }
}

/// A fresh kernel output of `n` elements that the kernel writes in full before anything reads
/// it: it is not cleared first (candle's own CPU kernels allocate their outputs the same way;
/// clearing cost ~3% of a training step). The kernel writes the slots, then `assume_init`
/// hands out the vector.
pub(crate) struct Fresh<T> {
    v: Vec<T>,
    n: usize,
}

impl<T: Float> Fresh<T> {
    pub fn new(n: usize) -> Self {
        Self { v: Vec::with_capacity(n), n }
    }

    pub fn slots(&mut self) -> &mut [MaybeUninit<T>] {
        &mut self.v.spare_capacity_mut()[..self.n]
    }

    /// The written vector.
    ///
    /// # Safety
    /// Every slot has been written.
    pub unsafe fn assume_init(mut self) -> Vec<T> {
        // SAFETY: capacity is at least n and the caller guarantees all n are initialised.
        unsafe { self.v.set_len(self.n) };
        self.v
    }
}

/// A CPU tensor from kernel output.
pub(crate) fn cpu_tensor<T: Float>(v: Vec<T>, shape: impl Into<candle_core::Shape>) -> Result<candle_core::Tensor> {
    candle_core::Tensor::from_vec(v, shape, &candle_core::Device::Cpu)
}

/// Elements per rayon task for simple elementwise kernels.
pub(crate) const ELEMWISE_CHUNK: usize = 1 << 14;

/// A read-only matrix view: element (i, j) is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a, T> {
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

/// dst (m × n, row-major) = A (m × k) · B (k × n), or dst += A · B when `accumulate` (which
/// needs initialised slots). Single-threaded: callers parallelise over independent products.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul<T: Float, S: Slot<T>>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [S],
    accumulate: bool,
    a: Mat<'_, T>,
    b: Mat<'_, T>,
) {
    assert!(dst.len() >= m * n && a.fits(m, k) && b.fits(k, n), "matmul: operand too small");
    assert!(S::INIT || !accumulate, "matmul: cannot accumulate into a fresh buffer");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].iter_mut().for_each(|d| d.put(T::zero()));
        }
        return;
    }
    // SAFETY: the bounds of every operand were checked above; dst does not alias a or b, has
    // T's layout (T or MaybeUninit<T>), and is only read when `accumulate`, which the assert
    // above allows only for initialised slots.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr().cast::<T>(),
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

/// Σ_b A_b · B_bᵀ over `items` batch items, (m × n) row-major, with A_b (m × p) and B_b
/// (n × p) row-major as `operands(b, scratch, f)` hands them to `f` (a weight gradient: output
/// gradient times input, both long in the pixels; `scratch` is two buffers a task keeps from
/// item to item). Items are summed in fixed groups, in
/// parallel, the groups' sums added in order (deterministic). The matrix product packs its
/// left operand, so the smaller of the two goes there: with n > m each group sums
/// B_b · A_bᵀ and the total is transposed once.
pub(crate) fn sum_products_t<T: Float>(
    items: usize,
    (m, n, p): (usize, usize, usize),
    operands: impl Fn(usize, &mut [Vec<T>; 2], &mut dyn FnMut(&[T], &[T])) + Sync,
) -> Vec<T> {
    let swap = n > m;
    let partials: Vec<Vec<T>> = fixed_groups(items, 16)
        .into_par_iter()
        .map(|range| {
            let mut acc = vec![T::zero(); m * n];
            let mut scratch = [Vec::new(), Vec::new()];
            for (i, b) in range.enumerate() {
                operands(b, &mut scratch, &mut |a, bm| {
                    if swap {
                        matmul(n, m, p, &mut acc, i > 0, Mat::rows(bm, p), Mat::transposed(a, p));
                    } else {
                        matmul(m, n, p, &mut acc, i > 0, Mat::rows(a, p), Mat::transposed(bm, p));
                    }
                });
            }
            acc
        })
        .collect();
    let sum = sum_partials(partials, m * n);
    if swap {
        (0..m * n).map(|i| sum[(i % n) * m + i / n]).collect()
    } else {
        sum
    }
}

/// Element-wise sum of equal-length buffers, in order.
pub(crate) fn sum_partials<T: Float>(partials: Vec<Vec<T>>, len: usize) -> Vec<T> {
    let mut it = partials.into_iter();
    let mut acc = it.next().unwrap_or_else(|| vec![T::zero(); len]);
    for p in it {
        for (a, v) in acc.iter_mut().zip(p) {
            *a += v;
        }
    }
    acc
}

/// Splits `0..n` into at most `max_groups` contiguous ranges of near-equal length. The split
/// depends only on `n`, so per-group partial sums reduce in the same order on any machine.
pub(crate) fn fixed_groups(n: usize, max_groups: usize) -> Vec<std::ops::Range<usize>> {
    let g = n.clamp(1, max_groups.max(1));
    (0..g).map(|i| (i * n / g)..((i + 1) * n / g)).filter(|r| !r.is_empty()).collect()
}

/// `buf` cut into `tasks` chunks of `chunk` elements (the last may be shorter), or `tasks`
/// Nones when `buf` is empty (an output nobody asked for).
pub(crate) fn task_chunks<T>(buf: &mut [T], chunk: usize, tasks: usize) -> Vec<Option<&mut [T]>> {
    if buf.is_empty() {
        (0..tasks).map(|_| None).collect()
    } else {
        let mut v: Vec<Option<&mut [T]>> = buf.chunks_mut(chunk.max(1)).map(Some).collect();
        v.resize_with(tasks, || None);
        v
    }
}
