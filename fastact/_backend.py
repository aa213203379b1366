"""Backend registry and selection.

A backend is a family of kernels for every op:
  "cpu"        the C++ extension's CPU kernels (CPU tensors)
  "cuda"       the C++ extension's CUDA kernels (CUDA tensors)
  "triton"     Triton kernels (CUDA tensors; CPU tensors through the Triton interpreter when
               TRITON_INTERPRET=1 was set before fastact was imported)
  "cuda-emulated"  the CUDA kernels of csrc/cuda compiled for the CPU against the SIMT
               emulator (fastact._C_emulated, built by `make build`): CPU tensors. A
               correctness tool (block threads as fibers), not fast; never chosen by "auto".
  "reference"  fastact.reference, pure PyTorch (any device)

The selection is per thread (like torch.autocast): `use_backend(name)` as a context manager,
else the environment variable FASTACT_BACKEND read at import, else "auto": CPU
tensors go to "cpu" ("reference" if the extension is not built), CUDA tensors to the backend
CUDA_AUTO names for the op (see the rule there), else whichever of "cuda" and "triton" serves.
"""

from __future__ import annotations

import os
import threading

import torch
from torch.onnx import is_in_onnx_export

from fastact import _extension, _onnx
from fastact import triton as _triton

BACKENDS = ("cpu", "cuda", "triton", "cuda-emulated", "reference")
AUTO = "auto"
ONNX = "onnx"

# The default backend per op for CUDA tensors. No GPU figure exists yet (no GPU has run
# `make bench`), so this is not a measurement. Both backends' kernels execute the whole test
# matrix on the CPU in every `make test` (Triton's in its interpreter, the CUDA C++ ones through
# the SIMT emulator, "cuda-emulated"), neither has run on a GPU; the rule until one has is "the
# backend that compiles for the GPU present": Triton compiles its kernels for whatever GPU it
# finds, the CUDA kernels are built for the architectures in TORCH_CUDA_ARCH_LIST only
# (default 8.0 and 9.0). Replace each entry with the faster backend once a GPU has measured both
# (`make check-gpu` writes the figures).
CUDA_AUTO = {
    "hat": "triton",
    "dct_activation": "triton",
    "spherical_to_cartesian": "triton",
    "cartesian_to_spherical": "triton",
    "geometric_relu": "triton",
    "geometric_relu_conv2d": "triton",
}

# Each thread's stack of use_backend names (torch.compile guards on it like on any global).
_local = threading.local()


def _stack() -> list[str]:
    try:
        return _local.stack
    except AttributeError:
        _local.stack = []
        return _local.stack


def _validated(name: str, source: str) -> str:
    if name != AUTO and name not in BACKENDS:
        raise ValueError(
            f"fastact: unknown backend {name!r} from {source}; expected one of "
            f"{', '.join(map(repr, (AUTO, *BACKENDS)))}"
        )
    return name


_default = _validated(os.environ.get("FASTACT_BACKEND", AUTO) or AUTO, "FASTACT_BACKEND")


def current_backend() -> str:
    """The backend name in force: "auto" or one of BACKENDS."""
    stack = _stack()
    return stack[-1] if stack else _default


class use_backend:
    """Context manager: run the ops inside the `with` block on backend `name` ("auto",
    "cpu", "cuda", "triton", "cuda-emulated" or "reference"), in this thread; nests. (A plain
    class rather than @contextmanager: entering costs ~1 us instead of ~8.)"""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = _validated(name, "use_backend")

    def __enter__(self) -> "use_backend":
        _stack().append(self.name)
        return self

    def __exit__(self, *exc_info) -> None:
        _stack().pop()


_CPU_KERNELS = _extension.has_kernels_for("cpu")


def auto_cpu(x) -> bool:
    """Whether an op on x runs on the "cpu" backend's C++ kernels without a choice to make: x a
    CPU tensor, the backend in force "auto" or "cpu", no compile, export or trace running (an
    eager call). The wrappers then call the C++ op at once (it checks what the Python checks
    would, with the same error types), or its direct entry in fastact._C (csrc/ops.cpp): the
    hot path of a small tensor, where select() and the checks cost as much as the kernel."""
    if not (_CPU_KERNELS and isinstance(x, torch.Tensor) and x.is_cpu):
        return False
    stack = _stack()
    name = stack[-1] if stack else _default
    return (name == AUTO or name == "cpu") and not (
        torch.compiler.is_compiling() or torch.compiler.is_exporting()
        or torch._C._get_tracing_state())


