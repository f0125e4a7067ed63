#!/usr/bin/env python3
"""Local differential privacy for forward gradients: accuracy vs epsilon.

Runs the same forward-gradient federation (real MNIST, 10 iid clients,
average merge) with privacy off and with each noise multiplier, reads each
run's summary (final test accuracy, the epsilon the coordinator reports at
the given delta), and writes a table into its own section of
bench/RESULTS.md.

  python3 bench/privacy.py [--model tiny] [--rounds 300] [--clip 1]
                           [--sigmas 0.5,1,2,4] [--seed 1] [--no-write]
"""
import argparse
import datetime
import json
import os
import platform
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (run_cell, write_section, ROOT)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--rounds", type=int, default=300)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--sigmas", default="0.5,1,2,4")
    p.add_argument("--delta", type=float, default=1e-5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default=os.path.join(compare.ROOT, "runs",
                                                 "privacy"))
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    cells = [("off", [])] + [
        (s, [f"privacy.clip={args.clip}", f"privacy.noise_multiplier={s}",
             f"privacy.delta={args.delta}"])
        for s in args.sigmas.split(",")]
    rows = []
    for name, privacy in cells:
        print(f"{args.model} forward gradient, privacy {name} ...", flush=True)
        # clip_jvp at the same C in every cell: only the noise differs.
        sets = ["estimator=jvp", "merge=average", "batch_size=64",
                f"lr={args.lr}", f"clip_jvp={args.clip}",
                "dataset.train_limit=0"] + privacy
        out = os.path.join(args.out, f"{args.model}-{name}")
        row = compare.run_cell(args.model, "run", args.rounds, sets,
                               args.seed, 0.5, out)
        with open(os.path.join(out, "summary.json")) as f:
            eps = json.load(f).get("privacy", {}).get("epsilon")
        print(f"    test acc {row['acc']:.4f}, epsilon {eps}", flush=True)
        rows.append((name, row["acc"], eps))
    lines = [
        f"## Local differential privacy, forward gradients, MNIST, "
        f"`{args.model}`, 10 clients ({datetime.date.today().isoformat()})",
        "",
        f"`python3 bench/privacy.py --model {args.model} --rounds "
        f"{args.rounds} --clip {args.clip} --sigmas {args.sigmas} --seed "
        f"{args.seed}`",
        "",
        f"Machine: {platform.node()}, {os.cpu_count()} cores. Average merge, "
        f"one Rademacher tangent per client, batch 64, lr {args.lr} "
        f"constant, {args.rounds} rounds, JVPs clipped to {args.clip} in "
        f"every cell; with privacy each client adds N(0, (sigma x "
        f"{args.clip})^2) to its value before sending. epsilon: what the "
        f"coordinator reports at delta {args.delta} for a client in every "
        f"round (Renyi-DP of the Gaussian mechanism, sensitivity 2C, no "
        f"subsampling amplification). One run per cell.",
        "",
        "| noise multiplier sigma | final test acc | epsilon |",
        "|---|---|---|",
    ]
    for name, acc, eps in rows:
        e = "-" if eps is None else f"{eps:,.1f}"
        lines.append(f"| {name} | {acc:.4f} | {e} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        compare.write_section(text, "privacy.py")
        print("written to bench/RESULTS.md")


if __name__ == "__main__":
    main()
