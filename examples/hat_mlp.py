"""An MLP on scikit-learn's digits with Hat activations vs the same MLP with ReLU.

    python examples/hat_mlp.py [--quick]
"""

import torch
from _digits import arguments, digits, fit

import fastact


def mlp(activation: type[torch.nn.Module]) -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(64, 128), activation(), torch.nn.Linear(128, 128), activation(),
        torch.nn.Linear(128, 10),
    )


def main():
    args = arguments(__doc__)
    epochs = args.epochs or (2 if args.quick else 30)
    data = digits()
    for name, activation in [("ReLU", torch.nn.ReLU), ("Hat", fastact.nn.Hat)]:
        accuracy, seconds = fit(mlp(activation), data, epochs)
        print(f"{name:>5} MLP: test accuracy {accuracy:.3f} ({epochs} epochs, {seconds:.1f} s)")


if __name__ == "__main__":
    main()
