"""The GmP layer ops (geometric_relu, geometric_relu_conv2d) and modules (GeometricReLU,
GeometricReLUConv2d, InputMeanNorm) on every kernel backend against fastact.reference: values and
gradients of x, theta, radius and bias (radius negative and zero included), layouts, the
input-mean fold (exact at padded borders), init, from_linear, state_dict, what the backward
saves, determinism, opcheck, torch.compile and bad input."""

import math

import pytest
import torch
import torch.nn.functional as F
from fastact_testing import (
    BACKEND_DEVICES,
    FLOAT_DTYPES,
    KERNEL_BACKEND_DEVICES,
    LAYER_GRAD_TOLERANCES,
    LAYER_TOLERANCES,
    assert_close_to,
    interpreted,
)

import fastact


# The layer backward ops' output_mask values autograd asks for: (grad_x, the parameters').
LAYER_OUTPUT_MASKS = ([True, True], [False, True], [True, False])


def run(backend, fn, *args, **kwargs):
    with fastact.use_backend(backend):
        return fn(*args, **kwargs)


def parameters(out, fan_in, device, dtype, bias=True):
    """theta in [-0.5, 3.5], radius with negative, zero and positive units, bias ~0.5."""
    theta = (torch.rand(out, fan_in - 1, device=device, dtype=torch.float64) * 4 - 0.5)
    radius = torch.randn(out, device=device, dtype=torch.float64) * 2
    radius[0] = 0.0
    radius[1] = -abs(radius[1])
    b = torch.randn(out, device=device, dtype=torch.float64) * 0.5 if bias else None
    return [t.to(dtype).requires_grad_() if t is not None else None for t in (theta, radius, b)]


def check_layer(backend, fn, reference, x, theta, radius, bias, what, **kwargs):
    """fn's output and the gradients of every input against reference in float64."""
    z = run(backend, fn, x, theta, radius, bias, **kwargs)
    tensors = [t for t in (x, theta, radius, bias) if t is not None]
    copies = [t.detach().double().requires_grad_() for t in tensors]
    args = copies if bias is not None else copies + [None]
    expected = reference(*args, **kwargs)
    assert z.dtype == x.dtype and z.shape == expected.shape and z.device == x.device
    assert_close_to(z, expected, LAYER_TOLERANCES, what)
    grad = torch.randn_like(z)
    grads = torch.autograd.grad(z, tensors, grad)
    expected_grads = torch.autograd.grad(expected, copies, grad.double())
    for name, actual, wanted in zip(("x", "theta", "radius", "bias"), grads, expected_grads):
        assert_close_to(actual, wanted, LAYER_GRAD_TOLERANCES, f"d {what} / d {name}")
    return z


def layer_cases():
    shapes = [((5, 8), 7), ((2, 3, 16), 33), ((8,), 3), ((37, 64), 64), ((0, 6), 5)]
    for pair in KERNEL_BACKEND_DEVICES:
        for dtype in FLOAT_DTYPES:
            for x_shape, out in shapes:
                yield pytest.param(*pair.values, dtype, x_shape, out, marks=pair.marks,
                                   id=f"{pair.id}-{str(dtype)[6:]}-{x_shape}-{out}")


@pytest.mark.parametrize("backend, device, dtype, x_shape, out", list(layer_cases()))
def test_geometric_relu_matches_reference(backend, device, dtype, x_shape, out):
    x = torch.randn(x_shape, device=device).to(dtype).requires_grad_()
    theta, radius, bias = parameters(out, x_shape[-1], device, dtype, bias=out != 3)
    check_layer(backend, fastact.geometric_relu, fastact.reference.geometric_relu, x, theta,
                radius, bias, "geometric_relu")


