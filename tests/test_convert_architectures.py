"""fastact.convert on real architectures, defined here at small widths (no downloads, no
torchvision): a ResNet-18 (BasicBlock: Conv-BN-ReLU, one ReLU module called twice, residual
add, F.relu in the stem), a VGG, a MobileNetV2 (ReLU6, and with ReLU as timm's act_layer), and
a transformer encoder (nn.TransformerEncoder with activation="relu" plus a hand-written block
whose MLP calls F.relu). For each: what converts and what is left, equality where the
conversion claims it, forward and backward, torch.compile, torch.export and torch.fx."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastact


# --- the architectures ------------------------------------------------------------------------
class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet18(nn.Module):
    def __init__(self, widths=(4, 8, 8, 16), classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.maxpool = nn.MaxPool2d(2)
        stages, cin = [], widths[0]
        for index, width in enumerate(widths):
            stride = 1 if index == 0 else 2
            stages.append(nn.Sequential(BasicBlock(cin, width, stride), BasicBlock(width, width)))
            cin = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(widths[-1], classes)

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class VGG(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        layers, cin = [], 3
        for width in (8, "M", 16, "M", 16, 16, "M"):
            if width == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(cin, width, 3, padding=1), nn.ReLU(inplace=True)]
                cin = width
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(2)
        self.classifier = nn.Sequential(nn.Linear(16 * 4, 32), nn.ReLU(True), nn.Dropout(),
                                        nn.Linear(32, 32), nn.ReLU(True), nn.Dropout(),
                                        nn.Linear(32, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def conv_bn_act(cin, cout, kernel=3, stride=1, groups=1, act=nn.ReLU6):
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups,
                                   bias=False), nn.BatchNorm2d(cout), act(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand, act):
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        self.conv = nn.Sequential(conv_bn_act(cin, hidden, 1, act=act),
                                  conv_bn_act(hidden, hidden, 3, stride, groups=hidden, act=act),
                                  nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, act=nn.ReLU6, classes: int = 10):
        super().__init__()
        blocks = [conv_bn_act(3, 8, stride=2, act=act)]
        for cin, cout, stride in ((8, 8, 1), (8, 12, 2), (12, 12, 1)):
            blocks.append(InvertedResidual(cin, cout, stride, 2, act))
        blocks.append(conv_bn_act(12, 32, 1, act=act))
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(32, classes))

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


class Mlp(nn.Module):
    def __init__(self, d, hidden):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, hidden), nn.Linear(hidden, d)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


class PreNormBlock(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.mlp = Mlp(d, 2 * d)

    def forward(self, x, mask=None):
        h = self.norm1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    def __init__(self, d=16, heads=2, classes=3):
        super().__init__()
        self.embed = nn.Linear(8, d)
        layer = nn.TransformerEncoderLayer(d, heads, 2 * d, dropout=0.0, activation="relu",
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.block = PreNormBlock(d, heads)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        return self.head(self.block(self.encoder(self.embed(x))).mean(1))


def randomised(model: nn.Module) -> nn.Module:
    """Eval mode with BatchNorm statistics and affine parameters that are not the identity."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.3, 0.3)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
    return model.eval()


ARCHITECTURES = {
    "resnet18": (ResNet18, (2, 3, 32, 32)),
    "vgg": (VGG, (2, 3, 16, 16)),
    "mobilenet_v2": (MobileNetV2, (2, 3, 16, 16)),
    "mobilenet_v2_relu": (lambda: MobileNetV2(act=nn.ReLU), (2, 3, 16, 16)),
    "transformer": (Transformer, (2, 5, 8)),
}


def build(name: str):
    torch.manual_seed(0)
    factory, shape = ARCHITECTURES[name]
    return randomised(factory()), torch.randn(shape)


def kinds(result) -> list[str]:
    return [type(m).__name__ for m in result.model.modules()]


# --- what converts, and equality where claimed ----------------------------------------------
def test_resnet18_survey_and_gmp_equality():
    model, x = build("resnet18")
    result = fastact.convert(model, linear_relu="geometric", relu="hat")
    assert result.found == {"F.relu": 1, "ReLU": 16}
    assert not result.skipped
    # Each Conv-BN-ReLU folds (stem and conv1 of 8 blocks); each block's second call (after the
    # residual add) becomes Hat; the reused module serves only that call now.
    gmp = [p for p, m in result.model.named_modules()
           if isinstance(m, fastact.nn.GeometricReLUConv2d)]
    assert len(gmp) == 9 and "conv1" in gmp and "layer3.1.conv1" in gmp
    assert isinstance(result.model.layer2[0].relu, fastact.nn.Hat)
    assert isinstance(result.model.layer2[0].bn1, nn.Identity)
    assert isinstance(result.model.layer2[0], BasicBlock)
    geometric_only = fastact.convert(model, linear_relu="geometric")
    reasons = {c.path: c.after for c in geometric_only.skipped}
    assert len(reasons) == 8 and all("comes from add in BasicBlock.forward" in r
                                     for r in reasons.values())
    torch.testing.assert_close(geometric_only.model(x), model(x), rtol=1e-5, atol=1e-5)
    assert "nothing to change" not in str(geometric_only)


def test_resnet18_dct_is_per_channel_at_every_site():
    model, x = build("resnet18")
    result = fastact.convert(model, relu="dct", example_inputs=torch.randn(8, 3, 32, 32))
    dcts = {p: m for p, m in result.model.named_modules()
            if isinstance(m, fastact.nn.DCTActivation)}
    assert len(dcts) == 17
    assert all(m.num_channels > 1 and m.channel_dim == 1 for m in dcts.values())
    assert dcts["layer4.1.relu_2"].num_channels == 16


