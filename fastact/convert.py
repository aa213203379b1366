"""fastact.convert: find every activation of a model (modules, functional calls in forward methods,
activation attributes) and swap its ReLUs, or its Linear/Conv2d + ReLU pairs, for fastact's."""

from __future__ import annotations

import copy
import itertools
import math
import operator
import warnings
from dataclasses import dataclass, field
from functools import cache

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from fastact import _rewrite, reference

__all__ = ["convert", "Conversion", "Change"]

RELU_CHOICES = ("hat", "dct")
LINEAR_RELU_CHOICES = ("geometric",)

# relu="dct" without example inputs assumes inputs of about unit scale (as after a BatchNorm or
# LayerNorm: |x| < 4 is 99.99% of a standard normal); with them, each site's own range.
DEFAULT_DCT_DOMAIN = (-4.0, 4.0)
DCT_TOLERANCE = 0.02  # of the site's input range ...
DCT_COVERAGE = 0.999  # ... on this fraction of its example inputs
DCT_MARGIN = 0.05  # the domain extends the example range by this fraction of it on each side
DCT_NUM_COEFFS = (6, 8, 12, 16, 24, 32, 48)  # the smallest that meets the tolerance is used
SAMPLES_PER_CALL = 2**16  # example values kept per call of a site (for the tolerance check)
SAMPLES_PER_SITE = 2**18  # at most (the check evaluates [samples, K] cosines in float64)

# --- what is an activation ---------------------------------------------------------------------
RELU = "ReLU"
_RELU_FUNCTIONS = {F.relu: "F.relu", torch.relu: "torch.relu", torch.relu_: "torch.relu_"}
_RELU_METHODS = {"relu": "Tensor.relu", "relu_": "Tensor.relu_"}
_OTHER_NAMES = ("relu6", "gelu", "silu", "mish", "leaky_relu", "elu", "selu", "celu", "prelu",
                "rrelu", "hardswish", "hardsigmoid", "hardtanh", "softplus", "softsign",
                "sigmoid", "tanh", "logsigmoid", "glu")
_OTHER_MODULES = (nn.ReLU6, nn.GELU, nn.SiLU, nn.Mish, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU,
                  nn.SELU, nn.CELU, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus,
                  nn.Softsign, nn.Sigmoid, nn.Tanh, nn.LogSigmoid, nn.GLU, nn.Threshold,
                  nn.Tanhshrink, nn.Hardshrink, nn.Softshrink)
_NOT_RELU = {
    "ReLU6": "ReLU6 clips at 6, it is not a ReLU",
    "LeakyReLU": "LeakyReLU has a negative slope, it is not a ReLU",
    "PReLU": "PReLU has a learned negative slope, it is not a ReLU",
}


def _other_activations() -> tuple[dict, dict]:
    functions, methods = {}, {}
    for name in _OTHER_NAMES:
        for variant in (name, name + "_"):
            for namespace, prefix in ((F, "F"), (torch, "torch")):
                function = getattr(namespace, variant, None)
                if callable(function) and function not in _RELU_FUNCTIONS:
                    functions.setdefault(function, f"{prefix}.{variant}")
            if hasattr(torch.Tensor, variant):
                methods[variant] = f"Tensor.{variant}"
    return functions, methods


_FUNCTIONS, _METHODS = _other_activations()
_FUNCTIONS.update(_RELU_FUNCTIONS)
_METHODS.update(_RELU_METHODS)


def _function_name(value) -> str | None:
    try:
        return _FUNCTIONS.get(value)
    except TypeError:  # unhashable
        return None


def _module_name(module: nn.Module) -> str | None:
    """"ReLU" for a ReLU module, the class name for another activation module (a ReLU subclass
    with its own forward included), else None."""
    if type(module) is nn.ReLU or (isinstance(module, nn.ReLU)
                                   and type(module).forward is nn.ReLU.forward):
        return RELU
    if isinstance(module, (nn.ReLU, *_OTHER_MODULES)):
        return type(module).__name__
    return None


def _is_relu(name: str) -> bool:
    return name == RELU or name in _RELU_FUNCTIONS.values() or name in _RELU_METHODS.values()


def _not_relu_reason(name: str) -> str:
    reason = _NOT_RELU.get(name, f"{name} is not a ReLU")
    return f"{reason} (fastact converts nn.ReLU, F.relu, torch.relu and Tensor.relu)"


def _short(module: nn.Module, limit: int = 60) -> str:
    """repr(module) cut after its first arguments when longer than `limit` (the summary's
    layer lines: which layer, not all its settings)."""
    text = repr(module)
    if len(text) <= limit or "\n" in text:
        return text if "\n" not in text else f"{type(module).__name__}(...)"
    cut = text.rfind(", ", 0, limit - 5)
    return text[:cut] + ", ...)" if cut > 0 else text


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


# --- the survey: every call of an activation, with the graph around it -------------------------
@dataclass(eq=False)
class _Owner:
    """A module whose forward was traced (or tried): `path` in the model, its Traced graph."""

    path: str
    module: nn.Module
    traced: _rewrite.Traced
    rank: int = 0  # where the module runs among all calls (walk sites and summary order)
    position: dict = field(default_factory=dict)  # node -> rank of the call
    rewrite: bool = False  # the graph was edited: its forward gets replaced


@dataclass(eq=False)
class _Site:
    """One call of an activation: a module (or activation attribute) called by its owner's
    forward, or a function / method called in it. node is None where the owner did not trace
    (found by the module walk) and owner is None for a module no traced forward calls."""

    owner: _Owner | None
    node: fx.Node | None
    name: str  # "ReLU", "GELU", "F.relu", "Tensor.relu", ...
    target: str | None  # module sites: the module's path relative to the owner
    text: str  # what it is, as printed
    inplace: bool = False
    call: int = 1
    calls: int = 1
    label: str = ""
    path: str = ""  # module sites: the module's path in the model

    @property
    def relu(self) -> bool:
        return _is_relu(self.name)

    @property
    def key(self) -> tuple:
        """Its place in the order the model runs (as far as the traces tell)."""
        if self.owner is None:
            return (math.inf,)
        return (self.owner.position[self.node] if self.node is not None else self.owner.rank,)


