// The sampled (and ReLU'd) operand of a 1x1 convolution and its gradient: x (B, Ci, H, W)
// read at (offset + s·i, offset + s·j) into (B, Ci, OH, OW) for the batched GEMM, and the
// GEMM's input gradient written back to those pixels (zero elsewhere), masked by x > 0 with
// ReLU. Every pixel is hit by at most one output, so both are plain gathers.
#include "common.cuh"

template <typename T>
__device__ void pw_gather(const T* x, T* out, PwArgs g, int relu) {
    const i64 n = g.b * g.ci * g.oh * g.ow;
    NAS_FOR(i, n) {
        const i64 j = i % g.ow, r = (i / g.ow) % g.oh, plane = i / (g.ow * g.oh);
        const T v = x[plane * g.h * g.w + (g.offset + g.stride * r) * g.w + g.offset + g.stride * j];
        out[i] = (relu && v < T(0)) ? T(0) : v;
    }
}
#define PW_GATHER_P(T) (const T* x, T* out, PwArgs g, int relu)
NAS_KERNELS(pw_gather, false, PW_GATHER_P, (x, out, g, relu))

template <typename T>
__device__ void pw_scatter(const T* gs, const T* x, T* gx, PwArgs g, int relu) {
    const i64 n = g.b * g.ci * g.h * g.w;
    NAS_FOR(k, n) {
        const i64 ix = k % g.w, iy = (k / g.w) % g.h, plane = k / (g.w * g.h);
        const i64 ty = iy - g.offset, tx = ix - g.offset;
        T v = T(0);
        if (ty >= 0 && tx >= 0 && ty % g.stride == 0 && tx % g.stride == 0 && ty / g.stride < g.oh &&
            tx / g.stride < g.ow) {
            v = gs[plane * g.oh * g.ow + (ty / g.stride) * g.ow + tx / g.stride];
        }
        gx[k] = (relu && x[k] <= T(0)) ? T(0) : v;
    }
}
#define PW_SCATTER_P(T) (const T* gs, const T* x, T* gx, PwArgs g, int relu)
NAS_KERNELS(pw_scatter, false, PW_SCATTER_P, (gs, x, gx, g, relu))
