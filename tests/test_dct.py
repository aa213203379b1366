"""DCT-basis activation (ENN) on every backend against fastact.reference in float64: values,
gradients of x and coeffs, layouts, dtypes, bases, boundaries, domain edges and special
values, the ENN authors' formula, deterministic coefficient gradients, opcheck,
torch.compile, the module, and bad input."""

import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from dct_bounds import check_against_reference, frequencies_of, run, series_bound
from fastact_testing import BACKEND_DEVICES, FLOAT_DTYPES, KERNEL_BACKEND_DEVICES, interpreted

import fastact

# (shape, channel_dim, rows of coeffs ("C" = one per channel, 1 = shared), K, frequencies,
#  boundary, domain)
CASES = [
    ((64, 37), 1, "C", 6, "odd", "periodic", (-1.0, 1.0)),         # [N, C]: channels fastest
    ((3, 5, 7, 9), 1, "C", 7, "all", "clamp", (-0.5, 0.7)),        # NCHW: channel-constant runs
    ((2, 9, 20), -1, "C", 16, "odd", "clamp", (-2.0, 3.0)),         # [B, T, C], channel_dim=-1
    ((1000,), 0, 1, 1, "all", "periodic", (-1.0, 1.0)),             # shared [1, K]
    ((5, 6, 33), 1, 1, 2, "odd", "periodic", (-1 + 1 / 512, 1 + 1 / 512)),  # shared, ENN domain
    ((4, 33, 40), 1, "C", 33, "all", "periodic", (-1.0, 1.0)),      # K > 32
]


def case_params():
    for pair in KERNEL_BACKEND_DEVICES:
        for dtype in FLOAT_DTYPES:
            for i, case in enumerate(CASES):
                yield pytest.param(*pair.values, dtype, case, marks=pair.marks,
                                   id=f"{pair.id}-{str(dtype)[6:]}-case{i}")


@pytest.mark.parametrize("backend, device, dtype, case", list(case_params()))
def test_matches_reference(backend, device, dtype, case):
    shape, channel_dim, rows, num_coeffs, frequencies, boundary, domain = case
    x = torch.randn(shape, device=device).mul_(1.3).to(dtype)
    rows = x.shape[channel_dim] if rows == "C" else rows
    coeffs = torch.randn(rows, num_coeffs, device=device).to(dtype)
    check_against_reference(backend, x, coeffs, channel_dim=channel_dim, domain=domain,
                            frequencies=frequencies, boundary=boundary)


def test_reference_dtype_handling():
    """The oracle itself (the kernels are checked against its float64 run; their own ids do
    not compare it with itself): half types compute in float32 and come back in their dtype,
    float32 stays float32, and every dtype is within the kernels' bounds of float64."""
    torch.manual_seed(0)
    x64 = torch.randn(64, 12, dtype=torch.float64) * 1.3
    coeffs64 = torch.randn(12, 5, dtype=torch.float64)
    for dtype in FLOAT_DTYPES:
        x, coeffs = x64.to(dtype), coeffs64.to(dtype)
        y = fastact.reference.dct_activation(x, coeffs)
        assert y.dtype == dtype
        if dtype in (torch.float16, torch.bfloat16):  # the float32 computation, rounded once
            expected = fastact.reference.dct_activation(x.float(), coeffs.float()).to(dtype)
            assert torch.equal(y, expected)
        check_against_reference("reference", x, coeffs)


@pytest.mark.parametrize("frequencies", ["odd", "all"])
@pytest.mark.parametrize("backend, device", KERNEL_BACKEND_DEVICES)
def test_float32_error_is_near_the_unit_roundoff(backend, device, frequencies):
    """The bound above is a worst case over wide inputs; on the domain the error is a few ulps.
    Term j's error is at most pi k_j u / 2 (t in [0, 1]) plus the recurrence's ~2j u, so
    |y - y_ref| <= 4 u sum_j |F_j| max(k_j, 1) at K = 16, with x dense near the edges and the
    middle, where a three-term Chebyshev recurrence errs most (it reaches 5.9 here for "all";
    these kernels about 2.4, torch's float32 cos of pi k t 3.4)."""
    x = torch.cat([torch.linspace(-1, 1, 2001), torch.linspace(-1, -0.999, 101),
                   torch.linspace(0.999, 1, 101), torch.linspace(-0.001, 0.001, 101)])
    x = x.to(device)
    k = frequencies_of(16, frequencies, torch.float64).to(device)
    for _ in range(5):
        coeffs = torch.randn(1, 16, device=device)
        y = run(backend, x, coeffs, frequencies=frequencies)
        y64 = fastact.reference.dct_activation(x.double(), coeffs.double(), frequencies=frequencies)
        limit = 4 * 2.0**-24 * (coeffs.double().abs() * k.clamp_min(1)).sum()
        if backend == "reference":
            limit *= 1.5  # torch.cos of the float32 phase pi k t
        assert (y.double() - y64).abs().max() <= limit


