//! Hot inner loops compiled twice: for the x86-64 baseline the binary targets, and with AVX2
//! enabled, picked at run time by CPU feature detection (the kernels' loops then run on
//! 256-bit vectors). Other architectures use the portable version.

use super::kernel::Float;

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
    /// dst = max(dst, src) element-wise (strictly greater replaces).
    pub(crate) fn max_into<T: Float>(dst: &mut [T], src: &[T]) {
        for (m, &v) in dst.iter_mut().zip(src) {
            *m = if v > *m { v } else { *m };
        }
    }
}

simd_fn! {
    /// best = tag where src == m.
    pub(crate) fn tag_equal<T: Float>(best: &mut [T], m: &[T], src: &[T], tag: T) {
        for ((b, &mv), &v) in best.iter_mut().zip(m).zip(src) {
            *b = if v == mv { tag } else { *b };
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
    /// out = x·a + b.
    pub(crate) fn affine_into<T: Float>(out: &mut [T], x: &[T], a: T, b: T) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = v * a + b;
        }
    }
}

simd_fn! {
    /// out = acc + x·a + b.
    pub(crate) fn affine_acc_into<T: Float>(out: &mut [T], x: &[T], a: T, b: T, acc: &[T]) {
        for ((o, &v), &r) in out.iter_mut().zip(x).zip(acc) {
            *o = r + (v * a + b);
        }
    }
}

simd_fn! {
    /// (Σx, Σx²) in f64.
    pub(crate) fn sum_sumsq<T: Float>(x: &[T]) -> (f64, f64) {
        let mut s = [0f64; 4];
        let mut q = [0f64; 4];
        let mut it = x.chunks_exact(4);
        for c in &mut it {
            for i in 0..4 {
                let v = c[i].to_f64();
                s[i] += v;
                q[i] += v * v;
            }
        }
        for &v in it.remainder() {
            let v = v.to_f64();
            s[0] += v;
            q[0] += v * v;
        }
        (s.iter().sum(), q.iter().sum())
    }
}

simd_fn! {
    /// (Σa, Σa·b) in f64.
    pub(crate) fn sum_dot<T: Float>(a: &[T], b: &[T]) -> (f64, f64) {
        let mut s = [0f64; 4];
        let mut d = [0f64; 4];
        let mut ca = a.chunks_exact(4);
        let mut cb = b.chunks_exact(4);
        for (x, y) in (&mut ca).zip(&mut cb) {
            for i in 0..4 {
                let u = x[i].to_f64();
                s[i] += u;
                d[i] += u * y[i].to_f64();
            }
        }
        for (&x, &y) in ca.remainder().iter().zip(cb.remainder()) {
            s[0] += x.to_f64();
            d[0] += x.to_f64() * y.to_f64();
        }
        (s.iter().sum(), d.iter().sum())
    }
}

simd_fn! {
    /// out = inv·g − m1 − y·m2 (the batch-norm input gradient of one plane).
    pub(crate) fn bn_grad_into<T: Float>(out: &mut [T], g: &[T], y: &[T], inv: T, m1: T, m2: T) {
        for ((o, &gv), &yv) in out.iter_mut().zip(g).zip(y) {
            *o = inv * gv - m1 - yv * m2;
        }
    }
}

simd_fn! {
    /// dst = max(src, 0), branch-free (a select per element, so it vectorises; data-dependent
    /// branches mispredict on half of the elements).
    pub(crate) fn relu_into<T: Float>(dst: &mut [T], src: &[T]) {
        for (d, &x) in dst.iter_mut().zip(src) {
            *d = if x > T::zero() { x } else { T::zero() };
        }
    }
}

simd_fn! {
    /// v = max(v, 0), branch-free.
    pub(crate) fn relu_in_place<T: Float>(v: &mut [T]) {
        for x in v.iter_mut() {
            *x = if *x > T::zero() { *x } else { T::zero() };
        }
    }
}

simd_fn! {
    /// g = g where x > 0, else 0 (the ReLU backward, into the gradient buffer).
    pub(crate) fn mask_positive<T: Float>(g: &mut [T], x: &[T]) {
        for (v, &xv) in g.iter_mut().zip(x) {
            *v = if xv > T::zero() { *v } else { T::zero() };
        }
    }
}
