"""DCT-basis activation in Triton, mirroring csrc/include/fastact/dct.h (the reduction of the
phase, the quarter-period sin/cos polynomials and Reinsch's recurrence; see there for why),
wrapped as custom ops fastact_triton::dct_activation and ::dct_activation_backward (fake
kernels and autograd are registered in fastact/dct.py, beside the C++ op's).

The channel of an element comes from index math on the dense memory of x, viewed as
[outer, channels, inner] (LAYOUT: SHARED one channel, CHANNELS_FASTEST inner == 1, RUNS
otherwise). The coefficient gradient is two-pass and deterministic: the backward kernels write
one partial sum per tile (a fixed block of elements of one channel) and term, which
_sum_pieces_kernel adds in a fixed order. No atomics anywhere.
"""

import torch
import triton
import triton.language as tl
from torch import Tensor

from fastact.triton._common import compute_dtype, in_layout_of, launch, torch_compute_dtype
from fastact.triton._sincospi import round_to_integer, sincospi_quarter

SHARED, CHANNELS_FASTEST, RUNS = 0, 1, 2

# Every thread holds 8 elements: 128-bit accesses for 16-bit types, two for float32.
FORWARD_BLOCK, FORWARD_WARPS = 1024, 4  # elements per program
RUN_TILE, RUN_WARPS = 1024, 4  # backward, channel-constant runs: elements of one channel
ROW_TILE, CHANNEL_TILE, ROW_WARPS = 64, 32, 8  # backward, channels fastest: [rows, channels]
SUM_BLOCK, SUM_CHUNK = 512, 64  # pass 2: outputs per program (4 warps); pieces per inner sum

@triton.jit
def _dct_phase(x, scale, offset, ODD: tl.constexpr, CLAMP: tl.constexpr, ACC: tl.constexpr):
    # dct_phase of dct.h: t = x * scale + offset (clamped with CLAMP) reduced by the exact
    # symmetries, m = round(t), d = t - m, parity = (-1)^m, and the angle q whose sincos starts
    # the recurrence (mirrored about 1/4 for the odd basis). `flows` is CLAMP's gradient gate
    # (NaN: no gradient, as torch.clamp).
    t = x * scale + offset
    flows = (t >= 0.0) & (t <= 1.0)
    if CLAMP:
        t = tl.where(t < 0.0, 0.0, tl.where(t > 1.0, 1.0, t))
    m = round_to_integer(t, ACC)
    d = t - m
    r = tl.abs(d)
    half_m = m * 0.5
    parity = tl.where(round_to_integer(half_m, ACC) != half_m, -1.0, 1.0)
    if ODD:
        mirrored = r > 0.25
        q = tl.where(mirrored, 0.5 - r, r)
    else:
        mirrored = r < 0.0  # the basis of every frequency is never mirrored
        q = r * 0.5
    s, c = sincospi_quarter(q, ACC)
    return d, parity, mirrored, s, c, flows


@triton.jit
def _dct_point(x, scale, offset, ODD: tl.constexpr, CLAMP: tl.constexpr, ACC: tl.constexpr):
    # dct_point of dct.h: cos(pi k_j t) = (j even ? cos_sign_even : cos_sign_odd) * c_j and
    # sin(pi k_j t) = (j even ? sin_sign_even : sin_sign_odd) * s_j, c_j and s_j from the
    # recurrence started at (first, difference).
    d, parity, mirrored, s, c, flows = _dct_phase(x, scale, offset, ODD, CLAMP, ACC)
    sign_d = tl.where(d < 0.0, -1.0, 1.0)
    lam = -4.0 * s * s
    if ODD:
        cos_first = tl.where(mirrored, s, c)
        cos_difference = tl.where(mirrored, 2.0 * s, 0.0)
        sin_first = tl.where(mirrored, c, s)
        sin_difference = tl.where(mirrored, 0.0, 2.0 * s)
        alternate = tl.where(mirrored, -1.0, 1.0)
        cos_sign_even = parity
        cos_sign_odd = parity * alternate
        sin_sign_even = parity * sign_d
        sin_sign_odd = parity * sign_d * alternate
    else:
        cos_first = 1.0 + 0.0 * s  # NaN in, NaN out
        cos_difference = 2.0 * s * s
        sin_first = 0.0 * s
        sin_difference = 2.0 * s * c
        cos_sign_even = 1.0 + 0.0 * s
        cos_sign_odd = parity
        sin_sign_even = sign_d
        sin_sign_odd = sign_d * parity
    return (lam, cos_first, cos_difference, sin_first, sin_difference, cos_sign_even,
            cos_sign_odd, sin_sign_even, sin_sign_odd, flows)


