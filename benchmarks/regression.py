"""The performance regression check: within-run ratios compared with a committed baseline.

Absolute times mean nothing on a shared machine; ratios of two providers timed in the same
run, interleaved, mostly do. For each fastact backend the check compares
  fastact[<backend>]/limit      its time over the memory-bound limit's (1.0 = at the limit)
  fastact[<backend>]/compiled   its time over the compiled reference's (and, where an op has
                                several compiled providers, "compiled[<name>]", over each's)
per (op, mode, dtype, size) at the --quick sizes; higher is worse. A baseline holds each
ratio's value (the median of several runs) and a tolerance from the spread of those runs
(`run.py --update-baseline`). A ratio fails when it is worse than its baseline by
more than its tolerance; a case with a failing ratio is measured again once, and only the
second measurement counts.

Ratios depend on the machine (another CPU vendor, another instruction set for the kernels or
for inductor's code can move a ratio 2x), so benchmarks/baseline.json holds a baseline per
machine class (`machine_class`). On a machine without its own baseline the check compares with
the baseline of the same device that was taken last, with every tolerance raised to
CROSS_MACHINE_TOLERANCE: it then catches gross regressions only (a kernel falling back to a
slow path), and says so.

This module is pure logic on results rows (dicts as in results.json): no timing, no torch.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import dataclass
from typing import Callable, Iterable

# Which time of each provider the ratios use: the 20th percentile of its samples. Noise on a
# shared machine only adds time (preemption, a busy memory bus), and the fast end of many
# samples is what a provider does when left alone: the noise study (docs/benchmarks.md) found its
# ratios two to five times steadier than the medians'.
STATISTIC = "p20"
STATISTICS = {"p50": "ms", "p20": "p20_ms"}
DENOMINATORS = ("limit", "compiled")


def denominators(providers: Iterable[str]) -> list[str]:
    """The providers the fastact backends' times are divided by, in a fixed order: the limit,
    "compiled", then an op's other compiled formulations ("compiled[<name>]")."""
    providers = list(providers)
    return ([d for d in DENOMINATORS if d in providers]
            + [name for name in providers if name.startswith("compiled[")])


# tolerance = max(TOLERANCE_FLOOR, TOLERANCE_FACTOR * spread), rounded up to 0.05, where
# spread = (max - min) / median of the ratio over the baseline's runs.
TOLERANCE_FLOOR = 0.10
TOLERANCE_FACTOR = 2.0
# Without a baseline of this machine class: a ratio may be up to 2x its value on another.
CROSS_MACHINE_TOLERANCE = 1.0

CaseKey = tuple[str, str, str, str]      # (op, mode, dtype, size)
RatioKey = tuple[str, str, str, str, str]  # (op, mode, dtype, size, ratio)


def machine_class(machine: dict, device: str) -> str:
    """The name of the baselines that apply to `machine` (run.py's machine() dict): the device,
    the processor's model and, on CPU, the instruction set of fastact's CPU kernels; e.g.
    "cpu-intel-xeon-2-80ghz-avx512", "cuda-nvidia-h100-80gb-hbm3"."""
    model = machine.get("gpu") if device == "cuda" else machine.get("cpu")
    words = re.sub(r"\((r|tm)\)|\b(processor|cpu)\b", " ", str(model or "unknown").lower())
    parts = [device, *re.findall(r"[a-z0-9]+", words)]
    if device == "cpu":
        parts.append(str(machine.get("cpu_kernels") or "unknown"))
    return "-".join(parts)


def select_baseline(baselines: dict[str, dict], wanted: str) -> tuple[str, bool] | None:
    """(name, same_machine) of the baseline to check a `wanted`-class machine against: its own,
    else the newest of the same device (by its machine's date); None if the device has none."""
    if wanted in baselines:
        return wanted, True
    device = wanted.split("-", 1)[0]
    same_device = [name for name, b in baselines.items() if b["settings"]["device"] == device]
    if not same_device:
        return None
    return max(same_device, key=lambda name: baselines[name]["machine"].get("date", "")), False


def case_key(row_or_entry: dict) -> CaseKey:
    return (row_or_entry["op"], row_or_entry["mode"], row_or_entry["dtype"], row_or_entry["size"])


def describe(key: tuple) -> str:
    return " ".join(key)


def check_ratios(row: dict, statistic: str = STATISTIC) -> dict[str, float]:
    """The checked ratios of a results row: {"fastact[cpu]/limit": 1.2, ...}."""
    if statistic == "paired":
        return {f"{name}/{d}": paired_ratio(row["round_ms"][name], row["round_ms"][d])
                for name in row["round_ms"] if name.startswith("fastact")
                for d in denominators(row["round_ms"])}
    times = row[STATISTICS[statistic]]
    return {f"{name}/{d}": times[name] / times[d]
            for name in times if name.startswith("fastact")
            for d in denominators(times) if times[d] > 0}