@pytest.mark.parametrize("backend, device", KERNEL_BACKEND_DEVICES)
def test_strided_inputs_and_empty_batches(backend, device):
    """Non-contiguous x and parameters (views of larger tensors) are read where they lie; an
    empty batch gives an empty output and zero parameter gradients, linear and conv."""
    base = torch.randn(9, 12, device=device)
    x = base[::2, 1::2].t().requires_grad_()  # [6, 5], strided
    theta_base = torch.rand(4, 10, device=device) * 3
    theta = theta_base[:, ::2][:, :4].requires_grad_()  # [4, 4]
    radius = torch.randn(8, device=device)[::2].requires_grad_()
    bias = torch.randn(4, 2, device=device)[:, 0].requires_grad_()
    check_layer(backend, fastact.geometric_relu, fastact.reference.geometric_relu, x, theta,
                radius, bias, "strided geometric_relu")
    for layer, x in ((fastact.nn.GeometricReLU(5, 3), torch.empty(0, 5, device=device)),
                     (fastact.nn.GeometricReLUConv2d(2, 3, 3, padding=1),
                      torch.empty(0, 2, 4, 4, device=device))):
        layer = layer.to(device)
        x.requires_grad_()
        z = run(backend, layer, x)
        assert z.shape[0] == 0
        grads = torch.autograd.grad(z.sum(), [x, layer.theta, layer.radius, layer.bias])
        assert grads[0].shape == x.shape and all(torch.all(g == 0) for g in grads[1:])


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_geometric_relu_gradcheck(backend, device):
    """float64, radius 0 and negative included: dL/dradius at radius 0 is exact (the forward
    saves the activity mask, and dL/dradius = G'.u + b.S needs no division)."""
    x = torch.randn(6, 5, dtype=torch.float64, device=device, requires_grad=True)
    theta, radius, bias = parameters(4, 5, device, torch.float64)
    fast = interpreted(backend, device)
    with fastact.use_backend(backend):
        assert torch.autograd.gradcheck(fastact.geometric_relu, (x, theta, radius, bias),
                                        fast_mode=fast)
        assert torch.autograd.gradcheck(fastact.geometric_relu, (x, theta, radius, None),
                                        fast_mode=fast)


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_relu_semantics(backend, device):
    """The unit is active where pre + bias > 0 (relu'(0) = 0); NaN passes through; an infinite
    upstream gradient of an inactive unit gives 0 (a select, as relu's backward)."""
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [math.nan, 0.0]], device=device)
    theta = torch.zeros(1, 1, device=device, requires_grad=True)  # u = (1, 0)
    radius = torch.tensor([2.0], device=device, requires_grad=True)
    bias = torch.tensor([-1.0], device=device, requires_grad=True)
    z = run(backend, fastact.geometric_relu, x, theta, radius, bias)
    assert z[0, 0] == 0 and z[1, 0] == 0 and torch.isnan(z[2, 0])
    if backend == "reference":  # the reference's autograd multiplies: 0 * inf = NaN
        return
    x = x[:2].clone().requires_grad_()
    z = run(backend, fastact.geometric_relu, x, theta, radius, bias)
    z.backward(torch.tensor([[1.0], [math.inf]], device=device))
    assert x.grad.tolist() == [[0.0, 0.0], [0.0, 0.0]]
    assert bias.grad.item() == 0.0 and radius.grad.item() == 0.0 and theta.grad.item() == 0.0


def conv_configs():
    """(x shape, out, kernel, stride, padding, dilation, groups, layout, bias)."""
    return {
        "3x3-pad1": ((2, 4, 6, 5), 6, 3, 1, 1, 1, 1, "contiguous", True),
        "3x2-stride2-dilation2": ((2, 3, 9, 8), 5, (3, 2), 2, (2, 1), 2, 1, "contiguous", True),
        "groups2-no-bias": ((1, 4, 5, 5), 6, 3, 1, 1, 1, 2, "contiguous", False),
        "channels_last": ((2, 4, 5, 6), 8, 3, 1, 1, 1, 1, "channels_last", True),
        "1x1-groups": ((3, 6, 4, 4), 9, 1, 1, 0, 1, 3, "channels_last", True),
        "unbatched-same": ((3, 5, 5), 4, 3, 1, "same", 1, 1, "contiguous", True),
    }


