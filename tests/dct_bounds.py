"""The error analysis of the DCT-basis activation (csrc/include/fastact/dct.h) as bounds, and
check_against_reference: a backend's y, grad_x and grad_coeffs against the float64 reference
within them. Shared by test_dct.py and test_properties.py."""

import math

import torch
from fastact_testing import interpreted

import fastact

# Error bounds, from the math of csrc/include/fastact/dct.h, per dtype as (u, v): u the unit
# roundoff of the compute type (float32 for the 16-bit types), v that of the output.
#  - t = x * scale + offset, with scale and offset rounded to the compute type, is one rounding
#    where it is a fused multiply-add (CUDA, the CPU's FMA instruction sets) and two elsewhere
#    (the portable CPU kernels, the Triton interpreter): |dt| <= u (|t| + 2 |x scale| +
#    |offset|) =: u T covers both (the product's own rounding is the second u |x scale|; see
#    test_dct.LARGE_X), a phase error pi k_j u T in term j. (The reference backend in float32
#    rounds (x - lo) / (hi - lo) and pi k t more often; its errors stay within this bound here.)
#  - the polynomial sin/cos of the reduced phase (exact reductions) is good to ~2u, and
#    Reinsch's recurrence adds <= ~2u per step (measured: <= 2j u), so term j is off by at
#    most (4 + 4j) u beyond the phase error;
#  - so |y - y_ref| <= u sum_j |F_j| (pi k_j T + 4 + 4j) + v |y_ref|, and the float64 reference
#    has the same kind of error in float64 (covered by the factor 2 below for float64).
# grad_x is the same series with coefficients G_j = -pi k_j F_j scale; grad_coeffs[c, j] sums
# grad * cos(pi k_j t) over the channel's n elements, adding at most n u sum|grad| of summation
# error in any order (the kernels' blocked sums do far better; this bound holds for all).
ROUNDING = {
    torch.float64: (2.0**-53, 2.0**-53),
    torch.float32: (2.0**-24, 2.0**-24),
    torch.bfloat16: (2.0**-24, 2.0**-8),
    torch.float16: (2.0**-24, 2.0**-11),
}
SAFETY = 2.0  # implementation and float64 reference both err (the reference only in float64)


def output_roundoff(dtype, backend, device):
    """v of ROUNDING, except that the Triton interpreter converts float32 to bfloat16 by
    truncation (a GPU rounds to nearest): up to one ulp, 2^-7 relative."""
    if dtype == torch.bfloat16 and interpreted(backend, device):
        return 2.0**-7
    return ROUNDING[dtype][1]


def frequencies_of(num_coeffs, frequencies, dtype=torch.float64):
    k = torch.arange(num_coeffs, dtype=dtype)
    return 2 * k + 1 if frequencies == "odd" else k


def broadcast_coeffs(coeffs2d, x, channel_dim):
    """[rows, K] -> a tensor broadcasting against x[..., None]."""
    shape = [1] * x.dim() + [coeffs2d.shape[1]]
    if coeffs2d.shape[0] != 1:
        shape[channel_dim] = coeffs2d.shape[0]
    return coeffs2d.reshape(shape)


def term_bounds(x, num_coeffs, domain, frequencies, u):
    """u (pi k_j T + 4 + 4j) per element and term, [*x.shape, K] (see the top of the file)."""
    lo, hi = domain
    scale, offset = 1 / (hi - lo), -lo / (hi - lo)
    x64 = x.detach().double().cpu()
    t = x64 * scale + offset
    spread = (t.abs() + 2 * (x64 * scale).abs() + abs(offset)).nan_to_num(0, 0, 0)
    k = frequencies_of(num_coeffs, frequencies)
    j = torch.arange(num_coeffs, dtype=torch.float64)
    return u * (math.pi * k * spread.unsqueeze(-1) + 4 + 4 * j)


def series_bound(x, coeffs2d, channel_dim, domain, frequencies, u):
    """u sum_j |F_j| (pi k_j T + 4 + 4j) per element."""
    magnitude = broadcast_coeffs(coeffs2d.detach().double().cpu().abs(), x, channel_dim)
    return (magnitude * term_bounds(x, coeffs2d.shape[1], domain, frequencies, u)).sum(-1)


def rounding_floor(dtype):
    """The largest rounding error of a result near 0: the smallest subnormal of the dtype."""
    info = torch.finfo(dtype)
    return info.tiny * info.eps


def run(backend, x, coeffs, **kwargs):
    with fastact.use_backend(backend):
        return fastact.dct_activation(x, coeffs, **kwargs)