def layouts(device):
    base = torch.randn(4, 6, 5, 8, device=device) * 1.5
    return {
        "contiguous": (base, 1),
        "channels_last": (base.to(memory_format=torch.channels_last), 1),
        "last_dim": (base, -1),
        "transposed": (base.transpose(1, 3), 1),
        "sliced": (base[:, ::2, 1:4, ::3], 1),
        "expanded": (torch.randn(1, 6, 1, 8, device=device).expand(4, 6, 5, 8), 1),
        "offset_by_one_element": (base.flatten()[1:].view(-1, 7, 137)[:, :, :135], 1),
    }


@pytest.mark.parametrize("layout", list(layouts("cpu")))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("backend, device", KERNEL_BACKEND_DEVICES)
def test_layouts(backend, device, dtype, layout):
    x, channel_dim = layouts(device)[layout]
    x = x.to(dtype)
    coeffs = torch.randn(x.shape[channel_dim], 6, device=device).to(dtype)
    before = x.clone()
    grad = torch.randn(x.shape, device=device).to(dtype)  # contiguous, unlike most x
    y = check_against_reference(backend, x, coeffs, grad, channel_dim=channel_dim)
    assert y.stride() == torch.empty_like(x).stride()  # as the fake kernel says
    assert torch.equal(x, before)


@pytest.mark.parametrize("backend, device", KERNEL_BACKEND_DEVICES)
def test_shared_coefficients_any_rank_and_channel_dim(backend, device):
    for shape, channel_dim in [((), 0), ((7,), -1), ((3, 4, 5), 2), ((3, 4, 5), -3)]:
        x = torch.randn(shape, device=device)
        for coeffs in (torch.randn(5, device=device), torch.randn(1, 5, device=device)):
            check_against_reference(backend, x, coeffs, channel_dim=channel_dim)


@pytest.mark.parametrize("backend, device", KERNEL_BACKEND_DEVICES)
def test_odd_sizes(backend, device):
    sizes = [1, 7, 1023] + ([] if interpreted(backend, device) else [2**20 + 3])
    for n in sizes:
        x = torch.randn(n, device=device) * 2
        check_against_reference(backend, x, torch.randn(1, 6, device=device))
        rows = torch.randn(3, n, device=device)  # channels fastest with n channels
        check_against_reference(backend, rows, torch.randn(n, 5, device=device))


