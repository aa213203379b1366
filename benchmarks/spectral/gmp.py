"""Part 5 — GmP vs standard parameterisation (Chen & Ge, arXiv 2305.15912, their 1d_levy
notebook at CPU scale): 1 -> 100 -> 1 ReLU networks regress the normalised 1-D Levy function
from 50 noisy points on [-10, 10] (noise N(0, 0.1)); test on the 201-point grid -10:0.1:10.
Standard: nn.Linear + ReLU. GmP: fastact.nn.GeometricReLU converted exactly from the same
nn.Linear (GeometricReLU.from_linear), so both start from the same function; in 1-D a unit is
r relu(+-x + lambda) with the sign fixed, as in the authors' code (see OneDimensionalGmP).
Glorot-uniform weights and zero biases (the notebook's Keras defaults), float64 (as the
notebook), MAE loss,
Adam, full batch, constant learning rate 1e-2 or 1e-1 (no schedule: stability is the
question), 5 seeds."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

import fastact

from .common import (Claim, OneDimensionalGmP, PartResult, Table, plt, save_figure,
                     seed_everything, write_json)

UNITS = 100
POINTS = 50
LEARNING_RATES = (1e-2, 1e-1)
SEEDS = (0, 1, 2, 3, 4)
SPIKE = 2.0  # a loss above SPIKE x its best so far counts as a spike


def levy(x: torch.Tensor) -> torch.Tensor:
    """The notebook's levy_normalized in 1-D: w = 1 + (x - 1)/4,
    sin^2(pi w) + (w - 1)^2 (1 + sin^2(2 pi w))."""
    w = 1 + (x - 1) / 4
    return torch.sin(math.pi * w) ** 2 + (w - 1) ** 2 * (1 + torch.sin(2 * math.pi * w) ** 2)


def data():
    """The training points and the test grid: one data set for every seed (the seeds vary the
    initialisation only)."""
    generator = torch.Generator().manual_seed(1000)
    x = 20 * torch.rand(POINTS, 1, generator=generator, dtype=torch.float64) - 10
    y = levy(x) + 0.1 * torch.randn(POINTS, 1, generator=generator, dtype=torch.float64)
    grid = torch.arange(-100, 101, dtype=torch.float64).unsqueeze(1) / 10
    return x, y, grid, levy(grid)


def models(seed: int, device: str) -> dict[str, nn.Module]:
    seed_everything(seed)
    first, second = nn.Linear(1, UNITS).double(), nn.Linear(UNITS, 1).double()
    for layer in (first, second):
        nn.init.xavier_uniform_(layer.weight)
        nn.init.zeros_(layer.bias)
    standard = nn.Sequential(first, nn.ReLU(), second)
    built = {"standard": standard}
    if hasattr(fastact.nn, "GeometricReLU"):
        gmp_first = OneDimensionalGmP(first)
        gmp_second = nn.Linear(UNITS, 1).double()
        gmp_second.load_state_dict(second.state_dict())
        built["GmP"] = nn.Sequential(gmp_first, gmp_second)
    return {name: m.to(device) for name, m in built.items()}


def train(model: nn.Module, lr: float, steps: int, device: str) -> dict:
    """Adam with the notebook's callbacks: the learning rate x0.1 after 500 steps without a
    training-loss improvement of 1e-4 (ReduceLROnPlateau), and the weights of the best
    training loss restored at the end (EarlyStopping(restore_best_weights=True); its patience
    of 1000 steps only shortens runs)."""
    x, y, grid, truth = (t.to(device) for t in data())
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.1, patience=500,
                                                         threshold=1e-4, threshold_mode="abs")
    losses, best, best_state = [], math.inf, None
    for _ in range(steps):
        optimizer.zero_grad()
        loss = (model(x) - y).abs().mean()
        value = loss.item()
        if value < best:  # the weights this loss belongs to, before the step moves them
            best, best_state = value, {k: v.clone() for k, v in model.state_dict().items()}
        loss.backward()
        optimizer.step()
        losses.append(value)
        plateau.step(value)
    spikes, worst_jump, best_so_far = 0, 1.0, math.inf
    for t, value in enumerate(losses):
        if t >= steps // 10:
            worst_jump = max(worst_jump, value / best_so_far)
            spikes += value > SPIKE * best_so_far
        best_so_far = min(best_so_far, value)
    with torch.no_grad():
        final = (model(grid) - truth).square().mean().item()
        model.load_state_dict(best_state)
        prediction = model(grid)
        test_mse = (prediction - truth).square().mean().item()
    return {"loss": losses, "test_mse": test_mse, "test_mse_last_step": final,
            "best_train_mae": best, "spikes": int(spikes), "worst_jump": worst_jump,
            "prediction": prediction.squeeze(1).cpu().tolist()}


def run(folder: Path, quick: bool, device: str) -> PartResult:
    steps = 1000 if quick else 3000
    result = PartResult("gmp", "5. GmP vs standard parameterisation (1-D Levy regression)")
    result.notes.append(
        f"{UNITS} hidden units, {POINTS} training points, MAE loss, Adam full batch, {steps} "
        f"steps from lr 1e-2 or 1e-1 with the notebook's plateau decay and best-weights "
        f"restore, seeds {list(SEEDS)} (initialisation; one data set), float64. Test MSE of the "
        f"restored weights on the 201-point grid. 'spikes': steps after the first 10% whose "
        f"training loss exceeds {SPIKE:g}x the best so far (summed over seeds); 'worst jump': "
        "the largest such ratio (1 = the loss never rose above its best).")
    runs = {}
    for lr in LEARNING_RATES:
        for seed in SEEDS:
            for name, model in models(seed, device).items():
                runs.setdefault(f"{name} lr={lr:g}", []).append(train(model, lr, steps, device))
    if not hasattr(fastact.nn, "GeometricReLU"):
        result.notes.append("GmP: not in this build (fastact.nn.GeometricReLU missing); only "
                            "the standard parameterisation ran.")

    table = Table(f"Test MSE over {len(SEEDS)} seeds, training MAE, and stability",
                  ["model", "test MSE mean ± std", "median", "worst", "at last step (mean)",
                   "best train MAE", "spikes", "worst jump"])
    summary = {}
    for name, seed_runs in runs.items():
        mse = sorted(r["test_mse"] for r in seed_runs)
        mean = sum(mse) / len(mse)
        summary[name] = {
            "test_mse": mse, "mean": mean, "median": mse[len(mse) // 2], "worst": mse[-1],
            "std": math.sqrt(sum((v - mean) ** 2 for v in mse) / len(mse)),
            "last_step": sum(r["test_mse_last_step"] for r in seed_runs) / len(seed_runs),
            "train_mae": sum(r["best_train_mae"] for r in seed_runs) / len(seed_runs),
            "spikes": sum(r["spikes"] for r in seed_runs),
            "worst_jump": max(r["worst_jump"] for r in seed_runs)}
        s = summary[name]
        table.add(name, f"{s['mean']:.4f} ± {s['std']:.4f}", s["median"], s["worst"],
                  s["last_step"], s["train_mae"], s["spikes"], s["worst_jump"])
    result.tables.append(table)
    write_json(folder / "gmp.json", {"units": UNITS, "points": POINTS, "steps": steps,
                                     "learning_rates": LEARNING_RATES, "seeds": SEEDS,
                                     "summary": summary, "runs": runs})
    plot(folder, runs, result)

    if "GmP lr=0.1" not in summary:
        result.claims.append(Claim("Chen & Ge §4", "GmP trains stably at larger learning rates.",
                                   None, "GmP not in this build."))
        return result
    sp_low, sp, gmp_low, gmp = (summary[f"{name} lr={lr:g}"] for name in ("standard", "GmP")
                                for lr in LEARNING_RATES)
    result.claims.append(Claim(
        "Chen & Ge §4", "GmP tolerates a 10x larger learning rate: at 1e-1 it fits better than "
        "the standard parameterisation at 1e-2 or 1e-1.",
        gmp["mean"] < min(sp_low["mean"], sp["mean"]),
        f"Test MSE mean: GmP {gmp['mean']:.4f} at 1e-1, {gmp_low['mean']:.4f} at 1e-2; "
        f"standard {sp['mean']:.4f} at 1e-1, {sp_low['mean']:.4f} at 1e-2."))
    result.claims.append(Claim(
        "Chen & Ge §4", "... and more stably: a smaller spread and a better worst case across "
        "seeds at 1e-1.", gmp["std"] <= sp["std"] and gmp["worst"] <= sp["worst"],
        f"At 1e-1, std / worst test MSE: GmP {gmp['std']:.4f} / {gmp['worst']:.4f}, standard "
        f"{sp['std']:.4f} / {sp['worst']:.4f}. Training-loss spikes at 1e-1: GmP "
        f"{gmp['spikes']}, standard {sp['spikes']} (worst jump {gmp['worst_jump']:.2f} vs "
        f"{sp['worst_jump']:.2f})."))
    return result


def plot(folder: Path, runs: dict, result: PartResult) -> None:
    names = list(runs)
    fig, axes = plt.subplots(2, len(names), figsize=(3.6 * len(names), 6), squeeze=False)
    _, _, grid, truth = data()
    for j, name in enumerate(names):
        for i, r in enumerate(runs[name]):
            axes[0][j].semilogy(r["loss"], lw=0.7, color=f"C{i}")
        axes[0][j].set_title(name, fontsize=9)
        axes[0][j].set_xlabel("step")
        axes[1][j].plot(grid.squeeze(1).numpy(), truth.squeeze(1).numpy(), "k", lw=1, label="Levy")
        axes[1][j].plot(grid.squeeze(1).numpy(), runs[name][0]["prediction"], "C1", lw=1,
                        label="seed 0")
        axes[1][j].set_ylim(-0.5, 16)
    axes[0][0].set_ylabel("training MAE (5 seeds)")
    axes[1][0].set_ylabel("fit on the test grid")
    axes[1][0].legend(fontsize=7)
    save_figure(fig, folder, "gmp.png", result)
