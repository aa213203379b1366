"""A small CNN on scikit-learn's 8x8 digits images whose Conv2d + ReLU layers are geometric
(GmP) ReLU layers with input mean normalisation, vs the same CNN with plain Conv2d + ReLU.

    python examples/gmp_cnn_digits.py [--quick]
"""

import torch
from _digits import arguments, digits, fit

import fastact


def plain_cnn() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(),              # 16 x 8 x 8
        torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), torch.nn.ReLU(),   # 32 x 4 x 4
        torch.nn.Flatten(), torch.nn.Linear(32 * 4 * 4, 10),
    )


def gmp_cnn() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        fastact.nn.GeometricReLUConv2d(1, 16, 3, padding=1, input_mean_norm=True),
        fastact.nn.GeometricReLUConv2d(16, 32, 3, stride=2, padding=1, input_mean_norm=True),
        torch.nn.Flatten(), torch.nn.Linear(32 * 4 * 4, 10),
    )


def main():
    args = arguments(__doc__)
    epochs = args.epochs or (2 if args.quick else 20)
    data = digits(images=True)
    for name, model in [("Conv2d+ReLU", plain_cnn), ("GmP", gmp_cnn)]:
        accuracy, seconds = fit(model(), data, epochs)
        print(f"{name:>11} CNN: test accuracy {accuracy:.3f} ({epochs} epochs, {seconds:.1f} s)")


if __name__ == "__main__":
    main()