def special_points(lo, hi):
    width = hi - lo
    return [lo, hi, lo + width / 2, lo + width / 4, lo + 3 * width / 4, lo - width, hi + width,
            lo - 0.3 * width, hi + 2.7 * width, lo + 1e-7 * width, hi - 1e-7 * width,
            lo - 1e6 * width, 1e30, -1e30, math.inf, -math.inf, math.nan]


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # numpy: inf - inf
@pytest.mark.parametrize("boundary", ["periodic", "clamp"])
@pytest.mark.parametrize("frequencies", ["odd", "all"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("backend, device", KERNEL_BACKEND_DEVICES)
def test_domain_edges_and_special_values(backend, device, dtype, frequencies, boundary):
    """x exactly at lo, hi, the middle and quarters, outside (periodic: the series repeats;
    clamp: held at the edge, no gradient), huge, +-inf and NaN: within the bounds of the
    reference, NaN where the reference gives NaN."""
    domain = (-0.75, 1.25)
    x = torch.tensor(special_points(*domain), device=device).to(dtype)
    coeffs = torch.randn(1, 5, device=device).to(dtype)
    kwargs = dict(domain=domain, frequencies=frequencies, boundary=boundary)
    if boundary == "clamp":
        check_against_reference(backend, x, coeffs, **kwargs)
        xg = x.detach().requires_grad_()
        run(backend, xg, coeffs, **kwargs).backward(torch.full_like(x, math.inf))
        t = (x.double().cpu() - domain[0]) / (domain[1] - domain[0])
        outside = ~((t >= 0) & (t <= 1))  # NaN included, as torch.clamp's gradient
        assert (xg.grad.cpu()[outside] == 0).all()
    else:
        finite = x.isfinite() & (x.abs() < 1e6)  # huge |x|: the phase itself is unknowable
        check_against_reference(backend, x[finite], coeffs, **kwargs)
        y = run(backend, x, coeffs, **kwargs)
        assert y[~x.isfinite()].isnan().all()  # cos of an infinite or NaN phase


# Domains whose offset -lo / (hi - lo) is +0.0, the smallest subnormal or a tiny one: as
# float64 bit patterns (the Triton kernels' arguments once) the integers 0, 1 and ~2^27,
# which Triton typed int32, by value, and the kernel could not read back (issue 20).
@pytest.mark.parametrize("domain", [(-0.0, 1.0), (-5e-324, 1.0), (-1e-315, 2.0), (0.0, 0.5)],
                         ids=str)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_domains_with_a_zero_or_subnormal_offset(backend, device, dtype, domain):
    x = torch.tensor([-1.0, 0.0, 0.25, 0.5, 1.0, 2.5], device=device).to(dtype)
    coeffs = torch.randn(1, 5, device=device).to(dtype)
    for boundary in ("periodic", "clamp"):
        check_against_reference(backend, x, coeffs, domain=domain, boundary=boundary)


# Domains near the ends of what the compute type allows: the scale 1 / (hi - lo) must be a
# normal number of it (fastact.dct._domain_fits; narrower ones made every result NaN, issue 20),
# and the backward's slopes pi k F_j scale finite (small coefficients).
EXTREME_DOMAINS = {torch.float32: [(0.0, 3e-38), (-4e37, 4e37)],
                   torch.float64: [(0.0, 1e-300), (-1e307, 3e307)]}


@pytest.mark.parametrize("dtype", list(EXTREME_DOMAINS), ids=str)
@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_very_narrow_and_very_wide_domains(backend, device, dtype):
    for lo, hi in EXTREME_DOMAINS[dtype]:
        x = torch.tensor([-0.5, 0.0, 0.1, 0.5, 0.9, 1.0, 2.0], dtype=torch.float64) * (hi - lo) + lo
        coeffs = torch.randn(1, 4, dtype=torch.float64) * 1e-20
        for boundary in ("periodic", "clamp"):
            check_against_reference(backend, x.to(device, dtype), coeffs.to(device, dtype),
                                    domain=(lo, hi), boundary=boundary)


# float16 values whose t = x * scale + offset errs most on this domain where the product and
# the sum round separately (1.2x the error of one rounding; found by trying every float16),
# and the largest finite float16 (issue 20's failure); a channel each, so that no sum hides an
# error. Also float32, whose portable CPU kernels round separately too.
LARGE_X_DOMAIN = (-1.0, 1.9147477267364488)
LARGE_X = [2994.0, 3022.0, 3108.0, 187.125, 770.5, 1930.0, 6272.0, 24160.0, 65504.0, -65504.0]


def check_large_x(backend, device, dtype):
    x = torch.tensor([LARGE_X], device=device).to(dtype)
    grad = torch.ones_like(x)
    coeffs = torch.randn(x.shape[1], 4, device=device).to(dtype)
    check_against_reference(backend, x, coeffs, grad, domain=LARGE_X_DOMAIN)
    shared = torch.randn(4, device=device).to(dtype)
    check_against_reference(backend, x[0, -2:-1], shared, grad[0, -2:-1], domain=LARGE_X_DOMAIN)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_phase_of_large_x(backend, device, dtype):
    check_large_x(backend, device, dtype)


@pytest.mark.parametrize("isa", ["portable", "avx2"])
def test_phase_of_large_x_other_instruction_sets(isa):
    """As test_phase_of_large_x, with the CPU kernels of the other instruction sets (the
    portable ones round t = x * scale + offset twice)."""
    result = run_python(
        f"""
        import sys, torch, fastact
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_dct import check_large_x
        assert fastact._extension.cpu_isa() == {isa!r}
        torch.manual_seed(0)
        for dtype in (torch.float16, torch.float32):
            check_large_x("cpu", "cpu", dtype)
        """, FASTACT_CPU_ISA=isa)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_gradcheck_float64(backend, device):
    torch.manual_seed(1)
    for kwargs, rows in [(dict(), 3), (dict(frequencies="all", boundary="clamp",
                                            domain=(-0.6, 0.8)), 3), (dict(channel_dim=-1), 5),
                         (dict(), 1)]:
        x = (torch.randn(4, 3, 5, dtype=torch.float64, device=device) * 1.2).requires_grad_()
        coeffs = torch.randn(rows, 4, dtype=torch.float64, device=device, requires_grad=True)
        with fastact.use_backend(backend):
            assert torch.autograd.gradcheck(
                lambda a, b: fastact.dct_activation(a, b, **kwargs), (x, coeffs))


@pytest.mark.parametrize("backend, device", KERNEL_BACKEND_DEVICES)
def test_gradgradcheck_through_the_reference(backend, device):
    x = torch.randn(4, 3, dtype=torch.float64, device=device, requires_grad=True)
    coeffs = torch.randn(3, 4, dtype=torch.float64, device=device, requires_grad=True)
    with fastact.use_backend(backend):
        assert torch.autograd.gradgradcheck(
            lambda a, b: fastact.dct_activation(a, b, boundary="clamp"), (x, coeffs))


@pytest.mark.parametrize("backend, device", KERNEL_BACKEND_DEVICES)
def test_only_the_requested_gradients(backend, device):
    x = torch.randn(6, 4, device=device)
    coeffs = torch.randn(4, 3, device=device)
    xg, cg = x.clone().requires_grad_(), coeffs.clone().requires_grad_()
    run(backend, xg, cg).sum().backward()
    x_only = x.clone().requires_grad_()
    run(backend, x_only, coeffs).sum().backward()
    coeffs_only = coeffs.clone().requires_grad_()
    run(backend, x, coeffs_only).sum().backward()
    assert torch.equal(x_only.grad, xg.grad) and torch.equal(coeffs_only.grad, cg.grad)


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_empty(backend, device):
    for shape in [(0,), (3, 0, 5), (0, 4)]:
        x = torch.empty(shape, device=device, requires_grad=True)
        rows = shape[1] if len(shape) > 1 and shape[1] else 1
        coeffs = torch.randn(rows, 4, device=device, requires_grad=True)
        y = run(backend, x, coeffs)
        y.sum().backward()
        assert y.shape == shape and x.grad.shape == shape
        assert torch.equal(coeffs.grad, torch.zeros_like(coeffs))


def enn_sigma(z, coeffs, num_samples=512):
    """The ENN authors' activation, as their code writes it (docs/papers.md):
    sigma(z) = sum_q F_q cos(pi (2q - 1) (2 zbar - 1) / (2N)),  zbar = (N / 2) (z + 1)."""
    n = num_samples
    zbar = (n / 2) * (z + 1)
    q = torch.arange(1, coeffs.shape[-1] + 1, dtype=z.dtype, device=z.device)
    return (coeffs * torch.cos(math.pi * (2 * q - 1) * (2 * zbar.unsqueeze(-1) - 1) / (2 * n))).sum(-1)


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_reproduces_the_enn_authors_formula(backend, device):
    """domain = (-1 + 1/N, 1 + 1/N) gives the authors' phase (2 zbar - 1) / (2N) exactly: in
    float64 to ~1e-15, in float32 within float32's rounding of the phase and terms."""
    n = 512
    z = torch.cat([torch.linspace(-1.5, 1.5, 3001), torch.tensor([-1.0, 1.0, 0.0])]).to(device)
    init = fastact.nn.fit_coeffs(lambda v: v, 6, domain=(-1 + 1 / n, 1 + 1 / n)).to(device)
    for coeffs in (init, torch.randn(6, dtype=torch.float64, device=device)):
        expected = enn_sigma(z.double(), coeffs.double())
        kwargs = dict(domain=(-1 + 1 / n, 1 + 1 / n))
        y64 = run(backend, z.double(), coeffs.double(), **kwargs)
        assert (y64 - expected).abs().max() <= 1e-14 * coeffs.abs().sum()
        y32 = run(backend, z.float(), coeffs.float(), **kwargs)
        bound = series_bound(z, coeffs.reshape(1, -1), 0, kwargs["domain"], "odd", 2.0**-24)
        bound += 2.0**-24 * expected.abs().cpu()  # the float32 result's own rounding
        assert ((y32.double() - expected).abs().cpu() <= bound).all()
        # The authors' own float32 evaluation is no closer to their float64 one than ours.
        theirs = enn_sigma(z.float(), coeffs.float()).double()
        assert (y32.double() - expected).abs().max() <= (theirs - expected).abs().max()


def test_coefficient_gradients_are_bitwise_deterministic():
    """Across runs and across 1 and 2 threads, for every work split: rows of channels (many
    row pieces), channel-constant runs (several pieces per channel) and shared coefficients."""
    cases = [
        (torch.randn(4096, 64), 1, 64),
        (torch.randn(8, 4, 64, 80), 1, 4),
        (torch.randn(300_000), 0, 1),
        (torch.randn(32, 50, 24).to(memory_format=torch.contiguous_format), -1, 24),
    ]
    threads = torch.get_num_threads()
    try:
        for x, channel_dim, rows in cases:
            coeffs = torch.randn(rows, 6)
            grad = torch.randn_like(x)
            results = []
            for n in (1, 2, 2, 1):
                torch.set_num_threads(n)
                c = coeffs.clone().requires_grad_()
                xg = x.clone().requires_grad_()
                fastact.dct_activation(xg, c, channel_dim=channel_dim).backward(grad)
                results.append((c.grad, xg.grad))
            for c_grad, x_grad in results[1:]:
                assert torch.equal(c_grad, results[0][0])
                assert torch.equal(x_grad, results[0][1])
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("backend, device", KERNEL_BACKEND_DEVICES)
def test_coefficient_gradients_over_many_tiles(backend, device):
    """More tiles per channel than the CUDA kernels' fixed-order sum takes in one chunk (64):
    rows of 40 channels (64-row tiles; 40 is not a multiple of a warp's 32 channels) and
    channel-constant runs (2048-element tiles)."""
    for shape in [(5000, 40), (2, 3, 70_001)]:
        x = torch.randn(shape, device=device)
        check_against_reference(backend, x, torch.randn(shape[1], 3, device=device))


@pytest.mark.parametrize("backend, device", KERNEL_BACKEND_DEVICES)
def test_coefficient_gradients_repeat_exactly(backend, device):
    x = torch.randn(200, 48, device=device)
    grad = torch.randn_like(x)
    coeffs = torch.randn(48, 5, device=device)
    ops = fastact._backend.ops(backend)
    first = ops.dct_activation_backward(grad, x, coeffs, 1, -1.0, 1.0, True, False, [True, True])
    again = ops.dct_activation_backward(grad, x, coeffs, 1, -1.0, 1.0, True, False, [True, True])
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


def opcheck_samples(device):
    x = torch.randn(3, 4, 5, device=device)
    c = torch.randn(4, 6, device=device)
    arguments = (1, -1.0, 1.0, True, False)
    return [
        (x, c, arguments),
        (x.to(torch.bfloat16), c, (1, -0.5, 2.0, False, True)),
        (x.double(), c.double(), arguments),
        (x.to(torch.float16), c.to(torch.float16), arguments),
        (x.transpose(0, 2), torch.randn(5, 6, device=device), (0, -1.0, 1.0, True, True)),
        (x.unsqueeze(0).to(memory_format=torch.channels_last), torch.randn(3, 2, device=device),
         (1, -1.0, 1.0, True, False)),
        (x, torch.randn(1, 3, device=device), (2, -1.0, 1.0, False, False)),
        (torch.empty(0, 4, device=device), c, arguments),
    ]


@pytest.mark.parametrize("backend, device", KERNEL_BACKEND_DEVICES)
def test_opcheck(backend, device):
    ops = fastact._backend.ops(backend)
    for x, c, arguments in opcheck_samples(device):
        torch.library.opcheck(ops.dct_activation.default,
                              (x.requires_grad_(), c.requires_grad_(), *arguments))
        for mask in ([True, True], [True, False], [False, True]):
            torch.library.opcheck(ops.dct_activation_backward.default,
                                  (torch.randn_like(x), x.detach(), c.detach(), *arguments, mask))


@pytest.mark.parametrize("backend, device", KERNEL_BACKEND_DEVICES)
def test_torch_compile_fullgraph(backend, device):
    torch._dynamo.reset()
    layer = fastact.nn.DCTActivation(8, 6, domain=(-2.0, 2.0)).to(device)

    def model(x):
        return layer(x * 0.5).square().sum()

    x = torch.randn(16, 8, device=device, requires_grad=True)
    with fastact.use_backend(backend):
        compiled = torch.compile(model, fullgraph=True)
        compiled(x).backward()
        eager_x = x.detach().clone().requires_grad_()
        layer_grad = layer.coeffs.grad.clone()
        layer.coeffs.grad = None
        model(eager_x).backward()
    torch.testing.assert_close(x.grad, eager_x.grad)
    torch.testing.assert_close(layer_grad, layer.coeffs.grad)


def test_module():
    layer = fastact.nn.DCTActivation(4, 6)
    assert layer.coeffs.shape == (4, 6) and list(dict(layer.named_parameters())) == ["coeffs"]
    assert repr(layer) == ("DCTActivation(4, num_coeffs=6, channel_dim=1, domain=(-1.0, 1.0), "
                           "frequencies='odd', boundary='periodic')")
    # ENN's initialisation: f(x) ~ x, the odd basis's projection -8 / (pi k)^2 of the ramp.
    k = torch.arange(6, dtype=torch.float64) * 2 + 1
    torch.testing.assert_close(layer.coeffs[0].double(), -8 / (math.pi * k) ** 2,
                               atol=1e-6, rtol=0)
    x = torch.linspace(-1, 1, 1001).expand(3, 4, 1001)
    # The 6-term series' truncation error at the ends: sum over odd k >= 13 of 8/(pi k)^2 = 0.034.
    assert (layer(x) - x).abs().max() < 0.04
    relu = fastact.nn.DCTActivation(1, 16, frequencies="all", init="relu")
    assert (relu(x) - torch.relu(x)).abs().max() < 0.03  # truncation: 0.025, at the kink
    zeros = fastact.nn.DCTActivation(2, 3, init="zeros", channel_dim=-1, dtype=torch.float64)
    assert zeros.coeffs.dtype == torch.float64 and not zeros.coeffs.any()
    given = torch.arange(12.0).view(4, 3)
    assert torch.equal(fastact.nn.DCTActivation(4, 3, init=given).coeffs.detach(), given)
    assert torch.equal(fastact.nn.DCTActivation(4, 3, init=given[0]).coeffs.detach(),
                       given[0].expand(4, 3))
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), fastact.nn.DCTActivation(4),
                                torch.nn.Linear(4, 2))
    model(torch.randn(7, 5)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    sequence = fastact.nn.DCTActivation(6, channel_dim=-1, boundary="clamp")
    assert sequence(torch.randn(2, 3, 6)).shape == (2, 3, 6)


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        (dict(num_channels=0), ValueError, ["num_channels", "positive"]),
        (dict(num_coeffs=2.5), ValueError, ["num_coeffs"]),
        (dict(init="ones"), ValueError, ["init", "'identity'"]),
        (dict(init=torch.zeros(3, 3)), ValueError, ["init", "[4, 6]"]),
        (dict(frequencies="even"), ValueError, ["frequencies", "'odd'"]),
        (dict(domain=(1.0, 1.0)), ValueError, ["domain", "lo < hi"]),
    ],
)
def test_module_bad_arguments(kwargs, error, words):
    arguments = dict(num_channels=4, num_coeffs=6) | kwargs
    with pytest.raises(error) as info:
        fastact.nn.DCTActivation(**arguments)
    for word in words:
        assert word in str(info.value)


