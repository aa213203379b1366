"""The GmP layer (Chen & Ge, arXiv 2305.15912): z = radius * relu(u(theta) . x + bias) with the
directions u(theta) = spherical_to_cartesian(theta) on the unit sphere (fastact/sphere.py).

The ops are `fastact::<op>` (C++, csrc/) and `fastact_triton::<op>` (fastact/triton/layer.py):
  geometric_relu_linear(x, u, radius, bias) -> (z, mask)       and its backward
  geometric_relu_conv2d(x, u, radius, bias, ...) -> (z, mask)  and its backward
They take the directions u (so that a module computes them once, also for the input mean fold)
and return the activity mask, one bit per output, which is all their backward saves besides x
and u. This module checks arguments, picks the backend, and registers the fake kernels, autograd
and autocast of both namespaces; the backward ops are not differentiable again. The modules
(fastact.nn) use its public helpers: check_parameters, linear, conv2d, pair, conv2d_padding.
"""

from __future__ import annotations

import math
import weakref

import torch
from torch import Tensor

from fastact import _backend, _checks, reference
from fastact import sphere  # noqa: F401  (the directions' ops and their autograd)
from fastact import triton as _triton

if _triton.AVAILABLE:
    from fastact.triton import layer as _triton_layer  # noqa: F401  (defines the ops)

__all__ = ["geometric_relu", "geometric_relu_conv2d"]


def _autocast_dtype(x: Tensor):
    """The dtype autocast runs matmuls and convolutions in on x's device, or None outside
    autocast (and for float64 x, which autocast leaves alone). The GmP layers follow nn.Linear
    and nn.Conv2d there: the layer ops cast x, the directions (computed from the angles in the
    parameters' dtype), radius and bias to it at dispatch (_register_autocast), so the output
    has it and the parameter gradients flow back through the casts in the parameters' dtype."""
    device_type = x.device.type
    if x.dtype == torch.float64 or not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def check_parameters(op: str, x: Tensor, theta: Tensor, radius: Tensor, bias: Tensor | None,
                     fan_in: int) -> None:
    """Checks the parameters of the GmP layer `op` for the input x (errors name `op` and the
    argument): theta [out, fan_in - 1], radius [out], bias None or [out], all of x's dtype
    (theta's under autocast, which casts them all) and device."""
    for name, value in (("x", x), ("theta", theta), ("radius", radius), ("bias", bias)):
        if value is not None or name != "bias":
            _checks.float_tensor(op, name, value)
    dtype, whose = ((theta.dtype, "theta's") if _autocast_dtype(x) is not None
                    else (x.dtype, "x's"))
    for name, value in (("theta", theta), ("radius", radius), ("bias", bias)):
        if value is not None and value.dtype != dtype:
            raise TypeError(f"fastact.{op}: {name} must have {whose} dtype {dtype}, "
                            f"got {value.dtype}")
    _checks.same_device(op, x=x, theta=theta, radius=radius, bias=bias)
    if theta.dim() != 2 or theta.shape[1] != fan_in - 1:
        raise ValueError(f"fastact.{op}: theta must have shape [out, {fan_in - 1}] (one angle "
                         f"fewer than the fan-in {fan_in}), got {tuple(theta.shape)}")
    out = theta.shape[0]
    if radius.shape != (out,):
        raise ValueError(f"fastact.{op}: radius must have shape [{out}] (one per unit of theta), "
                         f"got {tuple(radius.shape)}")
    if bias is not None and bias.shape != (out,):
        raise ValueError(f"fastact.{op}: bias must have shape [{out}] (one per unit of theta), "
                         f"got {tuple(bias.shape)}")


