"""fastact.convert on small models: what it finds (modules, F.relu / torch.relu / Tensor.relu
calls, activation attributes, reused and aliased modules), what it converts and what it leaves
with which reason, that GmP conversion keeps the model's function, relu="dct" fitted to the range
its inputs have, rewritten forwards (class, state_dict, deepcopy, pickle), unconverted
checkpoints, torch.fx and TorchScript, and bad arguments. Whole architectures:
test_convert_architectures.py."""

from __future__ import annotations

import copy
import io
import os
import pickle
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastact
from fastact.convert import DCT_COVERAGE, DCT_TOLERANCE, Conversion


def sequential(dtype=torch.float32):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                         nn.Linear(32, 4)).to(dtype)


class Block(nn.Module):
    """A Sequential with two pairs (one through an eval-mode BatchNorm) and a ReLU module of its
    own that follows a Linear outside any Sequential (the trace finds the pair)."""

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


def modules(result):
    return dict(result.model.named_modules())


# --- what is found and what it becomes --------------------------------------------------------
def test_relu_to_hat_in_sequential_on_a_copy():
    model = sequential()
    before = types(model)
    result = fastact.convert(model, relu="hat")
    assert isinstance(result, Conversion)
    assert result.model is not model
    assert types(model) == before  # the original is untouched
    assert isinstance(result.model[1], fastact.nn.Hat)
    assert isinstance(result.model[3], fastact.nn.Hat)
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


def test_nothing_asked_lists_every_activation_with_its_reason():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.GELU(), nn.ReLU6())
    result = fastact.convert(model)
    assert types(result.model) == types(model)
    assert [(c.path, c.skipped) for c in result.changes] == [("1", True), ("3", True),
                                                             ("4", True)]
    reasons = {c.path: c.after for c in result.changes}
    assert "nothing asked" in reasons["1"]
    assert "GELU is not a ReLU" in reasons["3"] and "clips at 6" in reasons["4"]
    text = str(result)
    assert "nothing to change" not in text
    assert text.splitlines()[0] == ("fastact.convert: 3 activation call(s) found (ReLU x1, GELU "
                                    "x1, ReLU6 x1); 0 converted, 3 left")


def test_a_model_without_activations_says_so():
    text = str(fastact.convert(nn.Sequential(nn.Linear(3, 3)), relu="hat"))
    assert text.startswith("fastact.convert: no activation found")