def paired_ratio(numerator: list, denominator: list) -> float:
    """The median over rounds of the ratio of two providers' round medians (rounds in which
    one of them took no sample are skipped)."""
    pairs = [a / b for a, b in zip(numerator, denominator) if a is not None and b]
    return statistics.median(pairs) if pairs else math.nan


def ratio_table(rows: Iterable[dict], statistic: str = STATISTIC) -> dict[RatioKey, float]:
    return {(*case_key(row), name): value
            for row in rows for name, value in check_ratios(row, statistic).items()}


def tolerance(spread: float) -> float:
    return math.ceil(max(TOLERANCE_FLOOR, TOLERANCE_FACTOR * spread) * 20 - 1e-9) / 20


def build_baseline(runs: list[dict], statistic: str = STATISTIC) -> dict:
    """A baseline from several results.json dicts of the same settings: each ratio's median
    over the runs, their spread, and the tolerance that spread justifies."""
    values: dict[RatioKey, list[float]] = {}
    for run in runs:
        for key, value in ratio_table(run["rows"], statistic).items():
            values.setdefault(key, []).append(value)
    entries = []
    for key, vs in values.items():
        median = statistics.median(vs)
        spread = (max(vs) - min(vs)) / median
        entries.append({"op": key[0], "mode": key[1], "dtype": key[2], "size": key[3],
                        "ratio": key[4], "value": round(median, 4),
                        "runs": [round(v, 4) for v in vs], "spread": round(spread, 4),
                        "tolerance": tolerance(spread)})
    first = runs[0]
    return {
        "settings": {**first["settings"], "statistic": statistic, "runs": len(runs),
                     "tolerance_floor": TOLERANCE_FLOOR, "tolerance_factor": TOLERANCE_FACTOR},
        "machine": first["machine"],
        "ratios": entries,
    }


ABOUT_FILE = ("The performance gate's baseline commit (make bench-check builds it and times it "
              "beside the candidate: benchmarks/gate.py), and a record of the --quick speed "
              "suite's within-run ratios per machine class (device, processor, instruction set "
              "of the CPU kernels), with the tolerance each gets from the spread of its runs: "
              "the gate's fall-back where the baseline commit cannot be built. `make "
              "bench-baseline` moves the commit to HEAD and refreshes this machine's ratios; "
              "see benchmarks/gate.py and benchmarks/regression.py.")


def baselines_of(document: dict) -> dict[str, dict]:
    """The baselines of a baseline file by machine class: the file holds {"baselines": {class:
    baseline}}, or is one baseline (build_baseline's dict)."""
    if "baselines" in document:
        return dict(document["baselines"])
    return {machine_class(document["machine"], document["settings"]["device"]): document}


def dumps(baselines: dict[str, dict], commit: str | None = None) -> str:
    """The text of a baseline file holding the gate's baseline `commit` and `baselines` (by
    machine class): one line per ratio, so that a refresh diffs readably."""
    parts = []
    for name, baseline in sorted(baselines.items()):
        head = ",\n".join(f"   {json.dumps(k)}: {json.dumps(v)}" for k, v in baseline.items()
                          if k != "ratios")
        entries = ",\n    ".join(json.dumps(entry) for entry in baseline["ratios"])
        parts.append(f"  {json.dumps(name)}: {{\n{head},\n"
                     f"   \"ratios\": [\n    {entries}\n   ]\n  }}")
    return ('{\n "about": ' + json.dumps(ABOUT_FILE) + ',\n'
            + (f' "baseline_commit": {json.dumps(commit)},\n' if commit else '')
            + ' "baselines": {\n' + ",\n".join(parts) + "\n }\n}\n")


@dataclass
class Finding:
    key: RatioKey
    baseline: float
    current: float
    tolerance: float

    @property
    def change(self) -> float:
        """Relative change, positive = worse (slower than the baseline relative to the
        other provider)."""
        return self.current / self.baseline - 1

    def line(self) -> str:
        return (f"{describe(self.key)}: {self.baseline:.3f} -> {self.current:.3f} "
                f"({self.change:+.0%}; tolerance +{self.tolerance:.0%})")


@dataclass
class Comparison:
    regressions: list[Finding]
    improvements: list[Finding]  # better than the baseline by more than the tolerance
    missing: list[RatioKey]      # in the baseline, for an op that ran, but not measured
    unchecked: list[RatioKey]    # measured, but not in the baseline
    checked: int


