"""Loads the compiled library fastact._C, or falls back with one clear warning."""

import importlib.util
import warnings

import torch

try:
    from fastact import _C  # noqa: F401  (importing it registers torch.ops.fastact.*)

    LOAD_ERROR = None
except ImportError as error:  # not built, or built against another torch
    _C = None
    LOAD_ERROR = error
    warnings.warn(
        f"fastact: the compiled kernels (fastact._C) could not be loaded ({error}). CPU tensors "
        "will use the pure-PyTorch 'reference' backend, which is correct but slow. Build the "
        "kernels with `pip install --no-build-isolation -e .` (or `make test`).",
        RuntimeWarning,
        stacklevel=3,
    )


# fastact._C_emulated: the CUDA kernels on the SIMT emulator (the "cuda-emulated" backend),
# built on request (FASTACT_EMULATED_CUDA=1; `make build` does). Its absence is normal, and
# looked up first: `from fastact import _C_emulated` raises ImportError, not
# ModuleNotFoundError, for a missing submodule.
_C_emulated = None
EMULATED_LOAD_ERROR = None
if importlib.util.find_spec("fastact._C_emulated") is not None:
    try:
        from fastact import _C_emulated  # noqa: F401  (registers torch.ops.fastact_emulated.*)
    except ImportError as error:  # built against another torch
        EMULATED_LOAD_ERROR = error
        warnings.warn(
            f"fastact: the emulated CUDA kernels (fastact._C_emulated) could not be loaded "
            f"({error}); the 'cuda-emulated' backend is unavailable. Rebuild with `make build`.",
            RuntimeWarning,
            stacklevel=3,
        )


def emulated_loaded() -> bool:
    """Whether fastact._C_emulated is loaded (its ops are in torch.ops.fastact_emulated)."""
    return _C_emulated is not None


def loaded() -> bool:
    """Whether the compiled library is loaded (its ops are in torch.ops.fastact)."""
    return _C is not None


# The devices fastact._C has kernels for, read once here: the dispatcher query cannot be
# traced by torch.compile, a frozenset can.
KERNEL_DEVICES = frozenset(
    device
    for device in ("cpu", "cuda")
    if _C is not None and torch._C._dispatch_has_kernel_for_dispatch_key("fastact::hat", device.upper())
)


# The ops whose autograd fastact._C registers in C++ (csrc/host/autograd.h), read before the
# Python modules register theirs: those register none for these.
CPP_AUTOGRAD_OPS = frozenset(
    name
    for name in (torch._C._dispatch_get_all_op_names() if _C is not None else ())
    if name.startswith("fastact::")
    and torch._C._dispatch_has_kernel_for_dispatch_key(name, "Autograd")
)


def has_kernels_for(device_type: str) -> bool:
    """Whether fastact._C was built with kernels for `device_type` ("cpu" or "cuda")."""
    return device_type in KERNEL_DEVICES


def cpu_isa() -> str | None:
    """The instruction set the CPU kernels run with ("avx512", "avx2" or "portable"), None if
    not built."""
    return None if _C is None else _C.cpu_isa()
