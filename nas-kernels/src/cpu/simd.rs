//! Hot inner loops compiled twice: for the x86-64 baseline the binary targets, and with AVX2
//! enabled, picked at run time by CPU feature detection (the kernels' loops then run on
//! 256-bit vectors). Other architectures use the portable version.

use std::mem::MaybeUninit;

use super::Float;

/// Whether the CPU has AVX2 (checked once; the result is cached by the standard library).
#[inline]
pub(crate) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the CPU has AVX-512F (the taps' loop then runs on 512-bit vectors).
#[cfg(target_arch = "x86_64")]
#[inline]
fn has_avx512f() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// Defines `$name` running `$body` compiled for AVX2 when the CPU has it (twice the vector
/// width of the x86-64 baseline the binary is built for), and for the baseline otherwise.
macro_rules! simd_fn {
    ($(#[$m:meta])* $vis:vis fn $name:ident<T: Float>($($arg:ident: $ty:ty),*) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        #[inline]
        $vis fn $name<T: Float>($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn imp<T: Float>($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2<T: Float>($($arg: $ty),*) $(-> $ret)? {
                    imp($($arg),*)
                }
                if has_avx2() {
                    // SAFETY: the CPU supports AVX2 (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            imp($($arg),*)
        }
    };
}

simd_fn! {
    /// dst += a·src.
    pub(crate) fn axpy<T: Float>(dst: &mut [T], a: T, src: &[T]) {
        let n = dst.len().min(src.len());
        for (d, &s) in dst[..n].iter_mut().zip(&src[..n]) {
            *d += a * s;
        }
    }
}

simd_fn! {
    /// Σ a·b with eight independent accumulators (vectorises).
    pub(crate) fn dot<T: Float>(a: &[T], b: &[T]) -> T {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut lanes = [T::zero(); 8];
        let mut ca = a.chunks_exact(8);
        let mut cb = b.chunks_exact(8);
        for (x, y) in (&mut ca).zip(&mut cb) {
            for i in 0..8 {
                lanes[i] += x[i] * y[i];
            }
        }
        let mut acc = ca.remainder().iter().zip(cb.remainder()).fold(T::zero(), |acc, (&x, &y)| acc + x * y);
        for l in lanes {
            acc += l;
        }
        acc
    }
}

simd_fn! {
    /// One tap of a running window maximum and the tag of the tap holding it: src replaces m
    /// (and tag replaces best) where src > m or src is NaN, PyTorch's max-pool rule (ties keep
    /// the first tap, a NaN wins and the last NaN holds the tag).
    fn max_tag_into_generic<T: Float>(m: &mut [T], best: &mut [T], src: &[T], tag: T) {
        for ((mv, b), &v) in m.iter_mut().zip(best.iter_mut()).zip(src) {
            let take = v > *mv || v.is_nan();
            *mv = if take { v } else { *mv };
            *b = if take { tag } else { *b };
        }
    }
}

simd_fn! {
    /// v *= c element-wise.
    pub(crate) fn mul_into<T: Float>(v: &mut [T], c: &[T]) {
        for (x, &k) in v.iter_mut().zip(c) {
            *x *= k;
        }
    }
}

simd_fn! {
    /// out = x·a + b, into a fresh buffer.
    pub(crate) fn affine_into<T: Float>(out: &mut [MaybeUninit<T>], x: &[T], a: T, b: T) {
        for (o, &v) in out.iter_mut().zip(x) {
            o.write(v * a + b);
        }
    }
}

simd_fn! {
    /// out = acc + x·a + b, into a fresh buffer.
    pub(crate) fn affine_acc_into<T: Float>(out: &mut [MaybeUninit<T>], x: &[T], a: T, b: T, acc: &[T]) {
        for ((o, &v), &r) in out.iter_mut().zip(x).zip(acc) {
            o.write(r + (v * a + b));
        }
    }
}

/// Lanes of the f64 sums below: sixteen independent chains, so that a plane already in cache
/// is summed at the adds' throughput rather than their latency.
const SUM_LANES: usize = 16;

simd_fn! {
    /// (Σx, Σx²) in f64, element i in lane i mod 16 (the tail in lanes 0, 1, …), the lanes
    /// added in order at the end.
    pub(crate) fn sum_sumsq<T: Float>(x: &[T]) -> (f64, f64) {
        let mut s = [0f64; SUM_LANES];
        let mut q = [0f64; SUM_LANES];
        let mut it = x.chunks_exact(SUM_LANES);
        for c in &mut it {
            for i in 0..SUM_LANES {
                let v = c[i].to_f64();
                s[i] += v;
                q[i] += v * v;
            }
        }
        for (i, &v) in it.remainder().iter().enumerate() {
            let v = v.to_f64();
            s[i] += v;
            q[i] += v * v;
        }
        (s.iter().sum(), q.iter().sum())
    }
}

simd_fn! {
    /// (Σa, Σa·b) in f64, in the lanes of `sum_sumsq`.
    pub(crate) fn sum_dot<T: Float>(a: &[T], b: &[T]) -> (f64, f64) {
        let mut s = [0f64; SUM_LANES];
        let mut d = [0f64; SUM_LANES];
        let mut ca = a.chunks_exact(SUM_LANES);
        let mut cb = b.chunks_exact(SUM_LANES);
        for (x, y) in (&mut ca).zip(&mut cb) {
            for i in 0..SUM_LANES {
                let u = x[i].to_f64();
                s[i] += u;
                d[i] += u * y[i].to_f64();
            }
        }
        for (i, (&x, &y)) in ca.remainder().iter().zip(cb.remainder()).enumerate() {
            s[i] += x.to_f64();
            d[i] += x.to_f64() * y.to_f64();
        }
        (s.iter().sum(), d.iter().sum())
    }
}

simd_fn! {
    /// out = inv·g − m1 − y·m2 (the batch-norm input gradient of one plane), into a fresh
    /// buffer.
    pub(crate) fn bn_grad_into<T: Float>(out: &mut [MaybeUninit<T>], g: &[T], y: &[T], inv: T, m1: T, m2: T) {
        for ((o, &gv), &yv) in out.iter_mut().zip(g).zip(y) {
            o.write(inv * gv - m1 - yv * m2);
        }
    }
}

simd_fn! {
    /// dst = ReLU(src) as PyTorch computes it: 0 where src < 0, src itself otherwise (NaN stays
    /// NaN, so a diverging activation reaches the loss). Branch-free (a select per element, so
    /// it vectorises; data-dependent branches mispredict on half of the elements).
    pub(crate) fn relu_into<T: Float>(dst: &mut [T], src: &[T]) {
        for (d, &x) in dst.iter_mut().zip(src) {
            *d = if x < T::zero() { T::zero() } else { x };
        }
    }
}

simd_fn! {
    /// `relu_into` row by row: row iy of src (w wide) into dst from start + iy·stride, in one
    /// call for a whole plane (its rows are short: one dispatch each would cost as much).
    pub(crate) fn relu_rows<T: Float>(dst: &mut [T], start: usize, stride: usize, src: &[T], w: usize) {
        for (iy, row) in src.chunks_exact(w.max(1)).enumerate() {
            let d = &mut dst[start + iy * stride..start + iy * stride + row.len()];
            for (d, &x) in d.iter_mut().zip(row) {
                *d = if x < T::zero() { T::zero() } else { x };
            }
        }
    }
}

simd_fn! {
    /// g = 0 where x ≤ 0, else g: the ReLU backward into the gradient buffer, as PyTorch's
    /// threshold_backward (a NaN x passes its gradient on).
    fn mask_relu_generic<T: Float>(g: &mut [T], x: &[T]) {
        for (v, &xv) in g.iter_mut().zip(x) {
            *v = if xv <= T::zero() { T::zero() } else { *v };
        }
    }
}

/// `out[i0 + j] = Σ_t w[t]·src[offs[t] + i0 + j]` for the B outputs of one block, held in
/// registers across the taps.
#[inline(always)]
fn taps_block<T: Float, const B: usize>(o: &mut [T], src: &[T], offs: &[usize], w: &[T], i0: usize) {
    let mut acc = [T::zero(); B];
    for (&off, &wt) in offs.iter().zip(w) {
        let s = &src[off + i0..off + i0 + B];
        for j in 0..B {
            acc[j] += wt * s[j];
        }
    }
    o.copy_from_slice(&acc);
}

/// Whether reads of `n` elements from each of the first `k` offsets stay within `len`.
#[cfg(target_arch = "x86_64")]
#[inline]
fn reads_fit(offs: &[usize], k: usize, n: usize, len: usize) -> bool {
    let last = offs.iter().take(k).fold(0, |m, &o| m.max(o));
    last.checked_add(n).is_some_and(|end| end <= len)
}

/// out[i] = Σ_t w[t]·src[offs[t] + i], the taps summed in order from zero (as a zeroed output
/// with one `axpy` per tap would, bit for bit) but with a block of outputs held in registers
/// across all taps, so `out` is written once instead of read and written per tap. `src` must
/// reach `max(offs) + out.len()`.
pub(crate) fn taps_into<T: Float>(out: &mut [T], src: &[T], offs: &[usize], w: &[T]) {
    #[cfg(target_arch = "x86_64")]
    if let (true, Some(o), Some(s), Some(wv)) = (has_avx2(), as_f32_mut(out), as_f32(src), as_f32(w)) {
        let n = o.len();
        if reads_fit(offs, wv.len(), n, s.len()) {
            if has_avx512f() {
                // SAFETY: the CPU supports AVX-512F, and every tap's read of n elements is
                // within src (checked just above).
                return unsafe { avx512_f32::taps_into(o, s, offs, wv) };
            }
            // SAFETY: the CPU supports AVX2, and every tap's read of n elements is within src
            // (checked just above).
            return unsafe { avx2_f32::taps_into(o, s, offs, wv) };
        }
    }
    taps_into_generic(out, src, offs, w)
}

/// acc[t] += Σ_i g[i]·src[offs[t] + i] for every tap t, each sum formed exactly as `dot`
/// forms it (so bit for bit `acc[t] += dot(g, &src[offs[t]..])`), but several taps per pass
/// over `g`: the filter gradient of a depthwise plane, whose taps' sums would otherwise each
/// wait on one accumulator's latency. `src` must reach `max(offs) + g.len()`.
pub(crate) fn dots_acc<T: Float>(acc: &mut [T], g: &[T], src: &[T], offs: &[usize]) {
    let n = g.len();
    #[cfg(target_arch = "x86_64")]
    if let (true, Some(a), Some(gv), Some(s)) = (has_avx2(), as_f32_mut(acc), as_f32(g), as_f32(src)) {
        if reads_fit(offs, a.len(), n, s.len()) {
            // SAFETY: the CPU supports AVX2, and every tap's read of n elements is within src
            // (checked just above).
            return unsafe { avx2_f32::dots_acc(a, gv, s, offs) };
        }
    }
    for (a, &off) in acc.iter_mut().zip(offs) {
        *a += dot(g, &src[off..off + n]);
    }
}

simd_fn! {
    /// The portable `taps_into` (and the one for f64).
    fn taps_into_generic<T: Float>(out: &mut [T], src: &[T], offs: &[usize], w: &[T]) {
        let n = out.len();
        let (n32, n8) = (n - n % 32, n - n % 8);
        for (b, o) in out[..n32].chunks_exact_mut(32).enumerate() {
            taps_block::<T, 32>(o, src, offs, w, b * 32);
        }
        for (b, o) in out[n32..n8].chunks_exact_mut(8).enumerate() {
            taps_block::<T, 8>(o, src, offs, w, n32 + b * 8);
        }
        for (j, o) in out[n8..].iter_mut().enumerate() {
            taps_block::<T, 1>(std::slice::from_mut(o), src, offs, w, n8 + j);
        }
    }
}

// In-place conditional updates (`v = if c { v } else { k }`) compile to masked stores
// (vmaskmovps), which are several times slower than a blend on AMD cores. For f32 with AVX2
// the wrappers below blend in registers and store whole vectors; the generic versions remain
// for f64 and other CPUs, and the tests hold both to the same results.

/// One tap of a running window maximum and its tag: src replaces m (and tag replaces best)
/// where src > m or src is NaN (PyTorch's max-pool rule).
pub(crate) fn max_tag_into<T: Float>(m: &mut [T], best: &mut [T], src: &[T], tag: T) {
    #[cfg(target_arch = "x86_64")]
    if let (true, Some(mv), Some(b), Some(s)) = (has_avx2(), as_f32_mut(m), as_f32_mut(best), as_f32(src)) {
        // SAFETY: the CPU supports AVX2 (checked); tag is an f32 since T is.
        return unsafe { avx2_f32::max_tag_into(mv, b, s, tag.to_f32().unwrap_or(f32::NAN)) };
    }
    max_tag_into_generic(m, best, src, tag)
}

/// The running window maximum over all taps at once: m[i] = the maximum of
/// src[offs[t] + i] over the taps t in order and best[i] = the tag of the tap that holds it,
/// each tap replacing the maximum where it is greater or NaN (`max_tag_into` tap by tap from
/// m = −∞, best = −1, bit for bit), with a block of outputs held in registers across the
/// taps. `src` must reach `max(offs) + m.len()`.
pub(crate) fn max_taps_into<T: Float>(m: &mut [T], best: &mut [T], src: &[T], offs: &[usize], tags: &[T]) {
    #[cfg(target_arch = "x86_64")]
    if let (true, Some(mv), Some(b), Some(s), Some(tg)) =
        (has_avx2(), as_f32_mut(m), as_f32_mut(best), as_f32(src), as_f32(tags))
    {
        let n = mv.len().min(b.len());
        if reads_fit(offs, tg.len(), n, s.len()) {
            // SAFETY: the CPU supports AVX2, and every tap's read of n elements is within src
            // (checked just above).
            return unsafe { avx2_f32::max_taps_into(mv, b, s, offs, tg) };
        }
    }
    let n = m.len().min(best.len());
    max_taps_by_tap(&mut m[..n], &mut best[..n], src, offs, tags);
}

/// `max_taps_into` one tap at a time (`max_tag_into` from m = −∞, best = −1): the portable
/// path and the vector path's tail.
fn max_taps_by_tap<T: Float>(m: &mut [T], best: &mut [T], src: &[T], offs: &[usize], tags: &[T]) {
    let n = m.len();
    m.fill(T::neg_infinity());
    best.fill(-T::one());
    for (&off, &tag) in offs.iter().zip(tags) {
        max_tag_into(m, best, &src[off..off + n], tag);
    }
}

/// One output row of a 3×3 max pool's arg-max indices from its tags (`max_taps_into`'s
/// `best`): a[ox] = hit0 + ox·s + tag where a tap won (tag ≥ 0, its offset kh·W + kw), and
/// where nothing replaced −∞ (tag −1) the window's top-left corner clipped to the image,
/// corner_row + max(ox·s, 1) − 1. hit0 = oy·s·W − W − 1 (the padding of 1 taken off) and
/// corner_row = (max(oy·s, 1) − 1)·W; every index fits an i32 (it fits the u32 it is stored as,
/// and the planes are far smaller).
pub(crate) fn max_args_row<T: Float>(a: &mut [u32], tags: &[T], hit0: i64, corner_row: i64, s: usize) {
    #[cfg(target_arch = "x86_64")]
    if let (true, Some(t)) = (has_avx2(), as_f32(tags)) {
        if let (Ok(h), Ok(c), Ok(st), Ok(_)) =
            (i32::try_from(hit0), i32::try_from(corner_row), i32::try_from(s), i32::try_from(a.len() * s + 2))
        {
            // SAFETY: the CPU supports AVX2 (checked just above).
            let done = unsafe { avx2_f32::max_args_row(a, t, h, c, st) };
            return max_args_tail(a, tags, hit0, corner_row, s, done);
        }
    }
    max_args_tail(a, tags, hit0, corner_row, s, 0)
}

/// `max_args_row` for the outputs from `from` on, one at a time.
fn max_args_tail<T: Float>(a: &mut [u32], tags: &[T], hit0: i64, corner_row: i64, s: usize, from: usize) {
    for (ox, (a, t)) in a.iter_mut().zip(tags).enumerate().skip(from) {
        let t = t.to_f64().unwrap_or(-1.0);
        let x = (ox * s) as i64;
        *a = if t >= 0.0 { hit0 + x + t as i64 } else { corner_row + x.max(1) - 1 } as u32;
    }
}

/// g = 0 where x ≤ 0, else g (the ReLU backward into the gradient buffer; a NaN x passes its
/// gradient on, as PyTorch's threshold_backward).
pub(crate) fn mask_relu<T: Float>(g: &mut [T], x: &[T]) {
    #[cfg(target_arch = "x86_64")]
    if let (true, Some(gv), Some(xv)) = (has_avx2(), as_f32_mut(g), as_f32(x)) {
        // SAFETY: as above.
        return unsafe { avx2_f32::mask_relu(gv, xv) };
    }
    mask_relu_generic(g, x)
}

/// The slice as `[f32]` when T is f32.
#[cfg(target_arch = "x86_64")]
fn as_f32<T: Float>(v: &[T]) -> Option<&[f32]> {
    // SAFETY: T is f32: same type, same layout.
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<f32>(), v.len()) })
}

/// The slice as `[f32]` when T is f32.
#[cfg(target_arch = "x86_64")]
fn as_f32_mut<T: Float>(v: &mut [T]) -> Option<&mut [f32]> {
    // SAFETY: T is f32: same type, same layout.
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<f32>(), v.len()) })
}