def reference64(x, coeffs, grad, **kwargs):
    """Values and gradients of the float64 reference (CPU)."""
    x64 = x.detach().double().cpu().requires_grad_()
    c64 = coeffs.detach().double().cpu().requires_grad_()
    y = fastact.reference.dct_activation(x64, c64, **kwargs)
    y.backward(grad.detach().double().cpu())
    return y.detach(), x64.grad, c64.grad


def overflow_threshold(dtype):
    """The smallest magnitude that rounds to infinity in dtype: its largest finite value plus
    half an ulp of it (a tie rounds to the even infinity)."""
    info = torch.finfo(dtype)
    return info.max + math.ldexp(info.eps / 2, math.frexp(info.max)[1] - 1)


def assert_within(actual, expected, bound, what):
    """|actual - expected| <= bound (both NaN passes); where expected +- bound reaches the
    overflow threshold of actual's dtype, the infinity it rounds to passes too."""
    threshold = overflow_threshold(actual.dtype)
    actual = actual.detach().double().cpu()
    error = (actual - expected).abs()
    both_nan = actual.isnan() & expected.isnan()
    overflowed = (((actual == math.inf) & (expected + bound >= threshold))
                  | ((actual == -math.inf) & (expected - bound <= -threshold)))
    bad = ~both_nan & ~(error <= bound) & ~overflowed
    if bad.any():
        i = bad.nonzero()[0].tolist()
        ratio = (error / bound.clamp_min(1e-300))[~both_nan].max().item()
        at = tuple(i)
        raise AssertionError(f"{what}: {int(bad.sum())} of {bad.numel()} outside the bound "
                             f"(worst error/bound {ratio:.3g}); first at {i}: got "
                             f"{actual[at].item()!r}, expected {expected[at].item()!r}, "
                             f"bound {bound[at].item():.3g}")


def check_against_reference(backend, x, coeffs, grad=None, **kwargs):
    """y, grad_x and grad_coeffs of `backend` against the float64 reference, within the error
    bounds of the dtype (see ROUNDING)."""
    channel_dim = kwargs.get("channel_dim", 1) % max(x.dim(), 1)
    domain = kwargs.get("domain", (-1.0, 1.0))
    frequencies = kwargs.get("frequencies", "odd")
    x = x.detach().requires_grad_()
    coeffs = coeffs.detach().requires_grad_()
    y = run(backend, x, coeffs, **kwargs)
    assert y.dtype == x.dtype and y.shape == x.shape and y.device == x.device
    grad = torch.randn_like(y) if grad is None else grad
    y.backward(grad)
    y64, gx64, gc64 = reference64(x, coeffs, grad, **kwargs)
    u = ROUNDING[x.dtype][0]
    v = output_roundoff(x.dtype, backend, x.device.type)
    factor = SAFETY if x.dtype == torch.float64 else 1.0
    floor = rounding_floor(x.dtype)
    table = coeffs.detach().reshape(-1, coeffs.shape[-1])
    num_coeffs = table.shape[1]
    assert_within(y, y64, factor * series_bound(x, table, channel_dim, domain, frequencies, u)
                  + v * y64.abs() + floor, "y")
    # grad_x: the series of the slope coefficients G_j = -pi k_j F_j scale, times grad.
    k = frequencies_of(num_coeffs, frequencies).to(table.device)
    slopes = table.double() * k * (math.pi / (domain[1] - domain[0]))
    g64 = grad.detach().double().cpu()
    assert_within(x.grad, gx64, factor * g64.abs() * series_bound(
        x, slopes, channel_dim, domain, frequencies, u) + v * gx64.abs() + floor, "grad_x")
    # grad_coeffs: per channel, the sum over its n elements of grad * cos_j: each term's error
    # plus n u sum |grad| of summation error.
    terms = g64.abs().unsqueeze(-1) * term_bounds(x, num_coeffs, domain, frequencies, u)
    magnitudes = g64.abs().unsqueeze(-1).expand(terms.shape)
    if table.shape[0] != 1:
        dims = [d for d in range(x.dim()) if d != channel_dim]
        if dims:  # (sum over an empty list of dims would sum over all of them)
            terms, magnitudes = terms.sum(dims), magnitudes.sum(dims)
        count = x.numel() // max(table.shape[0], 1)
    else:
        terms = terms.reshape(-1, num_coeffs).sum(0, keepdim=True)
        magnitudes = magnitudes.reshape(-1, num_coeffs).sum(0, keepdim=True)
        count = x.numel()
    uc = ROUNDING[coeffs.dtype][1]
    expected = gc64.reshape(terms.shape)
    bound = factor * (terms + count * u * magnitudes) + uc * expected.abs() + rounding_floor(
        coeffs.dtype)
    assert coeffs.grad.dtype == coeffs.dtype and coeffs.grad.shape == coeffs.shape
    assert_within(coeffs.grad.reshape(bound.shape), expected, bound, "grad_coeffs")
    return y
