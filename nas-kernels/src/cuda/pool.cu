// 3x3 pooling with padding 1 (stride 1 or 2): max pooling records the tap (0..9, row-major in
// the window) of each output's first maximum (or last NaN, which is then the output), and its
// gradient goes back only there; average pooling divides by the number of in-image pixels of
// the window. Both gradients are gathers (one thread per input pixel over the windows that
// contain it). Also the valid k x k average pooling of the auxiliary head.
#include "common.cuh"

template <typename T>
__device__ void pool_max_fwd(const T* x, T* y, unsigned char* tap, PoolArgs g) {
    const i64 n = g.b * g.c * g.oh * g.ow;
    NAS_FOR(i, n) {
        const i64 ox = i % g.ow, oy = (i / g.ow) % g.oh, plane = i / (g.ow * g.oh);
        const T* xp = x + plane * g.h * g.w;
        const i64 y0 = oy * g.stride - 1, x0 = ox * g.stride - 1;
        // PyTorch's max_pool2d scan, as the CPU kernels: a strictly greater value or a NaN
        // (v != v) replaces the running maximum, so ties keep the first tap and the last NaN
        // wins; an all −inf window keeps its first in-image tap (the clipped top-left).
        int best = (y0 < 0 ? 3 : 0) + (x0 < 0 ? 1 : 0);
        T m = -INFINITY;
        for (int t = 0; t < 9; ++t) {
            const i64 iy = y0 + t / 3, ix = x0 + t % 3;
            if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) continue;
            const T v = xp[iy * g.w + ix];
            if (v > m || v != v) {
                m = v;
                best = t;
            }
        }
        y[i] = m;
        tap[i] = (unsigned char)best;
    }
}
#define POOL_MAX_FWD_P(T) (const T* x, T* y, unsigned char* tap, PoolArgs g)
NAS_KERNELS(pool_max_fwd, false, POOL_MAX_FWD_P, (x, y, tap, g))

template <typename T>
__device__ void pool_avg_fwd(const T* x, T* y, PoolArgs g) {
    const i64 n = g.b * g.c * g.oh * g.ow;
    NAS_FOR(i, n) {
        const i64 ox = i % g.ow, oy = (i / g.ow) % g.oh, plane = i / (g.ow * g.oh);
        const T* xp = x + plane * g.h * g.w;
        const i64 y0 = oy * g.stride - 1, x0 = ox * g.stride - 1;
        T s = T(0);
        i64 count = 0;
        for (int t = 0; t < 9; ++t) {
            const i64 iy = y0 + t / 3, ix = x0 + t % 3;
            if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) continue;
            s += xp[iy * g.w + ix];
            ++count;
        }
        y[i] = s * (T)(1.0 / (double)count);
    }
}
#define POOL_AVG_FWD_P(T) (const T* x, T* y, PoolArgs g)
NAS_KERNELS(pool_avg_fwd, false, POOL_AVG_FWD_P, (x, y, g))

// Number of in-image pixels of the 3x3 window of output (oy, ox).
__device__ __forceinline__ i64 window_count(const PoolArgs& g, i64 oy, i64 ox) {
    const i64 y0 = oy * g.stride - 1, x0 = ox * g.stride - 1;
    const i64 ylo = y0 < 0 ? 0 : y0, yhi = (y0 + 3 < g.h) ? y0 + 3 : g.h;
    const i64 xlo = x0 < 0 ? 0 : x0, xhi = (x0 + 3 < g.w) ? x0 + 3 : g.w;
    return (yhi - ylo) * (xhi - xlo);
}

// gx[j]: over the windows (oy, ox) containing input (iy, ix) at tap t, the max-pool gradient
// adds gy where the recorded tap is t; the average-pool gradient adds gy / count.
template <typename T>
__device__ void pool_bwd(const T* gy, const unsigned char* tap, T* gx, PoolArgs g, int max) {
    const i64 n = g.b * g.c * g.h * g.w;
    NAS_FOR(j, n) {
        const i64 ix = j % g.w, iy = (j / g.w) % g.h, plane = j / (g.w * g.h);
        const i64 base = plane * g.oh * g.ow;
        T acc = T(0);
        for (int t = 0; t < 9; ++t) {
            const i64 ty = iy + 1 - t / 3, tx = ix + 1 - t % 3;
            if (ty < 0 || tx < 0 || ty % g.stride != 0 || tx % g.stride != 0) continue;
            const i64 oy = ty / g.stride, ox = tx / g.stride;
            if (oy >= g.oh || ox >= g.ow) continue;
            const i64 o = base + oy * g.ow + ox;
            if (max) {
                if (tap[o] == t) acc += gy[o];
            } else {
                acc += gy[o] * (T)(1.0 / (double)window_count(g, oy, ox));
            }
        }
        gx[j] = acc;
    }
}
#define POOL_BWD_P(T) (const T* gy, const unsigned char* tap, T* gx, PoolArgs g, int max)
NAS_KERNELS(pool_bwd, false, POOL_BWD_P, (gy, tap, gx, g, max))

// k x k windows with stride s inside the image: the mean of k² values.
template <typename T>
__device__ void avg_valid_fwd(const T* x, T* y, ValidArgs g) {
    const i64 n = g.planes * g.oh * g.ow;
    const T inv = (T)(1.0 / (double)(g.k * g.k));
    NAS_FOR(i, n) {
        const i64 ox = i % g.ow, oy = (i / g.ow) % g.oh, plane = i / (g.ow * g.oh);
        const T* xp = x + plane * g.h * g.w + (oy * g.stride) * g.w + ox * g.stride;
        T s = T(0);
        for (i64 ky = 0; ky < g.k; ++ky)
            for (i64 kx = 0; kx < g.k; ++kx) s += xp[ky * g.w + kx];
        y[i] = s * inv;
    }
}
#define AVG_VALID_FWD_P(T) (const T* x, T* y, ValidArgs g)
NAS_KERNELS(avg_valid_fwd, false, AVG_VALID_FWD_P, (x, y, g))

template <typename T>
__device__ void avg_valid_bwd(const T* gy, T* gx, ValidArgs g) {
    const i64 n = g.planes * g.h * g.w;
    const T inv = (T)(1.0 / (double)(g.k * g.k));
    NAS_FOR(j, n) {
        const i64 ix = j % g.w, iy = (j / g.w) % g.h, plane = j / (g.w * g.h);
        const T* gp = gy + plane * g.oh * g.ow;
        T acc = T(0);
        for (i64 ky = 0; ky < g.k; ++ky) {
            const i64 ty = iy - ky;
            if (ty < 0 || ty % g.stride != 0 || ty / g.stride >= g.oh) continue;
            for (i64 kx = 0; kx < g.k; ++kx) {
                const i64 tx = ix - kx;
                if (tx < 0 || tx % g.stride != 0 || tx / g.stride >= g.ow) continue;
                acc += gp[(ty / g.stride) * g.ow + tx / g.stride] * inv;
            }
        }
        gx[j] = acc;
    }
}
#define AVG_VALID_BWD_P(T) (const T* gy, T* gx, ValidArgs g)
NAS_KERNELS(avg_valid_bwd, false, AVG_VALID_BWD_P, (gy, gx, g))