def compare(rows: list[dict], baseline: dict, ops: Iterable[str] | None = None,
            min_tolerance: float = 0.0) -> Comparison:
    """Compares the ratios of `rows` with the baseline's entries for `ops` (default: the ops
    in `rows`), each with its tolerance or `min_tolerance`, whichever is larger."""
    current = ratio_table(rows, baseline["settings"]["statistic"])
    ops = set(ops) if ops is not None else {row["op"] for row in rows}
    regressions, improvements, missing, checked = [], [], [], 0
    known = set()
    for entry in baseline["ratios"]:
        key = (*case_key(entry), entry["ratio"])
        known.add(key)
        if entry["op"] not in ops:
            continue
        if key not in current or math.isnan(current[key]):
            missing.append(key)
            continue
        checked += 1
        finding = Finding(key, entry["value"], current[key],
                          max(entry["tolerance"], min_tolerance))
        if finding.change > finding.tolerance:
            regressions.append(finding)
        elif -finding.change / (1 + finding.change) > finding.tolerance:
            improvements.append(finding)  # the baseline is slower by more than the tolerance
    unchecked = [key for key in current if key not in known]
    return Comparison(regressions, improvements, missing, unchecked, checked)


@dataclass
class CheckResult:
    first: Comparison
    final: Comparison  # after re-measuring the cases that failed the first time
    remeasured: list[CaseKey]

    @property
    def passed(self) -> bool:
        return not self.final.regressions and not self.final.missing


def check(rows: list[dict], baseline: dict, ops: Iterable[str],
          remeasure: Callable[[list[CaseKey]], list[dict]],
          min_tolerance: float = 0.0) -> CheckResult:
    """Compares, re-measures each case with a failing ratio once (`remeasure` returns fresh
    rows for those cases), and compares those cases again: the second measurement counts."""
    ops = list(ops)
    first = compare(rows, baseline, ops, min_tolerance)
    failed = list(dict.fromkeys(f.key[:4] for f in first.regressions))
    if not failed:
        return CheckResult(first, first, [])
    fresh = {case_key(row): row for row in remeasure(failed)}
    final_rows = [fresh.get(case_key(row), row) for row in rows]
    return CheckResult(first, compare(final_rows, baseline, ops, min_tolerance), failed)


def report(result: CheckResult, baseline_path: str) -> str:
    """What `run.py --check` prints."""
    first, final = result.first, result.final
    lines = [f"\nregression check against {baseline_path}: {final.checked} ratios"]
    if result.remeasured:
        lines.append(f"  {len(result.remeasured)} case(s) failed the first measurement and were "
                     "measured again: " + "; ".join(map(describe, result.remeasured)))
        cleared = [f for f in first.regressions
                   if f.key not in {g.key for g in final.regressions}]
        for f in cleared:
            lines.append(f"  cleared on re-measurement: {f.line()}")
    for f in final.regressions:
        was = next((g.current for g in first.regressions if g.key == f.key), None)
        lines.append(f"  WORSE  {f.line()}"
                     + (f" [first measurement {was:.3f}]" if was is not None else ""))
    for key in final.missing:
        lines.append(f"  MISSING {describe(key)}: in the baseline but not measured "
                     "(cases changed? refresh the baseline: make bench-baseline)")
    for f in final.improvements:
        lines.append(f"  better {f.line()} (refresh the baseline to keep it)")
    if final.unchecked:
        lines.append(f"  {len(final.unchecked)} ratio(s) have no baseline (not checked), e.g. "
                     f"{describe(final.unchecked[0])}")
    lines.append("  PASSED" if result.passed else
                 f"  FAILED: {len(final.regressions)} ratio(s) worse than their tolerance, "
                 f"{len(final.missing)} missing")
    return "\n".join(lines)


def noise_table(baseline: dict) -> str:
    """The noise study behind a baseline, as Markdown."""
    s = baseline["settings"]
    lines = [f"Spread of each checked ratio over {s['runs']} runs of the --quick suite "
             f"({s['threads']} thread(s), statistic {s['statistic']}); spread = (max - min) / "
             f"median; tolerance = max({s['tolerance_floor']}, {s['tolerance_factor']} x "
             "spread), rounded up to 0.05.\n",
             "| op | mode | dtype | size | ratio | runs | median | spread | tolerance |",
             "|---|---|---|---|---|---|---|---|---|"]
    for e in baseline["ratios"]:
        lines.append(f"| {e['op']} | {e['mode']} | {e['dtype']} | {e['size']} | {e['ratio']} | "
                     + ", ".join(f"{v:.3f}" for v in e["runs"])
                     + f" | {e['value']:.3f} | {e['spread']:.1%} | {e['tolerance']:.0%} |")
    return "\n".join(lines) + "\n"
