// The few CUDA-side ATen / c10 calls of csrc/cuda, for the emulated device (simt.h): one
// stream, kMultiprocessors SMs, no device to set, launch errors thrown at the launch.
#pragma once

#include <c10/core/Device.h>

#include "emulator/simt.h"

namespace fastact::simt {

struct DeviceProperties {
  int multiProcessorCount = kMultiprocessors;
};

struct Stream {
  operator cudaStream_t() const { return nullptr; }
};

}  // namespace fastact::simt

// An inline namespace: these never collide with a CUDA build of torch's own symbols.
namespace at::cuda {
inline namespace emulated {
inline fastact::simt::Stream getCurrentCUDAStream() { return {}; }
inline const fastact::simt::DeviceProperties* getCurrentDeviceProperties() {
  static const fastact::simt::DeviceProperties properties;
  return &properties;
}
}  // namespace emulated
}  // namespace at::cuda

namespace c10::cuda {
inline namespace emulated {
struct OptionalCUDAGuard {
  explicit OptionalCUDAGuard(c10::Device) {}
};
}  // namespace emulated
}  // namespace c10::cuda

// The emulator reports a bad launch by throwing from it.
#define C10_CUDA_KERNEL_LAUNCH_CHECK() \
  do {                                 \
  } while (false)
