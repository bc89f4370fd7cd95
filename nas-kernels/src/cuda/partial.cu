// The PC-DARTS merge shuffle(cat[y, bypass(x[:, C/K:])], K): output channel o reads
// concatenated channel q = (o mod K)·(C/K) + o div K, from y when q < C/K, else from x (the
// identity, or the 2x2 maximum on reducing edges, first maximum on ties). Both gradients are
// gathers.
#include "common.cuh"

__device__ __forceinline__ i64 pc_source(const PcArgs& g, i64 o) { return (o % g.k) * g.ca + o / g.k; }
__device__ __forceinline__ i64 pc_target(const PcArgs& g, i64 q) { return (q % g.ca) * g.k + q / g.ca; }

// Offset in an x plane of the maximum of the 2x2 window of output (i, j), PyTorch's rule:
// a strictly greater value or a NaN (v != v) replaces it, so a NaN wins (the last one).
template <typename T>
__device__ __forceinline__ i64 pc_argmax(const T* xp, const PcArgs& g, i64 i, i64 j) {
    i64 best = 2 * i * g.w + 2 * j;
    const i64 cand[3] = {best + 1, best + g.w, best + g.w + 1};
    for (int t = 0; t < 3; ++t) {
        const T v = xp[cand[t]];
        if (v > xp[best] || v != v) best = cand[t];
    }
    return best;
}

template <typename T>
__device__ void pc_fwd(const T* y, const T* x, T* out, PcArgs g) {
    const i64 n = g.b * g.c * g.ho * g.wo;
    NAS_FOR(i, n) {
        const i64 j = i % g.wo, r = (i / g.wo) % g.ho, o = (i / (g.wo * g.ho)) % g.c, b = i / (g.wo * g.ho * g.c);
        const i64 q = pc_source(g, o);
        if (q < g.ca) {
            out[i] = y[((b * g.ca + q) * g.ho + r) * g.wo + j];
        } else {
            const T* xp = x + (b * g.c + q) * g.h * g.w;
            out[i] = g.stride == 1 ? xp[r * g.w + j] : xp[pc_argmax(xp, g, r, j)];
        }
    }
}
#define PC_FWD_P(T) (const T* y, const T* x, T* out, PcArgs g)
NAS_KERNELS(pc_fwd, false, PC_FWD_P, (y, x, out, g))

template <typename T>
__device__ void pc_bwd_y(const T* gout, T* gy, PcArgs g) {
    const i64 n = g.b * g.ca * g.ho * g.wo;
    NAS_FOR(i, n) {
        const i64 p = i % (g.ho * g.wo), q = (i / (g.ho * g.wo)) % g.ca, b = i / (g.ho * g.wo * g.ca);
        gy[i] = gout[(b * g.c + pc_target(g, q)) * g.ho * g.wo + p];
    }
}
#define PC_BWD_Y_P(T) (const T* gout, T* gy, PcArgs g)
NAS_KERNELS(pc_bwd_y, false, PC_BWD_Y_P, (gout, gy, g))

template <typename T>
__device__ void pc_bwd_x(const T* gout, const T* x, T* gx, PcArgs g) {
    const i64 n = g.b * g.c * g.h * g.w;
    NAS_FOR(k, n) {
        const i64 ix = k % g.w, iy = (k / g.w) % g.h, q = (k / (g.w * g.h)) % g.c, b = k / (g.w * g.h * g.c);
        T v = T(0);
        if (q >= g.ca) {
            const T* src = gout + (b * g.c + pc_target(g, q)) * g.ho * g.wo;
            if (g.stride == 1) {
                v = src[iy * g.wo + ix];
            } else {
                const i64 r = iy / 2, j = ix / 2;
                const T* xp = x + (b * g.c + q) * g.h * g.w;
                if (r < g.ho && j < g.wo && pc_argmax(xp, g, r, j) == iy * g.w + ix) v = src[r * g.wo + j];
            }
        }
        gx[k] = v;
    }
}
#define PC_BWD_X_P(T) (const T* gout, const T* x, T* gx, PcArgs g)
NAS_KERNELS(pc_bwd_x, false, PC_BWD_X_P, (gout, x, gx, g))
