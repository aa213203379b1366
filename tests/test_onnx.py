"""ONNX export: every fastact module and function exports with torch.onnx.export (dynamo=True,
and the TorchScript-based dynamo=False) into standard ONNX operators only, passes onnx.checker,
and runs in ONNX Runtime with PyTorch's output at the dtype's tolerance, for a batch size other
than the one exported. Plus the AOTInductor package of a model with fastact ops, loaded in a
fresh process."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import fastact

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

STANDARD_DOMAINS = ("", "ai.onnx")


def export(model: nn.Module, x: torch.Tensor, path, dynamo: bool = True) -> "onnx.ModelProto":
    """Exports model(x) with a dynamic batch dimension, with no fastact-specific argument,
    and checks the file: onnx.checker (with shape inference) and standard operators only."""
    if dynamo:
        torch.onnx.export(model, (x,), path, dynamo=True,
                          dynamic_shapes=({0: torch.export.Dim("batch")},))
    else:
        torch.onnx.export(model, (x,), path, dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "batch"}})
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    assert {node.domain for node in proto.graph.node} <= set(STANDARD_DOMAINS)
    assert {opset.domain for opset in proto.opset_import} <= set(STANDARD_DOMAINS)
    assert not proto.functions  # no local functions hiding custom operators
    return proto


def run_in_onnxruntime(path, x: torch.Tensor) -> torch.Tensor:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options,
                                           providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    return torch.from_numpy(output)


def assert_exports_and_matches(model: nn.Module, make_input, path, dtype=torch.float32,
                               dynamo: bool = True):
    """Exports at batch 3, then compares ONNX Runtime with PyTorch at batches 1 and 5: float32 at
    its tolerance. In float16 both runtimes round every layer's output, in different orders, so
    they differ by a few units in the last place of the output; there ONNX Runtime must be as
    close as PyTorch to the float64 evaluation of the same model (same rounded parameters)."""
    model = model.to(dtype).eval()
    export(model, make_input(3).to(dtype), path, dynamo)
    exact = copy.deepcopy(model).double()
    for batch in (1, 5):
        x = make_input(batch).to(dtype)
        with torch.no_grad():
            expected = model(x)
            truth = exact(x.double())
        actual = run_in_onnxruntime(path, x)
        assert actual.dtype == expected.dtype and actual.shape == expected.shape
        if dtype == torch.float32:
            torch.testing.assert_close(actual, expected, equal_nan=True)
        else:
            onnx_error = (actual.double() - truth).abs().max()
            torch_error = (expected.double() - truth).abs().max()
            assert onnx_error <= torch_error, (onnx_error, torch_error)


def randn(*shape, scale=1.0):
    return lambda batch: scale * torch.randn(batch, *shape)


def trained(module: nn.Module) -> nn.Module:
    """The module with every parameter and buffer moved off its initial value (a bias of 0, a
    running mean of 0, identity DCT coefficients would hide mistakes)."""
    with torch.no_grad():
        for tensor in (*module.parameters(), *module.buffers()):
            tensor.add_(0.3 * torch.randn_like(tensor))
    return module


MODULES = {
    "hat": (lambda: fastact.nn.Hat(), randn(6, 7, scale=2.0)),
    "dct_per_channel_nchw": (lambda: fastact.nn.DCTActivation(4), randn(4, 5, 6)),
    "dct_channels_last_dim": (
        lambda: fastact.nn.DCTActivation(8, channel_dim=-1, frequencies="all", boundary="clamp"),
        randn(5, 8, scale=2.0)),
    "dct_shared": (lambda: fastact.nn.DCTActivation(1, num_coeffs=4, domain=(-2.0, 3.0)),
                   randn(3, 5)),
    # The ENN authors' domain; inputs far outside it (the periodic series).
    "dct_enn": (lambda: fastact.nn.DCTActivation(6, domain=(-1 + 1 / 512, 1 + 1 / 512)),
                randn(6, scale=40.0)),
    "geometric": (lambda: fastact.nn.GeometricReLU(12, 7), randn(12)),
    "geometric_no_bias_3d": (lambda: fastact.nn.GeometricReLU(12, 7, bias=False), randn(2, 12)),
    "geometric_input_mean_norm": (
        lambda: fastact.nn.GeometricReLU(12, 7, input_mean_norm=True), randn(12)),
    "geometric_conv2d": (lambda: fastact.nn.GeometricReLUConv2d(3, 6, 3), randn(3, 8, 8)),
    "geometric_conv2d_strided_grouped": (
        lambda: fastact.nn.GeometricReLUConv2d(4, 6, (3, 2), stride=2, padding=(1, 2),
                                               dilation=(1, 2), groups=2),
        randn(4, 9, 8)),
    "geometric_conv2d_input_mean_norm_padded": (
        lambda: fastact.nn.GeometricReLUConv2d(3, 5, 3, padding=1, input_mean_norm=True),
        randn(3, 6, 7)),
    "input_mean_norm": (lambda: fastact.nn.InputMeanNorm(5), randn(5, 4)),
}


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
@pytest.mark.parametrize("name", MODULES)
def test_each_module_exports_to_standard_operators(name, dynamo, tmp_path):
    make_module, make_input = MODULES[name]
    assert_exports_and_matches(trained(make_module()), make_input, tmp_path / "m.onnx",
                               dynamo=dynamo)


def test_hat_is_exact_at_its_kinks_and_special_values(tmp_path):
    special = torch.tensor([0.0, -0.0, 1.0, 2.0, 1e-30, 1 - 2**-24, 1 + 2**-23, 2 - 2**-23,
                            -1.0, 3.0, float("nan"), float("inf"), -float("inf")])
    export(fastact.nn.Hat(), special.repeat(2, 1), tmp_path / "hat.onnx")
    rows = torch.cat([special[None], torch.rand(1, special.numel()) * 4 - 1])
    torch.testing.assert_close(run_in_onnxruntime(tmp_path / "hat.onnx", rows),
                               fastact.hat(rows), rtol=0, atol=0, equal_nan=True)


class Functional(nn.Module):
    """A model calling the public functions rather than holding modules, the maps included:
    u = spherical_to_cartesian(theta) of an input, and its inverse."""

    def __init__(self):
        super().__init__()
        self.coeffs = nn.Parameter(torch.randn(6, 5))
        self.theta = nn.Parameter(torch.rand(4, 5) * 3)
        self.radius = nn.Parameter(torch.rand(4) + 0.5)
        self.conv_theta = nn.Parameter(torch.rand(4, 2 * 2 * 2 - 1) * 3)

    def forward(self, x):  # x [N, 6]
        h = fastact.dct_activation(fastact.hat(x), self.coeffs, frequencies="all")
        z = fastact.geometric_relu(h, self.theta, self.radius)
        radius, theta = fastact.cartesian_to_spherical(fastact.spherical_to_cartesian(h[:, :5]))
        image = fastact.geometric_relu_conv2d(h.view(-1, 2, 3, 1).expand(-1, 2, 3, 3),
                                              self.conv_theta, self.radius, kernel_size=2)
        return torch.cat([z, radius[:, None], theta, image.flatten(1)], dim=1)


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_a_model_calling_the_functions(dynamo, tmp_path):
    assert_exports_and_matches(Functional(), randn(6, scale=2.0), tmp_path / "f.onnx",
                               dynamo=dynamo)


# Small real models: an MLP per activation, and ResNet-style blocks converted by fastact.convert.
MLPS = {
    "hat": lambda: nn.Sequential(nn.Linear(16, 32), fastact.nn.Hat(), nn.Linear(32, 4)),
    "dct": lambda: nn.Sequential(nn.Linear(16, 32), fastact.nn.DCTActivation(32),
                                 nn.Linear(32, 4)),
    "geometric": lambda: nn.Sequential(fastact.nn.GeometricReLU(16, 32, input_mean_norm=True),
                                       fastact.nn.GeometricReLU(32, 32), nn.Linear(32, 4)),
    "all": lambda: nn.Sequential(nn.Linear(16, 32), fastact.nn.Hat(),
                                 fastact.nn.DCTActivation(32), fastact.nn.GeometricReLU(32, 32),
                                 nn.Linear(32, 4)),
}


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(channels, channels, 3, padding=1))
        self.out = nn.ReLU()

    def forward(self, x):
        return self.out(x + self.body(x))


def resnet(relu: str) -> nn.Module:
    """Conv2d + ReLU pairs become GeometricReLUConv2d, the other ReLUs `relu`."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), ResidualBlock(8),
                          ResidualBlock(8), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 10))
    model = fastact.convert(model, relu=relu, linear_relu="geometric").model
    kinds = [type(module).__name__ for module in model.modules()]
    assert kinds.count("GeometricReLUConv2d") == 3 and "ReLU" not in kinds
    return trained(model)


