"""The performance regression check's logic (benchmarks/regression.py and run.py --check) on
synthetic results: no timing here."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import regression  # noqa: E402


def row(op="hat", mode="forward", dtype="float32", size="2^20", **p20_ms):
    """A results row whose providers' p20 times are given (ms; medians are 10% slower)."""
    p20 = {"fastact[cpu]": 1.0, "eager": 10.0, "compiled": 2.0, "limit": 0.5}
    p20.update({k.replace("fastact_", "fastact[") + ("]" if k.startswith("fastact_") else ""): v
                for k, v in p20_ms.items()})
    return {"op": op, "mode": mode, "dtype": dtype, "size": size, "numel": 2**20,
            "limit_name": "x.clone()",
            "ratios": {"fastact/limit": 2.0, "compiled/fastact": 2.0, "eager/fastact": 10.0},
            "ms": {k: v * 1.1 for k, v in p20.items()}, "p20_ms": dict(p20),
            "p80_ms": {k: v * 1.2 for k, v in p20.items()},
            "round_ms": {k: [v, None, v * 1.5] for k, v in p20.items()}}


SETTINGS = {"quick": True, "threads": 1, "device": "cpu", "dtypes": ["float32"], "ops": ["hat"]}


def run_results(*rows):
    return {"settings": SETTINGS, "machine": {"cpu": "test"}, "rows": list(rows)}


def baseline_of(*rows, runs=3):
    return regression.build_baseline([run_results(*rows)] * runs)


def test_check_ratios_are_each_fastact_backend_over_limit_and_compiled():
    r = row(fastact_cpu=1.5, limit=0.5, compiled=3.0)
    r["p20_ms"]["fastact[triton]"] = 1.0
    ratios = regression.check_ratios(r, "p20")
    assert ratios == {"fastact[cpu]/limit": 3.0, "fastact[cpu]/compiled": 0.5,
                      "fastact[triton]/limit": 2.0, "fastact[triton]/compiled": 1 / 3}
    assert regression.check_ratios(r, "p50")["fastact[cpu]/limit"] == pytest.approx(3.0)


def test_each_compiled_provider_is_a_denominator_and_a_new_one_is_unchecked_not_failed():
    """An op with several compiled formulations ("compiled", "compiled[reference]") gets a ratio
    over each; one the baseline lacks is reported as unchecked, and the check passes."""
    r = row(fastact_cpu=1.5, compiled=3.0)
    r["p20_ms"]["compiled[reference]"] = 6.0
    r["round_ms"]["compiled[reference]"] = [6.0, None, 9.0]
    assert regression.check_ratios(r, "p20") == {
        "fastact[cpu]/limit": 3.0, "fastact[cpu]/compiled": 0.5,
        "fastact[cpu]/compiled[reference]": 0.25}
    assert regression.check_ratios(r, "paired")["fastact[cpu]/compiled[reference]"] == 0.25
    result = regression.compare([r], baseline_of(row(fastact_cpu=1.5, compiled=3.0)))
    assert [k[4] for k in result.unchecked] == ["fastact[cpu]/compiled[reference]"]
    assert not result.regressions and not result.missing and result.checked == 2


def test_summary_counts_against_the_fastest_compiled_provider():
    import run

    from harness import Case, Timing

    case = Case("dct_activation", "forward", "float32", "4096x1024 K=6", 2**22)
    times = {"fastact[cpu]": 1.0, "eager": 50.0, "compiled": 8.0, "compiled[reference]": 4.0,
             "limit": 0.5}
    row_ = run.summarise(case, {k: Timing.of([v * 1e-3]) for k, v in times.items()},
                         {k: None for k in run.ROW_MACHINE})
    assert row_["ratios"] == {"fastact/limit": 2.0, "compiled/fastact": 4.0,
                              "eager/fastact": 50.0}


def test_paired_ratio_is_the_median_over_rounds_both_sampled():
    assert regression.paired_ratio([2.0, None, 6.0, 4.0], [1.0, 1.0, 2.0, None]) == 2.5
    assert regression.check_ratios(row(), "paired")["fastact[cpu]/limit"] == pytest.approx(2.0)


@pytest.mark.parametrize("spread, expected", [(0.0, 0.10), (0.04, 0.10), (0.06, 0.15),
                                              (0.10, 0.20), (0.26, 0.55)])
def test_tolerance_is_twice_the_spread_rounded_up_with_a_floor(spread, expected):
    assert regression.tolerance(spread) == pytest.approx(expected)