/// A vector of f32 lanes the taps' loop runs on: AVX2's 8 (`__m256`) or AVX-512's 16
/// (`__m512`). Every method is an intrinsic of that width; the loop below is inlined into a
/// function compiled with the width's CPU feature, where the intrinsics inline in turn.
#[cfg(target_arch = "x86_64")]
trait F32Lanes: Copy {
    const N: usize;
    /// # Safety
    /// The CPU has the width's feature (all methods).
    unsafe fn zero() -> Self;
    unsafe fn splat(v: f32) -> Self;
    /// # Safety
    /// As above, and `p` has `N` readable elements.
    unsafe fn load(p: *const f32) -> Self;
    /// self + w·x, the product rounded before the add (not fused).
    unsafe fn add_mul(self, w: Self, x: Self) -> Self;
    /// # Safety
    /// As above, and `p` has `N` writable elements.
    unsafe fn store(self, p: *mut f32);
}

/// One block of `L::N·V` outputs of `taps_into`, held in V registers across the taps.
///
/// # Safety
/// The CPU has L's feature; `o` has `L::N·V` writable elements and `s + off` `L::N·V`
/// readable ones for every `off`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn taps_block_lanes<L: F32Lanes, const V: usize>(o: *mut f32, s: *const f32, offs: &[usize], w: &[f32]) {
    let mut acc = [L::zero(); V];
    for (&off, &wt) in offs.iter().zip(w) {
        let (wv, p) = (L::splat(wt), s.add(off));
        for (j, a) in acc.iter_mut().enumerate() {
            *a = a.add_mul(wv, L::load(p.add(L::N * j)));
        }
    }
    for (j, a) in acc.iter().enumerate() {
        a.store(o.add(L::N * j));
    }
}

