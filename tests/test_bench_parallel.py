"""benchmarks/parallel.py: the untimed work of a benchmark run, in worker processes and in this
one at once. The worker tasks are standard-library functions or this module's, which a spawned
worker imports by name. Order is forced with marker files, never with sleeps: a loaded machine
may take seconds to start a worker."""

import math
import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from parallel import Task, run_tasks  # noqa: E402


def test_results_come_in_task_order_and_every_task_is_announced():
    lines = []
    tasks = [Task("pid", os.getpid, estimate_s=1.0),
             Task("sqrt", math.sqrt, (16.0,), estimate_s=5.0),
             Task("here", lambda a, b: a + b, (2, 3), here=True),
             Task("factorial", math.factorial, (5,), estimate_s=3.0)]
    results = run_tasks(tasks, workers=2, announce=lines.append)
    assert results[1:] == [4.0, 5, 120]
    assert isinstance(results[0], int)
    done = [line for line in lines if "] " in line]
    assert sorted(line.split("] ")[1].split(":")[0] for line in done) == sorted(
        task.label for task in tasks)
    assert [line.split("]")[0].strip() for line in done] == [f"[{i}/4" for i in range(1, 5)]


def test_one_worker_and_no_here_tasks_run_everything_in_this_process():
    results = run_tasks([Task("a", os.getpid), Task("b", os.getpid)], workers=1,
                        announce=lambda line: None)
    assert results == [os.getpid(), os.getpid()]


MARKER_TIMEOUT_S = 120.0


def wait_for(path: str) -> bool:
    """Waits until the file `path` exists (False after MARKER_TIMEOUT_S: the test then fails
    on its result rather than hanging)."""
    deadline = time.monotonic() + MARKER_TIMEOUT_S
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def started_then_wait_for(started: str, release: str) -> bool:
    Path(started).touch()
    return wait_for(release)


def pid_and_touch(path: str) -> int:
    Path(path).touch()
    return os.getpid()


def test_workers_are_other_processes_and_this_one_takes_tasks_no_worker_started(tmp_path):
    # One worker, held by the longest task until this process has run the two shortest; the
    # pool queues at most two tasks for the worker, so those two are still unstarted when
    # this process is done with its own task (which returns once the worker has started).
    started, pid_1, pid_2 = (str(tmp_path / name) for name in ("started", "pid1", "pid2"))
    tasks = [Task("held", started_then_wait_for, (started, pid_2), estimate_s=10.0),
             Task("parent pid", os.getppid, estimate_s=5.0),
             Task("pid 1", pid_and_touch, (pid_1,), estimate_s=2.0),
             Task("pid 2", pid_and_touch, (pid_2,), estimate_s=1.0),
             Task("here", wait_for, (started,), here=True)]
    results = run_tasks(tasks, workers=1, announce=lambda line: None)
    assert results[0] is True and results[4] is True
    assert results[1] == os.getpid()  # a worker, whose parent is this process
    assert results[2:4] == [os.getpid(), os.getpid()]


def test_a_failing_worker_task_raises_its_exception():
    tasks = [Task("bad", math.sqrt, (-1.0,)), Task("good", math.sqrt, (4.0,)),
             Task("here", time.sleep, (0.0,), here=True)]
    with pytest.raises(ValueError, match="math domain error"):
        run_tasks(tasks, workers=1, announce=lambda line: None)


def test_a_failing_here_task_raises_its_exception():
    def fail():
        raise RuntimeError("compile failed")

    tasks = [Task("worker", math.sqrt, (4.0,)), Task("here", fail, here=True)]
    with pytest.raises(RuntimeError, match="compile failed"):
        run_tasks(tasks, workers=1, announce=lambda line: None)


def test_a_benchmark_run_does_the_untimed_work_before_it_times(monkeypatch, tmp_path):
    import run
    import spectral_suite

    calls = []
    monkeypatch.setattr(run, "steady_allocator", lambda: True)
    monkeypatch.setattr(run, "compile_reference",
                        lambda op, *args: calls.append(("compile", op)) or 6)
    # The parts as `here` tasks: this test spawns no worker.
    monkeypatch.setattr(spectral_suite, "part_tasks", lambda out, quick, device: {
        key: Task(f"part {key}", lambda key=key: calls.append(("part", key)) or f"result {key}",
                  here=True) for key in ("1", "2")})
    monkeypatch.setattr(run, "speed_suite", lambda args, info: calls.append(("time",)))
    monkeypatch.setattr(spectral_suite, "report", lambda results, *args: calls.append(
        ("report", results)))
    assert run.main(["--suite", "all", "--ops", "hat", "dct_activation", "--quick",
                     "--out", str(tmp_path)]) == 0
    assert calls[:4] == [("part", "1"), ("part", "2"), ("compile", "hat"),
                         ("compile", "dct_activation")]
    assert calls[4:] == [("time",), ("report", {"1": "result 1", "2": "result 2"})]