@triton.jit
def _dct_sum(x, scale, offset, ODD: tl.constexpr, CLAMP: tl.constexpr, ACC: tl.constexpr):
    # dct_sum of dct.h: the forward's Clenshaw sum in Reinsch's form, d_j = d_{j+1} + G_j +
    # lam b_{j+1}, b_j = b_{j+1} + d_j, G_j = (j odd ? flip : 1) F_j, y = scale (d_0 + tail b_1).
    d, parity, mirrored, s, c, flows = _dct_phase(x, scale, offset, ODD, CLAMP, ACC)
    lam = -4.0 * s * s
    if ODD:
        flip = tl.where(mirrored, -1.0, 1.0)
        sum_scale = parity * tl.where(mirrored, s, c)
        tail = tl.where(mirrored, 2.0, 0.0)
    else:
        flip = parity
        sum_scale = 1.0 + 0.0 * s
        tail = 2.0 * s * s
    return lam, flip, sum_scale, tail


@triton.jit
def _channel_of(offsets, inner, channels, LAYOUT: tl.constexpr):
    if LAYOUT == 0:
        return offsets * 0
    elif LAYOUT == 1:
        return offsets % channels
    else:
        return (offsets // inner) % channels


@triton.jit
def _domain(scale, offset, ACC: tl.constexpr):
    # scale and offset in the compute type, rounded from float64 as the C++ kernels round them.
    # The kernels declare them tl.float64, so the JIT passes them as doubles whatever their
    # value (it would type a plain Python float fp32, an integer by its size); the interpreter
    # ignores the declaration and passes the Python float itself, which tl.full makes a float64
    # (an operator would make it a float32 or float64 constant by its magnitude).
    return tl.full((), scale, tl.float64).to(ACC), tl.full((), offset, tl.float64).to(ACC)


@triton.jit
def _dct_forward_kernel(x_ptr, y_ptr, table_ptr, scale: tl.float64, offset: tl.float64, n,
                        inner, channels, stride_c, stride_j, num_coeffs, LAYOUT: tl.constexpr,
                        ODD: tl.constexpr, CLAMP: tl.constexpr, BLOCK: tl.constexpr,
                        ACC: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(ACC)
    coeff_ptrs = table_ptr + _channel_of(offsets, inner, channels, LAYOUT) * stride_c
    scale, offset = _domain(scale, offset, ACC)
    lam, flip, sum_scale, tail = _dct_sum(x, scale, offset, ODD, CLAMP, ACC)
    d = tl.zeros([BLOCK], ACC)  # d_{j+1}, b_{j+1}, b_2 (b_1 at the end) from j = K - 1 down
    b = tl.zeros([BLOCK], ACC)
    b_before = tl.zeros([BLOCK], ACC)
    for i in range(num_coeffs):
        j = num_coeffs - 1 - i
        f = tl.load(coeff_ptrs + j * stride_j, mask=mask, other=0.0)
        f = tl.where(j % 2 == 1, f * flip, f)
        b_before = b
        d = lam * b + (d + f)
        b += d
    y = sum_scale * (tail * b_before + d)
    tl.store(y_ptr + offsets, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _dct_backward_tile(g, x, mask, channel_ptrs, partial_ptrs, partial_mask, num_coeffs,
                       stride_j, partial_stride_j, scale, offset, ODD: tl.constexpr,
                       CLAMP: tl.constexpr, GRAD_X: tl.constexpr, GRAD_COEFFS: tl.constexpr,
                       ACC: tl.constexpr):
    # One tile's grad_x, and its sums of grad * cos(pi k_j t) over axis 0 (the elements of a
    # column share a channel) stored at partial_ptrs + j * partial_stride_j. channel_ptrs
    # point at each element's row of the slope table.
    (lam, cos_value, cos_difference, sin_value, sin_difference, cos_sign_even, cos_sign_odd,
     sin_sign_even, sin_sign_odd, flows) = _dct_point(x, scale, offset, ODD, CLAMP, ACC)
    weight = g * cos_sign_even
    weight_other = g * cos_sign_odd
    slope = tl.zeros(x.shape, ACC)
    slope_other = tl.zeros(x.shape, ACC)
    for j in range(num_coeffs):
        if GRAD_X:
            slope += tl.load(channel_ptrs + j * stride_j, mask=mask, other=0.0) * sin_value
            sin_difference += lam * sin_value
            sin_value += sin_difference
            slope, slope_other = slope_other, slope
        if GRAD_COEFFS:
            part = tl.sum(weight * cos_value, axis=0)
            tl.store(partial_ptrs + j * partial_stride_j, part, mask=partial_mask)
            cos_difference += lam * cos_value
            cos_value += cos_difference
            weight, weight_other = weight_other, weight
    even = tl.where(num_coeffs % 2 == 0, slope, slope_other)
    odd = tl.where(num_coeffs % 2 == 0, slope_other, slope)
    grad_x = g * (sin_sign_even * even + sin_sign_odd * odd)
    if CLAMP:
        grad_x = tl.where(flows, grad_x, 0.0)  # a select: clamp's zero gradient stays 0
    return grad_x


@triton.jit
def _dct_backward_runs_kernel(grad_ptr, x_ptr, grad_x_ptr, partial_ptr, table_ptr,
                              scale: tl.float64, offset: tl.float64, per_channel, inner,
                              channels, stride_c, stride_j, num_coeffs,
                              LAYOUT: tl.constexpr, ODD: tl.constexpr, CLAMP: tl.constexpr,
                              GRAD_X: tl.constexpr, GRAD_COEFFS: tl.constexpr,
                              BLOCK: tl.constexpr, ACC: tl.constexpr):
    # Program (tile, channel): BLOCK consecutive elements of one channel, in memory order.
    tile = tl.program_id(0).to(tl.int64)
    channel = tl.program_id(1).to(tl.int64)
    positions = tile * BLOCK + tl.arange(0, BLOCK)
    mask = positions < per_channel
    if LAYOUT == 0:
        offsets = positions
    else:
        # Integer arguments below 2^31 are int32: each product starts from an int64.
        offsets = (positions // inner) * channels * inner + channel * inner + positions % inner
    g = tl.load(grad_ptr + offsets, mask=mask, other=0.0).to(ACC)
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(ACC)
    channel_ptrs = table_ptr + channel * stride_c + offsets * 0
    scale, offset = _domain(scale, offset, ACC)
    grad_x = _dct_backward_tile(g, x, mask, channel_ptrs,
                                partial_ptr + tile * num_coeffs * channels + channel, True,
                                num_coeffs, stride_j, channels, scale, offset, ODD, CLAMP, GRAD_X,
                                GRAD_COEFFS, ACC)
    if GRAD_X:
        tl.store(grad_x_ptr + offsets, grad_x.to(grad_x_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _dct_backward_rows_kernel(grad_ptr, x_ptr, grad_x_ptr, partial_ptr, table_ptr,
                              scale: tl.float64, offset: tl.float64, rows, channels, stride_c,
                              stride_j, num_coeffs, ODD: tl.constexpr, CLAMP: tl.constexpr,
                              GRAD_X: tl.constexpr,
                              GRAD_COEFFS: tl.constexpr, ROWS: tl.constexpr,
                              COLUMNS: tl.constexpr, ACC: tl.constexpr):
    # Program (row tile, channel tile) of a [rows, channels] tensor (channels fastest).
    tile = tl.program_id(0).to(tl.int64)
    row = tile * ROWS + tl.arange(0, ROWS).to(tl.int64)
    column = tl.program_id(1).to(tl.int64) * COLUMNS + tl.arange(0, COLUMNS)
    in_columns = column < channels
    mask = (row < rows)[:, None] & in_columns[None, :]
    offsets = row[:, None] * channels + column[None, :]
    g = tl.load(grad_ptr + offsets, mask=mask, other=0.0).to(ACC)
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(ACC)
    channel_ptrs = table_ptr + (column * stride_c)[None, :] + offsets * 0
    partial_ptrs = partial_ptr + tile * num_coeffs * channels + column
    scale, offset = _domain(scale, offset, ACC)
    grad_x = _dct_backward_tile(g, x, mask, channel_ptrs, partial_ptrs, in_columns, num_coeffs,
                                stride_j, channels, scale, offset, ODD, CLAMP, GRAD_X,
                                GRAD_COEFFS, ACC)
    if GRAD_X:
        tl.store(grad_x_ptr + offsets, grad_x.to(grad_x_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _sum_pieces_kernel(partial_ptr, out_ptr, pieces, width, BLOCK: tl.constexpr,
                       CHUNK: tl.constexpr, ACC: tl.constexpr):
    # out[i] = sum over pieces p of partial[p, i]: sequential within chunks of CHUNK pieces,
    # then over the chunk sums. A fixed order: the result does not depend on the launch.
    columns = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = columns < width
    total = tl.zeros([BLOCK], ACC)
    for first in range(0, pieces, CHUNK):
        chunk = tl.zeros([BLOCK], ACC)
        for piece in range(first, tl.minimum(first + CHUNK, pieces)):
            row = tl.cast(piece, tl.int64) * width  # pieces * width may pass 2^31
            chunk += tl.load(partial_ptr + row + columns, mask=mask, other=0.0)
        total += chunk
    tl.store(out_ptr + columns, total, mask=mask)


def _channel_view(dense: Tensor, channel_dim: int, rows: int) -> tuple[int, int, int, int]:
    """(LAYOUT, outer, channels, inner) of a dense tensor's memory (see dct_channel_view in
    csrc/host/dct.h)."""
    if rows == 1:
        return SHARED, 1, 1, dense.numel()
    inner = dense.stride(channel_dim)
    return (CHANNELS_FASTEST if inner == 1 else RUNS), dense.numel() // (rows * inner), rows, inner


def _tables(coeffs: Tensor, compute: torch.dtype, layout: int, lo: float, hi: float, odd: bool,
            slope: bool):
    """(table, stride_c, stride_j, scale, offset): the coefficients (or the slope
    coefficients G_j = -pi k_j F_j * scale) in the compute type, [K, C] when channels are
    fastest (so that a warp's channels are contiguous) else [C, K]; t = x * scale + offset."""
    scale, offset = 1.0 / (hi - lo), -lo / (hi - lo)
    table = coeffs.to(torch.float64)
    if slope:
        k = torch.arange(coeffs.shape[1], dtype=torch.float64, device=coeffs.device)
        table = table * ((2 * k + 1 if odd else k) * (-torch.pi * scale))
    table = table.to(compute)
    if layout == CHANNELS_FASTEST:
        table = table.t().contiguous()
        strides = (1, table.stride(0))
    else:
        table = table.contiguous()
        strides = (table.stride(0), 1)
    return table, strides[0], strides[1], scale, offset


@torch.library.custom_op("fastact_triton::dct_activation", mutates_args=())
def dct_activation(x: Tensor, coeffs: Tensor, channel_dim: int, lo: float, hi: float, odd: bool,
                   clamp: bool) -> Tensor:
    y = torch.empty_like(x)
    n = y.numel()
    if n == 0:
        return y
    layout, _, channels, inner = _channel_view(y, channel_dim, coeffs.shape[0])
    compute = torch_compute_dtype(x.dtype)
    table, stride_c, stride_j, scale, offset = _tables(coeffs, compute, layout, lo, hi, odd, False)
    launch(_dct_forward_kernel, (triton.cdiv(n, FORWARD_BLOCK),), in_layout_of(y, x), y, table,
           scale, offset, n, inner, channels, stride_c, stride_j, coeffs.shape[1], LAYOUT=layout,
           ODD=odd, CLAMP=clamp, BLOCK=FORWARD_BLOCK, ACC=compute_dtype(x.dtype),
           num_warps=FORWARD_WARPS)
    return y


def _dense_layout(x: Tensor) -> Tensor:
    """A tensor with the strides at::empty_like(x) gives (x's own when x is dense)."""
    return torch.empty_like(x, device="meta")


@torch.library.custom_op("fastact_triton::dct_activation_backward", mutates_args=())
def dct_activation_backward(grad_out: Tensor, x: Tensor, coeffs: Tensor, channel_dim: int,
                            lo: float, hi: float, odd: bool, clamp: bool,
                            output_mask: list[bool]) -> tuple[Tensor, Tensor]:
    need_x, need_coeffs = output_mask
    grad_x = torch.empty_like(x) if need_x else x.new_empty(0)
    if x.numel() == 0 or not (need_x or need_coeffs):
        return grad_x, (coeffs.new_zeros(coeffs.shape) if need_coeffs else coeffs.new_empty(0))
    like = grad_x if need_x else _dense_layout(x)
    if x.stride() == like.stride():
        xd = x
    else:
        xd = torch.empty_strided(x.shape, like.stride(), dtype=x.dtype, device=x.device).copy_(x)
    gd = grad_out if grad_out.stride() == xd.stride() else (
        torch.empty_strided(x.shape, xd.stride(), dtype=x.dtype, device=x.device).copy_(grad_out))
    layout, outer, channels, inner = _channel_view(xd, channel_dim, coeffs.shape[0])
    compute = torch_compute_dtype(x.dtype)
    acc = compute_dtype(x.dtype)
    table, stride_c, stride_j, scale, offset = _tables(coeffs, compute, layout, lo, hi, odd, True)
    num_coeffs = coeffs.shape[1]
    if layout == CHANNELS_FASTEST:
        grid = (triton.cdiv(outer, ROW_TILE), triton.cdiv(channels, CHANNEL_TILE))
    else:
        grid = (triton.cdiv(outer * inner, RUN_TILE), channels)
    partials = torch.empty((grid[0] if need_coeffs else 0, num_coeffs, channels), dtype=compute,
                           device=x.device)
    grad_x_arg = grad_x if need_x else xd
    if layout == CHANNELS_FASTEST:
        launch(_dct_backward_rows_kernel, grid, gd, xd, grad_x_arg, partials, table, scale, offset,
               outer, channels, stride_c, stride_j, num_coeffs, ODD=odd, CLAMP=clamp, GRAD_X=need_x,
               GRAD_COEFFS=need_coeffs, ROWS=ROW_TILE, COLUMNS=CHANNEL_TILE, ACC=acc,
               num_warps=ROW_WARPS)
    else:
        launch(_dct_backward_runs_kernel, grid, gd, xd, grad_x_arg, partials, table, scale,
               offset, outer * inner, inner, channels, stride_c, stride_j, num_coeffs, LAYOUT=layout,
               ODD=odd, CLAMP=clamp, GRAD_X=need_x, GRAD_COEFFS=need_coeffs, BLOCK=RUN_TILE,
               ACC=acc, num_warps=RUN_WARPS)
    if not need_coeffs:
        return grad_x, coeffs.new_empty(0)
    width = num_coeffs * channels
    sums = torch.empty(width, dtype=compute, device=x.device)
    launch(_sum_pieces_kernel, (triton.cdiv(width, SUM_BLOCK),), partials, sums, grid[0], width,
           BLOCK=SUM_BLOCK, CHUNK=SUM_CHUNK, ACC=acc)
    return grad_x, sums.view(num_coeffs, channels).t().contiguous().to(coeffs.dtype)
