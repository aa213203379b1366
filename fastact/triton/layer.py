"""The GmP layer in Triton: torch.mm / conv2d (cuBLAS, cuDNN), then the fused epilogues of
csrc/include/fastact/layer.h, composed as csrc/host/layer.h composes the C++ ones. Wrapped as
custom ops fastact_triton::<op>; fake kernels and autograd are registered in
fastact/layer.py, beside the C++ ops'."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from fastact.triton._common import compute_dtype, launch, torch_compute_dtype

# The epilogues: [EPILOGUE_ROWS, EPILOGUE_COLS] tiles, 2048 elements, mask words of 32 columns.
EPILOGUE_ROWS = 16
EPILOGUE_COLS = 128
EPILOGUE_WARPS = 8
# The per-channel step: fan-in / positions chunks.
RADIAL_BLOCK = 1024


@triton.jit
def _epilogue_forward_kernel(z_ptr, radius_columns_ptr, bias_columns_ptr, mask_ptr, rows, cols,
                             words, BLOCK_R: tl.constexpr, BLOCK_M: tl.constexpr,
                             ACC: tl.constexpr):
    # z = radius * relu(z + bias) in place, radius and bias per column in the compute dtype; the
    # mask packs 32 columns per int32 word.
    r = tl.program_id(1).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    m = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    inside = (r[:, None] < rows) & (m[None, :] < cols)
    pointers = z_ptr + r[:, None] * cols + m[None, :]
    radius = tl.load(radius_columns_ptr + m, mask=m < cols, other=0.0).to(ACC)
    bias = tl.load(bias_columns_ptr + m, mask=m < cols, other=0.0).to(ACC)
    pre = tl.load(pointers, mask=inside, other=0.0).to(ACC) + bias[None, :]
    z = radius[None, :] * tl.where(pre <= 0.0, 0.0, pre)
    tl.store(pointers, z.to(z_ptr.dtype.element_ty), mask=inside)
    bits = tl.where(inside & (pre > 0.0), 1, 0).to(tl.int64) << (m[None, :] % 32)
    packed = tl.sum(tl.reshape(bits, (BLOCK_R, BLOCK_M // 32, 32)), axis=2).to(tl.int32)
    w = tl.program_id(0).to(tl.int64) * (BLOCK_M // 32) + tl.arange(0, BLOCK_M // 32)
    tl.store(mask_ptr + r[:, None] * words + w[None, :], packed,
             mask=(r[:, None] < rows) & (w[None, :] < words))


@triton.jit
def _epilogue_backward_kernel(grad_ptr, mask_ptr, out_ptr, partial_ptr, rows, cols, words,
                              rows_per_block, BLOCK_R: tl.constexpr, BLOCK_M: tl.constexpr,
                              ACC: tl.constexpr):
    # g' = mask ? grad : 0, and its column sums over this program's block of rows (fixed by the
    # shapes) into partial[block]: deterministic, no atomics.
    block = tl.program_id(1).to(tl.int64)
    m = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    first = block * rows_per_block
    last = tl.minimum(first + rows_per_block, rows)
    total = tl.zeros((BLOCK_M,), ACC)
    for start in range(first, last, BLOCK_R):
        r = start + tl.arange(0, BLOCK_R)
        inside = (r[:, None] < last) & (m[None, :] < cols)
        grad = tl.load(grad_ptr + r[:, None] * cols + m[None, :], mask=inside, other=0.0).to(ACC)
        word = tl.load(mask_ptr + r[:, None] * words + m[None, :] // 32, mask=inside, other=0)
        active = ((word >> (m[None, :] % 32).to(tl.int32)) & 1) != 0
        masked = tl.where(active, grad, 0.0)
        tl.store(out_ptr + r[:, None] * cols + m[None, :], masked.to(out_ptr.dtype.element_ty),
                 mask=inside)
        total += tl.sum(masked, axis=0)
    tl.store(partial_ptr + block * cols + m, total, mask=m < cols)


@triton.jit
def _radial_backward_kernel(grad_u_ptr, u_ptr, radius_ptr, partial_ptr, bias_ptr, grad_radius_ptr,
                            grad_bias_ptr, weight_ptr, fan_in, positions, blocks, cols,
                            sum_stride_c, sum_stride_p, bias_stride_c, bias_stride_p,
                            HAS_BIAS: tl.constexpr, PER_POSITION: tl.constexpr,
                            WITH_WEIGHT: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    # The per-channel step of fastact/layer.h for channel c: S_{c,p} = the partial column sums
    # over the blocks of rows in order; grad_radius = G'_c . u_c + sum_p bias S; G'_c *= radius;
    # weight = radius u; grad_bias = radius * S (per position) or radius * sum_p S.
    c = tl.program_id(0).to(tl.int64)
    offsets = tl.arange(0, BLOCK)
    radius = tl.load(radius_ptr + c).to(ACC)
    dot = tl.zeros((BLOCK,), ACC)
    for start in range(0, fan_in, BLOCK):
        k = start + offsets
        g = tl.load(grad_u_ptr + c * fan_in + k, mask=k < fan_in, other=0.0).to(ACC)
        u = tl.load(u_ptr + c * fan_in + k, mask=k < fan_in, other=0.0).to(ACC)
        dot += g * u
    bias_term = tl.zeros((BLOCK,), ACC)
    sum_all = tl.zeros((BLOCK,), ACC)
    for start in range(0, positions, BLOCK):
        p = start + offsets
        # Integer arguments below 2^31 are int32, and cols (blocks * cols) may pass 2^31.
        column = partial_ptr + c * sum_stride_c + p.to(tl.int64) * sum_stride_p
        s = tl.zeros((BLOCK,), ACC)
        for b in range(0, blocks):
            s += tl.load(column + tl.cast(b, tl.int64) * cols, mask=p < positions, other=0.0)
        sum_all += s
        if HAS_BIAS:
            bias = tl.load(bias_ptr + c * bias_stride_c + p * bias_stride_p, mask=p < positions,
                           other=0.0).to(ACC)
            bias_term += bias * s
        if PER_POSITION:
            tl.store(grad_bias_ptr + c * positions + p,
                     (radius * s).to(grad_bias_ptr.dtype.element_ty), mask=p < positions)
    grad_radius = tl.sum(dot, axis=0) + tl.sum(bias_term, axis=0)
    tl.store(grad_radius_ptr + c, grad_radius.to(grad_radius_ptr.dtype.element_ty))
    if not PER_POSITION:
        grad_bias = radius * tl.sum(sum_all, axis=0)
        tl.store(grad_bias_ptr + c, grad_bias.to(grad_bias_ptr.dtype.element_ty))
    for start in range(0, fan_in, BLOCK):
        k = start + offsets
        g = tl.load(grad_u_ptr + c * fan_in + k, mask=k < fan_in, other=0.0).to(ACC)
        tl.store(grad_u_ptr + c * fan_in + k, (radius * g).to(grad_u_ptr.dtype.element_ty),
                 mask=k < fan_in)
        if WITH_WEIGHT:
            u = tl.load(u_ptr + c * fan_in + k, mask=k < fan_in, other=0.0).to(ACC)
            tl.store(weight_ptr + c * fan_in + k, (radius * u).to(weight_ptr.dtype.element_ty),
                     mask=k < fan_in)


def _per_column(t: Tensor, channels: int, positions: int, channels_fastest: bool) -> Tensor:
    values = t.to(torch_compute_dtype(t.dtype)).reshape(channels, -1).expand(channels, positions)
    return (values.t() if channels_fastest else values).contiguous().view(-1)


def _epilogue_forward(z: Tensor, radius: Tensor, bias: Tensor | None, rows: int, channels: int,
                      positions: int, channels_fastest: bool) -> Tensor:
    cols = channels * positions
    words = (cols + 31) // 32
    mask = torch.empty((rows, words), dtype=torch.int32, device=z.device)
    radius_columns = _per_column(radius, channels, positions, channels_fastest)
    bias_columns = (_per_column(bias, channels, positions, channels_fastest) if bias is not None
                    else torch.zeros_like(radius_columns))
    if rows and cols:
        grid = (triton.cdiv(cols, EPILOGUE_COLS), triton.cdiv(rows, EPILOGUE_ROWS))
        launch(_epilogue_forward_kernel, grid, z, radius_columns, bias_columns, mask, rows, cols,
               words, BLOCK_R=EPILOGUE_ROWS, BLOCK_M=EPILOGUE_COLS, ACC=compute_dtype(z.dtype),
               num_warps=EPILOGUE_WARPS)
    return mask


def _epilogue_backward(grad: Tensor, mask: Tensor, rows: int, cols: int) -> tuple[Tensor, Tensor]:
    """g' and its column sums per block of rows: blocks fixed by the batch size (at most 256
    per column), finished in order by _radial_backward."""
    rows_per_block = max(EPILOGUE_ROWS, triton.cdiv(rows, 256))
    blocks = triton.cdiv(rows, rows_per_block)
    grad_masked = torch.empty_like(grad)
    partial = torch.empty((blocks, cols), dtype=torch_compute_dtype(grad.dtype), device=grad.device)
    if blocks and cols:
        launch(_epilogue_backward_kernel, (triton.cdiv(cols, EPILOGUE_COLS), blocks),
               grad, mask, grad_masked, partial, rows, cols, mask.shape[1], rows_per_block,
               BLOCK_R=EPILOGUE_ROWS, BLOCK_M=EPILOGUE_COLS, ACC=compute_dtype(grad.dtype),
               num_warps=EPILOGUE_WARPS)
    return grad_masked, partial


def _radial_backward(grad_u: Tensor, u: Tensor, radius: Tensor, partial: Tensor,
                     bias: Tensor | None, channels: int, positions: int, channels_fastest: bool,
                     with_weight: bool):
    per_position = bias is not None and bias.numel() != channels
    radius = radius.contiguous()
    grad_radius = torch.empty_like(radius)
    grad_bias = radius.new_empty(channels * positions if per_position else channels)
    weight = torch.empty_like(u) if with_weight else None
    if channels:
        fan_in = u.shape[1]
        launch(_radial_backward_kernel, (channels,),
               grad_u, u, radius, partial, bias.contiguous() if bias is not None else radius,
               grad_radius, grad_bias, weight if with_weight else u, fan_in, positions,
               partial.shape[0], channels * positions,
               1 if channels_fastest else positions, channels if channels_fastest else 1,
               positions if per_position else 1, 1 if per_position else 0,
               HAS_BIAS=bias is not None, PER_POSITION=per_position, WITH_WEIGHT=with_weight,
               BLOCK=RADIAL_BLOCK, ACC=compute_dtype(u.dtype))
    return grad_radius, grad_bias, weight


def _frozen_layer_gradients(grad_masked: Tensor, u: Tensor, radius: Tensor, x: Tensor,
                            x_needed: bool, input_gradient):
    """csrc/host/layer.h's frozen_layer_gradients: x's gradient alone, (radius g') u =
    g' (radius u) with the product on the smaller of g' and u."""
    grad_x = x.new_empty(0)
    if x_needed:
        def along(t: Tensor, dim: int) -> Tensor:
            shape = [1] * t.dim()
            shape[dim] = radius.numel()
            return radius.view(shape)
        grad_x = (input_gradient(grad_masked * along(grad_masked, 1), u)
                  if grad_masked.numel() <= u.numel()
                  else input_gradient(grad_masked, u * along(u, 0)))
    return grad_x, radius.new_empty(0), radius.new_empty(0), radius.new_empty(0)


def _check_layer(op: str, x: Tensor, u: Tensor, radius: Tensor, bias: Tensor | None, dim: int):
    if u.dim() != dim:
        raise RuntimeError(f"fastact_triton.{op}: u must be {dim}-D, got shape {tuple(u.shape)}")
    for name, t in (("u", u), ("radius", radius), ("bias", bias)):
        if t is not None and (t.dtype != x.dtype or t.device != x.device):
            raise RuntimeError(f"fastact_triton.{op}: {name} ({t.dtype}, {t.device}) must match x "
                               f"({x.dtype}, {x.device})")
    if radius.shape != (u.shape[0],):
        raise RuntimeError(f"fastact_triton.{op}: radius must have shape [{u.shape[0]}]")


@torch.library.custom_op("fastact_triton::geometric_relu_linear", mutates_args=())
def geometric_relu_linear(x: Tensor, u: Tensor, radius: Tensor,
                          bias: Tensor | None) -> tuple[Tensor, Tensor]:
    _check_layer("geometric_relu_linear", x, u, radius, bias, 2)
    out, fan_in = u.shape
    rows = x.numel() // fan_in
    z = torch.mm(x.reshape(rows, fan_in), u.t())
    mask = _epilogue_forward(z, radius, bias, rows, out, 1, True)
    return z.view(*x.shape[:-1], out), mask


@torch.library.custom_op("fastact_triton::geometric_relu_linear_backward", mutates_args=())
def geometric_relu_linear_backward(grad_z: Tensor, mask: Tensor, x: Tensor, u: Tensor,
                                   radius: Tensor, bias: Tensor | None,
                                   output_mask: list[bool]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    _check_layer("geometric_relu_linear_backward", x, u, radius, bias, 2)
    out, fan_in = u.shape
    rows = x.numel() // fan_in
    x2 = x.reshape(rows, fan_in)
    grad_masked, partial = _epilogue_backward(grad_z.reshape(rows, out).contiguous(), mask, rows,
                                              out)
    def input_gradient(g: Tensor, weight: Tensor) -> Tensor:
        return torch.mm(g, weight).view(x.shape)

    if not output_mask[1]:
        return _frozen_layer_gradients(grad_masked, u, radius, x, output_mask[0], input_gradient)
    grad_u = torch.mm(grad_masked.t(), x2)
    # dL/dx = (radius * g') u = g' (radius u): the radial pass scales the small matrix.
    grad_radius, grad_bias, weight = _radial_backward(grad_u, u.contiguous(), radius, partial, bias,
                                                      out, 1, True, output_mask[0])
    grad_x = input_gradient(grad_masked, weight) if output_mask[0] else x.new_empty(0)
    return grad_x, grad_u, grad_radius, grad_bias


def _conv_format(x: Tensor):
    return (torch.channels_last if x.is_contiguous(memory_format=torch.channels_last)
            and not x.is_contiguous() else torch.contiguous_format)


@torch.library.custom_op("fastact_triton::geometric_relu_conv2d", mutates_args=())
def geometric_relu_conv2d(x: Tensor, u: Tensor, radius: Tensor, bias: Tensor | None,
                          stride: list[int], padding: list[int], dilation: list[int],
                          groups: int) -> tuple[Tensor, Tensor]:
    _check_layer("geometric_relu_conv2d", x, u, radius, bias, 4)
    z = torch.nn.functional.conv2d(x, u, None, stride, padding, dilation, groups).contiguous(
        memory_format=_conv_format(x))
    channels, positions = z.shape[1], z.shape[2] * z.shape[3]
    mask = _epilogue_forward(z, radius, bias, z.shape[0], channels, positions,
                             not z.is_contiguous())
    return z, mask


@torch.library.custom_op("fastact_triton::geometric_relu_conv2d_backward", mutates_args=())
def geometric_relu_conv2d_backward(grad_z: Tensor, mask: Tensor, x: Tensor, u: Tensor,
                                   radius: Tensor, bias: Tensor | None, stride: list[int],
                                   padding: list[int], dilation: list[int], groups: int,
                                   output_mask: list[bool]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    _check_layer("geometric_relu_conv2d_backward", x, u, radius, bias, 4)
    grad = grad_z.contiguous(memory_format=_conv_format(x))
    channels, positions = grad.shape[1], grad.shape[2] * grad.shape[3]
    channels_fastest = not grad.is_contiguous()
    grad_masked, partial = _epilogue_backward(grad, mask, grad.shape[0], channels * positions)

    def input_gradient(g: Tensor, weight: Tensor) -> Tensor:
        grad_x, _, _ = torch.ops.aten.convolution_backward(
            g, x, weight, None, stride, padding, dilation, False, [0, 0], groups,
            [True, False, False])
        return grad_x.contiguous(memory_format=_conv_format(x))

    if not output_mask[1]:
        return _frozen_layer_gradients(grad_masked, u, radius, x, output_mask[0], input_gradient)
    # The weight gradient first (it does not read the weight); the radial pass then gives
    # radius * u, the weight of the input gradient.
    _, grad_weight, _ = torch.ops.aten.convolution_backward(
        grad_masked, x, u, None, stride, padding, dilation, False, [0, 0], groups,
        [False, True, False])
    grad_u = grad_weight.contiguous()
    grad_radius, grad_bias, weight = _radial_backward(
        grad_u.view(channels, -1), u.contiguous().view(channels, -1), radius, partial, bias,
        channels, positions, channels_fastest, output_mask[0])
    grad_x = input_gradient(grad_masked, weight.view(u.shape)) if output_mask[0] else x.new_empty(0)
    if bias is not None:
        grad_bias = grad_bias.view(bias.shape)
    return grad_x, grad_u, grad_radius, grad_bias
