#!/usr/bin/env python3
"""Decentralized training against centralized SGD and FedAvg (issue 8), on
real MNIST with lenet5 in the gossip report's setting (batch 128, lr 0.01,
weight decay 1e-4, --steps local steps per worker, 8 workers):

  centralized SGD      fedfwd-train configs/mnist_lenet5_central.yaml
  FedAvg               configs/mnist_fedavg_lenet5.yaml (1 local epoch =
                       59 steps per round, ceil(steps / 59) rounds)
  EASGD, synchronous   configs/mnist_easgd.yaml
  EASGD, asynchronous  configs/mnist_easgd_async.yaml
  GoSGD                configs/mnist_gosgd.yaml
  SGP                  configs/mnist_sgp.yaml

one after another on this machine (every worker is a separate client
daemon; the decentralized ones push to each other over their peer
services). Two tables go into this script's own section of
bench/RESULTS.md (between its markers) and to stdout:
  - equal iterations: test accuracy (the consensus model for the
    decentralized runs, the global model for FedAvg) after --steps local
    steps per worker, with wall time and bytes per worker;
  - equal wall time: each method's test accuracy at its last evaluation
    within a budget, the budgets being the fastest method's wall time and
    the fastest multi-worker method's.

  python3 bench/decentralized.py [--steps 1500] [--eval-every 100]
                                 [--only NAME,...] [--out DIR] [--no-write]
                                 [--reuse]

Needs python3 (stdlib only), a build and real MNIST (scripts/setup.sh).
"""
import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (write_section, last_within)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "build", "bin")
# FedAvg's local steps per round: one epoch of a 60,000 / 8 = 7,500 image
# shard in batches of 128.
FEDAVG_STEPS_PER_ROUND = math.ceil(7500 / 128)

METHODS = [
    ("central", "centralized SGD (1 process)", "mnist_lenet5_central.yaml"),
    ("fedavg", "FedAvg, 8 clients, E=1", "mnist_fedavg_lenet5.yaml"),
    ("easgd", "EASGD synchronous, tau 4", "mnist_easgd.yaml"),
    ("easgd_async", "EASGD asynchronous, tau 4", "mnist_easgd_async.yaml"),
    ("gosgd", "GoSGD, p 0.1", "mnist_gosgd.yaml"),
    ("sgp", "SGP, exponential graph", "mnist_sgp.yaml"),
]


def run(name, config, args):
    out = os.path.join(args.out, name)
    path = os.path.join(ROOT, "configs", config)
    if name == "central":
        cmd = [os.path.join(BIN, "fedfwd-train"), path, "--out", out,
               "--set", f"rounds={args.steps}",
               "--set", f"eval_every={args.eval_every}"]
    elif name == "fedavg":
        rounds = math.ceil(args.steps / FEDAVG_STEPS_PER_ROUND)
        every = max(1, round(args.eval_every / FEDAVG_STEPS_PER_ROUND))
        cmd = [os.path.join(BIN, "fedfwd-run"), path, "--out", out,
               "--insecure", "--set", f"rounds={rounds}",
               "--set", f"eval_every={every}"]
    else:
        cmd = [os.path.join(BIN, "fedfwd-run"), path, "--out", out,
               "--insecure", "--set", f"peer.steps={args.steps}",
               "--set", f"eval_every={args.eval_every}"]
    if args.reuse and os.path.exists(os.path.join(out, "summary.json")):
        print(f"reusing {out}", flush=True)
    else:
        print("$", " ".join(cmd), flush=True)
        with open(out + ".log", "w") as log:
            code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
        if code != 0:
            sys.exit(f"{name} failed (exit {code}); see {out}.log")
    rows = [json.loads(line) for line in open(os.path.join(out,
                                                           "metrics.jsonl"))]
    summary = json.load(open(os.path.join(out, "summary.json")))
    # (local steps per worker, wall s, test acc) per evaluation.
    evals = []
    for r in rows:
        if r.get("test_acc") is None:
            continue
        if name == "central":
            step = r["step"]
        elif name == "fedavg":
            step = r["round"] * FEDAVG_STEPS_PER_ROUND
        else:
            step = int(r["worker_step"])
        evals.append((step, r["wall_s"], r["test_acc"], r.get("spread")))
    workers = 1 if name == "central" else summary["config"]["clients"]
    up = summary.get("bytes_up_total", 0)
    down = summary.get("bytes_down_total", 0)
    return {"evals": evals, "wall": summary["wall_s"],
            "acc": summary["final_test_acc"], "steps": evals[-1][0],
            "workers": workers, "bytes": (up + down) / workers,
            "lost": summary.get("workers_lost", 0),
            "spread": evals[-1][3]}


