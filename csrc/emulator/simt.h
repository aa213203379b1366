// A SIMT execution layer for the host compiler: the CUDA kernels of csrc/cuda compile with g++
// and run on the CPU (the "cuda-emulated" backend). Each block runs on its own, one after the
// other; its threads are cooperative fibers on small reused stacks (simt.cpp). A thread runs
// until it reaches a barrier (__syncthreads), a warp operation (__shfl_*_sync, __ballot_sync,
// __syncwarp) or its end; then the next one runs. When every thread waits, the scheduler
// completes the warp operations whose lanes have all arrived, or releases the block barrier
// once every thread of the block is at it, and anything else (a barrier some threads never
// reach, a warp operation with an exited lane) is a clear error instead of a hang.
//
// Between two such points the threads of a block run in the order of the schedule: forward,
// reverse or shuffled (seeded, different per launch and block). A missing __syncthreads lets
// a thread read shared memory before another wrote it in one of these orders; the tests run
// the shuffled one (the default) and compare all three.
//
// __shared__ variables are thread_local statics: one copy per OS thread, which all fibers of
// the block running on it share. Dynamic shared memory (FASTACT_DYNAMIC_SHARED) is allocated
// per launch and filled with 0xff bytes (NaN) for each block.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

// ---- the CUDA C++ dialect ------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __shared__ thread_local  // at block scope: static storage, one per OS thread

struct uint3 {
  unsigned int x, y, z;
};

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1)
      : x(x_), y(y_), z(z_) {}
};

#define FASTACT_SIMT_VECTOR2(name, T) \
  struct alignas(2 * sizeof(T)) name { T x, y; }; \
  inline name make_##name(T x, T y) { return {x, y}; }
#define FASTACT_SIMT_VECTOR4(name, T) \
  struct alignas(4 * sizeof(T)) name { T x, y, z, w; }; \
  inline name make_##name(T x, T y, T z, T w) { return {x, y, z, w}; }
FASTACT_SIMT_VECTOR2(float2, float)
FASTACT_SIMT_VECTOR4(float4, float)
FASTACT_SIMT_VECTOR2(double2, double)
FASTACT_SIMT_VECTOR2(int2, int)
FASTACT_SIMT_VECTOR4(int4, int)
#undef FASTACT_SIMT_VECTOR2
#undef FASTACT_SIMT_VECTOR4

using __half = c10::Half;
using __nv_bfloat16 = c10::BFloat16;

using cudaStream_t = struct CUstream_st*;

// The running fiber's coordinates, set by the scheduler before it switches to the fiber.
inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

constexpr int warpSize = 32;

template <typename T>
T __ldg(const T* p) {
  return *p;
}

namespace fastact::simt {

enum class Schedule { forward, reverse, shuffled };

// The order of the threads between barriers, for every launch from now on (all OS threads).
// The shuffled schedule draws from `seed`, the launch count and the block index.
void set_schedule(Schedule schedule, uint64_t seed);
Schedule current_schedule();
uint64_t current_seed();
const char* schedule_name(Schedule schedule);

// What the multiprocessor count of the emulated device is: small, so that the kernels' grid
// sizing (a few blocks per SM) leaves grid-stride loops with several turns.
constexpr int kMultiprocessors = 2;

enum class WarpOp { sync, shuffle, shuffle_up, shuffle_down, shuffle_xor, ballot, any, all };

// The current fiber's side of a warp operation: posts `value` (at most 16 bytes), waits for
// the lanes of `mask`, and returns what the operation gives this lane in `result`.
void warp_exchange(WarpOp op, unsigned mask, const void* value, size_t size, int operand,
                   int width, void* result);
void block_barrier();
void* dynamic_shared_memory();

// One launch: the kernel (a callable on the argument tuple) on grid x block threads.
struct LaunchConfig {
  const char* kernel;
  dim3 grid, block;
  size_t shared_bytes;
};
void run_grid(const LaunchConfig& config, void (*thread_body)(const void*), const void* body);

template <typename T>
T exchange(WarpOp op, unsigned mask, T value, int operand, int width) {
  static_assert(sizeof(T) <= 16 && std::is_trivially_copyable_v<T>,
                "warp operations move trivially copyable values of at most 16 bytes");
  T result;
  warp_exchange(op, mask, &value, sizeof(T), operand, width, &result);
  return result;
}

// The lanes' votes: the ballot's bits (lanes of `mask` with a nonzero predicate), or whether
// any / all of them are nonzero.
inline unsigned vote(WarpOp op, unsigned mask, int predicate) {
  const int value = predicate != 0;
  unsigned result;
  warp_exchange(op, mask, &value, sizeof(value), 0, warpSize, &result);
  return result;
}

// Launcher(config, kernel)(args...): copies the arguments once (kernel parameters are values
// on the device too) and runs the kernel on them in every thread of the grid.
template <typename Kernel>
class Launcher {
 public:
  Launcher(const char* name, dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t,
           Kernel kernel)
      : config_{name, grid, block, shared_bytes}, kernel_(kernel) {}

