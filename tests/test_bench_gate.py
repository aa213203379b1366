"""The performance gate (benchmarks/paired.py and gate.py) on synthetic results: pairing, the
A/A noise bound, the verdict, re-measurement, and the fall-backs. No timing here."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import gate  # noqa: E402
import paired  # noqa: E402

KEY = ("hat", "forward", "float32", "2^18")


def row(key=KEY, fastact=1.0, limit=0.5, compiled=2.0):
    op, mode, dtype, size = key
    return {"op": op, "mode": mode, "dtype": dtype, "size": size,
            "p20_ms": {"fastact[cpu]": fastact, "eager": 10.0, "compiled": compiled,
                       "limit": limit}}


def runs(*fastact_times, key=KEY):
    """One process per value: that process's single row, fastact's time given."""
    return [[row(key, fastact=t)] for t in fastact_times]


def verdict_of(result, ratio="fastact[cpu]/limit", key=KEY):
    return next(v for v in result if v.key == (*key, ratio))


def test_ratio_values_collect_each_ratio_per_process_none_where_a_process_lacks_it():
    other = ("hat", "backward", "float32", "2^18")
    values = paired.ratio_values([[row(fastact=1.0)], [row(fastact=1.5), row(other)]])
    assert values[(*KEY, "fastact[cpu]/limit")] == [2.0, 3.0]
    assert values[(*KEY, "fastact[cpu]/compiled")] == [0.5, 0.75]
    assert values[(*other, "fastact[cpu]/limit")] == [None, 2.0]


def test_aa_noise_is_the_largest_move_between_consecutive_baseline_processes():
    assert paired.aa_noise([1.0, 1.1, 1.0, 0.95]) == pytest.approx(math.log(1.1))
    assert paired.aa_noise([1.0, None, 1.2]) == pytest.approx(math.log(1.2))
    assert math.isnan(paired.aa_noise([1.0, None]))


@pytest.mark.parametrize("noise, bound", [(0.0, 0.10), (0.02, 0.10), (0.1, math.exp(0.2) - 1)])
def test_noise_bound_is_factor_times_the_aa_noise_with_a_floor(noise, bound):
    assert paired.noise_bound(noise) == pytest.approx(bound)


def test_change_is_the_median_of_the_paired_ratios():
    # pairs 1.2/1.0, 1.1/1.1, 1.0/1.0 -> median 1.0: one slow candidate process is not a change
    v = verdict_of(paired.compare(runs(1.0, 1.1, 1.0), runs(1.2, 1.1, 1.0)))
    assert v.change == pytest.approx(0.0) and v.verdict == "same"


def test_a_change_beyond_the_noise_bound_is_worse_and_within_it_is_not():
    quiet = runs(1.0, 1.0, 1.01, 1.0)  # A/A 1%: bound = the floor, 10%
    assert verdict_of(paired.compare(quiet, runs(1.15, 1.16, 1.14, 1.15))).verdict == "worse"
    assert verdict_of(paired.compare(quiet, runs(1.05, 1.06, 1.04, 1.05))).verdict == "same"
    noisy = runs(1.0, 1.2, 1.0, 1.2)  # A/A 20%: bound exp(2 log 1.2) - 1 = 44%
    v = verdict_of(paired.compare(noisy, runs(1.3, 1.56, 1.3, 1.56)))
    assert v.change == pytest.approx(0.3) and v.bound == pytest.approx(0.44)
    assert v.verdict == "same"
    assert verdict_of(paired.compare(noisy, runs(2.0, 2.4, 2.0, 2.4))).verdict == "worse"


def test_faster_beyond_the_bound_is_better_not_a_failure():
    result = paired.gate(runs(1.0, 1.0, 1.0), runs(0.5, 0.5, 0.5), lambda cases: pytest.fail())
    assert verdict_of(result.final).verdict == "better" and result.passed


def test_a_case_only_the_candidate_has_is_new_and_one_it_lost_is_missing():
    other = ("dct_activation", "forward", "float32", "256x1024 K=6")
    baseline = [[row()], [row()]]
    candidate = [[row(other)], [row(other)]]
    verdicts = paired.compare(baseline, candidate)
    assert verdict_of(verdicts).verdict == "missing"
    assert verdict_of(verdicts, key=other).verdict == "new"


def test_a_failing_case_is_measured_again_once_and_the_second_measurement_counts():
    asked = []

    def remeasure(cases):
        asked.append(cases)
        return runs(1.0, 1.0, 1.0), runs(1.01, 1.0, 1.02)

    result = paired.gate(runs(1.0, 1.0, 1.0), runs(1.5, 1.5, 1.5), remeasure)
    assert asked == [[KEY]]
    assert result.remeasured == [KEY] and result.passed
    assert verdict_of(result.first).verdict == "worse"
    text = paired.report(result, "gate")
    assert "measured again" in text and "first measurement: WORSE" in text and "PASSED" in text


def test_the_gate_fails_when_the_second_measurement_is_worse_too_naming_the_case():
    def remeasure(cases):
        return runs(1.0, 1.0, 1.0), runs(1.5, 1.5, 1.5)

    result = paired.gate(runs(1.0, 1.0, 1.0), runs(1.5, 1.5, 1.5), remeasure)
    assert not result.passed
    text = paired.report(result, "gate")
    assert "WORSE    hat forward float32 2^18 fastact[cpu]/limit: +50.0% (noise bound +10%" in text
    assert "FAILED: 2 ratio(s) worse than their noise bound" in text


def test_the_report_gives_every_ratio_its_change_bound_and_verdict():
    result = paired.gate(runs(1.0, 1.0), runs(1.0, 1.0), lambda cases: pytest.fail())
    lines = [line for line in paired.report(result, "gate").splitlines() if " hat " in line]
    assert len(lines) == 2 and all("same" in line and "noise bound" in line for line in lines)


# gate.py: the baseline build, the alternation and the fall-backs (subprocesses faked).

@pytest.fixture
def fallback_calls(monkeypatch, tmp_path):
    calls = []

    def fake_fallback(reason, baseline_file, out, python):
        calls.append(reason)
        return 0

    monkeypatch.setattr(gate, "fallback", fake_fallback)
    monkeypatch.setattr(gate, "CACHE", tmp_path / "cache")
    return calls


def test_no_recorded_commit_falls_back_to_the_stored_ratios(fallback_calls, tmp_path):
    baseline_file = tmp_path / "baseline.json"
    baseline_file.write_text(json.dumps({"baselines": {}}))
    assert gate.main(["--baseline-file", str(baseline_file), "--out", str(tmp_path / "o")]) == 0
    assert fallback_calls == ["benchmarks/baseline.json records no baseline commit "
                              "(record one with make bench-baseline)"]


def test_a_commit_missing_from_the_clone_falls_back_saying_so(fallback_calls, tmp_path):
    assert gate.main(["--commit", "0" * 40, "--out", str(tmp_path / "o")]) == 0
    assert "is not in this clone" in fallback_calls[0]


def test_a_baseline_that_no_longer_builds_falls_back_and_leaves_no_half_build(
        fallback_calls, tmp_path, monkeypatch):
    real_run = subprocess.run

    def fake_run(cmd, **kwargs):
        if "setup.py" in cmd:
            return subprocess.CompletedProcess(cmd, 1, "", "error: csrc/ops.cpp: no such op\n")
        return real_run(cmd, **kwargs)

    monkeypatch.setattr(gate.subprocess, "run", fake_run)
    monkeypatch.setattr(gate, "torch_version", lambda python: "test")
    assert gate.main(["--commit", "HEAD", "--out", str(tmp_path / "o")]) == 0
    assert "no longer builds here" in fallback_calls[0] and "no such op" in fallback_calls[0]
    assert list((tmp_path / "cache" / "baseline").iterdir()) == []


def test_a_cached_baseline_build_is_reused(tmp_path, monkeypatch):
    monkeypatch.setattr(gate, "CACHE", tmp_path)
    monkeypatch.setattr(gate, "torch_version", lambda python: "test")
    root = tmp_path / "baseline" / "abcdef012345-torchtest"
    root.mkdir(parents=True)
    (root / ".built").write_text("abcdef0123456789\n")
    monkeypatch.setattr(gate.subprocess, "run", lambda *a, **k: pytest.fail("built again"))
    assert gate.build_baseline("abcdef0123456789", "python", 1) == root


def test_rounds_alternate_which_build_runs_first_each_importing_its_own_root(
        tmp_path, monkeypatch):
    order = []

    def fake_time_build(root, out, python, threads, cases):
        order.append(root.name)
        return [row()]

    monkeypatch.setattr(gate, "time_build", fake_time_build)
    a, b = gate.measure(tmp_path / "A", tmp_path / "B", tmp_path / "o", "python", 1, rounds=4)
    assert order == ["A", "B", "B", "A", "A", "B", "B", "A"]
    assert len(a) == len(b) == 4
    env = gate.build_env(tmp_path / "A")
    assert env["PYTHONPATH"].split(":")[0] == str(tmp_path / "A")


def test_a_process_that_imported_another_build_is_an_error(tmp_path, monkeypatch):
    def fake_run(cmd, **kwargs):
        out = Path(cmd[cmd.index("--out") + 1])
        out.mkdir(parents=True)
        (out / "results.json").write_text(json.dumps(
            {"machine": {"fastact_path": "/elsewhere/fastact"}, "rows": []}))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(gate.subprocess, "run", fake_run)
    with pytest.raises(RuntimeError, match="imported fastact from /elsewhere"):
        gate.time_build(tmp_path / "A", tmp_path / "o", "python", 1, None)


def test_fewer_than_two_rounds_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        gate.main(["--rounds", "1", "--out", str(tmp_path / "o")])


def test_a_gate_process_skips_the_cases_an_older_build_cannot_run(monkeypatch, capsys):
    import run
    from harness import Case

    def good(device, dtypes, quick):
        yield Case("good", "forward", "float32", "1", 1, {"fastact[cpu]": lambda: None})

    def broken_provider(device, dtypes, quick):
        def fails():
            raise TypeError("unexpected keyword argument 'new_option'")
        yield Case("newarg", "forward", "float32", "1", 1, {"fastact[cpu]": fails})

    def broken_op(device, dtypes, quick):
        raise AttributeError("module 'fastact' has no attribute 'new_op'")
        yield

    monkeypatch.setattr(run, "OPS", {"good": good, "newarg": broken_provider,
                                     "new_op": broken_op})
    cases = run.runnable_cases(["good", "newarg", "new_op"], [], "cpu", lambda case: True)
    assert [case.op for case in cases] == ["good"]
    out = capsys.readouterr().out
    assert "skipped: newarg forward float32 1: TypeError" in out
    assert "skipped: new_op: AttributeError" in out


def test_the_case_table_and_the_memory_child_do_not_import_run_py():
    # run.py imports memory.py; memory.py's children take their cases from cases.py, so that a
    # child does not import run.py's suite (no import circle).
    code = ("import sys; sys.path.insert(0, 'benchmarks'); import memory, cases; "
            "memory.largest_forward_backward([]); sys.exit('run' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
