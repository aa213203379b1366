// Hat CPU kernels; compiled once per instruction set by csrc/cpu/isa_*.cpp.
#include "cpu/elementwise.h"
#include "fastact/hat.h"

namespace fastact::cpu::FASTACT_ISA {

void hat_forward_loop(c10::ScalarType dtype, char** data, const int64_t* strides, int64_t n0,
                      int64_t n1) {
  map_elements_any_dtype<1>(dtype, data, strides, n0, n1,
                            [](auto x) { return hat_forward(x); });
}

void hat_backward_loop(c10::ScalarType dtype, char** data, const int64_t* strides, int64_t n0,
                       int64_t n1) {
  map_elements_any_dtype<2>(dtype, data, strides, n0, n1,
                            [](auto grad, auto x) { return hat_backward(grad, x); });
}

}  // namespace fastact::cpu::FASTACT_ISA
