// The CUDA names the kernel sources use, for compiling them as C++ on the host (the CPU
// tests run every kernel through `nas_emulate` over the launch geometry the Rust side
// computes). Not used by nvcc.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <type_traits>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
// A kernel's static shared array is one per kernel instantiation; blocks run one after the
// other, so it is the current block's shared memory.
#define __shared__ static

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

// The running thread's coordinates (each emulated thread has its own), and the launch's
// dimensions (one launch emulated at a time).
extern thread_local dim3 threadIdx;
extern thread_local dim3 blockIdx;
extern dim3 blockDim;
extern dim3 gridDim;

// The barrier of the running block; only kernels emulated with `sync` may call it.
void __syncthreads();

// Runs `kernel` over the pending launch's grid (set by `nas_host_set_launch` on the calling
// thread): with `sync` a block's threads run as fibers that take turns between the
// __syncthreads calls, otherwise one after the other.
void nas_emulate(bool sync, const std::function<void()>& kernel);

extern "C" void nas_host_set_launch(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz);

// Calls f with its arguments read from `a`, an array of pointers to each argument's value (as
// cuLaunchKernel takes them).
template <typename... A, std::size_t... I>
void nas_call_packed_impl(void (*f)(A...), void** a, std::index_sequence<I...>) {
    f(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(a[I])...);
}

template <typename... A>
void nas_call_packed(void (*f)(A...), void** a) {
    nas_call_packed_impl(f, a, std::index_sequence_for<A...>{});
}
