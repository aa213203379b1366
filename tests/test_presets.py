"""The papers' set-ups by name: DCTActivation.enn against a transcription of the ENN authors'
code, GmP's Glorot initialisation and momentum, GmP layers back to Linear/Conv2d + ReLU, and
fastact.plot_activations."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import fastact

ENN_CONSTANTS = [-207.6068, -23.1526, -8.3292, -4.2629, -2.5883, -1.5147]


class AuthorsENNActivation:
    """The activation of the ENN authors' `ENN` class, transcribed from their forward (hidden
    layer): F [hidden, Q], z [batch, hidden]. One change: their (pi / 2N) * (Q - 1) is float32
    even for float64 z (a Python float times an integer tensor); here it has z's dtype, so that
    the float64 comparison measures the formula, not that rounding."""

    def __init__(self, hidden: int, nft: int = 512, n_coeffs: int = 6):
        self.idx = torch.arange(2, 2 * n_coeffs + 1, 2)
        self.coeffs = (2 / nft) * torch.tensor(ENN_CONSTANTS)[:n_coeffs]
        self.F = torch.tile(self.coeffs, (hidden, 1))
        self.Q = torch.tile(self.idx, (hidden, 1))
        self.nft = nft

    def __call__(self, z: torch.Tensor, F: torch.Tensor | None = None) -> torch.Tensor:
        F = self.F if F is None else F
        scaled = ((z[..., None] + 1) / 2) * self.nft
        frequency = (math.pi / (2 * self.nft)) * (self.Q - 1).to(z.dtype)
        basis = F * torch.cos(frequency * (2 * scaled - 1))
        return torch.sum(basis, -1)


@pytest.mark.parametrize("nft", [512, 64])
def test_enn_preset_equals_the_authors_activation(nft):
    hidden = 6
    theirs = AuthorsENNActivation(hidden, nft)
    module = fastact.nn.DCTActivation.enn(hidden, nft=nft, channel_dim=-1)
    assert (module.domain, module.frequencies, module.boundary, module.num_coeffs) == (
        (-1 + 1 / nft, 1 + 1 / nft), "odd", "periodic", 6)
    assert torch.equal(module.coeffs.detach(), theirs.F)  # their float32 constants, bitwise
    z = torch.cat([torch.linspace(-2.5, 2.5, 2001), torch.tensor([-1.0, 0.0, 1.0])])
    z = z.view(-1, 1).expand(-1, hidden).contiguous()
    # float64 (their formula in float64 with the same coefficients): rounding only.
    module64 = fastact.nn.DCTActivation.enn(hidden, nft=nft, channel_dim=-1,
                                            dtype=torch.float64)
    expected = theirs(z.double(), theirs.F.double())
    torch.testing.assert_close(module64(z.double()), expected, rtol=0, atol=1e-13)
    # float32, as they run it: within float32 rounding of the phase (|angle| <= ~35 rad).
    torch.testing.assert_close(module(z), theirs(z), rtol=0, atol=2e-5)
    # Learned coefficients too (the same formula with other F).
    coeffs = torch.randn(hidden, 6, dtype=torch.float64)
    with torch.no_grad():
        module64.coeffs.copy_(coeffs)
    torch.testing.assert_close(module64(z.double()), theirs(z.double(), coeffs), rtol=0,
                               atol=1e-12)
    if nft == 512:  # their constants start near the identity (6 odd cosines: not at the ends)
        inside = z[:, 0].abs() <= 0.8
        assert (module(z)[inside, 0] - z[inside, 0]).abs().max() < 0.01


def test_enn_output_layer_shares_one_series():
    module = fastact.nn.DCTActivation.enn(1)
    assert module.coeffs.shape == (1, 6)
    assert module(torch.randn(7, 3)).shape == (7, 3)
    with pytest.raises(ValueError, match="nft must be a positive int"):
        fastact.nn.DCTActivation.enn(4, nft=0)


def glorot_radius(layer):
    return layer.radius.detach().mean().item()


def test_glorot_init_matches_chen_and_ge():
    torch.manual_seed(0)
    # Linear: w ~ U(-a, a), a = sqrt(6 / (in + out)), so E|w|^2 = in * a^2 / 3 = 2 in / (in + out).
    layer = fastact.nn.GeometricReLU(256, 64, init="glorot")
    expected = math.sqrt(2 * 256 / (256 + 64))
    assert abs(glorot_radius(layer) - expected) < 0.03 * expected
    default = fastact.nn.GeometricReLU(256, 64)
    assert abs(glorot_radius(default) - math.sqrt(1 / 3)) < 0.03  # Kaiming-uniform, a=sqrt(5)
    weight = layer.weight.detach()
    limit = math.sqrt(6 / (256 + 64))
    assert weight.abs().max() <= limit * (1 + 1e-5) and weight.abs().max() > 0.95 * limit
    assert torch.equal(layer.bias, torch.zeros(64))
    # Conv: fan_in = in * kh * kw, fan_out = filters (their code's Glorot for convolutions).
    conv = fastact.nn.GeometricReLUConv2d(32, 64, 3, init="glorot")
    fan_in = 32 * 9
    expected = math.sqrt(2 * fan_in / (fan_in + 64))
    assert abs(glorot_radius(conv) - expected) < 0.03 * expected
    assert 1.2 < glorot_radius(conv) < 1.35  # the "1.2-1.3"
    limit = math.sqrt(6 / (fan_in + 64))
    assert conv.weight.detach().abs().max() <= limit * (1 + 1e-5)
    conv.reset_parameters()  # keeps its init
    assert abs(glorot_radius(conv) - expected) < 0.03 * expected
    with pytest.raises(ValueError, match="init must be 'default' or 'glorot'"):
        fastact.nn.GeometricReLU(4, 4, init="xavier")


@pytest.mark.parametrize("cls, args, x", [
    (fastact.nn.GeometricReLU, (6, 4), torch.randn(32, 6) + 3),
    (fastact.nn.GeometricReLUConv2d, (3, 4, 3), torch.randn(8, 3, 6, 6) + 3),
])
def test_momentum_is_a_constructor_argument(cls, args, x):
    layer = cls(*args, input_mean_norm=True, momentum=0.01)
    assert layer.momentum == 0.01 and "momentum=0.01" in repr(layer)
    layer(x)
    dims = [0] if x.dim() == 2 else [0, 2, 3]
    torch.testing.assert_close(layer.running_mean, 0.01 * x.mean(dims))
    assert "momentum" not in repr(cls(*args, input_mean_norm=True))
    with pytest.raises(ValueError, match="momentum must be a number in"):
        cls(*args, momentum=1.5)
    norm = fastact.nn.InputMeanNorm(args[0], momentum=0.01)
    assert norm.momentum == 0.01


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
@pytest.mark.parametrize("input_mean_norm", [False, True])
def test_to_linear_and_to_conv_are_the_same_function(dtype, tolerance, input_mean_norm):
    torch.manual_seed(0)
    cases = [
        (fastact.nn.GeometricReLU(6, 5, input_mean_norm=input_mean_norm, dtype=dtype),
         torch.randn(4, 3, 6, dtype=dtype) + 1, "to_linear", nn.Linear),
        (fastact.nn.GeometricReLUConv2d(4, 6, 3, padding=1, groups=2, dilation=2,
                                        input_mean_norm=input_mean_norm, dtype=dtype),
         torch.randn(3, 4, 9, 9, dtype=dtype) + 1, "to_conv", nn.Conv2d),
    ]
    for layer, x, method, cls in cases:
        with torch.no_grad():
            layer.bias.uniform_(-0.5, 0.5)
            layer.radius.mul_(torch.rand_like(layer.radius) + 0.5)
            if input_mean_norm:
                layer.running_mean.uniform_(0.5, 1.5)
        for mode in ("train", "eval"):
            getattr(layer, mode)()
            plain = getattr(layer, method)()
            assert isinstance(plain, nn.Sequential) and isinstance(plain[-1], nn.ReLU)
            assert type(plain[-2]) is cls and plain.training == layer.training
            assert isinstance(plain[0], fastact.nn.InputMeanNorm) == input_mean_norm
            torch.testing.assert_close(plain(x), layer(x), rtol=tolerance, atol=tolerance)
            if not input_mean_norm:  # and back again
                back = fastact.convert(plain, linear_relu="geometric").model[0]
                torch.testing.assert_close(back(x), layer(x), rtol=tolerance,
                                           atol=tolerance)


def test_to_linear_refuses_a_negative_radius():
    layer = fastact.nn.GeometricReLU(4, 3)
    with torch.no_grad():
        layer.radius[1] = -0.5
    with pytest.raises(ValueError, match=r"to_linear: units \[1\] have a negative radius"):
        layer.to_linear()
    conv = fastact.nn.GeometricReLUConv2d(2, 2, 3)
    with torch.no_grad():
        conv.radius[0] = -1.0
    with pytest.raises(ValueError, match="to_conv: units"):
        conv.to_conv()


def test_plot_activations_draws_every_learned_activation(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    model = nn.Sequential(nn.Linear(2, 6), fastact.nn.DCTActivation.enn(6), nn.Linear(6, 4),
                          fastact.nn.Hat(), nn.Linear(4, 3), fastact.nn.Hat(),
                          fastact.nn.DCTActivation(3, 8, frequencies="all", init="relu",
                                                   boundary="clamp", domain=(-2, 3)))
    figure = fastact.plot_activations(model)
    assert isinstance(figure, matplotlib.figure.Figure)
    axes = [ax for ax in figure.axes if ax.get_visible()]
    assert [ax.get_title().split(":")[0] for ax in axes] == ["1", "6", "2 Hat module(s)"]
    first = axes[0]
    assert len(first.lines) == 6 + 2  # one curve per channel, its start, relu
    assert "6 channel(s), K=6, periodic" in first.get_title()
    path = fastact.plot_activations(model, tmp_path / "activations.png")
    assert path == tmp_path / "activations.png" and path.stat().st_size > 10_000
    with pytest.raises(ValueError, match="no fastact activation"):
        fastact.plot_activations(nn.Linear(2, 2))