  template <typename... Args>
  void operator()(Args&&... args) const {
    using Bound = std::pair<const Kernel*, std::tuple<std::decay_t<Args>...>>;
    const Bound bound{&kernel_, std::tuple<std::decay_t<Args>...>(std::forward<Args>(args)...)};
    run_grid(config_, &run_thread<Bound>, &bound);
  }

 private:
  template <typename Bound>
  static void run_thread(const void* bound) {
    const Bound& b = *static_cast<const Bound*>(bound);
    // Each thread gets its own copy of the parameters, as it may assign to them.
    auto params = b.second;
    std::apply(*b.first, params);
  }

  LaunchConfig config_;
  Kernel kernel_;
};

}  // namespace fastact::simt

// ---- intrinsics ---------------------------------------------------------------------------
inline void __syncthreads() { fastact::simt::block_barrier(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  fastact::simt::exchange(fastact::simt::WarpOp::sync, mask, 0, 0, warpSize);
}
template <typename T>
T __shfl_sync(unsigned mask, T value, int lane, int width = warpSize) {
  return fastact::simt::exchange(fastact::simt::WarpOp::shuffle, mask, value, lane, width);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T value, unsigned delta, int width = warpSize) {
  return fastact::simt::exchange(fastact::simt::WarpOp::shuffle_up, mask, value, int(delta),
                                 width);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T value, unsigned delta, int width = warpSize) {
  return fastact::simt::exchange(fastact::simt::WarpOp::shuffle_down, mask, value, int(delta),
                                 width);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = warpSize) {
  return fastact::simt::exchange(fastact::simt::WarpOp::shuffle_xor, mask, value, lane_mask,
                                 width);
}
inline unsigned __ballot_sync(unsigned mask, int predicate) {
  return fastact::simt::vote(fastact::simt::WarpOp::ballot, mask, predicate);
}
inline int __any_sync(unsigned mask, int predicate) {
  return int(fastact::simt::vote(fastact::simt::WarpOp::any, mask, predicate));
}
inline int __all_sync(unsigned mask, int predicate) {
  return int(fastact::simt::vote(fastact::simt::WarpOp::all, mask, predicate));
}

// `extern __shared__ T name[]` of the device: the launch's dynamic shared memory.
#define FASTACT_DYNAMIC_SHARED(T, name) \
  T* name = static_cast<T*>(::fastact::simt::dynamic_shared_memory())

// FASTACT_LAUNCH(grid, block, shared_bytes, stream, kernel)(args...): the kernel runs on the
// emulator; the kernel may be a template-id whose remaining parameters the arguments deduce.
#define FASTACT_LAUNCH(grid, block, shared_bytes, stream, ...)                              \
  ::fastact::simt::Launcher(#__VA_ARGS__, grid, block, shared_bytes, stream,                \
                            [&](auto&... params) { __VA_ARGS__(params...); })
