#!/usr/bin/env python3
"""Final-model checksums of short deterministic runs, one per federated
estimator family (the restructuring issue's before/after check).

Each run is fedfwd-server CONFIG --set ... on real MNIST (tiny model, 3
clients) with the clients started one at a time, each joining before the
next starts, so client i + 1 always holds shard i (fedfwd-run starts them
together, and which client id gets which shard, and so which tangents meet
which data, then depends on timing). The script prints the XXH64 of the
final model's parameters (final_model.bin's header `checksum`) and the
final accuracy. Two builds that differ only by behaviour-preserving changes
print the same lines (with the same OpenBLAS threads: --threads 1 here).

  python3 bench/determinism.py [--bin build/bin] [--out DIR]
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

RUNS = [
    ("jvp naive (smoke_tiny)", "configs/smoke_tiny.yaml", []),
    ("fd", "configs/smoke_tiny.yaml", ["estimator=fd", "rounds=20"]),
    ("projected K=4 weighted", "configs/smoke_tiny.yaml",
     ["estimator=projected", "tangent.count=4", "merge=weighted",
      "rounds=20"]),
    ("jvp rank1_shared K=8, momentum", "configs/smoke_tiny.yaml",
     ["tangent.structure=rank1_shared", "tangent.count=8", "momentum=0.9",
      "rounds=20"]),
    ("fedsgd", "configs/smoke_tiny.yaml",
     ["estimator=fedsgd", "merge=weighted", "clip_jvp=0", "rounds=10"]),
    ("fedavg", "configs/smoke_tiny.yaml",
     ["estimator=fedavg", "merge=weighted", "clip_jvp=0", "rounds=3",
      "batch_size=64"]),
]


def header(path):
    with open(path, "rb") as f:
        magic = f.read(8)
        if magic != b"FFWDMDL1":
            raise SystemExit(f"{path}: not a model file")
        (n,) = struct.unpack("<I", f.read(4))
        return json.loads(f.read(n))


def wait_for(path, needle, proc, timeout=120):
    import re
    import time
    end = time.time() + timeout
    while time.time() < end:
        text = open(path).read() if os.path.exists(path) else ""
        m = re.search(needle, text)
        if m:
            return m
        if proc.poll() is not None:
            return None
        time.sleep(0.1)
    return None


def run_one(bindir, config, sets, folder):
    os.makedirs(folder, exist_ok=True)
    server_log = os.path.join(folder, "server.log")
    cmd = [os.path.join(bindir, "fedfwd-server"), "--config", config,
           "--listen", "127.0.0.1:0", "--out", folder, "--insecure"]
    for s in sets:
        cmd += ["--set", s]
    server = subprocess.Popen(cmd, stdout=open(server_log, "w"),
                              stderr=subprocess.STDOUT)
    m = wait_for(server_log, r"listening on (127\.0\.0\.1:[0-9]+)", server)
    if not m:
        server.kill()
        return f"server did not start: {open(server_log).read()[-1000:]}"
    clients = []
    for i in range(3):
        log = os.path.join(folder, f"client-{i}.log")
        clients.append(subprocess.Popen(
            [os.path.join(bindir, "fedfwd-client"), "--server", m.group(1),
             "--data", "data/mnist", "--shard", str(i), "--num-shards", "3",
             "--threads", "1", "--insecure"],
            stdout=open(log, "w"), stderr=subprocess.STDOUT))
        if not wait_for(server_log, f"client {i + 1} joined", server):
            server.kill()
            for c in clients:
                c.kill()
            return f"client {i} did not join: {open(server_log).read()[-1000:]}"
    code = server.wait(timeout=900)
    for c in clients:
        c.wait(timeout=60)
    if code != 0:
        return f"server exit {code}: {open(server_log).read()[-1000:]}"
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default="build/bin")
    ap.add_argument("--out", default=None,
                    help="folder for the runs (default: a temporary one)")
    args = ap.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="fedfwd-determinism-")
    failed = 0
    for i, (name, config, sets) in enumerate(RUNS):
        folder = os.path.join(out, f"run{i}")
        error = run_one(args.bin, config, sets, folder)
        if error:
            print(f"{name}: FAILED ({error})")
            failed += 1
            continue
        h = header(os.path.join(folder, "final_model.bin"))
        print(f"{name}: checksum {h['checksum']} test_acc {h['test_acc']:.4f} "
              f"round {h['round']}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