/// The vector part of `taps_into`: blocks of 8·N outputs (eight independent sums per tap,
/// enough to cover the adds' latency), then at most one of 4·N, then of N; the same
/// operations in the same order as the portable loop, so the same bits. Returns how many
/// outputs it wrote (the caller does the rest).
///
/// # Safety
/// The CPU has L's feature; `off + out.len() <= src.len()` for every `off` of the first
/// `w.len()` offsets.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn taps_lanes<L: F32Lanes>(out: &mut [f32], src: &[f32], offs: &[usize], w: &[f32]) -> usize {
    let (n, k) = (out.len(), offs.len().min(w.len()));
    let (offs, w) = (&offs[..k], &w[..k]);
    let (op, sp) = (out.as_mut_ptr(), src.as_ptr());
    let mut i = 0;
    while i + 8 * L::N <= n {
        taps_block_lanes::<L, 8>(op.add(i), sp.add(i), offs, w);
        i += 8 * L::N;
    }
    if i + 4 * L::N <= n {
        taps_block_lanes::<L, 4>(op.add(i), sp.add(i), offs, w);
        i += 4 * L::N;
    }
    while i + L::N <= n {
        taps_block_lanes::<L, 1>(op.add(i), sp.add(i), offs, w);
        i += L::N;
    }
    i
}

