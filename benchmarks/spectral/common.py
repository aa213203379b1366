"""What the parts of the spectral suite share: tables for the terminal and Markdown, JSON
that survives -inf, plots, seeds, and the thread setting for many tiny training steps."""

from __future__ import annotations

import contextlib
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

__all__ = ["Claim", "PartResult", "Table", "plt", "seed_everything", "single_thread",
           "write_json", "fmt", "save_figure"]


@dataclass
class Table:
    """A titled table rendered both for the terminal and as Markdown."""

    title: str
    headers: list[str]
    rows: list[list] = field(default_factory=list)
    note: str = ""

    def add(self, *cells) -> None:
        self.rows.append([fmt(c) for c in cells])

    def text(self) -> str:
        cells = [self.headers] + self.rows
        widths = [max(len(str(row[i])) for row in cells) for i in range(len(self.headers))]
        lines = [f"\n{self.title}"]
        for j, row in enumerate(cells):
            lines.append("  ".join(str(c).rjust(w) if j else str(c).ljust(w)
                                   for c, w in zip(row, widths)))
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)

    def markdown(self) -> str:
        lines = [f"**{self.title}**\n", "| " + " | ".join(self.headers) + " |",
                 "|" + "---|" * len(self.headers)]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in self.rows]
        if self.note:
            lines.append(f"\n{self.note}")
        return "\n".join(lines) + "\n"


@dataclass
class Claim:
    """A paper's claim and whether this run reproduced it: True, False, or None (partly,
    or not testable here), with the figures that decide it."""

    paper: str
    claim: str
    reproduced: bool | None
    evidence: str

    def verdict(self) -> str:
        verdicts = {True: "reproduced", False: "NOT reproduced", None: "partly / untested"}
        return verdicts[self.reproduced]


@dataclass
class PartResult:
    name: str
    title: str
    tables: list[Table] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def markdown(self) -> str:
        parts = [f"## {self.title}\n"]
        parts += [f"{note}\n" for note in self.notes]
        parts += [table.markdown() for table in self.tables]
        if self.plots:
            parts.append("Plots: " + ", ".join(f"[{p}]({p})" for p in self.plots) + "\n")
        for c in self.claims:
            parts.append(f"- **{c.verdict()}** — {c.paper}: {c.claim} {c.evidence}\n")
        parts.append(f"\n_{self.seconds:.0f} s_\n")
        return "\n".join(parts)


def fmt(value) -> str:
    """Cells: floats with 4 significant digits, -inf as 'exact', None as '—'."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == -math.inf:
            return "exact"
        if not math.isfinite(value):
            return str(value)
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.3e}"
        return f"{value:.4g}"
    return str(value)


def _finite(obj):
    """JSON has no infinities: -inf (an exact result) and the rest become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return _finite(obj.item())
    if isinstance(obj, torch.Tensor):
        return _finite(obj.tolist())
    return obj


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(_finite(obj), indent=1, allow_nan=False))


def save_figure(fig, folder: Path, name: str, result: PartResult) -> None:
    fig.tight_layout()
    fig.savefig(folder / name, dpi=110)
    plt.close(fig)
    result.plots.append(name)


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@contextlib.contextmanager
def single_thread(device: str):
    """The experiments are thousands of tiny steps: on a shared CPU, OpenMP's extra threads
    spin and wait far longer than they compute (10-40x slower here with 2 threads). One
    thread on CPU; GPU runs are unaffected."""
    previous = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class OneDimensionalGmP(torch.nn.Module):
    """A GmP layer for 1-D inputs, converted exactly from `linear` (nn.Linear(1, H) + ReLU).

    In 1-D a unit's direction is a sign: Chen & Ge's code uses r relu(s x + lambda) with
    s = sign(w) fixed (stop_gradient), r = |w|, lambda = b / |w|. fastact.nn.GeometricReLU
    needs a direction in R^n, n >= 2, so this is GeometricReLU(2, H) fed [x, 0], converted from
    the weights [w, 0] (theta = 0 or pi) with theta frozen: the same unit, on fastact's kernels.
    """

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        import fastact

        padded = torch.nn.Linear(2, linear.out_features, device=linear.weight.device,
                                 dtype=linear.weight.dtype)
        with torch.no_grad():
            padded.weight.zero_()
            padded.weight[:, :1].copy_(linear.weight)
            padded.bias.copy_(linear.bias)
        self.layer = fastact.nn.GeometricReLU.from_linear(padded)
        self.layer.theta.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(torch.cat([x, torch.zeros_like(x)], dim=-1))
