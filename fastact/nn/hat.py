"""fastact.nn.Hat, the module of the Hat activation (fastact/hat.py)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fastact._checks import NotScriptable
from fastact.hat import hat

torch.fx.wrap("hat")  # one node in a torch.fx graph (see fastact/nn/__init__.py)


class Hat(NotScriptable, nn.Module):
    """Hat activation, a drop-in for nn.ReLU: max(0, 1 - |x - 1|) elementwise.

    Shape: any; the output has the input's shape, dtype and layout.
    """

    def forward(self, x: Tensor) -> Tensor:
        return hat(x)