MODELS = {
    **{f"mlp_{name}": (lambda make=make: trained(make()), randn(16))
       for name, make in MLPS.items()},
    "resnet_hat": (lambda: resnet("hat"), randn(3, 8, 8)),
    "resnet_dct": (lambda: resnet("dct"), randn(3, 8, 8)),
}


@pytest.mark.parametrize("name", MODELS)
def test_small_models_float32(name, tmp_path):
    make_model, make_input = MODELS[name]
    assert_exports_and_matches(make_model(), make_input, tmp_path / "m.onnx")


@pytest.mark.parametrize("name", MODELS)
def test_small_models_float16(name, tmp_path):
    make_model, make_input = MODELS[name]
    assert_exports_and_matches(make_model(), make_input, tmp_path / "m.onnx", torch.float16)


def test_torchscript_exporter_works_too(tmp_path):
    """The former failure of dynamo=False ("unrecognized namespace fastact::hat")."""
    make_model, make_input = MODELS["mlp_all"]
    assert_exports_and_matches(make_model(), make_input, tmp_path / "m.onnx", dynamo=False)
    make_model, make_input = MODELS["resnet_hat"]
    assert_exports_and_matches(make_model(), make_input, tmp_path / "r.onnx", dynamo=False)


def test_dynamo_exporter_of_the_issue_model(tmp_path):
    """The former failure of dynamo=True ("Failed to convert the exported program": no
    translation for fastact::*), with the call of the issue: no extra argument. Its operators
    are the ones docs/deploy.md lists."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), fastact.nn.Hat(), fastact.nn.DCTActivation(32),
                          fastact.nn.GeometricReLU(32, 8)).eval()
    x = torch.randn(4, 16)
    torch.onnx.export(model, (x,), tmp_path / "m.onnx", dynamo=True)
    proto = onnx.load(tmp_path / "m.onnx")
    assert [node.op_type for node in proto.graph.node] == [
        "Gemm",                                          # nn.Linear
        "Sub", "Min", "Relu",                            # Hat: relu(min(x, 2 - x))
        "Sub", "Div", "Div", "Round", "Mul", "Sub",      # DCT: t, reduced into [-1, 1]
        "Unsqueeze", "Mul", "Cos", "Mul", "ReduceSum",   # sum_j c_j cos(pi k_j t)
        "Gemm", "Add", "Relu", "Mul",                    # GmP: radius * relu(x u^T + bias)
    ]
    with torch.no_grad():
        torch.testing.assert_close(run_in_onnxruntime(tmp_path / "m.onnx", x), model(x))


def test_onnxruntime_folds_the_directions_into_constants(tmp_path):
    """u(theta) and the input-mean bias depend on parameters only: ONNX Runtime computes them
    once, when it loads the model (its basic level of graph optimisations), so inference runs
    MatMul/Conv + bias + Relu + radius and no trigonometry."""
    # Angles of more than 8192 elements, which the exporter leaves to the runtime to fold.
    model = trained(nn.Sequential(fastact.nn.GeometricReLU(128, 96, input_mean_norm=True),
                                  nn.Unflatten(1, (6, 4, 4)),
                                  fastact.nn.GeometricReLUConv2d(6, 160, 3, padding=1,
                                                                 input_mean_norm=True))).eval()
    proto = export(model, torch.randn(2, 128), tmp_path / "m.onnx")
    assert {"Sin", "Cos"} <= {node.op_type for node in proto.graph.node}
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), options,
                                 providers=["CPUExecutionProvider"])
    operators = {node.op_type for node in onnx.load(tmp_path / "optimized.onnx").graph.node}
    assert not operators & {"Sin", "Cos", "Concat", "Slice"}
    assert {"Conv", "Relu", "Mul"} <= operators


def test_directions_in_the_graph_match_the_kernels_on_long_rows():
    """The log-depth prefix product of the graph, in float32, against the kernels' float64
    running product: rows of 4607 angles (a 3x3 convolution over 512 channels)."""
    theta = torch.rand(64, 4607, dtype=torch.float64) * torch.pi
    theta[:, -1] *= 2
    theta[:, 100:] = theta[:, 100:].clamp(1.4, 1.75)  # sines near 1: long products stay > 0
    expected = fastact.spherical_to_cartesian(theta)
    actual = fastact._onnx.spherical_to_cartesian(theta.float())
    torch.testing.assert_close(actual.double(), expected, rtol=1.3e-6, atol=1e-7)
    assert (actual.double().norm(dim=1) - 1).abs().max() < 1e-6


def test_torch_export_keeps_the_fused_kernels_through_run_decompositions():
    """Outside torch.onnx.export nothing changes: torch.export records fastact's ops, and the
    default decompositions (what AOTInductor lowers) leave them whole."""
    model = trained(MLPS["all"]()).eval()
    x = torch.randn(5, 16)
    program = torch.export.export(model, (x,)).run_decompositions()
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert {"fastact.hat.default", "fastact.dct_activation.default",
            "fastact.spherical_to_cartesian.default",
            "fastact.geometric_relu_linear.default"} <= targets
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x))


AOTI_SCRIPT = """
import sys
import torch
if sys.argv[2] == "import":
    import fastact
