"""fastact's benchmark suite (what `make bench` runs).

    python benchmarks/run.py                      # speed + spectral suites, every op
    python benchmarks/run.py --suite speed --ops hat --quick
    python benchmarks/run.py --check benchmarks/baseline.json   # against stored ratios
    python benchmarks/run.py --update-baseline    # 5 quick runs -> this machine's baseline

The performance gate (make bench-check) is gate.py: it runs this script's quick suite in
fresh processes of two builds (--timing gate); --check, against the stored ratios of
baseline.json, is its fall-back where the baseline commit cannot be built.

The speed suite times every op registered in OPS (forward, backward, forward+backward;
float32 and bfloat16; several sizes) for fastact on each backend, the reference in eager
mode and under torch.compile, and the memory-bound limit (see harness.py). It prints a table
per op and writes into --out (bench-results/): results.json, report.md and plots/*.png. The
spectral suite (spectral_suite.py) writes into --out/spectral/.

The work that is not timed comes first, side by side (parallel.py): the spectral suite's
parts in worker processes and meanwhile, in this process, the torch.compile of the speed
cases' reference. Then the speed suite times on a machine with nothing else of ours running,
and the spectral tables are printed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

if not torch.cuda.is_available():
    # The spectral suite measures the Triton kernels through the interpreter here (the speed
    # suite never times it); Triton reads this when fastact defines its kernels.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import fastact  # noqa: E402
from harness import (DTYPES, fastact_backends, peak_memory_cuda, run_cases,  # noqa: E402
                     steady_allocator)
import memory  # noqa: E402
import parallel  # noqa: E402
import regression  # noqa: E402
import report  # noqa: E402
import spectral_suite  # noqa: E402
from cases import OPS, measures_memory, sizes  # noqa: E402

# Timing (harness.run_cases): interleaved rounds, seconds of samples per provider and case,
# and the fewest samples of a provider whose single call outlasts its share of a round.
# "gate": one of the performance gate's processes (gate.py), which runs several per build.
TIMING = {
    "full": {"rounds": 8, "min_run_time": 0.8, "min_samples": 3},
    "quick": {"rounds": 10, "min_run_time": 0.3, "min_samples": 1},
    "gate": {"rounds": 6, "min_run_time": 0.12, "min_samples": 1},
}
# Seconds a case takes beyond its timing (warm-up calls, torch.compile), for the estimate.
CASE_OVERHEAD_S = {"full": 3.5, "quick": 2.5}
DEFAULT_BASELINE = HERE / "baseline.json"
CASE_SEP = ":"  # --cases hat:forward+backward:float32:2^18
BASELINE_RUNS = 5


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
        commit = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=10"],
                                cwd=HERE, capture_output=True, text=True).stdout.strip()
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
        "fastact_path": str(Path(fastact.__file__).resolve().parent),
        "cpu_kernels": fastact._extension.cpu_isa(),
        "commit": commit,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load": " ".join(f"{v:.2f}" for v in os.getloadavg()),
    }


ROW_MACHINE = ("cpu", "cores", "threads", "gpu", "torch", "triton", "commit")


def summarise(case, timings, info: dict) -> dict:
    """The row of a case: each provider's median and p20/p80 (ms), sample count and round
    medians, the ratios of the fastest fastact backend, the checked ratios, and the machine."""
    def ms(seconds):
        return None if seconds is None else round(seconds * 1e3, 5)

    row = {"op": case.op, "mode": case.mode, "dtype": case.dtype, "size": case.size,
           "numel": case.numel, "limit_name": case.limit_name,
           "ms": {name: ms(t.p50) for name, t in timings.items()},
           "p20_ms": {name: ms(t.p20) for name, t in timings.items()},
           "p80_ms": {name: ms(t.p80) for name, t in timings.items()},
           "samples": {name: t.samples for name, t in timings.items()},
           "round_ms": {name: [ms(r) for r in t.rounds] for name, t in timings.items()}}
    ours = [t.p50 for name, t in timings.items() if name.startswith("fastact")]
    best = min(ours) if ours else math.nan
    # Against the fastest compiled provider where an op has several ("compiled[<name>]");
    # NaN where a case has none (the call-cost cases).
    compiled = min((t.p50 for name, t in timings.items() if name.split("[")[0] == "compiled"),
                   default=math.nan)
    row["ratios"] = {
        "fastact/limit": round(best / timings["limit"].p50, 3),
        "compiled/fastact": round(compiled / best, 3),
        "eager/fastact": round(timings["eager"].p50 / best, 3) if "eager" in timings
        else math.nan,
    }
    row["check"] = {name: round(v, 4) for name, v in regression.check_ratios(row).items()}
    row["machine"] = {k: info[k] for k in ROW_MACHINE}
    return row


def expected_cases(ops: list[str], n_dtypes: int, quick: bool) -> int:
    """How many cases the ops will yield, from their modules' SIZES / QUICK_SIZES (3 sizes
    assumed where a module has none)."""
    return sum(len(sizes(op, quick) or range(3)) * n_dtypes * 3 for op in ops)


def estimate_s(n_cases: int, device: str, quick: bool) -> float:
    kind = "quick" if quick else "full"
    providers = 3 + len(fastact_backends(device))
    return n_cases * (providers * TIMING[kind]["min_run_time"] + CASE_OVERHEAD_S[kind])


def runnable_cases(ops: list[str], dtypes: list, device: str, keep) -> list:
    """The quick cases of `ops` that run here, each provider called once; the others are
    reported as "skipped:" lines. For the performance gate, whose baseline build may predate
    an op or an argument that this tree's cases use."""
    cases = []
    for op in ops:
        try:
            op_cases = [case for case in OPS[op](device, dtypes, True) if keep(case)]
        except Exception as error:  # noqa: BLE001 - any failure of an older build
            print(f"skipped: {op}: {type(error).__name__}: {error}", flush=True)
            continue
        for case in op_cases:
            try:
                for fn in case.providers.values():
                    fn()
            except Exception as error:  # noqa: BLE001
                print(f"skipped: {' '.join(case.key)}: {type(error).__name__}: {error}",
                      flush=True)
                continue
            cases.append(case)
    return cases


