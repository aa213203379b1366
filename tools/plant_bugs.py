"""Proof that the "cuda-emulated" tests bite: plants one bug at a time in a scratch copy of the
CUDA kernels, rebuilds fastact._C_emulated there, runs the tests that cover the kernel family,
and reports which failed; then restores the source and shows the same tests pass again.

The scratch copy (the checkout's tracked and untracked files, its built fastact._C) lives in
--scratch (default: a temporary folder); its emulated module is built once and then rebuilt
incrementally (one source per bug). The checkout itself is never modified.

Usage: python tools/plant_bugs.py [--bug NAME ...] [--scratch DIR] [--report FILE]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Bug:
    name: str
    what: str
    path: str      # under the checkout
    correct: str   # text that occurs once in path
    planted: str
    tests: tuple[str, ...]  # pytest arguments: the family's tests on the emulated backend


# The emulated backend's ids of a test file, and the emulator's schedule checks of a family.
def _family(test_file: str, simt_runs: str) -> tuple[str, ...]:
    return (f"tests/{test_file}", "tests/test_simt.py", "-k",
            f"cuda-emulated or (same_bits and ({simt_runs}))")


BUGS = (
    Bug("warp-scan-lane",
        "sphere.cu group_scan: a lane combines the value delta lanes up only when lane > delta "
        "(off by one lane)",
        "csrc/cuda/sphere.cu",
        "    if (lane >= delta) inclusive = op(other, inclusive);",
        "    if (lane > delta) inclusive = op(other, inclusive);",
        _family("test_geometric_maps.py", "spherical")),
    Bug("missing-syncthreads",
        "layer.cu epilogue_backward_kernel: no __syncthreads between the warps' shared-memory "
        "sums and warp 0 reading them",
        "csrc/cuda/layer.cu",
        "  warp_sums[warp][lane] = sum;\n  __syncthreads();\n",
        "  warp_sums[warp][lane] = sum;\n",
        _family("test_geometric.py", "linear or conv2d")),
    Bug("pack-tail-mask",
        "elementwise.cuh map_packs_kernel: the tail loop stops one element early (i < n - 1)",
        "csrc/cuda/elementwise.cuh",
        "  for (int64_t i = num_packs * P::size + first; i < n; i += step) {",
        "  for (int64_t i = num_packs * P::size + first; i < n - 1; i += step) {",
        _family("test_hat.py", "hat")),
    Bug("dct-backward-channel",
        "dct.cu dct_backward_rows_kernel: the tile sum of channel c reads the lane sums of "
        "channel c ^ 1",
        "csrc/cuda/dct.cu",
        "tile_sum += lane_sums[j % 2][r][threadIdx.x];",
        "tile_sum += lane_sums[j % 2][r][threadIdx.x ^ 1];",
        _family("test_dct.py", "dct")),
    Bug("gmp-tile-carry",
        "sphere.cu spherical_forward_kernel: the product of sines is not carried from one tile "
        "of the row to the next",
        "csrc/cuda/sphere.cu",
        "    carry *= total;\n  }\n}\n\n// Pass 1",
        "  }\n}\n\n// Pass 1",
        _family("test_geometric_maps.py", "spherical")),
)


def _copy_checkout(scratch: Path) -> None:
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        source = ROOT / name
        if source.is_file():
            target = scratch / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    for built in (ROOT / "fastact").glob("_C.*so"):
        shutil.copy2(built, scratch / "fastact" / built.name)


def _build(scratch: Path) -> None:
    env = dict(os.environ, FASTACT_EMULATED_CUDA="only", MAX_JOBS=os.environ.get("MAX_JOBS", "1"))
    result = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=scratch,
                            env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"building fastact._C_emulated in {scratch} failed:\n{result.stdout[-3000:]}"
                 f"{result.stderr[-3000:]}")


def _run_tests(scratch: Path, args: tuple[str, ...]) -> tuple[str, list[str]]:
    """pytest's summary line and the ids that failed."""
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider",
                             "--tb=no", *args],
                            cwd=scratch, capture_output=True, text=True)
    failed = re.findall(r"^FAILED (.+?)(?: - .*)?$", result.stdout, re.M)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr
    return summary, failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bug", action="append", choices=[b.name for b in BUGS],
                        help="plant only these (default: all)")
    parser.add_argument("--scratch", type=Path, help="the scratch copy (default: a temp dir)")
    parser.add_argument("--report", type=Path, help="also write the report (markdown) here")
    args = parser.parse_args()
    bugs = [b for b in BUGS if args.bug is None or b.name in args.bug]

    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="fastact-plant-"))
    _copy_checkout(scratch)
    print(f"scratch copy: {scratch}; building fastact._C_emulated ...", flush=True)
    _build(scratch)

    lines = ["| bug | planted | tests failed (of the family's run) | without it |",
             "|---|---|---|---|"]
    caught_all = True
    for bug in bugs:
        source = scratch / bug.path
        text = source.read_text()
        if text.count(bug.correct) != 1:
            sys.exit(f"{bug.name}: the correct text is not found once in {bug.path}")
        source.write_text(text.replace(bug.correct, bug.planted))
        print(f"\n== {bug.name}: {bug.what}", flush=True)
        _build(scratch)
        summary, failed = _run_tests(scratch, bug.tests)
        print(f"planted: {summary}")
        for name in failed:
            print(f"  FAILED {name}")
        source.write_text(text)
        _build(scratch)
        clean_summary, clean_failed = _run_tests(scratch, bug.tests)
        print(f"reverted: {clean_summary}", flush=True)
        caught = bool(failed) and not clean_failed
        caught_all = caught_all and caught
        shown = ", ".join(sorted({f.split("::")[-1] for f in failed})[:6])
        lines.append(f"| {bug.name} | {bug.what} | {summary}: {shown} | {clean_summary} |")
    report = "\n".join(lines)
    print("\n" + report)
    if args.report:
        args.report.write_text(report + "\n")
    if args.scratch is None:
        shutil.rmtree(scratch)
    return 0 if caught_all else 1


if __name__ == "__main__":
    sys.exit(main())
