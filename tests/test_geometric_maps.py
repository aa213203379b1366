"""The hyperspherical maps of GmP on every kernel backend against fastact.reference (float64):
spherical_to_cartesian and its exact inverse cartesian_to_spherical, values and gradients,
angles at 0 and pi, the unit norm of long rows, the zero conventions, extreme scales,
special values, opcheck and bad input."""

import math
import os
import subprocess
import sys

import pytest
import torch
from fastact_testing import (
    BACKEND_DEVICES,
    FLOAT_DTYPES,
    INVERSE_GRAD_TOLERANCES,
    INVERSE_TOLERANCES,
    KERNEL_BACKEND_DEVICES,
    MAP_GRAD_TOLERANCES,
    MAP_TOLERANCES,
    assert_close_to,
    float64_reference,
    interpreted,
)

import fastact


def run(backend, fn, *args):
    with fastact.use_backend(backend):
        return fn(*args)


def cases(shapes, dtypes=FLOAT_DTYPES, pairs=KERNEL_BACKEND_DEVICES):
    for pair in pairs:
        for dtype in dtypes:
            for shape in shapes:
                yield pytest.param(*pair.values, dtype, shape, marks=pair.marks,
                                   id=f"{pair.id}-{str(dtype)[6:]}-{shape}")


# Rows of 8 or more go through the CPU kernels' groups of 8 rows (lanes are rows), the others
# row by row; angles past a multiple of 8 (4 for float64) through the scalar tail.
ANGLE_SHAPES = [(0,), (1,), (2,), (7,), (3, 8), (2, 3, 17), (5, 64), (0, 5), (4, 0), (16, 8),
                (19, 13), (2, 4, 23)]


@pytest.mark.parametrize("backend, device, dtype, shape", list(cases(ANGLE_SHAPES)))
def test_spherical_to_cartesian_matches_reference(backend, device, dtype, shape):
    theta = (torch.rand(shape, device=device, dtype=torch.float64) * 4 - 0.5).to(dtype)
    theta.requires_grad_()
    u = run(backend, fastact.spherical_to_cartesian, theta)
    expected, (theta64,) = float64_reference(fastact.reference.spherical_to_cartesian, theta)
    assert u.shape == (*shape[:-1], shape[-1] + 1) and u.dtype == dtype and u.is_contiguous()
    assert_close_to(u, expected, MAP_TOLERANCES, "spherical_to_cartesian")
    grad = torch.randn_like(u)
    u.backward(grad)
    expected.backward(grad.double())
    assert_close_to(theta.grad, theta64.grad, MAP_GRAD_TOLERANCES, "d spherical_to_cartesian")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_rows_into_the_subnormal_range(dtype):
    """The CPU kernels scan 16-bit rows in float and switch to double where a prefix product
    leaves float's normal range: rows of 1023 angles uniform on [0, pi] (products down past
    1e-300) and near pi/2 (no switch) match the reference, and outputs in bfloat16's subnormal
    range are rounded from the product, not flushed to zero."""
    generator = torch.Generator().manual_seed(7)
    samples = [torch.rand(16, 1023, generator=generator, dtype=torch.float64) * math.pi,
               math.pi / 2 + (torch.rand(16, 1023, generator=generator, dtype=torch.float64)
                              - 0.5) * 0.3]
    for angles in samples:
        theta = angles.to(dtype).requires_grad_()
        u = fastact.spherical_to_cartesian(theta)
        expected, (theta64,) = float64_reference(fastact.reference.spherical_to_cartesian, theta)
        assert_close_to(u, expected, MAP_TOLERANCES, "spherical_to_cartesian")
        tiny = expected.detach().abs() < torch.finfo(dtype).tiny
        torch.testing.assert_close(u.double()[tiny], expected.detach()[tiny], rtol=2e-2,
                                   atol=torch.finfo(dtype).smallest_normal * 2.0**-7)
        grad = torch.randn(u.shape, generator=generator, dtype=torch.float64)
        u.backward(grad.to(dtype))
        expected.backward(grad.to(dtype).double())
        assert_close_to(theta.grad, theta64.grad, MAP_GRAD_TOLERANCES, "d spherical_to_cartesian")


