"""fastact's modules inside real training set-ups: torch.compile of whole models,
torch.export, AMP autocast, state_dict / torch.save / deepcopy round trips, and
DistributedDataParallel (gloo, 2 processes) against single-process training."""

from __future__ import annotations

import copy
import faulthandler
import io
import os
import pathlib

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.multiprocessing.spawn import ProcessException
from fastact_testing import requires_gpu

import fastact

# One small model per fastact module; each maps [batch, 16] -> [batch, 4].
MODELS = {
    "hat": lambda: torch.nn.Sequential(
        torch.nn.Linear(16, 32), fastact.nn.Hat(), torch.nn.Linear(32, 4)),
    "dct": lambda: torch.nn.Sequential(
        torch.nn.Linear(16, 32), fastact.nn.DCTActivation(32, channel_dim=-1),
        torch.nn.Linear(32, 4)),
    "geometric": lambda: torch.nn.Sequential(
        fastact.nn.GeometricReLU(16, 32), torch.nn.Linear(32, 4)),
    "geometric_imn": lambda: torch.nn.Sequential(
        fastact.nn.GeometricReLU(16, 32, input_mean_norm=True), torch.nn.Linear(32, 4)),
    "geometric_conv2d": lambda: torch.nn.Sequential(
        torch.nn.Unflatten(1, (2, 2, 4)),
        fastact.nn.GeometricReLUConv2d(2, 6, 3, padding=1, input_mean_norm=True),
        fastact.nn.GeometricReLUConv2d(6, 4, 2), torch.nn.Flatten(), torch.nn.Linear(12, 4)),
}
FASTACT_MODULES = (fastact.nn.Hat, fastact.nn.DCTActivation, fastact.nn.GeometricReLU,
                   fastact.nn.GeometricReLUConv2d)


