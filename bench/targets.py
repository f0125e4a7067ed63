#!/usr/bin/env python3
"""The performance targets of issue 6, one line each:

  NAME: VALUE UNIT (target TARGET)

measured side by side on this machine (ratios within one process or one
script run, as the machines are noisy). bench/run.sh builds and calls this;
see bench/README.md. Targets not built yet print "not measured" with the
reason, so the list stays complete.

  python3 bench/targets.py [--full] [--smoke] [--no-write]

--full runs longer (more benchmark time, more rounds); --smoke runs each
piece as briefly as possible (CI: the benchmarks must not rot) and never
writes. Without --no-write the lines, the command and the machine replace
this script's section of bench/RESULTS.md.
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (write_section)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "build", "bin")


def bench(filters, min_time, repetitions):
    """Real time in ms by benchmark name: the median of `repetitions` runs,
    the repetitions of all benchmarks interleaved in random order so that a
    slow spell of this shared machine does not land on one side of a
    ratio."""
    cmd = [os.path.join(BIN, "fedfwd_bench"), f"--benchmark_filter={filters}",
           f"--benchmark_min_time={min_time}", "--benchmark_format=json"]
    if repetitions > 1:
        cmd += [f"--benchmark_repetitions={repetitions}",
                "--benchmark_enable_random_interleaving=true",
                "--benchmark_report_aggregates_only=true"]
    out = subprocess.run(cmd, check=True, capture_output=True,
                         text=True).stdout
    times = {}
    for b in json.loads(out)["benchmarks"]:
        if repetitions > 1 and b.get("aggregate_name") != "median":
            continue
        scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b["time_unit"]]
        times[b.get("run_name", b["name"])] = b["real_time"] * scale  # ms
    return times


def memory_kib(mode, model, batch):
    out = subprocess.run(
        [os.path.join(BIN, "fedfwd_bench"), f"--memory={mode}",
         f"--model={model}", f"--batch={batch}"],
        check=True, capture_output=True, text=True).stdout
    return int(out.split()[-1])


def federation(config, rounds, sets, tmp, name):
    out = os.path.join(tmp, name)
    cmd = [os.path.join(BIN, "fedfwd-run"), config, "--out", out,
           "--insecure", "--set", f"rounds={rounds}",
           "--set", f"eval_every={rounds}"]
    for s in sets:
        cmd += ["--set", s]
    subprocess.run(cmd, check=True, capture_output=True)
    rows = [json.loads(line)
            for line in open(os.path.join(out, "metrics.jsonl"))]
    rows = [r for r in rows if r["round"] >= 1 and r["clients"] > 0]
    ups = sorted(r["bytes_up"] / r["clients"] for r in rows)
    downs = sorted(r["bytes_down"] / r["clients"] for r in rows)
    summary = json.load(open(os.path.join(out, "summary.json")))
    evals = [r["test_acc"] for r in rows if r.get("test_acc") is not None]
    cpu = sorted(r["coordinator_cpu_ms"] for r in rows
                 if r.get("test_acc") is None and "coordinator_cpu_ms" in r)
    return {"acc": evals[-1] if evals else float("nan"),
            "cpu_median": cpu[len(cpu) // 2] if cpu else float("nan"),
            "up_mean": sum(ups) / len(ups),
            "down_mean": sum(downs) / len(downs),
            "down_median": downs[len(downs) // 2],
            # summary totals (every message from join to the end) per
            # client per round
            "up_total": summary["bytes_up_total"] / max(1, len(rows)) /
            max(1, summary["config"]["clients"]),
            "down_total": summary["bytes_down_total"] / max(1, len(rows)) /
            max(1, summary["config"]["clients"]),
            "wall": summary["wall_s"], "rounds": len(rows)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--full", action="store_true")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    if args.full and args.smoke:
        p.error("--full and --smoke exclude each other")
    min_time = 0.01 if args.smoke else (3.0 if args.full else 0.5)
    fg_rounds = 3 if args.smoke else (300 if args.full else 60)
    tiny_rounds = 5 if args.smoke else (500 if args.full else 100)
    lines = []
    failures = []

    def line(name, value, unit, target):
        text = f"{name}: {value} {unit} (target {target})"
        lines.append(text)
        print(text, flush=True)

    # 1. Client step: forward gradient (tangent + JVP) against backprop,
    # on the path the client runs (the hand-written rules), with libtorch's
    # forward AD beside it for reference.
    t = bench("ForwardGradientStep/(mlp|cnn)_rademacher|BackpropStep|"
              "Merge100|RulesStep|SeparateJvps", min_time,
              1 if args.smoke else (7 if args.full else 5))
    for m in ("mlp", "cnn"):
        fg = t[f"BM_RulesStep/{m}_dense_k1"]
        ad = t[f"BM_ForwardGradientStep/{m}_rademacher"]
        bp = t[f"BM_BackpropStep/{m}"]
        line(f"fg_step_over_backprop_{m}_b64_rademacher", f"{fg / bp:.2f}",
             f"x ({fg:.2f} ms vs {bp:.2f} ms; libtorch forward AD "
             f"{ad:.2f} ms = {ad / bp:.2f} x)", "<= 1.2")
    # 2. Rank-one tangents.
    for m, target in (("mlp", "<= 0.7"), ("cnn", "<= 0.8")):
        r1 = t[f"BM_RulesStep/{m}_rank1_k1"]
        bp = t[f"BM_BackpropStep/{m}"]
        line(f"fg_step_rank1_over_backprop_{m}", f"{r1 / bp:.2f}",
             f"x ({r1:.2f} ms vs {bp:.2f} ms, Rademacher, batch 64)", target)
    # 3. K tangents sharing one primal pass against K separate passes.
    for kind in ("dense", "rank1"):
        parts = []
        for k in (1, 4, 8, 16):
            shared = t[f"BM_RulesStep/mlp_{kind}_k{k}"]
            separate = t[f"BM_SeparateJvps/mlp_{kind}_k{k}"]
            parts.append(f"K={k} {shared:.1f} vs {separate:.1f} ms "
                         f"({shared / separate:.2f} x)")
        line(f"k_tangents_shared_primal_mlp_{kind}", "; ".join(parts),
             "(one pass with K tangents vs K forward-AD passes, batch 64)",
             "report K = 1, 4, 8, 16")
    # 4. Coordinator merge of 100 JVPs into mlp.
    line("merge_100_jvps_mlp_rademacher",
         f"{t['BM_Merge100/mlp_rademacher']:.1f}",
         f"ms (one thread; two threads "
         f"{t['BM_Merge100/mlp_rademacher_2threads/real_time']:.1f} ms)",
         "<= 50")
    line("merge_100_jvps_mlp_normal", f"{t['BM_Merge100/mlp_normal']:.1f}",
         "ms", "report")
    line("merge_100_jvps_mlp_rank1_rademacher",
         f"{t['BM_Merge100/mlp_rank1_rademacher']:.1f}", "ms",
         "far less than dense")
    line("merge_100_jvps_mlp_rank1_normal",
         f"{t['BM_Merge100/mlp_rank1_normal']:.1f}", "ms", "report")
    with tempfile.TemporaryDirectory() as tmp:
        # 5. Seed-replay sync: bytes per client per round, up plus down,
        # forward gradients with replay against FedAvg with snapshots.
        fg = federation(os.path.join(ROOT, "configs", "mnist_fg_mlp.yaml"),
                        fg_rounds, [], tmp, "fg")
        fedavg = federation(
            os.path.join(ROOT, "configs", "mnist_fedavg_mlp.yaml"), 1,
            ["dataset.train_limit=6000"], tmp, "fedavg")
        # Means per client per round over the whole run, the join snapshot
        # included, for both (a short FG run carries its join snapshot
        # over few rounds: the ratio grows with the run's length).
        fg_bytes = fg["up_total"] + fg["down_total"]
        fa_bytes = fedavg["up_total"] + fedavg["down_total"]
        line("fedavg_over_fg_replay_bytes_mlp", f"{fa_bytes / fg_bytes:,.0f}",
             f"x ({fa_bytes:,.0f} B vs {fg_bytes:,.0f} B up+down per client "
             f"per round, means over {fg['rounds']} FG rounds, join "
             f"included)", ">= 10,000")
        # 7. Round time with a tiny model and 10 clients on loopback: an
        # upper bound of the coordinator's overhead (it includes the
        # clients' compute and their processes sharing the cores).
        tiny = federation(
            os.path.join(ROOT, "configs", "smoke_tiny.yaml"), tiny_rounds,
            ["clients=10", "tangent.count=1", "estimator=jvp"], tmp, "tiny")
        # 2. Accuracy of rank-one against dense tangents after the same
        # rounds: K = 64 Rademacher tangents per client (projected), mlp,
        # 10 clients; dense passes 0.8 by round 50 in this setting.
        k64 = os.path.join(ROOT, "configs", "mnist_multitangent_k64_mlp.yaml")
        acc_rounds = 2 if args.smoke else (300 if args.full else 100)
        dense = federation(k64, acc_rounds, [], tmp, "dense")
        rank1 = federation(k64, acc_rounds, ["tangent.structure=rank1"], tmp,
                           "rank1")
        line(f"rank1_vs_dense_test_acc_mlp_k64_r{acc_rounds}",
             f"{rank1['acc']:.4f} vs {dense['acc']:.4f}",
             f"(rank-one vs dense; wall {rank1['wall']:.0f} s vs "
             f"{dense['wall']:.0f} s)", "within noise once dense > 0.8")
        line("coordinator_overhead_tiny_10_clients",
             f"{tiny['cpu_median']:.2f}",
             f"ms CPU per round (median over rounds without evaluation; "
             f"round wall time {1000 * tiny['wall'] / tiny['rounds']:.1f} ms "
             f"with the clients' compute, {os.cpu_count()} cores for 11 "
             "processes)", "overhead <= 2 ms")
        # 7. 1,000 logical clients hosted by fedfwd-loadgen processes (own
        # shards, ids, tokens, channels), every one in every round.
        load_rounds = 2 if args.smoke else (50 if args.full else 10)
        load_clients = 40 if args.smoke else 1000
        load_json = os.path.join(tmp, "load.json")
        r = subprocess.run(
            [sys.executable, os.path.join(ROOT, "bench", "load.py"),
             "--clients", str(load_clients), "--rounds", str(load_rounds),
             "--processes", "4", "--delays", "0", "--no-write",
             "--out", os.path.join(tmp, "load"), "--json", load_json],
            capture_output=True, text=True)
        load_target = "1,000 clients in rounds; report rounds/s and memory"
        if r.returncode != 0:
            # Keep the other lines; say why this one has no figure.
            sys.stderr.write(r.stdout[-2000:] + r.stderr[-4000:])
            why = (r.stderr.strip().splitlines() or ["no message"])[-1]
            line(f"logical_clients_{load_clients}", "not measured",
                 f"(bench/load.py exited {r.returncode}: {why})",
                 load_target)
            failures.append("load.py")
        else:
            load = json.load(open(load_json))[0]
            line(f"logical_clients_{load_clients}", f"{load['rps']:.2f}",
                 f"rounds/s ({load_rounds} rounds, every client in every "
                 f"round; p50 round {load['p50']:.0f} ms; coordinator peak "
                 f"RSS {load['server_peak_mib']:.0f} MiB; 4 fedfwd-loadgen "
                 "processes, model tiny)", load_target)
    # 6. Training memory, cnn, batch 256 in one piece.
    batch = 16 if args.smoke else 256
    fg_mem = memory_kib("rules", "cnn", batch)
    ad_mem = memory_kib("jvp", "cnn", batch)
    bp_mem = memory_kib("backprop", "cnn", batch)
    line(f"fg_memory_over_backprop_cnn_b{batch}",
         f"{fg_mem / max(1, bp_mem):.2f}",
         f"x ({fg_mem / 1024:.0f} MiB vs {bp_mem / 1024:.0f} MiB; libtorch "
         f"forward AD {ad_mem / 1024:.0f} MiB = "
         f"{ad_mem / max(1, bp_mem):.2f} x)", "<= 0.5")
    # Said from a detection, not a constant: nvidia-smi lists a GPU or not.
    try:
        smi = subprocess.run(["nvidia-smi", "-L"], capture_output=True,
                             text=True, timeout=20)
        gpus = [g for g in smi.stdout.splitlines() if g.startswith("GPU")]
    except (OSError, subprocess.TimeoutExpired):
        gpus = []
    line("gpu_times_and_bitwise_tangents", "not measured",
         f"({len(gpus)} GPU(s) found by nvidia-smi: {gpus[0]}; the CUDA "
         "build and its timings are ../shared/GPU.md's route, not run by "
         "this script)" if gpus else
         "(no GPU detected: nvidia-smi absent or lists none)",
         "report; tangents equal bit for bit")

    if args.smoke or args.no_write:
        return 1 if failures else 0
    cmd = "bench/run.sh" + (" --full" if args.full else "")
    text = (f"## Performance targets ({datetime.date.today()})\n\n"
            f"`{cmd}` on {platform.node()} ({os.cpu_count()} cores, "
            f"{platform.machine()}), libtorch's threads 1 in the "
            "micro benchmarks:\n\n```\n" + "\n".join(lines) + "\n```\n")
    compare.write_section(text, "run.sh")
    print("written to bench/RESULTS.md")
    if failures:
        print(f"targets.py: failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