class Functional(nn.Module):
    """ReLUs as calls in forward: F.relu (also in place), torch.relu, Tensor.relu, plus a GELU
    call that is found and left."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x):
        x = F.relu(self.fc1(x), inplace=True)
        h = self.fc2(x)
        x = torch.relu(h) + h
        return F.gelu(self.fc3(x)).relu()


def test_functional_relus_are_found_and_converted():
    torch.manual_seed(0)
    model = Functional()
    x = torch.randn(5, 6)
    result = fastact.convert(model, relu="hat")
    assert [(c.path, c.skipped) for c in result.changes] == [
        ("(model).forward: F.relu", False), ("(model).forward: torch.relu", False),
        ("(model).forward: F.gelu", True), ("(model).forward: Tensor.relu", False)]
    converted = result.model
    assert isinstance(converted, Functional) and type(converted) is not Functional
    assert [name for name, m in converted.named_children() if isinstance(m, fastact.nn.Hat)] \
        == ["relu", "relu_2", "relu_3"]
    h = model.fc2(fastact.hat(model.fc1(x)))
    expected = fastact.hat(F.gelu(model.fc3(fastact.hat(h) + h)))
    torch.testing.assert_close(converted(x), expected, rtol=0, atol=0)
    torch.testing.assert_close(model(x), Functional.forward(model, x))  # the original is intact


def test_functional_relu_after_linear_folds_into_gmp():
    torch.manual_seed(0)
    model = Functional()
    x = torch.randn(5, 6)
    result = fastact.convert(model, linear_relu="geometric")
    assert isinstance(result.model.fc1, fastact.nn.GeometricReLU)
    assert isinstance(result.model.fc2, nn.Linear)  # its output also feeds the sum
    reasons = {c.path: c.after for c in result.skipped}
    assert "is used elsewhere" in reasons["(model).forward: torch.relu"]
    assert "comes from gelu" in reasons["(model).forward: Tensor.relu"]
    torch.testing.assert_close(result.model(x), model(x), rtol=1e-5, atol=1e-6)


def test_relu_to_dct_infers_channels_from_the_graph():
    model = nested()
    with pytest.warns(UserWarning, match=r"assumes every ReLU's input lies in \(-4.0, 4.0\)"):
        result = fastact.convert(model, relu="dct")
    converted = modules(result)
    layouts = {path: (converted[path].num_channels, converted[path].channel_dim)
               for path in ("blocks.0.features.1", "blocks.0.features.4", "blocks.0.act",
                            "blocks.1.1", "heads.out.1")}
    assert layouts == {"blocks.0.features.1": (8, 1),  # after Conv2d(3, 8)
                       "blocks.0.features.4": (8, 1),  # after BatchNorm2d(8)
                       "blocks.0.act": (10, -1),  # after the Linear(72, 10) outside a Sequential
                       "blocks.1.1": (6, -1), "heads.out.1": (5, -1)}
    for path in layouts:
        module = converted[path]
        assert (module.domain, module.boundary, module.frequencies) == (
            (-4.0, 4.0), "clamp", "all")
    assert not any(isinstance(m, nn.ReLU) for m in result.model.modules())
    assert any("without example_inputs" in note for note in result.notes)


# --- relu="dct": ReLU-like where the inputs are ------------------------------------------------
def test_dct_without_examples_is_relu_like_on_its_documented_domain():
    """The 'Why' case: the old fit was periodic on (-1, 1) and gave 0.92 at -3, 1 and 5."""
    with pytest.warns(UserWarning, match="example_inputs"):
        result = fastact.convert(nn.Sequential(nn.ReLU()), relu="dct")
    x = torch.tensor([-3.0, -2, -1, 0, 1, 2, 3, 5])
    y = result.model(x)
    inside = x.abs() < 4
    assert ((y - torch.relu(x)).abs()[inside] <= DCT_TOLERANCE * 8).all(), y
    assert abs(y[-1].item() - y.new_tensor(4.0).item()) <= DCT_TOLERANCE * 8  # holds f(4)


def test_dct_with_examples_fits_each_site_to_its_range():
    """Conv -> BatchNorm -> ReLU: the BatchNorm output is unit-scale with a third outside
    (-1, 1). The fit is within 2% of the site's range on 99.9% of fresh inputs of the same
    distribution, one series per channel, and the running statistics are untouched."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(),
                          nn.Linear(6 * 14 * 14, 12), nn.ReLU())
    examples = [torch.randn(16, 3, 16, 16) * 3 for _ in range(2)]
    statistics = copy.deepcopy(model[1].state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no assumption to warn about
        result = fastact.convert(model, relu="dct", example_inputs=examples)
    for key, value in model[1].state_dict().items():
        assert torch.equal(value, statistics[key])
    first, second = result.model[2], result.model[5]
    assert (first.num_channels, first.channel_dim) == (6, 1)
    assert (second.num_channels, second.channel_dim) == (12, -1)
    fresh = torch.randn(64, 3, 16, 16) * 3
    for index, dct in ((2, first), (5, second)):
        with torch.no_grad():
            inputs = model[:index](fresh)
            error = (dct(inputs) - torch.relu(inputs)).abs().flatten()
        span = inputs.max() - inputs.min()
        assert torch.quantile(error, DCT_COVERAGE) <= DCT_TOLERANCE * span
        assert dct.boundary == "clamp" and dct.domain[0] < -1 and dct.domain[1] > 1
    assert any("worst site" in note for note in result.notes)


def test_example_inputs_of_several_arguments_and_training_mode_buffers():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm1d(4)
            self.act = nn.ReLU()

        def forward(self, x, y):
            return self.act(self.bn(x) * y)

    model = TwoInputs().train()
    before = copy.deepcopy(model.state_dict())
    examples = (torch.randn(8, 4), torch.rand(8, 4) * 5)
    rng = torch.get_rng_state()
    result = fastact.convert(model, relu="dct", example_inputs=examples)
    assert torch.equal(torch.get_rng_state(), rng)
    for key, value in result.model.state_dict().items():
        if key in before:
            assert torch.equal(value, before[key]), key
    assert result.model.act.domain[1] > 2  # the scaled inputs reached it


# --- GmP ----------------------------------------------------------------------------------------
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
        assert not any(isinstance(m, nn.ReLU) for m in result.model.modules())
        torch.testing.assert_close(result.model(x), expected, **tolerance)
        if not inplace:
            torch.testing.assert_close(model(x), expected, rtol=0, atol=0)


def test_geometric_summary_of_a_nested_model():
    model = nested()
    result = fastact.convert(model, relu="hat", linear_relu="geometric")
    converted = modules(result)
    assert isinstance(converted["blocks.0.features.0"], fastact.nn.GeometricReLUConv2d)
    assert isinstance(converted["blocks.0.features.1"], nn.Identity)
    # Conv2d -> BatchNorm2d (eval) -> ReLU: the statistics fold into the GmP layer.
    assert isinstance(converted["blocks.0.features.2"], fastact.nn.GeometricReLUConv2d)
    assert isinstance(converted["blocks.0.features.3"], nn.Identity)
    assert isinstance(converted["blocks.0.head"], fastact.nn.GeometricReLU)  # outside a Sequential
    assert isinstance(converted["blocks.0.act"], nn.Identity)
    assert isinstance(converted["blocks.1.0"], fastact.nn.GeometricReLU)
    assert isinstance(converted["heads.out.0"], fastact.nn.GeometricReLU)
    assert [(c.path, c.skipped) for c in result.changes] == [  # in the order of the forwards
        ("blocks.0.features.0", False), ("blocks.0.features.1", False),
        ("blocks.0.features.2", False), ("blocks.0.features.3", False),
        ("blocks.0.features.4", False),
        ("blocks.0.head", False), ("blocks.0.act", False),
        ("blocks.1.0", False), ("blocks.1.1", False),
        ("heads.out.0", False), ("heads.out.1", False),
    ]
    change = result.changes[0]
    assert change.before.startswith("Conv2d(3, 8")
    assert change.after.startswith("GeometricReLUConv2d(3, 8")
    assert result.changes[1].after == "Identity() (folded into blocks.0.features.0)"
    assert "blocks.0.features.3's eval statistics" in result.changes[2].after
    text = str(result)
    assert text.splitlines()[0] == ("fastact.convert: 5 activation call(s) found (ReLU x5); "
                                    "5 converted, 0 left")
    assert any("BatchNorm folded" in note for note in result.notes)
    x = torch.randn(4, 3, 7, 7)
    torch.testing.assert_close(result.model(x), model(x), rtol=1e-5, atol=1e-5)


def test_conv_bn_relu_in_training_mode_is_left_with_the_reason():
    model = nested().train()
    result = fastact.convert(model, linear_relu="geometric")
    reasons = {c.path: c.after for c in result.skipped}
    assert "in training mode" in reasons["blocks.0.features.4"]
    assert "model.eval()" in reasons["blocks.0.features.4"]
    assert isinstance(modules(result)["blocks.0.features.2"], nn.Conv2d)


def test_unsupported_layers_are_left_and_reported():
    class Conv2dSame(nn.Conv2d):  # a subclass with its own forward (as timm's)
        def forward(self, x):
            return super().forward(F.pad(x, (0, 1, 0, 1)))

    class Conv2dTagged(nn.Conv2d):  # a subclass that computes what Conv2d computes
        pass

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(1, 4), nn.ReLU(),  # fan-in 1
        nn.Unflatten(1, (4, 1, 1)),
        nn.Conv2d(4, 4, 3, padding=1, padding_mode="circular"), nn.ReLU(),
        nn.Conv2d(4, 4, 1, groups=4), nn.ReLU(),  # fan-in 1 per group
        nn.Conv2d(4, 4, 2, padding="same"), nn.ReLU(),  # even kernel: asymmetric padding
        Conv2dSame(4, 4, 2), nn.ReLU(),
        Conv2dTagged(4, 4, 1), nn.ReLU(),  # converted
        nn.Flatten(2), nn.Conv1d(4, 4, 1), nn.ReLU(),
    )
    result = fastact.convert(model, linear_relu="geometric")
    reasons = {c.path: c.after for c in result.skipped}
    assert set(reasons) == {"1", "4", "6", "8", "10", "15"}
    assert "fan-in" in reasons["1"] and "fan-in" in reasons["6"]
    assert "padding_mode" in reasons["4"] and "same" in reasons["8"]
    assert "Conv2dSame" in reasons["10"] and "own forward" in reasons["10"]
    assert "Conv1d has no GmP form" in reasons["15"]
    assert [c.path for c in result.converted] == ["11", "12"]
    assert isinstance(result.model[11], fastact.nn.GeometricReLUConv2d)
    assert str(result).splitlines()[0] == ("fastact.convert: 7 activation call(s) found "
                                           "(ReLU x7); 1 converted, 6 left")


