#!/usr/bin/env python3
"""The forward-gradient family side by side (issue 7): one federation per
method on real MNIST, mlp, 10 client daemons, each from its own config:

  single tangent            configs/mnist_fg_mlp.yaml set to one dense one
  multi-tangent mean K=4    configs/mnist_multitangent_mean_mlp.yaml
  multi-tangent mean K=16   the same, tangent.count=16
  multi-tangent proj K=4    configs/mnist_multitangent_proj_mlp.yaml
  multi-tangent proj K=16   the same, tangent.count=16
  finite differences fp32   configs/mnist_fd_mlp.yaml
  finite differences fixed  configs/mnist_fd_fixed_mlp.yaml
  weight splitting          configs/mnist_split_mlp.yaml
  K=64 via projected        configs/mnist_multitangent_k64_mlp.yaml

each for --rounds rounds (the configs' cosine schedules run over those
rounds), evaluated every --eval-every rounds, one after another on this
machine. Two tables go into this script's own section of bench/RESULTS.md
(between its markers; nothing else is touched) and to stdout:
  - equal rounds: test accuracy after --rounds rounds, wall time, bytes up
    per client per round;
  - equal wall time: each method's test accuracy at its last evaluation
    within the budget, the budget being the wall time the fastest method
    needed for all its rounds.

  python3 bench/forward_family.py [--rounds 300] [--eval-every 10]
                                  [--only NAME,...] [--out DIR] [--no-write]

Needs python3 (stdlib only), a build and real MNIST (scripts/setup.sh).
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (write_section, last_within)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "build", "bin")

METHODS = [
    # The flagship file with its tangents set back to one dense tangent per
    # client and the schedule it had when this comparison was made.
    ("single", "single tangent (jvp)", "mnist_fg_mlp.yaml",
     ["tangent.structure=dense", "tangent.count=1", "tangent.u_groups=1",
      "jvp_bits=32", "lr=3e-3", "lr_schedule.min_lr=2e-4"]),
    ("mean4", "multi-tangent mean, K=4", "mnist_multitangent_mean_mlp.yaml",
     []),
    ("mean16", "multi-tangent mean, K=16",
     "mnist_multitangent_mean_mlp.yaml", ["tangent.count=16"]),
    ("proj4", "multi-tangent projection, K=4",
     "mnist_multitangent_proj_mlp.yaml", []),
    ("proj16", "multi-tangent projection, K=16",
     "mnist_multitangent_proj_mlp.yaml", ["tangent.count=16"]),
    ("fd", "finite differences, fp32", "mnist_fd_mlp.yaml", []),
    ("fdfixed", "finite differences, fixed point", "mnist_fd_fixed_mlp.yaml",
     []),
    ("split", "weight splitting, 1 layer per client", "mnist_split_mlp.yaml",
     []),
    ("k64", "multi-tangent mean, K=64, scalars via `projected`",
     "mnist_multitangent_k64_mlp.yaml", []),
]


def run(name, config, sets, rounds, eval_every, out_dir):
    out = os.path.join(out_dir, name)
    cmd = [os.path.join(BIN, "fedfwd-run"), os.path.join(ROOT, "configs",
                                                           config),
           "--out", out, "--insecure", "--set", f"rounds={rounds}",
           "--set", f"eval_every={eval_every}", "--set",
           "targets=[0.5,0.8,0.9,0.95]"]
    for s in sets:
        cmd += ["--set", s]
    print("$", " ".join(cmd), flush=True)
    with open(out + ".log", "w") as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    if code != 0:
        sys.exit(f"{name} failed (exit {code}); see {out}.log")
    rows = [json.loads(line) for line in open(os.path.join(out,
                                                           "metrics.jsonl"))]
    summary = json.load(open(os.path.join(out, "summary.json")))
    evals = [(r["round"], r["wall_s"], r["test_acc"]) for r in rows
             if r.get("test_acc") is not None]
    clients = summary["config"]["clients"]
    return {"evals": evals, "wall": summary["wall_s"],
            "acc": summary["final_test_acc"], "rounds": summary["rounds"],
            "up": summary["bytes_up_total"] / max(1, summary["rounds"]) /
            clients,
            "down": summary["bytes_down_total"] / max(1, summary["rounds"]) /
            clients}


def tables(results, args):
    budget = min(r["wall"] for _, r in results)
    lines = [
        f"## Forward-gradient family, MNIST, `mlp`, 10 client daemons "
        f"({datetime.date.today()})", "",
        f"`python3 bench/forward_family.py --rounds {args.rounds} "
        f"--eval-every {args.eval_every}` on {platform.node()} "
        f"({os.cpu_count()} cores, shared by 11 processes): each method "
        "from its config with `--set rounds=... --set eval_every=...` (the "
        "cosine schedules run over these rounds), one seed, one after "
        "another. Up and down are bytes per client per round from "
        "`summary.json` (scalars plus polls and heartbeats; down is seed "
        "updates where the run replays them, else snapshots).", "",
        f"Equal rounds ({args.rounds}):", "",
        "| method | test acc | wall s | up B/client/round | "
        "down B/client/round |",
        "|---|---|---|---|---|"]
    for label, r in results:
        lines.append(f"| {label} | {r['acc']:.4f} | {r['wall']:.0f} | "
                     f"{r['up']:.0f} | {r['down']:,.0f} |")
    lines += ["", f"Equal wall time ({budget:.0f} s, the fastest method's "
              f"{args.rounds} rounds): test accuracy at each method's last "
              "evaluation within it.", "",
              "| method | round reached | test acc |", "|---|---|---|"]
    for label, r in results:
        at = compare.last_within(r["evals"], budget)
        lines.append(f"| {label} | {at[0] if at else '-'} | "
                     f"{at[1]:.4f} |" if at else f"| {label} | - | - |")
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=300)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--only", default="",
                   help="comma-separated names: " +
                   ",".join(m[0] for m in METHODS))
    p.add_argument("--out", default=os.path.join(ROOT, "runs",
                                                 "forward_family"))
    p.add_argument("--no-write", action="store_true",
                   help="print the tables, leave bench/RESULTS.md alone")
    args = p.parse_args()
    if args.rounds < 1 or args.eval_every < 1:
        p.error("--rounds and --eval-every must be positive")
    wanted = [w for w in args.only.split(",") if w]
    unknown = set(wanted) - {m[0] for m in METHODS}
    if unknown:
        p.error(f"unknown method(s): {','.join(sorted(unknown))}")
    if not os.path.exists(os.path.join(BIN, "fedfwd-run")):
        sys.exit("build/bin/fedfwd-run is missing; run scripts/setup.sh")
    os.makedirs(args.out, exist_ok=True)
    results = []
    for name, label, config, sets in METHODS:
        if wanted and name not in wanted:
            continue
        r = run(name, config, sets, args.rounds, args.eval_every, args.out)
        print(f"{label}: {r['acc']:.4f} after {r['rounds']} rounds, "
              f"{r['wall']:.0f} s", flush=True)
        results.append((label, r))
    text = tables(results, args)
    print(text)
    if not args.no_write:
        compare.write_section(text, "forward_family.py")
        print("written to bench/RESULTS.md")


if __name__ == "__main__":
    main()
