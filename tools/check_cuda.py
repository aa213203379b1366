"""`make check-cuda`: verifies the GPU code on a machine without a GPU.

1. The CUDA build of the extension (built by the Makefile into BUILD_LIB) imports, and every
   fastact op has a CUDA kernel registered.
2. The CUDA kernels that move whole 16-byte packs (the name contains "packs_kernel") use
   128-bit global loads and stores: each csrc/cuda/*.cu is compiled to PTX for sm_90 with the
   build's flags and every such kernel's body is read.
3. Every Triton kernel (its specs: tools/triton_specs.py) compiles ahead of time for sm_80 and
   sm_90 with the specialisation the JIT gives aligned tensors; kernels with contiguous access
   must use 128-bit global loads (ld.global.v4) in their PTX, and every kernel has a spec.

Usage: python tools/check_cuda.py BUILD_LIB
"""

from __future__ import annotations

import os
import re
import sys
import time

ARCHS = (80, 90)
# 128-bit global accesses in PTX: four 32-bit lanes (float32, packed 16-bit pairs) or two
# 64-bit lanes (float64), with any cache qualifiers in between.
_WIDE = r"\.global(?:\.[a-z0-9_:]+)*?\.(?:v4\.[bfu]32|v2\.[bfu]64)\b"
WIDE_LOAD = re.compile(r"\bld" + _WIDE)
WIDE_STORE = re.compile(r"\bst" + _WIDE)


def check_extension() -> list[str]:
    import torch

    import fastact

    problems = []
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), fastact {fastact.__version__} "
          f"from {os.path.dirname(fastact.__file__)}")
    if fastact._extension.LOAD_ERROR is not None:
        return [f"fastact._C did not load: {fastact._extension.LOAD_ERROR}"]
    ops = sorted(name for name in torch._C._dispatch_get_all_op_names() if name.startswith("fastact::"))
    missing = [op for op in ops if not torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA")]
    print(f"CUDA extension: {len(ops)} ops, {len(ops) - len(missing)} with CUDA kernels")
    problems += [f"{op} has no CUDA kernel" for op in missing]
    if not ops:
        problems.append("no fastact ops registered")
    return problems


def _ptx_functions(ptx: str) -> dict[str, str]:
    """PTX entry name -> body."""
    functions = {}
    for match in re.finditer(r"\.entry\s+(\S+)\s*\(", ptx):
        end = ptx.find("\n}", match.end())
        functions[match.group(1)] = ptx[match.end():end]
    return functions


def _demangle(name: str) -> str:
    """`kernel<template args>` without namespaces and the parameter list, when c++filt exists."""
    import shutil
    import subprocess

    if shutil.which("c++filt") is None:
        return name
    text = subprocess.run(["c++filt", name], capture_output=True, text=True).stdout.strip()
    text = text.replace("(anonymous namespace)::", "").removeprefix("void ")
    text = re.sub(r"\b(?:fastact|cuda|c10|std)::", "", text)
    return text.split(">(")[0] + ">" if ">(" in text else text


def check_cuda_ptx() -> list[str]:
    """Compiles each csrc/cuda/*.cu to PTX (sm_90) and checks the pack kernels' accesses."""
    import subprocess
    import tempfile
    from pathlib import Path

    from torch.utils.cpp_extension import CUDA_HOME, include_paths

    root = Path(__file__).resolve().parent.parent
    nvcc = os.path.join(CUDA_HOME, "bin", "nvcc")
    includes = [root / "csrc", root / "csrc" / "include", *include_paths(device_type="cuda")]
    site = Path(__import__("torch").__file__).parent.parent
    includes += sorted(site.glob("nvidia/cu*/include"))
    problems = []
    print("\nCUDA kernels: PTX for sm_90 of the 16-byte pack kernels")
    print(f"{'kernel':<64} {'128b ld':>7} {'128b st':>7}")
    for source in sorted((root / "csrc" / "cuda").glob("*.cu")):
        with tempfile.TemporaryDirectory() as tmp:
            ptx_path = Path(tmp) / "out.ptx"
            command = [nvcc, "-ptx", "-arch=sm_90", "-O3", "-std=c++20", "--extended-lambda",
                       "--expt-relaxed-constexpr", "-DFASTACT_WITH_CUDA=1",
                       "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
                       "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__",
                       *[f"-I{p}" for p in includes], str(source), "-o", str(ptx_path)]
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                problems.append(f"{source.name}: nvcc -ptx failed: {result.stderr[-2000:]}")
                continue
            ptx = ptx_path.read_text()
        packs = {name: body for name, body in _ptx_functions(ptx).items() if "packs_kernel" in name}
        if not packs:
            print(f"{source.name:<64} (no pack kernels)")
        for name, body in packs.items():
            loads, stores = len(WIDE_LOAD.findall(body)), len(WIDE_STORE.findall(body))
            label = f"{source.name}: {_demangle(name)}"
            print(f"{label:<64} {loads:>7} {stores:>7}")
            if loads == 0 or stores == 0:
                problems.append(f"{label}: pack kernel without 128-bit loads and stores")
    return problems


def check_triton() -> list[str]:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from triton_specs import compile_specs, kernels_without_specs

    specs = compile_specs()
    problems = [f"{kernel} has no compile spec (tools/triton_specs.py)"
                for kernel in kernels_without_specs(specs)]
    print(f"\nTriton {triton.__version__}: ahead-of-time compile for sm_{', sm_'.join(map(str, ARCHS))}")
    print(f"{'kernel':<64} {'arch':>5} {'smem B':>7} {'128b ld':>7} {'128b st':>7} {'s':>5}")
    for spec in specs:
        names = list(spec.signature)
        # The JIT marks 16-byte-aligned pointers and sizes divisible by 16 this way.
        attrs = {
            (names.index(arg),): [["tt.divisibility", 16]]
            for arg, kind in spec.signature.items()
            if kind.startswith("*") or kind in ("i32", "i64")
        }
        for arch in ARCHS:
            start = time.perf_counter()
            try:
                source = ASTSource(spec.kernel, spec.signature, spec.constexprs, attrs)
                compiled = triton.compile(
                    source, target=GPUTarget("cuda", arch, 32), options={"num_warps": spec.num_warps}
                )
            except Exception as error:  # report every failure, not just the first
                problems.append(f"{spec.name} sm_{arch}: {type(error).__name__}: {error}")
                print(f"{spec.name:<64} {arch:>5}  FAILED: {type(error).__name__}")
                continue
            ptx = compiled.asm["ptx"]
            loads, stores = len(WIDE_LOAD.findall(ptx)), len(WIDE_STORE.findall(ptx))
            shared = compiled.metadata.shared
            print(f"{spec.name:<64} {arch:>5} {shared:>7} {loads:>7} {stores:>7} "
                  f"{time.perf_counter() - start:>5.1f}")
            if spec.vector_loads and loads == 0:
                problems.append(f"{spec.name} sm_{arch}: contiguous loads are not 128-bit "
                                "(no ld.global.v4 / ld.global.v2.b64 in the PTX)")
    return problems


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    sys.path.insert(0, os.path.abspath(sys.argv[1]))
    os.environ.pop("TRITON_INTERPRET", None)  # compile the real kernels, not the interpreter's
    problems = check_extension() + check_cuda_ptx() + check_triton()
    print()
    if problems:
        print(f"check-cuda: {len(problems)} problem(s)")
        for problem in problems:
            print(f"  - {problem}")
        return 1
    print("check-cuda: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
