"""Backend selection: use_backend, FASTACT_BACKEND, auto choice and its errors, the
portable CPU kernels, and the fallback when the extension is missing."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import fastact
from fastact import _backend


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, env={**os.environ, **env}, timeout=300,
    )


def test_available_backends_here():
    available = fastact.available_backends()
    assert available[-1] == "reference"
    assert "cpu" in available
    assert set(available) <= set(_backend.BACKENDS)
    assert ("cuda" in available) == (torch.cuda.is_available() and fastact._extension.has_kernels_for("cuda"))


def test_auto_picks_cpu_kernels_for_cpu_tensors():
    assert _backend.select("hat", torch.device("cpu")) == "cpu"


def test_use_backend_nests_and_restores():
    assert _backend.current_backend() == "auto"
    with fastact.use_backend("reference"):
        assert _backend.select("hat", torch.device("cpu")) == "reference"
        with fastact.use_backend("cpu"):
            assert _backend.select("hat", torch.device("cpu")) == "cpu"
        assert _backend.current_backend() == "reference"
    assert _backend.current_backend() == "auto"


def test_unknown_backend_is_a_value_error():
    with pytest.raises(ValueError, match="unknown backend 'tpu'.*'reference'"):
        with fastact.use_backend("tpu"):
            pass


def test_backend_that_cannot_serve_the_tensor_names_those_that_can():
    with fastact.use_backend("cuda"):
        with pytest.raises(RuntimeError, match="backend 'cuda' cannot run on 'cpu'.*'cpu'.*'reference'"):
            fastact.hat(torch.ones(3))


def test_device_without_kernels_is_a_clear_error():
    with pytest.raises(RuntimeError, match="no fastact kernels serve tensors on 'xpu'.*use_backend\\('reference'\\)"):
        _backend.select("hat", torch.device("xpu"))
    with fastact.use_backend("reference"):
        assert _backend.select("hat", torch.device("xpu")) == "reference"


def test_meta_tensors_get_shapes():
    x = torch.empty(3, 4, device="meta")
    assert fastact.hat(x).shape == (3, 4)


def test_environment_variable_sets_the_default():
    result = run_python(
        """
        import torch, fastact
        from fastact import _backend
        print(_backend.current_backend(), _backend.select("hat", torch.device("cpu")))
        """,
        FASTACT_BACKEND="reference",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["reference", "reference"]
    bad = run_python("import fastact", FASTACT_BACKEND="gpu")
    assert bad.returncode != 0 and "unknown backend 'gpu' from FASTACT_BACKEND" in bad.stderr


def test_portable_cpu_kernels_match_the_reference():
    """The kernels compiled for the baseline instruction set, forced by FASTACT_CPU_ISA."""
    result = run_python(
        """
        import torch, fastact
        assert fastact._extension.cpu_isa() == "portable", fastact._extension.cpu_isa()
        for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
            x = (torch.randn(10007) * 2 + 1).to(dtype)
            x[::97] = float("nan")
            y = fastact.hat(x)
            assert torch.equal(y.double().nan_to_num(7), fastact.reference.hat(x.double()).to(dtype).double().nan_to_num(7)), dtype
            g = torch.randn_like(x)
            assert torch.equal(torch.ops.fastact.hat_backward(g, x), torch.where((x > 0) & (x <= 1), g, torch.where((x > 1) & (x <= 2), -g, 0))), dtype
        print("ok")
        """,
        FASTACT_CPU_ISA="portable",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_missing_extension_falls_back_to_reference_with_one_warning():
    result = run_python(
        """
        import sys, warnings
        sys.modules["fastact._C"] = None  # makes `from fastact import _C` fail
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import torch, fastact
            y = fastact.hat(torch.tensor([0.5, 1.5]))
            fastact.hat(torch.tensor([0.25]))
        messages = [str(w.message) for w in caught if "fastact" in str(w.message)]
        assert len(messages) == 1 and "reference" in messages[0], messages
        assert fastact.available_backends()[-1] == "reference" and "cpu" not in fastact.available_backends()
        assert y.tolist() == [0.5, 0.5]
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_use_backend_is_per_thread():
    import threading

    seen = {}
    entered = threading.Event()
    release = threading.Event()

    def other_thread():
        with fastact.use_backend("reference"):
            entered.set()
            release.wait(10)
            seen["other"] = _backend.current_backend()

    thread = threading.Thread(target=other_thread)
    thread.start()
    entered.wait(10)
    seen["main"] = _backend.current_backend()
    release.set()
    thread.join()
    assert seen == {"main": "auto", "other": "reference"}


