#!/usr/bin/env python3
"""Regression on the diabetes data: forward gradients (clients forward only)
against FedAvg (clients backprop) and centralized backprop, over seeds, and a
table of test R^2 and RMSE.

usage: bench/regression.py OUT_DIR [--seeds 1,2,3] [--quick]

Runs, for each seed, configs/regression/diabetes_fg_mlp.yaml and
diabetes_fedavg_mlp.yaml with fedfwd-run (10 client daemons) and
diabetes_central.yaml with fedfwd-train, into OUT_DIR/<name>-s<seed>. The
data is written first if it is missing (scripts/diabetes_csv.py into
data/diabetes). --quick: one seed, a tenth of the rounds (checks the
pipeline only). Prints a Markdown table: mean and range over seeds of the
final test R^2, the RMSE in standardized units and in the original units
(disease progression), rounds or steps, wall time and bytes per client.
env: FEDFWD_BIN (default <repo>/build/bin)
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("FEDFWD_BIN", os.path.join(ROOT, "build", "bin"))
DATA = os.path.join(ROOT, "data", "diabetes")
RUNS = [
    # name, program, config, what clients compute
    ("fg", "fedfwd-run", "diabetes_fg_mlp.yaml",
     "forward gradients (jvp, K = 32): clients forward only"),
    ("fedavg", "fedfwd-run", "diabetes_fedavg_mlp.yaml",
     "FedAvg: clients backprop"),
    ("central", "fedfwd-train", "diabetes_central.yaml",
     "centralized backprop (one process, all training rows)"),
]


def target_std():
    with open(os.path.join(DATA, "target_scale.txt")) as f:
        for line in f:
            key, value = line.split()
            if key == "std":
                return float(value)
    sys.exit("regression.py: no std in target_scale.txt")


def run(out, name, program, config, seed, quick):
    path = os.path.join(out, f"{name}-s{seed}")
    cfg = os.path.join(ROOT, "configs", "regression", config)
    cmd = [os.path.join(BIN, program), cfg, "--out", path,
           "--set", f"seed={seed}"]
    if quick:
        with open(cfg) as f:
            rounds = next(int(l.split(":")[1]) for l in f
                          if l.startswith("rounds:"))
        cmd += ["--set", f"rounds={max(1, rounds // 10)}"]
    print("[regression]", " ".join(cmd), file=sys.stderr)
    with open(path + ".log", "w") as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    if code != 0:
        sys.exit(f"regression.py: {name} seed {seed} failed (exit {code}); "
                 f"see {path}.log")
    with open(os.path.join(path, "summary.json")) as f:
        return json.load(f)


def spread(values, fmt):
    mean = sum(values) / len(values)
    if len(values) == 1:
        return fmt.format(mean)
    return (fmt + " ({}–{})").format(mean, fmt.format(min(values)),
                                     fmt.format(max(values)))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    if a.quick:
        seeds = seeds[:1]
    if not os.path.exists(os.path.join(DATA, "train.csv")):
        subprocess.check_call([sys.executable,
                               os.path.join(ROOT, "scripts", "diabetes_csv.py"),
                               DATA])
    std = target_std()
    os.makedirs(a.out, exist_ok=True)
    print("| method | clients compute | final test R² | RMSE (standardized) "
          "| RMSE (progression units) | rounds / steps | wall (s) "
          "| bytes per client (up + down) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, program, config, what in RUNS:
        sums = [run(a.out, name, program, config, s, a.quick) for s in seeds]
        r2 = [s["final_test_r2"] for s in sums]
        rmse = [s["final_test_rmse"] for s in sums]
        wall = [s["wall_s"] for s in sums]
        done = sums[0]["done"]
        if program == "fedfwd-run":
            per = [(s["bytes_up_total"] + s["bytes_down_total"]) / 10
                   for s in sums]
            traffic = spread(per, "{:,.0f}")
        else:
            traffic = "—"
        print(f"| {name} | {what} | {spread(r2, '{:.3f}')} "
              f"| {spread(rmse, '{:.3f}')} "
              f"| {spread([x * std for x in rmse], '{:.1f}')} | {done} "
              f"| {spread(wall, '{:.0f}')} | {traffic} |")
        sys.stdout.flush()
    print(f"\nseeds {','.join(map(str, seeds))}; RMSE in progression units "
          f"= standardized RMSE x {std:.2f} (the training rows' deviation)")


if __name__ == "__main__":
    main()
