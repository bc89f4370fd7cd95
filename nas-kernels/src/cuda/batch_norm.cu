// Batch normalisation over x (B, C, HW): per-channel sums in f64 by a (C, splits) grid of
// block reductions (each block a fixed chunk of the channel's B·HW values) and one thread per
// channel to finish them in chunk order; then one elementwise pass with per-channel (and, for
// drop path, per-sample) coefficients. The forward's finish writes the batch mean and biased
// variance for the backward and updates the running statistics in place; nothing goes to the
// host. The channel affine map's kernels are here too.
#include "common.cuh"

// Value q (0 ≤ q < B·HW) of channel c.
__device__ __forceinline__ i64 bn_at(const BnArgs& g, i64 c, i64 q) { return ((q / g.hw) * g.c + c) * g.hw + q % g.hw; }

// partial[(c·splits + s)·2 + {0, 1}] over chunk s of channel c:
//   b == null: (Σ a, Σ a²);  else: (Σ f·a, Σ f·a·b) with f = m[sample] (1 when m is null).
template <typename T>
__device__ void bn_partial(const T* a, const T* b, const T* m, double* partial, BnArgs g) {
    __shared__ double sh[NAS_REDUCE_THREADS];
    const i64 c = blockIdx.x, s = blockIdx.y;
    double s1 = 0.0, s2 = 0.0;
    NAS_FOR_CHUNK(q, g.b * g.hw, g.chunk) {
        const i64 at = bn_at(g, c, q);
        const double v = (double)a[at];
        if (b) {
            const double f = m ? (double)m[q / g.hw] : 1.0;
            s1 += f * v;
            s2 += f * v * (double)b[at];
        } else {
            s1 += v;
            s2 += v * v;
        }
    }
    const double t1 = nas_block_sum(s1, sh);
    const double t2 = nas_block_sum(s2, sh);
    if (threadIdx.x == 0) {
        partial[(c * g.splits + s) * 2] = t1;
        partial[(c * g.splits + s) * 2 + 1] = t2;
    }
}
#define BN_PARTIAL_P(T) (const T* a, const T* b, const T* m, double* partial, BnArgs g)
NAS_KERNELS(bn_partial, true, BN_PARTIAL_P, (a, b, m, partial, g))

// The chunk sums (S1, S2) of channel c, in chunk order.
__device__ __forceinline__ void bn_sums(const double* partial, const BnArgs& g, i64 c, double* s1, double* s2) {
    double a = 0.0, b = 0.0;
    for (i64 s = 0; s < g.splits; ++s) {
        a += partial[(c * g.splits + s) * 2];
        b += partial[(c * g.splits + s) * 2 + 1];
    }
    *s1 = a;
    *s2 = b;
}

// Forward finish, one thread per channel: mean μ and biased variance σ² into stats (2, C);
// the coefficients of y = a·x + sh, a = γ/√(σ²+ε), sh = β − μ·a (γ = 1, β = 0 when null)
// into coef (2, C); and, when run_mean is not null, the running statistics
// r ← (1 − momentum)·r + momentum·s with the unbiased variance.
template <typename T>
__device__ void bn_fwd_finish(const double* partial, const T* gamma, const T* beta, double* stats, double* coef,
                              T* run_mean, T* run_var, BnArgs g, double eps, double momentum) {
    NAS_FOR(c, g.c) {
        double s1, s2;
        bn_sums(partial, g, c, &s1, &s2);
        const double n = (double)(g.b * g.hw);
        const double mean = s1 / n;
        double var = s2 / n - mean * mean;
        if (var < 0.0) var = 0.0;
        stats[c] = mean;
        stats[g.c + c] = var;
        const double inv = 1.0 / sqrt(var + eps);
        const double ga = gamma ? (double)gamma[c] : 1.0;
        const double be = beta ? (double)beta[c] : 0.0;
        coef[c] = ga * inv;
        coef[g.c + c] = be - mean * ga * inv;
        if (run_mean) {
            const double unbiased = n > 1.0 ? n / (n - 1.0) : 1.0;
            const T keep = (T)(1.0 - momentum);
            run_mean[c] = run_mean[c] * keep + (T)mean * (T)momentum;
            run_var[c] = run_var[c] * keep + (T)var * (T)(momentum * unbiased);
        }
    }
}
#define BN_FWD_FINISH_P(T)                                                                             \
    (const double* partial, const T* gamma, const T* beta, double* stats, double* coef, T* run_mean, \
     T* run_var, BnArgs g, double eps, double momentum)
NAS_KERNELS(bn_fwd_finish, false, BN_FWD_FINISH_P,
            (partial, gamma, beta, stats, coef, run_mean, run_var, g, eps, momentum))

