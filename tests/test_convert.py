"""fastact.convert: which modules it replaces (in nn.Sequential and nested models, in place and on
a copy), that GmP conversion keeps the model's function, the summary, and bad arguments."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fastact
from fastact.convert import Conversion


def sequential(dtype=torch.float32):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                         nn.Linear(32, 4)).to(dtype)


class Block(nn.Module):
    """A custom module holding a Sequential (pairs inside are found) and a ReLU of its own that
    follows a Linear outside any Sequential (not a pair: the order of calls is not known)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True),
                                      nn.Conv2d(8, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Linear(8 * 3 * 3, 10)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.head(self.features(x).flatten(1)))


class Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([Block(), nn.Sequential(nn.Linear(10, 6), nn.ReLU())])
        self.heads = nn.ModuleDict({"out": nn.Sequential(nn.Linear(6, 5), nn.ReLU(),
                                                         nn.Linear(5, 2))})

    def forward(self, x):
        return self.heads["out"](self.blocks[1](self.blocks[0](x)))


def nested(dtype=torch.float32):
    torch.manual_seed(0)
    model = Nested().to(dtype)
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        model.blocks[0].features[3].running_mean.uniform_(-0.2, 0.2)
        model.blocks[0].features[3].running_var.uniform_(0.5, 2.0)
    return model.eval()


def types(model):
    return [type(m).__name__ for m in model.modules()]


def test_relu_to_hat_in_sequential_on_a_copy():
    model = sequential()
    before = types(model)
    result = fastact.convert(model, relu="hat")
    assert isinstance(result, Conversion)
    assert result.model is not model
    assert types(model) == before  # the original is untouched
    assert isinstance(result.model[1], fastact.nn.Hat) and isinstance(result.model[3], fastact.nn.Hat)
    assert [c.path for c in result.changes] == ["1", "3"]
    assert not result.skipped
    x = torch.randn(5, 16)
    expected = model[4](fastact.hat(model[2](fastact.hat(model[0](x)))))
    torch.testing.assert_close(result.model(x), expected, rtol=0, atol=0)


def test_inplace_returns_the_same_model():
    model = sequential()
    result = fastact.convert(model, relu="hat", inplace=True)
    assert result.model is model
    assert isinstance(model[1], fastact.nn.Hat)


def test_nothing_to_convert():
    model = sequential()
    result = fastact.convert(model)
    assert result.changes == [] and str(result) == "fastact.convert: nothing to change"
    assert types(result.model) == types(model)


def test_relu_to_dct_infers_channels():
    torch.manual_seed(0)
    model = nested()
    result = fastact.convert(model, relu="dct")
    converted = dict(result.model.named_modules())
    first, second = converted["blocks.0.features.1"], converted["blocks.0.features.4"]
    assert (first.num_channels, first.channel_dim) == (8, 1)  # after Conv2d(3, 8)
    assert (second.num_channels, second.channel_dim) == (8, 1)  # after BatchNorm2d(8)
    assert converted["blocks.0.act"].num_channels == 1  # outside a Sequential: shared
    assert (converted["blocks.1.1"].num_channels, converted["blocks.1.1"].channel_dim) == (6, -1)
    assert converted["heads.out.1"].num_channels == 5
    assert all(isinstance(converted[c.path], fastact.nn.DCTActivation) for c in result.changes)
    assert len(result.changes) == 5
    assert not any(isinstance(m, nn.ReLU) for m in result.model.modules())
    # Fitted to relu on the domain: on inputs of (-1, 1) the converted model stays close.
    x = torch.rand(4, 3, 7, 7) * 0.5
    out = result.model(x)
    assert out.shape == (4, 2)
    assert (out - model(x)).abs().max() < 0.1 * model(x).abs().max() + 0.05


@pytest.mark.parametrize("dtype, tolerance", [
    (torch.float64, dict(rtol=1e-12, atol=1e-12)),
    # float32: the weight goes through angles and back (a few ulp per element), then the same
    # matmul: relative errors of ~1e-6 of the layer's scale.
    (torch.float32, dict(rtol=1e-5, atol=1e-5)),
])
@pytest.mark.parametrize("inplace", [False, True])
def test_geometric_conversion_keeps_the_function(dtype, tolerance, inplace):
    for build, x in [(sequential, torch.randn(9, 16)), (nested, torch.randn(4, 3, 7, 7))]:
        model = build(dtype)
        x = x.to(dtype)
        expected = model(x)
        result = fastact.convert(model, linear_relu="geometric", inplace=inplace)
        assert (result.model is model) == inplace
        assert not any(isinstance(m, (nn.Linear, nn.Conv2d)) and isinstance(n, nn.ReLU)
                       for m, n in _pairs(result.model))
        torch.testing.assert_close(result.model(x), expected, **tolerance)
        if not inplace:
            torch.testing.assert_close(model(x), expected, rtol=0, atol=0)


