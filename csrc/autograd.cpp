// The Autograd kernels of the fastact library's forward ops (csrc/host/autograd.h).
#include <torch/library.h>

#include "host/autograd.h"

namespace {

struct FastactLibrary {
  static constexpr const char* name = "fastact";
};

}  // namespace

TORCH_LIBRARY_IMPL(fastact, Autograd, m) {
  fastact::autograd::register_autograd_kernels<FastactLibrary>(m);
}
