"""Property tests with hypothesis: random shapes (0- and 1-sized dims included), layouts,
dtypes and values (huge, tiny, subnormal, NaN, inf) for every op on every backend runnable
here, against the reference; and ops called from several Python threads at once."""

from __future__ import annotations

import math
import threading

import pytest
import torch
from fastact_testing import (
    FLOAT_DTYPES,
    KERNEL_BACKEND_DEVICES,
    interpreted,
    without_interpreter_blind_spots,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastact

SPECIAL_VALUES = [0.0, -0.0, 1.0, 2.0, 0.5, 1.5, -1.0, 3.0, 1e-40, -1e-40, 1e-30, 65504.0,
                  3e38, -3e38, math.inf, -math.inf, math.nan]
values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.floats(min_value=-4.0, max_value=4.0, width=32),
    st.sampled_from(SPECIAL_VALUES),
)


@st.composite
def tensors(draw, max_dims=4, max_side=5):
    """A float tensor of a random dtype and shape, in a random layout: contiguous, permuted,
    sliced with a step, or expanded from a size-1 dim."""
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    shape = draw(st.lists(st.integers(0, max_side), max_size=max_dims))
    numel = math.prod(shape)
    data = draw(st.lists(values, min_size=numel, max_size=numel))
    x = torch.tensor(data, dtype=torch.float64).reshape(shape).to(dtype)
    layout = draw(st.sampled_from(["contiguous", "permuted", "stepped", "expanded"]))
    if layout == "permuted" and x.dim() > 1:
        x = x.permute(draw(st.permutations(range(x.dim()))))  # dense, not contiguous
    elif layout == "stepped" and x.dim() > 0:
        x = torch.repeat_interleave(x, 2, dim=-1)[..., ::2]
    elif layout == "expanded" and x.dim() > 0 and x.shape[0] == 1:
        x = x.expand(3, *x.shape[1:])
    return x


def same_values(actual: torch.Tensor, expected: torch.Tensor) -> bool:
    return actual.shape == expected.shape and torch.equal(
        actual.double().nan_to_num(nan=7.0), expected.double().nan_to_num(nan=7.0))


PROPERTY_SETTINGS = settings(
    max_examples=200, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("backend, device", KERNEL_BACKEND_DEVICES)
@PROPERTY_SETTINGS
@given(x=tensors(), seed=st.integers(0, 2**31 - 1))
def test_hat_matches_reference(backend, device, x, seed):
    x = without_interpreter_blind_spots(x.to(device), backend, device)
    before = x.clone()
    with fastact.use_backend(backend):
        y = fastact.hat(x.requires_grad_())
    # hat is exact in every dtype: the reference in float64, rounded, must match exactly.
    assert same_values(y, fastact.reference.hat(x.detach().double()).to(x.dtype))
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)).to(x.dtype)
    (dx,) = torch.autograd.grad(y, x, grad.to(device))
    x64 = x.detach().double().requires_grad_()
    (expected_dx,) = torch.autograd.grad(fastact.reference.hat(x64), x64, grad.double())
    assert same_values(dx, expected_dx.to(x.dtype))
    assert same_values(x.detach(), before)  # the input is never written


@pytest.mark.parametrize("backend, device", KERNEL_BACKEND_DEVICES)
def test_ops_from_four_threads_at_once(backend, device):
    """Each thread picks its own backend (use_backend is per thread) and checks its results."""
    size = 4099 if interpreted(backend, device) else 1 << 18
    errors = []
    barrier = threading.Barrier(4)

    def worker(index):
        try:
            generator = torch.Generator().manual_seed(index)
            x = (torch.randn(size, generator=generator) * 2 + 1).to(device)
            expected = fastact.reference.hat(x.double()).float()
            with fastact.use_backend(backend if index % 2 else "auto"):
                barrier.wait(30)
                for _ in range(5):
                    assert torch.equal(fastact.hat(x), expected)
        except Exception as error:  # noqa: BLE001  (reported below)
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
