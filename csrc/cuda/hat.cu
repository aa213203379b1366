// Hat on CUDA: the formulas of fastact/hat.h through the elementwise maps of elementwise.cuh.
#include "host/common.h"
#include "cuda/elementwise.cuh"
#include "fastact/hat.h"

namespace fastact::cuda {
namespace {

struct HatForward {
  template <typename T>
  __device__ T operator()(T x) const {
    return hat_forward(x);
  }
};

struct HatBackward {
  template <typename T>
  __device__ T operator()(T grad, T x) const {
    return hat_backward(grad, x);
  }
};

at::Tensor hat_cuda(const at::Tensor& x) {
  check_float_tensor("hat", "x", x);
  return map_tensors<1>(x, {x}, HatForward{});
}

at::Tensor hat_backward_cuda(const at::Tensor& grad_out, const at::Tensor& x) {
  check_float_tensor("hat_backward", "x", x);
  check_matches("hat_backward", "grad_out", grad_out, "x", x);
  return map_tensors<2>(x, {grad_out, x}, HatBackward{});
}

}  // namespace

FASTACT_CUDA_KERNELS(m) {
  m.impl("hat", &hat_cuda);
  m.impl("hat_backward", &hat_backward_cuda);
}

}  // namespace fastact::cuda