def test_auto_on_cuda_tensors_takes_the_ops_default_then_any_gpu_backend(monkeypatch):
    # A GPU host's answers, faked: until a GPU has measured both, the default is the backend
    # whose kernels have executed (Triton's, in the interpreter); else whatever serves.
    cuda = torch.device("cuda")
    monkeypatch.setattr(_backend, "_serves", lambda backend, device: backend in ("cuda", "triton"))
    assert set(_backend.CUDA_AUTO.values()) == {"triton"}
    assert _backend.select("dct_activation", cuda) == "triton"
    monkeypatch.setattr(_backend, "_serves", lambda backend, device: backend == "cuda")
    assert _backend.select("dct_activation", cuda) == "cuda"


# The direct entries of the CPU hot path (csrc/ops.cpp: fastact._C.hat_call / dct_call, which
# fastact.hat and the DCT take for an eager call on CPU tensors under "auto" or "cpu").

def dct_arguments(channel_dim=-1):
    x = torch.randn(5, 3, 8, dtype=torch.float64)
    coeffs = torch.randn(8, 6, dtype=torch.float64)
    return x, coeffs, channel_dim, -1.0, 1.0, True, False


@pytest.mark.parametrize("channel_dim", [2, -1])
def test_direct_dct_entry_takes_module_calls_and_matches_the_reference(channel_dim):
    x, coeffs, *basis = dct_arguments(channel_dim)
    y = fastact._extension._C.dct_call(x, coeffs, *basis)
    assert y is not None  # negative channel_dim (ENN's layers, the examples) stays on it
    expected = fastact.reference.dct_activation(x, coeffs, channel_dim=channel_dim)
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
    module = fastact.nn.DCTActivation(8, channel_dim=-1, dtype=torch.float64)
    torch.testing.assert_close(module(x), fastact.reference.dct_activation(
        x, module.coeffs, channel_dim=-1), rtol=1e-12, atol=1e-12)


def test_direct_entries_decline_what_the_python_path_must_handle():
    hat_call, dct_call = fastact._extension._C.hat_call, fastact._extension._C.dct_call
    x, coeffs, *basis = dct_arguments()
    assert hat_call(x.to(torch.int32)) is None  # the op rejects it: Python raises the error
    assert hat_call(x.to("meta")) is None
    assert hat_call([1.0]) is None
    assert dct_call(x, coeffs.to("meta"), *basis) is None  # else the fake kernel would run
    assert dct_call(x, coeffs, 3, *basis[1:]) is None  # out of range
    assert dct_call(x, coeffs, True, *basis[1:]) is None  # a bool is no channel_dim
    assert dct_call(x, coeffs, -1, -1, 1.0, True, False) is None  # an int lo: Python decodes it
    assert dct_call(x, coeffs[:, :0], *basis) is None
    assert dct_call(x, coeffs, *basis[:-1]) is None  # six arguments


class LoggedTensor(torch.Tensor):
    """A subclass whose __torch_function__ records the functions called on it."""
    calls: list = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        cls.calls.append(func)
        return super().__torch_function__(func, types, args, kwargs or {})


class LoggingMode(torch.overrides.TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls.append(func)
        return func(*args, **(kwargs or {}))


def saw(calls, packet) -> bool:
    return packet in calls or packet.default in calls


def test_torch_function_subclasses_and_modes_still_see_the_op():
    x, coeffs, *basis = dct_arguments()
    logged = x.as_subclass(LoggedTensor)
    assert fastact._extension._C.hat_call(logged) is None
    LoggedTensor.calls.clear()
    y = fastact.hat(logged)
    assert saw(LoggedTensor.calls, torch.ops.fastact.hat)
    torch.testing.assert_close(y.as_subclass(torch.Tensor), fastact.reference.hat(x))
    with LoggingMode() as mode:
        assert fastact._extension._C.dct_call(x, coeffs, *basis) is None
        fastact.hat(x)
        fastact.dct.dct_series(x, coeffs, *basis)
    assert saw(mode.calls, torch.ops.fastact.hat)
    assert saw(mode.calls, torch.ops.fastact.dct_activation)


def test_direct_entries_keep_autograd_and_dispatch_modes():
    x, coeffs, *basis = dct_arguments()
    x.requires_grad_(True)
    coeffs.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, c: fastact._extension._C.dct_call(x, c, *basis),
                                    (x, coeffs))
    assert torch.autograd.gradcheck(fastact._extension._C.hat_call, (x,))
    from torch.utils._python_dispatch import TorchDispatchMode

    class Recorder(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(func)
            return func(*args, **(kwargs or {}))

    with Recorder() as recorder:
        fastact.hat(x.detach())
    assert torch.ops.fastact.hat.default in recorder.ops
