"""GmP in Triton, mirroring csrc/include/fastact/geometric.h: the hyperspherical maps (a program
per row scanning tiles with tl.cumprod / tl.associative_scan in float64, or per block of rows for
the sequential inverse map), and the layer's epilogues around torch.mm / conv2d (cuBLAS, cuDNN).
Wrapped as custom ops fastact_triton::<op>; fake kernels and autograd are registered in
fastact/geometric.py, beside the C++ ops'."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from fastact.triton._common import _TRITON_TYPE, CompileSpec, compute_dtype, launch

# The maps: tiles of a row per step (float64 scans), and rows per program for the inverse map.
ROW_TILE = 1024
ROW_WARPS = 4
ROWS_PER_PROGRAM = 32
# The epilogues: [EPILOGUE_ROWS, EPILOGUE_COLS] tiles, 2048 elements, mask words of 32 columns.
EPILOGUE_ROWS = 16
EPILOGUE_COLS = 128
EPILOGUE_WARPS = 8
# The per-channel step: fan-in / positions chunks.
RADIAL_BLOCK = 1024


@triton.jit
def _to_f64(x):
    # 16-bit floats go through float32 (the interpreter computes them wrongly otherwise).
    if x.dtype == tl.float64:
        return x
    return x.to(tl.float32).to(tl.float64)


@triton.jit
def _from_f64(x, ty: tl.constexpr):
    if ty == tl.float64:
        return x
    return x.to(tl.float32).to(ty)


@triton.jit
def _affine_combine(a_first, b_first, a_second, b_second):
    # Maps h -> a h + b applied first, then second: the linear recurrence of the reverse scan.
    return a_first * a_second, b_first * a_second + b_second


@triton.jit
def _last(values, BLOCK: tl.constexpr):
    return tl.sum(tl.where(tl.arange(0, BLOCK) == BLOCK - 1, values, 0.0), axis=0)


@triton.jit
def _first(values, BLOCK: tl.constexpr):
    return tl.sum(tl.where(tl.arange(0, BLOCK) == 0, values, 0.0), axis=0)


@triton.jit
def _spherical_forward_kernel(theta_ptr, u_ptr, n, BLOCK: tl.constexpr):
    # u_k = P_k c'_k: inclusive products of s'_k = sin(theta_{k-1}) (1 for k = 0) are the
    # exclusive prefix products P_k, in float64, carried from tile to tile.
    row = tl.program_id(0).to(tl.int64)
    theta_row = theta_ptr + row * (n - 1)
    u_row = u_ptr + row * n
    carry = tl.cast(1.0, tl.float64)
    for start in range(0, n, BLOCK):
        k = start + tl.arange(0, BLOCK)
        has_previous = (k >= 1) & (k < n)
        previous = _to_f64(tl.load(theta_row + k - 1, mask=has_previous, other=0.0))
        s = tl.where(has_previous, tl.sin(previous), 1.0)
        angle = _to_f64(tl.load(theta_row + k, mask=k < n - 1, other=0.0))
        c = tl.where(k < n - 1, tl.cos(angle), 1.0)
        prefix = tl.cumprod(s, axis=0) * carry
        tl.store(u_row + k, _from_f64(prefix * c, u_ptr.dtype.element_ty), mask=k < n)
        carry = _last(prefix, BLOCK)


@triton.jit
def _spherical_backward_kernel(grad_ptr, theta_ptr, work_ptr, out_ptr, n, BLOCK: tl.constexpr):
    # Pass 1, tiles from the right: S_i = s_i S_{i+1} + g_i c'_i (s_{n-1} = 0) as a reverse
    # affine scan; factor_{i-1} = c_{i-1} S_i - g_{i-1} s_{i-1} into the workspace. Pass 2, tiles
    # from the left: out_k = P_k factor_k. work_ptr may alias out_ptr (same dtype).
    row = tl.program_id(0).to(tl.int64)
    theta_row = theta_ptr + row * (n - 1)
    grad_row = grad_ptr + row * n
    work_row = work_ptr + row * (n - 1)
    out_row = out_ptr + row * (n - 1)
    tiles = tl.cdiv(n, BLOCK)
    suffix = tl.cast(0.0, tl.float64)
    for j in range(0, tiles):
        i = (tiles - 1 - j) * BLOCK + tl.arange(0, BLOCK)
        inside = i < n
        angle = _to_f64(tl.load(theta_row + i, mask=i < n - 1, other=0.0))
        g = _to_f64(tl.load(grad_row + i, mask=inside, other=0.0))
        a = tl.where(i < n - 1, tl.sin(angle), tl.where(inside, 0.0, 1.0))
        b = g * tl.where(i < n - 1, tl.cos(angle), 1.0)
        scan_a, scan_b = tl.associative_scan((a, b), 0, _affine_combine, reverse=True)
        s_here = scan_a * suffix + scan_b
        has_previous = (i >= 1) & inside
        previous = _to_f64(tl.load(theta_row + i - 1, mask=has_previous, other=0.0))
        g_previous = _to_f64(tl.load(grad_row + i - 1, mask=has_previous, other=0.0))
        factor = tl.cos(previous) * s_here - g_previous * tl.sin(previous)
        tl.store(work_row + i - 1, factor.to(work_ptr.dtype.element_ty), mask=has_previous)
        suffix = _first(s_here, BLOCK)
    carry = tl.cast(1.0, tl.float64)
    for start in range(0, n - 1, BLOCK):
        k = start + tl.arange(0, BLOCK)
        has_previous = (k >= 1) & (k < n - 1)
        previous = _to_f64(tl.load(theta_row + k - 1, mask=has_previous, other=0.0))
        prefix = tl.cumprod(tl.where(has_previous, tl.sin(previous), 1.0), axis=0) * carry
        factor = tl.load(work_row + k, mask=k < n - 1, other=0.0).to(tl.float64)
        tl.store(out_row + k, _from_f64(prefix * factor, out_ptr.dtype.element_ty), mask=k < n - 1)
        carry = _last(prefix, BLOCK)


@triton.jit
def _atan_unit(t):
    # atan(t) for t in [0, 1] in float64: Cephes' reduction and rational approximation.
    reduced = t > 0.66
    x = tl.where(reduced, (t - 1.0) / (t + 1.0), t)
    z = x * x
    p = ((((-8.750608600031904122785e-1 * z - 1.615753718733365076637e1) * z
           - 7.500855792314704667340e1) * z - 1.228866684490136173410e2) * z
         - 6.485021904942025371773e1)
    q = (((((z + 2.485846490142306297962e1) * z + 1.650270098316988542046e2) * z
           + 4.328810604912902668951e2) * z + 4.853903996359136964868e2) * z
         + 1.945506571482613964425e2)
    r = x + x * (z * p / q)
    return tl.where(reduced, 0.78539816339744830962 + (r + 3.061616997868382943065e-17), r)


@triton.jit
def _cartesian_angle(y, x):
    # fastact/geometric.h: atan2(y, x), and 0 where both are 0.
    ax = tl.abs(x)
    ay = tl.abs(y)
    larger = tl.maximum(ax, ay)
    angle = _atan_unit(tl.minimum(ax, ay) / tl.where(larger > 0.0, larger, 1.0))
    angle = tl.where(ay > ax, (1.57079632679489655800 - angle) + 6.123233995736766036e-17, angle)
    angle = tl.where(x < 0.0, (3.14159265358979311600 - angle) + 1.2246467991473532072e-16, angle)
    # The sign bit, as C's atan2 (the CPU/CUDA kernels): atan2(-0, x < 0) = -pi.
    angle = tl.where(y.to(tl.int64, bitcast=True) < 0, -angle, angle)
    return tl.where((x == 0.0) & (y == 0.0), 0.0, angle)


@triton.jit
def _row_scale(w_rows, rows_ok, n, BLOCK_R: tl.constexpr):
    # A power of two per row bringing the largest |w| to [0.5, 2) (and its inverse), from the
    # exponent bits, so that sums of squares cannot overflow or underflow.
    # As fastact/geometric.h: NaNs are passed over, and a row with an infinity is not scaled.
    largest = tl.zeros((BLOCK_R,), tl.float64)
    for k in range(0, n):
        a = tl.abs(_to_f64(tl.load(w_rows + k, mask=rows_ok, other=0.0)))
        largest = tl.where(a > largest, a, largest)
    exponent = (largest.to(tl.int64, bitcast=True) >> 52) & 0x7FF
    scale_field = tl.where(exponent < 0x7FF, 2045 - tl.minimum(exponent, 2044), 1023)
    scale = (scale_field << 52).to(tl.float64, bitcast=True)
    inverse = ((2046 - scale_field) << 52).to(tl.float64, bitcast=True)
    return scale, inverse


@triton.jit
def _cartesian_forward_kernel(w_ptr, radius_ptr, theta_ptr, rows, n, BLOCK_R: tl.constexpr):
    # One row per lane, sequential along the row (the inverse map converts weights once).
    r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    rows_ok = r < rows
    w_rows = w_ptr + r * n
    theta_rows = theta_ptr + r * (n - 1)
    scale, inverse = _row_scale(w_rows, rows_ok, n, BLOCK_R)
    tail_squared = tl.zeros((BLOCK_R,), tl.float64)
    following = tl.zeros((BLOCK_R,), tl.float64)
    for j in range(0, n):
        k = n - 1 - j
        wk = _to_f64(tl.load(w_rows + k, mask=rows_ok, other=0.0)) * scale
        y = tl.where(k == n - 2, following, tl.sqrt(tail_squared))
        tl.store(theta_rows + k, _from_f64(_cartesian_angle(y, wk), theta_ptr.dtype.element_ty),
                 mask=rows_ok & (k <= n - 2))
        tail_squared += wk * wk
        following = wk
    radius = tl.sqrt(tail_squared) * inverse
    tl.store(radius_ptr + r, _from_f64(radius, radius_ptr.dtype.element_ty), mask=rows_ok)


@triton.jit
def _cartesian_backward_kernel(grad_radius_ptr, grad_theta_ptr, w_ptr, tail_ptr, out_ptr, rows, n,
                               HAS_GRAD_RADIUS: tl.constexpr, HAS_GRAD_THETA: tl.constexpr,
                               BLOCK_R: tl.constexpr):
    # fastact/geometric.h: pass 1 stores the scaled tails t_k (float64 workspace), pass 2 runs
    # the prefix sum H_j along the row.
    r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    rows_ok = r < rows
    w_rows = w_ptr + r * n
    tail_rows = tail_ptr + r * n
    scale, inverse = _row_scale(w_rows, rows_ok, n, BLOCK_R)
    tail_squared = tl.zeros((BLOCK_R,), tl.float64)
    for j in range(0, n):
        k = n - 1 - j
        wk = _to_f64(tl.load(w_rows + k, mask=rows_ok, other=0.0)) * scale
        tail_squared += wk * wk
        tl.store(tail_rows + k, tl.sqrt(tail_squared), mask=rows_ok)
    radius = tl.load(tail_rows, mask=rows_ok, other=0.0)
    radial = tl.zeros((BLOCK_R,), tl.float64)
    if HAS_GRAD_RADIUS:
        grad_r = _to_f64(tl.load(grad_radius_ptr + r, mask=rows_ok, other=0.0))
        radial = tl.where(radius > 0.0, grad_r / tl.where(radius > 0.0, radius, 1.0), 0.0)
    w_last = _to_f64(tl.load(w_rows + n - 1, mask=rows_ok, other=0.0)) * scale
    w_second_last = _to_f64(tl.load(w_rows + n - 2, mask=rows_ok, other=0.0)) * scale
    last_squared = w_second_last * w_second_last + w_last * w_last
    last_grad = tl.zeros((BLOCK_R,), tl.float64)
    if HAS_GRAD_THETA:
        last_grad = _to_f64(tl.load(grad_theta_ptr + r * (n - 1) + n - 2, mask=rows_ok, other=0.0))
    last_term = tl.where(last_squared > 0.0,
                         last_grad / tl.where(last_squared > 0.0, last_squared, 1.0), 0.0)
    prefix_sum = tl.zeros((BLOCK_R,), tl.float64)
    for j in range(0, n):
        wj = _to_f64(tl.load(w_rows + j, mask=rows_ok, other=0.0)) * scale
        tail = tl.load(tail_rows + j, mask=rows_ok, other=0.0)
        tail_next = tl.load(tail_rows + j + 1, mask=rows_ok & (j + 1 < n), other=0.0)
        grad_angle = tl.zeros((BLOCK_R,), tl.float64)
        if HAS_GRAD_THETA:
            grad_angle = _to_f64(tl.load(grad_theta_ptr + r * (n - 1) + j,
                                         mask=rows_ok & (j < n - 1), other=0.0))
        safe_tail = tl.where(tail > 0.0, tail, 1.0)
        diagonal = tl.where(tail > 0.0, -grad_angle * tail_next / (safe_tail * safe_tail), 0.0)
        diagonal = tl.where(j == n - 2, -last_term * w_last, diagonal)
        diagonal = tl.where(j == n - 1, last_term * w_second_last, diagonal)
        value = wj * radial + (wj * prefix_sum + diagonal) * scale
        tl.store(out_ptr + r * n + j, _from_f64(value, out_ptr.dtype.element_ty), mask=rows_ok)
        safe_next = tl.where(tail_next > 0.0, tail_next, 1.0)
        term = tl.where(tail_next > 0.0, grad_angle * wj / (safe_tail * safe_tail * safe_next), 0.0)
        prefix_sum += tl.where(j < n - 2, term, 0.0)


@triton.jit
def _epilogue_forward_kernel(z_ptr, radius_ptr, bias_ptr, mask_ptr, rows, cols, words,
                             BLOCK_R: tl.constexpr, BLOCK_M: tl.constexpr, ACC: tl.constexpr):
    # z = radius * relu(z + bias) in place; the mask packs 32 columns per int32 word.
    r = tl.program_id(1).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    m = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    inside = (r[:, None] < rows) & (m[None, :] < cols)
    pointers = z_ptr + r[:, None] * cols + m[None, :]
    radius = tl.load(radius_ptr + m, mask=m < cols, other=0.0).to(ACC)
    bias = tl.load(bias_ptr + m, mask=m < cols, other=0.0).to(ACC)
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
    # fastact/geometric.h, per channel c: S_{c,p} = the partial column sums over the blocks of
    # rows in order; grad_radius = G'_c . u_c + sum_p bias S; G'_c *= radius; weight = radius u;
    # grad_bias = radius * S (per position) or radius * sum_p S.
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


# ---- the maps ---------------------------------------------------------------------------------

def _row_tile(n: int) -> int:
    """Tile of a row per step: the whole row up to ROW_TILE elements."""
    return min(ROW_TILE, max(16, triton.next_power_of_2(n)))


def _theta_shape_check(op, theta):
    if theta.dim() == 0:
        raise RuntimeError(f"fastact_triton.{op}: theta must have at least one dimension")


@torch.library.custom_op("fastact_triton::spherical_to_cartesian", mutates_args=())
def spherical_to_cartesian(theta: Tensor) -> Tensor:
    _theta_shape_check("spherical_to_cartesian", theta)
    n = theta.shape[-1] + 1
    u = theta.new_empty((*theta.shape[:-1], n))
    rows = u.numel() // n
    if rows:
        launch(_spherical_forward_kernel, (rows,), theta.contiguous(), u, n, BLOCK=_row_tile(n),
               num_warps=ROW_WARPS)
    return u


@torch.library.custom_op("fastact_triton::spherical_to_cartesian_backward", mutates_args=())
def spherical_to_cartesian_backward(grad_u: Tensor, theta: Tensor) -> Tensor:
    _theta_shape_check("spherical_to_cartesian_backward", theta)
    n = theta.shape[-1] + 1
    grad_theta = torch.empty_like(theta, memory_format=torch.contiguous_format)
    rows = grad_u.numel() // n
    if rows and n > 1:
        # float32 (float64 for float64) scratch for the reverse pass: the output itself when it
        # has that dtype.
        work_dtype = torch.float64 if theta.dtype == torch.float64 else torch.float32
        work = (grad_theta if theta.dtype == work_dtype
                else torch.empty_like(grad_theta, dtype=work_dtype))
        launch(_spherical_backward_kernel, (rows,), grad_u.contiguous(), theta.contiguous(), work,
               grad_theta, n, BLOCK=_row_tile(n), num_warps=ROW_WARPS)
    return grad_theta


@torch.library.custom_op("fastact_triton::cartesian_to_spherical", mutates_args=())
def cartesian_to_spherical(w: Tensor) -> tuple[Tensor, Tensor]:
    n = w.shape[-1]
    radius = w.new_empty(w.shape[:-1])
    theta = w.new_empty((*w.shape[:-1], n - 1))
    rows = radius.numel()
    if rows:
        launch(_cartesian_forward_kernel, (triton.cdiv(rows, ROWS_PER_PROGRAM),),
               w.contiguous(), radius, theta, rows, n, BLOCK_R=ROWS_PER_PROGRAM)
    return radius, theta


@torch.library.custom_op("fastact_triton::cartesian_to_spherical_backward", mutates_args=())
def cartesian_to_spherical_backward(grad_radius: Tensor | None, grad_theta: Tensor | None,
                                    w: Tensor) -> Tensor:
    n = w.shape[-1]
    grad_w = torch.empty_like(w, memory_format=torch.contiguous_format)
    rows = grad_w.numel() // n if n else 0
    if rows:
        tails = torch.empty(w.shape, dtype=torch.float64, device=w.device)
        launch(_cartesian_backward_kernel, (triton.cdiv(rows, ROWS_PER_PROGRAM),),
               grad_radius.contiguous() if grad_radius is not None else w,
               grad_theta.contiguous() if grad_theta is not None else w,
               w.contiguous(), tails, grad_w, rows, n,
               HAS_GRAD_RADIUS=grad_radius is not None, HAS_GRAD_THETA=grad_theta is not None,
               BLOCK_R=ROWS_PER_PROGRAM)
    return grad_w


# ---- the layer: torch.mm / conv2d, then the fused epilogue (csrc/geometric_layer.h) ------------

def _compute_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _per_column(t: Tensor, channels: int, positions: int, channels_fastest: bool) -> Tensor:
    values = t.to(_compute_dtype(t.dtype)).reshape(channels, -1).expand(channels, positions)
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
    partial = torch.empty((blocks, cols), dtype=_compute_dtype(grad.dtype), device=grad.device)
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
                                   x_needs_grad: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    _check_layer("geometric_relu_linear_backward", x, u, radius, bias, 2)
    out, fan_in = u.shape
    rows = x.numel() // fan_in
    x2 = x.reshape(rows, fan_in)
    grad_masked, partial = _epilogue_backward(grad_z.reshape(rows, out).contiguous(), mask, rows,
                                              out)
    grad_u = torch.mm(grad_masked.t(), x2)
    # dL/dx = (radius * g') u = g' (radius u): the radial pass scales the small matrix.
    grad_radius, grad_bias, weight = _radial_backward(grad_u, u.contiguous(), radius, partial, bias,
                                                      out, 1, True, x_needs_grad)
    grad_x = torch.mm(grad_masked, weight).view(x.shape) if x_needs_grad else x.new_empty(0)
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
                                   x_needs_grad: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    _check_layer("geometric_relu_conv2d_backward", x, u, radius, bias, 4)
    grad = grad_z.contiguous(memory_format=_conv_format(x))
    channels, positions = grad.shape[1], grad.shape[2] * grad.shape[3]
    channels_fastest = not grad.is_contiguous()
    grad_masked, partial = _epilogue_backward(grad, mask, grad.shape[0], channels * positions)
    # The weight gradient first (it does not read the weight); the radial pass then gives
    # radius * u, the weight of the input gradient.
    _, grad_weight, _ = torch.ops.aten.convolution_backward(
        grad_masked, x, u, None, stride, padding, dilation, False, [0, 0], groups,
        [False, True, False])
    grad_u = grad_weight.contiguous()
    grad_radius, grad_bias, weight = _radial_backward(
        grad_u.view(channels, -1), u.contiguous().view(channels, -1), radius, partial, bias,
        channels, positions, channels_fastest, x_needs_grad)
    grad_x = x.new_empty(0)
    if x_needs_grad:
        grad_x, _, _ = torch.ops.aten.convolution_backward(
            grad_masked, x, weight.view(u.shape), None, stride, padding, dilation, False, [0, 0],
            groups, [True, False, False])
        grad_x = grad_x.contiguous(memory_format=_conv_format(x))
    if bias is not None:
        grad_bias = grad_bias.view(bias.shape)
    return grad_x, grad_u, grad_radius, grad_bias


# ---- ahead-of-time compile specs (make check-cuda) --------------------------------------------

def _specs():
    specs = []
    for dtype, ttype in _TRITON_TYPE.items():
        work = "fp64" if dtype == torch.float64 else "fp32"
        acc = compute_dtype(dtype)
        specs += [
            # Angles are read at k and k - 1: unaligned, scalar loads.
            CompileSpec(_spherical_forward_kernel,
                        {"theta_ptr": f"*{ttype}", "u_ptr": f"*{ttype}", "n": "i64",
                         "BLOCK": "constexpr"}, {"BLOCK": ROW_TILE}, ROW_WARPS, vector_loads=False),
            CompileSpec(_spherical_backward_kernel,
                        {"grad_ptr": f"*{ttype}", "theta_ptr": f"*{ttype}", "work_ptr": f"*{work}",
                         "out_ptr": f"*{ttype}", "n": "i64", "BLOCK": "constexpr"},
                        {"BLOCK": ROW_TILE}, ROW_WARPS, vector_loads=False),
            # A lane per row, walking along rows: strided.
            CompileSpec(_cartesian_forward_kernel,
                        {"w_ptr": f"*{ttype}", "radius_ptr": f"*{ttype}", "theta_ptr": f"*{ttype}",
                         "rows": "i64", "n": "i64", "BLOCK_R": "constexpr"},
                        {"BLOCK_R": ROWS_PER_PROGRAM}, 1, vector_loads=False),
            CompileSpec(_cartesian_backward_kernel,
                        {"grad_radius_ptr": f"*{ttype}", "grad_theta_ptr": f"*{ttype}",
                         "w_ptr": f"*{ttype}", "tail_ptr": "*fp64", "out_ptr": f"*{ttype}",
                         "rows": "i64", "n": "i64", "HAS_GRAD_RADIUS": "constexpr",
                         "HAS_GRAD_THETA": "constexpr", "BLOCK_R": "constexpr"},
                        {"HAS_GRAD_RADIUS": True, "HAS_GRAD_THETA": True,
                         "BLOCK_R": ROWS_PER_PROGRAM}, 1, vector_loads=False),
            CompileSpec(_epilogue_forward_kernel,
                        {"z_ptr": f"*{ttype}", "radius_ptr": f"*{work}", "bias_ptr": f"*{work}",
                         "mask_ptr": "*i32", "rows": "i64", "cols": "i64", "words": "i64",
                         "BLOCK_R": "constexpr", "BLOCK_M": "constexpr", "ACC": "constexpr"},
                        {"BLOCK_R": EPILOGUE_ROWS, "BLOCK_M": EPILOGUE_COLS, "ACC": acc},
                        EPILOGUE_WARPS),
            CompileSpec(_epilogue_backward_kernel,
                        {"grad_ptr": f"*{ttype}", "mask_ptr": "*i32", "out_ptr": f"*{ttype}",
                         "partial_ptr": f"*{work}", "rows": "i64", "cols": "i64", "words": "i64",
                         "rows_per_block": "i64", "BLOCK_R": "constexpr", "BLOCK_M": "constexpr",
                         "ACC": "constexpr"},
                        {"BLOCK_R": EPILOGUE_ROWS, "BLOCK_M": EPILOGUE_COLS, "ACC": acc},
                        EPILOGUE_WARPS),
            CompileSpec(_radial_backward_kernel,
                        {"grad_u_ptr": f"*{ttype}", "u_ptr": f"*{ttype}", "radius_ptr": f"*{ttype}",
                         "partial_ptr": f"*{work}", "bias_ptr": f"*{ttype}",
                         "grad_radius_ptr": f"*{ttype}", "grad_bias_ptr": f"*{ttype}",
                         "weight_ptr": f"*{ttype}", "fan_in": "i64", "positions": "i64",
                         "blocks": "i64", "cols": "i64", "sum_stride_c": "i64",
                         "sum_stride_p": "i64", "bias_stride_c": "i64", "bias_stride_p": "i64",
                         "HAS_BIAS": "constexpr", "PER_POSITION": "constexpr",
                         "WITH_WEIGHT": "constexpr", "BLOCK": "constexpr", "ACC": "constexpr"},
                        {"HAS_BIAS": True, "PER_POSITION": False, "WITH_WEIGHT": True,
                         "BLOCK": RADIAL_BLOCK, "ACC": acc}),
        ]
    return specs


COMPILE_SPECS = _specs()
