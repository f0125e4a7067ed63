#!/usr/bin/env python3
"""Forward gradients against backprop on real MNIST: the comparison grid.

Runs, for the models mlp and cnn, with 10 clients where federated:
  central backprop (fedfwd-train, estimator backprop)
  central forward gradient (fedfwd-train, estimator jvp)
  federated forward gradient, merge naive / average / weighted (fedfwd-run)
  FedSGD and FedAvg (fedfwd-run)
each cell with a fixed budget: --rounds rounds (federated) or steps
(central), except FedAvg, whose rounds are whole local epochs and get
--fedavg-rounds. Reads each run's summary.json and metrics.jsonl and writes
a markdown table (test accuracy, wall time, bytes up/down per client per
round, rounds, time and bytes to reach --target) into its own section of
bench/RESULTS.md (between the compare markers; nothing else is touched),
and prints it. With several --seeds, cells show mean +- standard deviation.

  python3 bench/compare.py [--rounds 300] [--fedavg-rounds 2]
                           [--seeds 1] [--models mlp,cnn] [--out DIR]
                           [--no-write]

Needs python3 (stdlib only) and a build (scripts/setup.sh).
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "build", "bin")

# Learning rates per model and method: the tuned values of configs/ where
# they exist; the forward-gradient ones are 50-500x below backprop's, as
# the design notes' field notes say they must be.
# cnn minibatches are 32 to keep the grid within the hour on 2 cores.
FG = {"mlp": {"lr": 3e-3, "batch_size": 256},
      "cnn": {"lr": 2e-3, "batch_size": 32}}
BP = {"mlp": {"lr": 0.05, "batch_size": 64},
      "cnn": {"lr": 0.02, "batch_size": 32}}


def cells(models, rounds, fedavg_rounds):
    out = []
    for m in models:
        fg = ["estimator=jvp", "tangent.distribution=rademacher",
              "clip_jvp=1.0", f"batch_size={FG[m]['batch_size']}"]
        bp = [f"batch_size={BP[m]['batch_size']}", "momentum=0.9"]
        out.append((m, "central backprop", "train", rounds,
                    ["estimator=backprop", f"lr={BP[m]['lr']}"] + bp))
        out.append((m, "central forward gradient", "train", rounds,
                    fg + [f"lr={FG[m]['lr']}"]))
        for merge in ("naive", "average", "weighted"):
            # naive applies one step per client: lr / clients matches the
            # others' step size.
            lr = FG[m]["lr"] / 10 if merge == "naive" else FG[m]["lr"]
            out.append((m, f"federated FG, {merge}", "run", rounds,
                        fg + [f"merge={merge}", f"lr={lr}"]))
        out.append((m, "FedSGD", "run", rounds,
                    ["estimator=fedsgd", f"lr={BP[m]['lr']}"] + bp))
        out.append((m, "FedAvg (E=1, B=32)", "run", fedavg_rounds,
                    ["estimator=fedavg", "local_epochs=1", "batch_size=32",
                     "lr=0.02", "momentum=0.9", "timeouts.round_s=1800",
                     "timeouts.client_s=60"]))
    return out


def run_cell(model, kind, budget, sets, seed, target, out_dir):
    base = [f"model={model}", "dataset.name=mnist", "clients=10",
            "min_clients=10", f"rounds={budget}", f"seed={seed}",
            f"eval_every={max(1, budget // 10)}", f"targets=[{target}]",
            "lr_schedule.type=constant", "partition.type=iid",
            # The base file is the forward-gradient flagship; every cell
            # states its own tangents (backprop estimators take these
            # defaults only).
            "tangent.structure=dense", "tangent.count=1",
            "tangent.u_groups=1", "jvp_bits=32"] + sets
    config = os.path.join(ROOT, "configs", "mnist_fg_mlp.yaml")
    args = []
    for s in base:
        args += ["--set", s]
    if kind == "train":
        cmd = [os.path.join(BIN, "fedfwd-train"), config, "--out", out_dir,
               "--threads", "2"] + args
    else:
        cmd = [os.path.join(BIN, "fedfwd-run"), config, "--out", out_dir,
               "--server-threads", "2"] + args
    log = out_dir + ".log"
    start = time.time()
    with open(log, "w") as f:
        code = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT)
    if code != 0:
        sys.exit(f"compare.py: {' '.join(cmd)} failed ({code}); see {log}")
    with open(os.path.join(out_dir, "summary.json")) as f:
        summary = json.load(f)
    rounds = summary.get("rounds", summary.get("steps", budget))
    clients = 1 if kind == "train" else 10
    per = max(1, rounds) * clients
    row = {
        "acc": summary["final_test_acc"],
        "wall": summary["wall_s"],
        "up": summary["bytes_up_total"] / per,
        "down": summary["bytes_down_total"] / per,
        "rounds": rounds,
        "elapsed": time.time() - start,
    }
    hit = summary["targets"][0]
    if hit.get("reached"):
        row["t_rounds"] = hit.get("round", hit.get("step"))
        row["t_wall"] = hit["wall_s"]
        row["t_bytes"] = (hit.get("bytes_up", 0) + hit.get("bytes_down", 0)) \
            / clients
    return row


def fmt(values, spec):
    values = [v for v in values if v is not None]
    if not values:
        return "not reached"
    mean = statistics.mean(values)
    if len(values) == 1:
        return format(mean, spec)
    return f"{format(mean, spec)} ± {format(statistics.stdev(values), spec)}"


def human_bytes(n):
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0


def table(results, args, seeds):
    lines = [
        f"## Forward gradients vs backprop, MNIST, 10 clients "
        f"({datetime.date.today().isoformat()})",
        "",
        f"`python3 bench/compare.py --rounds {args.rounds} "
        f"--fedavg-rounds {args.fedavg_rounds} --seeds "
        f"{','.join(map(str, seeds))} --models {args.models}`",
        "",
        f"Machine: {platform.node()}, {os.cpu_count()} cores, "
        f"{platform.platform()}; seeds {', '.join(map(str, seeds))} "
        f"(mean ± sd when several). Budget: {args.rounds} rounds "
        f"(federated) or optimizer steps (central) per cell; FedAvg "
        f"{args.fedavg_rounds} rounds of one local epoch each. Constant "
        f"learning rates (see the script for each cell's). Bytes are "
        f"serialized gRPC messages per client per round; central runs have "
        f"no network. Target: test accuracy {args.target}.",
        "",
        f"| model | method | rounds/steps | test acc | wall s | up B/client/round "
        f"| down B/client/round | rounds to {args.target} | s to "
        f"{args.target} | bytes/client to {args.target} |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (model, name), rows in results.items():
        up = statistics.mean(r["up"] for r in rows)
        down = statistics.mean(r["down"] for r in rows)
        lines.append(
            f"| {model} | {name} | {rows[0]['rounds']} | "
            f"{fmt([r['acc'] for r in rows], '.4f')} | "
            f"{fmt([r['wall'] for r in rows], '.0f')} | "
            f"{'-' if up == 0 else human_bytes(up)} | "
            f"{'-' if down == 0 else human_bytes(down)} | "
            f"{fmt([r.get('t_rounds') for r in rows], '.0f')} | "
            f"{fmt([r.get('t_wall') for r in rows], '.0f')} | "
            f"{fmt([r.get('t_bytes') for r in rows], ',.0f')} |")
    return "\n".join(lines) + "\n"


def last_within(evals, budget):
    """(x, accuracy) of the last evaluation (x, wall_s, accuracy, ...) whose
    wall time is within `budget`; None when there is none."""
    best = None
    for e in evals:
        if e[1] <= budget + 1e-9:
            best = (e[0], e[2])
    return best


def write_section(text, owner="compare.py"):
    """Replaces `owner`'s section of bench/RESULTS.md (between its markers),
    or appends one; the rest of the file is kept as it is."""
    begin = f"<!-- {owner}:begin -->"
    end = f"<!-- {owner}:end -->"
    path = os.path.join(ROOT, "bench", "RESULTS.md")
    old = open(path).read() if os.path.exists(path) else "# Results\n"
    block = f"{begin}\n{text}{end}\n"
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        new = head + block + ("\n" + tail if tail else "")
    else:
        new = old.rstrip("\n") + "\n\n" + block
    with open(path + ".tmp", "w") as f:
        f.write(new)
    os.replace(path + ".tmp", path)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=300)
    p.add_argument("--fedavg-rounds", type=int, default=2)
    p.add_argument("--seeds", default="1")
    p.add_argument("--models", default="mlp,cnn")
    p.add_argument("--target", type=float, default=0.8)
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "compare"))
    p.add_argument("--no-write", action="store_true",
                   help="print the table, leave bench/RESULTS.md alone")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    models = args.models.split(",")
    for m in models:
        if m not in FG:
            sys.exit(f"compare.py: unknown model {m} (mlp, cnn)")
    for tool in ("fedfwd-train", "fedfwd-run", "fedfwd-server",
                 "fedfwd-client"):
        if not os.access(os.path.join(BIN, tool), os.X_OK):
            sys.exit(f"compare.py: {BIN}/{tool} missing; run scripts/setup.sh")
    os.makedirs(args.out, exist_ok=True)
    results = {}
    grid = cells(models, args.rounds, args.fedavg_rounds)
    total = len(grid) * len(seeds)
    done = 0
    for model, name, kind, budget, sets in grid:
        for seed in seeds:
            slug = f"{model}-{name}-s{seed}".replace(" ", "_").replace(
                ",", "").replace("(", "").replace(")", "").replace("=", "")
            done += 1
            print(f"[{done}/{total}] {model} {name} seed {seed} ...",
                  flush=True)
            row = run_cell(model, kind, budget, sets, seed, args.target,
                           os.path.join(args.out, slug))
            print(f"    test acc {row['acc']:.4f}, {row['wall']:.0f} s",
                  flush=True)
            results.setdefault((model, name), []).append(row)
    text = table(results, args, seeds)
    print(text)
    if not args.no_write:
        write_section(text)
        print("written to bench/RESULTS.md")


if __name__ == "__main__":
    main()
