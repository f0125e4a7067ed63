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
import json
import struct

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


def load_fedfwd_model(module: nn.Module, path: str) -> None:
    """Copies the parameters of a fedfwd model file (final_model.bin,
    best_model.bin: magic FFWDMDL1, a JSON header, float32 parameters in
    registration order) into `module`, whose parameters must have the same
    count in the same order (the built-in `cnn`'s, for this network)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"FFWDMDL1":
        raise SystemExit(f"{path} is not a fedfwd model file")
    (length,) = struct.unpack("<I", data[8:12])
    header = json.loads(data[12:12 + length])
    values = torch.frombuffer(bytearray(data[12 + length:]), dtype=torch.float32)
    params = list(module.parameters())
    want = sum(p.numel() for p in params)
    if header["num_params"] != want or values.numel() != want:
        raise SystemExit(f"{path} holds {values.numel()} parameters of model "
                         f"{header['model']}; this network has {want}")
    offset = 0
    with torch.no_grad():
        for p in params:
            p.copy_(values[offset:offset + p.numel()].view_as(p))
            offset += p.numel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the .pt file to write")
    parser.add_argument("--seed", type=int, default=1,
                        help="torch.manual_seed for the initial weights")
    parser.add_argument("--channels", type=int, default=1,
                        help="input channels (1: MNIST, Fashion-MNIST; 3: CIFAR-10)")
    parser.add_argument("--size", type=int, default=28,
                        help="input height and width (28 or 32)")
    parser.add_argument("--init-from", metavar="MODEL_FILE",
                        help="start from the parameters of a fedfwd model "
                        "file instead (e.g. a built-in cnn run's "
                        "final_model.bin), for side-by-side comparisons")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    net = Cnn(args.channels, args.size)
    if args.init_from:
        load_fedfwd_model(net, args.init_from)
    module = torch.jit.script(net)
    module.save(args.out)
    n = sum(p.numel() for p in module.parameters())
    print(f"wrote {args.out}: {n} parameters")


if __name__ == "__main__":
    main()
