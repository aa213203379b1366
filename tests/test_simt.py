"""The SIMT emulator that runs the CUDA kernels on the CPU ("cuda-emulated", csrc/emulator):
warp operations, barriers, shared memory and schedules on probe kernels of its own, misuse
reported instead of hanging, and every CUDA kernel giving the same bits in every schedule (the
kernels are deterministic: a difference would be a race between threads)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import fastact
from fastact import _extension

pytestmark = pytest.mark.skipif(
    not _extension.emulated_loaded(),
    reason="fastact._C_emulated is not built (FASTACT_EMULATED_CUDA=1; `make build` sets it)",
)

probes = torch.ops.fastact_simt_probes
SCHEDULES = [("forward", 0), ("reverse", 0), ("shuffled", 1), ("shuffled", 2)]


class schedule:
    """Runs the block's threads in `name` order (seed for "shuffled") inside the block."""

    def __init__(self, name: str, seed: int = 0):
        self.setting = (name, seed)

    def __enter__(self):
        self.saved = _extension._C_emulated.schedule()
        _extension._C_emulated.set_schedule(*self.setting)

    def __exit__(self, *exc_info):
        _extension._C_emulated.set_schedule(*self.saved)


def test_the_tests_run_the_shuffled_schedule():
    assert _extension._C_emulated.schedule()[0] == "shuffled"


