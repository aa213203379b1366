"""fastact.convert on a trained CNN (a ResNet-style block: Conv-BN-ReLU, a residual add, F.relu
in forward): train it with ReLU on scikit-learn's 8x8 digits, convert every ReLU to a DCT
activation fitted to the range its inputs have (example_inputs), fine-tune, and plot what each
activation learned (fastact.plot_activations).

    python examples/convert_cnn_digits.py [--quick] [--plot activations.png]
"""

import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from _digits import arguments, digits, fit
from torch import nn

import fastact


class Block(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + x)  # one ReLU module, called twice


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(16), nn.ReLU())             # 16 x 8 x 8
        self.block = Block(16)
        self.down = nn.Conv2d(16, 32, 3, stride=2, padding=1)                 # 32 x 4 x 4
        self.head = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x):
        x = F.relu(self.down(self.block(self.stem(x))))
        return self.head(x.flatten(1))


def main():
    default = str(Path(tempfile.gettempdir()) / "fastact_convert_cnn_digits.png")
    args = arguments(__doc__, plot=default)
    epochs = args.epochs or (2 if args.quick else 15)
    data = digits(images=True)
    torch.manual_seed(0)
    model = CNN()
    accuracy, seconds = fit(model, data, epochs)
    print(f"ReLU CNN: test accuracy {accuracy:.3f} ({epochs} epochs, {seconds:.1f} s)")

    # Every ReLU (modules, the reused one, F.relu) becomes a DCT series fitted to the range its
    # inputs have on 512 training images, then the whole network is fine-tuned.
    result = fastact.convert(model.eval(), relu="dct", example_inputs=data[0][:512])
    print(result)
    accuracy, seconds = fit(result.model, data, epochs)
    print(f"DCT CNN (converted, fine-tuned): test accuracy {accuracy:.3f} ({epochs} more "
          f"epochs, {seconds:.1f} s)")
    print(f"learned activations: {fastact.plot_activations(result.model, args.plot)}")


if __name__ == "__main__":
    main()