def bad_calls():
    x = torch.randn(2, 3, 4)
    c = torch.randn(3, 6)
    return [
        ((x, torch.randn(4, 6)), {}, ValueError, ["coeffs has 4 rows", "3 channels", "channel_dim=1"]),
        ((x, c), dict(domain=(1.0, 1.0)), ValueError, ["domain", "lo < hi"]),
        ((x, c), dict(domain=(2.0, -1.0)), ValueError, ["domain"]),
        ((x, c), dict(domain=(0.0, math.inf)), ValueError, ["domain", "finite"]),
        ((x, c), dict(domain=(0.0, math.nan)), ValueError, ["domain"]),
        ((x, c), dict(domain=1.0), ValueError, ["domain", "pair"]),
        ((x, c), dict(domain=(0.0, 1e-39)), ValueError, ["domain", "torch.float32", "hi - lo"]),
        ((x.half(), c), dict(domain=(-1e38, 1e38)), ValueError, ["domain", "torch.float16"]),
        ((x.double(), c), dict(domain=(-3e307, 3e307)), ValueError, ["domain", "float64"]),
        ((x, c), dict(frequencies="even"), ValueError, ["frequencies", "'odd'", "'all'"]),
        ((x, c), dict(boundary="wrap"), ValueError, ["boundary", "'periodic'", "'clamp'"]),
        ((torch.arange(6).view(2, 3), c), {}, TypeError, ["x", "torch.int64"]),
        ((x, c.int()), {}, TypeError, ["coeffs", "torch.int32"]),
        ((x, c.to("meta")), {}, RuntimeError, ["one device", "coeffs on meta"]),
        ((x, c), dict(channel_dim=3), ValueError, ["channel_dim 3", "3 dimensions"]),
        ((x, c), dict(channel_dim=-4), ValueError, ["channel_dim -4"]),
        ((x, c), dict(channel_dim=1.0), TypeError, ["channel_dim", "int"]),
        ((x, torch.randn(3, 6, 1)), {}, ValueError, ["coeffs must have shape"]),
        ((x, torch.randn(3, 0)), {}, ValueError, ["num_coeffs >= 1"]),
        (([1.0], c), {}, TypeError, ["x", "torch.Tensor"]),
    ]


