#!/usr/bin/env python3
"""Which algorithm reaches a target accuracy first on which link.

  sudo python3 bench/links.py [--algorithms fg,fedavg,...] [--links home,...]
                              [--budget-s 600] [--out DIR] [--bin build/bin]

Runs each (algorithm, link) cell as its own federation on MNIST `mlp` with
10 clients (`fedfwd-run CONFIG --link LINK`; loopback runs without --link),
stops it at the cell's wall-time budget (SIGINT: the coordinator writes its
summary, marked interrupted), and prints one row per cell: time to 0.90 and
to 0.95 test accuracy (wall time since the first round, at the first
evaluation that reached it: evaluations every `eval_every` rounds, so the
figure is an upper bound by up to that many rounds), total bytes both ways,
the last evaluated accuracy, and the wall time split into the clients'
compute (the sum over rounds of the slowest merged client's reported task
time, metrics.jsonl `client_compute_ms_max`) and the rest (transfers,
waiting, seed replay, evaluation). 11 processes share this machine's cores,
so compute is inflated; the split says how much of a cell is the link.

Algorithms (their own configs; learning rates are those the configs carry,
tuned on loopback, the same on every link):
  fg           configs/mnist_fg_mlp.yaml (forward only)
  projected    configs/mnist_multitangent_k128_rank1_mlp.yaml (client
               backprop, K = 128 scalars up)
  fedavg       configs/mnist_fedavg_mlp.yaml (backprop)
  fedavg_int8  the same with compression: int8 (backprop)
  fedsgd       configs/mnist_fedsgd_mlp.yaml (backprop)
  gosgd        configs/mnist_gosgd.yaml with model mlp, 10 workers, lr
               0.02 and batch 64 (FedAvg's local settings; backprop; peers
               gossip whole models through their links)
Links: loopback, 100mbit, 10mbit, home (1 Mbit/s up, 10 down, 40 ms each
way), edge (256 kbit/s both ways, 100 ms each way).

Cells whose folder already holds a finished or budget-stopped run are not
run again (the same --out goes on; --report-only runs nothing and
tabulates what is there). Writes links.json and links.md to --out.
Needs root for every link but loopback (fedfwd-run --link refuses without).
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ALGORITHMS = {
    "fg": ("configs/mnist_fg_mlp.yaml", ["eval_every=50"], "forward only"),
    "projected": ("configs/mnist_multitangent_k128_rank1_mlp.yaml",
                  ["eval_every=50"], "backprop"),
    "fedavg": ("configs/mnist_fedavg_mlp.yaml", ["rounds=20"], "backprop"),
    "fedavg_int8": ("configs/mnist_fedavg_mlp.yaml",
                    ["rounds=20", "compression=int8"], "backprop"),
    "fedsgd": ("configs/mnist_fedsgd_mlp.yaml", ["eval_every=10"],
               "backprop"),
    # Decentralized: GoSGD's lenet5 config on `mlp` with 10 workers, at
    # FedAvg's local learning rate and batch (the same local SGD problem;
    # not swept). eval_every counts each worker's steps.
    "gosgd": ("configs/mnist_gosgd.yaml",
              ["model=mlp", "clients=10", "lr=0.02", "batch_size=64",
               "eval_every=100"], "backprop"),
}
LINKS = {
    "loopback": None,
    "100mbit": "rate=100mbit",
    "10mbit": "rate=10mbit",
    "home": "up=1mbit,down=10mbit,delay=40ms",
    "edge": "rate=256kbit,delay=100ms",
}
TARGETS = (0.90, 0.95)


def read_run(run_dir):
    """(summary, metric rows) of a run folder; (None, []) when missing."""
    try:
        with open(os.path.join(run_dir, "summary.json")) as f:
            summary = json.load(f)
    except (OSError, ValueError):
        return None, []
    rows = []
    try:
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    pass
    except OSError:
        pass
    return summary, rows


def figures(summary, rows):
    """The table's figures of one run."""
    out = {"final_acc": None, "rounds": 0, "wall_s": 0.0, "bytes": 0,
           "compute_s": 0.0}
    for t in TARGETS:
        out[f"t{t:.2f}"] = None
    # Decentralized rows count each worker's steps (worker_step) and carry
    # no client compute time.
    decentralized = any("worker_step" in r for r in rows)
    if decentralized:
        out["compute_s"] = None
    for r in rows:
        done = r.get("worker_step", 0) if decentralized else r.get("round", 0)
        if done <= 0:
            continue
        out["rounds"] = int(done)
        out["wall_s"] = r.get("wall_s", out["wall_s"])
        out["bytes"] += r.get("bytes_up", 0) + r.get("bytes_down", 0)
        if not decentralized:
            out["compute_s"] += (r.get("client_compute_ms_max") or 0) / 1000.0
        acc = r.get("test_acc")
        if acc is None:
            continue
        out["final_acc"] = acc
        for t in TARGETS:
            key = f"t{t:.2f}"
            if out[key] is None and acc >= t:
                out[key] = r["wall_s"]
    # Join traffic is in round 0's row and the totals.
    if summary is not None:
        # A run stopped between evaluations is evaluated once more at the
        # end: its accuracy is only in the summary.
        if out["final_acc"] is None and summary.get("final_test_acc", -1) >= 0:
            out["final_acc"] = summary["final_test_acc"]
        out["bytes"] = summary.get("bytes_up_total", 0) + summary.get(
            "bytes_down_total", 0)
        out["interrupted"] = bool(summary.get("interrupted"))
    return out


