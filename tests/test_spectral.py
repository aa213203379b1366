"""fastact.spectral: measured harmonics against the closed forms, spectral_error against
signals whose error is known, the Taylor model of ReLU, and bad arguments."""

import math

import pytest
import torch
from fastact_testing import KERNEL_BACKEND_DEVICES, interpreted

import fastact
from fastact import spectral

AMPLITUDES = [0.25, 1.0, 3.0]
OFFSETS = [-1.7, -0.5, 0.0, 0.3, 1.0, 1.9, 2.5]


def tone(n: int, cycles: float, amplitude: float = 1.0, phase: float = 0.0) -> torch.Tensor:
    t = torch.arange(n, dtype=torch.float64)
    return amplitude * torch.cos(2 * math.pi * cycles * t / n + phase)


def four_tones() -> torch.Tensor:
    """Kechris et al.'s validation signal: 5, 10, 20, 40 Hz, unit amplitudes, fs 1024, 8 s."""
    t = torch.arange(8 * 1024, dtype=torch.float64) / 1024
    return sum(torch.cos(2 * math.pi * f * t) for f in (5, 10, 20, 40))


# --- harmonics, relu_harmonics, hat_harmonics -------------------------------------------------

@pytest.mark.parametrize("amplitude", AMPLITUDES)
def test_relu_harmonics_measured_match_the_half_wave_series(amplitude):
    measured = spectral.harmonics(torch.relu, amplitude)
    analytic = spectral.relu_harmonics(amplitude, 16)
    assert measured.dtype == analytic.dtype == torch.float64
    assert measured.shape == analytic.shape == (17,)
    torch.testing.assert_close(measured, analytic, atol=1e-8, rtol=0)


def test_relu_harmonics_closed_form_values():
    a = 2.0
    h = spectral.relu_harmonics(a, 6)
    expected = [a / math.pi, a / 2, 2 * a / (3 * math.pi), 0.0, 2 * a / (15 * math.pi), 0.0,
                2 * a / (35 * math.pi)]
    torch.testing.assert_close(h, torch.tensor(expected, dtype=torch.float64), atol=1e-15, rtol=0)
    # relu(-a cos t) is relu(a cos t) delayed by half a period: same magnitudes.
    torch.testing.assert_close(spectral.relu_harmonics(-a, 6), h, atol=0, rtol=0)


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("amplitude", AMPLITUDES)
def test_relu_harmonics_with_offset_match_measured(amplitude, offset):
    measured = spectral.harmonics(torch.relu, amplitude, offset, num_harmonics=24)
    analytic = spectral.relu_harmonics(amplitude, 24, offset=offset)
    torch.testing.assert_close(measured, analytic, atol=1e-8, rtol=0)


def test_relu_harmonics_offset_limits():
    # Fully on: relu is the identity, so [b, a, 0, ...]; fully off: zero; the clipped-cosine
    # formula is continuous into the half-wave series at offset 0.
    torch.testing.assert_close(spectral.relu_harmonics(1.0, 4, offset=1.5),
                               torch.tensor([1.5, 1.0, 0, 0, 0], dtype=torch.float64),
                               atol=1e-15, rtol=0)
    assert spectral.relu_harmonics(1.0, 4, offset=-1.0).abs().max() < 1e-15
    torch.testing.assert_close(spectral.relu_harmonics(1.3, 9, offset=1e-12),
                               spectral.relu_harmonics(1.3, 9), atol=1e-11, rtol=0)
    torch.testing.assert_close(spectral.relu_harmonics(0.0, 3, offset=0.7),
                               torch.tensor([0.7, 0, 0, 0], dtype=torch.float64))


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("amplitude", AMPLITUDES)
def test_hat_harmonics_match_measured_reference(amplitude, offset):
    measured = spectral.harmonics(fastact.reference.hat, amplitude, offset, num_harmonics=24)
    torch.testing.assert_close(measured, spectral.hat_harmonics(amplitude, 24, offset=offset),
                               atol=1e-8, rtol=0)


@pytest.mark.parametrize("backend, device", KERNEL_BACKEND_DEVICES)
def test_hat_kernels_have_the_analytic_harmonics(backend, device):
    samples = 4096 if interpreted(backend, device) else 65536
    tol = 1e-6 if samples == 4096 else 1e-8  # aliasing ~ 1/samples^2

    def kernel(x):
        with fastact.use_backend(backend):
            return fastact.hat(x.to(device)).cpu()

    measured = spectral.harmonics(kernel, 1.0, 1.0, num_harmonics=16, samples=samples)
    torch.testing.assert_close(measured, spectral.hat_harmonics(1.0, 16, offset=1.0),
                               atol=tol, rtol=0)