def test_zero_weight_row_with_positive_bias_is_left():
    layer = nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight[1] = 0
        layer.bias[1] = 0.5
    result = fastact.convert(nn.Sequential(layer, nn.ReLU()), linear_relu="geometric")
    assert [c.path for c in result.skipped] == ["1"] and "zero weights" in result.skipped[0].after


class Mlp(nn.Module):
    """timm's Mlp shape: fc1 -> act (a module) -> drop -> fc2, not a Sequential."""

    def __init__(self):
        super().__init__()
        self.fc1, self.act, self.drop, self.fc2 = (nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.0),
                                                   nn.Linear(16, 8))

    def forward(self, x):
        return self.fc2(self.drop(self.act(self.fc1(x))))


def test_a_pair_outside_a_sequential_folds():
    model = Mlp()
    result = fastact.convert(model, linear_relu="geometric")
    assert isinstance(result.model.fc1, fastact.nn.GeometricReLU)
    assert isinstance(result.model.act, nn.Identity)
    assert type(result.model) is Mlp  # the forward was not rewritten
    x = torch.randn(3, 5, 8)
    torch.testing.assert_close(result.model(x), model(x), rtol=1e-5, atol=1e-6)


# --- reused, aliased and in-place ReLUs -----------------------------------------------------------
def test_a_relu_instance_at_two_places_becomes_two_modules():
    relu = nn.ReLU()
    model = nn.Sequential(nn.Linear(4, 4), relu, nn.Linear(4, 3), relu)
    with pytest.warns(UserWarning):
        result = fastact.convert(model, relu="dct")
    assert [c.path for c in result.changes] == ["1", "3"]
    assert result.model[1] is not result.model[3]
    assert (result.model[1].num_channels, result.model[3].num_channels) == (4, 3)


