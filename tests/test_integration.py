"""fastact's modules inside real training set-ups: torch.compile of whole models,
torch.export, AMP autocast, state_dict / torch.save / deepcopy round trips, and
DistributedDataParallel (gloo, 2 processes) against single-process training."""

from __future__ import annotations

import copy
import io
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from fastact_testing import requires_gpu

import fastact

# One small model per fastact module; each maps [batch, 16] -> [batch, 4].
MODELS = {
    "hat": lambda: torch.nn.Sequential(
        torch.nn.Linear(16, 32), fastact.nn.Hat(), torch.nn.Linear(32, 4)),
}


def make_model(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return MODELS[name]()


def batch(seed: int = 1, n: int = 8):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 16, generator=generator), torch.randn(n, 4, generator=generator)


@pytest.mark.parametrize("name", MODELS)
def test_compile_whole_model_fullgraph(name):
    torch._dynamo.reset()
    model = make_model(name)
    x, target = batch()
    eager_loss = torch.nn.functional.mse_loss(model(x), target)
    eager_grads = torch.autograd.grad(eager_loss, list(model.parameters()))
    compiled = torch.compile(model, fullgraph=True)
    loss = torch.nn.functional.mse_loss(compiled(x), target)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    torch.testing.assert_close(loss, eager_loss)
    for g, e in zip(grads, eager_grads):
        torch.testing.assert_close(g, e)


@pytest.mark.parametrize("name", MODELS)
def test_export_and_run_the_exported_program(name):
    model = make_model(name).eval()
    x, _ = batch()
    program = torch.export.export(model, (x,))
    assert any("fastact" in str(node.target) for node in program.graph.nodes)
    torch.testing.assert_close(program.module()(x), model(x))
    other, _ = batch(seed=5)
    torch.testing.assert_close(program.module()(other), model(other))


@pytest.mark.parametrize("name", MODELS)
def test_autocast_cpu_bfloat16(name):
    model = make_model(name)
    x, target = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        assert out.dtype == torch.bfloat16
        loss = torch.nn.functional.mse_loss(out.float(), target)
    loss.backward()
    for p in model.parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32
    reference = make_model(name)
    torch.nn.functional.mse_loss(reference(x), target).backward()
    for p, r in zip(model.parameters(), reference.parameters()):
        # bfloat16 has 8 bits of mantissa: gradients agree to a few percent of their scale.
        torch.testing.assert_close(p.grad, r.grad, atol=0.05 * r.grad.abs().max().item(), rtol=0.05)


@requires_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", MODELS)
def test_autocast_cuda(name, dtype):
    model = make_model(name).cuda()
    x, target = (t.cuda() for t in batch())
    with torch.autocast("cuda", dtype=dtype):
        out = model(x)
        assert out.dtype == dtype
        loss = torch.nn.functional.mse_loss(out.float(), target)
    loss.backward()
    assert all(p.grad.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize("name", MODELS)
def test_state_dict_save_load_and_deepcopy(name):
    model = make_model(name, seed=3)
    x, _ = batch()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    restored = make_model(name, seed=4)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    torch.testing.assert_close(restored(x), model(x), rtol=0, atol=0)
    clone = copy.deepcopy(model)
    torch.testing.assert_close(clone(x), model(x), rtol=0, atol=0)
    buffer = io.BytesIO()
    torch.save(model, buffer)  # the whole module, pickled
    buffer.seek(0)
    torch.testing.assert_close(torch.load(buffer, weights_only=False)(x), model(x), rtol=0, atol=0)


STEPS, LR = 3, 0.1


def train(model, x, target, steps=STEPS):
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), target).backward()
        optimizer.step()
    return model


def _ddp_worker(rank, world_size, port, name, result_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        torch.set_num_threads(1)
        model = torch.nn.parallel.DistributedDataParallel(make_model(name))
        x, target = batch(n=8)
        shard = slice(rank * 4, rank * 4 + 4)  # each rank trains on half of the batch
        train(model, x[shard], target[shard])
        if rank == 0:
            torch.save(model.module.state_dict(), result_path)
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("name", MODELS)
def test_distributed_data_parallel_matches_single_process(name, tmp_path):
    result = tmp_path / "rank0.pt"
    mp.spawn(_ddp_worker, args=(2, free_port(), name, str(result)), nprocs=2, join=True)
    distributed = torch.load(result, weights_only=True)
    x, target = batch(n=8)
    # The mean loss over the whole batch has the average of the two halves' gradients,
    # which is what DDP's all-reduce gives each rank.
    single = train(make_model(name), x, target).state_dict()
    for key, value in single.items():
        torch.testing.assert_close(distributed[key], value, rtol=1e-5, atol=1e-6)
