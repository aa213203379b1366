// The layer of the geometric parameterisation (GmP) of ReLU units (Chen & Ge, arXiv
// 2305.15912), with the unit directions u given (fastact/sphere.h maps them from angles):
//   z = radius * relu(pre + bias),  pre = x . u.
// The formulas shared by the CPU and CUDA kernels of its epilogues (csrc/host/layer.h composes
// them with the matmul or convolution).
#pragma once

#include <stdint.h>

#include "fastact/common.h"

namespace fastact {

// relu as torch.relu: NaN passes through; the unit is active where pre + bias > 0 (relu'(0) = 0).
template <typename T>
FASTACT_HOST_DEVICE T geometric_relu_output(T radius, T pre_with_bias) {
  return radius * (pre_with_bias <= T(0) ? T(0) : pre_with_bias);
}

template <typename T>
FASTACT_HOST_DEVICE bool geometric_relu_active(T pre_with_bias) {
  return pre_with_bias > T(0);
}

// Backward. The forward saves only the activity mask m (one bit per output). With the masked
// gradient g' = m * dL/dz (a select, as relu's backward, so NaN/inf gradients of inactive units
// give 0) and G' = g'^T x (the matmul):
//   dL/dpre = radius * g',  dL/du_c = radius_c * G'_c,  dL/dbias_c = radius_c * sum g'_c,
//   dL/dradius_c = sum g'_c (pre + bias)_c = G'_c . u_c + bias_c * sum g'_c,
// the last because pre is linear in u: division-free and exact for every radius, 0 included.
template <typename T>
FASTACT_HOST_DEVICE T geometric_relu_masked_grad(T grad, bool active) {
  return active ? grad : T(0);
}

// The per-channel step of the backward ("radial"), for channel c at positions p (one for a
// linear layer, the output pixels for a convolution), from G' and from the masked gradient's
// column sums per block of rows (partial[b, column(c, p)], blocks fixed by the batch size):
//   S_{c,p} = sum over the blocks b, in order, of partial[b, column(c, p)] (layer_column_sum),
//   dL/dradius_c = G'_c . u_c + sum_p bias_{c,p} S_{c,p},
//   dL/du_c = radius_c G'_c, and weight_c = radius_c u_c for dL/dx = g' weight,
//   dL/dbias_{c,p} = radius_c S_{c,p} (bias per position) or radius_c sum_p S_{c,p} (per channel).
template <typename A>
FASTACT_HOST_DEVICE A layer_column_sum(const A* column, int64_t blocks, int64_t block_stride) {
  A sum = A(0);
  for (int64_t b = 0; b < blocks; ++b) sum += column[b * block_stride];
  return sum;
}

}  // namespace fastact
