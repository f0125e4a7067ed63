#!/usr/bin/python3
"""Writes the TorchScript modules the tests load (Debian's python3-torch).

    export_test_models.py OUT_DIR

small_cnn.pt    conv 3x3 (4 ch) + ReLU + max-pool, linear 10, on 1x28x28;
                batch norm without running statistics; traced
small_cnn_scripted.pt  the same network through torch.jit.script
cnn.pt          configs/torchscript/export_cnn.py's copy of the built-in cnn
cdist.pt        uses torch.cdist, which has no forward-mode derivative
running_bn.pt   BatchNorm2d with running statistics (a buffer that changes)
five_logits.pt  returns 5 logits (MNIST has 10 classes)
tuple_out.pt    returns a tuple
tiny.pt         the built-in `tiny`: 4x4 average pool, linear 49 -> 10
"""
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..",
                                "configs", "torchscript"))
import export_cnn  # noqa: E402


class SmallCnn(nn.Module):
    def __init__(self, classes: int = 10, running_stats: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4, track_running_stats=running_stats)
        self.fc = nn.Linear(4 * 14 * 14, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        return self.fc(torch.flatten(x, 1))


class Cdist(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(28 * 28, 10)
        self.centers = nn.Parameter(torch.randn(10, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.flatten(x, 1))
        return torch.cdist(h, self.centers)


class TupleOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(28 * 28, 10)

    def forward(self, x: torch.Tensor):
        h = self.fc(torch.flatten(x, 1))
        return h, h


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(49, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc1(torch.flatten(nn.functional.avg_pool2d(x, 4), 1))


def main() -> None:
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(7)
    example = torch.randn(2, 1, 28, 28)
    torch.jit.trace(SmallCnn().eval(), example).save(
        os.path.join(out, "small_cnn.pt"))
    torch.jit.script(SmallCnn()).save(os.path.join(out, "small_cnn_scripted.pt"))
    torch.jit.script(export_cnn.Cnn()).save(os.path.join(out, "cnn.pt"))
    torch.jit.script(Cdist()).save(os.path.join(out, "cdist.pt"))
    torch.jit.script(SmallCnn(running_stats=True)).save(
        os.path.join(out, "running_bn.pt"))
    torch.jit.script(SmallCnn(classes=5)).save(
        os.path.join(out, "five_logits.pt"))
    torch.jit.script(TupleOut()).save(os.path.join(out, "tuple_out.pt"))
    torch.jit.script(Tiny()).save(os.path.join(out, "tiny.pt"))
    print(f"wrote the test modules to {out}")


if __name__ == "__main__":
    main()
