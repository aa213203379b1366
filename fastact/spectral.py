"""Spectral analysis of activation functions and of kernel outputs, in float64.

    fastact.spectral.harmonics(torch.relu, amplitude=2.0)       # DC and harmonics, measured
    fastact.spectral.relu_harmonics(2.0, 16)                    # ReLU's, analytic
    fastact.spectral.spectral_error(kernel_out, reference_out)  # {"dc": dB, "1": dB, ...}
    fastact.spectral.relu_taylor(y, terms=50)                   # the Taylor model of ReLU

A memoryless activation f fed one tone x(t) = offset + A cos t gives a periodic, even output:
f(x(t)) = c_0 + sum_k c_k cos(k t). `harmonics` measures |c_0|, |c_1|, ... by FFT;
`relu_harmonics` and `hat_harmonics` give them in closed form (Kechris et al., arXiv
2407.16556, for ReLU; Hat is three ReLUs). `spectral_error` measures how far a kernel's output
is from its float64 reference per octave of frequency, and `relu_taylor` is the
signal-processing model of ReLU from the same paper.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

__all__ = ["harmonics", "relu_harmonics", "hat_harmonics", "spectral_error", "relu_taylor"]


def _real_number(function: str, name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"fastact.spectral.{function}: {name} must be a real number, "
                        f"got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"fastact.spectral.{function}: {name} must be finite, got {value}")
    return value


def _integer(function: str, name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"fastact.spectral.{function}: {name} must be an int, "
                        f"got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"fastact.spectral.{function}: {name} must be >= {minimum}, got {value}")
    return value


def _float_tensor(function: str, name: str, value) -> None:
    if not isinstance(value, Tensor):
        raise TypeError(f"fastact.spectral.{function}: {name} must be a torch.Tensor, "
                        f"got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"fastact.spectral.{function}: {name} must be a floating-point tensor, "
                        f"got {value.dtype}")


def harmonics(fn: Callable[[Tensor], Tensor], amplitude: float = 1.0, offset: float = 0.0,
              num_harmonics: int = 16, samples: int = 65536) -> Tensor:
    """The DC term and harmonic amplitudes of fn driven by one tone, measured in float64.

    fn is called once, without autograd, on the float64 tensor x of shape [samples] with
    x[m] = offset + amplitude * cos(t_m), t_m = 2 pi m / samples (one period), and must return
    a tensor of the same shape (any floating dtype; it is converted to float64). With
    Y = rfft(fn(x)) and M = samples, the result is the float64 tensor

        [|Y_0| / M, 2 |Y_1| / M, ..., 2 |Y_K| / M],   K = num_harmonics,

    i.e. |mean| and the one-sided amplitude of each harmonic k (the amplitude of cos(k t) in
    the output). Sampling aliases harmonic k with k +- M, k +- 2M, ...: for a function with a
    kink (ReLU, Hat) the k-th harmonic decays as 1/k^2, so the aliasing error is ~1/M^2.
    """
    if not callable(fn):
        raise TypeError(f"fastact.spectral.harmonics: fn must be callable, got {type(fn).__name__}")
    amplitude = _real_number("harmonics", "amplitude", amplitude)
    offset = _real_number("harmonics", "offset", offset)
    num_harmonics = _integer("harmonics", "num_harmonics", num_harmonics, 0)
    samples = _integer("harmonics", "samples", samples, 1)
    if samples <= 2 * num_harmonics:
        raise ValueError(
            f"fastact.spectral.harmonics: samples must be > 2 * num_harmonics (= "
            f"{2 * num_harmonics}) to resolve harmonic {num_harmonics} below Nyquist, "
            f"got {samples}")
    t = torch.arange(samples, dtype=torch.float64) * (2 * math.pi / samples)
    x = offset + amplitude * torch.cos(t)
    with torch.no_grad():
        y = fn(x)
    if not isinstance(y, Tensor) or y.shape != x.shape:
        got = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        raise ValueError("fastact.spectral.harmonics: fn must return a tensor of the input's "
                         f"shape {tuple(x.shape)}, got {got}")
    spectrum = torch.fft.rfft(y.detach().to(device="cpu", dtype=torch.float64))
    magnitudes = spectrum[: num_harmonics + 1].abs() * (2.0 / samples)
    magnitudes[0] /= 2  # the DC bin is not folded: |Y_0| / M
    return magnitudes


def _relu_cosine_series(amplitude: float, offset: float, num_harmonics: int) -> Tensor:
    """Signed cosine coefficients c_0..c_K of relu(offset + amplitude cos t); see
    relu_harmonics for the formula."""
    a, b = abs(amplitude), offset  # relu(b - a cos t) is relu(b + a cos t) shifted by pi
    c = torch.zeros(num_harmonics + 1, dtype=torch.float64)
    if a == 0.0:
        c[0] = max(b, 0.0)
        return c
    if b == 0.0:  # the half-wave series, in its exact form
        c[0] = a / math.pi
        if num_harmonics >= 1:
            c[1] = a / 2
        k = torch.arange(1, num_harmonics // 2 + 1, dtype=torch.float64)
        c[2::2] = (2 * a / math.pi) * (-1) ** (k + 1) / (4 * k**2 - 1)
        return c
    phi = math.acos(min(1.0, max(-1.0, -b / a)))  # the output is positive for |t| < phi
    c[0] = (b * phi + a * math.sin(phi)) / math.pi
    if num_harmonics >= 1:
        c[1] = (2 * b * math.sin(phi) + a * (phi + math.sin(2 * phi) / 2)) / math.pi
    for k in range(2, num_harmonics + 1):
        c[k] = (2 * b * math.sin(k * phi) / k + a * (math.sin((k - 1) * phi) / (k - 1)
                                                     + math.sin((k + 1) * phi) / (k + 1))) / math.pi
    return c


def relu_harmonics(amplitude: float, num_harmonics: int, *, offset: float = 0.0) -> Tensor:
    """ReLU's DC term and harmonic amplitudes for the input offset + A cos t, in closed form;
    float64, scaled as `harmonics` ([|c_0|, |c_1|, ..., |c_K|]).

    offset = 0, the half-wave rectified cosine (Kechris et al., arXiv 2407.16556):
        relu(A cos t) = |A|/pi + (|A|/2) cos t
                        + (2|A|/pi) sum_{k>=1} (-1)^(k+1) cos(2k t) / (4k^2 - 1),
    so DC = |A|/pi, the fundamental |A|/2 and only even harmonics after it.
    Any offset b (a clipped cosine, positive for |t| < phi with cos(phi) = -b/|A| clamped to
    [-1, 1]); with a = |A|:
        c_0 = (b phi + a sin phi) / pi
        c_1 = (2 b sin phi + a (phi + sin(2 phi) / 2)) / pi
        c_k = (2 b sin(k phi) / k + a (sin((k-1) phi) / (k-1) + sin((k+1) phi) / (k+1))) / pi.
    """
    amplitude = _real_number("relu_harmonics", "amplitude", amplitude)
    num_harmonics = _integer("relu_harmonics", "num_harmonics", num_harmonics, 0)
    offset = _real_number("relu_harmonics", "offset", offset)
    return _relu_cosine_series(amplitude, offset, num_harmonics).abs()


def hat_harmonics(amplitude: float, num_harmonics: int, *, offset: float = 0.0) -> Tensor:
    """Hat's DC term and harmonic amplitudes for the input offset + A cos t, in closed form;
    float64, scaled as `harmonics`. Hat(x) = relu(x) - 2 relu(x - 1) + relu(x - 2), so its
    cosine coefficients are c_k(b) - 2 c_k(b - 1) + c_k(b - 2), with c_k(b) ReLU's signed
    coefficients at offset b (see relu_harmonics)."""
    amplitude = _real_number("hat_harmonics", "amplitude", amplitude)
    num_harmonics = _integer("hat_harmonics", "num_harmonics", num_harmonics, 0)
    offset = _real_number("hat_harmonics", "offset", offset)
    series = [_relu_cosine_series(amplitude, offset - shift, num_harmonics) for shift in (0, 1, 2)]
    return (series[0] - 2 * series[1] + series[2]).abs()


def _octave_bands(num_bins: int) -> list[tuple[str, int, int]]:
    """(label, first bin, last bin + 1) of "dc", "1", "2-3", "4-7", ... up to num_bins - 1;
    the last band is cut at the last bin (labelled "lo-hi", or "lo" when it holds one bin)."""
    bands = [("dc", 0, 1)]
    lo = 1
    while lo < num_bins:
        hi = min(2 * lo, num_bins)
        bands.append((str(lo) if hi - lo == 1 else f"{lo}-{hi - 1}", lo, hi))
        lo *= 2
    return bands


def _folded_energy(signal: Tensor) -> Tensor:
    """Energy per rfft bin along the last dim, summed over the other dims, with each bin
    that stands for a +-k pair counted twice: the bins sum to n * sum(signal^2) (Parseval)."""
    n = signal.shape[-1]
    energy = torch.fft.rfft(signal, dim=-1).abs().square().reshape(-1, n // 2 + 1).sum(0)
    last_paired = (n - 1) // 2  # bin n/2 of an even length is its own mirror
    energy[1 : last_paired + 1] *= 2
    return energy


def spectral_error(output: Tensor, reference: Tensor) -> dict[str, float]:
    """The spectrum of output - reference per octave band, relative to the reference's energy.

    The last dim is time (length n); other dims are independent signals whose energies add.
    With E_k the energy of rfft bin k of e = output - reference (bins 1..ceil(n/2)-1 counted
    twice, for their negative-frequency mirror) and E_ref the reference's total energy
    (n * sum(reference^2), Parseval), each band B gets

        10 * log10(sum_{k in B} E_k / E_ref)   dB,

    for the bands "dc" (bin 0), "1", "2-3", "4-7", ..., "2^j-(2^(j+1)-1)", the last cut at bin
    n // 2. The bands' linear sum is sum(e^2) / sum(reference^2). Computed in float64; a band
    without error gives -inf, a non-finite output gives nan or inf.
    """
    _float_tensor("spectral_error", "output", output)
    _float_tensor("spectral_error", "reference", reference)
    if output.shape != reference.shape:
        raise ValueError("fastact.spectral.spectral_error: output and reference must have one "
                         f"shape, got {tuple(output.shape)} and {tuple(reference.shape)}")
    if output.dim() == 0 or output.numel() == 0:
        raise ValueError("fastact.spectral.spectral_error: expected signals with at least one "
                         f"sample along the last dim, got shape {tuple(output.shape)}")
    reference = reference.detach().to(torch.float64)
    error = output.detach().to(device=reference.device, dtype=torch.float64) - reference
    if not torch.isfinite(reference).all():
        raise ValueError("fastact.spectral.spectral_error: reference must be finite")
    reference_energy = _folded_energy(reference).sum().item()
    if reference_energy == 0.0:
        raise ValueError("fastact.spectral.spectral_error: reference has no energy (all zeros); "
                         "the error is relative to it")
    error_energy = _folded_energy(error).cpu()
    result = {}
    for label, lo, hi in _octave_bands(error_energy.numel()):
        ratio = error_energy[lo:hi].sum().item() / reference_energy
        result[label] = 10 * math.log10(ratio) if ratio > 0 else -math.inf
    return result


def _sqrt_series_coefficients(terms: int) -> Tensor:
    """c_0..c_{terms-1} of sqrt(1 + g) = sum_n c_n g^n: binomial(1/2, n), by the recurrence
    c_n = c_{n-1} (3 - 2n) / (2n), equal to (-1)^n (2n)! / ((1 - 2n) (n!)^2 4^n)."""
    c = torch.ones(terms, dtype=torch.float64)
    for n in range(1, terms):
        c[n] = c[n - 1] * (3 - 2 * n) / (2 * n)
    return c


def relu_taylor(y: Tensor, terms: int = 50, *, scale: float | None = None) -> Tensor:
    """The Taylor model of ReLU (Kechris et al., arXiv 2407.16556), in float64.

    relu(y) = (y + sqrt(y^2)) / 2 and sqrt(y^2) = sqrt(A) sqrt(1 + g), g = y^2 / A - 1, so

        relu_taylor(y) = (y + sqrt(A) * sum_{n=0}^{terms-1} c_n g^n) / 2,
        c_n = (-1)^n (2n)! / ((1 - 2n) (n!)^2 4^n)   (c_0 = 1, c_1 = 1/2, c_2 = -1/8, ...).

    For y = sum_i a_i cos(2 pi f_i t) the paper takes A = (sum_i a_i)^2 / 2; `scale` is A, and
    by default max(y^2) / 2, which is that value whenever the tones peak together (as the
    paper's signal does at t = 0). Powers of g are products of the tones, so each term adds
    harmonics and intermodulation products, and the n = 0 term the DC sqrt(A)/2. The series
    converges for |g| <= 1 (scale >= max(y^2) / 2), slowest near y = 0 where g = -1.
    """
    _float_tensor("relu_taylor", "y", y)
    terms = _integer("relu_taylor", "terms", terms, 1)
    y = y.detach().to(torch.float64)
    peak_square = y.square().max().item() if y.numel() else 0.0
    if scale is None:
        scale = peak_square / 2
        if scale == 0.0:  # y is all zeros (or empty): relu(y) = y
            return y.clone()
    else:
        scale = _real_number("relu_taylor", "scale", scale)
        if scale <= 0.0 or peak_square > 2 * scale:
            raise ValueError(
                "fastact.spectral.relu_taylor: scale must be positive and at least max(y^2)/2 "
                f"(= {peak_square / 2:.6g}) so that the series converges (|g| <= 1), got {scale}")
    g = y.square() / scale - 1
    coefficients = _sqrt_series_coefficients(terms).tolist()
    series = torch.full_like(g, coefficients[-1])
    for c in reversed(coefficients[:-1]):  # Horner
        series = series * g + c
    return (y + math.sqrt(scale) * series) / 2