def conv_cases():
    for pair in KERNEL_BACKEND_DEVICES:
        for dtype in FLOAT_DTYPES:
            for name in conv_configs():
                yield pytest.param(*pair.values, dtype, name, marks=pair.marks,
                                   id=f"{pair.id}-{str(dtype)[6:]}-{name}")


@pytest.mark.parametrize("backend, device, dtype, name", list(conv_cases()))
def test_geometric_relu_conv2d_matches_reference(backend, device, dtype, name):
    shape, out, kernel, stride, padding, dilation, groups, layout, has_bias = conv_configs()[name]
    x = torch.randn(shape, device=device).to(dtype)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_()
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    theta, radius, bias = parameters(out, shape[-3] // groups * kh * kw, device, dtype, has_bias)
    kwargs = dict(kernel_size=kernel, stride=stride, padding=padding, dilation=dilation,
                  groups=groups)
    if padding == "same":
        reference = lambda *args, **kw: fastact.reference.geometric_relu_conv2d(  # noqa: E731
            *args, **{**kw, "padding": 1})
    else:
        reference = fastact.reference.geometric_relu_conv2d
    z = check_layer(backend, fastact.geometric_relu_conv2d, reference, x, theta, radius, bias,
                    f"geometric_relu_conv2d {name}", **kwargs)
    if layout == "channels_last":
        assert z.is_contiguous(memory_format=torch.channels_last)


def test_reference_dtype_handling():
    """The oracle itself in every dtype (the kernels are checked against its float64 run): it
    computes in the input's dtype, as ATen's linear and conv2d do, and returns it, within the
    tolerances the kernels meet, values and gradients."""
    for dtype in FLOAT_DTYPES:
        x = torch.randn(37, 64).to(dtype).requires_grad_()
        theta, radius, bias = parameters(64, 64, "cpu", dtype)
        check_layer("reference", fastact.reference.geometric_relu,
                    fastact.reference.geometric_relu, x, theta, radius, bias,
                    "reference geometric_relu")
        x = torch.randn(2, 4, 6, 5).to(dtype).requires_grad_()
        theta, radius, bias = parameters(6, 4 * 9, "cpu", dtype)
        check_layer("reference", fastact.reference.geometric_relu_conv2d,
                    fastact.reference.geometric_relu_conv2d, x, theta, radius, bias,
                    "reference geometric_relu_conv2d", kernel_size=3, padding=1)


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_geometric_relu_conv2d_gradcheck(backend, device):
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, device=device, requires_grad=True)
    theta, radius, bias = parameters(3, 2 * 4, device, torch.float64)
    fn = lambda *args: fastact.geometric_relu_conv2d(  # noqa: E731
        *args, kernel_size=2, padding=1, stride=(1, 2))
    with fastact.use_backend(backend):
        assert torch.autograd.gradcheck(fn, (x, theta, radius, bias),
                                        fast_mode=interpreted(backend, device))