def run_speed(ops: list[str], dtypes: list, device: str, quick: bool, info: dict,
              measure_memory: bool, print_tables: bool = True,
              keep=lambda case: True, timing_name: str | None = None) -> list[dict]:
    """Times every case of `ops` (those `keep` accepts) and prints a table per op. With
    --quick all the cases of the run are interleaved with each other (harness.run_cases), so
    the regression check's ratios average over the whole run rather than over the few seconds
    one case takes; the full suite interleaves the providers within each case and holds one
    case's tensors at a time."""
    timing_name = timing_name or ("quick" if quick else "full")
    timing = TIMING[timing_name]

    def row_of(case, timings):
        row = summarise(case, timings, info)
        if measure_memory and device == "cuda" and case.mode == "forward+backward":
            row["peak_mib"] = {name: round(peak_memory_cuda(fn) / report.MIB, 2)
                               for name, fn in case.providers.items()}
            row["peak_how"] = "CUDA max_memory_allocated"
        return row

    def show(op_rows):
        if print_tables and op_rows:
            report.print_rows(op_rows)

    rows = []
    if quick:
        cases = (runnable_cases(ops, dtypes, device, keep) if timing_name == "gate" else
                 [case for op in ops for case in OPS[op](device, dtypes, quick) if keep(case)])
        progress = report.Progress(len(cases) * (1 + timing["rounds"]))
        rows = [row_of(case, timings)
                for case, timings in zip(cases, run_cases(cases, device, progress=progress,
                                                          **timing))]
        del cases
        progress.clear()
        for op in ops:
            show([row for row in rows if row["op"] == op])
        return rows
    progress = report.Progress(expected_cases(ops, len(dtypes), quick) * (1 + timing["rounds"]))
    for op in ops:
        op_rows = [row_of(case, run_cases([case], device, progress=progress, **timing)[0])
                   for case in OPS[op](device, dtypes, quick) if keep(case)]
        progress.clear()
        show(op_rows)
        rows += op_rows
    return rows


def add_cpu_memory(rows: list[dict], ops: list[str], dtypes: list[str], quick: bool) -> None:
    """Peak resident-set growth of forward+backward at each op's largest size (memory.py)."""
    start = time.perf_counter()
    print(f"\npeak memory: one process per op ({len(ops)}), two at a time ...", flush=True)
    records, errors = memory.measure_all(ops, dtypes, quick, torch.get_num_threads())
    for error in errors:
        print(f"  peak memory failed for {error}")
    for record in records:
        for row in rows:
            if (row["op"], row["mode"], row["dtype"], row["size"]) == (
                    record["op"], "forward+backward", record["dtype"], record["size"]):
                row["peak_mib"] = {k: round(v / report.MIB, 2) for k, v in record["bytes"].items()}
                row["peak_how"] = "resident-set growth of one call in a fresh process"
    print(f"peak memory measured in {time.perf_counter() - start:.0f} s")


