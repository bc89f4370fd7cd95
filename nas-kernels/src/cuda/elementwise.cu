// Elementwise kernels: ReLU and its backward, acc + w·y (w·y without acc), the dot product
// that is w's gradient (block partial sums, then one sum), the per-sample factor of drop path,
// and the sum over a batch of per-item results (the 1x1 convolutions' weight gradient).
#include "common.cuh"

// PyTorch's ReLU: 0 where x < 0, x otherwise, so a NaN stays NaN (fmax would drop it).
template <typename T>
__device__ void relu_fwd(const T* x, T* y, i64 n) {
    NAS_FOR(i, n) { y[i] = x[i] < T(0) ? T(0) : x[i]; }
}
#define RELU_FWD_P(T) (const T* x, T* y, i64 n)
NAS_KERNELS(relu_fwd, false, RELU_FWD_P, (x, y, n))

// gx = 0 where the forward's output y <= 0, else g (PyTorch's threshold_backward: a NaN y
// passes its gradient).
template <typename T>
__device__ void relu_bwd(const T* y, const T* g, T* gx, i64 n) {
    NAS_FOR(i, n) { gx[i] = y[i] <= T(0) ? T(0) : g[i]; }
}
#define RELU_BWD_P(T) (const T* y, const T* g, T* gx, i64 n)
NAS_KERNELS(relu_bwd, false, RELU_BWD_P, (y, g, gx, n))

// out = acc + w[0]·y, or w[0]·y when acc is null (also the gradient w·g of y).
template <typename T>
__device__ void axpy(const T* acc, const T* y, const T* w, T* out, i64 n) {
    const T a = w[0];
    if (acc) {
        NAS_FOR(i, n) { out[i] = acc[i] + a * y[i]; }
    } else {
        NAS_FOR(i, n) { out[i] = y[i] * a; }
    }
}
#define AXPY_P(T) (const T* acc, const T* y, const T* w, T* out, i64 n)
NAS_KERNELS(axpy, false, AXPY_P, (acc, y, w, out, n))

// partial[block] = Σ a·b over the block's grid-stride share, in f64.
template <typename T>
__device__ void dot_partial(const T* a, const T* b, double* partial, i64 n) {
    __shared__ double sh[NAS_REDUCE_THREADS];
    double s = 0.0;
    NAS_FOR(i, n) { s += (double)a[i] * (double)b[i]; }
    const double total = nas_block_sum(s, sh);
    if (threadIdx.x == 0) partial[blockIdx.x] = total;
}
#define DOT_PARTIAL_P(T) (const T* a, const T* b, double* partial, i64 n)
NAS_KERNELS(dot_partial, true, DOT_PARTIAL_P, (a, b, partial, n))

// out[0] = Σ partial[0..parts], in order (one thread).
template <typename T>
__device__ void sum_partials(const double* partial, i64 parts, T* out) {
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        double s = 0.0;
        for (i64 p = 0; p < parts; ++p) s += partial[p];
        out[0] = (T)s;
    }
}
#define SUM_PARTIALS_P(T) (const double* partial, i64 parts, T* out)
NAS_KERNELS(sum_partials, false, SUM_PARTIALS_P, (partial, parts, out))

// y[i] = x[i]·m[i / per]: sample b of x (per values) times its factor.
template <typename T>
__device__ void scale_samples(const T* x, const T* m, T* y, i64 n, i64 per) {
    NAS_FOR(i, n) { y[i] = x[i] * m[i / per]; }
}
#define SCALE_SAMPLES_P(T) (const T* x, const T* m, T* y, i64 n, i64 per)
NAS_KERNELS(scale_samples, false, SCALE_SAMPLES_P, (x, m, y, n, per))

// out[i] = Σ_j parts[j·n + i] over `batches` rows, in row order.
template <typename T>
__device__ void sum_rows(const T* parts, T* out, i64 n, i64 batches) {
    NAS_FOR(i, n) {
        T s = T(0);
        for (i64 j = 0; j < batches; ++j) s += parts[j * n + i];
        out[i] = s;
    }
}
#define SUM_ROWS_P(T) (const T* parts, T* out, i64 n, i64 batches)
NAS_KERNELS(sum_rows, false, SUM_ROWS_P, (parts, out, n, batches))
