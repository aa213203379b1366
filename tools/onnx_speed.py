"""Inference time of one model in ONNX Runtime against PyTorch (fastact's CPU kernels), on one
CPU thread, in one process: the README's Deploy numbers.

The model: Linear(256, 512), Hat, DCTActivation(512), GeometricReLU(512, 512), Linear(512, 10)
in eval mode, float32, exported with torch.onnx.export(dynamo=True). The two runtimes are timed
in alternating rounds (the machine may be shared: the ratio of medians from one process is the
number to read), for each batch size.

Usage: python tools/onnx_speed.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import tempfile
import time

import onnxruntime
import torch
from torch import nn

import fastact


def machine() -> str:
    """lscpu's model name, the vector extensions that matter here, and the CPU count."""
    fields = {}
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    except OSError:
        pass
    flags = fields.get("Flags", "").split()
    extensions = [name for flag, name in (("avx512f", "AVX-512"), ("amx_bf16", "AMX-BF16"))
                  if flag in flags]
    return (f"{fields.get('Model name', platform.processor() or 'unknown CPU')} "
            f"({', '.join(extensions or ['no AVX-512'])}), {os.cpu_count()} CPUs")


def seconds_per_call(run, repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        run()
    return (time.perf_counter() - start) / repeat


def calls_in(seconds: float, run) -> int:
    """How many calls of `run` take about `seconds` (after one warm-up call)."""
    run()
    return max(1, round(seconds / seconds_per_call(run, 3)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    rounds = parser.parse_args().rounds
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 512), fastact.nn.Hat(), fastact.nn.DCTActivation(512),
                          fastact.nn.GeometricReLU(512, 512), nn.Linear(512, 10)).eval()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.onnx")
        torch.onnx.export(model, (torch.randn(4, 256),), path, dynamo=True,
                          dynamic_shapes=({0: torch.export.Dim("batch")},))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    print(f"{machine()}; torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
          "1 thread, float32")
    print(f"{'batch':>6} {'PyTorch':>10} {'ORT':>10} {'ORT / PyTorch':>14}")
    for batch in (1, 64, 1024):
        x = torch.randn(batch, 256)
        feed = {name: x.numpy()}
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(session.run(None, feed)[0]), model(x))

            def eager():
                model(x)

            def ort():
                session.run(None, feed)

            times = {eager: [], ort: []}
            repeats = {run: calls_in(0.1, run) for run in times}
            for _ in range(rounds):
                for run in times:
                    times[run].append(seconds_per_call(run, repeats[run]))
        torch_s, ort_s = (statistics.median(times[run]) for run in (eager, ort))
        print(f"{batch:>6} {torch_s * 1e6:>8.1f}us {ort_s * 1e6:>8.1f}us {ort_s / torch_s:>14.2f}")


if __name__ == "__main__":
    main()