def record_output_dtypes(model):
    """Forward hooks that append each fastact module's output dtype to the returned list."""
    dtypes = []
    for module in model.modules():
        if isinstance(module, FASTACT_MODULES):
            module.register_forward_hook(lambda m, args, out: dtypes.append(out.dtype))
    return dtypes


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
    dtypes = record_output_dtypes(model)
    x, target = batch(n=32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        assert out.dtype == torch.bfloat16
        loss = torch.nn.functional.mse_loss(out.float(), target)
    # Hat and DCTActivation keep their (bfloat16, from nn.Linear) input's dtype; the GmP layers
    # run in bfloat16 like nn.Linear / nn.Conv2d, also on the float32 model input.
    assert dtypes and all(d == torch.bfloat16 for d in dtypes), dtypes
    loss.backward()
    for p in model.parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32
    reference = make_model(name)
    torch.nn.functional.mse_loss(reference(x), target).backward()
    assert_gradients_close(model, reference, 0.15)


def assert_gradients_close(model, reference, tolerance):
    """The whole gradient (every parameter's, concatenated) within `tolerance` of the float32
    one, relative, in norm. Not elementwise: these activations have kinks (ReLU's at 0, Hat's at
    0, 1, 2), and a pre-activation within bfloat16 rounding of a kink switches slope, which moves
    a few gradient terms by their whole size (per element up to ~50% for units active at a
    handful of positions). Measured on 12 batches of 32: at most 9% (Hat), 2% (GmP), 1% (DCT);
    a wrong gradient is ~100% off."""
    actual = torch.cat([p.grad.flatten() for p in model.parameters()])
    expected = torch.cat([p.grad.flatten() for p in reference.parameters()])
    error = ((actual.float() - expected).norm() / expected.norm()).item()
    assert error < tolerance, f"gradient relative error {error:.3g}"


@pytest.mark.parametrize("name", MODELS)
def test_autocast_cpu_bfloat16_compiled(name):
    torch._dynamo.reset()
    model = make_model(name)
    x, target = batch()
    compiled = torch.compile(model, fullgraph=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        eager = model(x)
        out = compiled(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, eager, atol=0.02, rtol=0.02)  # bfloat16 rounding
    torch.nn.functional.mse_loss(out.float(), target).backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize("name", MODELS)
def test_export_under_autocast_leaves_the_casts_to_the_caller(name):
    """As for nn.Linear, exporting inside autocast records no casts: the program runs in
    bfloat16 under autocast and in float32 outside it."""
    model = make_model(name).eval()
    x, _ = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        program = torch.export.export(model, (x,))
        out = program.module()(x)
        assert out.dtype == torch.bfloat16
        torch.testing.assert_close(out, model(x))
    torch.testing.assert_close(program.module()(x), model(x))


@requires_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", MODELS)
def test_autocast_cuda(name, dtype):
    model = make_model(name).cuda()
    dtypes = record_output_dtypes(model)
    x, target = (t.cuda() for t in batch(n=32))
    with torch.autocast("cuda", dtype=dtype):
        out = model(x)
        assert out.dtype == dtype
        loss = torch.nn.functional.mse_loss(out.float(), target)
    assert dtypes and all(d == dtype for d in dtypes), dtypes
    loss.backward()
    assert all(p.grad.dtype == torch.float32 for p in model.parameters())
    reference = make_model(name).cuda()
    torch.nn.functional.mse_loss(reference(x), target).backward()
    assert_gradients_close(model, reference, 0.15)


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


def ddp_batch(name: str):
    """The full batch of 8; each DDP rank trains on one half. With input mean normalisation the
    layer subtracts the mean of the batch it sees, so the two halves' gradients average to the
    full batch's only when every half has the full batch's mean: for those models the second
    half is the first half's rows in reverse order (same mean, different samples per rank)."""
    x, target = batch(n=8)
    if name.endswith("imn") or name == "geometric_conv2d":
        x = torch.cat([x[:4], x[:4].flip(0)])
    return x, target


def _ddp_worker(rank, world_size, workdir):
    """One rank: trains every model on its half of the batch; rank 0 saves the results.
    Hermetic (a file store, the gloo pairs on the loopback interface: no port to race for, no
    host name to resolve) and diagnosable (stdout/stderr and a fault handler's traceback go to
    rank<N>.log, which the fixture shows when a rank dies)."""
    workdir = pathlib.Path(workdir)
    log = open(workdir / f"rank{rank}.log", "w", buffering=1)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    faulthandler.enable(log)
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    dist.init_process_group("gloo", init_method=(workdir / "store").as_uri(), rank=rank,
                            world_size=world_size)
    try:
        torch.set_num_threads(1)
        results = {}
        for name in MODELS:  # one pair of processes trains every model (spawning is slow)
            model = torch.nn.parallel.DistributedDataParallel(make_model(name))
            x, target = ddp_batch(name)
            shard = slice(rank * 4, rank * 4 + 4)  # each rank trains on half of the batch
            train(model, x[shard], target[shard])
            results[name] = model.module.state_dict()
            del model  # no DDP reducer outlives the process group
        if rank == 0:
            torch.save(results, workdir / "rank0.pt")
        dist.barrier()  # both ranks leave together: neither tears down a pair the other uses
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ddp")
    try:
        mp.spawn(_ddp_worker, args=(2, str(workdir)), nprocs=2, join=True)
    except ProcessException as error:
        logs = "\n".join(f"--- {log.name} ---\n{log.read_text()[-4000:]}"
                         for log in sorted(workdir.glob("rank*.log")))
        pytest.fail(f"a DDP rank failed: {error}\n{logs}", pytrace=False)
    return torch.load(workdir / "rank0.pt", weights_only=True)


@pytest.mark.parametrize("name", MODELS)
def test_distributed_data_parallel_matches_single_process(name, ddp_results):
    distributed = ddp_results[name]
    x, target = ddp_batch(name)
    # The mean loss over the whole batch has the average of the two halves' gradients,
    # which is what DDP's all-reduce gives each rank.
    single = train(make_model(name), x, target).state_dict()
    assert single.keys() == distributed.keys()
    for key, value in single.items():
        torch.testing.assert_close(distributed[key], value, rtol=1e-5, atol=1e-6)