@pytest.mark.parametrize("args, kwargs, error, words", bad_calls())
def test_bad_input(args, kwargs, error, words):
    before = [a.clone() for a in args if isinstance(a, torch.Tensor) and a.device.type == "cpu"]
    with pytest.raises(error) as info:
        fastact.dct_activation(*args, **kwargs)
    for word in words:
        assert word in str(info.value)
    assert "fastact.dct_activation" in str(info.value)
    after = [a for a in args if isinstance(a, torch.Tensor) and a.device.type == "cpu"]
    assert all(torch.equal(a, b) for a, b in zip(before, after))


def test_native_op_checks_its_arguments():
    x, c = torch.randn(2, 3), torch.randn(3, 4)
    op, backward = torch.ops.fastact.dct_activation, torch.ops.fastact.dct_activation_backward
    with pytest.raises(TypeError, match="x must be a float16, bfloat16, float32 or float64"):
        op(torch.arange(3), c, 0, -1.0, 1.0, True, False)
    with pytest.raises(RuntimeError, match="coeffs has 4 rows but x has 3 channels"):
        op(x, torch.randn(4, 4), 1, -1.0, 1.0, True, False)
    with pytest.raises(RuntimeError, match="channel_dim 2 is out of range"):
        op(x, c, 2, -1.0, 1.0, True, False)
    with pytest.raises(RuntimeError, match="domain .* finite with lo < hi"):
        op(x, c, 1, 1.0, 1.0, True, False)
    with pytest.raises(RuntimeError, match=r"domain \(0, 1e-39\) does not fit Float x"):
        op(x, c, 1, 0.0, 1e-39, True, False)
    with pytest.raises(RuntimeError, match=r"coeffs must have shape \[channels, num_coeffs\]"):
        op(x, torch.randn(4), 1, -1.0, 1.0, True, False)
    with pytest.raises(RuntimeError, match="grad_out .* must match x"):
        backward(torch.randn(3, 3), x, c, 1, -1.0, 1.0, True, False, [True, True])


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=300)