def test_baseline_holds_the_median_of_the_runs_and_a_tolerance_from_their_spread():
    runs = [run_results(row(fastact_cpu=f)) for f in (1.0, 1.2, 1.1)]
    baseline = regression.build_baseline(runs, "p20")
    entry = next(e for e in baseline["ratios"] if e["ratio"] == "fastact[cpu]/limit")
    assert entry["runs"] == [2.0, 2.4, 2.2]
    assert entry["value"] == 2.2
    assert entry["spread"] == pytest.approx(0.4 / 2.2, abs=1e-4)
    assert entry["tolerance"] == 0.40  # 2 * 18.2 %, rounded up to 0.05
    assert baseline["settings"]["statistic"] == "p20"
    assert baseline["settings"]["runs"] == 3
    assert baseline["settings"]["threads"] == 1
    assert len(baseline["ratios"]) == 2  # /limit and /compiled
    assert "| hat | forward | float32 | 2^20 | fastact[cpu]/limit | 2.000, 2.400, 2.200 | 2.200 " \
           "| 18.2% | 40% |" in regression.noise_table(baseline)


def test_baseline_file_has_a_line_per_ratio_and_reads_back():
    one = baseline_of(row(), row(mode="backward"))
    other = baseline_of(row())
    text = regression.dumps({"cpu-a-avx2": one, "cpu-b-avx512": other})
    assert regression.baselines_of(json.loads(text)) == {"cpu-a-avx2": one,
                                                         "cpu-b-avx512": other}
    assert len([line for line in text.splitlines() if '"ratio":' in line]) == 6
    # A file of one baseline alone reads as that machine's.
    assert regression.baselines_of(one) == {"cpu-test-unknown": one}


def test_compare_names_each_ratio_that_got_worse_and_by_how_much():
    baseline = baseline_of(row(), row(mode="backward"))  # /limit 2.0, /compiled 0.5; tol 0.10
    slow = [row(fastact_cpu=1.5), row(mode="backward", fastact_cpu=1.05)]
    result = regression.compare(slow, baseline)
    assert [f.key for f in result.regressions] == [
        ("hat", "forward", "float32", "2^20", "fastact[cpu]/limit"),
        ("hat", "forward", "float32", "2^20", "fastact[cpu]/compiled")]
    assert result.regressions[0].change == pytest.approx(0.5)
    assert result.regressions[0].line() == (
        "hat forward float32 2^20 fastact[cpu]/limit: 2.000 -> 3.000 (+50%; tolerance +10%)")
    assert result.checked == 4  # backward: +5 %, within its tolerance
    assert not result.improvements and not result.missing


def test_a_slower_reference_is_a_regression_of_the_compiled_ratio_only_when_fastact_lags():
    baseline = baseline_of(row())
    # The compiled reference got 2x faster (a torch upgrade): fastact/compiled doubles.
    result = regression.compare([row(compiled=1.0)], baseline)
    assert [f.key[-1] for f in result.regressions] == ["fastact[cpu]/compiled"]


def test_compare_reports_improvements_missing_and_unchecked_ratios():
    baseline = baseline_of(row(), row(mode="backward"), row(op="dct_activation"))
    current = [row(fastact_cpu=0.5), row(size="2^24")]
    result = regression.compare(current, baseline, ops=["hat"])
    assert {f.key[-1] for f in result.improvements} == {"fastact[cpu]/limit",
                                                        "fastact[cpu]/compiled"}
    # backward was in the baseline for hat, which ran: missing; dct_activation did not run.
    assert {k[:2] for k in result.missing} == {("hat", "backward")}
    assert {k[3] for k in result.unchecked} == {"2^24"}


def test_check_measures_a_failing_case_again_and_counts_only_the_second_measurement():
    baseline = baseline_of(row(), row(dtype="bfloat16"))
    first = [row(fastact_cpu=1.5), row(dtype="bfloat16")]
    asked = []

    def remeasure(keys):
        asked.append(keys)
        return [row()]  # the second measurement is fine

    result = regression.check(first, baseline, ["hat"], remeasure)
    assert asked == [[("hat", "forward", "float32", "2^20")]]
    assert result.passed
    assert len(result.first.regressions) == 2 and not result.final.regressions
    assert "cleared on re-measurement" in regression.report(result, "baseline.json")


def test_check_fails_when_the_second_measurement_is_still_worse():
    baseline = baseline_of(row())
    result = regression.check([row(fastact_cpu=2.0)], baseline, ["hat"],
                              lambda keys: [row(fastact_cpu=1.8)])
    assert not result.passed
    text = regression.report(result, "baseline.json")
    assert ("WORSE  hat forward float32 2^20 fastact[cpu]/limit: 2.000 -> 3.600 (+80%; "
            "tolerance +10%) [first measurement 4.000]") in text
    assert "FAILED: 2 ratio(s) worse than their tolerance" in text


