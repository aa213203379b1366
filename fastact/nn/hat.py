"""fastact.nn.Hat, the module of the Hat activation (fastact/hat.py)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fastact._checks import NotScriptable
from fastact.hat import hat

# Under torch.fx.symbolic_trace (create_feature_extractor, FX quantisation, ...) the op below
# becomes one call_function node, run with real tensors later: its argument checks and backend
# choice cannot run on Proxies, and the backend must be chosen when the graph runs, not traced.
torch.fx.wrap("hat")


class Hat(NotScriptable, nn.Module):
    """Hat activation, a drop-in for nn.ReLU: max(0, 1 - |x - 1|) elementwise.

    Shape: any; the output has the input's shape, dtype and layout.
    """

    def forward(self, x: Tensor) -> Tensor:
        return hat(x)
