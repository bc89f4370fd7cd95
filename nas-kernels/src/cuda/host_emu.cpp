// The host emulation of kernel launches declared in host_shim.h.
#include <ucontext.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <vector>

#include "host_shim.h"

thread_local dim3 threadIdx;
thread_local dim3 blockIdx;
dim3 blockDim;
dim3 gridDim;

namespace {
std::mutex launch_lock;  // one emulated launch at a time (blockDim, gridDim, shared arrays)
thread_local dim3 pending_grid, pending_block;

// A block of a synchronising kernel runs as one fiber per thread on the launching thread:
// each fiber runs until it reaches __syncthreads (or returns), then the next one; a round
// in which every fiber has reached the barrier ends it. Cheaper and more deterministic than
// one OS thread per CUDA thread.
struct Fiber {
    ucontext_t ctx;
    std::vector<char> stack;
    bool done = false;
};
ucontext_t scheduler;
Fiber* running_fiber = nullptr;
const std::function<void()>* fiber_kernel = nullptr;
constexpr std::size_t FIBER_STACK = 256 * 1024;

void fiber_main() {
    (*fiber_kernel)();
    running_fiber->done = true;
    swapcontext(&running_fiber->ctx, &scheduler);
}

dim3 thread_of(unsigned t) { return dim3{t % blockDim.x, (t / blockDim.x) % blockDim.y, t / (blockDim.x * blockDim.y)}; }

// Runs the current block's fibers round by round until all have returned. (The loop state is
// static, not a local the compiler could keep in a register across swapcontext, which it
// treats like setjmp; the launch lock makes it single-user.)
void run_fibers(std::vector<Fiber>& fibers) {
    for (auto& f : fibers) {
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = f.stack.data();
        f.ctx.uc_stack.ss_size = f.stack.size();
        f.ctx.uc_link = nullptr;
        f.done = false;
        makecontext(&f.ctx, fiber_main, 0);
    }
    static bool live;
    static unsigned t;
    for (live = true; live;) {
        live = false;
        for (t = 0; t < fibers.size(); ++t) {
            Fiber& f = fibers[t];
            if (f.done) continue;
            threadIdx = thread_of(t);
            running_fiber = &f;
            swapcontext(&scheduler, &f.ctx);
            running_fiber = nullptr;
            if (!f.done) live = true;
        }
    }
}
}  // namespace

extern "C" void nas_host_set_launch(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz) {
    pending_grid = dim3{gx, gy, gz};
    pending_block = dim3{bx, by, bz};
}

void __syncthreads() {
    if (!running_fiber) {
        std::fprintf(stderr, "__syncthreads in a kernel emulated without sync\n");
        std::abort();
    }
    swapcontext(&running_fiber->ctx, &scheduler);
}

void nas_emulate(bool sync, const std::function<void()>& kernel) {
    std::lock_guard<std::mutex> guard(launch_lock);
    gridDim = pending_grid;
    blockDim = pending_block;
    const unsigned nt = blockDim.x * blockDim.y * blockDim.z;
    std::vector<Fiber> fibers(sync ? nt : 0);
    for (auto& f : fibers) f.stack.resize(FIBER_STACK);
    fiber_kernel = &kernel;
    for (unsigned bz = 0; bz < gridDim.z; ++bz)
        for (unsigned by = 0; by < gridDim.y; ++by)
            for (unsigned bx = 0; bx < gridDim.x; ++bx) {
                blockIdx = dim3{bx, by, bz};
                if (!sync) {
                    for (unsigned t = 0; t < nt; ++t) {
                        threadIdx = thread_of(t);
                        kernel();
                    }
                    continue;
                }
                run_fibers(fibers);
            }
    fiber_kernel = nullptr;
}

#include "common.cuh"

// Visit counters over the loops the kernels use, for the geometry tests: counts[i] += 1 for
// every index a thread of the pending launch visits (threads run one at a time: no race).
extern "C" void nas_host_count_elementwise(long long* counts, long long n) {
    nas_emulate(false, [&] {
        NAS_FOR(i, n) { counts[i] += 1; }
    });
}

extern "C" void nas_host_count_chunks(long long* counts, long long per_c, long long chunk) {
    nas_emulate(false, [&] {
        NAS_FOR_CHUNK(q, per_c, chunk) { counts[(i64)blockIdx.x * per_c + q] += 1; }
    });
}
