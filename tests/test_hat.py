"""Hat on every kernel backend against fastact.reference (float64): values, gradients, layouts,
dtypes, special values, torch.library.opcheck, torch.compile and bad input; the reference
backend in the tests of stated values, gradcheck and its own dtype handling."""

import math

import pytest
import torch
from fastact_testing import (
    BACKEND_DEVICES,
    FLOAT_DTYPES,
    KERNEL_BACKEND_DEVICES,
    assert_close_to,
    float64_reference,
    interpreted,
    without_interpreter_blind_spots,
)

import fastact

# hat is exact in every format: min(x, 2 - x) needs no rounding (Sterbenz on [1, 2]), so
# every backend must match the float64 reference bit for bit, values and gradients.
EXACT = {dtype: (0.0, 0.0) for dtype in FLOAT_DTYPES}

# The kinks (0, 1, 2), their neighbours, and the special values.
SPECIAL = [
    -math.inf, -3.0, -1.0, -1e-30, -0.0, 0.0, 1e-30, 1e-8, 0.5,
    1 - 2**-20, 1.0, 1 + 2**-20, 1.5, 2 - 2**-20, 2.0, 2 + 2**-20, 3.0, 1e30, math.inf, math.nan,
]


def stated_gradient(v: float) -> float:
    """+1 on (0, 1], -1 on (1, 2], 0 elsewhere, NaN included."""
    return 1.0 if 0 < v <= 1 else (-1.0 if 1 < v <= 2 else 0.0)


def run_hat(backend, x):
    with fastact.use_backend(backend):
        return fastact.hat(x)


def check_against_reference(backend, x):
    """Values and gradients of hat(x) on `backend` against the float64 reference."""
    x = x.detach().requires_grad_()
    y = run_hat(backend, x)
    expected, (x64,) = float64_reference(fastact.reference.hat, x)
    assert y.dtype == x.dtype and y.shape == x.shape and y.device == x.device
    assert_close_to(y, expected, EXACT, "hat")
    grad = torch.randn_like(y)
    y.backward(grad)
    expected.backward(grad.double())
    assert_close_to(x.grad, x64.grad, EXACT, "d hat / dx")
    return y


def sized_cases():
    """Every kernel backend x dtype x size; the Triton interpreter (~1 s per million elements)
    takes the 2^20 + 3 size in float32 only."""
    for pair in KERNEL_BACKEND_DEVICES:
        for dtype in FLOAT_DTYPES:
            for shape in [(), (1,), (7,), (1023,), (3, 5, 7), (2**20 + 3,)]:
                if interpreted(*pair.values) and math.prod(shape) > 2**16 and dtype != torch.float32:
                    continue
                yield pytest.param(*pair.values, dtype, shape, marks=pair.marks,
                                   id=f"{pair.id}-{str(dtype)[6:]}-{shape}")


@pytest.mark.parametrize("backend, device, dtype, shape", list(sized_cases()))
def test_matches_reference(backend, device, dtype, shape):
    x = (torch.randn(shape, device=device) * 1.5 + 1).to(dtype)
    check_against_reference(backend, x)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_kinks_and_special_values(backend, device, dtype):
    x = torch.tensor(SPECIAL, dtype=dtype, device=device, requires_grad=True)
    y = run_hat(backend, x)
    y.backward(torch.ones_like(y))
    exact = torch.tensor(SPECIAL, dtype=dtype).double()
    expected = torch.minimum(exact, 2 - exact).clamp(min=0)  # NaN stays NaN, +-inf give 0
    assert_close_to(y.cpu(), expected, EXACT, "hat at special values")
    assert x.grad.tolist() == [stated_gradient(v) for v in exact.tolist()]