class Reused(nn.Module):
    """One ReLU module called twice (ResNet's BasicBlock), in place."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(6, 4)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.fc2(self.relu(self.fc1(x))) + x)


def test_a_reused_relu_gets_a_module_per_call_where_they_differ():
    model = Reused()
    x = torch.randn(3, 4)
    hat = fastact.convert(model, relu="hat")
    assert type(hat.model) is Reused and isinstance(hat.model.relu, fastact.nn.Hat)
    assert hat.changes[0].after == "Hat() (one module for its 2 calls)"
    with pytest.warns(UserWarning):
        dct = fastact.convert(model, relu="dct")
    assert [c.path for c in dct.changes] == ["relu (call 1 of 2)", "relu (call 2 of 2)"]
    assert (dct.model.relu.num_channels, dct.model.relu_2.num_channels) == (6, 4)
    gmp = fastact.convert(model, linear_relu="geometric", relu="hat")
    assert isinstance(gmp.model.fc1, fastact.nn.GeometricReLU)
    assert isinstance(gmp.model.relu, fastact.nn.Hat)  # call 1 was folded away
    expected = fastact.hat(model.fc2(F.relu(model.fc1(x))) + x)
    torch.testing.assert_close(gmp.model(x), expected, rtol=1e-5, atol=1e-6)
    assert any("forward rewritten" in note for note in gmp.notes)


class MutationOnly(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.fc(x)
        self.relu(y)  # relies on the in-place mutation of y
        return y * 2


def test_an_inplace_relu_whose_mutation_is_relied_on_is_left():
    result = fastact.convert(MutationOnly(), relu="hat", linear_relu="geometric")
    assert len(result.skipped) == 1 and "relies on the mutation" in result.skipped[0].after
    assert isinstance(result.model.relu, nn.ReLU) and isinstance(result.model.fc, nn.Linear)


class OptionalArgument(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x, scale=None):
        x = F.relu(self.fc(x))
        return x if scale is None else x * scale


class ModeDependent(nn.Module):
    def forward(self, x):
        return F.relu(x) * (2 if self.training else 1)


class DataDependent(nn.Module):
    """Does not trace (control flow on a tensor value): the module walk finds its ReLU."""

    def __init__(self):
        super().__init__()
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(x) if x.sum() > 0 else -x


def test_forwards_that_cannot_be_rewritten_are_reported():
    result = fastact.convert(nn.Sequential(OptionalArgument(), ModeDependent(), DataDependent()),
                             relu="hat")
    reasons = {c.path: c.after for c in result.skipped}
    assert "optional arguments (scale=None)" in reasons["0.forward: F.relu"]
    assert "depends on self.training" in reasons["1.forward: F.relu"]
    assert [c.path for c in result.converted] == ["2.act"]
    assert any("2 (DataDependent) did not trace" in note for note in result.notes)
    assert type(result.model[0]) is OptionalArgument


class ReusedOptional(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.relu = nn.ReLU()

    def forward(self, x, scale=None):
        return self.relu(self.relu(self.fc(x)) - 1)


def test_a_reused_relu_in_a_forward_that_cannot_be_rewritten():
    with pytest.warns(UserWarning):
        dct = fastact.convert(ReusedOptional(), relu="dct")
    assert [c.after.endswith("(one module for its 2 calls)") for c in dct.changes] == [True] * 2
    assert isinstance(dct.model.relu, fastact.nn.DCTActivation)
    gmp = fastact.convert(ReusedOptional(), linear_relu="geometric")
    assert len(gmp.skipped) == 2
    assert "converting them differently would need the forward rewritten, but its forward " \
        "takes optional arguments (scale=None)" in gmp.skipped[0].after
    assert isinstance(gmp.model.fc, nn.Linear)


# --- rewritten forwards ------------------------------------------------------------------------
class Net(nn.Module):
    """A root whose forward calls F.relu: convert rewrites it, the class stays."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 2)
        self.register_buffer("scale", torch.tensor(2.0))

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)) * self.scale)

    def describe(self):
        return "a Net"


