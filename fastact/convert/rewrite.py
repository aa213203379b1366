"""What fastact.convert needs from torch.fx: each module's own forward as a graph (the modules it
calls are leaves), and a way to give one module a new forward made from an edited graph while it
keeps its class, attributes, parameters and state_dict keys.

A rewritten module's class is a subclass of its own, made for it, whose forward is the graph's
generated code. It deep-copies and pickles (the subclass is rebuilt from the code on load).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import types
from dataclasses import dataclass, field

import torch.fx as fx
from torch import nn


class _OwnForwardTracer(fx.Tracer):
    """Traces one module's forward; every submodule it calls becomes a call_module node."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return True


@dataclass(eq=False)
class Traced:
    """One module's forward as a graph, or why there is none.

    graph: the forward traced in the module's current mode (None if it did not trace; `error`
    says why). modules: the module each call_module node calls. blocker: why the forward cannot
    be replaced by the graph's code (optional arguments the trace fixed to their defaults, a
    forward that depends on self.training), or None.
    """

    graph: fx.Graph | None
    error: str | None = None
    blocker: str | None = None
    modules: dict[fx.Node, nn.Module] = field(default_factory=dict)


@contextlib.contextmanager
def _function_attributes_as_modules(module: nn.Module, names: list[str]):
    """Makes the function-valued attributes `names` (e.g. TransformerEncoderLayer's
    `activation = F.relu`) modules for the trace, so that their calls are call_module nodes
    with the attribute's name, then puts the functions back."""
    functions = {name: module.__dict__.pop(name) for name in names}
    for name, function in functions.items():
        module._modules[name] = _FunctionCall(function)
    try:
        yield
    finally:
        for name, function in functions.items():
            del module._modules[name]
            module.__dict__[name] = function


class _FunctionCall(nn.Module):
    def __init__(self, function):
        super().__init__()
        self.function = function

    def forward(self, *args, **kwargs):
        return self.function(*args, **kwargs)


def trace(module: nn.Module, function_attributes: list[str]) -> Traced:
    """`module`'s forward as a graph (see Traced). Parameters with a default are traced at their
    default (so `if mask is not None` takes the branch a default call takes)."""
    try:
        parameters = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError) as error:
        return Traced(None, f"its forward has no signature ({error})")
    defaults = {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}
    varargs = [("*" if p.kind == p.VAR_POSITIONAL else "**") + p.name for p in parameters
               if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    mode = module.training
    codes = []
    try:
        with _function_attributes_as_modules(module, function_attributes):
            # Traced in both modes (its own flag only: submodules are leaves) to see whether
            # the code depends on self.training.
            for training in (mode, not mode):
                module.training = training
                tracer = _OwnForwardTracer()
                graph = tracer.trace(module, concrete_args=defaults or None)
                codes.append(graph.python_code("self").src)
                if len(codes) == 1:
                    traced = Traced(graph, modules={
                        node: module.get_submodule(node.target) for node in graph.nodes
                        if node.op == "call_module"})
    except Exception as error:  # noqa: BLE001  (any failure of the trace: the module walk serves)
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return Traced(None, f"{type(error).__name__}: {message[:160]}")
    finally:
        module.training = mode
    if defaults or varargs:
        listed = ", ".join([f"{name}={value!r}" for name, value in defaults.items()]
                           + varargs)
        traced.blocker = (f"its forward takes optional arguments ({listed}), which a rewrite "
                          "from the trace would fix")
    elif codes[0] != codes[1]:
        traced.blocker = "its forward depends on self.training (a trace fixes one mode)"
    return traced


def install_forward(module: nn.Module, graph: fx.Graph) -> None:
    """Gives `module` the forward `graph` computes, keeping its class as a base class."""
    graph.lint()
    if isinstance(module, fx.GraphModule):
        module.graph = graph
        module.recompile()
        return
    code = graph.python_code(root_module="self")
    base = getattr(type(module), "_fastact_base", type(module))
    module.__class__ = _rewritten_class(base, code.src, _globals_spec(code.globals))


def _globals_spec(namespace: dict) -> tuple:
    """The generated code's globals, picklable: modules by name, everything else as itself."""
    return tuple((name, "module", value.__name__) if isinstance(value, types.ModuleType)
                 else (name, "value", value) for name, value in namespace.items())


def _rewritten_class(base: type, source: str, spec: tuple) -> type:
    namespace = {name: importlib.import_module(value) if kind == "module" else value
                 for name, kind, value in spec}
    exec(compile(source, f"<fastact.convert: {base.__qualname__}.forward>", "exec"), namespace)
    return type(base.__name__, (base,), {
        "forward": namespace["forward"],
        "__module__": base.__module__,
        "__qualname__": base.__qualname__,
        "__reduce_ex__": _reduce_rewritten,
        "_fastact_base": base,
        "_fastact_forward": (source, spec),
    })


def _reduce_rewritten(module: nn.Module, protocol: int):
    cls = type(module)
    return _rebuild_rewritten, (cls._fastact_base, *cls._fastact_forward), module.__dict__.copy()


def _rebuild_rewritten(base: type, source: str, spec: tuple) -> nn.Module:
    """The empty instance pickle fills with the module's __dict__ (nn.Module.__setstate__)."""
    cls = _rewritten_class(base, source, spec)
    return cls.__new__(cls)


def unique_attribute(module: nn.Module, base: str) -> str:
    """`base`, or `base_2`, `base_3`, ..., whichever `module` has no attribute of."""
    name, count = base, 1
    while hasattr(module, name):
        count += 1
        name = f"{base}_{count}"
    return name
