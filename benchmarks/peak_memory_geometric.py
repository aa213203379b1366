"""Peak memory of one forward+backward of GeometricReLU vs nn.Linear + nn.ReLU on CPU.

    python benchmarks/peak_memory_geometric.py [batch in out]

Each provider runs one step in a fresh process; the figure is the growth of the process's
maximum RSS over that step. glibc's mmap threshold is fixed (MALLOC_MMAP_THRESHOLD_) so that
every large tensor is mapped when allocated and unmapped when freed: the RSS then follows the
live tensors. Both figures include the same one-time library buffers (BLAS workspaces).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

STEP = textwrap.dedent("""
    import gc, resource, sys
    import torch, fastact
    torch.manual_seed(0)
    kind, (batch, fan_in, out) = sys.argv[1], map(int, sys.argv[2:5])
    x = torch.randn(batch, fan_in, requires_grad=True)
    grad = torch.randn(batch, out)
    if kind == "nn.Linear+nn.ReLU":
        layer = torch.nn.Linear(fan_in, out)
        inputs, forward = [x, layer.weight, layer.bias], lambda: torch.relu(layer(x))
    else:
        layer = fastact.nn.GeometricReLU(fan_in, out)
        inputs = [x, layer.theta, layer.radius, layer.bias]
        if kind == "GeometricReLU":
            forward = lambda: layer(x)
        else:
            forward = lambda: fastact.reference.geometric_relu(
                x, layer.theta, layer.radius, layer.bias)
    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    grads = torch.autograd.grad(forward(), inputs, grad)
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
""")


def main(argv: list[str]) -> None:
    batch, fan_in, out = map(int, argv) if argv else (1024, 1024, 1024)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    print(f"batch {batch}, {fan_in} -> {out}, float32; one [batch, out] tensor is "
          f"{batch * out * 4 / 2**20:.1f} MiB, theta {out * (fan_in - 1) * 4 / 2**20:.1f} MiB")
    for kind in ("nn.Linear+nn.ReLU", "GeometricReLU", "reference GmP layer"):
        runs = [float(subprocess.run([sys.executable, "-c", STEP, kind, str(batch), str(fan_in),
                                      str(out)], env=env, capture_output=True, text=True,
                                     check=True).stdout)
                for _ in range(3)]
        print(f"{kind:20s} peak growth {min(runs):7.1f} MiB (runs: "
              f"{', '.join(f'{r:.1f}' for r in runs)})")


if __name__ == "__main__":
    main(sys.argv[1:])