def test_a_rewritten_model_keeps_class_state_and_copies_and_pickles():
    torch.manual_seed(0)
    model = Net()
    with pytest.warns(UserWarning):
        result = fastact.convert(model, relu="dct")
    converted = result.model
    assert isinstance(converted, Net) and converted.describe() == "a Net"
    assert set(converted.state_dict()) == set(model.state_dict()) | {"relu.coeffs"}
    x = torch.randn(3, 4)
    expected = converted(x)
    copied = copy.deepcopy(converted)
    torch.testing.assert_close(copied(x), expected, rtol=0, atol=0)
    assert copied.relu is not converted.relu
    buffer = io.BytesIO()
    torch.save(converted, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert isinstance(loaded, Net) and loaded.relu is not converted.relu
    torch.testing.assert_close(loaded(x), expected, rtol=0, atol=0)
    torch.testing.assert_close(pickle.loads(pickle.dumps(converted))(x), expected, rtol=0, atol=0)
    # Converting again works on the rewritten model (nothing left to convert).
    again = fastact.convert(converted, relu="hat")
    assert not again.converted


def test_a_rewritten_model_unpickles_in_a_fresh_interpreter(tmp_path):
    """The pickle names the rewritten class's rebuilder by an importable module path: a new
    process, with nothing imported but what the pickle names, loads it."""
    torch.manual_seed(0)
    converted = fastact.convert(Net(), relu="hat").model
    assert type(converted) is not Net  # the forward was rewritten
    x = torch.randn(3, 4)
    path = tmp_path / "model.pickle"
    path.write_bytes(pickle.dumps((converted, x, converted(x))))
    script = ("import pickle, torch\n"
              f"model, x, expected = pickle.loads(open({str(path)!r}, 'rb').read())\n"
              "assert type(model).__mro__[1].__name__ == 'Net'\n"
              "torch.testing.assert_close(model(x), expected, rtol=0, atol=0)\n"
              "print(type(model).__reduce_ex__(model, 2)[0].__module__)\n")
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(p or os.getcwd() for p in sys.path))
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=environment, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "fastact.convert.rewrite"