// y = acc + x·T(f·a_c) + T(f·sh_c), f = m[sample] (1 when null), acc optional: the CPU
// kernels' arithmetic.
template <typename T>
__device__ void bn_fwd_apply(const T* x, const double* coef, const T* m, const T* acc, T* y, BnArgs g) {
    const i64 n = g.b * g.c * g.hw;
    NAS_FOR(i, n) {
        const i64 plane = i / g.hw, c = plane % g.c;
        const double f = m ? (double)m[plane / g.c] : 1.0;
        const T v = x[i] * (T)(f * coef[c]) + (T)(f * coef[g.c + c]);
        y[i] = acc ? acc[i] + v : v;
    }
}
#define BN_FWD_APPLY_P(T) (const T* x, const double* coef, const T* m, const T* acc, T* y, BnArgs g)
NAS_KERNELS(bn_fwd_apply, false, BN_FWD_APPLY_P, (x, coef, m, acc, y, g))

// Backward finish, one thread per channel, from the sums of bn_partial over (g, u):
//   affine == 0 (u = x̂, the forward's output): coef = (inv, inv·S1/n, inv·S2/n);
//   affine == 1 (u = x, S over f·g): x̂'s gradient sum G = inv·(S2 − μ·S1) goes to ggamma and
//   S1 to gbeta (when not null), coef = (γ·inv, γ·inv·S1/n − γ·inv²·G·μ/n, γ·inv²·G/n).
// Either way ∂x = T(f·coef0)·g − T(coef1) − u·T(coef2).
template <typename T>
__device__ void bn_bwd_finish(const double* partial, const T* gamma, const double* stats, double* coef, T* ggamma,
                              T* gbeta, BnArgs g, double eps, int affine) {
    NAS_FOR(c, g.c) {
        double s1, s2;
        bn_sums(partial, g, c, &s1, &s2);
        const double n = (double)(g.b * g.hw);
        const double mean = stats[c], inv = 1.0 / sqrt(stats[g.c + c] + eps);
        if (!affine) {
            coef[c] = inv;
            coef[g.c + c] = inv * s1 / n;
            coef[2 * g.c + c] = inv * s2 / n;
        } else {
            const double ga = gamma ? (double)gamma[c] : 1.0;
            const double gxhat = inv * (s2 - mean * s1);
            coef[c] = ga * inv;
            coef[g.c + c] = ga * inv * s1 / n - ga * inv * inv * gxhat * mean / n;
            coef[2 * g.c + c] = ga * inv * inv * gxhat / n;
            if (ggamma) ggamma[c] = (T)gxhat;
            if (gbeta) gbeta[c] = (T)s1;
        }
    }
}
#define BN_BWD_FINISH_P(T)                                                                                  \
    (const double* partial, const T* gamma, const double* stats, double* coef, T* ggamma, T* gbeta, BnArgs g, \
     double eps, int affine)
NAS_KERNELS(bn_bwd_finish, false, BN_BWD_FINISH_P, (partial, gamma, stats, coef, ggamma, gbeta, g, eps, affine))

// gx = T(f·coef0_c)·g − T(coef1_c) − u·T(coef2_c), f = m[sample] (1 when null).
template <typename T>
__device__ void bn_bwd_apply(const T* gr, const T* u, const double* coef, const T* m, T* gx, BnArgs g) {
    const i64 n = g.b * g.c * g.hw;
    NAS_FOR(i, n) {
        const i64 plane = i / g.hw, c = plane % g.c;
        const double f = m ? (double)m[plane / g.c] : 1.0;
        gx[i] = (T)(f * coef[c]) * gr[i] - (T)coef[g.c + c] - u[i] * (T)coef[2 * g.c + c];
    }
}
#define BN_BWD_APPLY_P(T) (const T* gr, const T* u, const double* coef, const T* m, T* gx, BnArgs g)
NAS_KERNELS(bn_bwd_apply, false, BN_BWD_APPLY_P, (gr, u, coef, m, gx, g))

// The chunk sums of bn_partial as values: out1[c] = S1, out2[c] = S2 (either may be null).
template <typename T>
__device__ void bn_sums_out(const double* partial, T* out1, T* out2, BnArgs g) {
    NAS_FOR(c, g.c) {
        double s1, s2;
        bn_sums(partial, g, c, &s1, &s2);
        if (out1) out1[c] = (T)s1;
        if (out2) out2[c] = (T)s2;
    }
}
#define BN_SUMS_OUT_P(T) (const double* partial, T* out1, T* out2, BnArgs g)
NAS_KERNELS(bn_sums_out, false, BN_SUMS_OUT_P, (partial, out1, out2, g))

// y = x·a[c] + b[c] (b null: no shift): the channel affine map and its input gradient.
template <typename T>
__device__ void chan_affine(const T* x, const T* a, const T* b, T* y, BnArgs g) {
    const i64 n = g.b * g.c * g.hw;
    NAS_FOR(i, n) {
        const i64 c = (i / g.hw) % g.c;
        y[i] = b ? x[i] * a[c] + b[c] : x[i] * a[c];
    }
}
#define CHAN_AFFINE_P(T) (const T* x, const T* a, const T* b, T* y, BnArgs g)
NAS_KERNELS(chan_affine, false, CHAN_AFFINE_P, (x, a, b, y, g))
