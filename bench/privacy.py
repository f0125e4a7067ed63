#!/usr/bin/env python3
"""Local differential privacy for forward gradients: accuracy vs epsilon.

Runs the same forward-gradient federation (real MNIST, 10 iid clients,
average merge) with privacy off and with each noise multiplier, reads each
run's summary (final test accuracy, the epsilon the coordinator reports at
the given delta), and writes a table into its own section of
bench/RESULTS.md.

  python3 bench/privacy.py [--model tiny] [--rounds 300] [--clip 1]
                           [--sigmas 0.5,1,2,4] [--counts 1,4] [--seed 1]
                           [--no-write]

Each client releases K = tangent.count values a round (--counts), each
clipped and noised; the accountant counts all K (L2 sensitivity 2C sqrt(K)).
Clients compute forward only (estimator jvp).
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
    p.add_argument("--counts", default="1,4",
                   help="tangents per client per round to run (K)")
    p.add_argument("--delta", type=float, default=1e-5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default=os.path.join(compare.ROOT, "runs",
                                                 "privacy"))
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    cells = []
    for k in [int(x) for x in args.counts.split(",")]:
        cells.append((k, "off", []))
        cells += [(k, sig, [f"privacy.clip={args.clip}",
                            f"privacy.noise_multiplier={sig}",
                            f"privacy.delta={args.delta}"])
                  for sig in args.sigmas.split(",")]
    rows = []
    for k, name, privacy in cells:
        print(f"{args.model} forward gradient, K={k}, privacy {name} ...",
              flush=True)
        # clip_jvp at the same C in every cell: only the noise differs.
        sets = ["estimator=jvp", "merge=average", "batch_size=64",
                f"lr={args.lr}", f"clip_jvp={args.clip}",
                f"tangent.count={k}", "tangent.structure=dense",
                "tangent.distribution=rademacher",
                "dataset.train_limit=0"] + privacy
        out = os.path.join(args.out, f"{args.model}-k{k}-{name}")
        row = compare.run_cell(args.model, "run", args.rounds, sets,
                               args.seed, 0.5, out)
        with open(os.path.join(out, "summary.json")) as f:
            priv = json.load(f).get("privacy", {})
        eps = priv.get("epsilon")
        if priv and priv.get("scalars_per_release") != k:
            sys.exit(f"privacy.py: run {out} accounted "
                     f"{priv.get('scalars_per_release')} scalars, not {k}")
        print(f"    test acc {row['acc']:.4f}, epsilon {eps}", flush=True)
        rows.append((k, name, row["acc"], eps))
    lines = [
        f"## Local differential privacy, forward gradients, MNIST, "
        f"`{args.model}`, 10 clients ({datetime.date.today().isoformat()})",
        "",
        f"`python3 bench/privacy.py --model {args.model} --rounds "
        f"{args.rounds} --clip {args.clip} --sigmas {args.sigmas} "
        f"--counts {args.counts} --seed {args.seed}`",
        "",
        f"Machine: {platform.node()}, {os.cpu_count()} cores. Clients "
        f"compute forward only (estimator jvp). Average merge, K dense "
        f"Rademacher tangents per client (mean combine), batch 64, lr {args.lr} "
        f"constant, {args.rounds} rounds, JVPs clipped to {args.clip} in "
        f"every cell; with privacy each client adds N(0, (sigma x "
        f"{args.clip})^2) from the kernel CSPRNG to each of its K values "
        f"before sending. epsilon: what the coordinator reports at delta "
        f"{args.delta} for a client in every round (Renyi-DP of the Gaussian "
        f"mechanism, L2 sensitivity 2C sqrt(K) per round, no subsampling "
        f"amplification). One run per cell.",
        "",
        "| clients compute | K | noise multiplier sigma | final test acc "
        "| epsilon |",
        "|---|---|---|---|---|",
    ]
    for k, name, acc, eps in rows:
        e = "-" if eps is None else f"{eps:,.1f}"
        lines.append(f"| forward only | {k} | {name} | {acc:.4f} | {e} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        compare.write_section(text, "privacy.py")
        print("written to bench/RESULTS.md")


if __name__ == "__main__":
    main()
