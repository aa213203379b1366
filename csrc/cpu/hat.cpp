// Hat on CPU: ATen glue around the per-instruction-set kernels of hat_kernel.h.
#include <torch/library.h>

#include "host/common.h"
#include "cpu/tensor_iterator.h"

FASTACT_DECLARE_CPU_KERNEL(ElementwiseLoop, hat_forward_loop)
FASTACT_DECLARE_CPU_KERNEL(ElementwiseLoop, hat_backward_loop)

namespace fastact::cpu {
namespace {

at::Tensor hat_cpu(const at::Tensor& x) {
  check_float_tensor("hat", "x", x);
  return map_tensors(hat_forward_loop_for_this_cpu(), x, {x});
}

at::Tensor hat_backward_cpu(const at::Tensor& grad_out, const at::Tensor& x) {
  check_float_tensor("hat_backward", "x", x);
  check_matches("hat_backward", "grad_out", grad_out, "x", x);
  return map_tensors(hat_backward_loop_for_this_cpu(), x, {grad_out, x});
}

}  // namespace

TORCH_LIBRARY_IMPL(fastact, CPU, m) {
  m.impl("hat", &hat_cpu);
  m.impl("hat_backward", &hat_backward_cpu);
}

}  // namespace fastact::cpu