def test_harmonics_of_polynomials_are_exact():
    # x^2 with x = b + A cos t: b^2 + A^2/2 + 2 b A cos t + (A^2/2) cos 2t.
    a, b = 1.5, -0.4
    measured = spectral.harmonics(torch.square, a, b, num_harmonics=4, samples=64)
    expected = torch.tensor([b * b + a * a / 2, abs(2 * b * a), a * a / 2, 0, 0],
                            dtype=torch.float64)
    torch.testing.assert_close(measured, expected, atol=1e-13, rtol=0)
    # The DC magnitude is |mean|: a negative mean is reported positive.
    measured = spectral.harmonics(lambda x: x, 2.0, -3.0, num_harmonics=2, samples=16)
    torch.testing.assert_close(measured, torch.tensor([3.0, 2.0, 0.0], dtype=torch.float64),
                               atol=1e-14, rtol=0)


def test_harmonics_accepts_modules_and_lower_precision_outputs():
    # A module with parameters runs without autograd; a float32 output is converted.
    module = torch.nn.Sequential(torch.nn.Unflatten(0, (-1, 1)), torch.nn.Linear(1, 1),
                                 torch.nn.Flatten(0))
    module.double()
    measured = spectral.harmonics(module, 1.0, num_harmonics=3, samples=32)
    assert not measured.requires_grad
    assert math.isclose(measured[1].item(), abs(module[1].weight.item()), rel_tol=1e-12)
    low = spectral.harmonics(lambda x: torch.relu(x.float()), 1.0, num_harmonics=4)
    torch.testing.assert_close(low, spectral.relu_harmonics(1.0, 4), atol=1e-7, rtol=0)


def test_harmonics_argument_errors():
    with pytest.raises(TypeError, match="fn must be callable"):
        spectral.harmonics(3.0)
    with pytest.raises(ValueError, match="samples must be > 2 \\* num_harmonics"):
        spectral.harmonics(torch.relu, num_harmonics=8, samples=16)
    with pytest.raises(ValueError, match="num_harmonics must be >= 0"):
        spectral.harmonics(torch.relu, num_harmonics=-1)
    with pytest.raises(TypeError, match="num_harmonics must be an int"):
        spectral.harmonics(torch.relu, num_harmonics=2.0)
    with pytest.raises(ValueError, match="amplitude must be finite"):
        spectral.harmonics(torch.relu, amplitude=math.nan)
    with pytest.raises(TypeError, match="offset must be a real number"):
        spectral.harmonics(torch.relu, offset=torch.tensor(1.0))
    with pytest.raises(ValueError, match="must return a tensor of the input's shape"):
        spectral.harmonics(lambda x: x[:-1])
    with pytest.raises(ValueError, match="must return a tensor"):
        spectral.harmonics(lambda x: 1.0)
    with pytest.raises(ValueError, match="num_harmonics must be >= 0"):
        spectral.relu_harmonics(1.0, -2)
    with pytest.raises(ValueError, match="offset must be finite"):
        spectral.hat_harmonics(1.0, 4, offset=math.inf)


# --- spectral_error ---------------------------------------------------------------------------

def test_spectral_error_of_a_known_tone():
    n = 1024
    reference = tone(n, 3)
    error = 1e-3 * tone(n, 5, phase=0.4)
    bands = spectral.spectral_error(reference + error, reference)
    # Equal amplitudes carry equal energy: the error is 20 log10(1e-3) = -60 dB, all in "4-7".
    assert math.isclose(bands["4-7"], -60.0, abs_tol=1e-9)
    assert all(db < -250 for band, db in bands.items() if band != "4-7")


def test_spectral_error_of_a_dc_offset():
    reference = tone(1000, 7, amplitude=2.0)  # energy per sample a^2 / 2 = 2
    bands = spectral.spectral_error(reference + 0.01, reference)
    assert math.isclose(bands["dc"], 10 * math.log10(0.01**2 / 2), abs_tol=1e-9)
    assert max(db for band, db in bands.items() if band != "dc") < -250


def test_spectral_error_bands_sum_to_the_relative_error_energy():
    generator = torch.Generator().manual_seed(1)
    reference = torch.randn(4, 999, generator=generator, dtype=torch.float64)
    error = 1e-4 * torch.randn(4, 999, generator=generator, dtype=torch.float64)
    bands = spectral.spectral_error(reference + error, reference)
    total = sum(10 ** (db / 10) for db in bands.values())
    assert math.isclose(total, (error.square().sum() / reference.square().sum()).item(),
                        rel_tol=1e-9)
    # White noise spreads by bin count: the top band (bins 256..499) holds about half.
    assert abs(bands["256-499"] - 10 * math.log10(0.5 * total)) < 0.5


