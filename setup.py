"""Builds fastact._C: the CPU kernels always, the CUDA kernels when torch has CUDA and nvcc is
found; and on request fastact._C_emulated: the same CUDA sources compiled by the host compiler
against the SIMT emulator (csrc/emulator), the "cuda-emulated" backend on CPU tensors.
Environment knobs:

  FASTACT_EMULATED_CUDA=1  build fastact._C_emulated too (`make build` / `make test` do);
                           "only": build it alone (tools/plant_bugs.py)
  FASTACT_FORCE_CUDA=1   build the CUDA kernels even where this machine has no GPU (the CUDA
                         build of torch and nvcc are still needed); fail loudly if impossible
  FASTACT_SKIP_CUDA=1    never build the CUDA kernels
  TORCH_CUDA_ARCH_LIST   GPU architectures to compile for (default "8.0;9.0")
  CUDA_HOME              the CUDA toolkit root (found from nvcc's real path when unset)
  MAX_JOBS               parallel compile jobs (ninja)

Install for development with `pip install --no-build-isolation -e .` (build isolation would
download another torch).
"""

import os
import re
import shutil
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent.resolve()


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _find_cuda_home():
    """The toolkit root: CUDA_HOME, else the folder above the real nvcc binary."""
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    real = Path(nvcc).resolve()
    # /usr/local/bin/nvcc may be a wrapper script that execs the toolkit's nvcc.
    if real.parent.parent.joinpath("include", "cuda.h").exists():
        return str(real.parent.parent)
    for line in real.read_text(errors="ignore").splitlines():
        for word in line.split():
            if word.endswith("/bin/nvcc") and Path(word).exists():
                return str(Path(word).resolve().parent.parent)
    return None


# torch.utils.cpp_extension reads CUDA_HOME when imported.
if _find_cuda_home() and not os.environ.get("CUDA_HOME"):
    os.environ["CUDA_HOME"] = _find_cuda_home()
os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")

import torch  # noqa: E402
from torch.utils.cpp_extension import (  # noqa: E402
    CUDA_HOME,
    BuildExtension,
    CppExtension,
    CUDAExtension,
)


def _build_cuda() -> bool:
    if _flag("FASTACT_SKIP_CUDA"):
        return False
    possible = torch.version.cuda is not None and CUDA_HOME is not None
    if _flag("FASTACT_FORCE_CUDA"):
        if not possible:
            raise RuntimeError(
                "FASTACT_FORCE_CUDA=1 but the CUDA kernels cannot be built: "
                f"torch {torch.__version__} has CUDA {torch.version.cuda}, CUDA_HOME={CUDA_HOME}. "
                "Install a CUDA build of torch and point CUDA_HOME at the toolkit."
            )
        return True
    return possible


def _cuda_library_include_dirs():
    """Headers of the CUDA libraries torch's CUDA build depends on (cuBLAS, cuSPARSE, ...),
    which ATen's CUDA headers include. A minimal toolkit lacks them; the nvidia-* wheels that
    come with torch carry them in site-packages/nvidia/cu<major>/include."""
    site = Path(torch.__file__).parent.parent
    return sorted(str(p) for p in site.glob("nvidia/cu*/include") if p.is_dir())


def _extension():
    cpu_sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").glob("*.cpp"))
    cpu_sources += sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc" / "cpu").glob("*.cpp"))
    cxx_flags = [
        "-O3",
        "-fopenmp",  # at::parallel_for is inline: without OpenMP it would run serially
        "-fno-math-errno",  # lets the compiler vectorise without errno side effects
        "-fno-trapping-math",
        "-Wall",
        "-Wno-unknown-pragmas",
    ]
    include_dirs = [str(ROOT / "csrc"), str(ROOT / "csrc" / "include")]
    if _build_cuda():
        cuda_sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc" / "cuda").glob("*.cu"))
        return CUDAExtension(
            "fastact._C",
            cpu_sources + cuda_sources,
            include_dirs=include_dirs + _cuda_library_include_dirs(),
            define_macros=[("FASTACT_WITH_CUDA", "1")],
            extra_compile_args={
                "cxx": cxx_flags,
                "nvcc": ["-O3", "--extended-lambda", "--expt-relaxed-constexpr", "-lineinfo"],
            },
            extra_link_args=["-fopenmp"],
        )
    return CppExtension(
        "fastact._C",
        cpu_sources,
        include_dirs=include_dirs,
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=["-fopenmp"],
    )


def _emulated_extension():
    """fastact._C_emulated: each csrc/cuda/*.cu (and the emulator's probe kernels) is compiled
    as C++ through a one-line unit in build/emulated/, which includes it."""
    units_dir = ROOT / "build" / "emulated"
    units_dir.mkdir(parents=True, exist_ok=True)
    kernel_sources = sorted((ROOT / "csrc" / "cuda").glob("*.cu"))
    kernel_sources += [ROOT / "csrc" / "emulator" / "probes.cu"]
    units = []
    for source in kernel_sources:
        unit = units_dir / f"{source.stem}.cpp"
        text = f'#include "{source.relative_to(ROOT / "csrc")}"\n'
        if not unit.exists() or unit.read_text() != text:  # unchanged: ninja skips it
            unit.write_text(text)
        units.append(str(unit.relative_to(ROOT)))
    emulator_sources = ["csrc/emulator/simt.cpp", "csrc/emulator/module.cpp"]
    return CppExtension(
        "fastact._C_emulated",
        emulator_sources + units,
        include_dirs=[str(ROOT / "csrc"), str(ROOT / "csrc" / "include")],
        define_macros=[("FASTACT_EMULATED_CUDA", "1")],
        # -fno-strict-aliasing: the kernels read scalars through 16-byte pack structs, as the
        # device does; the kernels' int / unsigned comparisons (threadIdx) are nvcc's business.
        extra_compile_args={"cxx": ["-O2", "-fno-strict-aliasing", "-Wall",
                                    "-Wno-unknown-pragmas", "-Wno-sign-compare"]},
    )


def _extensions():
    emulated = os.environ.get("FASTACT_EMULATED_CUDA", "0").lower()
    if emulated == "only":
        return [_emulated_extension()]
    return [_extension()] + ([_emulated_extension()] if _flag("FASTACT_EMULATED_CUDA") else [])


setup(
    name="fastact",
    version=re.search(r"__version__ = \"(.+)\"", (ROOT / "fastact" / "_version.py").read_text()).group(1),
    description="Fused kernels for the Hat, DCT-basis (ENN) and geometric ReLU (GmP) activations",
    packages=find_packages(include=["fastact", "fastact.*"]),
    python_requires=">=3.10",
    install_requires=["torch>=2.4", "numpy"],
    extras_require={"triton": ["triton"]},
    ext_modules=_extensions(),
    cmdclass={"build_ext": BuildExtension},
    zip_safe=False,
)
