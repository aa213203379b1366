"""Part 4 — the DC experiment (Kechris et al., arXiv 2407.16556, their
relu_vs_linear_vs_lineardc_train.py at CPU scale): classify cosines of about 3, 5 and 10 Hz
(f ~ N(f_c, 0.1), 256 samples at fs = 32 Hz) with a small 1-D conv net — two causal Conv1d
(32 filters, kernel 3, no bias) with the activation under test, global average pooling,
Dense(32, relu), Dense(3) — with
  linear       identity activations on the cosines,
  ReLU         ReLU activations on the cosines,
  linear + DC  identity activations on the cosines plus the class-dependent DC a_c * sqrt(2)/4,
               a_c = 1, 5, 19 (what the authors add to model the DC that ReLU creates).
Glorot-uniform weights and zero Dense biases (Keras defaults), Adam lr 1e-3, batch 64, cross
entropy. Loss per epoch, held-out accuracy, and each conv layer's Frobenius distance from its
initial weights."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .common import Claim, PartResult, Table, plt, save_figure, seed_everything, write_json

CLASS_FREQUENCIES = (3.0, 5.0, 10.0)
CLASS_DC = (1.0, 5.0, 19.0)
FS = 32.0
LENGTH = 256
VARIANTS = ("linear", "ReLU", "linear + DC")


class ConvNet(nn.Module):
    def __init__(self, relu: bool):
        super().__init__()
        self.conv1 = nn.Conv1d(1, 32, 3, bias=False)
        self.conv2 = nn.Conv1d(32, 32, 3, bias=False)
        self.dense1 = nn.Linear(32, 32)
        self.dense2 = nn.Linear(32, 3)
        self.activation = torch.relu if relu else (lambda x: x)
        for layer in (self.conv1, self.conv2, self.dense1, self.dense2):
            nn.init.xavier_uniform_(layer.weight)  # Keras glorot_uniform (same fans for Conv1d)
        nn.init.zeros_(self.dense1.bias)
        nn.init.zeros_(self.dense2.bias)

    def forward(self, x):
        x = self.activation(self.conv1(F.pad(x, (2, 0))))  # causal padding
        x = self.activation(self.conv2(F.pad(x, (2, 0))))
        return self.dense2(torch.relu(self.dense1(x.mean(-1))))


def dataset(per_class: int, generator: torch.Generator):
    """(cosines, cosines + class DC, labels), shuffled together."""
    frequencies = torch.cat([f + 0.1 * torch.randn(per_class, generator=generator,
                                                    dtype=torch.float64)
                             for f in CLASS_FREQUENCIES])
    labels = torch.arange(3).repeat_interleave(per_class)
    t = torch.arange(LENGTH, dtype=torch.float64) / FS
    x = torch.cos(2 * math.pi * frequencies[:, None] * t)
    dc = torch.tensor(CLASS_DC, dtype=torch.float64)[labels, None] * math.sqrt(2) / 4
    order = torch.randperm(labels.numel(), generator=generator)
    return (x[order, None].float(), (x + dc)[order, None].float(), labels[order])


def train(variant: str, data, test, epochs: int, seed: int, device: str) -> dict:
    torch.manual_seed(seed)
    model = ConvNet(relu=variant == "ReLU").to(device)
    inputs = data[1 if variant == "linear + DC" else 0].to(device)
    labels = data[2].to(device)
    test_inputs = test[1 if variant == "linear + DC" else 0].to(device)
    initial = [model.conv1.weight.detach().clone(), model.conv2.weight.detach().clone()]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    losses, distances = [], []
    for _ in range(epochs):
        order = torch.randperm(labels.numel(), generator=generator).to(device)
        total = 0.0
        for start in range(0, labels.numel(), 64):
            batch = order[start:start + 64]
            optimizer.zero_grad()
            loss = F.cross_entropy(model(inputs[batch]), labels[batch])
            loss.backward()
            optimizer.step()
            total += loss.item() * batch.numel()
        losses.append(total / labels.numel())
        distances.append([(model.conv1.weight - initial[0]).norm().item(),
                          (model.conv2.weight - initial[1]).norm().item()])
    with torch.no_grad():
        accuracy = (model(test_inputs).argmax(1).cpu() == test[2]).float().mean().item()
    return {"loss": losses, "distance": distances, "test_accuracy": accuracy}


def run(folder: Path, quick: bool, device: str) -> PartResult:
    per_class, epochs, seeds = (384, 10, [0]) if quick else (512, 20, [0, 1])
    result = PartResult("dc", "4. The DC experiment")
    result.notes.append(
        f"{per_class} training cosines per class ({3 * per_class} in all, 1/4 as many held "
        f"out), {epochs} epochs, seeds {seeds} (the paper: 1024 per class, 60 epochs, 100 "
        "repetitions).")
    runs = {v: [] for v in VARIANTS}
    for seed in seeds:
        generator = seed_everything(seed)
        data = dataset(per_class, generator)
        test = dataset(per_class // 4, generator)
        for variant in VARIANTS:
            runs[variant].append(train(variant, data, test, epochs, seed, device))

    def mean(values):
        return sum(values) / len(values)

    table = Table("Mean over seeds: training loss by epoch, held-out accuracy, and conv weights' "
                  "distance from their initial values at the end",
                  ["activation", "loss ep 1", f"loss ep {epochs // 2}", f"loss ep {epochs}",
                   "test acc", "‖W1 - W1_0‖ (conv 1)", "‖W2 - W2_0‖ (conv 2)"])
    summary = {}
    for variant, seed_runs in runs.items():
        loss = [mean([r["loss"][e] for r in seed_runs]) for e in range(epochs)]
        d1 = mean([r["distance"][-1][0] for r in seed_runs])
        d2 = mean([r["distance"][-1][1] for r in seed_runs])
        accuracy = mean([r["test_accuracy"] for r in seed_runs])
        summary[variant] = {"loss": loss, "distance_conv1": d1, "distance_conv2": d2,
                            "test_accuracy": accuracy}
        table.add(variant, loss[0], loss[epochs // 2 - 1], loss[-1], accuracy, d1, d2)
    result.tables.append(table)
    write_json(folder / "dc.json", {"per_class": per_class, "epochs": epochs, "seeds": seeds,
                                    "summary": summary, "runs": runs})
    plot(folder, runs, epochs, result)

    linear, relu, with_dc = (summary[v] for v in VARIANTS)
    converges = relu["loss"][-1] < linear["loss"][-1] and with_dc["loss"][-1] < linear["loss"][-1]
    closer = all(s[f"distance_conv{i}"] < linear[f"distance_conv{i}"]
                 for s in (relu, with_dc) for i in (1, 2))
    result.claims.append(Claim(
        "Kechris et al. §1", "The DC that ReLU adds helps training converge (lower loss than "
        "the linear network, like linear + DC).", converges,
        f"Final loss: linear {linear['loss'][-1]:.3f}, ReLU {relu['loss'][-1]:.3f}, linear + DC "
        f"{with_dc['loss'][-1]:.3f}."))
    result.claims.append(Claim(
        "Kechris et al. §1", "... to weights close to the random initial ones.", closer,
        f"Distance from init (conv1, conv2): linear {linear['distance_conv1']:.2f}, "
        f"{linear['distance_conv2']:.2f}; ReLU {relu['distance_conv1']:.2f}, "
        f"{relu['distance_conv2']:.2f}; linear + DC {with_dc['distance_conv1']:.2f}, "
        f"{with_dc['distance_conv2']:.2f}."))
    return result


def plot(folder: Path, runs: dict, epochs: int, result: PartResult) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    epoch_axis = range(1, epochs + 1)
    for i, (variant, seed_runs) in enumerate(runs.items()):
        colour = f"C{i}"
        for j, r in enumerate(seed_runs):
            label = variant if j == 0 else None
            axes[0].semilogy(epoch_axis, r["loss"], color=colour, lw=1, label=label)
            axes[1].plot(epoch_axis, [d[0] for d in r["distance"]], color=colour, lw=1, label=label)
            axes[2].plot(epoch_axis, [d[1] for d in r["distance"]], color=colour, lw=1, label=label)
    titles = ["training loss", "||W1 - W1_0|| (conv 1)", "||W2 - W2_0|| (conv 2)"]
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
    axes[0].legend(fontsize=7)
    save_figure(fig, folder, "dc.png", result)
