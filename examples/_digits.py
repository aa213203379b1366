"""The digits data set that ships with scikit-learn (8x8 images, 10 classes, 1797 samples),
split 75/25 with a fixed seed, and a small training loop shared by the examples."""

from __future__ import annotations

import argparse
import time

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def digits(images: bool = False):
    """(x_train, y_train, x_test, y_test); x scaled to [0, 1], as [N, 64] or [N, 1, 8, 8]."""
    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target)
    if images:
        x = x.view(-1, 1, 8, 8)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0,
                                                        stratify=y)
    return x_train, y_train, x_test, y_test


def arguments(description: str, plot: str | None = None):
    """--quick, --epochs N, and with `plot` (a default file name) --plot PATH."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a few epochs (for the tests)")
    parser.add_argument("--epochs", type=int, default=None)
    if plot is not None:
        parser.add_argument("--plot", default=plot, help="where to save the figure")
    return parser.parse_args()


def fit(model, data, epochs: int, lr: float = 3e-3, batch_size: int = 64, seed: int = 0):
    """Adam on cross-entropy; returns (test accuracy, seconds)."""
    x_train, y_train, x_test, y_test = data
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for index in torch.randperm(len(x_train)).split(batch_size):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x_train[index]), y_train[index]).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    return accuracy, time.perf_counter() - start