_CONTAINERS = (nn.ModuleList, nn.ModuleDict, nn.ParameterList, nn.ParameterDict)


def _fastact_module(module: nn.Module) -> bool:
    import fastact.nn as fnn

    return isinstance(module, (fnn.Hat, fnn.DCTActivation, fnn.InputMeanNorm, fnn.GeometricReLU,
                               fnn.GeometricReLUConv2d, _Recorder))


def _function_attributes(module: nn.Module) -> list[str]:
    return [name for name, value in vars(module).items() if _function_name(value)]


def _traceable(module: nn.Module, attributes: list[str]) -> bool:
    """Whether the module's own forward may call activations: not a container, an activation,
    a fastact module, a ScriptModule, or a childless torch.nn layer."""
    if isinstance(module, _CONTAINERS) or isinstance(module, torch.jit.ScriptModule):
        return False
    if _module_name(module) is not None or _fastact_module(module):
        return False
    builtin = type(module).__module__.startswith("torch.nn.")
    return not (builtin and next(module.children(), None) is None and not attributes)


def _unalias_activations(model: nn.Module) -> None:
    """A parameterless activation module registered at several places (nn.Sequential(relu, ...,
    relu)) gets a copy at each but the first: the trace then tells the places apart (it names a
    module by its first path), and each can be converted on its own."""
    seen = set()
    for module in list(model.modules()):
        for name, child in list(module._modules.items()):
            if child is None or _module_name(child) is None:
                continue
            if id(child) in seen and next(child.parameters(), None) is None:
                module._modules[name] = copy.deepcopy(child)
            seen.add(id(child))


def _graph_sites(owner: _Owner, attributes: list[str]) -> list[_Site]:
    sites = []
    for node in owner.traced.graph.nodes:
        if node.op == "call_module":
            module = owner.traced.modules[node]
            if node.target in attributes:
                name = _function_name(module.function)
                sites.append(_Site(owner, node, name, node.target,
                                   f"{name} (attribute {node.target})"))
            elif (name := _module_name(module)) is not None:
                sites.append(_Site(owner, node, name, node.target, repr(module),
                                   bool(getattr(module, "inplace", False))))
        elif node.op in ("call_function", "call_method"):
            name = _function_name(node.target) if node.op == "call_function" else \
                _METHODS.get(node.target)
            if name is None:
                continue
            inplace = name.endswith("_") or node.kwargs.get("inplace") is True or (
                len(node.args) > 1 and node.args[1] is True and name.endswith("relu"))
            sites.append(_Site(owner, node, name, None,
                               f"{name}({'inplace=True' if inplace else ''})", inplace))
    return sites


def _walk_sites(owner: _Owner, attributes: list[str]) -> list[_Site]:
    """The activation modules and attributes of an owner whose forward did not trace."""
    def children(module: nn.Module, prefix: str):
        for name, child in module.named_children():
            if isinstance(child, _CONTAINERS):
                yield from children(child, _join(prefix, name))
            else:
                yield _join(prefix, name), child

    sites = [_Site(owner, None, name, target, repr(child), bool(getattr(child, "inplace", False)))
             for target, child in children(owner.module, "")
             if (name := _module_name(child)) is not None]
    for attribute in attributes:
        name = _function_name(getattr(owner.module, attribute))
        sites.append(_Site(owner, None, name, attribute, f"{name} (attribute {attribute})"))
    return sites


def _survey(model: nn.Module) -> tuple[list[_Owner], list[_Site]]:
    _unalias_activations(model)
    owners, sites = [], []
    for path, module in model.named_modules():
        attributes = _function_attributes(module)
        if not _traceable(module, attributes):
            continue
        owner = _Owner(path, module, _rewrite.trace(module, attributes))
        owners.append(owner)
        if owner.traced.graph is not None:
            sites += _graph_sites(owner, attributes)
        else:
            sites += _walk_sites(owner, attributes)
    _rank(owners)
    for site in sites:
        if site.target is not None:
            site.path = _join(site.owner.path, site.target)
    seen = {site.path for site in sites if site.target is not None}
    for path, module in model.named_modules(remove_duplicate=False):
        if path not in seen and path and (name := _module_name(module)) is not None:
            sites.append(_Site(None, None, name, path.rpartition(".")[2], repr(module), path=path))
    sites.sort(key=lambda site: site.key)
    by_path: dict[str, list[_Site]] = {}
    for site in sites:
        if site.target is not None:
            by_path.setdefault(site.path, []).append(site)
    for group in by_path.values():
        for call, site in enumerate(group, 1):
            site.call, site.calls = call, len(group)
    functions: dict[tuple, list[_Site]] = {}
    for site in sites:
        if site.target is None:
            functions.setdefault((id(site.owner), site.name), []).append(site)
    for site in sites:
        if site.target is not None:
            site.label = site.path + (f" (call {site.call} of {site.calls})" if site.calls > 1
                                      else "")
        else:
            group = functions[(id(site.owner), site.name)]
            number = f" #{group.index(site) + 1}" if len(group) > 1 else ""
            site.label = f"{site.owner.path or '(model)'}.forward: {site.name}{number}"
    return owners, sites


def _rank(owners: list[_Owner]) -> None:
    """Numbers every call in the order the model runs: each graph's nodes in order, a called
    owner's graph where it is called (an untraced one's submodules in module order); owners no
    traced forward calls after, in module order."""
    counter = itertools.count()
    by_module = {id(owner.module): owner for owner in owners}
    visited = set()

    def visit(owner: _Owner) -> None:
        visited.add(id(owner))
        owner.rank = next(counter)
        if owner.traced.graph is None:
            for inner in owners:
                if inner.path.startswith(_join(owner.path, "")) and id(inner) not in visited:
                    visit(inner)
            return
        for node in owner.traced.graph.nodes:
            owner.position[node] = next(counter)
            callee = by_module.get(id(owner.traced.modules.get(node)))
            if callee is not None and id(callee) not in visited:
                visit(callee)

    for owner in owners:
        if id(owner) not in visited:
            visit(owner)


