#!/usr/bin/env python3
"""Figures of one forward-gradient flagship run, from its output folder.

  python3 bench/flagship.py RUN_DIR [--target 0.95] [--baseline FEDSGD_RUN_DIR]

Reads RUN_DIR/summary.json and RUN_DIR/metrics.jsonl (what
`build/bin/fedfwd-run configs/mnist_fg_mlp.yaml --out RUN_DIR` writes) and
prints: bytes up and down per client per round (means over the whole run:
summary totals, every message from join to the end, joins and snapshots
included, divided by clients x rounds), the final test accuracy, the wall
time and the round at which the target was first reached, and whether the
issue's limits hold (up <= 1 KB, down <= 16 KB, accuracy >= target).
Also the clients' peak training memory, from the run_over line each client
daemon logs (client-*.log: peak RSS since model and data were loaded minus
the RSS then), and with --baseline (a run of configs/mnist_fedsgd_mlp.yaml
at the same batch and threads) the ratio of the two (target <= 0.5).
Exits 1 when the files are missing or unreadable.
"""
import argparse
import glob
import json
import os
import re
import sys


def training_memory_kib(run_dir):
    """Each client's training memory (KiB) from its log, in client order."""
    out = []
    for path in sorted(glob.glob(os.path.join(run_dir, "client-*.log"))):
        with open(path, errors="replace") as f:
            found = re.findall(r"training memory (-?\d+) KiB", f.read())
        if found and int(found[-1]) >= 0:
            out.append(int(found[-1]))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--target", type=float, default=0.95)
    p.add_argument("--baseline", help="a fedsgd run's folder: memory ratio")
    args = p.parse_args()
    try:
        with open(os.path.join(args.run_dir, "summary.json")) as f:
            s = json.load(f)
        with open(os.path.join(args.run_dir, "metrics.jsonl")) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError) as e:
        sys.exit(f"flagship.py: cannot read the run in {args.run_dir}: {e}")
    cfg = s.get("config", {})
    clients = cfg.get("clients") or s.get("clients")
    rounds = s.get("rounds")
    if not clients or not rounds:
        sys.exit("flagship.py: summary.json lacks clients or rounds")
    up = s["bytes_up_total"] / (clients * rounds)
    down = s["bytes_down_total"] / (clients * rounds)
    acc = s["final_test_acc"]
    hit = next((r for r in rows if r.get("test_acc") is not None
                and r["test_acc"] >= args.target), None)
    print(f"estimator: {cfg.get('estimator')} "
          f"(clients compute: "
          f"{'forward only' if cfg.get('estimator') in ('jvp', 'fd') else 'backprop'})")
    print(f"rounds: {rounds}, clients: {clients}, wall: {s['wall_s']:.0f} s")
    print(f"bytes up per client per round (mean, join included): {up:,.0f}")
    print(f"bytes down per client per round (mean, join included): {down:,.0f}")
    print(f"final test accuracy: {acc:.4f}")
    if hit:
        print(f"{args.target} reached at round {hit['round']}, "
              f"{hit['wall_s']:.0f} s")
    else:
        print(f"{args.target} not reached")
    ok = up <= 1024 and down <= 16 * 1024 and acc >= args.target
    print(f"limits (up <= 1 KB, down <= 16 KB, acc >= {args.target}): "
          f"{'met' if ok else 'NOT met'}")
    mem = training_memory_kib(args.run_dir)
    if mem:
        print(f"client training memory (peak RSS over RSS at load), KiB: "
              f"max {max(mem):,}, mean {sum(mem) / len(mem):,.0f} "
              f"over {len(mem)} clients")
    else:
        print("client training memory: not in the client logs")
    if args.baseline:
        base = training_memory_kib(args.baseline)
        if not base or not mem:
            sys.exit(f"flagship.py: no training memory in {args.baseline} "
                     "or in the run's client logs")
        with open(os.path.join(args.baseline, "summary.json")) as f:
            best = json.load(f).get("config", {}).get("estimator")
        ratio = max(mem) / max(base)
        print(f"baseline ({best}) training memory, KiB: max {max(base):,}, "
              f"mean {sum(base) / len(base):,.0f}; ratio of the maxima "
              f"{ratio:.2f} (target <= 0.5: "
              f"{'met' if ratio <= 0.5 else 'NOT met'})")


if __name__ == "__main__":
    main()