def geometric_relu(x: Tensor, theta: Tensor, radius: Tensor, bias: Tensor | None = None) -> Tensor:
    """z = radius * relu(x @ u.T + bias) with u = spherical_to_cartesian(theta).

    x [..., in], theta [out, in-1], radius [out], bias [out] or None -> z [..., out], all of one
    float dtype. The matmul runs on the platform's BLAS; bias, ReLU and radius are one fused pass
    over its output, which also writes the activity mask (one bit per output), the only thing
    saved for the backward besides x and u. The backward is one pass over dL/dz (masked
    gradient and its column sums), two matmuls and one pass over the [out, in] weight gradient
    for dL/dradius and dL/dbias: no division, exact for every radius, 0 included.
    """
    _checks.float_tensor("geometric_relu", "x", x)
    if x.dim() == 0:
        raise ValueError("fastact.geometric_relu: x must have at least one dimension [..., in]")
    check_parameters("geometric_relu", x, theta, radius, bias, x.shape[-1])
    return linear(_backend.select("geometric_relu", x.device), x, theta, radius, bias)


# id(theta) -> (weak reference to theta, key, u) for the angles whose directions were computed
# without a gradient: see directions(). An entry goes with its theta (the reference's callback).
_DIRECTIONS: dict = {}


def directions(backend: str, theta: Tensor) -> Tensor:
    """u = spherical_to_cartesian(theta) on `backend` (not "reference"). When nothing needs its
    gradient (eval under no_grad or inference_mode, frozen angles) u is cached per theta and served
    again while theta's version counter, storage, device and dtype and the backend are the same:
    any in-place change (an optimizer step, load_state_dict, a copy_) or .to() computes it anew.
    A frozen GmP layer then costs what nn.Linear + nn.ReLU cost, where the map alone can cost
    more than the matmul. Never while compiling or exporting (the graph computes u), and never
    when theta needs a gradient: training computes the map once per step, exactly as before.
    Changes that bypass the version counter (through .data or .numpy()) are not seen:
    clear_directions_cache() after those."""
    ops = _backend.ops(backend)
    if ((torch.is_grad_enabled() and theta.requires_grad) or backend == _backend.ONNX
            or torch.compiler.is_compiling()):
        return ops.spherical_to_cartesian(theta)
    key = (theta._version, theta.data_ptr(), theta.device, theta.dtype, backend,
           torch.is_inference_mode_enabled())
    cached = _DIRECTIONS.get(id(theta))
    if cached is not None and cached[0]() is theta and cached[1] == key:
        return cached[2]
    u = ops.spherical_to_cartesian(theta)
    identity = id(theta)
    _DIRECTIONS[identity] = (
        weakref.ref(theta, lambda _, identity=identity: _DIRECTIONS.pop(identity, None)), key, u)
    return u


def clear_directions_cache() -> None:
    """Drops every cached u of directions() (after changing angles through .data or .numpy(),
    which the version counter does not see)."""
    _DIRECTIONS.clear()


def linear(backend: str, x: Tensor, theta: Tensor, radius: Tensor, bias: Tensor | None,
           input_mean: Tensor | None = None) -> Tensor:
    """geometric_relu on `backend` (one of _backend.select's answers), arguments checked by the
    caller (check_parameters), on x - input_mean when given: folded into the bias,
    (x - mu) u^T + b = x u^T + (b - u mu), so x - mu is never formed."""
    amp = _autocast_dtype(x)
    if backend == "reference":
        if input_mean is not None:
            x = x - input_mean
        if amp is not None:  # F.linear casts x, u and the bias itself
            radius = radius.to(amp)
        return reference.geometric_relu(x, theta, radius, bias)
    u = directions(backend, theta)
    if input_mean is not None:
        folded = -torch.mv(u, input_mean.to(u.dtype))
        bias = folded if bias is None else bias + folded
    return _backend.ops(backend).geometric_relu_linear(x, u, radius, bias)[0]


def pair(op: str, name: str, value, minimum: int) -> tuple[int, int]:
    """value as a pair of ints >= minimum (an int is repeated), or a ValueError naming `name`."""
    values = (value, value) if isinstance(value, int) else tuple(value)
    if len(values) != 2 or not all(isinstance(v, int) and v >= minimum for v in values):
        raise ValueError(f"fastact.{op}: {name} must be an int >= {minimum} or a pair of them, "
                         f"got {value!r}")
    return values