def write_outputs(rows: list[dict], info: dict, settings: dict, out: Path, plots: bool,
                  elapsed_s: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    written = report.plot(rows, out) if plots and rows else {}
    (out / "results.json").write_text(json.dumps(
        {"settings": settings, "machine": info, "elapsed_s": round(elapsed_s, 1), "rows": rows},
        indent=1))
    (out / "report.md").write_text(report.markdown(rows, info, written))
    print(f"\nwrote {out}/results.json, {out}/report.md"
          + (f" and {sum(map(len, written.values()))} plots in {out}/plots" if written else ""))


def speed_suite(args, info: dict) -> list[dict]:
    dtypes = [DTYPES[d] for d in args.dtype]
    wanted = {tuple(case.split(CASE_SEP)) for case in args.cases or []}
    if wanted:
        args.ops = list(dict.fromkeys(key[0] for key in sorted(wanted)))
    timing_name = args.timing or ("quick" if args.quick else "full")
    settings = {"quick": args.quick, "threads": torch.get_num_threads(), "device": args.device,
                "dtypes": args.dtype, "ops": args.ops, "timing": TIMING[timing_name]}
    n_cases = len(wanted) or expected_cases(args.ops, len(dtypes), args.quick)
    print(f"speed suite: {', '.join(args.ops)}; {', '.join(args.dtype)}; about {n_cases} cases, "
          f"about {report.mmss(estimate_s(n_cases, args.device, args.quick))} min"
          + (" plus peak memory" if args.memory else ""), flush=True)
    if args.device == "cpu" and torch.get_num_threads() > 1 and os.getloadavg()[0] > 1.5:
        print(f"warning: the machine is busy (load average {info['load']}): a parallel region "
              "waits for any thread another process preempts, which can dominate the times; "
              "--threads 1 gives steadier figures", flush=True)
    start = time.perf_counter()
    rows = run_speed(args.ops, dtypes, args.device, args.quick, info, args.memory,
                     keep=(lambda case: case.key in wanted) if wanted else (lambda case: True),
                     timing_name=timing_name)
    if args.memory and args.device == "cpu":
        add_cpu_memory(rows, [op for op in args.ops if measures_memory(op)], args.dtype,
                       args.quick)
        for op in dict.fromkeys(row["op"] for row in rows):
            op_rows = [row for row in rows if row["op"] == op and row.get("peak_mib")]
            if op_rows:
                report.print_rows([row for row in rows if row["op"] == op])
    write_outputs(rows, info, settings, Path(args.out), args.plots, time.perf_counter() - start)
    print(f"speed suite took {time.perf_counter() - start:.0f} s")
    return rows


def compile_reference(op: str, dtypes: list[str], device: str, quick: bool,
                      threads: int) -> None:
    """Calls the compiled reference of each of `op`'s cases once, which compiles them (while
    the spectral parts run in other processes): dynamo keeps the compiled code in this process,
    where the speed suite's calls of the same cases then find it."""
    torch.set_num_threads(threads)  # the generated CPU code depends on it
    for case in OPS[op](device, [DTYPES[d] for d in dtypes], quick):
        for name, provider in case.providers.items():
            if name.split("[")[0] == "compiled":
                provider()


def compile_tasks(args) -> list[parallel.Task]:
    return [parallel.Task(f"torch.compile of the {op} reference", compile_reference,
                          (op, args.dtype, args.device, args.quick, torch.get_num_threads()),
                          here=True)
            for op in args.ops]


def check(args, info: dict) -> int:
    """--check BASELINE: the quick speed suite at the settings of this machine's baseline in
    the file BASELINE, compared with it; failing cases measured again once."""
    wanted = regression.machine_class(info, args.device)
    document = json.loads(Path(args.check).read_text())
    baselines = regression.baselines_of(document)
    chosen = regression.select_baseline(baselines, wanted)
    if "baselines" not in document and chosen is not None and not chosen[1]:
        # A file of one baseline (regression.build_baseline's dict alone) is the baseline
        # wanted, whatever machine it was measured on.
        print(f"note: {args.check} was measured on {chosen[0]}, this machine is {wanted}")
        chosen = (chosen[0], True)
    if chosen is None:
        print(f"error: {args.check} has no baseline measured on {args.device!r} (it has "
              f"{', '.join(baselines) or 'none'}); make one on this machine with "
              "--update-baseline", file=sys.stderr)
        return 2
    name, same_machine = chosen
    baseline = baselines[name]
    path = f"{args.check} [{name}]"
    settings = baseline["settings"]
    min_tolerance = 0.0
    if not same_machine:
        min_tolerance = regression.CROSS_MACHINE_TOLERANCE
        print(f"note: no baseline for this machine ({wanted}); comparing with {path} "
              f"with every tolerance at least +{min_tolerance:.0%}, which catches gross "
              "regressions only: make a baseline for this machine with make bench-baseline")
    if settings.get("timing") != TIMING["quick"]:
        print(f"note: {path} was measured with timing settings {settings.get('timing')}, "
              f"this run uses {TIMING['quick']}: refresh the baseline (make bench-baseline)")
    torch.set_num_threads(settings["threads"])
    info["threads"] = settings["threads"]
    args.quick, args.dtype = True, settings["dtypes"]
    print(f"regression check: the --quick speed suite at {path}'s settings "
          f"({settings['threads']} thread(s), {', '.join(args.dtype)})")
    rows = speed_suite(args, info)
    result = regression.check(rows, baseline, args.ops,
                              lambda keys: remeasure(keys, args, Path(args.out) / "remeasured"),
                              min_tolerance)
    print(regression.report(result, path))
    return 0 if result.passed else 1


def remeasure(keys: list[tuple], args, out: Path) -> list[dict]:
    """The rows of the cases `keys`, measured again in a fresh process (run.py --cases): a
    slow spell that lasts the whole of one process (where its heap put the tensors, where
    the machine placed it) then cannot fail a case twice."""
    print(f"\nmeasuring {len(keys)} failing case(s) again, in a fresh process ...", flush=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--suite", "speed", "--quick",
           "--no-memory", "--no-plots", "--threads", str(torch.get_num_threads()),
           "--device", args.device, "--dtype", *args.dtype, "--out", str(out),
           "--cases", *(CASE_SEP.join(key) for key in keys)]
    if subprocess.run(cmd).returncode != 0:
        raise RuntimeError("measuring the failing cases again failed: " + " ".join(cmd))
    return json.loads((out / "results.json").read_text())["rows"]


def head_commit() -> str | None:
    """HEAD, the commit the performance gate builds as its baseline after a refresh (warning
    when the tree's sources differ from it: commit first, then refresh)."""
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True)
    if done.returncode != 0:
        print("warning: not a git checkout: no baseline commit recorded", file=sys.stderr)
        return None
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "csrc", "fastact", "setup.py"],
                           cwd=HERE.parent, capture_output=True, text=True).stdout.strip()
    if dirty:
        print("warning: csrc/, fastact/ or setup.py differ from HEAD: the gate's baseline is "
              "HEAD as committed, not this tree (commit, then make bench-baseline)",
              file=sys.stderr)
    return done.stdout.strip()