/// The taps' loop on 512-bit vectors: twice the outputs per instruction of the AVX2 loop (the
/// depthwise convolution's taps are its arithmetic; a CPU with full-width AVX-512 runs them at
/// up to twice the rate). Each output's sum is the same operations in the same order, so the
/// same bits as the AVX2 and portable loops.
#[cfg(target_arch = "x86_64")]
mod avx512_f32 {
    use std::arch::x86_64::*;

    use super::{taps_lanes, F32Lanes};

    impl F32Lanes for __m512 {
        const N: usize = 16;
        #[inline(always)]
        unsafe fn zero() -> Self {
            _mm512_setzero_ps()
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            _mm512_set1_ps(v)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            _mm512_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn add_mul(self, w: Self, x: Self) -> Self {
            _mm512_add_ps(self, _mm512_mul_ps(w, x))
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm512_storeu_ps(p, self)
        }
    }

    /// `taps_into` for f32: blocks of 128, 64 and 16 outputs, the rest by the AVX2 loop.
    ///
    /// # Safety
    /// AVX-512F (which implies AVX2); `off + out.len() <= src.len()` for every `off` of the
    /// first `w.len()` offsets.
    #[target_feature(enable = "avx512f,avx2")]
    pub unsafe fn taps_into(out: &mut [f32], src: &[f32], offs: &[usize], w: &[f32]) {
        let i = taps_lanes::<__m512>(out, src, offs, w);
        super::avx2_f32::taps_into(&mut out[i..], &src[i..], offs, w);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2_f32 {
    use std::arch::x86_64::*;

    /// dst[i] = f(dst[i], a[i], b[i]) eight lanes at a time over the common length; the tail
    /// goes through zero-padded vectors, so it computes exactly what full vectors do.
    ///
    /// # Safety
    /// The CPU must support AVX2 (callers are `#[target_feature(enable = "avx2")]` functions
    /// that `has_avx2` gates). Every load and store stays within the first `n` elements of
    /// each slice, `n` being their common length: full vectors only while `i + 8 <= n`, the
    /// tail through stack arrays of 8.
    unsafe fn lanes(dst: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(__m256, __m256, __m256) -> __m256) {
        let n = dst.len().min(a.len()).min(b.len());
        let mut i = 0;
        while i + 8 <= n {
            let r = f(
                _mm256_loadu_ps(dst.as_ptr().add(i)),
                _mm256_loadu_ps(a.as_ptr().add(i)),
                _mm256_loadu_ps(b.as_ptr().add(i)),
            );
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), r);
            i += 8;
        }
        if i < n {
            let m = n - i;
            let (mut d, mut x, mut y) = ([0f32; 8], [0f32; 8], [0f32; 8]);
            d[..m].copy_from_slice(&dst[i..n]);
            x[..m].copy_from_slice(&a[i..n]);
            y[..m].copy_from_slice(&b[i..n]);
            let r = f(_mm256_loadu_ps(d.as_ptr()), _mm256_loadu_ps(x.as_ptr()), _mm256_loadu_ps(y.as_ptr()));
            _mm256_storeu_ps(d.as_mut_ptr(), r);
            dst[i..n].copy_from_slice(&d[..m]);
        }
    }

