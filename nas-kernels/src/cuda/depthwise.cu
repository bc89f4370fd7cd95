// Depthwise convolution: x (B, C, H, W), w (C, 1, K, K), y (B, C, OH, OW), stride s, zero
// padding p, dilation d; optionally ReLU applied to x as it is read. The forward and the
// input gradient are one thread per element (the input gradient a gather over the taps that
// reach it); the filter gradient is a block reduction per (channel, chunk of its outputs),
// all K² taps at once, then an ordered sum of the chunks.
#include "common.cuh"

template <typename T>
__device__ __forceinline__ T relu_if(T v, int relu) {
    return (relu && v < T(0)) ? T(0) : v;
}

// The kernels are instantiated for K = 3 and K = 5 (the DARTS filters: loops unrolled, the
// filter-gradient taps in registers) and K = 0 (any size up to 5, read from the arguments).
#define NAS_DW_BY_K(f, ...)       \
    if (g.k == 3) {               \
        f<T, 3>(__VA_ARGS__);     \
    } else if (g.k == 5) {        \
        f<T, 5>(__VA_ARGS__);     \
    } else {                      \
        f<T, 0>(__VA_ARGS__);     \
    }

// y[i], i = ((b·C + c)·OH + oy)·OW + ox: the taps in filter order, from zero.
template <typename T, int K>
__device__ __forceinline__ void dw_fwd_k(const T* x, const T* w, T* y, const DwArgs& g, int relu) {
    const i64 n = g.b * g.c * g.oh * g.ow;
    const i64 k = K > 0 ? K : g.k;
    NAS_FOR(i, n) {
        const i64 ox = i % g.ow, oy = (i / g.ow) % g.oh, plane = i / (g.ow * g.oh), c = plane % g.c;
        const T* xp = x + plane * g.h * g.w;
        const T* wk = w + c * k * k;
        T acc = T(0);
        for (i64 kh = 0; kh < k; ++kh) {
            const i64 iy = oy * g.stride - g.pad + kh * g.dil;
            if (iy < 0 || iy >= g.h) continue;
            for (i64 kw = 0; kw < k; ++kw) {
                const i64 ix = ox * g.stride - g.pad + kw * g.dil;
                if (ix < 0 || ix >= g.w) continue;
                acc += wk[kh * k + kw] * relu_if(xp[iy * g.w + ix], relu);
            }
        }
        y[i] = acc;
    }
}

template <typename T>
__device__ void dw_fwd(const T* x, const T* w, T* y, DwArgs g, int relu) {
    NAS_DW_BY_K(dw_fwd_k, x, w, y, g, relu)
}
#define DW_FWD_P(T) (const T* x, const T* w, T* y, DwArgs g, int relu)
NAS_KERNELS(dw_fwd, false, DW_FWD_P, (x, w, y, g, relu))

// gx[j], j = ((b·C + c)·H + iy)·W + ix: Σ over the taps (kh, kw) and outputs (oy, ox) with
// oy·s − p + kh·d = iy (and the same for x) of w·gy; zero where x <= 0 with `relu`.
template <typename T, int K>
__device__ __forceinline__ void dw_bwd_x_k(const T* gy, const T* w, const T* x, T* gx, const DwArgs& g, int relu) {
    const i64 n = g.b * g.c * g.h * g.w;
    const i64 k = K > 0 ? K : g.k;
    NAS_FOR(j, n) {
        if (relu && x[j] <= T(0)) {
            gx[j] = T(0);
            continue;
        }
        const i64 ix = j % g.w, iy = (j / g.w) % g.h, plane = j / (g.w * g.h), c = plane % g.c;
        const T* gp = gy + plane * g.oh * g.ow;
        const T* wk = w + c * k * k;
        T acc = T(0);
        for (i64 kh = 0; kh < k; ++kh) {
            const i64 ty = iy + g.pad - kh * g.dil;
            if (ty < 0 || ty % g.stride != 0 || ty / g.stride >= g.oh) continue;
            for (i64 kw = 0; kw < k; ++kw) {
                const i64 tx = ix + g.pad - kw * g.dil;
                if (tx < 0 || tx % g.stride != 0 || tx / g.stride >= g.ow) continue;
                acc += wk[kh * k + kw] * gp[(ty / g.stride) * g.ow + tx / g.stride];
            }
        }
        gx[j] = acc;
    }
}

