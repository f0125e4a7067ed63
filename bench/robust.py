#!/usr/bin/env python3
"""Robust merging against one adversarial client: final test accuracy.

Runs short federations on real MNIST (10 iid clients, model `tiny` by
default) in two families: forward gradients (estimator jvp, average merge,
Rademacher tangents, clip_jvp off so that only the robust rule bounds the
attacker) under robust.rule none / median / trimmed_mean / quantile_clip,
and FedAvg under robust.dense none / median / trimmed_mean / norm_clip;
each rule once with all clients honest and once with client 0 started as
`fedfwd-client --adversary-scale SCALE` (through fedfwd-run --client-arg).
Reads each run's summary.json and writes a table into its own section of
bench/RESULTS.md (between the robust.py markers; nothing else is touched).

  python3 bench/robust.py [--model tiny] [--rounds 200] [--fedavg-rounds 3]
                          [--scale -100] [--seed 1] [--bin build/bin]
                          [--out DIR] [--no-write]
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (write_section, ROOT)

FG_RULES = ("none", "median", "trimmed_mean", "quantile_clip")
NOTE = ("One run per cell: forward-gradient cells move by several points "
        "between reruns (client ids, and so tangents, follow join order), "
        "so read the table for collapse vs no collapse, not for small "
        "differences. median keeps one client's d v per round and loses "
        "the averaging of 10 tangents, hence its low honest accuracy.")
DENSE_RULES = ("none", "median", "trimmed_mean", "norm_clip")


def run(bin_dir, model, rounds, sets, seed, scale, out_dir):
    base = [f"model={model}", "dataset.name=mnist", "clients=10",
            "min_clients=10", f"rounds={rounds}", f"seed={seed}",
            f"eval_every={max(1, rounds // 4)}", "targets=[]",
            "lr_schedule.type=constant", "partition.type=iid",
            "timeouts.round_s=600", "timeouts.client_s=60",
            # the base file is the flagship: one dense tangent here
            "tangent.structure=dense", "tangent.count=1",
            "tangent.u_groups=1", "jvp_bits=32"] + sets
    cmd = [os.path.join(bin_dir, "fedfwd-run"),
           os.path.join(compare.ROOT, "configs", "mnist_fg_mlp.yaml"),
           "--out", out_dir, "--server-threads", "1"]
    for s in base:
        cmd += ["--set", s]
    if scale is not None:
        cmd += ["--client-arg", f"0=--adversary-scale={scale}"]
    log = out_dir + ".log"
    start = time.time()
    with open(log, "w") as f:
        code = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT)
    if code != 0:
        sys.exit(f"robust.py: {' '.join(cmd)} failed ({code}); see {log}")
    with open(os.path.join(out_dir, "summary.json")) as f:
        summary = json.load(f)
    return summary["final_test_acc"], time.time() - start


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--fedavg-rounds", type=int, default=3)
    p.add_argument("--fg-lr", type=float, default=0.05)
    p.add_argument("--scale", type=float, default=-100)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--bin", default=os.path.join(compare.ROOT, "build", "bin"))
    p.add_argument("--out", default=os.path.join(compare.ROOT, "runs",
                                                 "robust"))
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    fg = ["estimator=jvp", "merge=average", "tangent.distribution=rademacher",
          "clip_jvp=0", "batch_size=64", f"lr={args.fg_lr}"]
    fedavg = ["estimator=fedavg", "local_epochs=1", "batch_size=32",
              "lr=0.05", "momentum=0.9"]
    families = [("forward gradient", "robust.rule", FG_RULES, fg,
                 args.rounds),
                ("FedAvg", "robust.dense", DENSE_RULES, fedavg,
                 args.fedavg_rounds)]
    rows = []
    for family, key, rules, sets, rounds in families:
        for rule in rules:
            accs = []
            for scale in (None, args.scale):
                tag = "honest" if scale is None else f"adv{scale:g}"
                name = f"{family.split()[0].lower()}-{rule}-{tag}"
                print(f"{family}, {key}={rule}, {tag} ...", flush=True)
                acc, secs = run(args.bin, args.model, rounds,
                                sets + [f"{key}={rule}"], args.seed, scale,
                                os.path.join(args.out, name))
                print(f"    final test acc {acc:.4f} ({secs:.0f} s)",
                      flush=True)
                accs.append(acc)
            rows.append((family, rounds, rule, accs[0], accs[1]))
    cmdline = (f"python3 bench/robust.py --model {args.model} --rounds "
               f"{args.rounds} --fedavg-rounds {args.fedavg_rounds} "
               f"--fg-lr {args.fg_lr:g} --scale {args.scale:g} --seed "
               f"{args.seed}")
    lines = [
        f"## Robust merging, one adversarial client of 10, MNIST, "
        f"`{args.model}` ({datetime.date.today().isoformat()})",
        "",
        f"`{cmdline}`",
        "",
        f"Machine: {platform.node()}, {os.cpu_count()} cores. 10 iid "
        f"clients, seed {args.seed}, full 10,000-image test split. "
        f"Forward gradient: average merge, one Rademacher tangent per "
        f"client, batch 64, lr {args.fg_lr:g} constant, clip_jvp off, "
        f"{args.rounds} rounds, rule in `robust.rule` (trim 0.1; "
        f"quantile_clip q 0.5, multiplier 2). FedAvg: E=1, B=32, client lr "
        f"0.05, momentum 0.9, {args.fedavg_rounds} rounds, rule in "
        f"`robust.dense` (trim 0.1; norm_clip to the round's median norm). "
        f"Adversary: client 0 runs `fedfwd-client --adversary-scale "
        f"{args.scale:g}` (every JVP value / delta it sends times "
        f"{args.scale:g}), through `fedfwd-run --client-arg`. "
        + NOTE,
        "",
        f"| estimator | rounds | robust rule | final test acc, honest "
        f"| final test acc, client 0 x {args.scale:g} |",
        "|---|---|---|---|---|",
    ]
    for family, rounds, rule, honest, adv in rows:
        lines.append(f"| {family} | {rounds} | {rule} | {honest:.4f} "
                     f"| {adv:.4f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        compare.write_section(text, "robust.py")
        print("written to bench/RESULTS.md")


if __name__ == "__main__":
    main()
