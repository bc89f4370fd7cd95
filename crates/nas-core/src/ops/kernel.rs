//! Plumbing shared by the CPU kernels: the element trait (f32 for training, f64 for gradient
//! checks), contiguous slice access to candle storage, and dtype dispatch.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, Layout, Result, WithDType};

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
                        assert_eq!(
                            got, want,
                            "stride {stride} n_in {n_in} off {off} n_out {n_out}"
                        );
                    }
                }
            }
        }
    }
}

/// Sizes the global rayon pool used by the kernels (call once, before any parallel work).
pub fn init_thread_pool(n: usize) -> std::result::Result<(), rayon::ThreadPoolBuildError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
}
