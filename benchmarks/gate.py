"""The performance gate (`make bench-check`, run by CI): this tree's build against the baseline
commit's build, timed on this machine, in the same run.

    python benchmarks/gate.py                      # against benchmarks/baseline.json's commit
    python benchmarks/gate.py --commit HEAD~3      # against another commit
    python benchmarks/gate.py --baseline-root DIR  # against a tree built in place in DIR

1. The baseline commit is the one recorded in benchmarks/baseline.json ("baseline_commit"),
   moved forward by `make bench-baseline` after a deliberate change in speed. Recorded, not
   derived: a rule such as "the parent commit" or "the last commit that touched csrc/" would
   gate a submission of several commits on its last step only.
2. Its sources (`git archive`) are built in place in a cache folder of their own
   (~/.cache/fastact/baseline/<commit>-torch<version>), once per commit and torch.
3. The two builds are timed alternately in fresh processes, ROUNDS rounds of one process each
   (A B, B A, A B, ...), each process the --quick speed suite (run.py) with its own limit and
   compiled providers, importing the build under test (PYTHONPATH). The cases are this tree's.
4. paired.py gives each ratio's change and noise bound; a case that fails is measured again
   once, in new processes of both builds.

Without a usable baseline build (no commit recorded, a commit missing from this clone, a
commit that no longer builds) the gate says why and falls back to the stored ratios of
benchmarks/baseline.json (run.py --check) with a warning.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import paired  # noqa: E402
from regression import CaseKey  # noqa: E402

DEFAULT_BASELINE_FILE = HERE / "baseline.json"
ROUNDS = 4
CACHE = Path(os.environ.get("FASTACT_CACHE", Path.home() / ".cache" / "fastact"))
CASE_SEP = ":"


class NoBaselineBuild(Exception):
    """Why the baseline commit cannot be measured here."""


def recorded_commit(baseline_file: Path) -> str | None:
    try:
        return json.loads(baseline_file.read_text()).get("baseline_commit")
    except (OSError, ValueError):
        return None


def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)


def resolve(commit: str | None) -> str:
    """The full hash of `commit`, or NoBaselineBuild saying why there is none."""
    if not commit:
        raise NoBaselineBuild("benchmarks/baseline.json records no baseline commit "
                              "(record one with make bench-baseline)")
    done = git("rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}")
    if done.returncode != 0:
        shallow = git("rev-parse", "--is-shallow-repository").stdout.strip() == "true"
        raise NoBaselineBuild(f"the baseline commit {commit} is not in this clone"
                              + (" (a shallow clone: fetch its history)" if shallow else ""))
    return done.stdout.strip()


def torch_version(python: str) -> str:
    return subprocess.run([python, "-c", "import torch; print(torch.__version__)"],
                          capture_output=True, text=True, check=True).stdout.strip()


def build_baseline(sha: str, python: str, jobs: int) -> Path:
    """The baseline commit's tree with its extension built in place, from the cache or built
    now (its own folder, its own build dir; FASTACT_SKIP_CUDA: the gate times CPU kernels)."""
    root = CACHE / "baseline" / f"{sha[:12]}-torch{torch_version(python)}"
    if (root / ".built").exists():
        print(f"baseline build: {root} (cached)", flush=True)
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{sha[:12]}-", dir=root.parent))
    start = time.perf_counter()
    print(f"baseline build: {sha[:12]} into {root} ...", flush=True)
    try:
        archive = subprocess.run(["git", "archive", "--format=tar", sha], cwd=REPO,
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(staging)], input=archive, check=True)
        env = {**os.environ, "FASTACT_SKIP_CUDA": "1", "MAX_JOBS": str(jobs)}
        build = subprocess.run([python, "setup.py", "-q", "build_ext", "--inplace"],
                               cwd=staging, env=env, capture_output=True, text=True)
        if build.returncode != 0:
            raise NoBaselineBuild(f"the baseline commit {sha[:12]} no longer builds here:\n"
                                  + "\n".join(build.stderr.splitlines()[-15:]))
        if not loads_kernels(staging, python):
            raise NoBaselineBuild(f"the baseline commit {sha[:12]} built, but its kernels do "
                                  "not load here")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    (staging / ".built").write_text(sha + "\n")
    shutil.rmtree(root, ignore_errors=True)
    staging.rename(root)
    print(f"baseline build took {time.perf_counter() - start:.0f} s", flush=True)
    return root


def loads_kernels(root: Path, python: str) -> bool:
    probe = ("import fastact, pathlib, sys; "
             "sys.exit(0 if fastact._extension.loaded() and pathlib.Path(fastact.__file__)"
             f".resolve().is_relative_to(pathlib.Path({str(root.resolve())!r})) else 1)")
    # (run from `root`: `python -c` puts the working directory first on sys.path)
    return subprocess.run([python, "-c", probe], cwd=root, env=build_env(root),
                          capture_output=True).returncode == 0


def build_env(root: Path) -> dict:
    """The environment of a process that imports the build in `root`."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(root) + (os.pathsep + path if path else "")}


