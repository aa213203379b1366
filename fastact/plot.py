"""fastact.plot_activations: what a model's fastact activations have learned, one panel each."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from fastact import reference

__all__ = ["plot_activations"]

MAX_CHANNELS = 64  # curves drawn per DCT module (the first ones); the title says how many


def plot_activations(model: nn.Module, path: str | Path | None = None, *, columns: int = 4):
    """A matplotlib figure with one panel per fastact activation of `model`, in module order:

    - fastact.nn.DCTActivation: each channel's learned curve (up to 64 channels) over its domain
      (shaded) and a quarter of its width beyond on each side, where the boundary ("periodic"
      or "clamp") shows; dashed, the curve its `init` gives (the ReLU or identity it started
      from); dotted, relu itself.
    - fastact.nn.Hat (nothing learned): one panel of the fixed hat on [-1, 3], for reference,
      titled with how many Hat modules the model has.

    path=None returns the matplotlib.figure.Figure; with a path it saves the figure there (PNG,
    or the format of the suffix) and returns the Path. Needs matplotlib (pip install matplotlib).
    """
    import fastact.nn as fnn

    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("fastact.plot_activations needs matplotlib: pip install matplotlib") \
            from error
    if not isinstance(model, nn.Module):
        raise TypeError(f"fastact.plot_activations: model must be a torch.nn.Module, got "
                        f"{type(model).__name__}")
    panels = [(name or type(model).__name__, module) for name, module in model.named_modules()
              if isinstance(module, fnn.DCTActivation)]
    hats = [name for name, module in model.named_modules() if isinstance(module, fnn.Hat)]
    if hats:
        panels.append((f"{len(hats)} Hat module(s)", None))
    if not panels:
        raise ValueError("fastact.plot_activations: the model has no fastact activation "
                         "(fastact.nn.DCTActivation or fastact.nn.Hat)")
    columns = min(columns, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(3.4 * columns, 2.7 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).flatten()
    for ax, (name, module) in zip(axes, panels):
        if isinstance(module, fnn.DCTActivation):
            _plot_dct(ax, name, module)
        else:
            x = torch.linspace(-1.0, 3.0, 401, dtype=torch.float64)
            ax.plot(x, reference.hat(x), color="C0", lw=1.2)
            ax.plot(x, torch.relu(x), color="0.5", ls=":", lw=1.0, label="relu")
            ax.set_title(f"{name}: Hat (fixed, for reference)", fontsize=8)
            ax.legend(fontsize=6, loc="upper left")
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    if path is None:
        return figure
    path = Path(path)
    figure.savefig(path, dpi=120)
    return path


def _plot_dct(ax, name: str, module: nn.Module) -> None:
    lo, hi = module.domain
    margin = (hi - lo) / 4
    x = torch.linspace(lo - margin, hi + margin, 501, dtype=torch.float64)
    shown = min(module.num_channels, MAX_CHANNELS)

    def curves(coeffs: torch.Tensor) -> torch.Tensor:  # [len(x), channels]
        coeffs = coeffs.detach().to("cpu", torch.float64).reshape(-1, module.num_coeffs)
        grid = x.view(-1, 1).expand(-1, coeffs.shape[0]).contiguous()
        return reference.dct_activation(grid, coeffs, channel_dim=1, domain=module.domain,
                                        frequencies=module.frequencies,
                                        boundary=module.boundary)

    learned = curves(module.coeffs[:shown])
    alpha = 0.9 if shown <= 4 else max(0.25, 4 / shown)
    for channel in range(shown):
        ax.plot(x, learned[:, channel], lw=0.9, alpha=alpha)
    start = module.initial_coeffs().reshape(-1, module.num_coeffs)
    label = "start" if start.shape[0] == 1 else "start (channel 0)"
    # Under the learned curves, so that where they moved away from it they show.
    ax.plot(x, curves(start[:1])[:, 0], "k--", lw=1.0, label=label, zorder=1.5)
    ax.plot(x, torch.relu(x), color="0.5", ls=":", lw=1.0, label="relu")
    ax.axvspan(lo, hi, color="0.93", zorder=0)
    channels = f"{shown} of {module.num_channels}" if shown < module.num_channels \
        else f"{module.num_channels}"
    ax.set_title(f"{name}: DCT, {channels} channel(s), K={module.num_coeffs}, "
                 f"{module.boundary}", fontsize=8)
    ax.legend(fontsize=6, loc="upper left")