# --- folding Linear/Conv2d (+ BatchNorm) + ReLU into GmP -----------------------------------------
def _plain(module: nn.Module, cls: type) -> bool:
    """An instance of cls (nn.Linear, nn.Conv2d) that computes what cls computes."""
    return isinstance(module, cls) and type(module).forward is cls.forward and (
        cls is not nn.Conv2d or type(module)._conv_forward is nn.Conv2d._conv_forward)


def _describe(owner: _Owner, node) -> str:
    if not isinstance(node, fx.Node):
        return repr(node)
    if node.op == "call_module":
        module = owner.traced.modules[node]
        return f"{_join(owner.path, node.target)} ({type(module).__name__})"
    if node.op == "placeholder":
        return f"the input {node.target!r} of {type(owner.module).__name__}.forward"
    target = getattr(node.target, "__name__", node.target)
    return f"{target} in {type(owner.module).__name__}.forward"


@dataclass(eq=False)
class _Fold:
    """relu(bn(layer(x))) (bn optional) as one GmP module at the layer's path."""

    site: _Site
    layer_path: str
    layer: nn.Module
    bn_path: str | None
    bn: nn.Module | None
    geometric: nn.Module
    templates: dict[str, nn.Module]  # path -> the original module on the meta device


def _fold_batchnorm(layer: nn.Module, bn: nn.Module) -> nn.Module:
    """A copy of `layer` computing bn(layer(x)) with bn's running statistics (eval mode)."""
    folded = copy.deepcopy(layer)
    with torch.no_grad():
        scale = torch.rsqrt(bn.running_var.double() + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight.double()
        shift = -bn.running_mean.double() * scale
        if bn.bias is not None:
            shift = shift + bn.bias.double()
        weight = layer.weight.double() * scale.view(-1, *[1] * (layer.weight.dim() - 1))
        bias = shift if layer.bias is None else layer.bias.double() * scale + shift
        folded.weight = nn.Parameter(weight.to(layer.weight.dtype))
        folded.bias = nn.Parameter(bias.to(layer.weight.dtype))
    return folded


def _geometric(layer: nn.Module) -> nn.Module:
    import fastact.nn as fnn

    if isinstance(layer, nn.Linear):
        if layer.in_features < 2:
            raise ValueError("a GmP unit needs a fan-in >= 2, this Linear has "
                             f"in_features={layer.in_features}")
        return fnn.GeometricReLU.from_linear(layer)
    fan_in = layer.in_channels // layer.groups * layer.kernel_size[0] * layer.kernel_size[1]
    if fan_in < 2:
        raise ValueError("a GmP unit needs a fan-in >= 2, this Conv2d has "
                         f"in_channels/groups*kh*kw={fan_in}")
    return fnn.GeometricReLUConv2d.from_conv2d(layer)


# Layers whose forward does not trace but is known: the input of the activation attribute is the
# output of this Linear, which nothing else uses (their feed-forward block).
_KNOWN_PRODUCERS = {(nn.TransformerEncoderLayer, "activation"): "linear1",
                    (nn.TransformerDecoderLayer, "activation"): "linear1"}


def _known_producer(site: _Site) -> tuple[str, nn.Module] | None:
    for (cls, attribute), name in _KNOWN_PRODUCERS.items():
        if site.owner is not None and isinstance(site.owner.module, cls) \
                and site.target == attribute:
            return _join(site.owner.path, name), getattr(site.owner.module, name)
    return None


def _plan_fold(site: _Site, calls: dict[str, int]) -> _Fold | str:
    """The GmP fold of the ReLU at `site` with the layer (and BatchNorm) feeding it, or why not."""
    owner = site.owner
    if site.node is None:
        known = _known_producer(site)
        if known is not None and _plain(known[1], nn.Linear):
            try:
                geometric = _geometric(known[1])
            except ValueError as error:
                return f"linear_relu: {str(error).removeprefix('fastact.nn: ')}"
            return _Fold(site, known[0], known[1], None, None, geometric,
                         {known[0]: copy.deepcopy(known[1]).to("meta")})
        where = "no traced forward calls it" if owner is None else \
            f"{type(owner.module).__name__}.forward did not trace, so what feeds it is not known"
        return f"linear_relu: {where}"
    source = site.node.args[0] if site.node.args else None
    chain = []
    if isinstance(source, fx.Node) and source.op == "call_module" and isinstance(
            owner.traced.modules[source], nn.modules.batchnorm._BatchNorm):
        chain.append(source)
        source = source.args[0] if source.args else None
    if not (isinstance(source, fx.Node) and source.op == "call_module"):
        return f"linear_relu: its input comes from {_describe(owner, source)}, not a Linear/Conv2d"
    chain.insert(0, source)
    layer = owner.traced.modules[source]
    kind = nn.Linear if _plain(layer, nn.Linear) else nn.Conv2d if _plain(layer, nn.Conv2d) \
        else None
    if kind is None:
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            return (f"linear_relu: {type(layer).__name__} at {_describe(owner, source)} has its "
                    "own forward")
        if isinstance(layer, nn.modules.conv._ConvNd):
            return (f"linear_relu: {type(layer).__name__} has no GmP form in fastact (nn.Linear "
                    "and nn.Conv2d only)")
        return f"linear_relu: its input comes from {_describe(owner, source)}, not a Linear/Conv2d"
    bn = owner.traced.modules[chain[1]] if len(chain) > 1 else None
    names = " -> ".join(type(owner.traced.modules[n]).__name__ for n in chain)
    if bn is not None:
        expected = nn.BatchNorm1d if kind is nn.Linear else nn.BatchNorm2d
        if type(bn) is not expected:
            return (f"linear_relu: {names} -> ReLU: only {kind.__name__} -> "
                    f"{expected.__name__} folds")
        if bn.running_mean is None:
            return f"linear_relu: {names} -> ReLU: the BatchNorm keeps no running statistics"
        if bn.training:
            return (f"linear_relu: {names} -> ReLU in training mode: BatchNorm uses batch "
                    "statistics (call model.eval() first to fold its running statistics into "
                    "a GmP layer)")
    for node in chain:
        path = _join(owner.path, node.target)
        if len(node.users) != 1:
            return f"linear_relu: the output of {path} is used elsewhere too"
        if calls.get(path, 1) != 1:
            return f"linear_relu: {path} is called at {calls[path]} places"
    reason = _inplace_reason(site)
    if reason:
        return f"linear_relu: {reason}"
    try:
        geometric = _geometric(_fold_batchnorm(layer, bn) if bn is not None else layer)
    except ValueError as error:
        return f"linear_relu: {str(error).removeprefix('fastact.nn: ')}"
    paths = [_join(owner.path, node.target) for node in chain]
    return _Fold(site, paths[0], layer, paths[1] if bn is not None else None, bn, geometric,
                 {path: copy.deepcopy(owner.traced.modules[node]).to("meta")
                  for path, node in zip(paths, chain)})


def _inplace_reason(site: _Site) -> str | None:
    """Why an in-place ReLU cannot become an out-of-place module: the forward reads its input
    again after it (relying on the mutation), or uses only the mutation."""
    node = site.node
    if not site.inplace or node is None or not node.args or not isinstance(node.args[0], fx.Node):
        return None
    later = [user for user in node.args[0].users
             if user is not node and site.owner.position[user] > site.owner.position[node]]
    if later or not node.users:
        return ("it is in place and the forward reads its input again after it (relies on the "
                "mutation)")
    return None


# --- relu="dct": fitting each site's range ---------------------------------------------------
class _Recorder(nn.Module):
    """Stands at a site while the example inputs run: relu(x), recording x's range, a sample of
    its values and its shapes."""

    def __init__(self, channels: tuple[int, int] | None):
        super().__init__()
        self.channels = channels
        self.minimum, self.maximum = math.inf, -math.inf
        self.samples: list[torch.Tensor] = []
        self.shapes: set[tuple[int, ...]] = set()
        self.generator = torch.Generator().manual_seed(0)
        self.device = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = x.detach().flatten()
        values = values[torch.isfinite(values)]
        if values.numel():
            self.minimum = min(self.minimum, values.min().item())
            self.maximum = max(self.maximum, values.max().item())
            if values.numel() > SAMPLES_PER_CALL:
                index = torch.randint(values.numel(), (SAMPLES_PER_CALL,),
                                      generator=self.generator)
                values = values[index.to(values.device)]
            self.samples.append(values.double().cpu())
        self.shapes.add(tuple(x.shape))
        self.device = x.device
        return torch.relu(x)


def _channel_layout(recorder: _Recorder) -> tuple[int, int]:
    """(channels, channel_dim) of the recorded inputs: the producer's where the shapes agree,
    else dim 1 of 2-, 4- and 5-d inputs ([N, C], [N, C, H, W], ...), else one shared series."""
    shapes = recorder.shapes
    if recorder.channels is not None:
        channels, dim = recorder.channels
        if all(len(s) > (dim if dim >= 0 else -dim - 1) and s[dim] == channels for s in shapes):
            return channels, dim
    ranks = {len(s) for s in shapes}
    if len(ranks) == 1 and ranks.pop() in (2, 4, 5) and len({s[1] for s in shapes}) == 1:
        return next(iter(shapes))[1], 1
    return 1, 1


def _relu_fit(num_coeffs: int, domain: tuple[float, float]) -> torch.Tensor:
    from fastact.nn import fit_coeffs

    return fit_coeffs(torch.relu, num_coeffs, domain=domain, frequencies="all")


def _fit_error(values: torch.Tensor, domain: tuple[float, float], num_coeffs: int) -> float:
    """The DCT_COVERAGE quantile of |fit(x) - relu(x)| over `values` (float64, clamp boundary)."""
    fitted = reference.dct_activation(values, _relu_fit(num_coeffs, domain), channel_dim=0,
                                      domain=domain, frequencies="all", boundary="clamp")
    return torch.quantile((fitted - torch.relu(values)).abs(), DCT_COVERAGE).item()


def _choose_num_coeffs(values: torch.Tensor, domain: tuple[float, float],
                       scale: float) -> tuple[int, float]:
    """The fewest coefficients whose fit is within DCT_TOLERANCE * scale on DCT_COVERAGE of
    `values` (the most coefficients if none is), and that fit's error over scale."""
    for num_coeffs in DCT_NUM_COEFFS:
        error = _fit_error(values, domain, num_coeffs) / scale
        if error <= DCT_TOLERANCE:
            break
    return num_coeffs, error


@cache
def _default_num_coeffs() -> tuple[int, float]:
    lo, hi = DEFAULT_DCT_DOMAIN
    grid = torch.linspace(lo, hi, 4001, dtype=torch.float64)
    return _choose_num_coeffs(grid, DEFAULT_DCT_DOMAIN, hi - lo)


def _dct(channels: tuple[int, int], num_coeffs: int, domain, like) -> nn.Module:
    import fastact.nn as fnn

    return fnn.DCTActivation(channels[0], num_coeffs, channel_dim=channels[1], domain=domain,
                             frequencies="all", boundary="clamp", init="relu", **like)


def _fitted_dct(recorder: _Recorder, like: dict) -> tuple[nn.Module, float | None]:
    """The DCT fitted to the recorded range, and its error over the range (None: no example
    input reached the site, which gets the default domain)."""
    channels = _channel_layout(recorder) if recorder.shapes else (recorder.channels or (1, 1))
    if not recorder.samples:
        return _dct(channels, _default_num_coeffs()[0], DEFAULT_DCT_DOMAIN, like), None
    lo, hi = recorder.minimum, recorder.maximum
    width = hi - lo if hi > lo else max(abs(hi), 1.0)
    domain = _outward(lo - DCT_MARGIN * width, hi + DCT_MARGIN * width)
    values = torch.cat(recorder.samples)
    if values.numel() > SAMPLES_PER_SITE:
        values = values[torch.randperm(values.numel(), generator=recorder.generator)
                        [:SAMPLES_PER_SITE]]
    num_coeffs, error = _choose_num_coeffs(values, domain, width)
    return _dct(channels, num_coeffs, domain, like), error


def _outward(lo: float, hi: float) -> tuple[float, float]:
    """(lo, hi) rounded outward to 3 significant digits of the width (a readable domain)."""
    digits = 2 - math.floor(math.log10(hi - lo))
    quantum = 10.0 ** -digits
    return (round(math.floor(lo / quantum) * quantum, max(digits, 0)),
            round(math.ceil(hi / quantum) * quantum, max(digits, 0)))


def _example_batches(example_inputs) -> list[tuple]:
    """example_inputs as a list of positional-argument tuples (one per call of the model)."""
    def arguments(batch) -> tuple:
        return batch if isinstance(batch, tuple) else (batch,)

    if example_inputs is None:
        return []
    batches = example_inputs if isinstance(example_inputs, list) else [example_inputs]
    batches = [arguments(batch) for batch in batches]
    if not batches or not all(isinstance(a, torch.Tensor) for batch in batches for a in batch):
        raise TypeError("fastact.convert: example_inputs must be a tensor, a tuple of the model's "
                        "positional tensor arguments, or a list of those (one per call), got "
                        f"{type(example_inputs).__name__}")
    return batches


def _run_examples(model: nn.Module, batches: list[tuple]) -> None:
    """Runs the model on the examples as it is (its mode), leaving its buffers (BatchNorm
    statistics) and the random number generators as they were."""
    buffers = [(b, b.clone()) for b in model.buffers()]
    devices = sorted({a.device.index or 0 for batch in batches for a in batch
                      if a.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        for batch in batches:
            model(*batch)
    with torch.no_grad():
        for buffer, saved in buffers:
            buffer.copy_(saved)


def _factory(model: nn.Module) -> dict:
    """device and dtype for new modules: those of the model's first floating parameter."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return {"device": tensor.device, "dtype": tensor.dtype}
    return {}


def _channels_of(owner: _Owner, node) -> tuple[int, int] | None:
    """(channels, channel_dim) of the tensor `node` computes, from the module that makes it
    (through residual additions, dropout and identity), or None."""
    import fastact.nn as fnn

    if not isinstance(node, fx.Node):
        return None
    if node.op == "call_module":
        module = owner.traced.modules[node]
        if isinstance(module, (nn.Linear, fnn.GeometricReLU)):
            return module.out_features, -1
        if isinstance(module, (nn.modules.conv._ConvNd, fnn.GeometricReLUConv2d)):
            return module.out_channels, 1
        if isinstance(module, nn.modules.batchnorm._NormBase):
            return module.num_features, 1
        if isinstance(module, nn.GroupNorm):
            return module.num_channels, 1
        if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) == 1:
            return module.normalized_shape[0], -1
        if isinstance(module, (nn.Identity, nn.modules.dropout._DropoutNd)) and node.args:
            return _channels_of(owner, node.args[0])
        return None
    if node.op == "call_function" and node.target in (operator.add, operator.iadd, torch.add,
                                                      operator.sub, operator.isub, torch.sub):
        for argument in node.args:
            if (found := _channels_of(owner, argument)) is not None:
                return found
    return None


def _site_channels(site: _Site) -> tuple[int, int] | None:
    """(channels, channel_dim) of the input at `site`, or None where not known."""
    if site.node is not None and site.node.args:
        return _channels_of(site.owner, site.node.args[0])
    known = _known_producer(site)
    if known is not None and isinstance(known[1], nn.Linear):
        return known[1].out_features, -1
    return None


# --- the result ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Change:
    """One line of the summary: where (a module path, or a call in a forward), what was there,
    and what it became (or, with skipped=True, why it was left as it was)."""

    path: str
    before: str
    after: str
    skipped: bool = False


@dataclass
class Conversion:
    """What fastact.convert returns: the converted model (the same object when inplace=True),
    every change and every activation left with its reason, and notes; print it for the table.
    load_state_dict loads a checkpoint of the unconverted model into the converted one."""

    model: nn.Module
    changes: list[Change]
    notes: list[str] = field(default_factory=list)
    found: dict[str, int] = field(default_factory=dict)  # activation name -> calls found
    _folds: list[_Fold] = field(default_factory=list, repr=False)
    _added: list[str] = field(default_factory=list, repr=False)  # paths of modules fastact added

    @property
    def converted(self) -> list[Change]:
        return [c for c in self.changes if not c.skipped]

    @property
    def skipped(self) -> list[Change]:
        return [c for c in self.changes if c.skipped]

    def __str__(self) -> str:
        total = sum(self.found.values())
        if not total and not self.changes:
            lines = ["fastact.convert: no activation found (nn.ReLU and other activation "
                     "modules, F.relu / torch.relu / Tensor.relu calls, activation attributes)"]
        else:
            kinds = ", ".join(f"{name} x{count}" for name, count in self.found.items())
            left = len([c for c in self.skipped])
            lines = [f"fastact.convert: {total} activation call(s) found ({kinds}); "
                     f"{total - left} converted, {left} left"]
            width = max(len(c.path) for c in self.changes)
            for c in self.changes:
                arrow = "-- left:" if c.skipped else "->"
                lines.append(f"  {c.path:<{width}}  {c.before} {arrow} {c.after}")
        if self.notes:
            lines.append("notes:")
            lines += [f"  - {note}" for note in self.notes]
        return "\n".join(lines)

    def load_state_dict(self, state_dict: dict, strict: bool = True):
        """Loads a state dict of the model before conversion into the converted model: layers
        folded into GmP modules are rebuilt from their weights (and BatchNorm statistics) and
        converted again, exactly as fastact.convert did; every other entry loads as it is.
        Parameters fastact added (DCT coefficients, new activation modules) keep their values.
        Note that relu="dct" fitted to example inputs fitted the ranges of the weights the
        model had then: for that, load the checkpoint first and convert after.
        Returns torch's (missing_keys, unexpected_keys), those of added modules left out."""
        state = dict(state_dict)
        for fold in self._folds:
            sources = {}
            for path, template in fold.templates.items():
                prefix = path + "."
                device = next(self.model.get_submodule(fold.layer_path).parameters()).device
                module = copy.deepcopy(template).to_empty(device=device)
                module.load_state_dict({k[len(prefix):]: state.pop(k) for k in list(state)
                                        if k.startswith(prefix)})
                sources[path] = module
            layer = sources[fold.layer_path]
            if fold.bn_path is not None:
                layer = _fold_batchnorm(layer, sources[fold.bn_path])
            geometric = _geometric(layer)
            target = self.model.get_submodule(fold.layer_path)
            target.load_state_dict(geometric.state_dict())
            for key in geometric.state_dict():
                state[_join(fold.layer_path, key)] = target.state_dict()[key]
        result = self.model.load_state_dict(state, strict=False)
        added = tuple(path + "." for path in self._added)
        missing = [k for k in result.missing_keys if not k.startswith(added)]
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(f"fastact.Conversion.load_state_dict: missing keys {missing}, "
                               f"unexpected keys {result.unexpected_keys}")
        return type(result)(missing, result.unexpected_keys)


# --- convert ---------------------------------------------------------------------------------
def convert(model: nn.Module, *, relu: str | None = None, linear_relu: str | None = None,
            example_inputs=None, inplace: bool = False) -> Conversion:
    """Finds every activation of `model` and replaces its ReLUs by fastact's.

    What is found: activation modules (nn.ReLU, and ReLU6, GELU, SiLU, ... which are listed and
    left), functional calls in forward methods (F.relu, torch.relu, Tensor.relu, F.gelu, ...) and
    activation attributes (TransformerEncoderLayer's `activation = F.relu`). Each module's own
    forward is traced with torch.fx (the modules it calls are leaves), so ReLU modules called at
    several places, in-place ReLUs and which layer feeds each ReLU are known; a forward that
    does not trace is searched by the module walk (its submodules and attributes only) and listed
    in the notes.

    linear_relu="geometric": an nn.Linear or nn.Conv2d whose output only feeds a ReLU (directly,
    or through a BatchNorm in eval mode, whose running statistics are folded into it) becomes one
    fastact.nn.GeometricReLU / GeometricReLUConv2d computing the same function (radius |w|,
    direction w / |w|, bias b / |w|; equal to rounding), and the ReLU becomes nn.Identity (or its
    call leaves the forward).
    What GmP cannot represent (a fan-in of 1, padding_mode other than "zeros", a zero weight row
    with a positive bias, Conv1d, a BatchNorm in training mode, a layer whose output is used
    elsewhere) is left, with the reason.
    relu="hat": every remaining ReLU becomes fastact.nn.Hat (a bump on [0, 2], not a ramp: a
    different function, to be trained).
    relu="dct": every remaining ReLU becomes a fastact.nn.DCTActivation fitted to relu
    (frequencies="all", boundary="clamp": beyond its domain it holds its end value), one
    learnable series per channel where the channel count is known, all starting from the fit.
    With `example_inputs` (a tensor, a tuple of the model's positional arguments, or a list of
    those), the model runs on them as it is (its mode; buffers and random state are restored)
    and each site gets the domain of the range its inputs had (5% wider on each side) and the
    fewest coefficients (6 to 48) whose fit is within 2% of that range on 99.9% of its example
    inputs. Without them, every site assumes inputs in (-4, 4) (unit-scale pre-activations, as
    after BatchNorm) and a warning says so.
    A ReLU called in a forward (F.relu, ...), one module called at several places that needs a
    module per call, or a ReLU folded away that way is changed in the forward's graph, and the
    module gets the graph's code as its forward (a subclass of its class, made for it: its
    attributes, parameters and state_dict keys stay). A forward with optional arguments, or one
    that depends on self.training, is not rewritten (those ReLUs are left, with the reason).
    inplace=False (default) converts a deep copy and leaves `model` as it was.

    Returns a Conversion: `.model`, `.changes` (print it for the table: every activation found,
    what it became or why it was left), `.notes`, and `.load_state_dict(checkpoint)` for a
    checkpoint of the unconverted model.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fastact.convert: model must be a torch.nn.Module, got "
                        f"{type(model).__name__}")
    if relu is not None and relu not in RELU_CHOICES:
        raise ValueError(f"fastact.convert: relu must be one of {RELU_CHOICES} or None, got "
                         f"{relu!r}")
    if linear_relu is not None and linear_relu not in LINEAR_RELU_CHOICES:
        raise ValueError(f"fastact.convert: linear_relu must be one of {LINEAR_RELU_CHOICES} or "
                         f"None, got {linear_relu!r}")
    if not isinstance(inplace, bool):
        raise TypeError(f"fastact.convert: inplace must be a bool, got {inplace!r}")
    batches = _example_batches(example_inputs)
    if batches and relu != "dct":
        raise ValueError("fastact.convert: example_inputs are used by relu='dct' only, got "
                         f"relu={relu!r}")
    if not inplace:
        model = copy.deepcopy(model)
    return _Converter(model, relu, linear_relu, batches).run()


class _Converter:
    def __init__(self, model: nn.Module, relu, linear_relu, batches):
        self.model, self.relu, self.linear_relu, self.batches = model, relu, linear_relu, batches
        self.entries: list[tuple[tuple, list]] = []  # (sort key, [path, before, after, left])
        self.notes: list[str] = []
        self.folds: list[_Fold] = []
        self.added: list[str] = []
        self.recorders: dict[_Recorder, str] = {}  # recorder -> its path in the model
        self.fitted: dict[nn.Module, nn.Module] = {}  # recorder -> the DCT fitted in its place
        self.like = _factory(model)

    def entry(self, key: tuple, path: str, before: str, after, left: bool = False,
              order: int = 0) -> None:
        """A summary line; `order` places a fold's layer (-2) and BatchNorm (-1) before the
        ReLU (0) at the same site."""
        self.entries.append(((*key, order), [path, before, after, left]))

    def leave(self, site: _Site, reason: str) -> None:
        self.entry(site.key, site.label, site.text, reason, left=True)

    def run(self) -> Conversion:
        owners, sites = _survey(self.model)
        module_calls: dict[int, int] = {}
        for owner in owners:
            for module in owner.traced.modules.values():
                module_calls[id(module)] = module_calls.get(id(module), 0) + 1
        calls = {path: module_calls.get(id(module), 0)
                 for path, module in self.model.named_modules(remove_duplicate=False)}
        actions: dict[_Site, object] = {}  # site -> _Fold, "replace" or a reason to leave it
        for site in sites:
            if not site.relu:
                actions[site] = _not_relu_reason(site.name)
            elif site.owner is None:
                actions[site] = f"no traced forward calls {site.path}"
            else:
                fold = _plan_fold(site, calls) if self.linear_relu else None
                if isinstance(fold, _Fold):
                    actions[site] = fold
                elif self.relu is not None:
                    actions[site] = _inplace_reason(site) or "replace"
                else:
                    actions[site] = fold or "relu and linear_relu are None: nothing asked"
        self.by_path: dict[str, list[_Site]] = {}
        for site in sites:
            if site.target is not None:
                self.by_path.setdefault(site.path, []).append(site)
        self.resolve(sites, actions)
        for site in sites:
            action = actions[site]
            if isinstance(action, str) and action != "replace":
                self.leave(site, action)
        for fold in (a for a in actions.values() if isinstance(a, _Fold)):
            self.apply_fold(fold)
        self.replace(sites, actions)
        for owner in owners:
            if owner.rewrite:
                _rewrite.install_forward(owner.module, owner.traced.graph)
        self.transformer_fast_paths()
        self.fit()
        self.write_notes(owners, sites, actions)
        self.entries.sort(key=lambda item: item[0])
        changes = [Change(path, before, self.after_text(after), left)
                   for _, (path, before, after, left) in self.entries]
        found: dict[str, int] = {}
        for site in sites:
            found[site.name] = found.get(site.name, 0) + 1
        return Conversion(self.model, changes, self.notes, found, self.folds, self.added)

    def after_text(self, after) -> str:
        if isinstance(after, tuple):  # (prefix, module[, suffix]): the module as it ended up
            prefix, module, *suffix = after
            return prefix + repr(self.fitted.get(module, module)) + "".join(suffix)
        return after

    # -- deciding ------------------------------------------------------------------------------
    def resolve(self, sites: list[_Site], actions: dict) -> None:
        """Where an action needs the forward rewritten (a call in forward, or the calls of one
        module converted differently) and the owner's forward cannot be, the sites are left,
        with the reason. (Every call of a module replaced alike needs no rewrite.)"""
        def active(site: _Site) -> bool:
            return isinstance(actions[site], _Fold) or actions[site] == "replace"

        def why(site: _Site) -> str:
            return f"would need the forward rewritten, but {site.owner.traced.blocker}"

        for site in sites:
            if site.target is None and site.node is not None and active(site) \
                    and site.owner.traced.blocker:
                actions[site] = f"{site.name} in {type(site.owner.module).__name__}.forward " \
                    + why(site)
        for path, calls in self.by_path.items():
            blocked = [s for s in calls if s.node is not None and s.owner.traced.blocker]
            if len(calls) > 1 and blocked and not all(actions[s] == "replace" for s in calls):
                for site in filter(active, calls):
                    actions[site] = (f"{path} is called at {len(calls)} places and converting "
                                     f"them differently {why(blocked[0])}")

    # -- doing ---------------------------------------------------------------------------------
    def apply_fold(self, fold: _Fold) -> None:
        site = fold.site
        owner_module = site.owner.module
        _set_submodule(self.model, fold.layer_path, fold.geometric)
        key = site.key
        via = ""
        if fold.bn is not None:
            _set_submodule(self.model, fold.bn_path, nn.Identity())
            via = f" (with {fold.bn_path}'s eval statistics)"
        self.entry(key, fold.layer_path, _short(fold.layer), _short(fold.geometric) + via,
                   order=-2)
        if fold.bn is not None:
            self.entry(key, fold.bn_path, _short(fold.bn),
                       f"Identity() (folded into {fold.layer_path})", order=-1)
        if site.target is not None and site.calls == 1:
            _set_submodule(owner_module, site.target, nn.Identity())
            self.entry(key, site.label, site.text, f"Identity() (folded into {fold.layer_path})")
        else:
            self.remove_node(site)
            self.entry(key, site.label, site.text,
                       f"removed from the forward (folded into {fold.layer_path})")
        self.folds.append(fold)

    def remove_node(self, site: _Site) -> None:
        node = site.node
        node.replace_all_uses_with(node.args[0])
        site.owner.traced.graph.erase_node(node)
        site.owner.rewrite = True

    def new_module(self, sites: list[_Site]) -> nn.Module:
        import fastact.nn as fnn

        if self.relu == "hat":
            return fnn.Hat()
        layouts = {_site_channels(site) for site in sites}
        channels = layouts.pop() if len(layouts) == 1 else None
        if self.batches:
            return _Recorder(channels)
        return _dct(channels or (1, 1), _default_num_coeffs()[0], DEFAULT_DCT_DOMAIN, self.like)

    def place(self, module: nn.Module, path: str) -> None:
        self.added.append(path)
        if isinstance(module, _Recorder):
            self.recorders[module] = path

    def replace(self, sites: list[_Site], actions: dict) -> None:
        """Gives every site whose action is "replace" its new module: at the module's path where
        that serves every call of it (or one module has to serve them all: Hat, which has no
        state, or a forward that cannot be rewritten), else a new attribute per call."""
        groups: dict[str, list[_Site]] = {}
        for site in sites:
            if actions[site] != "replace":
                continue
            if site.target is None:
                self.retarget(site, self.new_module([site]))
            else:
                groups.setdefault(site.path, []).append(site)
        for path, group in groups.items():
            calls = self.by_path[path]
            owner = group[0].owner
            left = any(isinstance(actions[s], str) and actions[s] != "replace" for s in calls)
            shared = not left and len(group) == len(calls) and (
                self.relu == "hat" or len(group) == 1
                or any(s.node is None or s.owner.traced.blocker for s in group))
            if shared:
                module = self.new_module(group)
                _set_submodule(owner.module, group[0].target, module)
                self.place(module, path)
                for site in group:
                    suffix = f" (one module for its {site.calls} calls)" if site.calls > 1 else ""
                    self.entry(site.key, site.label, site.text, ("", module, suffix))
                continue
            for site in group:
                module = self.new_module([site])
                if site is group[0] and not left:  # the first call keeps the module's path
                    _set_submodule(owner.module, site.target, module)
                    self.place(module, path)
                    self.entry(site.key, site.label, site.text, ("", module))
                else:
                    self.retarget(site, module)

    def retarget(self, site: _Site, module: nn.Module) -> None:
        """The call at `site` now calls `module`, a new attribute of the owner."""
        owner = site.owner
        base = site.target.replace(".", "_") if site.target else \
            site.name.rpartition(".")[2].rstrip("_")
        name = _rewrite.unique_attribute(owner.module, base)
        owner.module.add_module(name, module)
        graph = owner.traced.graph
        with graph.inserting_after(site.node):
            call = graph.call_module(name, (site.node.args[0],))
        site.node.replace_all_uses_with(call)
        graph.erase_node(site.node)
        owner.position[call] = owner.position[site.node]
        owner.rewrite = True
        path = _join(owner.path, name)
        self.place(module, path)
        self.entry(site.key, site.label, site.text, (f"{path}: ", module))

    def fit(self) -> None:
        if not self.recorders:
            return
        _run_examples(self.model, self.batches)
        errors = []
        for recorder, path in self.recorders.items():
            like = dict(self.like)
            if recorder.device is not None:
                like.setdefault("device", recorder.device)
            module, error = _fitted_dct(recorder, like)
            _set_submodule(self.model, path, module)
            self.fitted[recorder] = module
            errors.append((error, path))
        reached = [e for e in errors if e[0] is not None]
        if reached:
            worst = max(reached)
            self.notes.append(
                f"relu='dct': each site's domain is the range of its example inputs, 5% wider on "
                f"each side, boundary='clamp' (beyond it the end value holds); coefficients: the "
                f"fewest of {DCT_NUM_COEFFS} within {DCT_TOLERANCE:.0%} of the site's input range "
                f"on {DCT_COVERAGE:.1%} of its example inputs (worst site {worst[1]}: "
                f"{worst[0]:.2%} of its range)")
        missed = [path for error, path in errors if error is None]
        if missed:
            self.notes.append(f"relu='dct': no example input reached {', '.join(missed)}: the "
                              f"default domain {DEFAULT_DCT_DOMAIN} there")

    def transformer_fast_paths(self) -> None:
        """nn.TransformerEncoderLayer computes relu / gelu and its linear layers itself on its
        inference fast path (and nn.TransformerEncoder feeds its layers nested tensors): off
        where convert changed its activation or linear1."""
        layers = [m for m in self.model.modules() if isinstance(m, nn.TransformerEncoderLayer)
                  and m.activation_relu_or_gelu and not (
                      _plain(m.linear1, nn.Linear)
                      and (m.activation in (F.relu, F.gelu)
                           or type(m.activation) in (nn.ReLU, nn.GELU)))]
        for layer in layers:
            layer.activation_relu_or_gelu = 0
        for module in self.model.modules():
            if isinstance(module, nn.TransformerEncoder) and any(
                    layer in layers for layer in module.layers):
                module.use_nested_tensor = False
        if layers:
            self.notes.append(f"{len(layers)} nn.TransformerEncoderLayer(s): inference fast path "
                              "off (it computes relu/gelu and its Linear layers itself), so that "
                              "the converted modules run")

    def write_notes(self, owners: list[_Owner], sites: list[_Site], actions: dict) -> None:
        if self.relu == "dct" and not self.batches and any(a == "replace"
                                                           for a in actions.values()):
            num_coeffs = _default_num_coeffs()[0]
            message = (f"fastact.convert(relu='dct') without example_inputs assumes every ReLU's "
                       f"input lies in {DEFAULT_DCT_DOMAIN} (unit-scale pre-activations, as after "
                       f"BatchNorm): the fit ({num_coeffs} coefficients) is within "
                       f"{_default_num_coeffs()[1]:.1%} of that range there and holds its end "
                       "value beyond it. Pass example_inputs=... to fit each site to the range "
                       "its inputs have")
            warnings.warn(message, stacklevel=4)
            self.notes.append(message)
        rewritten = [f"{o.path or '(model)'} ({type(o.module).__name__})" for o in owners
                     if o.rewrite]
        if rewritten:
            self.notes.append("forward rewritten from its torch.fx trace (class, attributes and "
                              "state_dict keys kept): " + ", ".join(rewritten))
        folded = [f.layer_path for f in self.folds if f.bn is not None]
        if folded:
            self.notes.append("BatchNorm folded into GmP with its running statistics (exact in "
                              "eval mode; these layers now train without BatchNorm): "
                              + ", ".join(folded))
        for owner in owners:  # torch.nn's own layers call no activation we do not see
            custom = not type(owner.module).__module__.startswith("torch.nn.")
            if owner.traced.graph is None and custom:
                self.notes.append(
                    f"{owner.path or '(model)'} ({type(owner.module).__name__}) did not trace "
                    f"with torch.fx ({owner.traced.error}): only its activation submodules and "
                    "attributes are seen, not F.relu calls in its forward nor what feeds them")


def _set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, module)
