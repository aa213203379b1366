"""An MLP on scikit-learn's digits with learnable DCT-basis activations (ENN: one cosine series
per unit, initialised to the identity on (-1, 1)) vs the same MLP with ReLU.

    python examples/dct_digits.py [--quick]
"""

import torch
from _digits import arguments, digits, fit

import fastact


def mlp(activation) -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(64, 128), activation(128), torch.nn.Linear(128, 128), activation(128),
        torch.nn.Linear(128, 10),
    )


def main():
    args = arguments(__doc__)
    epochs = args.epochs or (2 if args.quick else 30)
    data = digits()
    activations = [
        ("ReLU", lambda channels: torch.nn.ReLU()),
        # One series of 6 odd cosines per unit ([batch, units]: channels on the last dim).
        ("DCT", lambda channels: fastact.nn.DCTActivation(channels, channel_dim=-1)),
    ]
    for name, activation in activations:
        accuracy, seconds = fit(mlp(activation), data, epochs)
        print(f"{name:>5} MLP: test accuracy {accuracy:.3f} ({epochs} epochs, {seconds:.1f} s)")


if __name__ == "__main__":
    main()
