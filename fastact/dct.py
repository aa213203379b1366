"""DCT-basis activation (ENN): a learnable cosine series per channel,

    y = sum_j coeffs[c, j] * cos(pi * k_j * t),   t = (x - lo) / (hi - lo),

with k_j = 2j + 1 ("odd", the ENN basis) or k_j = j ("all").

The op is `fastact::dct_activation` (C++, csrc/) and `fastact_triton::dct_activation`
(fastact/triton/dct.py), each with its `dct_activation_backward`; this module checks and
normalises the arguments, registers the fake kernels and autograd, and picks the backend.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from fastact import _backend, _checks, _extension, reference
from fastact import triton as _triton

if _triton.AVAILABLE:
    from fastact.triton import dct as _triton_dct  # noqa: F401  (defines fastact_triton::dct_*)

FREQUENCIES = ("odd", "all")
BOUNDARIES = ("periodic", "clamp")


def check_choice(name: str, value, allowed: tuple[str, ...]) -> str:
    """value if it is one of the strings `allowed` (FREQUENCIES, BOUNDARIES), else a ValueError
    naming the argument `name`."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(
            f"fastact.dct_activation: {name} must be one of {', '.join(map(repr, allowed))}, "
            f"got {value!r}"
        )
    return value


def domain_of(domain) -> tuple[float, float]:
    """The domain argument as a pair of floats (lo, hi), finite with lo < hi and a finite
    1 / (hi - lo), else a ValueError."""
    try:
        lo, hi = domain
    except (TypeError, ValueError):
        raise ValueError(
            f"fastact.dct_activation: domain must be a pair (lo, hi) of numbers, got {domain!r}"
        ) from None
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in (lo, hi)):
        raise ValueError(
            f"fastact.dct_activation: domain must be a pair (lo, hi) of numbers, got {domain!r}"
        )
    lo, hi = float(lo), float(hi)
    width = hi - lo
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi and math.isfinite(width)
            and math.isfinite(1.0 / width)):
        raise ValueError(
            f"fastact.dct_activation: domain (lo, hi) must be finite with lo < hi, got {domain!r}"
        )
    return lo, hi


# The range of 1 / (hi - lo) per compute type (float32 for 16/32-bit x): see _domain_fits.
_SCALE_RANGE = {
    compute: (torch.finfo(compute).tiny, torch.finfo(compute).max)
    for compute in (torch.float32, torch.float64)
}


def _domain_fits(lo: float, hi: float, dtype: torch.dtype) -> None:
    """t = x * scale + offset is computed in float32 (float64 for float64 x): a scale
    1 / (hi - lo) beyond that type's normal range would overflow (NaN for every x) or lose its
    precision. (|offset| = |lo| / (hi - lo) <= 2^53 always: hi - lo >= an ulp of lo.)"""
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    tiny, largest = _SCALE_RANGE[compute]
    if not tiny <= 1.0 / (hi - lo) <= largest:
        raise ValueError(
            f"fastact.dct_activation: domain ({lo!r}, {hi!r}) does not fit {dtype} x, computed "
            f"in {compute}: hi - lo must be between {1 / largest:.4g} and {1 / tiny:.4g}"
        )


def _tensor_arguments(x, coeffs, channel_dim, lo, hi):
    """Checks x, coeffs and channel_dim (the domain already checked by domain_of) and returns
    (coeffs as [rows, K], channel_dim >= 0)."""
    op = "dct_activation"
    _checks.float_tensor(op, "x", x)
    _checks.float_tensor(op, "coeffs", coeffs)
    _checks.same_device(op, x=x, coeffs=coeffs)
    _domain_fits(lo, hi, x.dtype)
    if isinstance(channel_dim, bool) or not isinstance(channel_dim, int):
        raise TypeError(f"fastact.{op}: channel_dim must be an int, got {channel_dim!r}")
    if coeffs.dim() not in (1, 2) or coeffs.shape[-1] < 1:
        raise ValueError(
            f"fastact.{op}: coeffs must have shape [channels, num_coeffs] or [num_coeffs] with "
            f"num_coeffs >= 1, got {tuple(coeffs.shape)}"
        )
    table = coeffs.reshape(1, -1) if coeffs.dim() == 1 else coeffs
    if table.shape[0] == 1:
        return table, 0  # shared by every channel: channel_dim plays no part
    if x.dim() == 0:
        raise ValueError(f"fastact.{op}: coeffs has {table.shape[0]} rows, one per channel, but "
                         "x is a scalar (no channel dimension); use a single shared row")
    if not -x.dim() <= channel_dim < x.dim():
        raise ValueError(
            f"fastact.{op}: channel_dim {channel_dim} is out of range for x with {x.dim()} "
            f"dimensions (expected {-x.dim()} to {x.dim() - 1}, as coeffs has "
            f"{table.shape[0]} rows, one per channel)"
        )
    channel_dim %= x.dim()
    if table.shape[0] != x.shape[channel_dim]:
        raise ValueError(
            f"fastact.{op}: coeffs has {table.shape[0]} rows but x has {x.shape[channel_dim]} "
            f"channels along channel_dim={channel_dim} (x shape {tuple(x.shape)}); expected one "
            "row per channel or a single shared row"
        )
    return table, channel_dim


