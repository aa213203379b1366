"""fastact.convert: swap a model's ReLUs (and Linear/Conv2d + ReLU pairs) for fastact modules."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import NamedTuple

from torch import nn

__all__ = ["convert", "Change", "Conversion"]

RELU_CHOICES = ("hat", "dct")
LINEAR_RELU_CHOICES = ("geometric",)


@dataclass(frozen=True)
class Change:
    """One module of the model: where it is, what it was, what it became (or, with
    skipped=True, why it was left as it was)."""

    path: str
    before: str
    after: str
    skipped: bool = False


class Conversion(NamedTuple):
    """What fastact.convert returns: the converted model (the same object when inplace=True)
    and the list of changes (skipped modules included), printable as a table."""

    model: nn.Module
    changes: list[Change]

    @property
    def converted(self) -> list[Change]:
        return [c for c in self.changes if not c.skipped]

    @property
    def skipped(self) -> list[Change]:
        return [c for c in self.changes if c.skipped]

    def __str__(self) -> str:
        if not self.changes:
            return "fastact.convert: nothing to change"
        width = max(len(c.path) for c in self.changes)
        lines = [f"fastact.convert: {len(self.converted)} change(s), "
                 f"{len(self.skipped)} skipped"]
        for c in self.changes:
            arrow = "-- skipped:" if c.skipped else "->"
            lines.append(f"  {c.path:<{width}}  {c.before} {arrow} {c.after}")
        return "\n".join(lines)


def convert(model: nn.Module, relu: str | None = None, linear_relu: str | None = None, *,
            inplace: bool = False) -> Conversion:
    """Replaces a model's activation modules by fastact's.

    linear_relu="geometric": an nn.Linear (nn.Conv2d) directly followed by an nn.ReLU in an
    nn.Sequential becomes one fastact.nn.GeometricReLU (GeometricReLUConv2d) computing the same
    function (radius = |w|, direction w / |w|, bias b / |w| per unit; exact up to rounding), and
    the ReLU becomes nn.Identity. Configurations GmP cannot represent (a fan-in of 1, a
    padding_mode other than "zeros", a zero weight row with a positive bias) are left alone and
    reported as skipped.
    relu="hat": every (remaining) nn.ReLU becomes fastact.nn.Hat (a different function: a bump
    on [0, 2], not a ramp; the network has to be trained with it).
    relu="dct": every (remaining) nn.ReLU becomes fastact.nn.DCTActivation fitted to relu on
    (-1, 1) (init="relu", frequencies="all", 6 coefficients), one learnable series per channel
    when the module before it in its nn.Sequential says how many channels there are (Linear:
    out_features on the last dim; Conv2d: out_channels, BatchNorm2d: num_features, on dim 1),
    else one series shared by every channel.
    inplace=False (default) converts a deep copy and leaves `model` as it was.

    Returns Conversion(model, changes). Only modules are seen: a relu applied functionally in a
    forward method (torch.relu, F.relu) is not converted, and pairs are only found as
    consecutive children of an nn.Sequential (elsewhere the order of calls is not known).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fastact.convert: model must be a torch.nn.Module, got {type(model).__name__}")
    if relu is not None and relu not in RELU_CHOICES:
        raise ValueError(f"fastact.convert: relu must be one of {RELU_CHOICES} or None, got {relu!r}")
    if linear_relu is not None and linear_relu not in LINEAR_RELU_CHOICES:
        raise ValueError(f"fastact.convert: linear_relu must be one of {LINEAR_RELU_CHOICES} or "
                         f"None, got {linear_relu!r}")
    if not isinstance(inplace, bool):
        raise TypeError(f"fastact.convert: inplace must be a bool, got {inplace!r}")
    if not inplace:
        model = copy.deepcopy(model)
    # Paths in the order of print(model), to list the changes in; replacements keep the paths.
    order = {path: i for i, (path, _) in enumerate(model.named_modules(remove_duplicate=False))}
    changes: list[Change] = []
    if linear_relu is not None:
        for path, parent, name, module, producer in _relus(model):
            if producer is None or type(producer[1]) not in (nn.Linear, nn.Conv2d):
                continue
            producer_name, layer = producer
            layer_path = _join(path.rpartition(".")[0], producer_name)
            try:
                replacement = _geometric(layer)
            except ValueError as error:
                reason = str(error).removeprefix("fastact.")
                changes.append(Change(layer_path, repr(layer), reason, skipped=True))
                continue
            setattr(parent, producer_name, replacement)
            setattr(parent, name, nn.Identity())
            changes.append(Change(layer_path, repr(layer), repr(replacement)))
            changes.append(Change(path, repr(module), f"Identity() (folded into {layer_path})"))
    if relu is not None:
        for path, parent, name, module, producer in _relus(model):
            replacement = _replacement_for_relu(relu, producer[1] if producer else None)
            setattr(parent, name, replacement)
            changes.append(Change(path, repr(module), repr(replacement)))
    changes.sort(key=lambda change: order[change.path])
    return Conversion(model, changes)


def _geometric(layer: nn.Module) -> nn.Module:
    """The GmP module computing relu(layer(x)); ValueError where GmP cannot represent it."""
    import fastact.nn as fnn

    if isinstance(layer, nn.Linear):
        if layer.in_features < 2:
            raise ValueError("fastact.convert: a GmP unit needs a fan-in >= 2, this Linear has "
                             f"in_features={layer.in_features}")
        return fnn.GeometricReLU.from_linear(layer)
    fan_in = layer.in_channels // layer.groups * layer.kernel_size[0] * layer.kernel_size[1]
    if fan_in < 2:
        raise ValueError(f"fastact.convert: a GmP unit needs a fan-in >= 2, this Conv2d has "
                         f"in_channels/groups*kh*kw={fan_in}")
    return fnn.GeometricReLUConv2d.from_conv2d(layer)


def _replacement_for_relu(kind: str, producer: nn.Module | None) -> nn.Module:
    import fastact.nn as fnn

    if kind == "hat":
        return fnn.Hat()
    channels, channel_dim = _channels(producer)
    weight = getattr(producer, "weight", None)
    factory = {} if weight is None else {"device": weight.device, "dtype": weight.dtype}
    return fnn.DCTActivation(channels, channel_dim=channel_dim, init="relu", frequencies="all",
                             **factory)


def _channels(producer: nn.Module | None) -> tuple[int, int]:
    """(channels, channel_dim) of the producer's output, or (1, 1) (shared) when unknown."""
    if type(producer) is nn.Linear:
        return producer.out_features, -1
    if type(producer) is nn.Conv2d:
        return producer.out_channels, 1
    if type(producer) is nn.BatchNorm2d:
        return producer.num_features, 1
    return 1, 1


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _relus(model: nn.Module):
    """(path, parent, attribute name, relu module, (name, module) before it in its Sequential
    or None) for every nn.ReLU in the model, in the order of print(model). Children are read
    from _modules so that one ReLU instance used at several places is seen at each of them; a
    submodule used at several places is searched once."""
    found, searched = [], set()

    def search(parent: nn.Module, prefix: str) -> None:
        searched.add(id(parent))
        previous = None
        for name, child in list(parent._modules.items()):
            if child is None:
                continue
            if type(child) is nn.ReLU:
                producer = previous if isinstance(parent, nn.Sequential) else None
                found.append((_join(prefix, name), parent, name, child, producer))
            elif id(child) not in searched:
                search(child, _join(prefix, name))
            previous = (name, child)

    search(model, "")
    return found