def human(n):
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def tables(results, args):
    lines = [
        f"## Decentralized training, MNIST, `lenet5`, 8 workers "
        f"({datetime.date.today()})", "",
        f"`python3 bench/decentralized.py --steps {args.steps} --eval-every "
        f"{args.eval_every}` on {platform.node()} ({os.cpu_count()} cores; "
        "the 8 workers of a run and its coordinator share them, so a "
        "multi-worker run's wall time is about 8 workers' compute on 2 "
        "cores). The gossip report's setting: batch 128, lr 0.01, weight "
        "decay 1e-4, no momentum, one seed. Test accuracy on the 10,000 test "
        "images: the consensus model (mean of the workers) for the "
        "decentralized runs, the global model for FedAvg. Bytes per worker: "
        "serialized bytes to and from the coordinator (EASGD: the center "
        "read and the elastic difference sent every tau steps) plus the "
        "peer messages the worker sent.", ""]
    if args.contended:
        lines += ["Wall times are upper bounds where a run shared the cores "
                  f"with other work: {args.contended}.", ""]
    lines += [
        f"Equal iterations ({args.steps} local steps per worker; FedAvg: "
        f"{FEDAVG_STEPS_PER_ROUND}-step rounds):", "",
        "| method | local steps | test acc | wall s | spread | "
        "bytes per worker |",
        "|---|---|---|---|---|---|"]
    for label, r in results:
        spread = f"{r['spread']:.3g}" if r["spread"] is not None else "-"
        lines.append(f"| {label} | {r['steps']} | {r['acc']:.4f} | "
                     f"{r['wall']:.0f} | {spread} | "
                     f"{human(r['bytes']) if r['workers'] > 1 else '-'} |")
    budgets = [min(r["wall"] for _, r in results)]
    multi = [r["wall"] for _, r in results if r["workers"] > 1]
    if multi and min(multi) > budgets[0] * 1.05:
        budgets.append(min(multi))
    for budget in budgets:
        lines += ["", f"Equal wall time ({budget:.0f} s): test accuracy at "
                  "each method's last evaluation within it.", "",
                  "| method | local steps reached | test acc |",
                  "|---|---|---|"]
        for label, r in results:
            at = compare.last_within(r["evals"], budget)
            lines.append(f"| {label} | {at[0]} | {at[1]:.4f} |" if at else
                         f"| {label} | - | - |")
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--only", default="",
                   help="comma-separated names: " +
                   ",".join(m[0] for m in METHODS))
    p.add_argument("--out", default=os.path.join(ROOT, "runs",
                                                 "decentralized"))
    p.add_argument("--no-write", action="store_true",
                   help="print the tables, leave bench/RESULTS.md alone")
    p.add_argument("--contended", default="",
                   help="a note naming runs that shared the cores with "
                   "other work (printed with the tables)")
    p.add_argument("--reuse", action="store_true",
                   help="take a method's finished run from --out instead of "
                   "running it again (delete its folder to rerun it)")
    args = p.parse_args()
    if args.steps < 1 or args.eval_every < 1:
        p.error("--steps and --eval-every must be positive")
    wanted = [w for w in args.only.split(",") if w]
    unknown = set(wanted) - {m[0] for m in METHODS}
    if unknown:
        p.error(f"unknown method(s): {','.join(sorted(unknown))}")
    for exe in ("fedfwd-run", "fedfwd-train"):
        if not os.path.exists(os.path.join(BIN, exe)):
            sys.exit(f"build/bin/{exe} is missing; run scripts/setup.sh")
    os.makedirs(args.out, exist_ok=True)
    results = []
    for name, label, config in METHODS:
        if wanted and name not in wanted:
            continue
        r = run(name, config, args)
        print(f"{label}: {r['acc']:.4f} after {r['steps']} steps, "
              f"{r['wall']:.0f} s", flush=True)
        results.append((label, r))
    text = tables(results, args)
    print(text)
    if not args.no_write:
        compare.write_section(text, "decentralized.py")
        print("written to bench/RESULTS.md")


if __name__ == "__main__":
    main()