@pytest.mark.parametrize("backend, device", KERNEL_BACKEND_DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: str(d)[6:])
def test_frozen_layer_input_gradient(backend, device, dtype):
    """x's gradient through a frozen layer (no parameter requires grad: the backward op skips
    the parameters' pass and scales the smaller of g' and u by the radius) against the float64
    reference, batches smaller and larger than the weight."""
    torch.manual_seed(1)
    cases = [
        (fastact.geometric_relu, fastact.reference.geometric_relu, (2, 3, 9), 6, 9, {}),
        (fastact.geometric_relu, fastact.reference.geometric_relu, (40, 5), 4, 5, {}),
        (fastact.geometric_relu_conv2d, fastact.reference.geometric_relu_conv2d, (2, 4, 5, 6), 6,
         2 * 3 * 3, dict(kernel_size=3, padding=1, stride=(1, 2), groups=2)),
        (fastact.geometric_relu_conv2d, fastact.reference.geometric_relu_conv2d, (1, 4, 3, 3), 6,
         4 * 2 * 2, dict(kernel_size=2, channels_last=True)),
    ]
    for fn, reference, x_shape, out, fan_in, kwargs in cases:
        layout = (torch.channels_last if kwargs.pop("channels_last", False)
                  else torch.contiguous_format)
        x = torch.randn(x_shape).to(device, dtype).to(memory_format=layout).requires_grad_()
        frozen = [t.detach() for t in parameters(out, fan_in, device, dtype)]
        z = run(backend, fn, x, *frozen, **kwargs)
        grad = torch.randn_like(z)
        (grad_x,) = torch.autograd.grad(z, [x], grad)
        x64 = x.detach().double().requires_grad_()
        expected = reference(x64, *[t.double() for t in frozen], **kwargs)
        (wanted,) = torch.autograd.grad(expected, [x64], grad.double())
        assert grad_x.dtype == x.dtype and grad_x.stride() == x.stride()
        assert_close_to(grad_x, wanted, LAYER_GRAD_TOLERANCES, f"frozen d {fn.__name__} / d x")


@pytest.mark.parametrize("backend, device", KERNEL_BACKEND_DEVICES)
def test_layer_backward_output_mask(backend, device):
    """Each output the mask leaves out comes back empty; the others equal the full call's
    (x's gradient without the parameters' pass up to the rounding of radius g' u's product)."""
    ops = fastact._backend.ops(backend)
    x = torch.randn(5, 8, device=device)
    u = torch.nn.functional.normalize(torch.randn(6, 8, device=device), dim=1)
    radius, bias = torch.randn(6, device=device), torch.randn(6, device=device)
    z, mask = ops.geometric_relu_linear(x, u, radius, bias)
    grad = torch.randn_like(z)
    full = ops.geometric_relu_linear_backward(grad, mask, x, u, radius, bias, [True, True])
    for output_mask in LAYER_OUTPUT_MASKS[1:]:
        grads = ops.geometric_relu_linear_backward(grad, mask, x, u, radius, bias, output_mask)
        wanted = [output_mask[0]] + [output_mask[1]] * 3
        for needed, actual, expected in zip(wanted, grads, full):
            if not needed:
                assert actual.numel() == 0
            elif output_mask[1]:
                torch.testing.assert_close(actual, expected, rtol=0, atol=0)
            else:
                torch.testing.assert_close(actual, expected)


# ---- modules ------------------------------------------------------------------------------

def test_default_initialisation_is_kaiming_uniform():
    """weight = radius * u is distributed as nn.Linear's: uniform on +-1/sqrt(in); bias 0."""
    layer = fastact.nn.GeometricReLU(256, 512)
    weight = layer.weight.detach()
    bound = 1 / math.sqrt(256)
    assert weight.abs().max() <= bound * (1 + 1e-6)
    assert abs(weight.mean().item()) < 0.02 * bound
    assert abs(weight.var().item() / (bound**2 / 3) - 1) < 0.02
    assert torch.equal(layer.bias, torch.zeros(512))
    assert (layer.radius > 0).all()
    conv = fastact.nn.GeometricReLUConv2d(8, 16, 3)
    bound = 1 / math.sqrt(8 * 9)
    assert conv.weight.shape == (16, 8, 3, 3) and conv.weight.abs().max() <= bound * (1 + 1e-6)


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_from_linear_is_exact(backend, device):
    linear = torch.nn.Linear(9, 6).to(device).double()
    with torch.no_grad():
        linear.weight[2] = 0
        linear.bias[2] = -0.5  # a zero row with b <= 0: relu(b) = 0 = radius 0
    layer = fastact.nn.GeometricReLU.from_linear(linear)
    x = torch.randn(11, 9, dtype=torch.float64, device=device)
    torch.testing.assert_close(run(backend, layer, x), torch.relu(linear(x)), atol=1e-14,
                               rtol=1e-13)
    torch.testing.assert_close(layer.weight, linear.weight, atol=1e-15, rtol=1e-14)
    with torch.no_grad():
        linear.bias[2] = 0.5
    with pytest.raises(ValueError, match="zero weights and a positive bias"):
        fastact.nn.GeometricReLU.from_linear(linear)


