#!/usr/bin/env python3
"""Coordinator load: rounds per second and round latency with many clients.

Runs one fedfwd-server and --clients real client daemons hosted by
fedfwd-loadgen (--processes processes; each logical client has its own gRPC
channel, TCP connection, TLS session and token) for --rounds forward-gradient
rounds, once per added one-way delay in --delays. A delay above 0 puts
scripts/delay_relay.py between the clients and the coordinator (the kernel here
has no netem), adding that delay to every chunk in each direction. Round
latency is the difference of consecutive `wall_s` in metrics.jsonl (the
coordinator's clock from opening a round to writing its row; the last round
also evaluates the model on the test images). Writes a table into its own
section of bench/RESULTS.md.

  python3 bench/load.py [--clients 200] [--rounds 50] [--processes 4]
                        [--delays 0,50] [--bin build/bin] [--out DIR]
                        [--no-write]
"""
import argparse
import datetime
import hashlib
import json
import os
import platform
import secrets as secrets_mod
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (write_section, ROOT)

ROOT = compare.ROOT
MNIST = os.path.join(ROOT, "data", "mnist")


def config_yaml(data, clients, rounds, seed):
    # The same federation as tests/load/load_test.cc: 10 MNIST images per
    # client, minibatches of 8, `tiny` (logistic regression), so the work
    # per client is small and the figures are the coordinator's.
    return f"""model: tiny
dataset:
  name: mnist
  data_dir: {data}
clients: {clients}
min_clients: {clients}
rounds: {rounds}
seed: {seed}
estimator: jvp
merge: weighted
tangent:
  distribution: rademacher
lr: 0.01
clip_jvp: 1.0
batch_size: 8
eval_every: 1000000
timeouts:
  round_s: 120
  client_s: 30
  join_s: 300
"""


def truncated_mnist(out, train, test):
    """The first `train` / `test` MNIST images and labels as IDX files in
    <out>/mnist. Each daemon reads its dataset files whole: 200 of them
    reading the 47 MB training file would measure the disk, not the
    coordinator."""
    data = os.path.join(out, "mnist")
    os.makedirs(data, exist_ok=True)
    for prefix, n in (("train", train), ("t10k", test)):
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
            name = f"{prefix}-{kind}"
            with open(os.path.join(MNIST, name), "rb") as f:
                magic = f.read(4)
                dims = magic[3]
                header = bytearray(f.read(4 * dims))
                record = 1
                for d in range(1, dims):
                    record *= int.from_bytes(header[4 * d:4 * d + 4], "big")
                body = f.read(record * n)
            if magic[:3] != b"\0\0\x08" or len(body) != record * n:
                sys.exit(f"load.py: {MNIST}/{name} is not an IDX file with "
                         f"{n} records; run scripts/setup.sh")
            header[0:4] = n.to_bytes(4, "big")
            with open(os.path.join(data, name), "wb") as f:
                f.write(magic + bytes(header) + body)
    return data


def percentile(values, q):
    """Linear interpolation between closest ranks (numpy's default)."""
    v = sorted(values)
    if len(v) == 1:
        return v[0]
    pos = (len(v) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def wait_for_line(proc, prefix, timeout, log):
    """Reads proc's stdout until a line starting with `prefix`; copies every
    line to `log` and keeps draining in a thread afterwards."""
    found = {}
    ready = threading.Event()

    def drain():
        for line in proc.stdout:
            log.write(line)
            log.flush()
            if not ready.is_set() and prefix in line:
                found["line"] = line.strip()
                ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    if not ready.wait(timeout) or "line" not in found:
        proc.kill()
        sys.exit(f"load.py: no '{prefix}' line from {proc.args[0]} within "
                 f"{timeout} s; see {log.name}")
    return found["line"].rsplit(":", 1)[1]


def make_secrets(out, clients):
    """A throwaway CA, server and client certificate (scripts/make-certs.sh)
    and one token per client. All clients present client-0's certificate,
    as fedfwd-run's clients share one; each has its own token, which is what
    the coordinator binds a client to. (make-certs.sh would also make 200
    certificates: minutes of openssl on this machine.)"""
    secrets = os.path.join(out, "secrets")
    shutil.rmtree(secrets, ignore_errors=True)
    cmd = [os.path.join(ROOT, "scripts", "make-certs.sh"), secrets,
           "--server-name", "localhost", "--server-name", "127.0.0.1",
           "--clients", "1", "--days", "2"]
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       text=True)
    if r.returncode != 0:
        sys.exit(f"load.py: {' '.join(cmd)} failed: {r.stderr}")
    with open(os.path.join(secrets, "credentials"), "a") as creds:
        for i in range(1, clients):
            token = secrets_mod.token_hex(32)
            path = os.path.join(secrets, "clients", f"client-{i}.token")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(token + "\n")
            digest = hashlib.sha256(token.encode()).hexdigest()
            creds.write(f"client client-{i} {digest}\n")
    return secrets