def run_cell(args, algo, link_name, run_dir):
    config, sets, _ = ALGORITHMS[algo]
    cmd = [os.path.join(args.bin, "fedfwd-run"), os.path.join(ROOT, config),
           "--out", run_dir]
    # A model-sized transfer over 256 kbit/s takes minutes: no round may
    # time out, and no client be dropped (its heartbeats wait behind a
    # model on a slow uplink), for the link's sake.
    for s in sets + ["timeouts.round_s=3600", "timeouts.client_s=900"]:
        cmd += ["--set", s]
    if LINKS[link_name]:
        cmd += ["--link", LINKS[link_name]]
    log_path = run_dir + ".log"
    print(f"[links] {algo} on {link_name}: {' '.join(cmd)} (budget "
          f"{args.budget_s:.0f} s, log {log_path})", flush=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        start = time.time()
        try:
            proc.wait(timeout=args.budget_s + args.startup_s)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)
            proc.wait()
            raise
    return time.time() - start, proc.returncode


def fmt_t(v):
    return "not reached" if v is None else f"{v:.0f} s"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--algorithms", default=",".join(ALGORITHMS))
    p.add_argument("--links", default=",".join(LINKS))
    p.add_argument("--budget-s", type=float, default=600,
                   help="wall time of training per cell before it is stopped")
    p.add_argument("--startup-s", type=float, default=30,
                   help="allowance for starting and joining, on top")
    p.add_argument("--out", default=os.path.join(
        ROOT, "runs", time.strftime("links-%Y%m%d-%H%M%S")))
    p.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: tabulate the cells already in --out")
    args = p.parse_args()
    algos = [a for a in args.algorithms.split(",") if a]
    links = [l for l in args.links.split(",") if l]
    for a in algos:
        if a not in ALGORITHMS:
            sys.exit(f"links.py: unknown algorithm '{a}' "
                     f"(known: {', '.join(ALGORITHMS)})")
    for l in links:
        if l not in LINKS:
            sys.exit(f"links.py: unknown link '{l}' (known: {', '.join(LINKS)})")
    if (any(LINKS[l] for l in links) and os.geteuid() != 0 and
            not args.report_only):
        sys.exit("links.py: shaped links need root (fedfwd-run --link)")
    os.makedirs(args.out, exist_ok=True)
    planned = len(algos) * len(links) * (args.budget_s + args.startup_s)
    print(f"[links] {len(algos) * len(links)} cells, at most "
          f"{planned / 3600:.1f} h; results in {args.out}", flush=True)
    results = []
    for link in links:
        for algo in algos:
            run_dir = os.path.join(args.out, f"{algo}-{link}")
            summary, rows = read_run(run_dir)
            if summary is None and args.report_only:
                continue
            if summary is None:
                run_cell(args, algo, link, run_dir)
                summary, rows = read_run(run_dir)
            f = figures(summary, rows)
            f.update({"algorithm": algo, "link": link,
                      "link_spec": LINKS[link] or "loopback",
                      "clients_compute": ALGORITHMS[algo][2],
                      "budget_s": args.budget_s})
            results.append(f)
            print(f"[links] {algo} on {link}: 0.90 {fmt_t(f['t0.90'])}, "
                  f"0.95 {fmt_t(f['t0.95'])}, final {f['final_acc']}",
                  flush=True)
    with open(os.path.join(args.out, "links.json"), "w") as fh:
        json.dump(results, fh, indent=1)
    lines = [
        f"Budget {args.budget_s:.0f} s of training per cell; MNIST mlp, 10 "
        "clients; times from the first round, at evaluations.", "",
        "| link | algorithm | clients compute | to 0.90 | to 0.95 | rounds | "
        "bytes (MB) | last acc | wall (s) | compute (s) | rest (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|"]
    for f in results:
        acc = "-" if f["final_acc"] is None else f"{f['final_acc']:.4f}"
        compute, rest = (("-", "-") if f["compute_s"] is None else
                         (f"{f['compute_s']:.0f}",
                          f"{f['wall_s'] - f['compute_s']:.0f}"))
        lines.append(
            f"| {f['link_spec']} | {f['algorithm']} | {f['clients_compute']} "
            f"| {fmt_t(f['t0.90'])} | {fmt_t(f['t0.95'])} | {f['rounds']} | "
            f"{f['bytes'] / 1e6:.1f} | {acc} | {f['wall_s']:.0f} | "
            f"{compute} | {rest} |")
    table = "\n".join(lines)
    with open(os.path.join(args.out, "links.md"), "w") as fh:
        fh.write(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
