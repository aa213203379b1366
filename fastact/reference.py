"""Pure-PyTorch references of every fastact op: the plain statement of each formula and the
ground truth of the tests (run in float64). They compute in the input's dtype and get their
gradients from autograd; they run on any device and are the "reference" backend."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["hat"]


def hat(x: Tensor) -> Tensor:
    """max(0, 1 - |x - 1|), written as relu(x) - 2 relu(x - 1) + relu(x - 2) so that autograd
    gives the stated gradient: +1 on (0, 1], -1 on (1, 2], 0 elsewhere. Clamping to [-1, 3]
    changes no value or gradient (hat is flat outside [0, 2]) and keeps inf - inf out; NaN
    passes through."""
    x = x.clamp(-1.0, 3.0)
    return torch.relu(x) - 2 * torch.relu(x - 1) + torch.relu(x - 2)