@pytest.mark.parametrize("name, seed", SCHEDULES)
def test_warp_operations_give_each_lane_what_the_device_gives(name, seed):
    x = torch.randn(128, dtype=torch.float64)
    x[::3] = -x[::3].abs()
    with schedule(name, seed):
        out = probes.warp_ops(x)
    lane = torch.arange(128) % 32
    warp = torch.arange(128) // 32 * 32
    positive = (x > 0).reshape(4, 32)
    ballot = (positive.long() << torch.arange(32)).sum(1).double().repeat_interleave(32)
    expected = torch.stack([
        x[warp + (lane + 3) % 32],
        torch.where(lane >= 5, x[warp + lane - 5], x),
        torch.where(lane + 5 < 32, x[warp + (lane + 5) % 32], x),
        x[warp + (lane ^ 7)],
        x[warp + lane // 8 * 8 + 2],
        ballot,
        torch.zeros(128, dtype=torch.float64),
        torch.ones(128, dtype=torch.float64),
    ], dim=1)
    assert torch.equal(out, expected)


@pytest.mark.parametrize("name, seed", SCHEDULES)
def test_a_block_barrier_orders_shared_memory(name, seed):
    x = torch.randn(6 * 96, dtype=torch.float64)
    with schedule(name, seed):
        out = probes.block_reverse(x, 96, True)
    assert torch.equal(out, x.reshape(6, 96).flip(1).reshape(-1))


@pytest.mark.parametrize("name, seed", SCHEDULES)
def test_a_missing_barrier_gives_wrong_values_in_every_schedule(name, seed):
    x = torch.randn(6 * 96, dtype=torch.float64)
    with schedule(name, seed):
        out = probes.block_reverse(x, 96, False)
    assert not torch.equal(out, x.reshape(6, 96).flip(1).reshape(-1))


def test_dynamic_shared_memory_is_per_block_and_poisoned():
    x = torch.randn(4 * 64, dtype=torch.float64)
    assert torch.equal(probes.dynamic_reverse(x, 64, 64), x.reshape(4, 64).flip(1).reshape(-1))
    out = probes.dynamic_reverse(x, 64, 48).reshape(4, 64)
    # Slots 48..63 were never written in any block: they read the fill (NaN), not a neighbour's.
    assert out[:, :16].isnan().all()
    assert torch.equal(out[:, 16:], x.reshape(4, 64)[:, :48].flip(1))


def test_the_schedules_order_the_threads_of_each_block():
    with schedule("forward"):
        assert torch.equal(probes.run_order(3, 64), torch.arange(64).repeat(3, 1))
    with schedule("reverse"):
        assert torch.equal(probes.run_order(3, 64), torch.arange(63, -1, -1).repeat(3, 1))
    with schedule("shuffled", 5):
        order = probes.run_order(3, 64)
    assert torch.equal(order.sort(1).values, torch.arange(64).repeat(3, 1))
    assert not torch.equal(order[0], torch.arange(64)) and not torch.equal(order[0], order[1])


@pytest.mark.parametrize("which, message", [
    (0, "thread 0 waits at __syncthreads, which thread 16 never reaches: it has exited"),
    (1, "that thread 5 never reaches: it has exited"),
    (2, "thread 0 reads lane 20 outside the shuffle's mask 0xffff"),
    (3, "wait at different warp operations"),
    (4, r"invalid grid \(0, 1, 1\)"),
    (5, r"invalid block \(2048, 1, 1\)"),
])
@pytest.mark.parametrize("name", ["forward", "reverse"])
def test_misuse_is_a_clear_error_not_a_hang(which, message, name):
    with schedule(name), pytest.raises(RuntimeError, match=message):
        probes.misuse(which)
    # The emulator is usable again after the error.
    assert torch.equal(probes.run_order(1, 32)[0].sort().values, torch.arange(32))


def test_the_schedule_comes_from_the_environment():
    code = "import fastact; print(fastact._extension._C_emulated.schedule())"
    env = dict(os.environ, FASTACT_SIMT_SCHEDULE="reverse:7")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "('reverse', 7)"
    with pytest.raises(ValueError, match="unknown schedule 'sideways'"):
        _extension._C_emulated.set_schedule("sideways")


# ---- every CUDA kernel, in every schedule ----------------------------------------------------

def _kernel_runs():
    """Calls of every op of torch.ops.fastact_emulated that together launch every kernel of
    csrc/cuda: name -> a function returning the outputs."""
    ops = torch.ops.fastact_emulated
    g = torch.Generator().manual_seed(0)

    def randn(*shape, dtype=torch.float32):
        return torch.randn(*shape, generator=g).to(dtype)

    x = randn(1000 + 3)
    strided = randn(40, 30).t()
    rows_x, rows_grad, rows_coeffs = randn(300, 40), randn(300, 40), randn(40, 5)
    runs_x, runs_grad, runs_coeffs = randn(3, 7, 700), randn(3, 7, 700), randn(7, 4)
    theta_warp, theta_block = randn(37, 40) * 2, randn(3, 1500) * 2
    w = randn(37, 20)
    lx, lu, lr, lb = randn(33, 24), randn(40, 24), randn(40).abs(), randn(40)
    cx, cu, cr = randn(2, 4, 9, 9), randn(6, 36), randn(6).abs()
    return {
        "hat": lambda: (ops.hat(x), ops.hat_backward(x, x), ops.hat(strided)),
        "dct_rows": lambda: (ops.dct_activation(rows_x, rows_coeffs, 1, -1.0, 1.0, True, False),
                             *ops.dct_activation_backward(rows_grad, rows_x, rows_coeffs, 1, -1.0,
                                                          1.0, True, False, [True, True])),
        "dct_runs": lambda: (ops.dct_activation(runs_x, runs_coeffs, 1, -1.0, 1.0, False, True),
                             *ops.dct_activation_backward(runs_grad, runs_x, runs_coeffs, 1, -1.0,
                                                          1.0, False, True, [True, True])),
        "spherical_warp_rows": lambda: (
            ops.spherical_to_cartesian(theta_warp),
            ops.spherical_to_cartesian_backward(randn(37, 41), theta_warp)),
        "spherical_block_rows": lambda: (
            ops.spherical_to_cartesian(theta_block),
            ops.spherical_to_cartesian_backward(randn(3, 1501), theta_block)),
        "cartesian": lambda: (*ops.cartesian_to_spherical(w),
                              ops.cartesian_to_spherical_backward(randn(37), randn(37, 19), w)),
        "linear": lambda: _layer_outputs(ops.geometric_relu_linear(lx, lu, lr, lb),
                                         lambda z, mask: ops.geometric_relu_linear_backward(
                                             randn(*z.shape), mask, lx, lu, lr, lb, [True, True])),
        "conv2d": lambda: _layer_outputs(
            ops.geometric_relu_conv2d(cx, cu.reshape(6, 4, 3, 3), cr, None, [1, 1], [1, 1],
                                      [1, 1], 1),
            lambda z, mask: ops.geometric_relu_conv2d_backward(
                randn(*z.shape), mask, cx, cu.reshape(6, 4, 3, 3), cr, None, [1, 1], [1, 1],
                [1, 1], 1, [True, True])),
    }


def _layer_outputs(forward, backward):
    z, mask = forward
    return (z, mask, *backward(z, mask))


@pytest.mark.parametrize("run", list(_kernel_runs()))
def test_every_kernel_gives_the_same_bits_in_every_schedule(run):
    results = []
    for name, seed in SCHEDULES:
        with schedule(name, seed):
            results.append(_kernel_runs()[run]())
    for other in results[1:]:
        for first, again in zip(results[0], other):
            assert torch.equal(first, again)


def test_the_emulated_backend_is_listed_and_selected():
    assert "cuda-emulated" in fastact.available_backends()
    x = torch.randn(100)
    with fastact.use_backend("cuda-emulated"):
        assert fastact._backend.select("hat", x.device) == "cuda-emulated"
        y = fastact.hat(x)
    assert torch.equal(y, fastact.hat(x))
    assert fastact._backend.ops("cuda-emulated") is torch.ops.fastact_emulated


BAD_CALLS = {
    "hat": (torch.arange(3),),
    "hat_backward": (torch.ones(4), torch.ones(3)),
    "dct_activation": (torch.ones(2, 3), torch.ones(4, 5), 1, -1.0, 1.0, True, False),
    "spherical_to_cartesian": (torch.arange(3),),
    "spherical_to_cartesian_backward": (torch.ones(2, 3), torch.ones(2, 3)),
    "cartesian_to_spherical": (torch.ones(4, 1),),
    "geometric_relu_linear": (torch.ones(3, 4), torch.ones(5, 6), torch.ones(5), None),
}


@pytest.mark.parametrize("op", list(BAD_CALLS))
def test_bad_input_gets_the_cpu_kernels_error(op):
    errors = []
    for namespace in (torch.ops.fastact, torch.ops.fastact_emulated):
        with pytest.raises(Exception) as info:
            getattr(namespace, op)(*BAD_CALLS[op])
        errors.append((type(info.value), str(info.value).split("\n")[0]))
    assert errors[0] == errors[1] and "fastact." in errors[0][1]
