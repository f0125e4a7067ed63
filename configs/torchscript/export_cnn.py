#!/usr/bin/python3
"""Exports a PyTorch CNN as TorchScript for fedfwd.

The network is the built-in `cnn` written in PyTorch: four 3x3 convolutions
of 64 channels (padding 1) with ReLU, a 2x2 max-pool after the second and the
fourth, one linear layer of 10 logits. Same parameter names and shapes, so a
run with it compares directly with `model: cnn`.

    /usr/bin/python3 configs/torchscript/export_cnn.py --out configs/torchscript/cnn.pt
    build/bin/fedfwd-run configs/mnist_torchscript_cnn.yaml

Write your own module the same way. What fedfwd needs of it
(docs/own-model.md): forward(x) takes a float batch [B, C, H, W] of the data
set's shape and returns logits [B, classes]; every parameter is float32;
no buffer changes in a training forward pass (export BatchNorm with
track_running_stats=False); the module runs in eval mode, so dropout is off.
The parameter values in the file are the run's initial model.
"""
import argparse

import torch
from torch import nn


class Cnn(nn.Module):
    def __init__(self, in_channels: int = 1, size: int = 28, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, padding=1)
        self.conv2 = nn.Conv2d(64, 64, 3, padding=1)
        self.conv3 = nn.Conv2d(64, 64, 3, padding=1)
        self.conv4 = nn.Conv2d(64, 64, 3, padding=1)
        self.fc = nn.Linear(64 * (size // 4) * (size // 4), classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.relu(self.conv3(x))
        x = torch.max_pool2d(torch.relu(self.conv4(x)), 2)
        return self.fc(torch.flatten(x, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the .pt file to write")
    parser.add_argument("--seed", type=int, default=1,
                        help="torch.manual_seed for the initial weights")
    parser.add_argument("--channels", type=int, default=1,
                        help="input channels (1: MNIST, Fashion-MNIST; 3: CIFAR-10)")
    parser.add_argument("--size", type=int, default=28,
                        help="input height and width (28 or 32)")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    module = torch.jit.script(Cnn(args.channels, args.size))
    module.save(args.out)
    n = sum(p.numel() for p in module.parameters())
    print(f"wrote {args.out}: {n} parameters")


if __name__ == "__main__":
    main()
