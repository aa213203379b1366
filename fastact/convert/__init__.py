"""fastact.convert: find every activation of a model (modules, functional calls in forward methods,
activation attributes) and swap its ReLUs, or its Linear/Conv2d + ReLU pairs, for fastact's."""

from __future__ import annotations

import copy

from torch import nn

from fastact.convert.converter import _Converter
from fastact.convert.dct_fit import DCT_COVERAGE, DCT_TOLERANCE  # noqa: F401  (relu="dct"'s bound)
from fastact.convert.dct_fit import _example_batches
from fastact.convert.result import Change, Conversion

__all__ = ["convert", "Conversion", "Change"]

RELU_CHOICES = ("hat", "dct")
LINEAR_RELU_CHOICES = ("geometric",)


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