def test_reference_dtype_handling():
    """The oracle itself in every dtype (the kernels are checked against its float64 run): it
    computes in x's dtype and returns it, and as hat needs no rounding its values and
    gradients equal the float64 ones there, special values included."""
    x64 = torch.cat([torch.tensor(SPECIAL, dtype=torch.float64),
                     torch.randn(1000, dtype=torch.float64) * 1.5 + 1])
    for dtype in FLOAT_DTYPES:
        x = x64.to(dtype).detach().requires_grad_()  # a leaf of its own, float64 too
        y = fastact.reference.hat(x)
        expected, (x_copy,) = float64_reference(fastact.reference.hat, x)
        assert y.dtype == dtype
        assert_close_to(y, expected, EXACT, "reference hat")
        grad = torch.randn_like(y)
        y.backward(grad)
        expected.backward(grad.double())
        assert x.grad.dtype == dtype
        assert_close_to(x.grad, x_copy.grad, EXACT, "d reference hat / dx")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("backend, device", KERNEL_BACKEND_DEVICES)
def test_every_16_bit_pattern(backend, device, dtype):
    """All 65536 values of the 16-bit types: the kernels' conversions to and from float32
    (exact here: hat of a 16-bit value is a 16-bit value)."""
    x = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype).to(device)
    x = without_interpreter_blind_spots(x, backend, device)
    y = run_hat(backend, x)
    expected = fastact.reference.hat(x.double()).to(dtype)
    assert torch.equal(y.view(torch.int16), expected.view(torch.int16)) or torch.equal(
        y.double().nan_to_num(9), expected.double().nan_to_num(9))


@pytest.mark.parametrize("backend, device", KERNEL_BACKEND_DEVICES)
def test_gradient_selects_like_relu(backend, device):
    """The kernels select, as relu's backward does: a NaN/inf upstream gradient where the
    local gradient is 0 gives 0. (The reference's plain relu composition gives
    inf - 2 inf + inf = NaN on (2, 3] for an infinite upstream gradient.)"""
    x = torch.tensor([-1.0, 0.5, 1.5, 3.0], device=device, requires_grad=True)
    y = run_hat(backend, x)
    y.backward(torch.tensor([math.nan, 2.0, 2.0, math.inf], device=device))
    assert x.grad.tolist() == [0.0, 2.0, -2.0, 0.0]


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_gradcheck_float64(backend, device):
    # Away from the kinks, where the gradient is defined; gradgradcheck covers the backward op.
    x = torch.rand(64, dtype=torch.float64, device=device) * 4 - 1
    x = torch.where((x - x.round()).abs() < 1e-3, x + 0.1, x).requires_grad_()
    with fastact.use_backend(backend):
        assert torch.autograd.gradcheck(fastact.hat, (x,))
        assert torch.autograd.gradgradcheck(fastact.hat, (x,))


def layouts(device):
    base = torch.randn(4, 6, 5, 8, device=device) * 1.5 + 1
    return {
        "contiguous": base,
        "channels_last": base.to(memory_format=torch.channels_last),
        "transposed": base.transpose(1, 3),
        "sliced": base[:, ::2, 1:4, ::3],
        "expanded": torch.randn(1, 6, 1, 8, device=device).expand(4, 6, 5, 8),
        "offset_by_one_element": base.flatten()[1:].view(-1, 7, 137)[:, :, :135],
    }


@pytest.mark.parametrize("layout", list(layouts("cpu")))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("backend, device", KERNEL_BACKEND_DEVICES)
def test_layouts(backend, device, dtype, layout):
    x = layouts(device)[layout].to(dtype)
    before = x.clone()
    y = check_against_reference(backend, x)
    # Laid out as torch.empty_like(x), like the fake kernel; the input untouched.
    assert y.stride() == torch.empty_like(x).stride()
    assert torch.equal(x, before)


@pytest.mark.parametrize("backend, device", KERNEL_BACKEND_DEVICES)
def test_gradient_in_another_layout(backend, device):
    x = (torch.randn(2, 3, 4, 5, device=device) + 1).to(memory_format=torch.channels_last)
    x.requires_grad_()
    grad = torch.randn(2, 3, 4, 5, device=device)  # contiguous, unlike x
    run_hat(backend, x).backward(grad)
    x64 = x.detach().double().requires_grad_()
    fastact.reference.hat(x64).backward(grad.double())
    assert torch.equal(x.grad.double(), x64.grad)


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_empty(backend, device):
    for shape in [(0,), (3, 0, 5)]:
        x = torch.empty(shape, device=device, requires_grad=True)
        y = run_hat(backend, x)
        y.sum().backward()
        assert y.shape == shape and x.grad.shape == shape