def test_vgg_converts_every_pair():
    model, x = build("vgg")
    result = fastact.convert(model, linear_relu="geometric")
    assert result.found == {"ReLU": 6} and not result.skipped
    assert kinds(result).count("GeometricReLUConv2d") == 4
    assert kinds(result).count("GeometricReLU") == 2
    torch.testing.assert_close(result.model(x), model(x), rtol=1e-5, atol=1e-5)


def test_mobilenet_v2_relu6_is_listed_and_left():
    model, x = build("mobilenet_v2")
    result = fastact.convert(model, relu="dct", linear_relu="geometric")
    assert result.found == {"ReLU6": 8} and not result.converted
    assert all("ReLU6 clips at 6" in c.after for c in result.skipped)
    assert str(result).splitlines()[0].endswith("0 converted, 8 left")
    torch.testing.assert_close(result.model(x), model(x), rtol=0, atol=0)


def test_mobilenet_v2_with_relu_folds_depthwise_and_pointwise():
    model, x = build("mobilenet_v2_relu")
    result = fastact.convert(model, linear_relu="geometric")
    assert result.found == {"ReLU": 8} and not result.skipped
    depthwise = result.model.features[1].conv[1][0]
    assert isinstance(depthwise, fastact.nn.GeometricReLUConv2d) and depthwise.groups == 16
    torch.testing.assert_close(result.model(x), model(x), rtol=1e-5, atol=1e-5)


def test_transformer_survey_and_gmp_equality():
    model, x = build("transformer")
    result = fastact.convert(model, linear_relu="geometric")
    assert result.found == {"F.relu": 3} and not result.skipped
    assert [c.path for c in result.changes if "GeometricReLU" in c.after] == [
        "encoder.layers.0.linear1", "encoder.layers.1.linear1", "block.mlp.fc1"]
    torch.testing.assert_close(result.model(x), model(x), rtol=1e-5, atol=1e-5)
    dct = fastact.convert(model, relu="dct", example_inputs=torch.randn(8, 5, 8))
    layouts = [(m.num_channels, m.channel_dim) for m in dct.model.modules()
               if isinstance(m, fastact.nn.DCTActivation)]
    assert layouts == [(32, -1)] * 3


# --- forward, backward, compile, export, fx ---------------------------------------------------
CONVERSIONS = {
    "hat": dict(relu="hat"),
    "dct": dict(relu="dct", example="yes"),
    "geometric+dct": dict(linear_relu="geometric", relu="dct", example="yes"),
}


def converted(name: str, conversion: str):
    model, x = build(name)
    kwargs = dict(CONVERSIONS[conversion])
    if kwargs.pop("example", None):
        kwargs["example_inputs"] = torch.randn(8, *x.shape[1:])
    return model, fastact.convert(model, **kwargs).model, x


@pytest.mark.parametrize("conversion", list(CONVERSIONS))
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_forward_and_backward(name, conversion):
    _, model, x = converted(name, conversion)
    model.train()
    out = model(x)
    out.square().mean().backward()
    for path, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), path
    added = [m for m in model.modules() if isinstance(m, (fastact.nn.DCTActivation,
                                                          fastact.nn.GeometricReLU,
                                                          fastact.nn.GeometricReLUConv2d))]
    for module in added:
        assert any(p.grad.abs().sum() > 0 for p in module.parameters())


def extractor(model: nn.Module, module_path: str) -> torch.fx.GraphModule:
    """What torchvision's create_feature_extractor does: the traced model, returning the output
    of one submodule (the last node traced inside it)."""
    traced = torch.fx.symbolic_trace(model)
    node = [n for n in traced.graph.nodes
            if module_path in n.meta.get("nn_module_stack", {})][-1]
    output = next(n for n in traced.graph.nodes if n.op == "output")
    output.args = (node,)
    traced.graph.eliminate_dead_code()
    traced.recompile()
    return traced


FEATURES = {"resnet18": "layer2", "vgg": "features", "mobilenet_v2": "features",
            "mobilenet_v2_relu": "features", "transformer": "block"}


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_compile_export_and_fx(name):
    _, model, x = converted(name, "geometric+dct")
    expected = model(x)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), expected, rtol=1e-5, atol=1e-5)
    exported = torch.export.export(model, (x,))
    torch.testing.assert_close(exported.module()(x), expected, rtol=1e-5, atol=1e-5)
    traced = torch.fx.symbolic_trace(model)
    torch.testing.assert_close(traced(x), expected, rtol=0, atol=0)
    captured = []
    handle = getattr(model, FEATURES[name]).register_forward_hook(
        lambda module, args, out: captured.append(out))
    model(x)
    handle.remove()
    torch.testing.assert_close(extractor(model, FEATURES[name])(x), captured[0], rtol=0, atol=0)


def test_resnet18_trains_under_compile():
    """Gradients through the compiled graph (AOTAutograd: the fastact ops' fake kernels and
    registered backwards) equal eager ones. Inductor on whole models: test_integration.py."""
    _, model, x = converted("resnet18", "geometric+dct")
    model.train()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    compiled(x).square().mean().backward()
    grads = {p: q.grad.clone() for p, q in model.named_parameters()}
    model.zero_grad()
    model(x).square().mean().backward()
    for path, parameter in model.named_parameters():
        torch.testing.assert_close(grads[path], parameter.grad, rtol=1e-4, atol=1e-5)