def test_from_conv2d_is_exact():
    conv = torch.nn.Conv2d(4, 6, 3, padding=1, groups=2).double()
    layer = fastact.nn.GeometricReLUConv2d.from_conv2d(conv)
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64)
    torch.testing.assert_close(layer(x), torch.relu(conv(x)), atol=1e-14, rtol=1e-13)


@pytest.mark.parametrize("backend, device", KERNEL_BACKEND_DEVICES)
def test_input_mean_norm_linear(backend, device):
    """Training: the output is the layer on x - batch mean, with gradients through the mean;
    the running mean moves by momentum 0.1. Eval: the running mean."""
    torch.manual_seed(1)
    layer = fastact.nn.GeometricReLU(5, 4, input_mean_norm=True).to(device).double()
    plain = fastact.nn.GeometricReLU(5, 4).to(device).double()
    plain.load_state_dict({k: v for k, v in layer.state_dict().items() if k != "running_mean"})
    x = (torch.randn(7, 3, 5, dtype=torch.float64, device=device) + 2).requires_grad_()
    z = run(backend, layer, x)
    mean = x.detach().mean(dim=(0, 1))
    x2 = x.detach().clone().requires_grad_()
    expected = run("reference", plain, x2 - x2.mean(dim=(0, 1)))
    torch.testing.assert_close(z, expected, atol=1e-12, rtol=1e-12)
    grad = torch.randn_like(z)
    z.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(x.grad, x2.grad, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(layer.theta.grad, plain.theta.grad, atol=1e-11, rtol=1e-11)
    torch.testing.assert_close(layer.running_mean, 0.1 * mean)
    layer.eval()
    running = layer.running_mean.clone()
    y = torch.randn(4, 5, dtype=torch.float64, device=device)
    torch.testing.assert_close(run(backend, layer, y), run("reference", plain, y - running),
                               atol=1e-12, rtol=1e-12)
    assert torch.equal(layer.running_mean, running)


@pytest.mark.parametrize("padding, layout", [(0, torch.contiguous_format), (1, torch.contiguous_format),
                                             (2, torch.channels_last)])
@pytest.mark.parametrize("backend, device", KERNEL_BACKEND_DEVICES)
def test_input_mean_norm_conv_is_exact_at_padded_borders(backend, device, padding, layout):
    """The output equals the layer applied to (x - mu), zero-padded: with padding, the fold
    subtracts the convolution of the constant mean image (a bias per position)."""
    layer = fastact.nn.GeometricReLUConv2d(3, 5, 3, padding=padding, stride=(1, 2),
                                           input_mean_norm=True).to(device).double()
    with torch.no_grad():
        layer.bias.uniform_(-0.3, 0.3)
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64, device=device) * 0.5 + 3
    x = x.to(memory_format=layout).requires_grad_()
    z = run(backend, layer, x)
    x2 = x.detach().clone().requires_grad_()
    centred = x2 - x2.mean(dim=(0, 2, 3), keepdim=True)
    expected = fastact.reference.geometric_relu_conv2d(
        centred, layer.theta, layer.radius, layer.bias, kernel_size=3, padding=padding,
        stride=(1, 2))
    torch.testing.assert_close(z, expected, atol=1e-12, rtol=1e-12)
    grad = torch.randn_like(z)
    z.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(x.grad, x2.grad, atol=1e-12, rtol=1e-12)