def dct_activation(x: Tensor, coeffs: Tensor, *, channel_dim: int = 1,
                   domain: tuple[float, float] = (-1.0, 1.0), frequencies: str = "odd",
                   boundary: str = "periodic") -> Tensor:
    """DCT-basis activation (ENN): y = sum_j coeffs[c, j] * cos(pi * k_j * t) elementwise.

    t = (x - lo) / (hi - lo) for domain=(lo, hi); k_j = 2j + 1 (frequencies="odd", the ENN
    basis) or j ("all", with the constant term); c is the element's index along channel_dim.
    coeffs is [C, K] with C = x.shape[channel_dim], or [K] / [1, K] shared by every channel
    (then x may have any shape and channel_dim is not used).
    boundary="periodic" evaluates the series everywhere (ENN); "clamp" clamps t to [0, 1], with
    zero gradient in x outside the domain. The ENN authors' code (N = 512) is reproduced by
    domain=(-1 + 1/512, 1 + 1/512).

    Gradients flow to x and coeffs; the coefficient gradient is deterministic (fixed-order
    sums), accumulated in float32 (float64 for float64 x). float16/bfloat16 compute in float32;
    the output has x's dtype, shape and layout.
    """
    check_choice("frequencies", frequencies, FREQUENCIES)
    check_choice("boundary", boundary, BOUNDARIES)
    lo, hi = domain_of(domain)
    return dct_series(x, coeffs, channel_dim, lo, hi, frequencies == "odd", boundary == "clamp")


def dct_series(x: Tensor, coeffs: Tensor, channel_dim: int, lo: float, hi: float, odd: bool,
               clamp: bool) -> Tensor:
    """dct_activation with the basis arguments checked and decoded (lo, hi from domain_of; the
    module checks them once, at construction)."""
    if _backend.auto_cpu(x):
        y = _extension._C.dct_call(x, coeffs, channel_dim, lo, hi, odd, clamp)
        if y is not None:  # None: a call the direct entry does not take
            return y
    table, channel_dim = _tensor_arguments(x, coeffs, channel_dim, lo, hi)
    backend = _backend.select("dct_activation", x.device)
    if backend == "reference":
        return reference.dct_activation(x, coeffs, channel_dim=channel_dim, domain=(lo, hi),
                                        frequencies="odd" if odd else "all",
                                        boundary="clamp" if clamp else "periodic")
    return _backend.ops(backend).dct_activation(x, table, channel_dim, lo, hi, odd, clamp)


def _register(namespace: str) -> None:
    """Fake kernels and autograd for `namespace`::dct_activation and its backward op, which
    computes only the gradients autograd asks for (output_mask). Training stays on one backend
    and compiles. Double backward (rare: gradient penalties) goes through the reference
    formula, which materialises the [..., K] cosines but is correct on every backend."""
    ops = getattr(torch.ops, namespace)

    def fake_forward(x, coeffs, channel_dim, lo, hi, odd, clamp):
        return torch.empty_like(x)

    def fake_backward(grad_out, x, coeffs, channel_dim, lo, hi, odd, clamp, output_mask):
        grad_x = torch.empty_like(x) if output_mask[0] else x.new_empty(0)
        grad_coeffs = coeffs.new_empty(coeffs.shape) if output_mask[1] else coeffs.new_empty(0)
        return grad_x, grad_coeffs

    def setup_context(ctx, inputs, output):
        x, coeffs, *arguments = inputs
        ctx.save_for_backward(x, coeffs)
        ctx.arguments = arguments

    def backward(ctx, grad):
        x, coeffs = ctx.saved_tensors
        need_x, need_coeffs = ctx.needs_input_grad[:2]
        grad_x, grad_coeffs = ops.dct_activation_backward(
            grad, x, coeffs, *ctx.arguments, [need_x, need_coeffs])
        return (grad_x if need_x else None, grad_coeffs if need_coeffs else None,
                None, None, None, None, None)

    def setup_backward_context(ctx, inputs, output):
        grad_out, x, coeffs, *arguments = inputs
        ctx.save_for_backward(grad_out, x, coeffs)
        ctx.arguments = arguments

    def double_backward(ctx, grad_grad_x, grad_grad_coeffs):
        grad_out, x, coeffs = ctx.saved_tensors
        channel_dim, lo, hi, odd, clamp, output_mask = ctx.arguments
        with torch.enable_grad():
            inputs = [t.detach().requires_grad_() for t in (grad_out, x, coeffs)]
            y = reference.dct_activation(
                inputs[1], inputs[2], channel_dim=channel_dim, domain=(lo, hi),
                frequencies="odd" if odd else "all", boundary="clamp" if clamp else "periodic")
            first = torch.autograd.grad(y, inputs[1:], inputs[0], create_graph=True)
            pairs = [(out, grad) for out, grad, needed in
                     zip(first, (grad_grad_x, grad_grad_coeffs), output_mask)
                     if needed and grad is not None]
            if not pairs:
                return None, None, None, None, None, None, None, None, None
            grads = torch.autograd.grad([out for out, _ in pairs], inputs,
                                        [grad for _, grad in pairs], allow_unused=True)
        return (*grads, None, None, None, None, None, None)

    torch.library.register_fake(f"{namespace}::dct_activation", fake_forward)
    torch.library.register_fake(f"{namespace}::dct_activation_backward", fake_backward)
    _checks.register_autograd(f"{namespace}::dct_activation", backward, setup_context)
    torch.library.register_autograd(f"{namespace}::dct_activation_backward", double_backward,
                                    setup_context=setup_backward_context)


for _namespace in _backend.loaded_namespaces():
    _register(_namespace)