def run_once(args, secrets, data, delay_ms):
    out = os.path.join(args.out, f"delay-{delay_ms:g}ms")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    config = os.path.join(out, "config.yaml")
    with open(config, "w") as f:
        f.write(config_yaml(data, args.clients, args.rounds, args.seed))
    procs = []
    logs = []

    def log(name):
        f = open(os.path.join(out, name), "w")
        logs.append(f)
        return f

    try:
        server_log = log("server.log")
        server = subprocess.Popen(
            [os.path.join(args.bin, "fedfwd-server"), "--config", config,
             "--listen", "127.0.0.1:0", "--out", os.path.join(out, "run"),
             "--tls-cert", os.path.join(secrets, "server.pem"),
             "--tls-key", os.path.join(secrets, "server.key"),
             "--tls-ca", os.path.join(secrets, "ca.pem"),
             "--credentials", os.path.join(secrets, "credentials")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(server)
        peak = {"kib": 0}

        def sample_peak():  # the coordinator's VmHWM until it exits
            path = f"/proc/{server.pid}/status"
            while server.poll() is None:
                try:
                    with open(path) as f:
                        for line in f:
                            if line.startswith("VmHWM:"):
                                peak["kib"] = max(peak["kib"],
                                                  int(line.split()[1]))
                except OSError:
                    break
                time.sleep(0.2)

        threading.Thread(target=sample_peak, daemon=True).start()
        port = wait_for_line(server, "fedfwd-server listening on", 60,
                             server_log)
        target = f"127.0.0.1:{port}"
        if delay_ms > 0:
            relay = subprocess.Popen(
                [sys.executable, os.path.join(ROOT, "scripts", "delay_relay.py"),
                 "127.0.0.1:0", target, "--delay-ms", str(delay_ms)],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            procs.append(relay)
            target = "127.0.0.1:" + wait_for_line(
                relay, "delay-relay listening on", 30, log("relay.log"))
        per = args.clients // args.processes
        gens = []
        for p in range(args.processes):
            first = p * per
            n = per if p < args.processes - 1 else args.clients - first
            cmd = [os.path.join(args.bin, "fedfwd-loadgen"),
                   "--server", target, "--data", data,
                   "--clients", str(n), "--first-shard", str(first),
                   "--num-shards", str(args.clients), "--threads", "1",
                   "--token-dir", os.path.join(secrets, "clients"),
                   "--tls-ca", os.path.join(secrets, "ca.pem"),
                   "--tls-cert", os.path.join(secrets, "clients",
                                              "client-0.pem"),
                   "--tls-key", os.path.join(secrets, "clients",
                                             "client-0.key"),
                   "--tls-server-name", "localhost"]
            g = subprocess.Popen(cmd, stdout=log(f"loadgen-{p}.log"),
                                 stderr=subprocess.STDOUT)
            procs.append(g)
            gens.append(g)
        try:
            code = server.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            sys.exit(f"load.py: the run did not finish within "
                     f"{args.timeout} s; see {out}")
        if code != 0:
            with open(server_log.name, errors="replace") as f:
                tail = "".join(f.readlines()[-15:])
            sys.exit(f"{tail}load.py: fedfwd-server exited {code}; see "
                     f"{server_log.name}")
        for p, g in enumerate(gens):
            gc = g.wait(timeout=60)
            if gc != 0:
                sys.exit(f"load.py: fedfwd-loadgen {p} exited {gc}; see "
                         f"{out}/loadgen-{p}.log")
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        for f in logs:
            f.close()

    with open(os.path.join(out, "run", "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    rows = [r for r in rows if r["round"] >= 1]
    if len(rows) != args.rounds:
        sys.exit(f"load.py: {len(rows)} rounds in metrics.jsonl, expected "
                 f"{args.rounds}; see {out}")
    short = [r["round"] for r in rows if r["clients"] != args.clients]
    if short:
        sys.exit(f"load.py: rounds {short} merged fewer than {args.clients} "
                 f"clients; see {out}")
    with open(server_log.name) as f:
        for line in f:
            if "deadline of" in line or "dropped:" in line:
                sys.exit(f"load.py: {line.strip()} (see {server_log.name})")
    walls = [r["wall_s"] for r in rows]
    lat = [b - a for a, b in zip([0.0] + walls[:-1], walls)]
    return {"delay": delay_ms, "rps": len(rows) / walls[-1],
            "p50": percentile(lat, 50) * 1000, "p99": percentile(lat, 99) * 1000,
            "max": max(lat) * 1000, "wall": walls[-1],
            "server_peak_mib": peak["kib"] / 1024}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--processes", type=int, default=4,
                   help="fedfwd-loadgen processes hosting the clients")
    p.add_argument("--delays", default="0,50",
                   help="comma-separated one-way delays to add (ms)")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"),
                   help="folder holding fedfwd-server and fedfwd-loadgen")
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "load"))
    p.add_argument("--timeout", type=float, default=900,
                   help="seconds one run may take")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args()
    if args.clients < 1 or args.rounds < 1 or not (
            1 <= args.processes <= args.clients):
        sys.exit("load.py: need clients >= 1, rounds >= 1 and "
                 "1 <= processes <= clients")
    for exe in ("fedfwd-server", "fedfwd-loadgen"):
        if not os.access(os.path.join(args.bin, exe), os.X_OK):
            sys.exit(f"load.py: {args.bin}/{exe} not found; build it first")
    delays = [float(d) for d in args.delays.split(",")]
    os.makedirs(args.out, exist_ok=True)
    secrets = make_secrets(args.out, args.clients)
    data = truncated_mnist(args.out, 10 * args.clients, 500)
    results = []
    for d in delays:
        print(f"{args.clients} clients x {args.rounds} rounds, +{d:g} ms "
              f"one-way ...", flush=True)
        start = time.time()
        r = run_once(args, secrets, data, d)
        print(f"    {r['rps']:.2f} rounds/s, p50 {r['p50']:.0f} ms, p99 "
              f"{r['p99']:.0f} ms, coordinator peak RSS "
              f"{r['server_peak_mib']:.0f} MiB ({time.time() - start:.0f} s "
              "with setup)", flush=True)
        results.append(r)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f)
    cmd = "python3 bench/load.py"
    if args.clients != 200 or args.rounds != 50 or args.processes != 4:
        cmd += (f" --clients {args.clients} --rounds {args.rounds} "
                f"--processes {args.processes}")
    if os.path.abspath(args.bin) != os.path.join(ROOT, "build", "bin"):
        cmd += f" --bin {os.path.relpath(args.bin, ROOT)}"
    if args.delays != "0,50":
        cmd += f" --delays {args.delays}"
    lines = [
        f"## Coordinator load: {args.clients} clients, {args.rounds} rounds "
        f"({datetime.date.today().isoformat()})",
        "",
        f"`{cmd}`",
        "",
        f"Machine: {platform.node()}, {os.cpu_count()} cores (coordinator, "
        f"clients and relay share them). One fedfwd-server; {args.clients} "
        f"real client daemons in {args.processes} fedfwd-loadgen processes, "
        f"each with its own gRPC channel, TCP connection, TLS session and "
        f"token. Forward gradients (`jvp`, one tangent), model `tiny`, 10 "
        f"MNIST images per client, batch 8, weighted merge; every round "
        f"merged all {args.clients} clients. Latency: differences of "
        f"consecutive `wall_s` in metrics.jsonl (dispatch, model download, "
        f"JVP, upload, merge; the last round also evaluates 500 test "
        f"images). Delay: scripts/delay_relay.py between clients and "
        f"coordinator, adding the delay to each chunk in each direction.",
        "",
        "| added one-way delay | rounds/s | p50 round latency | p99 round "
        "latency | max | training wall | coordinator peak RSS |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r['delay']:g} ms | {r['rps']:.2f} | "
                     f"{r['p50']:.0f} ms | {r['p99']:.0f} ms | "
                     f"{r['max']:.0f} ms | {r['wall']:.1f} s | "
                     f"{r['server_peak_mib']:.0f} MiB |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        compare.write_section(text, "load.py")
        print("written to bench/RESULTS.md")


if __name__ == "__main__":
    main()