ISA_OUTPUTS = """
import sys, torch, fastact
torch.manual_seed(0)
outputs = {"isa": fastact._extension.cpu_isa()}
for shape, rows, dim in [((64, 100), 100, 1), ((3, 4, 50), 4, 1), ((10007,), 1, 0)]:
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        for frequencies, boundary in (("odd", "periodic"), ("all", "clamp")):
            x = (torch.randn(shape) * 1.4).to(dtype).requires_grad_()
            c = torch.randn(rows, 7).to(dtype).requires_grad_()
            y = fastact.dct_activation(x, c, channel_dim=dim, frequencies=frequencies,
                                       boundary=boundary)
            y.backward(torch.ones_like(y))
            outputs[shape, dtype, frequencies] = (y.detach(), x.grad, c.grad, c.detach())
torch.save(outputs, sys.argv[1])
"""


def isa_outputs(isa: str, path) -> dict:
    done = subprocess.run([sys.executable, "-c", ISA_OUTPUTS, str(path)], capture_output=True,
                          text=True, env={**os.environ, "FASTACT_CPU_ISA": isa}, timeout=300)
    assert done.returncode == 0, done.stderr
    return torch.load(path)


@pytest.mark.parametrize("isa", ["portable", "avx2"])
def test_other_instruction_sets(isa, tmp_path):
    """The CPU kernels built for the other instruction sets, forced by FASTACT_CPU_ISA, agree
    with the default ones element by element. They differ only in fused multiply-adds: one
    rounding of the compute type per recurrence step, so |difference| <= 2 K eps sum_j |c_j|
    for y and the coefficient gradient's terms, times the phase derivative pi k_max / (hi - lo)
    for x's gradient (K = 7 terms, k_max <= 13, domain width 2), plus the output rounding in
    half types (compared at their own eps)."""
    ours = isa_outputs(isa, tmp_path / f"{isa}.pt")
    if ours["isa"] != isa:
        pytest.skip(f"this CPU cannot run the {isa} kernels (it ran {ours['isa']})")
    default = isa_outputs("", tmp_path / "default.pt")
    for key, (y, dx, dc, c) in ((k, v) for k, v in ours.items() if k != "isa"):
        _, dtype, _ = key
        eps = torch.finfo(dtype if dtype == torch.float64 else torch.float32).eps
        half_eps = torch.finfo(dtype).eps if dtype in (torch.float16, torch.bfloat16) else 0
        scale = c.double().abs().sum(-1).max().item()
        bound = 2 * 7 * eps * scale
        want_y, want_dx, want_dc, _ = default[key]
        for name, got, want, tol in (("y", y, want_y, bound),
                                      ("x.grad", dx, want_dx, bound * math.pi * 13 / 2),
                                      ("coeffs.grad", dc, want_dc, None)):
            got, want = got.double(), want.double()
            if tol is None:  # a sum over the elements of a channel: the bound per element, summed
                tol = 2 * 7 * eps * y.numel() / c.shape[0]
            atol = tol + half_eps * want.abs().max().item()
            torch.testing.assert_close(got, want, rtol=0, atol=atol,
                                       msg=lambda m: f"{isa} {key} {name}: {m}")