def _pairs(model):
    for module in model.modules():
        if isinstance(module, nn.Sequential):
            children = list(module)
            yield from zip(children, children[1:])


def test_geometric_summary_of_a_nested_model():
    model = nested()
    result = fastact.convert(model, relu="hat", linear_relu="geometric")
    converted = dict(result.model.named_modules())
    assert isinstance(converted["blocks.0.features.0"], fastact.nn.GeometricReLUConv2d)
    assert isinstance(converted["blocks.0.features.1"], nn.Identity)
    assert isinstance(converted["blocks.0.features.2"], nn.Conv2d)  # followed by BatchNorm
    assert isinstance(converted["blocks.0.features.4"], fastact.nn.Hat)
    assert isinstance(converted["blocks.0.head"], nn.Linear)  # not in a Sequential
    assert isinstance(converted["blocks.0.act"], fastact.nn.Hat)
    assert isinstance(converted["blocks.1.0"], fastact.nn.GeometricReLU)
    assert isinstance(converted["heads.out.0"], fastact.nn.GeometricReLU)
    assert [(c.path, c.skipped) for c in result.changes] == [  # in the order of print(model)
        ("blocks.0.features.0", False), ("blocks.0.features.1", False),
        ("blocks.0.features.4", False), ("blocks.0.act", False),
        ("blocks.1.0", False), ("blocks.1.1", False),
        ("heads.out.0", False), ("heads.out.1", False),
    ]
    change = result.changes[0]
    assert change.before.startswith("Conv2d(3, 8") and change.after.startswith("GeometricReLUConv2d(3, 8")
    assert result.changes[1].after == "Identity() (folded into blocks.0.features.0)"
    text = str(result)
    assert text.splitlines()[0] == "fastact.convert: 8 change(s), 0 skipped"
    assert "blocks.0.features.0  Conv2d(3, 8" in text and "-> GeometricReLUConv2d(3, 8" in text
    assert len(text.splitlines()) == 9


def test_unsupported_layers_are_skipped_and_reported():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(1, 4), nn.ReLU(),  # fan-in 1
        nn.Conv2d(4, 4, 3, padding=1, padding_mode="circular"), nn.ReLU(),
        nn.Conv2d(4, 4, 1, groups=4), nn.ReLU(),  # fan-in 1 per group
        nn.Conv2d(4, 4, 2, padding="same"), nn.ReLU(),  # even kernel: asymmetric padding
        nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),  # converted
    )
    result = fastact.convert(model, linear_relu="geometric")
    skipped = {c.path: c.after for c in result.skipped}
    assert set(skipped) == {"0", "2", "4", "6"}
    assert "fan-in" in skipped["0"] and "fan-in" in skipped["4"]
    assert "padding_mode" in skipped["2"] and "same" in skipped["6"]
    assert [c.path for c in result.converted] == ["8", "9"]
    assert isinstance(result.model[8], fastact.nn.GeometricReLUConv2d)
    for index in (0, 2, 4, 6):
        assert type(result.model[index]) is type(model[index])
        assert isinstance(result.model[index + 1], nn.ReLU)
    assert "-- skipped: " in str(result) and "1 skipped" not in str(result)
    assert str(result).splitlines()[0] == "fastact.convert: 2 change(s), 4 skipped"


def test_zero_weight_row_with_positive_bias_is_skipped():
    layer = nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight[1] = 0
        layer.bias[1] = 0.5
    result = fastact.convert(nn.Sequential(layer, nn.ReLU()), linear_relu="geometric")
    assert [c.path for c in result.skipped] == ["0"] and "zero weights" in result.skipped[0].after


def test_a_relu_instance_used_twice_is_replaced_at_both_places():
    relu = nn.ReLU()
    model = nn.Sequential(nn.Linear(4, 4), relu, nn.Linear(4, 4), relu)
    result = fastact.convert(model, relu="dct")
    assert [c.path for c in result.changes] == ["1", "3"]
    assert result.model[1] is not result.model[3]


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(model="not a model"), TypeError, "model must be a torch.nn.Module"),
    (dict(relu="gelu"), ValueError, "relu must be one of"),
    (dict(relu=True), ValueError, "relu must be one of"),
    (dict(linear_relu="hat"), ValueError, "linear_relu must be one of"),
    (dict(inplace="yes"), TypeError, "inplace must be a bool"),
])
def test_bad_arguments(kwargs, error, match):
    arguments = dict(model=sequential(), relu="hat")
    arguments.update(kwargs)
    model = arguments.pop("model")
    with pytest.raises(error, match=match):
        fastact.convert(model, **arguments)
