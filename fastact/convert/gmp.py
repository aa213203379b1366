"""linear_relu="geometric" for fastact.convert: plans the fold of a Linear/Conv2d (+ BatchNorm) and
the ReLU it feeds into one GmP module, or says why not."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn

from fastact.convert.survey import _inplace_reason, _join, _known_producer, _Owner, _Site


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