    /// One tap of the running maximum and its tag, eight lanes at a time; the tail goes
    /// through stack arrays of 8 (m padded with −∞ and src with 0, whose lanes are dropped).
    ///
    /// # Safety
    /// The CPU must support AVX2. Loads and stores stay within the first `n` elements of each
    /// slice, `n` being their common length, as in `lanes`.
    #[target_feature(enable = "avx2")]
    pub unsafe fn max_tag_into(m: &mut [f32], best: &mut [f32], src: &[f32], tag: f32) {
        let n = m.len().min(best.len()).min(src.len());
        let t = _mm256_set1_ps(tag);
        // take = v > m (ordered) or v unordered with itself (NaN): a blend, no branch.
        let step = |mp: *mut f32, bp: *mut f32, sp: *const f32| {
            let (mv, bv, v) = (_mm256_loadu_ps(mp), _mm256_loadu_ps(bp), _mm256_loadu_ps(sp));
            let take = _mm256_or_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(v, mv), _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
            _mm256_storeu_ps(mp, _mm256_blendv_ps(mv, v, take));
            _mm256_storeu_ps(bp, _mm256_blendv_ps(bv, t, take));
        };
        let mut i = 0;
        while i + 8 <= n {
            step(m.as_mut_ptr().add(i), best.as_mut_ptr().add(i), src.as_ptr().add(i));
            i += 8;
        }
        if i < n {
            let k = n - i;
            let (mut a, mut b, mut c) = ([f32::NEG_INFINITY; 8], [0f32; 8], [0f32; 8]);
            a[..k].copy_from_slice(&m[i..n]);
            b[..k].copy_from_slice(&best[i..n]);
            c[..k].copy_from_slice(&src[i..n]);
            step(a.as_mut_ptr(), b.as_mut_ptr(), c.as_ptr());
            m[i..n].copy_from_slice(&a[..k]);
            best[i..n].copy_from_slice(&b[..k]);
        }
    }

    impl super::F32Lanes for __m256 {
        const N: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> Self {
            _mm256_setzero_ps()
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            _mm256_set1_ps(v)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            _mm256_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn add_mul(self, w: Self, x: Self) -> Self {
            _mm256_add_ps(self, _mm256_mul_ps(w, x))
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm256_storeu_ps(p, self)
        }
    }

    /// `taps_into` for f32: blocks of 64, 32 and 8 outputs, the last few by the portable loop.
    ///
    /// # Safety
    /// AVX2; `off + out.len() <= src.len()` for every `off` of the first `w.len()` offsets.
    #[target_feature(enable = "avx2")]
    pub unsafe fn taps_into(out: &mut [f32], src: &[f32], offs: &[usize], w: &[f32]) {
        let i = super::taps_lanes::<__m256>(out, src, offs, w);
        super::taps_into_generic(&mut out[i..], &src[i..], offs, w);
    }

    /// M taps of `dots_acc`: one pass over g, M lane accumulators.
    ///
    /// # Safety
    /// AVX2; `off + g.len() <= src.len()` for each of the M offsets; `acc` and `offs` hold M.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn dots_group<const M: usize>(acc: &mut [f32], g: &[f32], src: &[f32], offs: &[usize]) {
        let (n, sp, gp) = (g.len(), src.as_ptr(), g.as_ptr());
        let n8 = n - n % 8;
        let offs: [usize; M] = std::array::from_fn(|t| offs[t]);
        let mut lanes = [_mm256_setzero_ps(); M];
        let mut i = 0;
        while i < n8 {
            let gv = _mm256_loadu_ps(gp.add(i));
            for (l, &off) in lanes.iter_mut().zip(&offs) {
                *l = _mm256_add_ps(*l, _mm256_mul_ps(gv, _mm256_loadu_ps(sp.add(off + i))));
            }
            i += 8;
        }
        for ((a, l), &off) in acc[..M].iter_mut().zip(&lanes).zip(&offs) {
            // `dot`'s ending: the remainder summed from zero, then the eight lanes in order.
            let mut sum = 0f32;
            for (j, &gj) in g.iter().enumerate().skip(n8) {
                sum += gj * *sp.add(off + j);
            }
            let mut v = [0f32; 8];
            _mm256_storeu_ps(v.as_mut_ptr(), *l);
            for x in v {
                sum += x;
            }
            *a += sum;
        }
    }

    /// `dots_acc` for f32: the taps in near-equal groups of at most nine (nine accumulators,
    /// the vector of g and a product fit the sixteen registers).
    ///
    /// # Safety
    /// AVX2; `off + g.len() <= src.len()` for every `off` of the first `acc.len()` offsets.
    #[target_feature(enable = "avx2")]
    pub unsafe fn dots_acc(acc: &mut [f32], g: &[f32], src: &[f32], offs: &[usize]) {
        let k = acc.len().min(offs.len());
        let groups = k.div_ceil(9);
        let mut t0 = 0;
        for gi in 0..groups {
            let m = (k - t0).div_ceil(groups - gi);
            let (a, o) = (&mut acc[t0..t0 + m], &offs[t0..t0 + m]);
            match m {
                1 => dots_group::<1>(a, g, src, o),
                2 => dots_group::<2>(a, g, src, o),
                3 => dots_group::<3>(a, g, src, o),
                4 => dots_group::<4>(a, g, src, o),
                5 => dots_group::<5>(a, g, src, o),
                6 => dots_group::<6>(a, g, src, o),
                7 => dots_group::<7>(a, g, src, o),
                8 => dots_group::<8>(a, g, src, o),
                _ => dots_group::<9>(a, g, src, o),
            }
            t0 += m;
        }
    }

