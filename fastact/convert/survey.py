"""The survey for fastact.convert: every activation call of a model (torch.fx traces of each
module's own forward, else the module walk), in the order the model runs, and what feeds each."""

from __future__ import annotations

import copy
import itertools
import math
import operator
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from fastact.convert.rewrite import Traced, trace
from fastact.convert.dct_fit import _Recorder

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


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


# --- the survey: every call of an activation, with the graph around it -------------------------
@dataclass(eq=False)
class _Owner:
    """A module whose forward was traced (or tried): `path` in the model, its Traced graph."""

    path: str
    module: nn.Module
    traced: Traced
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
        owner = _Owner(path, module, trace(module, attributes))
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


# --- what feeds a site -------------------------------------------------------------------------
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