# The CUDA kernels scan a row of up to 512 coordinates with a warp in tiles of 128, a longer one
# with the block in tiles of 1024, carrying the product of sines from tile to tile: sines near
# 1 keep every tile's carry visible in u and in the gradient.
@pytest.mark.parametrize("backend, device, dtype, shape",
                         list(cases([(3, 300), (2, 700), (2, 2100)],
                                    dtypes=(torch.float64, torch.float32))))
def test_rows_across_tiles_match_reference(backend, device, dtype, shape):
    theta = (math.pi / 2 + (torch.rand(shape, device=device, dtype=torch.float64) - 0.5) * 0.2)
    theta = theta.to(dtype).requires_grad_()
    u = run(backend, fastact.spherical_to_cartesian, theta)
    expected, (theta64,) = float64_reference(fastact.reference.spherical_to_cartesian, theta)
    assert_close_to(u, expected, MAP_TOLERANCES, "spherical_to_cartesian")
    grad = torch.randn_like(u)
    u.backward(grad)
    expected.backward(grad.double())
    assert_close_to(theta.grad, theta64.grad, MAP_GRAD_TOLERANCES, "d spherical_to_cartesian")


@pytest.mark.parametrize("backend, device", KERNEL_BACKEND_DEVICES)
def test_unit_norm_of_long_rows(backend, device):
    """float32 rows of 4607 angles: | |u| - 1 | <= 1e-6, for angles from default initialisation
    (every sine close to 1, the product over all of them matters), uniform on [0, pi], and
    clustered around pi/2. (The reference, a float32 cumprod, drifts to ~4e-6 on the first.)"""
    rows = 4 if interpreted(backend, device) else 64
    weight = torch.empty(rows, 4608, device=device).uniform_(-1, 1)
    samples = {
        "initialisation": fastact.reference.cartesian_to_spherical(weight.double())[1].float(),
        "uniform": torch.rand(rows, 4607, device=device) * math.pi,
        "near pi/2": math.pi / 2 + (torch.rand(rows, 4607, device=device) - 0.5) * 0.02,
    }
    for name, theta in samples.items():
        u = run(backend, fastact.spherical_to_cartesian, theta)
        error = (u.double().norm(dim=-1) - 1).abs().max().item()
        assert error <= 1e-6, f"{name}: | |u| - 1 | = {error:.3g}"


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_gradcheck_with_angles_at_zero_and_pi(backend, device):
    """sin = 0 exactly at angle 0 (and to 1e-16 at pi): no division anywhere, so the gradient
    is still exact, and every angle after a zero sine gets exactly zero gradient."""
    theta = torch.rand(3, 9, dtype=torch.float64, device=device) * 3
    theta[0, 2] = 0.0
    theta[1, 0] = math.pi
    theta[1, 5] = 0.0
    theta[2, -1] = 0.0
    theta.requires_grad_()
    fast = interpreted(backend, device)
    with fastact.use_backend(backend):
        assert torch.autograd.gradcheck(fastact.spherical_to_cartesian, (theta,), fast_mode=fast)
        u = fastact.spherical_to_cartesian(theta)
    (grad,) = torch.autograd.grad(u, theta, torch.randn_like(u))
    assert torch.all(grad[0, 3:] == 0) and torch.all(grad[1, 6:] == 0)
    assert torch.all(grad[0, :3] != 0)


@pytest.mark.filterwarnings("ignore:invalid value encountered")  # the interpreter's numpy
@pytest.mark.parametrize("backend, device", KERNEL_BACKEND_DEVICES)
def test_large_and_special_angles(backend, device):
    """Angles far outside [0, pi] (the kernels' polynomial hands them to libm / the GPU's
    reduction) and NaN/inf: as the reference; NaN spreads to the later coordinates."""
    theta = torch.tensor([[1e6, -3e5, 123456.7, 2.5], [4097.0, -8200.0, 1e30, 0.5],
                          [0.3, math.nan, 0.2, 0.1], [0.3, 0.2, math.inf, 0.1]],
                         dtype=torch.float64, device=device)
    theta = torch.cat([theta, torch.rand(8, 4, dtype=torch.float64, device=device)])  # 12 rows
    for dtype in (torch.float64, torch.float32):
        u = run(backend, fastact.spherical_to_cartesian, theta.to(dtype))
        expected = fastact.reference.spherical_to_cartesian(theta.to(dtype).double())
        assert_close_to(u, expected, MAP_TOLERANCES, "large angles")
        assert torch.isnan(u[2, 1:]).all() and not torch.isnan(u[2, :1]).any()