    /// `8·V` outputs of `max_taps_into`: the maxima and tags in 2V registers across the taps.
    ///
    /// # Safety
    /// AVX2; `m` and `best` have `8·V` writable elements and `s + off` `8·V` readable ones
    /// for every `off`.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn max_block<const V: usize>(m: *mut f32, best: *mut f32, s: *const f32, offs: &[usize], tags: &[f32]) {
        let mut mv = [_mm256_set1_ps(f32::NEG_INFINITY); V];
        let mut bv = [_mm256_set1_ps(-1.0); V];
        for (&off, &tag) in offs.iter().zip(tags) {
            let (t, p) = (_mm256_set1_ps(tag), s.add(off));
            for j in 0..V {
                let v = _mm256_loadu_ps(p.add(8 * j));
                // take = v > m (ordered) or v NaN: the rule of `max_tag_into`.
                let take = _mm256_or_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(v, mv[j]), _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
                mv[j] = _mm256_blendv_ps(mv[j], v, take);
                bv[j] = _mm256_blendv_ps(bv[j], t, take);
            }
        }
        for j in 0..V {
            _mm256_storeu_ps(m.add(8 * j), mv[j]);
            _mm256_storeu_ps(best.add(8 * j), bv[j]);
        }
    }

    /// `max_taps_into` for f32: blocks of 32 outputs, then of 8, then the tail tap by tap.
    ///
    /// # Safety
    /// AVX2; `off + n <= src.len()` for every `off` of the first `tags.len()` offsets, `n`
    /// being the common length of `m` and `best`.
    #[target_feature(enable = "avx2")]
    pub unsafe fn max_taps_into(m: &mut [f32], best: &mut [f32], src: &[f32], offs: &[usize], tags: &[f32]) {
        let (n, k) = (m.len().min(best.len()), offs.len().min(tags.len()));
        let (offs, tags) = (&offs[..k], &tags[..k]);
        let (mp, bp, sp) = (m.as_mut_ptr(), best.as_mut_ptr(), src.as_ptr());
        let mut i = 0;
        while i + 32 <= n {
            max_block::<4>(mp.add(i), bp.add(i), sp.add(i), offs, tags);
            i += 32;
        }
        while i + 8 <= n {
            max_block::<1>(mp.add(i), bp.add(i), sp.add(i), offs, tags);
            i += 8;
        }
        super::max_taps_by_tap(&mut m[i..n], &mut best[i..n], &src[i..], offs, tags);
    }

