"""The GmP modules (Chen & Ge 2024): GeometricReLU and GeometricReLUConv2d (fastact/layer.py,
their angles through fastact/sphere.py), and InputMeanNorm, the input mean normalisation they
can fold into their bias."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from fastact import _backend, _checks, layer, sphere
from fastact._checks import NotScriptable

# The forwards as free functions: one node each in a torch.fx graph (see fastact/nn/__init__.py).
for _name in ("_geometric_relu_forward", "_geometric_relu_conv2d_forward"):
    torch.fx.wrap(_name)


def _running_mean_update(x: Tensor, running_mean: Tensor, momentum: float, training: bool,
                         channel_dim: int) -> Tensor:
    """The mean per channel of x: the batch mean in training (differentiable, as in BatchNorm;
    the running mean moves towards it by `momentum`), the running mean in eval."""
    if not training:
        return running_mean
    dims = [d for d in range(x.dim()) if d != channel_dim % x.dim()]
    mean = x.mean(dim=dims) if dims else x  # one unbatched sample is its own mean
    with torch.no_grad():
        running_mean.lerp_(mean.detach().to(running_mean.dtype), momentum)
    return mean


def _check_momentum(momentum) -> float:
    if not isinstance(momentum, (int, float)) or not 0.0 <= momentum <= 1.0:
        raise ValueError(f"fastact.nn: momentum must be a number in [0, 1], got {momentum!r}")
    return float(momentum)


class InputMeanNorm(NotScriptable, nn.Module):
    """Input mean normalisation (IMN, Chen & Ge 2024): mean-only batch normalisation,
    y = x - mu with mu the mean per feature over every other dimension (batch mean in training,
    with gradients through it, and a running mean with `momentum` in eval).

    Shape: any, with `num_features` along `channel_dim`. GeometricReLU and GeometricReLUConv2d
    take `input_mean_norm=True` instead, which folds the mean into their bias.
    """

    def __init__(self, num_features: int, momentum: float = 0.1, channel_dim: int = 1,
                 device=None, dtype=None):
        super().__init__()
        self.num_features = num_features
        self.momentum = _check_momentum(momentum)
        self.channel_dim = channel_dim
        self.register_buffer("running_mean", torch.zeros(num_features, device=device, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 0 or x.shape[self.channel_dim] != self.num_features:
            raise ValueError(f"fastact.nn.InputMeanNorm: expected {self.num_features} features "
                             f"along dim {self.channel_dim}, got input of shape {tuple(x.shape)}")
        mean = _running_mean_update(x, self.running_mean, self.momentum, self.training,
                                    self.channel_dim)
        shape = [1] * x.dim()
        shape[self.channel_dim] = self.num_features
        return x - mean.view(shape)

    def extra_repr(self) -> str:
        return f"{self.num_features}, momentum={self.momentum}, channel_dim={self.channel_dim}"


def _init_from_weight(module: nn.Module, weight: Tensor) -> None:
    """theta and radius from `weight` [out, fan_in] through the exact inverse map, computed in at
    least float32 (so that 16-bit modules get correctly rounded angles)."""
    compute = torch.promote_types(weight.dtype, torch.float32)
    with torch.no_grad():
        radius, theta = sphere.cartesian_to_spherical(weight.to(compute))
        module.theta.copy_(theta)
        module.radius.copy_(radius)


def _bias_from(bias: Tensor, radius: Tensor, what: str) -> Tensor:
    """bias / radius per unit (the GmP bias lambda = b / |w|). A unit with w = 0 is relu(b):
    exact as radius 0 only when b <= 0."""
    zero = radius == 0
    if bool((zero & (bias > 0)).any()):
        rows = torch.nonzero(zero & (bias > 0)).flatten().tolist()
        raise ValueError(f"fastact.nn: {what} units {rows[:10]} have zero weights and a positive "
                         "bias (a constant relu(b) > 0), which a GmP unit cannot represent")
    return torch.where(zero, 0, bias / torch.where(zero, 1, radius))


INITS = ("default", "glorot")


def _check_init(op: str, init) -> str:
    if not isinstance(init, str) or init not in INITS:
        raise ValueError(f"fastact.nn.{op}: init must be 'default' or 'glorot', got {init!r}")
    return init


def _initial_weight(module: nn.Module, shape: tuple[int, ...], fan_in: int, fan_out: int) -> None:
    """theta and radius from a fresh weight of `shape`: nn.Linear / nn.Conv2d's Kaiming-uniform
    (init="default"), or Glorot-uniform with limit sqrt(6 / (fan_in + fan_out)) as Chen & Ge's
    code draws it (Keras' glorot_uniform; fan_out = filters for a convolution)."""
    weight = torch.empty(shape, device=module.theta.device,
                         dtype=torch.promote_types(module.theta.dtype, torch.float32))
    if module.init == "glorot":
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        nn.init.uniform_(weight, -limit, limit)
    else:
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    _init_from_weight(module, weight.view(shape[0], -1))


def _check_radius(module: nn.Module, what: str) -> None:
    """relu(w x + b) with w = r u is r relu(u x + lambda) only for r >= 0."""
    negative = torch.nonzero(module.radius.detach() < 0).flatten().tolist()
    if negative:
        raise ValueError(f"fastact.nn.{type(module).__name__}.{what}: units {negative[:10]} have a "
                         "negative radius r: r * relu(u.x + b) is then -relu(...), which no layer "
                         "followed by a ReLU computes")


def _unfold(module: nn.Module, plain: nn.Module, channel_dim: int) -> nn.Sequential:
    """nn.Sequential([InputMeanNorm,] plain, nn.ReLU) with the plain layer's weight radius * u
    and bias radius * lambda: the same function as the GmP `module`, in the same mode."""
    with torch.no_grad():
        plain.weight.copy_(module.weight)
        if module.bias is not None:
            plain.bias.copy_(module.radius * module.bias)
    layers = [plain, nn.ReLU()]
    if module.input_mean_norm:
        norm = InputMeanNorm(module.running_mean.shape[0], momentum=module.momentum,
                             channel_dim=channel_dim, device=module.running_mean.device,
                             dtype=module.running_mean.dtype)
        norm.running_mean.copy_(module.running_mean)
        layers.insert(0, norm)
    return nn.Sequential(*layers).train(module.training)


def _geometric_relu_forward(x: Tensor, theta: Tensor, radius: Tensor, bias: Tensor | None,
                            running_mean: Tensor | None, momentum: float, training: bool,
                            in_features: int) -> Tensor:
    """GeometricReLU.forward (a free function, wrapped for torch.fx)."""
    if (running_mean is None and _backend.auto_cpu(x) and x.dtype is theta.dtype
            and x.dim() > 0 and x.shape[-1] == in_features
            and not torch.is_autocast_enabled("cpu")):
        # The hot path: x fits the parameters, which the module made; the C++ op checks all.
        u = layer.directions("cpu", theta)
        return torch.ops.fastact.geometric_relu_linear.default(x, u, radius, bias)[0]
    op = "GeometricReLU"
    _checks.float_tensor(op, "x", x)
    if x.dim() == 0 or x.shape[-1] != in_features:
        raise ValueError(f"fastact.nn.{op}: expected input [..., {in_features}], got shape "
                         f"{tuple(x.shape)}")
    layer.check_parameters(op, x, theta, radius, bias, in_features)
    mean = None
    if running_mean is not None:
        mean = _running_mean_update(x, running_mean, momentum, training, -1)
    backend = _backend.select("geometric_relu", x.device)
    return layer.linear(backend, x, theta, radius, bias, mean)


class GeometricReLU(NotScriptable, nn.Module):
    """A linear layer followed by ReLU in geometric parameterisation (GmP, Chen & Ge 2024):
    z = radius * relu(x @ u(theta).T + bias), u(theta) = spherical_to_cartesian(theta).

    Parameters: `theta` [out, in-1], `radius` [out], `bias` [out] (None when bias=False), and with
    input_mean_norm=True a `running_mean` buffer [in]: the input mean (batch mean in training,
    running mean with `momentum` in eval; the authors use 0.01) is subtracted, folded into the
    bias so that x - mu is never formed. init="default" draws nn.Linear's Kaiming-uniform weights,
    init="glorot" Chen & Ge's Glorot-uniform ones (mean radius about 1 instead of 0.58), and
    converts them through the exact inverse map; bias 0. `weight` is the effective
    radius[:, None] * u (read-only). `GeometricReLU.from_linear(linear)` converts nn.Linear + ReLU
    exactly, `to_linear()` converts back.

    Shape: [..., in] -> [..., out].
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 input_mean_norm: bool = False, *, init: str = "default", momentum: float = 0.1,
                 device=None, dtype=None):
        super().__init__()
        if in_features < 2 or out_features < 1:
            raise ValueError("fastact.nn.GeometricReLU: needs in_features >= 2 (a direction in "
                             f"R^n, n >= 2) and out_features >= 1, got {in_features}, "
                             f"{out_features}")
        factory = {"device": device, "dtype": dtype}
        self.in_features = in_features
        self.out_features = out_features
        self.input_mean_norm = input_mean_norm
        self.init = _check_init("GeometricReLU", init)
        self.momentum = _check_momentum(momentum)
        self.theta = nn.Parameter(torch.empty(out_features, in_features - 1, **factory))
        self.radius = nn.Parameter(torch.empty(out_features, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self.register_buffer("running_mean",
                             torch.zeros(in_features, **factory) if input_mean_norm else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _initial_weight(self, (self.out_features, self.in_features), self.in_features,
                        self.out_features)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        if self.running_mean is not None:
            self.running_mean.zero_()

    @classmethod
    def from_linear(cls, linear: nn.Linear, input_mean_norm: bool = False) -> "GeometricReLU":
        """The GmP layer computing relu(linear(x)): radius = |w|, u = w / |w|, bias = b / |w|."""
        weight = linear.weight.detach()
        module = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                     input_mean_norm=input_mean_norm, device=weight.device, dtype=weight.dtype)
        _init_from_weight(module, weight)
        if linear.bias is not None:
            with torch.no_grad():
                module.bias.copy_(_bias_from(linear.bias.detach(), module.radius, "from_linear"))
        return module

    def to_linear(self) -> nn.Sequential:
        """nn.Sequential(nn.Linear, nn.ReLU) computing this layer's function (to rounding):
        weight radius[:, None] * u, bias radius * bias. With input_mean_norm=True an
        InputMeanNorm with this layer's running mean and momentum comes first. ValueError where a
        radius is negative (no Linear + ReLU computes -relu)."""
        _check_radius(self, "to_linear")
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device=self.theta.device, dtype=self.theta.dtype)
        return _unfold(self, linear, channel_dim=-1)

    @property
    def weight(self) -> Tensor:
        """The effective weight radius[:, None] * u(theta), [out, in] (computed; read-only)."""
        return self.radius.unsqueeze(1) * sphere.spherical_to_cartesian(self.theta)

    def forward(self, x: Tensor) -> Tensor:
        return _geometric_relu_forward(x, self.theta, self.radius, self.bias, self.running_mean,
                                       self.momentum, self.training, self.in_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, input_mean_norm={self.input_mean_norm}"
                + _momentum_repr(self))


def _momentum_repr(module: nn.Module) -> str:
    return f", momentum={module.momentum}" if module.input_mean_norm and module.momentum != 0.1 \
        else ""


def _geometric_relu_conv2d_forward(x: Tensor, theta: Tensor, radius: Tensor, bias: Tensor | None,
                                   running_mean: Tensor | None, momentum: float, training: bool,
                                   in_channels: int, kernel_size, stride, padding, dilation,
                                   groups: int) -> Tensor:
    """GeometricReLUConv2d.forward (a free function, wrapped for torch.fx)."""
    if (running_mean is None and _backend.auto_cpu(x) and x.dtype is theta.dtype
            and x.dim() == 4 and x.shape[1] == in_channels
            and not torch.is_autocast_enabled("cpu")):
        # The hot path, as in _geometric_relu_forward.
        u = layer.directions("cpu", theta)
        u = u.view(u.shape[0], in_channels // groups, *kernel_size)
        return torch.ops.fastact.geometric_relu_conv2d.default(x, u, radius, bias, stride,
                                                               padding, dilation, groups)[0]
    op = "GeometricReLUConv2d"
    _checks.float_tensor(op, "x", x)
    if x.dim() not in (3, 4) or x.shape[-3] != in_channels:
        raise ValueError(f"fastact.nn.{op}: expected input [N, {in_channels}, H, W] or "
                         f"[{in_channels}, H, W], got shape {tuple(x.shape)}")
    layer.check_parameters(op, x, theta, radius, bias, theta.shape[1] + 1)
    mean = None
    if running_mean is not None:
        mean = _running_mean_update(x, running_mean, momentum, training, -3)
    backend = _backend.select("geometric_relu_conv2d", x.device)
    return layer.conv2d(backend, x, theta, radius, bias, kernel_size, stride, padding, dilation,
                        groups, mean)


class GeometricReLUConv2d(NotScriptable, nn.Module):
    """nn.Conv2d followed by ReLU in geometric parameterisation: z = radius * relu(conv2d(x, U)
    + bias) with the filters U = spherical_to_cartesian(theta).view(out, in/groups, kh, kw).

    Parameters: `theta` [out, in/groups*kh*kw - 1], `radius` [out], `bias` [out] (None when
    bias=False), and with input_mean_norm=True a `running_mean` buffer [in] (the per-channel input
    mean, updated with `momentum`, folded into the bias; exact at zero-padded borders too).
    init="default": nn.Conv2d's Kaiming-uniform weights; init="glorot": Chen & Ge's
    Glorot-uniform, limit sqrt(6 / (in/groups*kh*kw + out)); bias 0. `weight` is radius * U,
    [out, in/groups, kh, kw] (read-only). Zero padding only; padding may be "valid" or "same"
    (stride 1, odd dilated kernel). `from_conv2d(conv)` converts nn.Conv2d + ReLU exactly,
    `to_conv()` converts back.

    Shape: [N, in, H, W] or [in, H, W] -> [N, out, Ho, Wo] or [out, Ho, Wo].
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, input_mean_norm: bool = False,
                 *, init: str = "default", momentum: float = 0.1, device=None, dtype=None):
        super().__init__()
        op = "nn.GeometricReLUConv2d"
        self.kernel_size = layer.pair(op, "kernel_size", kernel_size, 1)
        self.stride = layer.pair(op, "stride", stride, 1)
        self.dilation = layer.pair(op, "dilation", dilation, 1)
        self.padding = layer.conv2d_padding(op, padding, self.kernel_size, self.stride,
                                                self.dilation)
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(f"fastact.{op}: in_channels ({in_channels}) and out_channels "
                             f"({out_channels}) must be divisible by groups ({groups})")
        fan_in = in_channels // groups * self.kernel_size[0] * self.kernel_size[1]
        if fan_in < 2:
            raise ValueError(f"fastact.{op}: the fan-in in_channels/groups*kh*kw must be >= 2 (a "
                             f"direction in R^n, n >= 2), got {fan_in}")
        factory = {"device": device, "dtype": dtype}
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.groups = groups
        self.input_mean_norm = input_mean_norm
        self.init = _check_init("GeometricReLUConv2d", init)
        self.momentum = _check_momentum(momentum)
        self.theta = nn.Parameter(torch.empty(out_channels, fan_in - 1, **factory))
        self.radius = nn.Parameter(torch.empty(out_channels, **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self.register_buffer("running_mean",
                             torch.zeros(in_channels, **factory) if input_mean_norm else None)
        self.reset_parameters()

    def _filter_shape(self):
        return (self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    def reset_parameters(self) -> None:
        _initial_weight(self, self._filter_shape(), self.theta.shape[1] + 1, self.out_channels)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        if self.running_mean is not None:
            self.running_mean.zero_()

    @classmethod
    def from_conv2d(cls, conv: nn.Conv2d, input_mean_norm: bool = False) -> "GeometricReLUConv2d":
        """The GmP layer computing relu(conv(x)) (zero padding): radius = |w|, U = w / |w|,
        bias = b / |w| per output channel."""
        if conv.padding_mode != "zeros":
            raise ValueError("fastact.nn.GeometricReLUConv2d.from_conv2d: only "
                             f"padding_mode='zeros' is supported, got {conv.padding_mode!r}")
        weight = conv.weight.detach()
        module = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                     conv.padding, conv.dilation, conv.groups, bias=conv.bias is not None,
                     input_mean_norm=input_mean_norm, device=weight.device, dtype=weight.dtype)
        _init_from_weight(module, weight.reshape(conv.out_channels, -1))
        if conv.bias is not None:
            with torch.no_grad():
                module.bias.copy_(_bias_from(conv.bias.detach(), module.radius, "from_conv2d"))
        return module

    def to_conv(self) -> nn.Sequential:
        """nn.Sequential(nn.Conv2d, nn.ReLU) computing this layer's function (to rounding):
        filters radius * U, bias radius * bias, the same stride, padding, dilation and groups.
        With input_mean_norm=True an InputMeanNorm (channel_dim=-3) with this layer's running
        mean and momentum comes first: the mean is subtracted before the zero padding, as here.
        ValueError where a radius is negative."""
        _check_radius(self, "to_conv")
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                         self.padding, self.dilation, self.groups, bias=self.bias is not None,
                         device=self.theta.device, dtype=self.theta.dtype)
        return _unfold(self, conv, channel_dim=-3)

    @property
    def weight(self) -> Tensor:
        """The effective filters radius * U, [out, in/groups, kh, kw] (computed; read-only)."""
        u = sphere.spherical_to_cartesian(self.theta).view(self._filter_shape())
        return self.radius.view(-1, 1, 1, 1) * u

    def forward(self, x: Tensor) -> Tensor:
        return _geometric_relu_conv2d_forward(
            x, self.theta, self.radius, self.bias, self.running_mean, self.momentum,
            self.training, self.in_channels, self.kernel_size, self.stride, self.padding,
            self.dilation, self.groups)

    def extra_repr(self) -> str:
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        return (text + f", bias={self.bias is not None}, input_mean_norm={self.input_mean_norm}"
                + _momentum_repr(self))