# ---- cartesian_to_spherical -------------------------------------------------------------

def awkward_rows(n, device):
    """Rows where the angles are not unique or the signs matter: zero, trailing zeros, one
    nonzero coordinate, a negative last coordinate, both last two zero."""
    rows = torch.randn(8, n, dtype=torch.float64, device=device)
    rows[0] = 0
    rows[1, n // 2:] = 0
    rows[2] = 0
    rows[2, 0] = -3.0
    rows[3, -1] = -abs(rows[3, -1])
    rows[4, -2:] = 0
    rows[5, :-1] = 0
    rows[6, 0] = 0
    return rows


@pytest.mark.parametrize("backend, device, dtype, n", list(cases([2, 3, 5, 33])))
def test_cartesian_to_spherical_is_the_exact_inverse(backend, device, dtype, n):
    w = torch.cat([awkward_rows(n, device), torch.randn(5, n, dtype=torch.float64, device=device)])
    w = w.to(dtype).requires_grad_()
    radius, theta = run(backend, fastact.cartesian_to_spherical, w)
    (expected_radius, expected_theta), (w64,) = float64_reference(
        fastact.reference.cartesian_to_spherical, w)
    assert radius.shape == w.shape[:-1] and theta.shape == (*w.shape[:-1], n - 1)
    assert_close_to(radius, expected_radius, INVERSE_TOLERANCES, "radius")
    assert_close_to(theta, expected_theta, INVERSE_TOLERANCES, "theta")
    # The round trip, in float64 from the returned values: w back, the sign of w_n included.
    back = radius.double()[:, None] * fastact.reference.spherical_to_cartesian(theta.double())
    atol, rtol = INVERSE_TOLERANCES[dtype]
    torch.testing.assert_close(back, w.detach().double(), atol=4 * atol * 4, rtol=4 * rtol)
    # Gradients, finite everywhere (the undefined terms are 0, as in the reference).
    g_radius, g_theta = torch.randn_like(radius), torch.randn_like(theta)
    torch.autograd.backward([radius, theta], [g_radius, g_theta])
    torch.autograd.backward([expected_radius, expected_theta],
                            [g_radius.double(), g_theta.double()])
    assert torch.isfinite(w.grad).all()
    assert_close_to(w.grad, w64.grad, INVERSE_GRAD_TOLERANCES, "d cartesian_to_spherical")


def test_reference_dtype_handling():
    """The oracle itself in every dtype (the kernels are checked against its float64 run): it
    computes in the input's dtype and returns it (gradients too), its values within the
    tolerances the kernels meet."""
    theta64 = torch.rand(19, 13, dtype=torch.float64) * 4 - 0.5
    w64 = torch.cat([awkward_rows(5, "cpu"), torch.randn(5, 5, dtype=torch.float64)])
    for dtype in FLOAT_DTYPES:
        theta = theta64.to(dtype).detach().requires_grad_()  # a leaf, float64 too
        u = fastact.reference.spherical_to_cartesian(theta)
        expected, _ = float64_reference(fastact.reference.spherical_to_cartesian, theta)
        assert u.dtype == dtype
        assert_close_to(u, expected, MAP_TOLERANCES, "reference spherical_to_cartesian")
        u.backward(torch.randn_like(u))
        assert theta.grad.dtype == dtype and torch.isfinite(theta.grad).all()
        radius, angles = fastact.reference.cartesian_to_spherical(w64.to(dtype))
        expected_radius, expected_angles = fastact.reference.cartesian_to_spherical(
            w64.to(dtype).double())
        assert radius.dtype == angles.dtype == dtype
        assert_close_to(radius, expected_radius, INVERSE_TOLERANCES, "reference radius")
        assert_close_to(angles, expected_angles, INVERSE_TOLERANCES, "reference theta")


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_cartesian_gradcheck(backend, device):
    w = torch.randn(4, 6, dtype=torch.float64, device=device, requires_grad=True)
    with fastact.use_backend(backend):
        assert torch.autograd.gradcheck(fastact.cartesian_to_spherical, (w,),
                                        fast_mode=interpreted(backend, device))


@pytest.mark.parametrize("backend, device", KERNEL_BACKEND_DEVICES)
def test_cartesian_at_extreme_scales(backend, device):
    """Rows scaled to 1e±200 (float64) and to float32's limits: the kernels scale each row by a
    power of two so that the sums of squares stay finite, and the angles are those of the
    unscaled row. (The plain reference overflows there.)"""
    w = torch.randn(3, 7, dtype=torch.float64, device=device)
    _, theta = fastact.reference.cartesian_to_spherical(w)
    for dtype, scale in ((torch.float64, 1e200), (torch.float64, 1e-200), (torch.float32, 1e37),
                         (torch.float32, 1e-37)):
        radius, angles = run(backend, fastact.cartesian_to_spherical, (w * scale).to(dtype))
        assert torch.isfinite(radius).all() and (radius > 0).all()
        assert_close_to(angles, theta, INVERSE_TOLERANCES, f"angles at scale {scale}")
        expected = w.norm(dim=-1) * scale
        torch.testing.assert_close(radius.double(), expected, rtol=2e-6, atol=0)


@pytest.mark.slow
def test_more_than_2_to_the_31_coordinates():
    """64-bit indexing on CPU: a row of 2^31 + 3 coordinates (bfloat16, 8.6 GB at the peak)."""
    n = 2**31 + 3
    w = torch.zeros(1, n, dtype=torch.bfloat16)
    w[0, -3:] = torch.tensor([3.0, 4.0, 12.0])
    radius, theta = fastact.cartesian_to_spherical(w)
    del w
    half_pi = torch.tensor(math.pi / 2, dtype=torch.bfloat16)
    assert radius.item() == 13.0
    assert theta[0, 0] == half_pi and theta[0, 2**31 - 1] == half_pi and theta[0, -3] == half_pi
    assert abs(theta[0, -2].item() - math.atan2(math.hypot(4, 12), 3)) < 1e-2
    assert abs(theta[0, -1].item() - math.atan2(12, 4)) < 1e-2
    theta[0, 0] = 0.25
    u = fastact.spherical_to_cartesian(theta)
    assert abs(u[0, 0].item() - math.cos(0.25)) < 4e-3
    # sin(bf16(pi/2)) < 1: the prefix product underflows long before the end, and the kernel
    # wrote those zeros (torch.empty holds garbage).
    assert u[0, 2**31].item() == 0.0 and u[0, -1].item() == 0.0


@pytest.mark.parametrize("isa", ["portable", "avx2"])
def test_other_instruction_sets_match_the_reference(isa):
    """The kernels built for the baseline instruction set and for AVX2 (FASTACT_CPU_ISA), whose
    vectors of 8 doubles are two registers or four, not one as with AVX-512."""
    code = f"""
import torch, fastact
torch.manual_seed(0)
if fastact._extension.cpu_isa() != "{isa}":
    print("cannot run", fastact._extension.cpu_isa())
    raise SystemExit
for dtype in (torch.float64, torch.float32, torch.bfloat16):
    theta = (torch.rand(13, 37, dtype=torch.float64) * 3).to(dtype).requires_grad_()
    u = fastact.spherical_to_cartesian(theta)
    u.backward(torch.ones_like(u))
    t64 = theta.detach().double().requires_grad_()
    ref = fastact.reference.spherical_to_cartesian(t64)
    ref.backward(torch.ones_like(ref))
    tol = {{torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 5e-2}}[dtype]
    assert (u.double() - ref).abs().max() < tol, dtype
    assert (theta.grad.double() - t64.grad).abs().max() < 10 * tol, dtype
    w = torch.randn(5, 9, dtype=dtype)
    r, t = fastact.cartesian_to_spherical(w)
    back = r.double()[:, None] * fastact.reference.spherical_to_cartesian(t.double())
    assert (back - w.double()).abs().max() < 10 * tol, dtype
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "FASTACT_CPU_ISA": isa}, timeout=300)
    assert result.returncode == 0, result.stderr
    if result.stdout.startswith("cannot run"):
        pytest.skip(f"this CPU cannot run the {isa} kernels ({result.stdout.strip()} instead)")
    assert result.stdout.strip() == "ok"


# ---- opcheck, double backward, bad input --------------------------------------------------

@pytest.mark.parametrize("backend, device", KERNEL_BACKEND_DEVICES)
def test_opcheck(backend, device):
    ops = fastact._backend.ops(backend)
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        theta = (torch.rand(3, 4, 6, device=device) * 3).to(dtype)
        torch.library.opcheck(ops.spherical_to_cartesian.default, (theta.requires_grad_(),))
        torch.library.opcheck(ops.spherical_to_cartesian.default, (theta.detach().transpose(0, 1),))
        torch.library.opcheck(ops.spherical_to_cartesian_backward.default,
                              (torch.randn(3, 4, 7, device=device).to(dtype), theta.detach()))
        w = torch.randn(5, 6, device=device).to(dtype)
        torch.library.opcheck(ops.cartesian_to_spherical.default, (w.clone().requires_grad_(),))
        torch.library.opcheck(ops.cartesian_to_spherical_backward.default,
                              (torch.randn(5, device=device).to(dtype),
                               torch.randn(5, 5, device=device).to(dtype), w))
        torch.library.opcheck(ops.cartesian_to_spherical_backward.default,
                              (None, torch.randn(5, 5, device=device).to(dtype), w))
    torch.library.opcheck(ops.spherical_to_cartesian.default, (torch.empty(0, 3, device=device),))


@pytest.mark.parametrize("backend, device", KERNEL_BACKEND_DEVICES)
def test_double_backward_is_a_clear_error(backend, device):
    theta = torch.rand(2, 5, dtype=torch.float64, device=device, requires_grad=True)
    with fastact.use_backend(backend):
        u = fastact.spherical_to_cartesian(theta)
        (grad,) = torch.autograd.grad(u.sum(), theta, create_graph=True)
        with pytest.raises(RuntimeError, match="double backward is not supported"):
            grad.sum().backward()


@pytest.mark.parametrize(
    "fn, args, error, words",
    [
        (fastact.spherical_to_cartesian, (torch.arange(5),), TypeError,
         ["spherical_to_cartesian", "theta", "torch.int64"]),
        (fastact.spherical_to_cartesian, (torch.tensor(1.0),), ValueError, ["theta", "0-d"]),
        (fastact.spherical_to_cartesian, ([0.5, 1.0],), TypeError, ["theta", "torch.Tensor"]),
        (fastact.cartesian_to_spherical, (torch.ones(3, 1),), ValueError, ["w", "at least 2"]),
        (fastact.cartesian_to_spherical, (torch.ones(3, dtype=torch.int32),), TypeError,
         ["cartesian_to_spherical", "w", "torch.int32"]),
    ],
)
def test_bad_input(fn, args, error, words):
    with pytest.raises(error) as info:
        fn(*args)
    for word in words:
        assert word in str(info.value)


def test_native_ops_check_their_arguments():
    with pytest.raises(TypeError, match="theta must be a float16, bfloat16, float32 or float64"):
        torch.ops.fastact.spherical_to_cartesian(torch.arange(3))
    with pytest.raises(RuntimeError, match="grad_u must be a Float tensor of shape \\[2, 4\\]"):
        torch.ops.fastact.spherical_to_cartesian_backward(torch.ones(2, 3), torch.ones(2, 3))
    with pytest.raises(RuntimeError, match="at least 2 coordinates"):
        torch.ops.fastact.cartesian_to_spherical(torch.ones(4, 1))
    with pytest.raises(RuntimeError, match="grad_theta must be a Float tensor of shape \\[4, 2\\]"):
        torch.ops.fastact.cartesian_to_spherical_backward(None, torch.ones(4, 3), torch.ones(4, 3))
