// Shared by every kernel source: the argument structs (build.rs generates the #[repr(C)] Rust
// structs of cuda/launch.rs from them, and checks both layouts), 64-bit index helpers, the
// block reduction, and the macros that turn one templated kernel into its f32/f64 entry points.
//
// The same sources compile two ways. nvcc makes PTX for the GPU. The host C++ compiler (the
// CPU tests) includes host_shim.h instead of the CUDA headers: the qualifiers become empty,
// blockIdx/threadIdx become thread-local variables, and every kernel gets a `host_` entry
// point that runs it over the same grid on the CPU (blocks in turn; a block's threads
// one after the other, or as fibers that take turns between __syncthreads calls when the
// kernel synchronises).
#pragma once

#ifdef __CUDACC__
#define NAS_HOST_LAUNCHER(name, sync, params, args)
#else
#include "host_shim.h"
#define NAS_HOST_LAUNCHER(name, sync, params, args) \
    extern "C" void host_##name(void** a) { nas_emulate(sync, [&] { nas_call_packed(&name, a); }); }
#endif

typedef long long i64;

// One kernel template `name<T>` as the entry points name_f32 and name_f64. PARAMS(T) is the
// parenthesised parameter list, ARGS the parenthesised argument list; `sync` says whether the
// kernel uses __syncthreads (the host emulation then runs a block's threads as fibers).
// The host entry point host_name_f32 takes its arguments as cuLaunchKernel does: an array of
// pointers to each argument's value.
#define NAS_KERNEL_T(name, suffix, T, sync, PARAMS, ARGS)             \
    extern "C" __global__ void name##_##suffix PARAMS(T) { name<T> ARGS; } \
    NAS_HOST_LAUNCHER(name##_##suffix, sync, PARAMS(T), ARGS)
#define NAS_KERNELS(name, sync, PARAMS, ARGS)              \
    NAS_KERNEL_T(name, f32, float, sync, PARAMS, ARGS) \
    NAS_KERNEL_T(name, f64, double, sync, PARAMS, ARGS)

// A grid-stride loop over 0..n with 64-bit indices.
#define NAS_FOR(i, n) \
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (i64)(n); i += (i64)gridDim.x * blockDim.x)

// The values of chunk blockIdx.y of a per-channel reduction: q in [y·chunk, min((y+1)·chunk,
// per_c)), the block's threads striding through it.
#define NAS_FOR_CHUNK(q, per_c, chunk)                                                              \
    for (i64 q = (i64)blockIdx.y * (chunk) + threadIdx.x,                                          \
             q##_end = ((i64)blockIdx.y + 1) * (chunk) < (per_c) ? ((i64)blockIdx.y + 1) * (chunk) : (per_c); \
         q < q##_end; q += blockDim.x)

// Threads per block of the reduction kernels (a power of two; the shared buffer is sized
// by it; launch.rs reads the value through the constant build.rs generates).
#define NAS_REDUCE_THREADS 256

// Sums v over the threads of the block (blockDim.x == NAS_REDUCE_THREADS, all threads
// calling); thread 0 gets the total, in a fixed tree order.
__device__ __forceinline__ double nas_block_sum(double v, double* sh) {
    const unsigned t = threadIdx.x;
    sh[t] = v;
    __syncthreads();
    for (unsigned s = NAS_REDUCE_THREADS / 2; s > 0; s >>= 1) {
        if (t < s) sh[t] += sh[t + s];
        __syncthreads();
    }
    double total = sh[0];
    __syncthreads();
    return total;
}

// Argument structs: plain structs of 64-bit fields (i64, double, arrays of them with a
// NAS_… length), the only structs of this header; build.rs parses them.
struct DwArgs {
    i64 b, c, h, w, k, stride, pad, dil, oh, ow;
    i64 splits, chunk;  // filter-gradient partial sums: per channel, `splits` chunks of `chunk`
};

struct PoolArgs {
    i64 b, c, h, w, oh, ow, stride;
};

struct ValidArgs {
    i64 planes, h, w, k, stride, oh, ow;
};

struct PwArgs {
    i64 b, ci, h, w, oh, ow, stride, offset;
};

struct BnArgs {
    i64 b, c, hw;
    i64 splits, chunk;  // per channel, `splits` chunks of `chunk` of its b·hw values
};

struct PcArgs {
    i64 b, c, ca, k, h, w, ho, wo, stride;
};

// Multi-tensor launches (optim.cu): the addresses (as integers) and lengths of up to
// NAS_MT_MAX tensors.
#define NAS_MT_MAX 120

struct MtList {
    i64 n;
    i64 len[NAS_MT_MAX];
    i64 param[NAS_MT_MAX];
    i64 grad[NAS_MT_MAX];
    i64 mom[NAS_MT_MAX];
};

