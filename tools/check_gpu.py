"""make check-gpu: the one command for a machine with a CUDA GPU.

Such machines may have no network and their own python3 with a CUDA build of torch (e.g.
torch 2.11 + cu130, Triton 3.6, Python 3.12): this uses the interpreter that runs it and
installs nothing. Steps, each timed:
  1. build the extension in place with the CUDA kernels, for the GPU present only
     (TORCH_CUDA_ARCH_LIST from its compute capability; all cores);
  2. every test marked `gpu` (the cuda, triton-cuda and reference-cuda ids; pytest -m gpu);
  3. the quick speed suite on CUDA (fastact[cuda], fastact[triton], eager, compiled, limit),
     written to bench-results/gpu/ (report.md, results.json).
Sized for under 8 minutes on one H100-class GPU with 16 cores: the build compiles the .cu
files for one architecture; the gpu tests are the CPU suite's shapes (a few hundred ids, most
of the time Triton's JIT); the quick suite is 30 cases of one size each.
Exit status: non-zero if any step failed (the later steps still run and report).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def step(name: str, cmd: list[str], env: dict) -> bool:
    print(f"\n=== check-gpu: {name}\n$ {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    code = subprocess.run(cmd, cwd=ROOT, env=env).returncode
    print(f"=== {name}: {'ok' if code == 0 else f'FAILED (exit {code})'} in "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    return code == 0


def main() -> int:
    import torch

    if not torch.cuda.is_available() or torch.version.cuda is None:
        print(f"check-gpu: needs a CUDA GPU and a CUDA build of torch (this is torch "
              f"{torch.__version__}, GPU available: {torch.cuda.is_available()})",
              file=sys.stderr)
        return 2
    major, minor = torch.cuda.get_device_capability()
    env = {**os.environ, "FASTACT_FORCE_CUDA": "1", "TORCH_CUDA_ARCH_LIST": f"{major}.{minor}",
           "MAX_JOBS": os.environ.get("MAX_JOBS", str(os.cpu_count() or 4)),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("TRITON_INTERPRET", None)  # the GPU runs Triton here
    print(f"check-gpu: {torch.cuda.get_device_name()} (sm_{major}{minor}), torch "
          f"{torch.__version__}, python {sys.version.split()[0]}", flush=True)
    start = time.perf_counter()
    python = sys.executable
    ok = step("build (CUDA kernels)", [python, "setup.py", "-q", "build_ext", "--inplace"], env)
    ok = step("gpu tests", [python, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                            "-o", "addopts=-ra"], env) and ok
    ok = step("quick speed suite on CUDA",
              [python, "benchmarks/run.py", "--suite", "speed", "--quick", "--device", "cuda",
               "--no-plots", "--out", "bench-results/gpu"], env) and ok
    print(f"\ncheck-gpu: {'OK' if ok else 'FAILED'} in {time.perf_counter() - start:.0f} s; "
          "speed report: bench-results/gpu/report.md", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