try:
    runner = torch._inductor.aoti_load_package(sys.argv[1])
    x = torch.load(sys.argv[3])
    torch.save(runner(x), sys.argv[4])
    print("loaded")
except Exception as error:
    print(f"{type(error).__name__}: {error}")
"""


@pytest.mark.slow
def test_aot_inductor_package_loads_in_a_fresh_process_after_import_fastact(tmp_path):
    """A package compiled with torch._inductor.aoti_compile_and_package calls fastact's kernels
    by name (fastact::hat, ...): a fresh process must `import fastact` before loading it, which
    registers them; without, loading fails: "Could not find schema for fastact::hat"."""
    model = trained(MLPS["all"]()).eval()
    x = torch.randn(5, 16)
    program = torch.export.export(model, (x,))
    package = torch._inductor.aoti_compile_and_package(program,
                                                       package_path=str(tmp_path / "m.pt2"))
    torch.save(x, tmp_path / "x.pt")
    script = tmp_path / "load.py"
    script.write_text(textwrap.dedent(AOTI_SCRIPT))
    repository = os.path.dirname(os.path.dirname(os.path.abspath(fastact.__file__)))
    environment = {**os.environ, "PYTHONPATH": repository}

    def run(mode):
        return subprocess.run(
            [sys.executable, str(script), package, mode, str(tmp_path / "x.pt"),
             str(tmp_path / "y.pt")], capture_output=True, text=True, env=environment,
            timeout=300, check=True).stdout

    assert run("import").strip().endswith("loaded")
    with torch.no_grad():
        torch.testing.assert_close(torch.load(tmp_path / "y.pt"), model(x))
    assert "RuntimeError: Could not find schema for fastact::" in run("no-import")