def conv2d_padding(op: str, padding, kernel_size, stride, dilation) -> tuple[int, int]:
    """padding as a pair: ints, or "valid" / "same" (stride 1, odd dilated kernel extent)."""
    if padding == "valid":
        return (0, 0)
    if padding == "same":
        extents = [d * (k - 1) for k, d in zip(kernel_size, dilation)]
        if stride != (1, 1) or any(e % 2 for e in extents):
            raise ValueError(f"fastact.{op}: padding='same' needs stride 1 and an odd dilated "
                             "kernel extent (symmetric zero padding), got "
                             f"kernel_size={kernel_size}, stride={stride}, dilation={dilation}")
        return (extents[0] // 2, extents[1] // 2)
    return pair(op, "padding", padding, 0)


def geometric_relu_conv2d(x: Tensor, theta: Tensor, radius: Tensor, bias: Tensor | None = None, *,
                          kernel_size, stride=1, padding=0, dilation=1, groups: int = 1) -> Tensor:
    """z = radius * relu(conv2d(x, U) + bias) with the filters
    U = spherical_to_cartesian(theta).view(out, in/groups, kh, kw).

    x [N, in, H, W] (or unbatched [in, H, W]), theta [out, in/groups*kh*kw - 1], radius [out],
    bias [out] or None. The convolution runs on ATen (oneDNN / cuDNN), followed by the same fused
    epilogue as geometric_relu; channels_last inputs give channels_last outputs.
    """
    op = "geometric_relu_conv2d"
    _checks.float_tensor(op, "x", x)
    kernel_size = pair(op, "kernel_size", kernel_size, 1)
    stride = pair(op, "stride", stride, 1)
    dilation = pair(op, "dilation", dilation, 1)
    padding = conv2d_padding(op, padding, kernel_size, stride, dilation)
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"fastact.{op}: groups must be a positive int, got {groups!r}")
    if x.dim() not in (3, 4):
        raise ValueError(f"fastact.{op}: x must be [N, C, H, W] or [C, H, W], got shape "
                         f"{tuple(x.shape)}")
    channels = x.shape[-3]
    if channels % groups:
        raise ValueError(f"fastact.{op}: x has {channels} channels, not divisible by "
                         f"groups={groups}")
    fan_in = channels // groups * kernel_size[0] * kernel_size[1]
    check_parameters(op, x, theta, radius, bias, fan_in)
    if theta.shape[0] % groups:
        raise ValueError(f"fastact.{op}: {theta.shape[0]} output channels (rows of theta) are not "
                         f"divisible by groups={groups}")
    backend = _backend.select(op, x.device)
    return conv2d(backend, x, theta, radius, bias, kernel_size, stride, padding, dilation,
                  groups)


