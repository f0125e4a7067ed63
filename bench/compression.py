#!/usr/bin/env python3
"""Upload compression of FedAvg deltas: accuracy and bytes, side by side.

Runs the same FedAvg federation (real MNIST, 10 iid clients, E=1, B=32)
with compression none (float32), fp16 and int8 (per-tensor scale), reads
each run's summary, and writes a table (final test accuracy, bytes up and
down per client per round, the ratio of bytes up to float32's) into its own
section of bench/RESULTS.md.

  python3 bench/compression.py [--model mlp] [--rounds 3] [--seed 1]
                               [--out DIR] [--no-write]
"""
import argparse
import datetime
import os
import platform
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (run_cell, write_section, ROOT)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="mlp")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default=os.path.join(compare.ROOT, "runs",
                                                 "compression"))
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for enc in ("none", "fp16", "int8"):
        print(f"{args.model} FedAvg, compression {enc} ...", flush=True)
        sets = ["estimator=fedavg", "local_epochs=1", "batch_size=32",
                "lr=0.02", "momentum=0.9", f"compression={enc}",
                "timeouts.round_s=1800", "timeouts.client_s=60"]
        row = compare.run_cell(args.model, "run", args.rounds, sets,
                               args.seed, 0.9,
                               os.path.join(args.out, f"{args.model}-{enc}"))
        print(f"    test acc {row['acc']:.4f}, up {row['up']:.0f} B/client/"
              f"round", flush=True)
        rows.append((enc, row))
    base_up = rows[0][1]["up"]
    lines = [
        f"## FedAvg upload compression, MNIST, `{args.model}`, 10 clients "
        f"({datetime.date.today().isoformat()})",
        "",
        f"`python3 bench/compression.py --model {args.model} --rounds "
        f"{args.rounds} --seed {args.seed}`",
        "",
        f"Machine: {platform.node()}, {os.cpu_count()} cores. FedAvg, E=1, "
        f"B=32, client lr 0.02, momentum 0.9, {args.rounds} rounds, seed "
        f"{args.seed}; the same run three times, only `compression` differs. "
        f"Bytes are serialized gRPC messages per client per round.",
        "",
        "| compression | final test acc | up B/client/round | up vs none "
        "| down B/client/round |",
        "|---|---|---|---|---|",
    ]
    for enc, r in rows:
        lines.append(f"| {enc} | {r['acc']:.4f} | {r['up']:,.0f} | "
                     f"{r['up'] / base_up:.3f} | {r['down']:,.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        compare.write_section(text, "compression.py")
        print("written to bench/RESULTS.md")


if __name__ == "__main__":
    main()
