"""fastact's spectral suite: the four papers' spectral and training claims, measured on
fastact's own kernels, side by side, in minutes on a laptop CPU.

    python benchmarks/spectral_suite.py [--quick] [--out bench-results] [--parts 1 3]

  1 signatures  DC and harmonics of ReLU, Hat, DCT (identity init, trained) and a GmP unit vs
                closed forms; the Taylor model of ReLU vs the exact ReLU
  2 fidelity    per op, dtype and backend: the error spectrum of the kernel output against the
                float64 reference, per octave band, against the dtype's rounding floor
  3 bias        spectral bias: ReLU / Hat / DCT / GmP networks fitting sum_k sin(2 pi k x)
  4 dc          DC experiment: 3/5/10 Hz cosines, 1-D conv net, linear vs ReLU vs linear + DC
  5 gmp         GmP vs standard parameterisation, 1-D Levy regression, lr 1e-2 and 1e-1
  6 enn         ENN (DCT activation) vs ReLU on 2-D ring / stripes / sine classification, and
                in the authors' own set-up (SGD at batch 1, DCT on the output) on stripes

The parts run side by side, one process per CPU (--workers; each part is single-threaded on
CPU). Each part writes <out>/spectral/<part>.json and PNG plots; then the suite prints every
part's tables and writes <out>/spectral/summary.json (claims, verdicts, times) and report.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

if __name__ == "__main__" and not torch.cuda.is_available():
    # Without a GPU, Triton kernels run on CPU tensors through the interpreter; Triton reads
    # this when fastact defines its kernels, so it is set before the import.
    os.environ.setdefault("TRITON_INTERPRET", "1")

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import fastact  # noqa: E402
from spectral import bias, dc, enn, fidelity, gmp, signatures  # noqa: E402
from parallel import Task, run_tasks  # noqa: E402
from spectral.common import PartResult, single_thread, write_json  # noqa: E402

PARTS = {
    "1": signatures,
    "2": fidelity,
    "3": bias,
    "4": dc,
    "5": gmp,
    "6": enn,
}
# Seconds each part takes on the development machine, (--quick, full): the order to start
# them in (parallel.run_tasks starts the longest first).
SECONDS = {"1": (3, 3), "2": (10, 35), "3": (25, 85), "4": (7, 36), "5": (17, 55), "6": (11, 85)}


def run_part(key: str, folder: Path, quick: bool, device: str) -> PartResult:
    """Part `key` (one thread on CPU), its result timed."""
    began = time.perf_counter()
    with single_thread(device):
        result = PARTS[key].run(folder, quick, device)
    result.seconds = time.perf_counter() - began
    return result


def part_tasks(out: Path, quick: bool, device: str,
               parts: list[str] | None = None) -> dict[str, Task]:
    """The chosen parts (all by default), key -> task for parallel.run_tasks."""
    folder = Path(out) / "spectral"
    folder.mkdir(parents=True, exist_ok=True)
    return {key: Task(f"spectral part {key} ({PARTS[key].__name__.rsplit('.', 1)[-1]})",
                      run_part, (key, folder, quick, device), SECONDS[key][0 if quick else 1])
            for key in parts or list(PARTS)}


def report(results: dict[str, PartResult], out: Path, quick: bool, device: str,
           seconds: float) -> None:
    """Prints the tables and claims of each part (key -> result), in part order, and writes
    summary.json and report.md into out / "spectral". `seconds`: the wall time the parts ran
    in (side by side, in make bench beside the speed suite's compiles)."""
    folder = Path(out) / "spectral"
    results = [results[key] for key in PARTS if key in results]
    print(f"\nspectral suite ({'quick' if quick else 'full'}) on {device}: fastact "
          f"{fastact.__version__}, backends {fastact.available_backends()}, "
          f"torch {torch.__version__}")
    for result in results:
        print(f"\n=== {result.title} ({result.seconds:.0f} s) ===")
        for note in result.notes:
            print(note)
        for table in result.tables:
            print(table.text())
        for claim in result.claims:
            print(f"[{claim.verdict()}] {claim.paper}: {claim.claim} {claim.evidence}")
        print("plots: " + ", ".join(str(folder / p) for p in result.plots))
    write_json(folder / "summary.json", {
        "quick": quick, "device": device, "seconds": round(seconds, 1),
        "backends": fastact.available_backends(), "torch": torch.__version__,
        "parts": [{"part": r.name, "title": r.title, "seconds": round(r.seconds, 1),
                   "plots": r.plots,
                   "claims": [{"paper": c.paper, "claim": c.claim, "reproduced": c.reproduced,
                               "evidence": c.evidence} for c in r.claims]} for r in results],
    })
    lines = [f"# fastact spectral suite ({'quick' if quick else 'full'}, {device})\n",
             f"Wall time {seconds:.0f} s (the parts side by side; each part's own time below); "
             f"torch {torch.__version__}; backends {', '.join(fastact.available_backends())}.\n"]
    lines += [r.markdown() for r in results]
    (folder / "report.md").write_text("\n".join(lines))
    print(f"\nspectral suite: {seconds:.0f} s; wrote {folder}/ (summary.json, report.md, "
          "per-part JSON and PNG)")


def run(out: Path, quick: bool, device: str, parts: list[str] | None = None,
        workers: int | None = None) -> None:
    """Runs the chosen parts (all by default) in `workers` processes (default: one per CPU),
    then prints their tables and writes JSON, PNG plots, summary.json and report.md into
    out / "spectral"."""
    start = time.perf_counter()
    tasks = part_tasks(out, quick, device, parts)
    print(f"\nspectral suite: {len(tasks)} part(s) ...", flush=True)
    results = run_tasks(list(tasks.values()), workers)
    report(dict(zip(tasks, results)), out, quick, device, time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter runs, fewer seeds")
    parser.add_argument("--out", default="bench-results", help="output folder")
    parser.add_argument("--device", choices=["cpu", "cuda"],
                        default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=None,
                        help="run only these parts (default: all)")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes running parts side by side (default: one per CPU)")
    args = parser.parse_args(argv)
    run(Path(args.out), args.quick, args.device, args.parts, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