def _serves(backend: str, device: torch.device) -> bool:
    """Whether `backend` can run an op on tensors of `device` on this machine. Meta tensors
    are served by every backend with kernels (their fake kernels)."""
    kind = device.type
    if backend == "reference":
        return True
    if backend == "cuda-emulated":
        return _extension.emulated_loaded() and kind in ("cpu", "meta")
    if backend in ("cpu", "cuda"):
        return _extension.has_kernels_for(backend) and kind in (backend, "meta")
    # triton
    if not _triton.AVAILABLE:
        return False
    return kind in ("cuda", "meta") or (kind == "cpu" and _triton.INTERPRET)


def available_backends() -> list[str]:
    """The backends that can run here: "cpu" when the extension is built, "cuda" when it has
    CUDA kernels and a GPU is present, "triton" when Triton is installed and a GPU is
    present (or TRITON_INTERPRET=1), "cuda-emulated" when fastact._C_emulated is built, and
    always "reference"."""
    has_gpu = torch.cuda.is_available()
    available = []
    if _extension.has_kernels_for("cpu"):
        available.append("cpu")
    if has_gpu and _extension.has_kernels_for("cuda"):
        available.append("cuda")
    if _triton.AVAILABLE and (has_gpu or _triton.INTERPRET):
        available.append("triton")
    if _extension.emulated_loaded():
        available.append("cuda-emulated")
    available.append("reference")
    return available


def select(op: str, device: torch.device) -> str:
    """The backend that runs `op` on tensors of `device`, or a clear error."""
    # Under torch.onnx.export, which traces with torch.export (is_exporting) or torch.jit (a
    # tracing state, read as nn.Module.__call__ reads it). Those two cost ~0.1 us in an eager
    # call, is_in_onnx_export ~1 us (it imports two modules per call); torch.compile folds all
    # three to constants.
    if ((torch.compiler.is_exporting() or torch._C._get_tracing_state())
            and is_in_onnx_export()):
        return ONNX
    name = current_backend()
    if name == AUTO:
        if device.type in ("cpu", "meta"):
            return "cpu" if _serves("cpu", device) else "reference"
        if device.type == "cuda":
            preferred = CUDA_AUTO[op]
            for candidate in (preferred, "cuda", "triton", "reference"):
                if _serves(candidate, device):
                    return candidate
        raise RuntimeError(
            f"fastact.{op}: no fastact kernels serve tensors on {device.type!r} (the kernels "
            "serve 'cpu' and 'cuda' tensors). The pure-PyTorch reference runs on any device: "
            "wrap the call in `with fastact.use_backend('reference'):`."
        )
    if not _serves(name, device):
        can = [b for b in BACKENDS if _serves(b, device)]
        raise RuntimeError(
            f"fastact.{op}: backend {name!r} cannot run on {device.type!r} tensors here; "
            f"backends that can: {', '.join(map(repr, can))}"
        )
    return name


def loaded_namespaces() -> list[str]:
    """The torch.ops namespaces whose ops exist in this process: each op family registers its
    fake kernels and autograd in every one of them."""
    return ((["fastact"] if _extension.loaded() else [])
            + (["fastact_emulated"] if _extension.emulated_loaded() else [])
            + (["fastact_triton"] if _triton.AVAILABLE else []))


def ops(backend: str):
    """The ops of a backend other than "reference": torch.ops.fastact ("cpu", "cuda"),
    torch.ops.fastact_triton ("triton"), torch.ops.fastact_emulated ("cuda-emulated") or
    fastact._onnx ("onnx"), all with the same names and arguments."""
    if backend == "triton":
        return torch.ops.fastact_triton
    if backend == "cuda-emulated":
        return torch.ops.fastact_emulated
    if backend == ONNX:
        return _onnx
    return torch.ops.fastact
