#!/usr/bin/python3
"""Writes a small learnable tabular data set as users keep theirs.

    make_own_data.py OUT_DIR

OUT_DIR/npz/{train,test}.npz: x float32 (n, 16), y int64 (n,), site (n,)
unicode ids; OUT_DIR/csv/{train,test}.csv: columns f0..f15, label (class
names: ant, bee, cat, dog), site. Four classes, Gaussian blobs in 16
dimensions with unit noise; four sites (natural ids) of different sizes and
label mixes. Regression (task: regression): OUT_DIR/reg_csv/{train,test}.csv
with features f0..f7 and a float target (a linear function, a tanh and
noise of 0.1), OUT_DIR/reg_npz/{train,test}.npz with x (n, 8) and two float
targets y (n, 2). Deterministic.
"""
import csv
import os
import sys

import numpy as np

NAMES = ["ant", "bee", "cat", "dog"]


def make(rng, n):
    centers = np.random.default_rng(0).normal(0, 1.5, size=(4, 16))
    y = rng.integers(0, 4, size=n)
    x = (centers[y] + rng.normal(0, 1, size=(n, 16))).astype(np.float32)
    # Site k holds mostly classes k and k+1, and more examples for small k.
    site = np.where(rng.random(n) < 0.7, y, rng.integers(0, 4, size=n))
    site = np.array([f"site-{s}" for s in site])
    return x, y.astype(np.int64), site


def main():
    out = sys.argv[1]
    rng = np.random.default_rng(1)
    splits = {"train": make(rng, 2000), "test": make(rng, 500)}
    os.makedirs(os.path.join(out, "npz"), exist_ok=True)
    os.makedirs(os.path.join(out, "csv"), exist_ok=True)
    for split, (x, y, site) in splits.items():
        np.savez_compressed(os.path.join(out, "npz", f"{split}.npz"),
                            x=x, y=y, site=site)
        with open(os.path.join(out, "csv", f"{split}.csv"), "w",
                  newline="") as f:
            w = csv.writer(f)
            w.writerow([f"f{i}" for i in range(16)] + ["label", "site"])
            for row, label, s in zip(x, y, site):
                w.writerow([f"{v:.6g}" for v in row] + [NAMES[label], s])
    w_true = np.random.default_rng(2).normal(0, 1, size=(8, 2))
    os.makedirs(os.path.join(out, "reg_csv"), exist_ok=True)
    os.makedirs(os.path.join(out, "reg_npz"), exist_ok=True)
    for split, n in (("train", 1500), ("test", 400)):
        x = rng.normal(0, 1, size=(n, 8)).astype(np.float32)
        y = x @ w_true + 0.5 * np.tanh(x[:, :2]) + rng.normal(0, 0.1, (n, 2))
        y = y.astype(np.float32)
        np.savez_compressed(os.path.join(out, "reg_npz", f"{split}.npz"),
                            x=x, y=y)
        with open(os.path.join(out, "reg_csv", f"{split}.csv"), "w",
                  newline="") as f:
            w = csv.writer(f)
            w.writerow([f"f{i}" for i in range(8)] + ["target"])
            for row, t in zip(x, y[:, 0]):
                w.writerow([f"{v:.6g}" for v in row] + [f"{t:.6g}"])
    print(f"wrote {out}/npz, {out}/csv, {out}/reg_csv and {out}/reg_npz")


if __name__ == "__main__":
    main()