@pytest.mark.slow
def test_more_than_2_to_the_31_elements():
    """64-bit indexing on CPU: the last elements of a 2^31 + 5 element tensor."""
    n = 2**31 + 5
    x = torch.full((n,), 0.5, dtype=torch.bfloat16)
    x[-5:] = torch.tensor([1.5, 0.25, -1.0, 2.0, 1.0])
    y = fastact.hat(x)
    assert y[-5:].tolist() == [0.5, 0.25, 0.0, 0.0, 1.0]
    assert y[0].item() == 0.5 and y[2**31 - 1].item() == 0.5
    del y
    g = torch.ops.fastact.hat_backward(torch.ones_like(x), x)
    assert g[-5:].tolist() == [-1.0, 1.0, 0.0, -1.0, 1.0]


def opcheck_samples(device):
    x = torch.randn(3, 4, 5, device=device) + 1
    return [
        x,
        x.to(torch.bfloat16),
        x.double(),
        x.transpose(0, 2),
        x.unsqueeze(0).to(memory_format=torch.channels_last),
        torch.empty(0, device=device),
    ]


@pytest.mark.parametrize("backend, device", KERNEL_BACKEND_DEVICES)
def test_opcheck(backend, device):
    ops = fastact._backend.ops(backend)
    for x in opcheck_samples(device):
        torch.library.opcheck(ops.hat.default, (x.requires_grad_(),))
        torch.library.opcheck(ops.hat_backward.default, (torch.randn_like(x), x.detach()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("backend, device", KERNEL_BACKEND_DEVICES)
def test_torch_compile_fullgraph(backend, device, dtype):
    torch._dynamo.reset()

    def model(x):
        return fastact.hat(x * 2) * 4  # powers of two: exact, so the check stays exact

    x = (torch.randn(257, device=device) * 0.75).to(dtype).requires_grad_()
    with fastact.use_backend(backend):
        compiled = torch.compile(model, fullgraph=True)
        y = compiled(x)
        y.sum().backward()
    x64 = x.detach().double().requires_grad_()
    expected = fastact.reference.hat(x64 * 2) * 4
    expected.sum().backward()
    assert_close_to(y, expected, EXACT, "compiled hat")
    assert_close_to(x.grad, x64.grad, EXACT, "compiled hat gradient")


def test_module_is_a_drop_in_for_relu():
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), fastact.nn.Hat(), torch.nn.Linear(16, 2))
    x = torch.randn(5, 8)
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert dict(fastact.nn.Hat().state_dict()) == {}
    assert repr(fastact.nn.Hat()) == "Hat()"


@pytest.mark.parametrize(
    "bad, error, words",
    [
        (torch.arange(5), TypeError, ["fastact.hat", "x", "torch.int64"]),
        (torch.ones(3, dtype=torch.bool), TypeError, ["x", "torch.bool"]),
        (torch.ones(3, dtype=torch.complex64), TypeError, ["x", "torch.complex64"]),
        ([1.0, 2.0], TypeError, ["x", "torch.Tensor", "list"]),
    ],
)
def test_bad_input(bad, error, words):
    with pytest.raises(error) as info:
        fastact.hat(bad)
    for word in words:
        assert word in str(info.value)


def test_native_op_checks_its_arguments():
    with pytest.raises(TypeError, match="x must be a float16, bfloat16, float32 or float64"):
        torch.ops.fastact.hat(torch.arange(3))
    with pytest.raises(RuntimeError, match="grad_out .* must match x"):
        torch.ops.fastact.hat_backward(torch.ones(4), torch.ones(3))
