"""Argument checks shared by the ops: each error names the op, the argument and what was
expected, and is raised before any kernel runs."""

import torch

from fastact import _extension

FLOAT_DTYPES = frozenset((torch.float16, torch.bfloat16, torch.float32, torch.float64))


def float_tensor(op: str, name: str, value) -> None:
    if isinstance(value, torch.fx.Proxy):
        raise TypeError(
            f"fastact.{op}: {name} is a torch.fx Proxy: a fastact function called directly in a "
            "forward cannot be traced symbolically. Use the fastact.nn module instead (its op "
            "becomes one graph node), or call torch.fx.wrap('<name>') at the top level of the "
            "module that calls it"
        )
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"fastact.{op}: {name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"fastact.{op}: {name} must be a float16, bfloat16, float32 or float64 tensor, "
            f"got {value.dtype}"
        )


def same_device(op: str, **tensors) -> None:
    """All the given tensors (None skipped) live on one device."""
    present = {name: t for name, t in tensors.items() if t is not None}
    if all(t.is_cpu for t in present.values()):
        return  # the common case, without building torch.device objects (~0.5 us each)
    devices = {t.device for t in present.values()}
    if len(devices) > 1:
        listed = ", ".join(f"{name} on {t.device}" for name, t in present.items())
        raise RuntimeError(f"fastact.{op}: expected all tensors on one device, got {listed}")


def not_scriptable(what: str) -> None:
    """The one error torch.jit.script gives for a model holding a fastact module."""
    raise RuntimeError(
        f"fastact.{what} cannot be compiled by torch.jit.script: fastact's ops check their "
        "arguments and pick a backend in Python. Use torch.jit.trace(model, example_inputs) or "
        "torch.export.export(model, (x,)) (fastact's ops are custom ops: both record them), or "
        "torch.compile(model)"
    )


class NotScriptable:
    """A mixin for the fastact.nn modules. torch.jit.script calls __prepare_scriptable__ on every
    submodule before compiling: one clear error there, instead of a TorchScript compiler error
    from deep inside an op's Python checks."""

    def __prepare_scriptable__(self):
        not_scriptable(f"nn.{type(self).__name__}")


def register_backward_ops(namespace: str, fakes: dict) -> None:
    """Registers the fake kernel of each of `namespace`'s backward ops (name -> fake) and, as
    its autograd formula, a clear error on double backward (these ops have none)."""
    for name, fake in fakes.items():
        def backward(ctx, *grads, name=name):
            raise RuntimeError(f"fastact.{name}: the backward op is not differentiable (double "
                               "backward is not supported)")

        torch.library.register_fake(f"{namespace}::{name}", fake)
        torch.library.register_autograd(f"{namespace}::{name}", backward,
                                        setup_context=lambda ctx, inputs, output: None)


def register_autograd(qualname: str, backward, setup_context) -> None:
    """torch.library.register_autograd, unless the compiled library registers the op's autograd
    in C++ (the fastact:: forward ops: a Python autograd kernel costs ~5 us a call)."""
    if qualname not in _extension.CPP_AUTOGRAD_OPS:
        torch.library.register_autograd(qualname, backward, setup_context=setup_context)
