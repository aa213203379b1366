"""Hat activation: hat(x) = max(0, 1 - |x - 1|), the linear B-spline on [0, 2].

The op is `fastact::hat` (C++, csrc/) and `fastact_triton::hat` (fastact/triton/hat.py);
this module registers their fake kernels and autograd, and picks the backend.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fastact import _backend, _checks, _extension, reference
from fastact import triton as _triton

if _triton.AVAILABLE:
    from fastact.triton import hat as _triton_hat  # noqa: F401  (defines fastact_triton::hat)


def hat(x: Tensor) -> Tensor:
    """Hat activation, elementwise: 0 for x <= 0, x on [0, 1], 2 - x on [1, 2], 0 for x >= 2.

    Gradient: +1 on (0, 1], -1 on (1, 2], 0 elsewhere (PyTorch's gradient of
    relu(x) - 2 relu(x - 1) + relu(x - 2)). NaN gives NaN with gradient 0; +-inf give 0.
    float16/bfloat16 compute in float32; the output has x's dtype, shape and layout.
    """
    if _backend.auto_cpu(x):
        y = _extension._C.hat_call(x)  # None: a call the direct entry does not take
        if y is not None:
            return y
    _checks.float_tensor("hat", "x", x)
    backend = _backend.select("hat", x.device)
    if backend == "reference":
        return reference.hat(x)
    return _backend.ops(backend).hat(x)


def _register(namespace: str) -> None:
    """Fake kernels and autograd for `namespace`::hat and ::hat_backward. The backward is
    the same namespace's hat_backward, so training stays on one backend and compiles."""
    ops = getattr(torch.ops, namespace)

    def fake_forward(x):
        return torch.empty_like(x)

    def fake_backward(grad_out, x):
        return torch.empty_like(x)

    def save_x(ctx, inputs, output):
        ctx.save_for_backward(inputs[-1])  # x is the last input of both ops

    def forward_grad(ctx, grad):
        (x,) = ctx.saved_tensors
        return ops.hat_backward(grad, x)

    def backward_grad(ctx, grad):
        # hat_backward is linear in grad_out with the same factor; its derivative in x is
        # zero wherever it exists.
        (x,) = ctx.saved_tensors
        return ops.hat_backward(grad, x), None

    torch.library.register_fake(f"{namespace}::hat", fake_forward)
    torch.library.register_fake(f"{namespace}::hat_backward", fake_backward)
    _checks.register_autograd(f"{namespace}::hat", forward_grad, save_x)
    torch.library.register_autograd(
        f"{namespace}::hat_backward", backward_grad, setup_context=save_x
    )


for _namespace in _backend.loaded_namespaces():
    _register(_namespace)
