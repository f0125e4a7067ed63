#!/usr/bin/env python3
"""Writes the diabetes regression data (Efron et al. 2004, 442 patients, 10
baseline variables, a measure of disease progression one year later) as
fedfwd CSV files: OUT/train.csv and OUT/test.csv with a header.

The data comes from Debian's python3-sklearn package, whose files have no
header (diabetes_data_raw.csv.gz: ten space-separated columns,
diabetes_target.csv.gz: one). When the package is not installed, its .deb is
fetched with `apt-get download` (no dependencies, nothing installed) and the
two files are read out of it with `dpkg-deb -x`.

The split is fixed (a seeded shuffle, 353 training and 89 test rows). The
features are standardized with the training rows' mean and standard
deviation (fedfwd uses file features as they are); so is the target, whose
mean and standard deviation are printed and written to OUT/target_scale.txt:
an RMSE in target units times that deviation is one in the original units.

usage: scripts/diabetes_csv.py [OUT]   (default data/diabetes)
"""
import gzip
import os
import random
import shutil
import subprocess
import sys
import tempfile

DATA = "usr/lib/python3/dist-packages/sklearn/datasets/data"
COLUMNS = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]


def read_rows(path):
    with gzip.open(path, "rt") as f:
        return [[float(v) for v in line.split()] for line in f if line.strip()]


def source_files(tmp):
    installed = os.path.join("/", DATA)
    if os.path.exists(os.path.join(installed, "diabetes_target.csv.gz")):
        return installed
    print("python3-sklearn is not installed: fetching its .deb "
          "(apt-get download python3-sklearn)")
    if subprocess.run(["apt-get", "download", "python3-sklearn"],
                      cwd=tmp).returncode != 0:
        # A machine whose package lists were never fetched knows no
        # python3-sklearn yet: fetch them (root only) and try once more.
        if os.geteuid() != 0:
            sys.exit("diabetes_csv.py: apt-get download python3-sklearn "
                     "failed; run `apt-get update` as root, or install "
                     "python3-sklearn")
        subprocess.run(["apt-get", "update"], check=True)
        subprocess.run(["apt-get", "download", "python3-sklearn"], cwd=tmp,
                       check=True)
    debs = [f for f in os.listdir(tmp) if f.endswith(".deb")]
    if not debs:
        sys.exit("diabetes_csv.py: apt-get download gave no .deb")
    subprocess.run(["dpkg-deb", "-x", os.path.join(tmp, debs[0]),
                    os.path.join(tmp, "x")], check=True)
    return os.path.join(tmp, "x", DATA)


def standardize(rows, train_rows):
    n = len(train_rows)
    mean = sum(train_rows) / n
    std = (sum((v - mean) ** 2 for v in train_rows) / n) ** 0.5
    return [(v - mean) / std for v in rows], mean, std


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "data/diabetes"
    if out in ("-h", "--help"):
        print(__doc__)
        return
    tmp = tempfile.mkdtemp(prefix="fedfwd-diabetes-")
    try:
        src = source_files(tmp)
        x = read_rows(os.path.join(src, "diabetes_data_raw.csv.gz"))
        y = [r[0] for r in read_rows(os.path.join(src, "diabetes_target.csv.gz"))]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if len(x) != 442 or len(y) != 442 or any(len(r) != 10 for r in x):
        sys.exit(f"diabetes_csv.py: expected 442 rows of 10 features and 442 "
                 f"targets, got {len(x)} and {len(y)}")
    order = list(range(len(x)))
    random.Random(2004).shuffle(order)
    train, test = order[:353], order[353:]
    cols = []
    for j in range(10):
        col = [r[j] for r in x]
        scaled, _, _ = standardize(col, [col[i] for i in train])
        cols.append(scaled)
    target, t_mean, t_std = standardize(y, [y[i] for i in train])
    os.makedirs(out, exist_ok=True)
    for name, idx in (("train", train), ("test", test)):
        with open(os.path.join(out, f"{name}.csv"), "w") as f:
            f.write(",".join(COLUMNS + ["target"]) + "\n")
            for i in idx:
                f.write(",".join(f"{cols[j][i]:.6g}" for j in range(10)) +
                        f",{target[i]:.6g}\n")
    with open(os.path.join(out, "target_scale.txt"), "w") as f:
        f.write(f"mean {t_mean:.6g}\nstd {t_std:.6g}\n")
    print(f"wrote {out}/train.csv (353 rows) and {out}/test.csv (89 rows); "
          f"target standardized: mean {t_mean:.2f}, std {t_std:.2f} "
          f"(RMSE x {t_std:.2f} = original units)")


if __name__ == "__main__":
    main()
