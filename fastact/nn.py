"""Drop-in torch.nn modules for fastact's activations."""

from __future__ import annotations

from torch import Tensor, nn

from fastact.hat import hat

__all__ = ["Hat"]


class Hat(nn.Module):
    """Hat activation, a drop-in for nn.ReLU: max(0, 1 - |x - 1|) elementwise.

    Shape: any; the output has the input's shape, dtype and layout.
    """

    def forward(self, x: Tensor) -> Tensor:
        return hat(x)
