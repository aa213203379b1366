"""The Triton kernel specialisations `make check-cuda` compiles ahead of time
(tools/check_cuda.py), derived from the kernels.

A kernel's signature comes from its @triton.jit function: its parameter names, and which of
them are constexpr. A parameter's type follows from its name (PARAMETER_TYPES; otherwise
`*_ptr` points at the spec's data dtype and any other name is an int64) and the spec's dtype;
a kernel with an ACC parameter gets the compute dtype there. What is listed here per kernel is
what the launches choose: the constexpr values, the warps, the dtypes, and whether the access
is contiguous, so that the PTX must show 128-bit global loads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

FLOATS = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32",
          torch.float64: "fp64"}

# The parameters whose type is not the rule's: "compute" is the spec's compute dtype (float64
# for float64, float32 otherwise).
PARAMETER_TYPES = {
    "mask_ptr": "*i32",  # the GmP layer's activity bits, 32 columns a word
    "tail_ptr": "*fp64",  # the inverse map's float64 workspace
    "work_ptr": "*compute",
    "partial_ptr": "*compute",
    "table_ptr": "*compute",
    "radius_columns_ptr": "*compute",
    "bias_columns_ptr": "*compute",
    "num_coeffs": "i32",
    "scale": "fp64",   # the DCT's t = x * scale + offset, passed as float64 scalars
    "offset": "fp64",
}


@dataclass(frozen=True)
class CompileSpec:
    """One specialisation of a kernel: argument name -> Triton type ("*fp32", "i64",
    "constexpr"), the constexpr values, the warps, and whether the PTX must show 128-bit global
    loads (contiguous access)."""

    kernel: object
    signature: dict[str, str]
    constexprs: dict[str, object]
    num_warps: int
    vector_loads: bool

    @property
    def name(self) -> str:
        types = ",".join(t for t in self.signature.values() if t != "constexpr")
        return f"{self.kernel.__name__}({types})"


def _compute(dtype: torch.dtype) -> torch.dtype:
    from fastact.triton._common import torch_compute_dtype

    return torch_compute_dtype(dtype)


def _parameter_type(name: str, dtype: torch.dtype) -> str:
    kind = PARAMETER_TYPES.get(name, "*data" if name.endswith("_ptr") else "i64")
    if kind == "*data":
        return f"*{FLOATS[dtype]}"
    if kind == "*compute":
        return f"*{FLOATS[_compute(dtype)]}"
    return kind


def specialise(kernel, dtype: torch.dtype, constexprs: dict, num_warps: int = 4,
               vector_loads: bool = True) -> CompileSpec:
    """The spec of `kernel` for data of `dtype` with the given constexpr values."""
    from fastact.triton._common import compute_dtype

    signature = {p.name: "constexpr" if p.is_constexpr else _parameter_type(p.name, dtype)
                 for p in kernel.params}
    values = {**constexprs, **({"ACC": compute_dtype(dtype)} if "ACC" in signature else {})}
    wanted = {name for name, kind in signature.items() if kind == "constexpr"}
    if set(values) != wanted:
        raise ValueError(f"{kernel.__name__}: constexpr values for {sorted(values)}, but its "
                         f"constexpr parameters are {sorted(wanted)}")
    return CompileSpec(kernel, signature, values, num_warps, vector_loads)


def compile_specs() -> list[CompileSpec]:
    """Every kernel in the four dtypes for its common configuration; the DCT's other basis and
    boundary in float32."""
    from fastact.triton import _common, dct, hat, layer, sphere

    def each_float(kernel, constexprs, num_warps=4, vector_loads=True, dtypes=FLOATS):
        return [specialise(kernel, dtype, constexprs, num_warps, vector_loads)
                for dtype in dtypes]

    elementwise = {"BLOCK": _common.ELEMENTWISE_BLOCK}
    row_tile = {"BLOCK": sphere.ROW_TILE}
    row_block = {"BLOCK_R": sphere.ROWS_PER_PROGRAM}
    epilogue = {"BLOCK_R": layer.EPILOGUE_ROWS, "BLOCK_M": layer.EPILOGUE_COLS}
    specs = [
        *each_float(hat._hat_forward_kernel, elementwise, _common.ELEMENTWISE_WARPS),
        *each_float(hat._hat_backward_kernel, elementwise, _common.ELEMENTWISE_WARPS),
        # Angles are read at k and k - 1: unaligned, scalar loads.
        *each_float(sphere._spherical_forward_kernel, row_tile, sphere.ROW_WARPS, False),
        *each_float(sphere._spherical_backward_kernel, row_tile, sphere.ROW_WARPS, False),
        # A lane per row, walking along rows: strided.
        *each_float(sphere._cartesian_forward_kernel, row_block, 1, False),
        *each_float(sphere._cartesian_backward_kernel,
                    {**row_block, "HAS_GRAD_RADIUS": True, "HAS_GRAD_THETA": True}, 1, False),
        *each_float(layer._epilogue_forward_kernel, epilogue, layer.EPILOGUE_WARPS),
        *each_float(layer._epilogue_backward_kernel, epilogue, layer.EPILOGUE_WARPS),
        *each_float(layer._radial_backward_kernel,
                    {"HAS_BIAS": True, "PER_POSITION": False, "WITH_WEIGHT": True,
                     "BLOCK": layer.RADIAL_BLOCK}),
        *each_float(dct._sum_pieces_kernel, {"BLOCK": dct.SUM_BLOCK, "CHUNK": dct.SUM_CHUNK},
                    dtypes=(torch.float32, torch.float64)),
    ]
    for dtype in FLOATS:
        bases = [{"ODD": True, "CLAMP": False}]
        if dtype == torch.float32:
            bases.append({"ODD": False, "CLAMP": True})
        for basis in bases:
            for layout in (dct.CHANNELS_FASTEST, dct.RUNS, dct.SHARED):
                specs.append(specialise(
                    dct._dct_forward_kernel, dtype,
                    {**basis, "LAYOUT": layout, "BLOCK": dct.FORWARD_BLOCK}, dct.FORWARD_WARPS))
            grads = {**basis, "GRAD_X": True, "GRAD_COEFFS": True}
            specs.append(specialise(
                dct._dct_backward_rows_kernel, dtype,
                {**grads, "ROWS": dct.ROW_TILE, "COLUMNS": dct.CHANNEL_TILE}, dct.ROW_WARPS))
            for layout in (dct.RUNS, dct.SHARED):
                # Runs are gathered by index math (a run may end inside a vector).
                specs.append(specialise(
                    dct._dct_backward_runs_kernel, dtype,
                    {**grads, "LAYOUT": layout, "BLOCK": dct.RUN_TILE}, dct.RUN_WARPS,
                    vector_loads=layout == dct.SHARED))
    return specs


def kernels_without_specs(specs: list[CompileSpec]) -> list[str]:
    """The @triton.jit kernels (names ending in `_kernel`) of fastact.triton that no spec
    compiles."""
    import importlib
    import pkgutil

    import triton

    import fastact.triton

    covered = {id(spec.kernel) for spec in specs}
    missing = []
    for info in pkgutil.iter_modules(fastact.triton.__path__):
        module = importlib.import_module(f"fastact.triton.{info.name}")
        for name, value in vars(module).items():
            if (isinstance(value, triton.runtime.jit.JITFunction) and name.endswith("_kernel")
                    and id(value) not in covered):
                missing.append(f"fastact.triton.{info.name}.{name}")
    return missing
