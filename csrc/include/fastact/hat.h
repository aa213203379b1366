// Hat activation: the linear B-spline on [0, 2] with peak 1 at x = 1,
//   hat(x) = max(0, 1 - |x - 1|) = relu(x) - 2 relu(x - 1) + relu(x - 2).
#pragma once

#include "fastact/common.h"

namespace fastact {

// Computed as max(0, min(x, 2 - x)): both candidates are exact in every float format
// (2 - x by Sterbenz on [1, 2]), so the result is exact, where 1 - |x - 1| would lose the
// low bits of small x. Written with selects so that NaN, which fails every comparison,
// propagates (as relu does); +-inf give 0.
template <typename T>
FASTACT_HOST_DEVICE T hat_forward(T x) {
  const T falling = T(2) - x;
  const T y = x < falling ? x : falling;
  return y < T(0) ? T(0) : y;
}

// The gradient PyTorch gives relu(x) - 2 relu(x - 1) + relu(x - 2) (relu'(0) = 0):
// +1 on (0, 1], -1 on (1, 2], 0 elsewhere. It selects rather than multiplies, as relu's
// backward does, so a NaN or inf upstream gradient outside the support still gives 0,
// and a NaN x gives 0.
template <typename T>
FASTACT_HOST_DEVICE T hat_backward(T grad, T x) {
  const bool rising = x > T(0) && x <= T(1);
  const bool falling = x > T(1) && x <= T(2);
  return rising ? grad : (falling ? -grad : T(0));
}

}  // namespace fastact