def test_unconverted_checkpoint_loads_into_the_converted_model():
    torch.manual_seed(0)
    model = nested()
    result = fastact.convert(model, linear_relu="geometric")
    trained = nested()
    with torch.no_grad():  # another set of weights and statistics
        for parameter in trained.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
        trained.blocks[0].features[3].running_var.mul_(1.5)
    keys = result.load_state_dict(trained.state_dict())
    assert keys.missing_keys == [] and keys.unexpected_keys == []
    x = torch.randn(4, 3, 7, 7)
    torch.testing.assert_close(result.model(x), trained(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match="unexpected keys"):
        result.load_state_dict({**trained.state_dict(), "extra.weight": torch.zeros(1)})


# --- torch.fx, TorchScript ------------------------------------------------------------------------
def test_converted_models_trace_with_fx_and_give_the_same_outputs():
    x = torch.randn(4, 3, 7, 7)
    for kwargs in (dict(relu="hat"), dict(relu="dct", example_inputs=x),
                   dict(linear_relu="geometric")):
        converted = fastact.convert(nested(), **kwargs).model.eval()
        traced = torch.fx.symbolic_trace(converted)
        torch.testing.assert_close(traced(x), converted(x), rtol=0, atol=0)


def test_torchscript_gives_one_clear_error_and_jit_trace_works():
    converted = fastact.convert(sequential(), relu="hat").model
    with pytest.raises(RuntimeError, match=r"torch.jit.script.*torch.jit.trace.*torch.export"):
        torch.jit.script(converted)
    x = torch.randn(3, 16)
    traced = torch.jit.trace(converted, x)
    torch.testing.assert_close(traced(x), converted(x), rtol=0, atol=0)


def test_a_fastact_function_under_fx_names_the_way_out():
    class Direct(nn.Module):
        def forward(self, x):
            return fastact.hat(x)

    with pytest.raises(TypeError, match=r"torch.fx Proxy.*fastact.nn module.*torch.fx.wrap"):
        torch.fx.symbolic_trace(Direct())


# --- transformers -------------------------------------------------------------------------------
def encoder(dropout=0.0):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=dropout, activation="relu",
                                       batch_first=True)
    return nn.TransformerEncoder(layer, 2, enable_nested_tensor=True).eval()


def test_transformer_encoder_activation_attribute_converts_and_the_fast_path_is_off():
    model = encoder()
    x = torch.randn(3, 5, 16)
    mask = torch.tensor([[False] * 5, [False] * 4 + [True], [False] * 3 + [True] * 2])
    result = fastact.convert(model, relu="hat")
    assert [c.path for c in result.changes] == ["layers.0.activation", "layers.1.activation"]
    converted = result.model
    assert converted.layers[0].activation_relu_or_gelu == 0
    assert not converted.use_nested_tensor
    # The eval fast path (which computes relu itself) would differ from the slow path, which
    # training mode (dropout 0) takes: equal, so Hat ran in eval.
    with torch.no_grad():
        evaluated = converted(x, src_key_padding_mask=mask)
        converted.train()
        trained = converted(x, src_key_padding_mask=mask)
    torch.testing.assert_close(evaluated, trained, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(evaluated, model(x, src_key_padding_mask=mask), atol=1e-3)


def test_transformer_feed_forward_folds_into_gmp():
    model = encoder()
    x = torch.randn(3, 5, 16)
    result = fastact.convert(model, linear_relu="geometric")
    layer = result.model.layers[0]
    assert isinstance(layer.linear1, fastact.nn.GeometricReLU)
    assert isinstance(layer.activation, nn.Identity)
    torch.testing.assert_close(result.model(x), model(x), rtol=1e-5, atol=1e-5)


# --- bad arguments ------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, error, match", [
    (dict(model="not a model"), TypeError, "model must be a torch.nn.Module"),
    (dict(relu="gelu"), ValueError, "relu must be one of"),
    (dict(relu=True), ValueError, "relu must be one of"),
    (dict(linear_relu="hat"), ValueError, "linear_relu must be one of"),
    (dict(inplace="yes"), TypeError, "inplace must be a bool"),
    (dict(example_inputs=torch.zeros(2, 16)), ValueError, "example_inputs are used by relu='dct'"),
    (dict(relu="dct", example_inputs="x"), TypeError, "example_inputs must be a tensor"),
])
def test_bad_arguments(kwargs, error, match):
    arguments = dict(model=sequential(), relu="hat")
    arguments.update(kwargs)
    model = arguments.pop("model")
    with pytest.raises(error, match=match):
        fastact.convert(model, **arguments)


def test_relu_and_linear_relu_are_keyword_only():
    with pytest.raises(TypeError):
        fastact.convert(sequential(), "hat")