def conv2d(backend: str, x: Tensor, theta: Tensor, radius: Tensor, bias: Tensor | None,
           kernel_size, stride, padding, dilation, groups,
           input_mean: Tensor | None = None) -> Tensor:
    """geometric_relu_conv2d on `backend`, arguments checked by the caller (check_parameters;
    kernel_size, stride, padding, dilation as pairs), on x - input_mean (per channel) when given,
    folded into a bias as in linear; with zero padding the fold is exact at the borders too."""
    unbatched = x.dim() == 3
    if unbatched:
        x = x.unsqueeze(0)
    amp = _autocast_dtype(x)
    if backend == "reference":
        if input_mean is not None:
            x = x - input_mean.view(1, -1, 1, 1)
        if amp is not None:  # F.conv2d casts x, U and the bias itself
            radius = radius.to(amp)
        z = reference.geometric_relu_conv2d(x, theta, radius, bias, kernel_size=kernel_size,
                                            stride=stride, padding=padding, dilation=dilation,
                                            groups=groups)
    else:
        u = directions(backend, theta)
        # in/groups from u, not x: the TorchScript ONNX exporter needs the filters' shape and
        # cannot infer it from x's when x has a dynamic dimension
        u = u.view(u.shape[0], u.shape[1] // (kernel_size[0] * kernel_size[1]), *kernel_size)
        if input_mean is not None:
            bias = _fold_input_mean(x, u, bias, input_mean.to(u.dtype), stride, padding, dilation,
                                    groups)
        z = _backend.ops(backend).geometric_relu_conv2d(x, u, radius, bias, stride, padding,
                                                        dilation, groups)[0]
    return z.squeeze(0) if unbatched else z


def _fold_input_mean(x, u, bias, mean, stride, padding, dilation, groups):
    """The bias that makes conv(x) + bias == conv(x - mean, zero-padded) + bias: bias minus the
    convolution of the constant image `mean`, zero-padded like x. Without padding that is one
    value per channel (a kernel-sized image suffices); with padding it varies near the borders,
    so the bias becomes [out, Ho, Wo] (one image of batch 1, computed once per forward)."""
    if padding == (0, 0):
        size = [d * (k - 1) + 1 for k, d in zip(u.shape[2:], dilation)]
    else:
        size = list(x.shape[2:])
    image = mean.view(1, -1, 1, 1).expand(1, mean.shape[0], *size)
    folded = -torch.nn.functional.conv2d(image, u, None, stride, padding, dilation, groups)[0]
    if padding == (0, 0):
        folded = folded.reshape(-1)
    elif bias is not None:
        bias = bias.view(-1, 1, 1)
    return folded if bias is None else bias + folded


# ---- fake kernels, autograd and autocast, for both namespaces -----------------------------------

def _conv2d_output_shape(x, u, stride, padding, dilation):
    return [x.shape[0], u.shape[0]] + [
        (size + 2 * p - d * (k - 1) - 1) // s + 1
        for size, k, s, p, d in zip(x.shape[2:], u.shape[2:], stride, padding, dilation)
    ]


def _conv2d_memory_format(x):
    """csrc/host/layer.h: conv_output_format."""
    return (torch.channels_last if x.is_contiguous(memory_format=torch.channels_last)
            and not x.is_contiguous() else torch.contiguous_format)


def _mask_like(x, rows, cols):
    return x.new_empty((rows, (cols + 31) // 32), dtype=torch.int32)


def _layer_output_mask(ctx) -> list[bool]:
    """The layer backward's output_mask: grad_x, and the parameters' gradients (all three: any
    of them needs the pass that gives the others). csrc/host/autograd.h: layer_output_mask."""
    return [ctx.needs_input_grad[0], any(ctx.needs_input_grad[1:4])]


def _layer_grads(grads, output_mask, bias):
    """The gradients of (x, u, radius, bias) from the layer backward's four outputs."""
    grad_x, grad_u, grad_radius, grad_bias = grads
    parameters = output_mask[1]
    return (grad_x if output_mask[0] else None, grad_u if parameters else None,
            grad_radius if parameters else None,
            grad_bias if parameters and bias is not None else None)


def _fake_parameter_grads(u, radius, bias_shape, needed):
    if not needed:
        return radius.new_empty(0), radius.new_empty(0), radius.new_empty(0)
    return u.new_empty(u.shape), radius.new_empty(radius.shape), radius.new_empty(bias_shape)


def _register(namespace: str) -> None:
    ops = getattr(torch.ops, namespace)

    def fake_linear(x, u, radius, bias):
        rows = math.prod(x.shape[:-1])
        return x.new_empty((*x.shape[:-1], u.shape[0])), _mask_like(x, rows, u.shape[0])

    def fake_linear_backward(grad_z, mask, x, u, radius, bias, output_mask):
        grad_x = x.new_empty(x.shape) if output_mask[0] else x.new_empty(0)
        return (grad_x, *_fake_parameter_grads(u, radius, radius.shape, output_mask[1]))

    def save_linear(ctx, inputs, output):
        x, u, radius, bias = inputs
        ctx.save_for_backward(x, u, radius, bias, output[1])

    def linear_grad(ctx, grad_z, grad_mask):
        x, u, radius, bias, mask = ctx.saved_tensors
        output_mask = _layer_output_mask(ctx)
        grads = ops.geometric_relu_linear_backward(grad_z, mask, x, u, radius, bias, output_mask)
        return _layer_grads(grads, output_mask, bias)

    def fake_conv2d(x, u, radius, bias, stride, padding, dilation, groups):
        shape = _conv2d_output_shape(x, u, stride, padding, dilation)
        z = torch.empty(shape, dtype=x.dtype, device=x.device,
                        memory_format=_conv2d_memory_format(x))
        return z, _mask_like(x, shape[0], shape[1] * shape[2] * shape[3])

    def fake_conv2d_backward(grad_z, mask, x, u, radius, bias, stride, padding, dilation, groups,
                             output_mask):
        grad_x = (torch.empty(x.shape, dtype=x.dtype, device=x.device,
                              memory_format=_conv2d_memory_format(x)) if output_mask[0]
                  else x.new_empty(0))
        bias_shape = radius.shape if bias is None else bias.shape
        return (grad_x, *_fake_parameter_grads(u, radius, bias_shape, output_mask[1]))

    def save_conv2d(ctx, inputs, output):
        x, u, radius, bias, ctx.stride, ctx.padding, ctx.dilation, ctx.groups = inputs
        ctx.save_for_backward(x, u, radius, bias, output[1])

    def conv2d_grad(ctx, grad_z, grad_mask):
        x, u, radius, bias, mask = ctx.saved_tensors
        output_mask = _layer_output_mask(ctx)
        grads = ops.geometric_relu_conv2d_backward(grad_z, mask, x, u, radius, bias, ctx.stride,
                                                   ctx.padding, ctx.dilation, ctx.groups,
                                                   output_mask)
        return (*_layer_grads(grads, output_mask, bias), None, None, None, None)

    for name, fake, grad, setup in [
        ("geometric_relu_linear", fake_linear, linear_grad, save_linear),
        ("geometric_relu_conv2d", fake_conv2d, conv2d_grad, save_conv2d),
    ]:
        torch.library.register_fake(f"{namespace}::{name}", fake)
        _checks.register_autograd(f"{namespace}::{name}", grad, setup)
    _checks.register_backward_ops(namespace, {
        "geometric_relu_linear_backward": fake_linear_backward,
        "geometric_relu_conv2d_backward": fake_conv2d_backward,
    })
    for name in ("geometric_relu_linear", "geometric_relu_conv2d"):
        _register_autocast(namespace, name)


_AUTOCAST_LIBRARIES = []


def _register_autocast(namespace: str, name: str) -> None:
    """An autocast kernel for a layer op, as ATen's for linear and conv2d: float32/16 tensor
    arguments are cast to the autocast dtype of their device, read at call time (so float16 and
    bfloat16 both work, unlike torch.library.register_autocast's fixed dtype), then the op runs
    with autocast off. A dispatcher kernel (eager) and a Python-dispatcher one (torch.compile,
    torch.export), as register_autocast registers, so an exported program leaves the casts to
    the autocast state it runs under, as it does for nn.Linear."""
    op = getattr(getattr(torch.ops, namespace), name).default
    library = torch.library.Library(namespace, "IMPL")
    _AUTOCAST_LIBRARIES.append(library)
    for device_type in ("cpu", "cuda"):
        key_name = "Autocast" + torch._C._dispatch_key_for_device(device_type)
        key = getattr(torch._C.DispatchKey, key_name)

        def autocast(*args, device_type=device_type, key=key):
            dtype = torch.get_autocast_dtype(device_type)
            args = [a.to(dtype) if isinstance(a, Tensor) and a.device.type == device_type
                    and a.dtype in (torch.float32, torch.float16, torch.bfloat16) else a
                    for a in args]
            with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(key)):
                return op(*args)

        if op.has_kernel_for_dispatch_key(key):
            op.py_kernels.pop(key, None)
        op.py_impl(key)(autocast)
        library.impl(name, lambda _, *args, autocast=autocast: autocast(*args), key_name,
                     with_keyset=True)


for _namespace in _backend.loaded_namespaces():
    _register(_namespace)
