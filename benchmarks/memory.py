"""Peak memory of forward+backward on CPU: the growth of the resident set while one call runs.

The benchmark process itself cannot measure this: glibc keeps freed memory in its heap and
hands it out again without the resident set growing. So each op runs in a fresh process
(`python benchmarks/memory.py --op hat ...`) that sets glibc's mmap threshold to 64 KiB
(harness.configure_malloc): every allocation of 64 KiB or more is mapped on its own and
unmapped on free, so the resident set follows the live tensors. For each provider of the op's
largest forward+backward case: two warm-up calls (compile, allocate), then the peak resident
set is reset (`echo 5 > /proc/self/clear_refs`) and one call runs; its growth is
VmHWM - VmRSS.
One process per op (both dtypes, providers one after another) keeps start-up costs to a few
processes, run two at a time after all timing is done.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MMAP_THRESHOLD = 65536


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def rss_growth(fn) -> int:
    """Bytes the resident set grew by at the peak of one call of fn."""
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    fn()
    return (_status_kib("VmHWM") - before) * 1024


def largest_forward_backward(cases):
    """The forward+backward case with the most elements (the others are dropped as the
    generator moves on, so only its tensors stay alive)."""
    best = None
    for case in cases:
        if case.mode == "forward+backward" and (best is None or case.numel > best.numel):
            best = case
    return best


def measure(op: str, dtypes: list[str], quick: bool) -> list[dict]:
    """Child side: one record per dtype with each provider's resident-set growth."""
    import torch  # noqa: F401  (after argument parsing: the parent reads errors faster)

    from harness import DTYPES
    from cases import OPS

    records = []
    for dtype in dtypes:
        case = largest_forward_backward(OPS[op]("cpu", [DTYPES[dtype]], quick))
        if case is None:
            continue
        peaks = {}
        for name, fn in case.providers.items():
            fn()
            fn()
            peaks[name] = rss_growth(fn)
        records.append({"op": op, "dtype": case.dtype, "size": case.size, "bytes": peaks})
    return records


def measure_all(ops: list[str], dtypes: list[str], quick: bool, threads: int,
                workers: int = 2) -> tuple[list[dict], list[str]]:
    """Parent side: one child per op, `workers` at a time. Returns the records and the
    errors (op: message) of children that failed."""
    pending = list(ops)
    running: list[tuple[str, subprocess.Popen]] = []
    records, errors = [], []
    while pending or running:
        while pending and len(running) < workers:
            op = pending.pop(0)
            cmd = [sys.executable, str(HERE / "memory.py"), "--op", op, "--dtype", *dtypes,
                   "--threads", str(threads)] + (["--quick"] if quick else [])
            running.append((op, subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                                 stderr=subprocess.PIPE, text=True)))
        op, proc = running.pop(0)
        out, err = proc.communicate()
        if proc.returncode == 0:
            records += json.loads(out.strip().splitlines()[-1])
        else:
            last = (err.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
            errors.append(f"{op}: {last}")
    return records, errors


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--op", required=True)
    parser.add_argument("--dtype", nargs="+", required=True)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    import torch

    from harness import configure_malloc

    if not configure_malloc(MMAP_THRESHOLD):
        raise RuntimeError("peak memory needs glibc's mallopt")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps(measure(args.op, args.dtype, args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
