//! The machine's limits that a step's time is set against (`nas bench machine`, the roofline in
//! docs/performance.md): the rate of f32 fused multiply-adds the cores sustain, and the memory
//! bandwidth of a STREAM-style triad.
//!
//! The FMA kernel keeps twelve independent vector accumulators per thread (more than an FMA's
//! latency times the FMA pipes, so the pipes never wait on a result) and touches no memory; it
//! runs at the width the kernels use (AVX2's 8 lanes) and, where the CPU has it, at AVX-512's 16.
//! The triad `a = b + s·c` runs over three arrays far larger than the last-level cache, split
//! between the threads, each thread writing first the pages it later streams (first touch); its
//! bytes are STREAM's: three arrays of 4-byte elements per pass (the write-allocate read of `a`
//! not counted). Both are the best of a few repetitions, as STREAM reports.

use std::hint::black_box;
use std::time::Instant;

/// Independent accumulators of the FMA kernel.
const ACCUMULATORS: usize = 12;
/// Iterations of the FMA kernel's loop per thread and repetition.
const FMA_ITERATIONS: usize = 20_000_000;
/// Elements of each triad array: 3 × 64 MiB.
const TRIAD_ELEMENTS: usize = 1 << 24;
const REPETITIONS: usize = 5;

/// What `measure` found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub threads: usize,
    /// f32 FLOP/s (a multiply-add counted as 2) at the kernels' vector width (AVX2 on x86-64).
    pub fma_flops: f64,
    /// The same at AVX-512's width, where the CPU has it.
    pub fma_flops_avx512: Option<f64>,
    /// Bytes per second of the triad.
    pub triad_bytes_per_s: f64,
}

/// Runs both kernels on `threads` threads.
pub fn measure(threads: usize) -> Limits {
    let threads = threads.max(1);
    Limits {
        threads,
        fma_flops: best_rate(threads, fma_kernel(false)),
        fma_flops_avx512: fma_kernel(true).is_some().then(|| best_rate(threads, fma_kernel(true))),
        triad_bytes_per_s: triad(threads),
    }
}

/// `iterations` rounds of x ← x·½ + 1 on every lane of the accumulators from 0: the FLOPs done
/// and the first lane's value (2 − 2^(1−iterations), checked by the tests).
type Kernel = fn(usize) -> (f64, f32);

/// The FMA loop at AVX-512's width (`wide`) or the kernels' width; None where the CPU lacks it.
fn fma_kernel(wide: bool) -> Option<Kernel> {
    #[cfg(target_arch = "x86_64")]
    {
        if wide {
            return std::arch::is_x86_feature_detected!("avx512f").then_some(x86::fma512 as Kernel);
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return Some(x86::fma256 as Kernel);
        }
    }
    (!wide).then_some(portable_fma as Kernel)
}

/// FLOP/s of `kernel` run by every thread at once, the best repetition.
fn best_rate(threads: usize, kernel: Option<Kernel>) -> f64 {
    let Some(kernel) = kernel else { return 0.0 };
    (0..REPETITIONS)
        .map(|_| {
            let t = Instant::now();
            let flops: f64 = std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads).map(|_| s.spawn(move || kernel(FMA_ITERATIONS).0)).collect();
                handles.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
            });
            flops / t.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

