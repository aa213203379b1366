"""The performance gate's verdict: the candidate build against the baseline build, both timed
on this machine in alternating fresh processes (gate.py), compared ratio by ratio.

Each process of a build yields, per case, the within-process ratios of regression.check_ratios
(fastact[<backend>]/limit and fastact[<backend>]/compiled; higher is worse). The processes run
in rounds; round i runs one process of each build back to back, so the pair (a_i, b_i) of
baseline and candidate values saw the machine as nearly alike as two processes can. Per ratio:

    change = median_i (b_i / a_i) - 1           > 0: the candidate is slower
    noise  = max_j |log(a_j+1 / a_j)|           the baseline against itself (A/A), the same
                                                process-to-process comparison as the pairs
    bound  = max(FLOOR, exp(FACTOR * noise) - 1)

A ratio is worse when change > bound, better when 1 / (1 + change) - 1 > bound. FACTOR covers
what a few A/A pairs under-sample: with 4 rounds the largest of 3 A/A moves is a small
sample of the noise; FLOOR keeps ratios that happened to agree closely in this run from
failing on a few percent. A case with a worse ratio is measured again once (new processes of
both builds) and only the second measurement counts. No stored number enters the verdict.

This module is pure logic on results rows: no timing, no torch.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Callable

from regression import CaseKey, RatioKey, case_key, check_ratios, describe

FLOOR = 0.10
FACTOR = 2.0
MIN_ROUNDS = 2  # the A/A noise needs two baseline processes

Runs = list[list[dict]]  # per process (in round order), its results rows


def ratio_values(runs: Runs) -> dict[RatioKey, list[float | None]]:
    """Each ratio's value in each process (None where a process lacks the case)."""
    values: dict[RatioKey, list[float | None]] = {}
    for i, rows in enumerate(runs):
        for row in rows:
            for name, value in check_ratios(row).items():
                values.setdefault((*case_key(row), name), [None] * len(runs))[i] = value
    return values


def aa_noise(baseline: list[float | None]) -> float:
    """The largest |log| of the ratio of two consecutive baseline processes (nan if fewer than
    two processes measured it)."""
    present = [v for v in baseline if v is not None and v > 0]
    moves = [abs(math.log(b / a)) for a, b in zip(present, present[1:])]
    return max(moves) if moves else math.nan


def noise_bound(noise: float) -> float:
    if math.isnan(noise):
        return math.nan
    return max(FLOOR, math.exp(FACTOR * noise) - 1)


@dataclass
class RatioVerdict:
    key: RatioKey
    baseline: list[float | None]
    candidate: list[float | None]
    change: float = math.nan
    noise: float = math.nan  # relative: exp(A/A noise) - 1
    bound: float = math.nan
    verdict: str = "same"    # worse, better, same; new (candidate only); missing (baseline only)

    def line(self) -> str:
        def values(vs):
            return ", ".join("-" if v is None else f"{v:.3f}" for v in vs)

        if self.verdict == "new":
            return f"new      {describe(self.key)}: {values(self.candidate)} (no baseline)"
        if self.verdict == "missing":
            return (f"MISSING  {describe(self.key)}: the baseline measured it "
                    f"({values(self.baseline)}), the candidate did not")
        label = {"worse": "WORSE", "better": "better", "same": "same"}[self.verdict]
        return (f"{label:<8} {describe(self.key)}: {self.change:+.1%} "
                f"(noise bound +{self.bound:.0%}, A/A {self.noise:.1%}; "
                f"baseline {values(self.baseline)}; candidate {values(self.candidate)})")


def judge(key: RatioKey, baseline: list[float | None],
          candidate: list[float | None]) -> RatioVerdict:
    verdict = RatioVerdict(key, baseline, candidate)
    if all(v is None for v in baseline):
        verdict.verdict = "new"
        return verdict
    pairs = [b / a for a, b in zip(baseline, candidate) if a and b is not None]
    if not pairs:
        verdict.verdict = "missing"
        return verdict
    noise = aa_noise(baseline)
    verdict.change = statistics.median(pairs) - 1
    verdict.noise = math.exp(noise) - 1 if not math.isnan(noise) else math.nan
    verdict.bound = noise_bound(noise) if not math.isnan(noise) else FLOOR
    if verdict.change > verdict.bound:
        verdict.verdict = "worse"
    elif 1 / (1 + verdict.change) - 1 > verdict.bound:
        verdict.verdict = "better"
    return verdict


def compare(baseline_runs: Runs, candidate_runs: Runs) -> list[RatioVerdict]:
    """A verdict per ratio measured by either build, in the order of the rows."""
    a, b = ratio_values(baseline_runs), ratio_values(candidate_runs)
    keys = list(dict.fromkeys([*a, *b]))
    return [judge(key, a.get(key, [None] * len(baseline_runs)),
                  b.get(key, [None] * len(candidate_runs))) for key in keys]


def failing(verdicts: list[RatioVerdict]) -> list[RatioVerdict]:
    return [v for v in verdicts if v.verdict in ("worse", "missing")]


@dataclass
class GateResult:
    first: list[RatioVerdict]
    final: list[RatioVerdict]  # the first, with the re-measured cases' verdicts replaced
    remeasured: list[CaseKey] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not failing(self.final)


def gate(baseline_runs: Runs, candidate_runs: Runs,
         remeasure: Callable[[list[CaseKey]], tuple[Runs, Runs]]) -> GateResult:
    """The verdicts; each case with a worse or missing ratio is measured again once
    (`remeasure(cases)` returns fresh baseline and candidate runs of those cases) and its
    second verdicts count."""
    first = compare(baseline_runs, candidate_runs)
    cases = list(dict.fromkeys(v.key[:4] for v in failing(first)))
    if not cases:
        return GateResult(first, first)
    again = {v.key: v for v in compare(*remeasure(cases))}
    final = [again.get(v.key, v) if v.key[:4] in cases else v for v in first]
    return GateResult(first, final, cases)


def report(result: GateResult, title: str) -> str:
    """Every ratio with its change, noise bound and verdict; then the verdict of the gate."""
    lines = [f"\n{title}", f"  change = median over rounds of candidate/baseline - 1; noise bound "
             f"= max({FLOOR:.0%}, exp({FACTOR:g} x A/A noise) - 1), A/A noise = largest move "
             "between consecutive baseline processes"]
    if result.remeasured:
        lines.append(f"  {len(result.remeasured)} case(s) failed the first measurement and were "
                     "measured again (the second measurement counts): "
                     + "; ".join(map(describe, result.remeasured)))
        firsts = {v.key: v for v in result.first}
        for v in result.final:
            if v.key[:4] in result.remeasured and firsts[v.key].verdict in ("worse", "missing"):
                lines.append(f"  first measurement: {firsts[v.key].line()}")
    lines += [f"  {v.line()}" for v in result.final]
    counts = {name: sum(v.verdict == name for v in result.final)
              for name in ("same", "better", "worse", "missing", "new")}
    summary = ", ".join(f"{n} {name}" for name, n in counts.items() if n)
    lines.append(f"  PASSED ({summary})" if result.passed else
                 f"  FAILED: {counts['worse']} ratio(s) worse than their noise bound, "
                 f"{counts['missing']} missing ({summary})")
    return "\n".join(lines)