def test_check_does_not_measure_again_when_everything_passes():
    baseline = baseline_of(row())

    def remeasure(keys):
        raise AssertionError("nothing to measure again")

    result = regression.check([row(fastact_cpu=1.05)], baseline, ["hat"], remeasure)
    assert result.passed and result.remeasured == []
    assert regression.report(result, "b.json").rstrip().endswith("PASSED")


def test_machine_class_names_device_model_and_kernel_instruction_set():
    intel = {"cpu": "Intel(R) Xeon(R) Processor @ 2.80GHz", "cpu_kernels": "avx512", "gpu": None}
    assert regression.machine_class(intel, "cpu") == "cpu-intel-xeon-2-80ghz-avx512"
    amd = {"cpu": "AMD EPYC 9R14 96-Core Processor", "cpu_kernels": "avx2"}
    assert regression.machine_class(amd, "cpu") == "cpu-amd-epyc-9r14-96-core-avx2"
    assert regression.machine_class({"cpu": "x", "gpu": "NVIDIA H100 80GB HBM3"}, "cuda") == (
        "cuda-nvidia-h100-80gb-hbm3")


def test_select_baseline_prefers_this_machine_then_the_newest_of_the_device():
    def of(device, date):
        return {"settings": {"device": device}, "machine": {"date": date}}

    baselines = {"cpu-a-avx2": of("cpu", "2026-01-02"), "cpu-b-avx512": of("cpu", "2026-03-01"),
                 "cuda-h100": of("cuda", "2026-05-01")}
    assert regression.select_baseline(baselines, "cpu-a-avx2") == ("cpu-a-avx2", True)
    assert regression.select_baseline(baselines, "cpu-c-avx512") == ("cpu-b-avx512", False)
    assert regression.select_baseline(baselines, "cuda-a100") == ("cuda-h100", False)
    assert regression.select_baseline({"cuda-h100": of("cuda", "")}, "cpu-a-avx2") is None


def test_another_machines_baseline_catches_only_gross_regressions():
    baseline = baseline_of(row())  # /limit 2.0, tolerance 0.10
    # 50 % worse: a failure against this machine's baseline, not against another machine's.
    assert regression.compare([row(fastact_cpu=1.5)], baseline).regressions
    assert not regression.compare([row(fastact_cpu=1.5)], baseline,
                                  min_tolerance=regression.CROSS_MACHINE_TOLERANCE).regressions
    # 2.5x worse (a kernel on a slow path) fails either way.
    gross = regression.check([row(fastact_cpu=2.5)], baseline, ["hat"],
                             lambda keys: [row(fastact_cpu=2.5)],
                             regression.CROSS_MACHINE_TOLERANCE)
    assert not gross.passed
    assert "(+150%; tolerance +100%)" in regression.report(gross, "b.json")


def test_check_fails_on_a_missing_case():
    result = regression.check([row()], baseline_of(row(), row(mode="backward")), ["hat"],
                              lambda keys: [])
    assert not result.passed
    assert "MISSING hat backward float32 2^20 fastact[cpu]/limit" in regression.report(result, "b")


# run.py --check end to end, with the timing replaced by synthetic rows.

@pytest.fixture
def run_module(monkeypatch):
    import run

    calls = []

    def fake_run_speed(ops, dtypes, device, quick, info, measure_memory, print_tables=True,
                       keep=lambda case: True, timing_name=None):
        calls.append(("run", ops, quick))
        return fake_run_speed.results.pop(0)

    def fake_remeasure(keys, args, out):
        calls.append(("remeasure", keys))
        return fake_run_speed.results.pop(0)

    monkeypatch.setattr(run, "run_speed", fake_run_speed)
    monkeypatch.setattr(run, "remeasure", fake_remeasure)
    # --check sets the baseline's thread count and glibc's thresholds: not in the test process.
    monkeypatch.setattr(run.torch, "set_num_threads", lambda threads: None)
    monkeypatch.setattr(run, "steady_allocator", lambda: True)
    run.calls = calls
    run.run_speed.results = []
    return run