fn portable_fma(iterations: usize) -> (f64, f32) {
    let mut acc = [[0.0f32; 8]; ACCUMULATORS];
    let (a, b) = (black_box([0.5f32; 8]), black_box([1.0f32; 8]));
    for _ in 0..iterations {
        for v in &mut acc {
            for ((x, &m), &c) in v.iter_mut().zip(&a).zip(&b) {
                *x = *x * m + c;
            }
        }
    }
    ((iterations * ACCUMULATORS * 8 * 2) as f64, black_box(acc)[0][0])
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::hint::black_box;

    use super::ACCUMULATORS;

    pub(super) fn fma256(iterations: usize) -> (f64, f32) {
        // SAFETY: chosen only where the CPU has AVX2 and FMA (`fma_kernel`).
        let first = unsafe { run256(iterations) };
        ((iterations * ACCUMULATORS * 8 * 2) as f64, first)
    }

    pub(super) fn fma512(iterations: usize) -> (f64, f32) {
        // SAFETY: chosen only where the CPU has AVX-512F (`fma_kernel`).
        let first = unsafe { run512(iterations) };
        ((iterations * ACCUMULATORS * 16 * 2) as f64, first)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn run256(iterations: usize) -> f32 {
        let (a, b) = (_mm256_set1_ps(black_box(0.5)), _mm256_set1_ps(black_box(1.0)));
        let mut acc = [_mm256_setzero_ps(); ACCUMULATORS];
        for _ in 0..iterations {
            for v in &mut acc {
                *v = _mm256_fmadd_ps(*v, a, b);
            }
        }
        _mm256_cvtss_f32(black_box(acc)[0])
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn run512(iterations: usize) -> f32 {
        let (a, b) = (_mm512_set1_ps(black_box(0.5)), _mm512_set1_ps(black_box(1.0)));
        let mut acc = [_mm512_setzero_ps(); ACCUMULATORS];
        for _ in 0..iterations {
            for v in &mut acc {
                *v = _mm512_fmadd_ps(*v, a, b);
            }
        }
        _mm512_cvtss_f32(black_box(acc)[0])
    }
}

/// Bytes per second of `a = b + s·c` over `TRIAD_ELEMENTS` f32 per array, the best pass.
fn triad(threads: usize) -> f64 {
    let n = TRIAD_ELEMENTS;
    let chunk = n.div_ceil(threads);
    let mut a = Vec::<f32>::with_capacity(n);
    let mut b = Vec::<f32>::with_capacity(n);
    let mut c = Vec::<f32>::with_capacity(n);
    // Each thread writes its own part of every array first, so its pages are its own.
    std::thread::scope(|s| {
        let parts = a.spare_capacity_mut()[..n]
            .chunks_mut(chunk)
            .zip(b.spare_capacity_mut()[..n].chunks_mut(chunk))
            .zip(c.spare_capacity_mut()[..n].chunks_mut(chunk));
        for ((a, b), c) in parts {
            s.spawn(move || {
                a.iter_mut().for_each(|x| _ = x.write(0.0));
                b.iter_mut().for_each(|x| _ = x.write(1.0));
                c.iter_mut().for_each(|x| _ = x.write(2.0));
            });
        }
    });
    // SAFETY: every element of the first n was written just above.
    unsafe {
        a.set_len(n);
        b.set_len(n);
        c.set_len(n);
    }
    let best = (0..REPETITIONS)
        .map(|_| {
            let t = Instant::now();
            triad_pass(&mut a, &b, &c, black_box(3.0), chunk);
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    black_box(&a);
    (3 * 4 * n) as f64 / best
}

/// a = b + s·c, each thread on its `chunk` of the arrays.
fn triad_pass(a: &mut [f32], b: &[f32], c: &[f32], scalar: f32, chunk: usize) {
    std::thread::scope(|s| {
        for ((a, b), c) in a.chunks_mut(chunk).zip(b.chunks(chunk)).zip(c.chunks(chunk)) {
            s.spawn(move || {
                for ((x, &y), &z) in a.iter_mut().zip(b).zip(c) {
                    *x = y + scalar * z;
                }
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every FMA kernel does the multiply-adds it counts: after n rounds of x ← x·½ + 1 from 0
    /// the value is 2 − 2^(1−n) (exact in f32 for these n).
    #[test]
    fn fma_kernels_do_the_work_they_count() {
        for (name, kernel, lanes) in [
            ("portable", Some(portable_fma as Kernel), 8),
            ("base width", fma_kernel(false), 8),
            ("avx-512", fma_kernel(true), 16),
        ] {
            let Some(kernel) = kernel else { continue };
            for n in [1, 3, 10, 20] {
                let (flops, x) = kernel(n);
                assert_eq!(flops, (n * ACCUMULATORS * lanes * 2) as f64, "{name} n={n}");
                assert_eq!(x, 2.0 - 2f32.powi(1 - n as i32), "{name} n={n}");
            }
        }
    }

    #[test]
    fn the_triad_writes_b_plus_s_c_on_every_thread_chunk() {
        let n = 1000;
        let b: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let c: Vec<f32> = (0..n).map(|i| (i % 7) as f32 - 3.0).collect();
        let mut a = vec![f32::NAN; n];
        triad_pass(&mut a, &b, &c, 0.5, n.div_ceil(3));
        for i in 0..n {
            assert_eq!(a[i], b[i] + 0.5 * c[i], "element {i}");
        }
    }
}
