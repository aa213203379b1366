"""fastact's benchmark suite (what `make bench` runs).

    python benchmarks/run.py                  # every op, float32 and bfloat16
    python benchmarks/run.py --ops hat --quick

Prints a table per op and writes bench-results/ (results.json, report.md).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

import fastact  # noqa: E402
from harness import DTYPES, run_case  # noqa: E402

import bench_dct  # noqa: E402
import bench_geometric  # noqa: E402
import bench_hat  # noqa: E402

OPS = {
    "hat": bench_hat.cases,
    "dct_activation": bench_dct.cases,
    "spherical_to_cartesian": bench_geometric.map_cases,
    "geometric_relu": bench_geometric.layer_cases,
    "geometric_relu_conv2d": bench_geometric.conv_cases,
}


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE,
                                capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "triton": triton_version,
        "fastact": fastact.__version__,
        "cpu_kernels": fastact._extension.cpu_isa(),
        "commit": commit,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def summarise(case, timings) -> dict:
    """The row of a case: each provider's median and p20/p80 (ms) and the ratios."""
    row = {"op": case.op, "mode": case.mode, "dtype": case.dtype, "size": case.size,
           "numel": case.numel,
           "ms": {name: round(t.p50 * 1e3, 4) for name, t in timings.items()},
           "p20_ms": {name: round(t.p20 * 1e3, 4) for name, t in timings.items()},
           "p80_ms": {name: round(t.p80 * 1e3, 4) for name, t in timings.items()}}
    ours = {name: t.p50 for name, t in timings.items() if name.startswith("fastact")}
    best = min(ours.values())
    row["ratios"] = {
        "fastact/limit": round(best / timings["limit"].p50, 3),
        "compiled/fastact": round(timings["compiled"].p50 / best, 3),
        "eager/fastact": round(timings["eager"].p50 / best, 3),
    }
    return row


def print_rows(rows: list[dict]) -> None:
    providers = list(rows[0]["ms"])
    header = (f"{'mode':<17} {'dtype':<9} {'size':<10}"
              + "".join(f"{p:>15}" for p in providers)
              + f"{'fastact/limit':>15}{'vs compiled':>13}{'vs eager':>10}")
    print(f"\n{rows[0]['op']} (median ms; ratios of the fastest fastact backend)")
    print(header)
    for row in rows:
        r = row["ratios"]
        print(f"{row['mode']:<17} {row['dtype']:<9} {row['size']:<10}"
              + "".join(f"{row['ms'][p]:>15.3f}" for p in providers)
              + f"{r['fastact/limit']:>14.2f}x{r['compiled/fastact']:>12.2f}x"
              + f"{r['eager/fastact']:>9.2f}x")


def markdown(rows: list[dict], info: dict) -> str:
    lines = [f"# fastact benchmark\n",
             f"Machine: {info['cpu']} ({info['cores']} cores, {info['threads']} threads)"
             f"{', GPU ' + info['gpu'] if info['gpu'] else ''}; torch {info['torch']}, "
             f"triton {info['triton']}, CPU kernels {info['cpu_kernels']}, commit "
             f"{info['commit']}, {info['date']}.\n",
             "Median ms; `fastact/limit` is fastact's time over a native op moving the same "
             "bytes (1.0 = memory-bound limit); `vs compiled` / `vs eager` are the reference's "
             "time over fastact's (higher is better).\n"]
    for op in dict.fromkeys(row["op"] for row in rows):
        op_rows = [row for row in rows if row["op"] == op]
        providers = list(op_rows[0]["ms"])
        lines.append(f"\n## {op}\n")
        lines.append("| mode | dtype | size | " + " | ".join(providers)
                     + " | fastact/limit | vs compiled | vs eager |")
        lines.append("|" + "---|" * (3 + len(providers) + 3))
        for row in op_rows:
            r = row["ratios"]
            lines.append(f"| {row['mode']} | {row['dtype']} | {row['size']} | "
                         + " | ".join(f"{row['ms'][p]:.3f}" for p in providers)
                         + f" | {r['fastact/limit']:.2f} | {r['compiled/fastact']:.2f}x"
                         f" | {r['eager/fastact']:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", nargs="+", choices=list(OPS), default=list(OPS))
    parser.add_argument("--dtype", nargs="+", choices=list(DTYPES), default=["float32", "bfloat16"])
    parser.add_argument("--device", choices=["cpu", "cuda"],
                        default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="fewer sizes and shorter timing")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds")
    parser.add_argument("--out", default="bench-results", help="output folder")
    args = parser.parse_args(argv)

    rounds = args.rounds or (3 if args.quick else 5)
    min_run_time = 0.6 if args.quick else 1.5
    dtypes = [DTYPES[d] for d in args.dtype]
    info = machine()
    print(f"fastact {info['fastact']} on {info['cpu']} ({info['threads']} threads)"
          f"{', ' + info['gpu'] if info['gpu'] else ''}; torch {info['torch']}, "
          f"CPU kernels: {info['cpu_kernels']}")
    start = time.perf_counter()
    rows = []
    for op in args.ops:
        op_rows = [summarise(case, run_case(case, args.device, rounds, min_run_time))
                   for case in OPS[op](args.device, dtypes, args.quick)]
        print_rows(op_rows)
        rows += op_rows
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=1))
    (out / "report.md").write_text(markdown(rows, info))
    print(f"\nwrote {out}/results.json and {out}/report.md in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
