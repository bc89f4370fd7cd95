// Multi-tensor SGD with global-norm gradient clipping: one launch updates up to NAS_MT_MAX
// tensors (block row blockIdx.y is one tensor, its blocks stride over its elements), so a
// step over a whole network is a handful of launches instead of several per parameter.
//   clip: per-tensor block partial sums of g² (f64), then one block turns them into the
//         global norm and the factor min(1, max_norm / (norm + 1e-6)) (torch's rule);
//   sgd:  g ← factor·g, d = g + λw, m ← μm + d (the buffer starts at zero, so the first
//         step gives m = d as torch does), w ← w − lr·m.
#include "common.cuh"

// The elements of tensor blockIdx.y that block blockIdx.x's threads visit.
#define NAS_FOR_TENSOR(i, len) \
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (len); i += (i64)gridDim.x * blockDim.x)

// partial[t·gridDim.x + blockIdx.x] = Σ g² over the block's share of tensor t.
template <typename T>
__device__ void mt_sumsq(MtList l, double* partial) {
    __shared__ double sh[NAS_REDUCE_THREADS];
    const i64 t = blockIdx.y;
    const T* g = (const T*)l.grad[t];
    double s = 0.0;
    NAS_FOR_TENSOR(i, l.len[t]) {
        const double v = (double)g[i];
        s += v * v;
    }
    const double total = nas_block_sum(s, sh);
    if (threadIdx.x == 0) partial[t * gridDim.x + blockIdx.x] = total;
}
#define MT_SUMSQ_P(T) (MtList l, double* partial)
NAS_KERNELS(mt_sumsq, true, MT_SUMSQ_P, (l, partial))

// One block: out[0] = min(1, max_norm / (‖g‖ + 1e-6)), out[1] = ‖g‖ over n partial sums.
template <typename T>
__device__ void mt_clip_factor(const double* partial, i64 n, double max_norm, double* out) {
    __shared__ double sh[NAS_REDUCE_THREADS];
    double s = 0.0;
    for (i64 i = threadIdx.x; i < n; i += blockDim.x) s += partial[i];
    const double total = nas_block_sum(s, sh);
    if (threadIdx.x == 0) {
        const double norm = sqrt(total);
        const double f = max_norm / (norm + 1e-6);
        out[0] = f < 1.0 ? f : 1.0;
        out[1] = norm;
    }
}
#define MT_CLIP_FACTOR_P(T) (const double* partial, i64 n, double max_norm, double* out)
NAS_KERNELS(mt_clip_factor, true, MT_CLIP_FACTOR_P, (partial, n, max_norm, out))

template <typename T>
__device__ void mt_sgd(MtList l, const double* factor, double lr, double momentum, double weight_decay) {
    const i64 t = blockIdx.y;
    T* w = (T*)l.param[t];
    const T* g = (const T*)l.grad[t];
    T* m = (T*)l.mom[t];
    const T f = factor ? (T)factor[0] : T(1);
    const T wd = (T)weight_decay, mu = (T)momentum, eta = (T)lr;
    NAS_FOR_TENSOR(i, l.len[t]) {
        const T gi = factor ? g[i] * f : g[i];
        const T d = gi + w[i] * wd;
        const T mi = m[i] * mu + d;
        m[i] = mi;
        w[i] = w[i] - mi * eta;
    }
}
#define MT_SGD_P(T) (MtList l, const double* factor, double lr, double momentum, double weight_decay)
NAS_KERNELS(mt_sgd, false, MT_SGD_P, (l, factor, lr, momentum, weight_decay))
