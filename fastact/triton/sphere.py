"""The hyperspherical maps of GmP in Triton, mirroring csrc/include/fastact/sphere.h: a program
per row scanning tiles with tl.cumprod / tl.associative_scan in float64, or per block of rows for
the sequential inverse map. Wrapped as custom ops fastact_triton::<op>; fake kernels and autograd
are registered in fastact/sphere.py, beside the C++ ops'."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from fastact.triton._common import launch, torch_compute_dtype

# Tiles of a row per step (float64 scans), and rows per program for the inverse map.
ROW_TILE = 1024
ROW_WARPS = 4
ROWS_PER_PROGRAM = 32


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
    # fastact/sphere.h: atan2(y, x), and 0 where both are 0.
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
    # As fastact/sphere.h: NaNs are passed over, and a row with an infinity is not scaled.
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
    # fastact/sphere.h: pass 1 stores the scaled tails t_k (float64 workspace), pass 2 runs
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
        work_dtype = torch_compute_dtype(theta.dtype)
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
