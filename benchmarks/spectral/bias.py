"""Part 3 — spectral bias (Hong et al., arXiv 2208.04924; Rahaman-style): one shallow network,
1 -> 256 -> 1, with ReLU, Hat, DCT and GmP units, fits f(x) = sum_k sin(2 pi k x),
k in {1, 2, 4, 8, 16}, on 256 equispaced points of [0, 1) with Adam (lr 1e-3, full batch,
MSE). Every 20 steps: |DFT_k(f - f_net)| / |DFT_k(f)| per component k (exact on this grid,
f being 1-periodic)."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

import fastact

from .common import (Claim, OneDimensionalGmP, PartResult, Table, plt, save_figure,
                     seed_everything, write_json)

FREQUENCIES = [1, 2, 4, 8, 16]
POINTS = 256
HIDDEN = 256
LR = 1e-3
EVERY = 20
THRESHOLD = 0.1


def tile_hats(layer: nn.Linear) -> None:
    """First layer for a finite-element basis: hat(w x + b) peaks where w x + b = 1, so
    w = H - 1 and b_i = 1 - i put hat i at c_i = i / (H - 1) with half-width 1 / (H - 1):
    the hats tile [0, 1] as the nodal P1 basis (a partition of unity)."""
    count = layer.out_features
    with torch.no_grad():
        layer.weight.fill_(count - 1)
        layer.bias.copy_(1 - torch.arange(count, dtype=layer.bias.dtype))


def tile_relus(layer: nn.Linear) -> None:
    """The same first-layer scale for ReLU: knots at c_i = i / (H - 1), slope H - 1."""
    count = layer.out_features
    with torch.no_grad():
        layer.weight.fill_(count - 1)
        layer.bias.copy_(-torch.arange(count, dtype=layer.bias.dtype))


def variants() -> dict[str, callable]:
    """name -> builder of the 1 -> HIDDEN -> 1 network (PyTorch default init unless said)."""
    def plain(activation, tile=None):
        def build():
            first = nn.Linear(1, HIDDEN)
            if tile:
                tile(first)
            return nn.Sequential(first, activation(), nn.Linear(HIDDEN, 1))
        return build

    built = {
        "ReLU": plain(nn.ReLU),
        "ReLU, knots tiled": plain(nn.ReLU, tile_relus),
        "Hat, default init": plain(fastact.nn.Hat),
        "Hat, hats tile [0,1]": plain(fastact.nn.Hat, tile_hats),
    }
    if hasattr(fastact.nn, "DCTActivation"):
        built["DCT (ENN), identity init"] = plain(lambda: fastact.nn.DCTActivation(HIDDEN))
    if hasattr(fastact.nn, "GeometricReLU"):
        # The ReLU network's default init, converted exactly (see OneDimensionalGmP).
        def gmp():
            relu = built["ReLU"]()
            return nn.Sequential(OneDimensionalGmP(relu[0]), relu[2])

        built["GmP (from the ReLU init)"] = gmp
    return built


def train(build, seed: int, steps: int, device: str) -> dict:
    seed_everything(seed)
    model = build().to(device)
    x = (torch.arange(POINTS, dtype=torch.float64) / POINTS).unsqueeze(1)
    target = sum(torch.sin(2 * math.pi * k * x) for k in FREQUENCIES).squeeze(1)
    reference = torch.fft.rfft(target)[FREQUENCIES].abs()
    x, target_device = x.float().to(device), target.float().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    curve, losses = [], []
    for step in range(1, steps + 1):
        optimizer.zero_grad()
        loss = (model(x).squeeze(1) - target_device).square().mean()
        loss.backward()
        optimizer.step()
        if step % EVERY == 0:
            with torch.no_grad():
                residual = target - model(x).squeeze(1).double().cpu()
            relative = torch.fft.rfft(residual)[FREQUENCIES].abs() / reference
            curve.append(relative.tolist())
            losses.append(loss.item())
    curve = torch.tensor(curve)  # [evaluations, frequencies]
    below = curve < THRESHOLD
    first = [int((torch.nonzero(below[:, j])[0, 0].item() + 1) * EVERY) if below[:, j].any()
             else None for j in range(len(FREQUENCIES))]
    return {"seed": seed, "steps_to_threshold": first, "final": curve[-1].tolist(),
            "curve": curve.tolist(), "loss": losses}


def worst(values: list[int | None]) -> int | None:
    return None if any(v is None for v in values) else max(values)


def run(folder: Path, quick: bool, device: str) -> PartResult:
    steps = 3000 if quick else 6000
    seeds = [0] if quick else [0, 1]
    result = PartResult("bias", "3. Spectral bias")
    result.notes.append(
        f"1 -> {HIDDEN} -> 1 networks fit f(x) = sum_k sin(2 pi k x), k in {FREQUENCIES}, on "
        f"{POINTS} equispaced points of [0, 1); Adam lr {LR:g}, full batch, MSE, {steps} steps, "
        f"seeds {seeds}; relative error |DFT_k(f - f_net)| / |DFT_k(f)| every {EVERY} steps. "
        "Default init = PyTorch's nn.Linear init; 'hats tile [0,1]' = first layer w = 255, "
        "b_i = 1 - i (Hong et al.'s finite-element set-up); 'knots tiled' gives ReLU the same "
        "first layer (a control). Hat/DCT/GmP units are fastact's modules; GmP is the ReLU "
        "network's init converted exactly, units r relu(+-x + lambda) with the sign fixed "
        "(Chen & Ge's 1-D unit; GeometricReLU(2, H) on [x, 0], theta frozen).")
    runs = {name: [train(build, seed, steps, device) for seed in seeds]
            for name, build in variants().items()}
    missing = [m for m, present in [("DCT", hasattr(fastact.nn, "DCTActivation")),
                                    ("GmP", hasattr(fastact.nn, "GeometricReLU"))] if not present]
    if missing:
        result.notes.append(f"Not in this build, not run: {', '.join(missing)}.")

    table = Table(f"Steps until each component's relative error < {THRESHOLD:.0%} (worst of "
                  f"{len(seeds)} seed{'s' * (len(seeds) > 1)}; '—' = not within {steps} steps), "
                  "and the final relative error",
                  ["network"] + [f"k={k}" for k in FREQUENCIES] + ["all below", "final k=1",
                                                                   f"final k={FREQUENCIES[-1]}"])
    summary = {}
    for name, seed_runs in runs.items():
        per_k = [worst([r["steps_to_threshold"][j] for r in seed_runs])
                 for j in range(len(FREQUENCIES))]
        final = [max(r["final"][j] for r in seed_runs) for j in range(len(FREQUENCIES))]
        all_below = worst(per_k)
        summary[name] = {"steps_to_threshold": per_k, "all_below": all_below, "final": final}
        table.add(name, *per_k, all_below, final[0], final[-1])
    result.tables.append(table)
    write_json(folder / "bias.json", {"frequencies": FREQUENCIES, "steps": steps, "lr": LR,
                                      "hidden": HIDDEN, "points": POINTS, "every": EVERY,
                                      "threshold": THRESHOLD, "seeds": seeds,
                                      "summary": summary, "runs": runs})
    plot(folder, runs, result)

    relu, hat_default, hat_tiled = (summary[n] for n in
                                    ("ReLU", "Hat, default init", "Hat, hats tile [0,1]"))

    def describe(s):
        return ", ".join(f"k={k}: {v if v is not None else '>' + str(steps)}"
                         for k, v in zip(FREQUENCIES, s["steps_to_threshold"]))

    relu_biased = (relu["steps_to_threshold"][-1] is None
                   or relu["steps_to_threshold"][-1] > 4 * relu["steps_to_threshold"][0])
    result.claims.append(Claim(
        "Hong et al. §2", "ReLU networks learn low frequencies first (spectral bias).",
        relu_biased, f"ReLU, steps to <10%: {describe(relu)}."))
    tiled = hat_tiled["steps_to_threshold"]
    tiled_flat = hat_tiled["all_below"] is not None and max(tiled) <= 2 * min(tiled)
    default_flat = (hat_default["all_below"] is not None
                    and max(hat_default["steps_to_threshold"])
                    <= 2 * min(hat_default["steps_to_threshold"]))
    verdict = True if (tiled_flat and default_flat) else (None if tiled_flat else False)
    result.claims.append(Claim(
        "Hong et al. §2", "Hat networks learn all frequencies at about the same rate (no "
        "spectral bias).", verdict,
        f"With the hats tiling [0, 1]: {'YES, Hat removes the bias here' if tiled_flat else 'no'}"
        f" ({describe(hat_tiled)}). With PyTorch's default init: "
        f"{'also removed' if default_flat else 'NO, the bias stays, as for ReLU'} "
        f"({describe(hat_default)})."))
    def faster(hat):
        return hat["all_below"] is not None and (relu["all_below"] is None
                                                 or hat["all_below"] < relu["all_below"])

    tiled_faster, default_faster = faster(hat_tiled), faster(hat_default)
    result.claims.append(Claim(
        "Hong et al. §2", "Hat networks train significantly faster than ReLU networks (Adam).",
        True if tiled_faster and default_faster else (None if tiled_faster else False),
        f"All components below 10%: Hat (tiled) at step {hat_tiled['all_below']}, Hat (default) "
        f"at {hat_default['all_below']}, ReLU at {relu['all_below']} ('None' = not within "
        f"{steps}); final error at k=16: Hat (tiled) {hat_tiled['final'][-1]:.3f}, ReLU "
        f"{relu['final'][-1]:.3f}."))
    return result


def plot(folder: Path, runs: dict, result: PartResult) -> None:
    names = list(runs)
    columns = 3
    rows = math.ceil(len(names) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.0 * rows), squeeze=False,
                             sharey=True)
    for ax, name in zip(axes.flat, names):
        curve = torch.tensor(runs[name][0]["curve"])
        steps = torch.arange(1, curve.shape[0] + 1) * EVERY
        for j, k in enumerate(FREQUENCIES):
            ax.semilogy(steps.numpy(), curve[:, j].numpy(), label=f"k={k}", lw=1)
        ax.axhline(THRESHOLD, color="k", lw=0.5, ls="--")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylim(1e-3, 2)
    for ax in axes[:, 0]:
        ax.set_ylabel("|DFT_k(f - f_net)| / |DFT_k(f)|")
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    save_figure(fig, folder, "bias.png", result)