def time_build(root: Path, out: Path, python: str, threads: int,
               cases: list[CaseKey] | None) -> list[dict]:
    """One fresh process of the quick speed suite on the build in `root`: its results rows."""
    cmd = [python, str(HERE / "run.py"), "--suite", "speed", "--quick", "--timing", "gate",
           "--no-memory", "--no-plots", "--threads", str(threads), "--device", "cpu",
           "--out", str(out)]
    if cases:
        cmd += ["--cases", *(CASE_SEP.join(key) for key in cases)]
    done = subprocess.run(cmd, env=build_env(root), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"timing {root} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    results = json.loads((out / "results.json").read_text())
    imported = Path(results["machine"].get("fastact_path", "")).resolve()
    if not imported.is_relative_to(root.resolve()):
        raise RuntimeError(f"the process meant for {root} imported fastact from {imported}")
    for line in done.stdout.splitlines():
        if line.startswith("skipped:"):  # cases the baseline's fastact cannot run
            print(f"    {root.name}: {line}", flush=True)
    return results["rows"]


def measure(baseline: Path, candidate: Path, out: Path, python: str, threads: int,
            rounds: int, cases: list[CaseKey] | None = None) -> tuple[paired.Runs, paired.Runs]:
    """`rounds` rounds of one process per build, the order alternating (A B, B A, ...) so that
    neither build always runs first in a round."""
    runs: dict[str, paired.Runs] = {"baseline": [], "candidate": []}
    roots = {"baseline": baseline, "candidate": candidate}
    start = time.perf_counter()
    for r in range(rounds):
        order = ("baseline", "candidate") if r % 2 == 0 else ("candidate", "baseline")
        for name in order:
            print(f"  round {r + 1}/{rounds}: {name} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
            runs[name].append(time_build(roots[name], out / f"{name}-{r + 1}", python,
                                         threads, cases))
    return runs["baseline"], runs["candidate"]


def fallback(reason: str, baseline_file: Path, out: Path, python: str) -> int:
    print(f"warning: the gate cannot measure the baseline build: {reason}\n"
          f"warning: falling back to the stored ratios of {baseline_file} (run.py --check), "
          "whose verdict depends on this machine class having a stored baseline", flush=True)
    return subprocess.run([python, str(HERE / "run.py"), "--check", str(baseline_file),
                           "--out", str(out)]).returncode


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-file", type=Path, default=DEFAULT_BASELINE_FILE)
    parser.add_argument("--commit", help="baseline commit (default: the baseline file's)")
    parser.add_argument("--baseline-root", type=Path,
                        help="a tree whose extension is built in place, used as the baseline")
    parser.add_argument("--candidate-root", type=Path, default=REPO)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("MAX_JOBS", "2")))
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "check")
    args = parser.parse_args(argv)
    if args.rounds < paired.MIN_ROUNDS:
        parser.error(f"--rounds: at least {paired.MIN_ROUNDS} (the A/A noise needs two "
                     "baseline processes)")
    python = sys.executable
    start = time.perf_counter()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    try:
        if args.baseline_root:
            baseline, title = args.baseline_root.resolve(), str(args.baseline_root)
        else:
            sha = resolve(args.commit or recorded_commit(args.baseline_file))
            baseline, title = build_baseline(sha, python, args.jobs), f"commit {sha[:12]}"
    except NoBaselineBuild as why:
        return fallback(str(why), args.baseline_file, args.out / "stored", python)
    candidate = args.candidate_root.resolve()
    print(f"performance gate: {candidate} against {title}; {args.rounds} rounds of one fresh "
          f"process per build, {args.threads} thread(s)", flush=True)

    def remeasure(cases):
        print(f"measuring {len(cases)} failing case(s) again ...", flush=True)
        return measure(baseline, candidate, args.out / "remeasured", python, args.threads,
                       args.rounds, cases)

    runs = measure(baseline, candidate, args.out / "runs", python, args.threads, args.rounds)
    result = paired.gate(*runs, remeasure)
    text = paired.report(result, f"performance gate: candidate {candidate} against baseline "
                                 f"{title} (took {time.perf_counter() - start:.0f} s)")
    print(text)
    (args.out / "report.txt").write_text(text + "\n")
    (args.out / "verdicts.json").write_text(json.dumps(
        [{"key": v.key, "verdict": v.verdict, "change": v.change, "bound": v.bound,
          "aa_noise": v.noise, "baseline": v.baseline, "candidate": v.candidate}
         for v in result.final], indent=1))
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
