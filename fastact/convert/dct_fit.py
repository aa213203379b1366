"""relu="dct" for fastact.convert: records each site's inputs on the example inputs and fits a
DCTActivation to relu on their range (or the default domain)."""

from __future__ import annotations

import math
from functools import cache

import torch
from torch import nn

from fastact import reference

# relu="dct" without example inputs assumes inputs of about unit scale (as after a BatchNorm or
# LayerNorm: |x| < 4 is 99.99% of a standard normal); with them, each site's own range.
DEFAULT_DCT_DOMAIN = (-4.0, 4.0)
DCT_TOLERANCE = 0.02  # of the site's input range ...
DCT_COVERAGE = 0.999  # ... on this fraction of its example inputs
DCT_MARGIN = 0.05  # the domain extends the example range by this fraction of it on each side
DCT_NUM_COEFFS = (6, 8, 12, 16, 24, 32, 48)  # the smallest that meets the tolerance is used
SAMPLES_PER_CALL = 2**16  # example values kept per call of a site (for the tolerance check)
SAMPLES_PER_SITE = 2**18  # at most (the check evaluates [samples, K] cosines in float64)


class _Recorder(nn.Module):
    """Stands at a site while the example inputs run: relu(x), recording x's range, a sample of
    its values and its shapes."""

    def __init__(self, channels: tuple[int, int] | None):
        super().__init__()
        self.channels = channels
        self.minimum, self.maximum = math.inf, -math.inf
        self.samples: list[torch.Tensor] = []
        self.shapes: set[tuple[int, ...]] = set()
        self.generator = torch.Generator().manual_seed(0)
        self.device = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = x.detach().flatten()
        values = values[torch.isfinite(values)]
        if values.numel():
            self.minimum = min(self.minimum, values.min().item())
            self.maximum = max(self.maximum, values.max().item())
            if values.numel() > SAMPLES_PER_CALL:
                index = torch.randint(values.numel(), (SAMPLES_PER_CALL,),
                                      generator=self.generator)
                values = values[index.to(values.device)]
            self.samples.append(values.double().cpu())
        self.shapes.add(tuple(x.shape))
        self.device = x.device
        return torch.relu(x)


def _channel_layout(recorder: _Recorder) -> tuple[int, int]:
    """(channels, channel_dim) of the recorded inputs: the producer's where the shapes agree,
    else dim 1 of 2-, 4- and 5-d inputs ([N, C], [N, C, H, W], ...), else one shared series."""
    shapes = recorder.shapes
    if recorder.channels is not None:
        channels, dim = recorder.channels
        if all(len(s) > (dim if dim >= 0 else -dim - 1) and s[dim] == channels for s in shapes):
            return channels, dim
    ranks = {len(s) for s in shapes}
    if len(ranks) == 1 and ranks.pop() in (2, 4, 5) and len({s[1] for s in shapes}) == 1:
        return next(iter(shapes))[1], 1
    return 1, 1


def _relu_fit(num_coeffs: int, domain: tuple[float, float]) -> torch.Tensor:
    from fastact.nn import fit_coeffs

    return fit_coeffs(torch.relu, num_coeffs, domain=domain, frequencies="all")


def _fit_error(values: torch.Tensor, domain: tuple[float, float], num_coeffs: int) -> float:
    """The DCT_COVERAGE quantile of |fit(x) - relu(x)| over `values` (float64, clamp boundary)."""
    fitted = reference.dct_activation(values, _relu_fit(num_coeffs, domain), channel_dim=0,
                                      domain=domain, frequencies="all", boundary="clamp")
    return torch.quantile((fitted - torch.relu(values)).abs(), DCT_COVERAGE).item()


def _choose_num_coeffs(values: torch.Tensor, domain: tuple[float, float],
                       scale: float) -> tuple[int, float]:
    """The fewest coefficients whose fit is within DCT_TOLERANCE * scale on DCT_COVERAGE of
    `values` (the most coefficients if none is), and that fit's error over scale."""
    for num_coeffs in DCT_NUM_COEFFS:
        error = _fit_error(values, domain, num_coeffs) / scale
        if error <= DCT_TOLERANCE:
            break
    return num_coeffs, error


@cache
def _default_num_coeffs() -> tuple[int, float]:
    lo, hi = DEFAULT_DCT_DOMAIN
    grid = torch.linspace(lo, hi, 4001, dtype=torch.float64)
    return _choose_num_coeffs(grid, DEFAULT_DCT_DOMAIN, hi - lo)


def _dct(channels: tuple[int, int], num_coeffs: int, domain, like) -> nn.Module:
    import fastact.nn as fnn

    return fnn.DCTActivation(channels[0], num_coeffs, channel_dim=channels[1], domain=domain,
                             frequencies="all", boundary="clamp", init="relu", **like)


def _fitted_dct(recorder: _Recorder, like: dict) -> tuple[nn.Module, float | None]:
    """The DCT fitted to the recorded range, and its error over the range (None: no example
    input reached the site, which gets the default domain)."""
    channels = _channel_layout(recorder) if recorder.shapes else (recorder.channels or (1, 1))
    if not recorder.samples:
        return _dct(channels, _default_num_coeffs()[0], DEFAULT_DCT_DOMAIN, like), None
    lo, hi = recorder.minimum, recorder.maximum
    width = hi - lo if hi > lo else max(abs(hi), 1.0)
    domain = _outward(lo - DCT_MARGIN * width, hi + DCT_MARGIN * width)
    values = torch.cat(recorder.samples)
    if values.numel() > SAMPLES_PER_SITE:
        values = values[torch.randperm(values.numel(), generator=recorder.generator)
                        [:SAMPLES_PER_SITE]]
    num_coeffs, error = _choose_num_coeffs(values, domain, width)
    return _dct(channels, num_coeffs, domain, like), error


def _outward(lo: float, hi: float) -> tuple[float, float]:
    """(lo, hi) rounded outward to 3 significant digits of the width (a readable domain)."""
    digits = 2 - math.floor(math.log10(hi - lo))
    quantum = 10.0 ** -digits
    return (round(math.floor(lo / quantum) * quantum, max(digits, 0)),
            round(math.ceil(hi / quantum) * quantum, max(digits, 0)))


def _example_batches(example_inputs) -> list[tuple]:
    """example_inputs as a list of positional-argument tuples (one per call of the model)."""
    def arguments(batch) -> tuple:
        return batch if isinstance(batch, tuple) else (batch,)

    if example_inputs is None:
        return []
    batches = example_inputs if isinstance(example_inputs, list) else [example_inputs]
    batches = [arguments(batch) for batch in batches]
    if not batches or not all(isinstance(a, torch.Tensor) for batch in batches for a in batch):
        raise TypeError("fastact.convert: example_inputs must be a tensor, a tuple of the model's "
                        "positional tensor arguments, or a list of those (one per call), got "
                        f"{type(example_inputs).__name__}")
    return batches


def _run_examples(model: nn.Module, batches: list[tuple]) -> None:
    """Runs the model on the examples as it is (its mode), leaving its buffers (BatchNorm
    statistics) and the random number generators as they were."""
    buffers = [(b, b.clone()) for b in model.buffers()]
    devices = sorted({a.device.index or 0 for batch in batches for a in batch
                      if a.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        for batch in batches:
            model(*batch)
    with torch.no_grad():
        for buffer, saved in buffers:
            buffer.copy_(saved)
