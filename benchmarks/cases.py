"""The speed suite's op table: each op's bench module (bench_<op>.py) defines
`cases(device, dtypes, quick)`, yielding harness.Case objects, and SIZES / QUICK_SIZES (label ->
size; QUICK_SIZES is the one size of --quick and of the performance gate). run.py, memory.py
and test_speed.py take the cases from here; a new op adds its module to MODULES."""

from __future__ import annotations

import bench_call_cost
import bench_dct
import bench_geometric_relu
import bench_geometric_relu_conv2d
import bench_hat
import bench_spherical_to_cartesian

MODULES = {
    "hat": bench_hat,
    "dct_activation": bench_dct,
    "spherical_to_cartesian": bench_spherical_to_cartesian,
    "geometric_relu": bench_geometric_relu,
    "geometric_relu_conv2d": bench_geometric_relu_conv2d,
    # The call cost section: modules on small tensors against the native module.
    "hat_call": bench_call_cost.hat,
    "dct_call": bench_call_cost.dct,
    "geometric_relu_frozen": bench_call_cost.geometric_relu_frozen,
}
OPS = {op: module.cases for op, module in MODULES.items()}


def sizes(op: str, quick: bool) -> dict | None:
    """The op's sizes (label -> size) in --quick or full runs; None if its module has none."""
    return getattr(MODULES[op], "QUICK_SIZES" if quick else "SIZES", None)


def measures_memory(op: str) -> bool:
    """Whether the peak-memory table covers the op (not the call-cost section: small tensors)."""
    return getattr(MODULES[op], "MEMORY", True)