def write_baseline(tmp_path, *rows, cpu="test"):
    """A baseline file holding one baseline, of machine `cpu` (this machine, as run.py sees it,
    unless `cpu` is given)."""
    import run

    path = tmp_path / "baseline.json"
    baseline = baseline_of(*rows)
    baseline["machine"] = run.machine() if cpu == "test" else {"cpu": cpu, "cpu_kernels": "x"}
    path.write_text(regression.dumps({regression.machine_class(baseline["machine"], "cpu"):
                                      baseline}))
    return path


def test_run_check_passes_after_a_clean_remeasurement(run_module, tmp_path, capsys):
    path = write_baseline(tmp_path, row())
    run_module.run_speed.results = [[row(fastact_cpu=3.0)], [row()]]
    code = run_module.main(["--check", str(path), "--ops", "hat", "--out", str(tmp_path / "o"),
                            "--no-plots"])
    assert code == 0
    assert run_module.calls == [("run", ["hat"], True),  # quick sizes
                                ("remeasure", [("hat", "forward", "float32", "2^20")])]
    assert "measured again" in capsys.readouterr().out
    assert json.loads((tmp_path / "o" / "results.json").read_text())["settings"]["quick"]


def test_run_check_exits_1_naming_the_ratio(run_module, tmp_path, capsys):
    path = write_baseline(tmp_path, row())
    run_module.run_speed.results = [[row(fastact_cpu=3.0)], [row(fastact_cpu=3.0)]]
    code = run_module.main(["--check", str(path), "--ops", "hat", "--out", str(tmp_path / "o"),
                            "--no-plots"])
    assert code == 1
    assert "WORSE  hat forward float32 2^20 fastact[cpu]/limit: 2.000 -> 6.000 (+200%" in (
        capsys.readouterr().out)


def test_run_check_on_another_machine_says_so_and_passes_a_50_percent_change(
        run_module, tmp_path, capsys):
    path = write_baseline(tmp_path, row(), cpu="Some Other CPU")
    run_module.run_speed.results = [[row(fastact_cpu=1.5)]]
    code = run_module.main(["--check", str(path), "--ops", "hat", "--out", str(tmp_path / "o"),
                            "--no-plots"])
    assert code == 0
    out = capsys.readouterr().out
    assert "no baseline for this machine" in out and "[cpu-some-other-x]" in out
    assert run_module.calls == [("run", ["hat"], True)]


def test_run_check_against_a_file_of_one_baseline_uses_its_tolerances_on_any_machine(
        run_module, tmp_path, capsys):
    path = tmp_path / "one.json"
    baseline = baseline_of(row())
    baseline["machine"] = {"cpu": "Some Other CPU", "cpu_kernels": "x"}
    path.write_text(json.dumps(baseline))
    run_module.run_speed.results = [[row(fastact_cpu=1.5)], [row(fastact_cpu=1.5)]]
    code = run_module.main(["--check", str(path), "--ops", "hat", "--out", str(tmp_path / "o"),
                            "--no-plots"])
    assert code == 1
    out = capsys.readouterr().out
    assert "was measured on cpu-some-other-x" in out and "(+50%; tolerance +10%)" in out


def test_update_baseline_keeps_the_other_machines_baselines(run_module, tmp_path, monkeypatch):
    path = write_baseline(tmp_path, row(), cpu="Some Other CPU")
    results = run_results(row(fastact_cpu=1.2))
    results["machine"] = run_module.machine()

    real_run = run_module.subprocess.run

    def fake_subprocess_run(cmd, **kwargs):
        if "--out" not in cmd:  # git describe, for the machine's commit
            return real_run(cmd, **kwargs)
        out = Path(cmd[cmd.index("--out") + 1])
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results))
        return type("Done", (), {"returncode": 0})()

    monkeypatch.setattr(run_module.subprocess, "run", fake_subprocess_run)
    assert run_module.main(["--update-baseline", str(path), "--repeat", "2",
                            "--out", str(tmp_path / "o")]) == 0
    baselines = regression.baselines_of(json.loads(path.read_text()))
    mine = regression.machine_class(run_module.machine(), "cpu")
    assert set(baselines) == {"cpu-some-other-x", mine}
    assert baselines[mine]["ratios"][0]["value"] == 2.4  # 1.2 / 0.5
    assert (tmp_path / "o" / "noise.md").exists()


def test_run_check_refuses_a_baseline_of_another_device(run_module, tmp_path, capsys):
    path = tmp_path / "baseline.json"
    baseline = baseline_of(row())
    baseline["settings"]["device"] = "cuda"
    path.write_text(regression.dumps({"cuda-h100": baseline}))
    assert run_module.main(["--check", str(path), "--out", str(tmp_path / "o")]) == 2
    assert "no baseline measured on 'cpu'" in capsys.readouterr().err