def test_spectral_error_adds_the_energies_of_batched_signals():
    reference = torch.stack([tone(256, 3), tone(256, 9, amplitude=3.0)])  # energies 1 : 9
    output = reference.clone()
    output[0] += 1e-2 * tone(256, 40)
    bands = spectral.spectral_error(output, reference)
    assert math.isclose(bands["32-63"], 10 * math.log10(1e-4 / 10), abs_tol=1e-9)


def test_spectral_error_bands_and_exact_output():
    for n, labels in [(1, ["dc"]), (2, ["dc", "1"]), (16, ["dc", "1", "2-3", "4-7", "8"]),
                      (17, ["dc", "1", "2-3", "4-7", "8"]),
                      (20, ["dc", "1", "2-3", "4-7", "8-10"])]:
        reference = torch.rand(n, dtype=torch.float64) + 0.5
        bands = spectral.spectral_error(reference, reference)
        assert list(bands) == labels
        assert all(db == -math.inf for db in bands.values())


def test_spectral_error_of_low_precision_output_is_its_rounding():
    reference = tone(4096, 11)
    bands = spectral.spectral_error(reference.half(), reference)
    assert all(db < -55 for db in bands.values())
    assert max(bands.values()) > -90  # float16 rounding is visible, not lost


def test_spectral_error_argument_errors():
    x = torch.rand(8, dtype=torch.float64)
    with pytest.raises(ValueError, match="one shape"):
        spectral.spectral_error(x, x[:-1])
    with pytest.raises(TypeError, match="output must be a floating-point tensor"):
        spectral.spectral_error(torch.ones(8, dtype=torch.int64), x)
    with pytest.raises(TypeError, match="reference must be a torch.Tensor"):
        spectral.spectral_error(x, [1.0] * 8)
    with pytest.raises(ValueError, match="no energy"):
        spectral.spectral_error(x, torch.zeros(8))
    with pytest.raises(ValueError, match="at least one sample"):
        spectral.spectral_error(torch.tensor(1.0), torch.tensor(1.0))
    with pytest.raises(ValueError, match="reference must be finite"):
        spectral.spectral_error(x, torch.full((8,), math.nan))


# --- relu_taylor ------------------------------------------------------------------------------

def test_taylor_coefficients_match_the_closed_form():
    c = spectral._sqrt_series_coefficients(15)
    for n in range(15):
        closed = ((-1) ** n * math.factorial(2 * n)
                  / ((1 - 2 * n) * math.factorial(n) ** 2 * 4**n))
        assert math.isclose(c[n].item(), closed, rel_tol=1e-14)


def test_relu_taylor_converges_on_the_papers_signal():
    y = four_tones()
    relu = torch.relu(y)
    errors = [((spectral.relu_taylor(y, terms) - relu).norm() / relu.norm()).item()
              for terms in (1, 5, 20, 50, 200)]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors
    assert errors[3] < 0.02  # 50 terms, the paper's choice
    # The DC converges to relu's.
    assert abs(spectral.relu_taylor(y, 200).mean() - relu.mean()) < 0.01 * relu.mean()


def test_relu_taylor_small_cases():
    y = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0], dtype=torch.float64)
    # One term: (y + sqrt(A)) / 2 with A = max(y^2) / 2 = 2.
    torch.testing.assert_close(spectral.relu_taylor(y, 1), (y + math.sqrt(2)) / 2)
    # Exact wherever g = 0, i.e. y^2 = A, for any number of terms.
    y = torch.tensor([-1.5, 1.5, 1.5, -1.5])
    exact = spectral.relu_taylor(y, 3, scale=1.5**2)
    assert exact.dtype == torch.float64
    torch.testing.assert_close(exact, torch.relu(y).double(), atol=1e-15, rtol=0)
    # Same result with the default scale given explicitly; all-zero input stays zero.
    z = four_tones()[:512]
    torch.testing.assert_close(spectral.relu_taylor(z, 30),
                               spectral.relu_taylor(z, 30, scale=z.square().max().item() / 2))
    assert spectral.relu_taylor(torch.zeros(5), 10).abs().max() == 0


def test_relu_taylor_argument_errors():
    y = four_tones()
    with pytest.raises(ValueError, match="terms must be >= 1"):
        spectral.relu_taylor(y, 0)
    with pytest.raises(ValueError, match="at least max\\(y\\^2\\)/2"):
        spectral.relu_taylor(y, 10, scale=1.0)
    with pytest.raises(TypeError, match="y must be a floating-point tensor"):
        spectral.relu_taylor(torch.arange(4), 10)
    with pytest.raises(TypeError, match="scale must be a real number"):
        spectral.relu_taylor(y, 10, scale="big")
