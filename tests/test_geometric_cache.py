"""The cache of the GmP directions u = spherical_to_cartesian(theta) (fastact.layer.directions):
served only when nothing needs theta's gradient, invalidated by every change of theta, and
never changing a value or a gradient."""

from __future__ import annotations

import copy

import pytest
import torch

import fastact
from fastact import layer

pytestmark = pytest.mark.skipif("cpu" not in fastact.available_backends(),
                                reason="the cache serves the C++ kernels' directions")


def linear_module(dtype=torch.float32):
    torch.manual_seed(0)
    return fastact.nn.GeometricReLU(12, 5, dtype=dtype).eval()


def conv_module(dtype=torch.float32):
    torch.manual_seed(0)
    return fastact.nn.GeometricReLUConv2d(3, 4, 3, padding=1, dtype=dtype).eval()


MODULES = {"linear": (linear_module, (6, 12)), "conv2d": (conv_module, (2, 3, 5, 5))}


def uncached(module, x):
    """The module's output with the directions computed afresh."""
    layer.clear_directions_cache()
    return module(x)


def cached_u(module):
    entry = layer._DIRECTIONS.get(id(module.theta))
    return None if entry is None or entry[0]() is not module.theta else entry[2]


@pytest.mark.parametrize("kind", MODULES)
def test_served_under_no_grad_and_equal(kind):
    make, shape = MODULES[kind]
    module, x = make(), torch.randn(shape)
    with torch.no_grad():
        expected = uncached(module, x)
        u = cached_u(module)
        assert u is not None
        again = module(x)
        assert cached_u(module) is u  # served, not recomputed
    torch.testing.assert_close(again, expected, rtol=0, atol=0)
    torch.testing.assert_close(u, fastact.spherical_to_cartesian(module.theta.detach()),
                               rtol=0, atol=0)


@pytest.mark.parametrize("kind", MODULES)
def test_inference_mode_and_frozen_parameters(kind):
    make, shape = MODULES[kind]
    module, x = make(), torch.randn(shape)
    with torch.inference_mode():
        module(x)
        assert cached_u(module) is not None
    # Frozen angles with grad mode on: cached, and x's gradient is exact. (An inference-mode u is
    # not served outside inference mode: it could not be saved for the backward.)
    module.requires_grad_(False)
    x.requires_grad_()
    module(x).square().sum().backward()
    u = cached_u(module)
    assert u is not None and not u.is_inference()
    grad = x.grad.clone()
    x.grad = None
    layer.clear_directions_cache()
    module(x).square().sum().backward()
    torch.testing.assert_close(x.grad, grad, rtol=0, atol=0)


@pytest.mark.parametrize("kind", MODULES)
def test_never_served_to_autograd_when_theta_needs_grad(kind):
    make, shape = MODULES[kind]
    module, x = make().train(), torch.randn(shape)
    with torch.no_grad():
        module(x)  # fills the cache
    stale = cached_u(module)
    module(x).sum().backward()
    assert module.theta.grad is not None and module.theta.grad.abs().sum() > 0
    grad = module.theta.grad.clone()
    module.theta.grad = None
    layer.clear_directions_cache()
    module(x).sum().backward()
    torch.testing.assert_close(module.theta.grad, grad, rtol=0, atol=0)
    assert cached_u(module) is None  # training computes u with its graph and caches nothing
    assert stale is not None


def changes():
    def in_place(module):
        with torch.no_grad():
            module.theta.add_(0.25)

    def load_state_dict(module):
        state = {k: v.clone() for k, v in module.state_dict().items()}
        state["theta"] += 0.25
        module.load_state_dict(state)

    def optimizer_step(module):
        optimizer = torch.optim.SGD(module.parameters(), lr=0.5)
        module.train()
        module(torch.randn(module.example_shape)).sum().backward()
        optimizer.step()
        module.eval()

    def copy_into(module):
        with torch.no_grad():
            module.theta.copy_(torch.rand_like(module.theta))

    return {"in_place": in_place, "load_state_dict": load_state_dict,
            "optimizer_step": optimizer_step, "copy_": copy_into}


@pytest.mark.parametrize("change", changes())
@pytest.mark.parametrize("kind", MODULES)
def test_invalidated_by_every_change(kind, change):
    make, shape = MODULES[kind]
    module, x = make(), torch.randn(shape)
    module.example_shape = shape
    with torch.no_grad():
        before = module(x)
    changes()[change](module)
    with torch.no_grad():
        after = module(x)
        fresh = uncached(module, x)
    torch.testing.assert_close(after, fresh, rtol=0, atol=0)
    assert not torch.equal(after, before)


@pytest.mark.parametrize("kind", MODULES)
def test_invalidated_by_to(kind):
    make, shape = MODULES[kind]
    module, x = make(), torch.randn(shape)
    with torch.no_grad():
        module(x)
        module.to(torch.float64)
        out = module(x.double())
        assert out.dtype == torch.float64 and cached_u(module).dtype == torch.float64
        torch.testing.assert_close(out, uncached(module, x.double()), rtol=0, atol=0)


def test_copies_do_not_share_an_entry():
    module, x = linear_module(), torch.randn(6, 12)
    with torch.no_grad():
        module(x)
        twin = copy.deepcopy(module)
        twin.theta.add_(0.5)
        torch.testing.assert_close(twin(x), uncached(twin, x), rtol=0, atol=0)


def test_entry_goes_with_its_parameter():
    module = linear_module()
    with torch.no_grad():
        module(torch.randn(2, 12))
    key = id(module.theta)
    assert key in layer._DIRECTIONS
    del module
    assert key not in layer._DIRECTIONS


def test_changes_through_data_need_clear():
    """The documented limit: .data bypasses the version counter."""
    module, x = linear_module(), torch.randn(6, 12)
    with torch.no_grad():
        module(x)
        module.theta.data.add_(0.25)
        stale = module(x)
        layer.clear_directions_cache()
        fresh = module(x)
        expected = fastact.reference.geometric_relu(x, module.theta, module.radius, module.bias)
    torch.testing.assert_close(fresh, expected, rtol=2e-5, atol=2e-5)
    assert not torch.equal(stale, fresh)


def test_compiled_module_computes_u_in_its_graph():
    module, x = linear_module(), torch.randn(6, 12)
    compiled = torch.compile(module, fullgraph=True)
    with torch.no_grad():
        out = compiled(x)
        with torch.no_grad():
            module.theta.add_(0.25)
        changed = compiled(x)
    torch.testing.assert_close(changed, uncached(module, x), rtol=1e-6, atol=1e-6)
    assert not torch.equal(out, changed)