@pytest.mark.slow
def test_more_than_2_to_the_31_elements():
    """64-bit indexing on CPU, and the accuracy of the coefficient gradient's blocked sums over
    2^31 + 5 elements (a sequential float32 sum would drift by ~1e-1 relative)."""
    n = 2**31 + 5
    x = torch.full((n,), 0.25, dtype=torch.bfloat16)
    tail = torch.tensor([0.5, -0.75, 1.0, -1.0, 3.0], dtype=torch.bfloat16)
    x[-5:] = tail
    coeffs = torch.tensor([0.5, -0.25, 0.125])
    y = fastact.dct_activation(x, coeffs)
    expected_tail = fastact.reference.dct_activation(tail.double(), coeffs.double())
    torch.testing.assert_close(y[-5:].double(), expected_tail.to(torch.bfloat16).double())
    assert y[0].item() == y[2**31 - 1].item()
    del y
    grad = torch.ones_like(x)
    grad_x, grad_coeffs = torch.ops.fastact.dct_activation_backward(
        grad, x, coeffs.view(1, 3), 0, -1.0, 1.0, True, False, [True, True])
    t = (torch.tensor([0.25] + tail.tolist(), dtype=torch.float64) + 1) / 2
    k = torch.tensor([1.0, 3.0, 5.0], dtype=torch.float64)
    cosines = torch.cos(math.pi * k * t[:, None])
    expected = (n - 5) * cosines[0] + cosines[1:].sum(0)
    # Blocked sums: each term's error plus ~400 u of summation depth; a sequential float32
    # sum of 2^31 terms stalls once the sum reaches 2^24 times a term (100 % error).
    assert (grad_coeffs[0].double() - expected).abs().max() <= 1e-4 * (n - 5)
    slopes = -math.pi * k * coeffs.double() / 2 * torch.sin(math.pi * k * t[:, None])
    torch.testing.assert_close(grad_x[-5:].double(),
                               slopes[1:].sum(1).to(torch.bfloat16).double())