template <typename T>
__device__ void dw_bwd_x(const T* gy, const T* w, const T* x, T* gx, DwArgs g, int relu) {
    NAS_DW_BY_K(dw_bwd_x_k, gy, w, x, gx, g, relu)
}
#define DW_BWD_X_P(T) (const T* gy, const T* w, const T* x, T* gx, DwArgs g, int relu)
NAS_KERNELS(dw_bwd_x, false, DW_BWD_X_P, (gy, w, x, gx, g, relu))

// Filter-gradient partial sums: block (c, s) of a (C, splits) grid sums, for every tap t,
// gy·x_tap over outputs s·chunk .. (s+1)·chunk of channel c (an output index runs over
// (b, oy, ox)), and writes partial[(c·splits + s)·K² + t].
#define NAS_MAX_TAPS 25
template <typename T, int K>
__device__ __forceinline__ void dw_bwd_w_partial_k(const T* x, const T* gy, double* partial, const DwArgs& g,
                                                   int relu, double* sh) {
    const i64 k = K > 0 ? K : g.k;
    const i64 c = blockIdx.x, s = blockIdx.y, kk = k * k;
    double acc[K > 0 ? K * K : NAS_MAX_TAPS];
    for (i64 t = 0; t < kk; ++t) acc[t] = 0.0;
    NAS_FOR_CHUNK(q, g.b * g.oh * g.ow, g.chunk) {
        const i64 ox = q % g.ow, oy = (q / g.ow) % g.oh, b = q / (g.ow * g.oh);
        const i64 plane = b * g.c + c;
        const double gv = (double)gy[plane * g.oh * g.ow + oy * g.ow + ox];
        const T* xp = x + plane * g.h * g.w;
        for (i64 kh = 0; kh < k; ++kh) {
            const i64 iy = oy * g.stride - g.pad + kh * g.dil;
            if (iy < 0 || iy >= g.h) continue;
            for (i64 kw = 0; kw < k; ++kw) {
                const i64 ix = ox * g.stride - g.pad + kw * g.dil;
                if (ix < 0 || ix >= g.w) continue;
                acc[kh * k + kw] += gv * (double)relu_if(xp[iy * g.w + ix], relu);
            }
        }
    }
    for (i64 t = 0; t < kk; ++t) {
        const double total = nas_block_sum(acc[t], sh);
        if (threadIdx.x == 0) partial[(c * g.splits + s) * kk + t] = total;
    }
}

template <typename T>
__device__ void dw_bwd_w_partial(const T* x, const T* gy, double* partial, DwArgs g, int relu) {
    __shared__ double sh[NAS_REDUCE_THREADS];
    NAS_DW_BY_K(dw_bwd_w_partial_k, x, gy, partial, g, relu, sh)
}
#define DW_BWD_W_PARTIAL_P(T) (const T* x, const T* gy, double* partial, DwArgs g, int relu)
NAS_KERNELS(dw_bwd_w_partial, true, DW_BWD_W_PARTIAL_P, (x, gy, partial, g, relu))

// gw[c·K² + t] = Σ_s partial[(c·splits + s)·K² + t], the chunks in order.
template <typename T>
__device__ void dw_bwd_w_finish(const double* partial, T* gw, DwArgs g) {
    const i64 kk = g.k * g.k;
    NAS_FOR(i, g.c * kk) {
        const i64 c = i / kk, t = i % kk;
        double s = 0.0;
        for (i64 p = 0; p < g.splits; ++p) s += partial[(c * g.splits + p) * kk + t];
        gw[i] = (T)s;
    }
}
#define DW_BWD_W_FINISH_P(T) (const double* partial, T* gw, DwArgs g)
NAS_KERNELS(dw_bwd_w_finish, false, DW_BWD_W_FINISH_P, (partial, gw, g))