def test_input_mean_norm_module():
    norm = fastact.nn.InputMeanNorm(3)
    x = torch.randn(4, 3, 5) + torch.tensor([1.0, 2.0, 3.0])[:, None]
    y = norm(x)
    torch.testing.assert_close(y.mean(dim=(0, 2)), torch.zeros(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(norm.running_mean, 0.1 * x.mean(dim=(0, 2)))
    norm.eval()
    torch.testing.assert_close(norm(x), x - norm.running_mean[:, None])
    last = fastact.nn.InputMeanNorm(5, channel_dim=-1, momentum=0.5)
    z = torch.randn(2, 3, 5)
    torch.testing.assert_close(last(z), z - z.mean(dim=(0, 1)))
    assert repr(last) == "InputMeanNorm(5, momentum=0.5, channel_dim=-1)"
    with pytest.raises(ValueError, match="expected 3 features along dim 1"):
        norm(torch.randn(2, 4))
    with pytest.raises(ValueError, match="momentum"):
        fastact.nn.InputMeanNorm(3, momentum=2.0)


def test_state_dict_round_trip_and_weight():
    layer = fastact.nn.GeometricReLU(6, 4, input_mean_norm=True)
    layer(torch.randn(3, 6))
    state = layer.state_dict()
    assert set(state) == {"theta", "radius", "bias", "running_mean"}
    again = fastact.nn.GeometricReLU(6, 4, input_mean_norm=True)
    again.load_state_dict(state)
    x = torch.randn(5, 6)
    layer.eval(), again.eval()
    assert torch.equal(layer(x), again(x))
    torch.testing.assert_close(layer.weight, layer.radius[:, None] *
                               fastact.spherical_to_cartesian(layer.theta))
    assert set(fastact.nn.GeometricReLU(3, 2, bias=False).state_dict()) == {"theta", "radius"}
    assert fastact.nn.GeometricReLU(3, 2, bias=False).bias is None
    with pytest.raises((AttributeError, KeyError)):
        layer.weight = torch.nn.Parameter(torch.zeros(4, 6))
    with pytest.raises(AttributeError):
        layer.weight = torch.zeros(4, 6)
    conv = fastact.nn.GeometricReLUConv2d(4, 6, (3, 2), groups=2, input_mean_norm=True)
    assert set(conv.state_dict()) == {"theta", "radius", "bias", "running_mean"}
    assert conv.theta.shape == (6, 2 * 3 * 2 - 1) and conv.weight.shape == (6, 2, 3, 2)


def test_extra_repr():
    assert repr(fastact.nn.GeometricReLU(3, 2)) == (
        "GeometricReLU(in_features=3, out_features=2, bias=True, input_mean_norm=False)")
    assert repr(fastact.nn.GeometricReLUConv2d(4, 6, 3, stride=2, padding=1, groups=2,
                                               bias=False, input_mean_norm=True)) == (
        "GeometricReLUConv2d(4, 6, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), "
        "groups=2, bias=False, input_mean_norm=True)")


# ---- memory, determinism ------------------------------------------------------------------

def test_backward_saves_the_mask_not_the_output():
    """What autograd keeps for the backward: theta, x, u, radius, bias and one bit per output
    (the mask), nothing else of the batch's size (nn.Linear + nn.ReLU keeps x, W and z)."""
    saved = []

    def pack(t):
        saved.append(t)
        return t

    batch, fan_in, out = 256, 64, 96
    layer = fastact.nn.GeometricReLU(fan_in, out)
    x = torch.randn(batch, fan_in, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        z = layer(x)
    unique = {t.data_ptr(): t for t in saved}.values()
    batch_sized = [t for t in unique if t.shape[0] == batch and t.data_ptr() != x.data_ptr()]
    assert [(t.dtype, tuple(t.shape)) for t in batch_sized] == [(torch.int32, (batch, 3))]
    total = sum(t.numel() * t.element_size() for t in unique)
    parameters_and_x = 4 * (x.numel() + 2 * out * fan_in + 3 * out)
    assert total <= parameters_and_x + batch * out // 8
    z.sum().backward()


def test_parameter_gradients_do_not_depend_on_the_thread_count():
    layer = fastact.nn.GeometricReLUConv2d(8, 16, 3, padding=1)
    x = torch.randn(70, 8, 6, 6, requires_grad=True)
    grad = torch.randn(70, 16, 6, 6)
    results = []
    threads = torch.get_num_threads()
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            parameters = [layer.theta, layer.radius, layer.bias]
            results.append(torch.autograd.grad(layer(x), parameters, grad))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


# ---- opcheck, compile, bad input --------------------------------------------------------------

@pytest.mark.parametrize("backend, device", KERNEL_BACKEND_DEVICES)
def test_opcheck(backend, device):
    ops = fastact._backend.ops(backend)
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        x = torch.randn(3, 4, 9, device=device).to(dtype)
        u = F.normalize(torch.randn(40, 9, device=device), dim=1).to(dtype)
        radius = torch.randn(40, device=device).to(dtype)
        bias = torch.randn(40, device=device).to(dtype)
        for b in (bias, None):
            torch.library.opcheck(ops.geometric_relu_linear.default,
                                  (x.clone().requires_grad_(), u.clone().requires_grad_(),
                                   radius.clone().requires_grad_(), b))
            z, mask = ops.geometric_relu_linear(x, u, radius, b)
            for output_mask in LAYER_OUTPUT_MASKS:
                torch.library.opcheck(ops.geometric_relu_linear_backward.default,
                                      (torch.randn_like(z), mask, x, u, radius, b, output_mask))
        images = torch.randn(2, 4, 5, 6, device=device).to(dtype)
        filters = torch.randn(6, 2, 3, 3, device=device).to(dtype)
        for layout, b in ((torch.contiguous_format, radius[:6]),
                          (torch.channels_last, torch.randn(6, 5, 2, device=device).to(dtype))):
            x = images.to(memory_format=layout)
            args = (x, filters, radius[:6], b, [1, 2], [1, 0], [1, 1], 2)
            trained = [t.clone().requires_grad_() for t in args[:4]]
            torch.library.opcheck(ops.geometric_relu_conv2d.default, (*trained, *args[4:]))
            z, mask = ops.geometric_relu_conv2d(*args)
            for output_mask in LAYER_OUTPUT_MASKS:
                torch.library.opcheck(ops.geometric_relu_conv2d_backward.default,
                                      (torch.randn_like(z), mask, *args[:4], *args[4:],
                                       output_mask))
    empty = torch.empty(0, 9, device=device)
    torch.library.opcheck(ops.geometric_relu_linear.default,
                          (empty, u.float(), radius.float(), None))


@pytest.mark.parametrize("backend, device", KERNEL_BACKEND_DEVICES)
def test_torch_compile_fullgraph(backend, device):
    """A model of both layers with input mean normalisation, forward and backward compiled
    without a graph break, against the same model in eager mode."""
    torch._dynamo.reset()
    torch.manual_seed(2)
    model = torch.nn.Sequential(
        fastact.nn.GeometricReLUConv2d(3, 4, 3, padding=1, input_mean_norm=True),
        torch.nn.Flatten(),
        fastact.nn.GeometricReLU(4 * 5 * 5, 6, input_mean_norm=True),
    ).to(device)
    x = torch.randn(2, 3, 5, 5, device=device)
    with fastact.use_backend(backend):
        eager_out = model(x)
        eager_grads = torch.autograd.grad(eager_out.sum(), list(model.parameters()))
        compiled = torch.compile(model, fullgraph=True)
        out = compiled(x)
        grads = torch.autograd.grad(out.sum(), list(model.parameters()))
    torch.testing.assert_close(out, eager_out, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads, eager_grads):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def bad_layer_inputs():
    x, theta, radius, bias = torch.randn(2, 5), torch.rand(3, 4), torch.randn(3), torch.randn(3)
    return [
        ((x, torch.rand(3, 5), radius, bias), ValueError, ["theta", "[out, 4]", "(3, 5)"]),
        ((x, theta, torch.randn(4), bias), ValueError, ["radius", "[3]", "(4,)"]),
        ((x, theta, radius, torch.randn(2)), ValueError, ["bias", "[3]", "(2,)"]),
        ((x.int(), theta, radius, bias), TypeError, ["geometric_relu", "x", "torch.int32"]),
        ((x, theta.long(), radius, bias), TypeError, ["theta", "torch.int64"]),
        ((x, theta, radius.double(), bias), TypeError, ["radius", "x's dtype"]),
        ((x, theta, radius, bias.to("meta")), RuntimeError, ["one device", "bias on meta"]),
        ((torch.tensor(1.0), theta, radius, bias), ValueError, ["x", "[..., in]"]),
    ]


@pytest.mark.parametrize("args, error, words", bad_layer_inputs())
def test_bad_layer_input(args, error, words):
    before = [a.clone() for a in args]
    with pytest.raises(error) as info:
        fastact.geometric_relu(*args)
    for word in words:
        assert word in str(info.value)
    assert all(torch.equal(a, b) for a, b in zip(args, before) if a.device.type != "meta")


def test_bad_conv_input():
    x = torch.randn(2, 4, 5, 5)
    theta, radius = torch.rand(6, 2 * 9 - 1), torch.randn(6)
    with pytest.raises(ValueError, match="theta must have shape \\[out, 35\\]"):
        fastact.geometric_relu_conv2d(x, theta, radius, kernel_size=3)
    with pytest.raises(ValueError, match="not divisible by groups=3"):
        fastact.geometric_relu_conv2d(x, theta, radius, kernel_size=3, groups=3)
    with pytest.raises(ValueError, match="padding='same' needs stride 1"):
        fastact.geometric_relu_conv2d(x, torch.rand(6, 4 * 4 - 1), radius, kernel_size=2,
                                      padding="same")
    with pytest.raises(ValueError, match="x must be \\[N, C, H, W\\]"):
        fastact.geometric_relu_conv2d(torch.randn(4, 5), theta, radius, kernel_size=3)
    with pytest.raises(ValueError, match="stride must be an int >= 1"):
        fastact.geometric_relu_conv2d(x, theta, radius, kernel_size=3, stride=0, groups=2)
    with pytest.raises(ValueError, match="fan-in"):
        fastact.nn.GeometricReLUConv2d(2, 2, 1, groups=2)
    with pytest.raises(ValueError, match="in_features >= 2"):
        fastact.nn.GeometricReLU(1, 3)
    with pytest.raises(ValueError, match="expected input \\[\\.\\.\\., 3\\]"):
        fastact.nn.GeometricReLU(3, 2)(torch.randn(4, 5))


def test_native_ops_check_their_arguments():
    ops = torch.ops.fastact
    x, u, radius = torch.randn(2, 5), torch.randn(3, 5), torch.randn(3)
    with pytest.raises(RuntimeError, match="x must be \\[\\.\\.\\., 5\\]"):
        ops.geometric_relu_linear(torch.randn(2, 4), u, radius, None)
    with pytest.raises(RuntimeError, match="radius must have shape \\[3\\]"):
        ops.geometric_relu_linear(x, u, torch.randn(2), None)
    with pytest.raises(TypeError, match="u must have x's dtype"):
        ops.geometric_relu_linear(x, u.double(), radius, None)
    z, mask = ops.geometric_relu_linear(x, u, radius, None)
    with pytest.raises(RuntimeError, match="mask must be the contiguous int32 \\[2, 1\\]"):
        ops.geometric_relu_linear_backward(z, mask.float(), x, u, radius, None, [True, True])
    with pytest.raises(RuntimeError, match="x has 4 channels"):
        ops.geometric_relu_conv2d(torch.randn(1, 4, 5, 5), torch.randn(3, 3, 3, 3), radius, None,
                                  [1, 1], [0, 0], [1, 1], 1)
