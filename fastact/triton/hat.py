"""Hat in Triton: forward and backward kernels mirroring csrc/include/fastact/hat.h, wrapped
as custom ops fastact_triton::hat and fastact_triton::hat_backward (fake kernels and
autograd are registered in fastact/hat.py, beside the C++ op's)."""

import torch
import triton
import triton.language as tl
from torch import Tensor

from fastact.triton._common import (
    ELEMENTWISE_BLOCK,
    ELEMENTWISE_WARPS,
    compute_dtype,
    elementwise_grid,
    in_layout_of,
    launch,
)


@triton.jit
def hat_forward(x):
    # max(0, min(x, 2 - x)): exact in every float format; NaN fails the comparisons and
    # propagates, +-inf give 0.
    falling = 2.0 - x
    y = tl.where(x < falling, x, falling)
    return tl.where(y < 0.0, 0.0, y)


@triton.jit
def hat_backward(grad, x):
    # relu(x) - 2 relu(x-1) + relu(x-2)'s gradient: +1 on (0, 1], -1 on (1, 2], else 0.
    rising = (x > 0.0) & (x <= 1.0)
    falling = (x > 1.0) & (x <= 2.0)
    return tl.where(rising, grad, tl.where(falling, -grad, 0.0))


@triton.jit
def _hat_forward_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr, ACC: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    x = tl.load(x_ptr + offsets, mask=mask).to(ACC)
    tl.store(y_ptr + offsets, hat_forward(x).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _hat_backward_kernel(grad_ptr, x_ptr, out_ptr, n, BLOCK: tl.constexpr, ACC: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    grad = tl.load(grad_ptr + offsets, mask=mask).to(ACC)
    x = tl.load(x_ptr + offsets, mask=mask).to(ACC)
    tl.store(out_ptr + offsets, hat_backward(grad, x).to(out_ptr.dtype.element_ty), mask=mask)


@torch.library.custom_op("fastact_triton::hat", mutates_args=())
def hat(x: Tensor) -> Tensor:
    y = torch.empty_like(x)
    n = y.numel()
    if n:
        launch(
            _hat_forward_kernel, elementwise_grid(n), in_layout_of(y, x), y, n,
            BLOCK=ELEMENTWISE_BLOCK, ACC=compute_dtype(x.dtype), num_warps=ELEMENTWISE_WARPS,
        )
    return y


@torch.library.custom_op("fastact_triton::hat_backward", mutates_args=())
def hat_backward_op(grad_out: Tensor, x: Tensor) -> Tensor:
    out = torch.empty_like(x)
    n = out.numel()
    if n:
        launch(
            _hat_backward_kernel, elementwise_grid(n),
            in_layout_of(out, grad_out), in_layout_of(out, x), out, n,
            BLOCK=ELEMENTWISE_BLOCK, ACC=compute_dtype(x.dtype), num_warps=ELEMENTWISE_WARPS,
        )
    return out
