"""make fuzz: the property tests of tests/test_properties.py with fresh random seeds and many
more examples than `make test`, for exploration.

    python tools/fuzz.py [--minutes 30] [--examples 1000] [-k EXPR] [--seed S]

Runs one property test on one backend at a time (pytest, hypothesis profile "fuzz"), each with
its own random seed and --examples examples (hat's twice), going round the tests until
--minutes have passed (a run that has started finishes). Prints the seed of every run; a failing
run's report (the falsifying example, hypothesis's @reproduce_failure blob) and the command
that replays it; at the end, the examples per test and backend. Exit status 1 if anything failed.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shlex
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = "tests/test_properties.py"
STATISTICS = re.compile(r"(\d+) passing, (\d+) failing, and (\d+) invalid")


def property_tests(expression: str | None) -> list[str]:
    """The ids of the hypothesis tests in TESTS that run here (the GPU ids only with a GPU)."""
    import torch

    command = [sys.executable, "-m", "pytest", TESTS, "--collect-only", "-q", "-p",
               "no:cacheprovider"]
    if not torch.cuda.is_available():
        command += ["-m", "not gpu"]
    if expression:
        command += ["-k", expression]
    listing = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    ids = [line for line in listing.stdout.splitlines() if line.startswith(TESTS + "::")]
    return [i for i in ids if "_matches_reference[" in i]


def replay_command(test_id: str, seed: int, examples: int) -> str:
    return (f"FUZZ_EXAMPLES={examples} {shlex.quote(sys.executable)} -m pytest "
            f"{shlex.quote(test_id)} -p no:cacheprovider --hypothesis-profile=fuzz "
            f"--hypothesis-seed={seed}")


def run_once(test_id: str, seed: int, examples: int) -> tuple[bool, int, str]:
    """(passed, examples run, pytest's output) of one test id with one seed."""
    command = [sys.executable, "-m", "pytest", test_id, "-q", "-p", "no:cacheprovider",
               "--hypothesis-profile=fuzz", f"--hypothesis-seed={seed}",
               "--hypothesis-show-statistics"]
    env = {**os.environ, "FUZZ_EXAMPLES": str(examples)}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    counts = [int(m.group(1)) + int(m.group(2)) for m in STATISTICS.finditer(result.stdout)]
    return result.returncode == 0, sum(counts), result.stdout + result.stderr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--examples", type=int, default=1000,
                        help="examples per run of a test on a backend (hat's: twice)")
    parser.add_argument("-k", dest="expression", help="pytest -k expression selecting tests")
    parser.add_argument("--seed", type=int, help="the first run's seed (then random ones)")
    args = parser.parse_args()

    tests = property_tests(args.expression)
    if not tests:
        print("fuzz: no property test selected")
        return 2
    seeds = random.SystemRandom()
    deadline = time.monotonic() + args.minutes * 60
    examples = defaultdict(int)
    seconds = defaultdict(float)
    failures = []
    start = time.monotonic()
    print(f"fuzz: {len(tests)} tests, {args.examples} examples a run, {args.minutes:g} minutes")
    turn = 0
    while time.monotonic() < deadline:
        test_id = tests[turn % len(tests)]
        seed = args.seed if turn == 0 and args.seed is not None else seeds.randrange(2**32)
        turn += 1
        began = time.monotonic()
        passed, count, output = run_once(test_id, seed, args.examples)
        name = test_id.split("::")[1]
        examples[name] += count
        seconds[name] += time.monotonic() - began
        print(f"[{(time.monotonic() - start) / 60:6.1f} min] seed {seed:>10}  {name}: "
              f"{count} examples, {'passed' if passed else 'FAILED'} "
              f"({time.monotonic() - began:.0f} s)", flush=True)
        if not passed:
            failures.append((test_id, seed))
            print(output[-6000:])
            print(f"replay: {replay_command(test_id, seed, args.examples)}\n", flush=True)

    print(f"\nfuzz: {(time.monotonic() - start) / 60:.1f} minutes, {turn} runs")
    for name in sorted(examples):
        print(f"  {name:<64} {examples[name]:>8} examples {seconds[name] / 60:6.1f} min")
    if failures:
        print(f"fuzz: {len(failures)} failing run(s); replay with:")
        for test_id, seed in failures:
            print(f"  {replay_command(test_id, seed, args.examples)}")
        return 1
    print("fuzz: no failure")
    return 0


if __name__ == "__main__":
    sys.exit(main())