def update_baseline(args) -> int:
    """--update-baseline: the quick suite BASELINE_RUNS times, each in a fresh process, then
    the baseline (median ratios, tolerances from their spread) and the noise study."""
    path = Path(args.update_baseline)
    out = Path(args.out)
    threads = args.threads or 1
    runs = []
    for i in range(args.repeat):
        run_out = out / "baseline-runs" / f"run-{i + 1}"
        print(f"\n=== baseline run {i + 1}/{args.repeat} (load average "
              f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}) ===", flush=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--suite", "speed", "--quick",
               "--no-memory", "--no-plots", "--threads", str(threads), "--device", args.device,
               "--ops", *args.ops, "--dtype", *args.dtype, "--out", str(run_out)]
        if subprocess.run(cmd).returncode != 0:
            print(f"error: baseline run {i + 1} failed", file=sys.stderr)
            return 1
        runs.append(json.loads((run_out / "results.json").read_text()))
    baseline = regression.build_baseline(runs)
    baselines = regression.baselines_of(json.loads(path.read_text())) if path.exists() else {}
    name = regression.machine_class(baseline["machine"], args.device)
    baselines[name] = baseline  # the other machine classes' baselines stay
    commit = head_commit()
    path.write_text(regression.dumps(baselines, commit))
    noise = regression.noise_table(baseline)
    (out / "noise.md").write_text("# Noise study of the regression check's ratios\n\n"
                                  + "Load average before each run: "
                                  + "; ".join(run["machine"]["load"] for run in runs)
                                  + ".\n\n" + noise)
    print("\n" + noise + f"\nwrote the {name} baseline and the baseline commit {commit} into "
          f"{path}, and {out}/noise.md")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=["speed", "spectral", "all"], default="all")
    parser.add_argument("--ops", nargs="+", choices=list(OPS), default=list(OPS))
    parser.add_argument("--dtype", nargs="+", choices=list(DTYPES), default=["float32", "bfloat16"])
    parser.add_argument("--device", choices=["cpu", "cuda"],
                        default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true",
                        help="fewer sizes and shorter timing (the regression check's settings)")
    parser.add_argument("--out", default="bench-results", help="output folder")
    parser.add_argument("--timing", choices=list(TIMING),
                        help="timing settings (default: quick with --quick, else full; gate: "
                             "one process of the performance gate, with --quick)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's; --update-baseline: 1)")
    parser.add_argument("--memory", action=argparse.BooleanOptionalAction, default=None,
                        help="peak memory of forward+backward (default: on, except --quick on CPU)")
    parser.add_argument("--plots", action=argparse.BooleanOptionalAction, default=None,
                        help="the speed suite's plots of time vs size (default: on, except "
                             "with --quick and --check, which have one size per op)")
    parser.add_argument("--cases", nargs="+", metavar="OP:MODE:DTYPE:SIZE",
                        help="only these cases, e.g. hat:forward:float32:2^18")
    parser.add_argument("--check", metavar="BASELINE",
                        help="regression check against this machine's baseline in the file "
                             "BASELINE (exit 1 if a ratio got worse)")
    parser.add_argument("--update-baseline", metavar="BASELINE", nargs="?",
                        const=str(DEFAULT_BASELINE),
                        help=f"measure this machine's baseline ({BASELINE_RUNS} quick runs) into "
                             "BASELINE (default benchmarks/baseline.json), keeping the other "
                             "machines' baselines there")
    parser.add_argument("--repeat", type=int, default=BASELINE_RUNS,
                        help="runs behind --update-baseline")
    args = parser.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU here")
    if args.suite != "spectral" and not fastact_backends(args.device):
        parser.error(f"no fastact kernels run on {args.device} here (build them: make build)")
    unknown = [c for c in args.cases or [] if c.split(CASE_SEP)[0] not in OPS
               or len(c.split(CASE_SEP)) != 4]
    if unknown:
        parser.error(f"--cases {' '.join(unknown)}: expected OP:MODE:DTYPE:SIZE with OP in "
                     f"{', '.join(OPS)}")
    if args.update_baseline:
        return update_baseline(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    steady_allocator()
    if args.memory is None:
        args.memory = not (args.quick and args.device == "cpu") and not args.check
    if args.plots is None:
        args.plots = not (args.quick or args.check)  # the check runs the quick suite
    info = machine()
    print(f"fastact {info['fastact']} on {report.machine_line(info)}")
    if args.check:
        return check(args, info)
    speed, spectral = args.suite in ("speed", "all"), args.suite in ("spectral", "all")
    # The untimed work first, side by side (parallel.py): the spectral parts in worker
    # processes, the reference compiles here (--cases measures a few cases again: not worth it).
    parts = spectral_suite.part_tasks(Path(args.out), args.quick, args.device) if spectral else {}
    # (a gate process compiles as it checks that each case runs: runnable_cases)
    compiles = speed and not args.cases and args.timing != "gate"
    tasks = list(parts.values()) + (compile_tasks(args) if compiles else [])
    results, untimed_s = [], 0.0
    if tasks:
        start = time.perf_counter()
        what = (["the spectral parts"] if parts else []) + (
            ["the reference compiles"] if len(tasks) > len(parts) else [])
        print(f"untimed work first: {' and '.join(what)} ...", flush=True)
        results = parallel.run_tasks(tasks)
        untimed_s = time.perf_counter() - start
        print(f"untimed work took {untimed_s:.0f} s", flush=True)
    if speed:
        speed_suite(args, info)
    if spectral:
        spectral_suite.report(dict(zip(parts, results)), Path(args.out), args.quick, args.device,
                              untimed_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