    /// `max_args_row` for f32 tags, eight outputs at a time in i32 lanes; returns how many
    /// outputs it wrote (the whole vectors; the caller does the tail).
    ///
    /// # Safety
    /// AVX2. Loads and stores stay within the common length of `a` and `tags`.
    #[target_feature(enable = "avx2")]
    pub unsafe fn max_args_row(a: &mut [u32], tags: &[f32], hit0: i32, corner_row: i32, s: i32) -> usize {
        let n = a.len().min(tags.len());
        let (h, c, one) = (_mm256_set1_epi32(hit0), _mm256_set1_epi32(corner_row - 1), _mm256_set1_epi32(1));
        let lanes = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(s));
        let mut i = 0;
        while i + 8 <= n {
            let x = _mm256_add_epi32(lanes, _mm256_set1_epi32(i as i32 * s));
            let t = _mm256_loadu_ps(tags.as_ptr().add(i));
            let hit = _mm256_add_epi32(_mm256_add_epi32(h, x), _mm256_cvttps_epi32(t));
            let corner = _mm256_add_epi32(c, _mm256_max_epi32(x, one));
            let won = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GE_OQ>(t, _mm256_setzero_ps()));
            let v = _mm256_blendv_epi8(corner, hit, won);
            _mm256_storeu_si256(a.as_mut_ptr().add(i).cast::<__m256i>(), v);
            i += 8;
        }
        i
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn mask_relu(g: &mut [f32], x: &[f32]) {
        // NLE_UQ: not (x ≤ 0), true for NaN, so a NaN input keeps its gradient.
        let z = _mm256_setzero_ps();
        lanes(g, x, x, |gv, xv, _| _mm256_and_ps(gv, _mm256_cmp_ps::<_CMP_NLE_UQ>(xv, z)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fused taps equal one zeroed buffer plus an axpy per tap, bit for bit, including
    /// a remainder shorter than a block: the dispatched loop, and each vector loop the CPU
    /// has (AVX2's blocks of 64/32/8, AVX-512's of 128/64/16) called directly, at lengths that
    /// use every block size and tail of both.
    #[test]
    fn taps_into_equals_axpy_per_tap() {
        let src: Vec<f32> = (0..300).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013).collect();
        let offs = [0usize, 1, 2, 34, 35, 36, 68, 69, 70];
        let w: Vec<f32> = (0..9).map(|i| 0.3 - 0.07 * i as f32).collect();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for n in [1, 15, 31, 32, 33, 100, 150, 209, 229] {
            let mut want = vec![0f32; n];
            for (&o, &wt) in offs.iter().zip(&w) {
                axpy(&mut want, wt, &src[o..o + n]);
            }
            let mut got = vec![f32::NAN; n];
            taps_into(&mut got, &src, &offs, &w);
            assert_eq!(bits(&got), bits(&want), "n = {n}");
            #[cfg(target_arch = "x86_64")]
            {
                if has_avx2() {
                    let mut got = vec![f32::NAN; n];
                    // SAFETY: the CPU has AVX2; the reads end at 70 + n ≤ 300.
                    unsafe { avx2_f32::taps_into(&mut got, &src, &offs, &w) };
                    assert_eq!(bits(&got), bits(&want), "AVX2, n = {n}");
                }
                if has_avx512f() {
                    let mut got = vec![f32::NAN; n];
                    // SAFETY: the CPU has AVX-512F; the reads end at 70 + n ≤ 300.
                    unsafe { avx512_f32::taps_into(&mut got, &src, &offs, &w) };
                    assert_eq!(bits(&got), bits(&want), "AVX-512, n = {n}");
                }
            }
        }
    }

    /// The multi-tap filter-gradient sums equal one `dot` per tap added in, bit for bit, for
    /// 3×3, 5×5 and odd tap counts (groups of one to nine) and lengths with and without a
    /// remainder; the portable path (f64) as well.
    #[test]
    fn dots_acc_equals_dot_per_tap() {
        let src: Vec<f32> = (0..400).map(|i| ((i * 53 % 97) as f32 - 48.0) * 0.021).collect();
        let g: Vec<f32> = (0..300).map(|i| ((i * 29 % 89) as f32 - 44.0) * 0.017).collect();
        for k in [1usize, 4, 9, 10, 25] {
            let offs: Vec<usize> = (0..k).map(|t| (t * 13) % 97).collect();
            for n in [0usize, 5, 8, 64, 101, 300] {
                let g = &g[..n];
                let init: Vec<f32> = (0..k).map(|t| 0.5 - 0.1 * t as f32).collect();
                let mut want = init.clone();
                for (a, &o) in want.iter_mut().zip(&offs) {
                    *a += dot(g, &src[o..o + n]);
                }
                let mut got = init.clone();
                dots_acc(&mut got, g, &src, &offs);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "k = {k}, n = {n}");
                let (g64, src64): (Vec<f64>, Vec<f64>) =
                    (g.iter().map(|&v| v as f64).collect(), src.iter().map(|&v| v as f64).collect());
                let mut want64: Vec<f64> = init.iter().map(|&v| v as f64).collect();
                let mut got64 = want64.clone();
                for (a, &o) in want64.iter_mut().zip(&offs) {
                    *a += dot(&g64, &src64[o..o + n]);
                }
                dots_acc(&mut got64, &g64, &src64, &offs);
                assert_eq!(got64, want64, "f64 k = {k}, n = {n}");
            }
        }
    }

    /// The register-blocked window maximum equals `max_tag_into` tap by tap from −∞ and tag
    /// −1, bit for bit (maxima and tags), on values with NaN, ±0, ±∞ and ties, for lengths
    /// that use the blocks of 32, of 8 and the tail; f64 through the portable path too.
    #[test]
    fn max_taps_into_equals_max_tag_into_per_tap() {
        let vals = [1.5f32, -2.0, 0.0, -0.0, f32::NAN, 3.0, -1.0, 3.0, 0.25, f32::INFINITY, -7.5, f32::NEG_INFINITY];
        let src: Vec<f32> = (0..200).map(|i| vals[(i * 7 + i / 13) % vals.len()]).collect();
        let offs = [0usize, 1, 2, 11, 12, 13, 22, 23, 24];
        let tags: Vec<f32> = (0..9).map(|t| ((t / 3) * 10 + t % 3) as f32).collect();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for n in [0usize, 3, 8, 31, 32, 45, 70, 170] {
            let (mut wm, mut wb) = (vec![f32::NEG_INFINITY; n], vec![-1f32; n]);
            for (&o, &t) in offs.iter().zip(&tags) {
                max_tag_into(&mut wm, &mut wb, &src[o..o + n], t);
            }
            let (mut m, mut b) = (vec![0f32; n], vec![0f32; n]);
            max_taps_into(&mut m, &mut b, &src, &offs, &tags);
            assert_eq!(bits(&m), bits(&wm), "maxima, n = {n}");
            assert_eq!(b, wb, "tags, n = {n}");
            let src64: Vec<f64> = src.iter().map(|&v| v as f64).collect();
            let tags64: Vec<f64> = tags.iter().map(|&v| v as f64).collect();
            let (mut m64, mut b64) = (vec![0f64; n], vec![0f64; n]);
            max_taps_into(&mut m64, &mut b64, &src64, &offs, &tags64);
            let wm64: Vec<f64> = wm.iter().map(|&v| v as f64).collect();
            assert_eq!(
                m64.iter().map(|v| v.is_nan()).collect::<Vec<_>>(),
                wm64.iter().map(|v| v.is_nan()).collect::<Vec<_>>()
            );
            assert!(
                m64.iter().zip(&wm64).all(|(a, b)| a.is_nan() || a.to_bits() == b.to_bits()),
                "f64 maxima, n = {n}"
            );
            assert_eq!(b64, wb.iter().map(|&v| v as f64).collect::<Vec<_>>(), "f64 tags, n = {n}");
        }
    }

    /// The arg-max indices from the tags, against the formula in i64, for winners and
    /// untouched (−1) windows, strides 1 and 2, the first row (negative hit0) and tails.
    #[test]
    fn max_args_row_follows_the_index_formula() {
        let w = 9i64;
        let tag_of = |i: usize| if i % 5 == 3 { -1.0f32 } else { ((i % 3) as i64 * w + (i % 7 % 3) as i64) as f32 };
        for s in [1usize, 2] {
            for oy in [0i64, 1, 4] {
                let hit0 = oy * s as i64 * w - w - 1;
                let corner_row = ((oy * s as i64).max(1) - 1) * w;
                for n in [0usize, 5, 8, 13, 30] {
                    let tags: Vec<f32> = (0..n).map(tag_of).collect();
                    let mut a = vec![0u32; n];
                    max_args_row(&mut a, &tags, hit0, corner_row, s);
                    let want: Vec<u32> = (0..n)
                        .map(|ox| {
                            let x = (ox * s) as i64;
                            let t = tags[ox];
                            (if t >= 0.0 { hit0 + x + t as i64 } else { corner_row + x.max(1) - 1 }) as u32
                        })
                        .collect();
                    assert_eq!(a, want, "s {s} oy {oy} n {n}");
                    let tags64: Vec<f64> = tags.iter().map(|&t| t as f64).collect();
                    let mut a64 = vec![0u32; n];
                    max_args_row(&mut a64, &tags64, hit0, corner_row, s);
                    assert_eq!(a64, want, "f64 s {s} oy {oy} n {n}");
                }
            }
        }
    }

    /// The element rules written out once, independently of the kernels, as PyTorch states
    /// them: a window maximum is replaced by a strictly greater value or by a NaN (its tag
    /// with it); ReLU is 0 below 0 and the value itself otherwise (NaN and −0 pass); its
    /// gradient is 0 where x ≤ 0 and passes otherwise (also for NaN).
    fn rule_max_tag(m: f32, b: f32, v: f32, tag: f32) -> (f32, f32) {
        if v > m || v.is_nan() {
            (v, tag)
        } else {
            (m, b)
        }
    }
    fn rule_relu(x: f32) -> f32 {
        if x < 0.0 {
            0.0
        } else {
            x
        }
    }
    fn rule_mask(g: f32, x: f32) -> f32 {
        if x <= 0.0 {
            0.0
        } else {
            g
        }
    }

    /// The two blended updates as one implementation computes them.
    struct Blends {
        max_tag_into: fn(&mut [f32], &mut [f32], &[f32], f32),
        mask_relu: fn(&mut [f32], &[f32]),
    }

    /// `blends` give the rules' results bit for bit, on values that include NaN, ±0, ±∞ and
    /// ties, and on tails shorter than a vector.
    fn check_blends(path: &str, blends: &Blends) {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let nan = f32::NAN;
        // Hand-checked cases of the rules themselves: (m, src) → max and tag (best 5, tag 9),
        // relu(m), mask(m by src).
        let (d, s) = (
            [1.0f32, nan, -0.0, 0.0, -3.0, 2.0, nan, f32::NEG_INFINITY],
            [nan, 2.0, 0.0, -0.0, -1.0, 2.0, nan, f32::NEG_INFINITY],
        );
        let (mut x, mut b) = (d.to_vec(), vec![5.0f32; d.len()]);
        (blends.max_tag_into)(&mut x, &mut b, &s, 9.0);
        assert_eq!(bits(&x), bits(&[nan, nan, -0.0, 0.0, -1.0, 2.0, nan, f32::NEG_INFINITY]), "{path} max_tag_into");
        assert_eq!(b, [9.0, 5.0, 5.0, 5.0, 9.0, 5.0, 9.0, 5.0], "{path} max_tag_into tags");
        let mut x = vec![0f32; d.len()];
        relu_into(&mut x, &d);
        assert_eq!(bits(&x), bits(&[1.0, nan, -0.0, 0.0, 0.0, 2.0, nan, 0.0]), "{path} relu_into");
        let mut x = d.to_vec();
        (blends.mask_relu)(&mut x, &s);
        assert_eq!(bits(&x), bits(&[1.0, nan, 0.0, 0.0, 0.0, 2.0, nan, 0.0]), "{path} mask_relu");

        let vals = [1.5f32, -2.0, 0.0, -0.0, nan, 3.0, -1.0, 3.0, 0.25, f32::INFINITY, -7.5, f32::NEG_INFINITY];
        let a: Vec<f32> = (0..45).map(|i| vals[i % vals.len()]).collect();
        let b: Vec<f32> = (0..45).map(|i| vals[(i * 7 + 3) % vals.len()]).collect();
        let tags: Vec<f32> = (0..45).map(|i| (i % 9) as f32).collect();
        for n in [0, 3, 8, 13, 45] {
            let (a, b, tags) = (&a[..n], &b[..n], &tags[..n]);
            let (mut x, mut t) = (a.to_vec(), tags.to_vec());
            (blends.max_tag_into)(&mut x, &mut t, b, 9.0);
            let want: Vec<(f32, f32)> =
                a.iter().zip(tags).zip(b).map(|((&m, &tg), &v)| rule_max_tag(m, tg, v, 9.0)).collect();
            assert_eq!(bits(&x), bits(&want.iter().map(|w| w.0).collect::<Vec<_>>()), "{path} max_tag_into n={n}");
            assert_eq!(t, want.iter().map(|w| w.1).collect::<Vec<_>>(), "{path} max_tag_into tags n={n}");
            let want: Vec<f32> = a.iter().map(|&v| rule_relu(v)).collect();
            let mut x = vec![0f32; n];
            relu_into(&mut x, a);
            assert_eq!(bits(&x), bits(&want), "{path} relu_into n={n}");
            // The same rows through relu_rows, one row of n or rows of 3 at a stride of 4.
            let mut x = vec![0f32; n];
            relu_rows(&mut x, 0, n, a, n);
            assert_eq!(bits(&x), bits(&want), "{path} relu_rows n={n}");
            let rows = n / 3;
            let mut x = vec![7f32; 4 * rows + 1];
            relu_rows(&mut x, 1, 4, &a[..3 * rows], 3);
            let got: Vec<f32> = (0..rows).flat_map(|r| x[1 + 4 * r..4 + 4 * r].to_vec()).collect();
            assert_eq!(bits(&got), bits(&want[..3 * rows]), "{path} relu_rows strided n={n}");
            assert!((0..=rows).all(|r| x[4 * r] == 7.0), "{path} relu_rows wrote between rows");
            let mut x = b.to_vec();
            (blends.mask_relu)(&mut x, a);
            let want: Vec<f32> = b.iter().zip(a).map(|(&g, &v)| rule_mask(g, v)).collect();
            assert_eq!(bits(&x), bits(&want), "{path} mask_relu n={n}");
        }
    }

    /// The dispatching wrappers, the portable loops and (where the CPU has it) the AVX2 blends
    /// each against the rules, so that on an AVX2 host the AVX2 code meets a reference that is
    /// not itself, and elsewhere the test says that it was not run.
    #[test]
    fn blended_updates_equal_the_element_rules() {
        #[cfg(target_arch = "x86_64")]
        assert_eq!(has_avx2(), std::arch::is_x86_feature_detected!("avx2"), "the dispatch and the CPU disagree");
        #[cfg(not(target_arch = "x86_64"))]
        assert!(!has_avx2());
        check_blends("dispatch", &Blends { max_tag_into: max_tag_into::<f32>, mask_relu: mask_relu::<f32> });
        check_blends(
            "portable",
            &Blends { max_tag_into: max_tag_into_generic::<f32>, mask_relu: mask_relu_generic::<f32> },
        );
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY (both): the CPU supports AVX2 (checked just above).
            check_blends(
                "avx2",
                &Blends {
                    max_tag_into: |m, b, s, t| unsafe { avx2_f32::max_tag_into(m, b, s, t) },
                    mask_relu: |g, x| unsafe { avx2_f32::mask_relu(g, x) },
                },
            );
            eprintln!("simd: AVX2 detected; the dispatch, the portable loops and the AVX2 blends were checked");
            return;
        }
        eprintln!("simd: no AVX2 on this CPU; only the dispatch (portable) and the portable loops were checked");
    }
}
