"""Smoke test of the spectral suite's two quickest parts (harmonic signatures with --quick, and
kernel fidelity with signals shorter than --quick; a few seconds each): they write their JSON
and plots, and what they report holds. The training parts (3-6) take 10-35 s each even with
--quick and run in `make bench`."""

import json
import math
import sys
from pathlib import Path

import torch

import fastact

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from spectral import fidelity, signatures  # noqa: E402
from spectral.common import single_thread  # noqa: E402


def test_signatures_part_writes_results_and_reproduces_the_relu_series(tmp_path):
    with single_thread("cpu"):
        result = signatures.run(tmp_path, quick=True, device="cpu")
    assert {"signatures.png", "taylor.png"} <= set(result.plots)
    for plot in result.plots:
        assert (tmp_path / plot).stat().st_size > 0
    data = json.loads((tmp_path / "signatures.json").read_text())
    relu = [r for r in data["rows"] if r["activation"] == "ReLU"]
    assert relu and all(r["max_abs_error_vs_analytic"] < 1e-8 for r in relu)
    hat = [r for r in data["rows"] if r["activation"] == "Hat"]
    assert hat and all(r["max_abs_error_vs_analytic"] < 1e-8 for r in hat)
    assert [c.reproduced for c in result.claims] == [True, True]


def test_fidelity_part_covers_every_op_dtype_and_backend(tmp_path, monkeypatch):
    # Shorter signals than --quick (the Triton interpreter dominates): the same code paths.
    monkeypatch.setattr(fidelity, "QUICK", fidelity.Signals(time=2**10, width=4))
    monkeypatch.setattr(fidelity, "INTERPRETED", fidelity.Signals(time=2**7, width=2))
    with single_thread("cpu"):
        result = fidelity.run(tmp_path, quick=True, device="cpu")
    data = json.loads((tmp_path / "fidelity.json").read_text())
    assert (tmp_path / "fidelity.png").stat().st_size > 0
    assert data["uncovered_ops"] == []  # every registered forward op has a case
    rows = data["rows"]
    backends = set(fidelity.kernel_backends("cpu")) | {fidelity.FLOOR}
    measured = {(r["op"], r["output"]) for r in rows}
    for op, output in measured:
        combos = {(r["dtype"], r["backend"]) for r in rows
                  if (r["op"], r["output"]) == (op, output)}
        assert combos == {(d, b) for d in fidelity.DTYPES for b in backends}, op
    # The goals are achievable: a correctly rounded result meets them in every band.
    for r in rows:
        if r["backend"] == fidelity.FLOOR and r["dtype"] in fidelity.GOALS_DB:
            worst = max(-math.inf if v is None else v for v in r["bands_db"].values())
            assert worst <= fidelity.GOALS_DB[r["dtype"]], (r["op"], r["dtype"], worst)
    # Hat is exact in every format (min(x, 2 - x) needs no rounding): every band of every
    # backend is exact (JSON null).
    hat = [r for r in rows if r["op"] == "hat"]
    assert hat and all(v is None for r in hat for v in r["bands_db"].values())
    assert len(result.claims) == 1 and result.claims[0].reproduced is not None
    if fastact.triton.INTERPRET:  # the Triton kernels run here: they are measured too
        assert "triton" in data["backends"]


def test_single_thread_restores_the_thread_count():
    before = torch.get_num_threads()
    with single_thread("cpu"):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_enn_part_runs_the_authors_setup():
    """The network of the ENN authors' notebook (bump-diversity init, their activation on the
    hidden layer and the output) and a short run of their training loop."""
    from spectral import enn

    net = enn.AuthorsNetwork("ENN")
    angles = torch.arange(6) * math.pi / 6
    torch.testing.assert_close(net.fc1.weight, 0.5 * torch.stack([angles.cos(), angles.sin()], 1))
    assert net.fc2.weight.tolist() == [[0.5, -0.5, 0.5, -0.5, 0.5, -0.5]]
    assert net.fc2.bias.item() == 0
    assert net.act1.coeffs.shape == (6, 6) and net.act2.coeffs.shape == (1, 6)
    x = torch.rand(5, 2) * 2 - 1
    hidden = fastact.nn.DCTActivation.enn(6, channel_dim=-1)(net.fc1(x))
    torch.testing.assert_close(net(x), fastact.nn.DCTActivation.enn(1)(net.fc2(hidden)))
    with single_thread("cpu"):
        run = enn.train_authors_setup("ENN", 50, "cpu")
    assert 0 <= run["test_accuracy"] <= 1 and math.isfinite(run["mse_last_1000"])
