#!/usr/bin/env python3
"""Wire bytes of a federation against the bytes it counts itself.

  sudo python3 bench/wire_bytes.py [CONFIG] [--rounds N] [--out DIR]

Runs `build/bin/fedfwd-run CONFIG` (default configs/mnist_fg_mlp.yaml; TLS
with per-client tokens, as fedfwd-run does by default) for N rounds (default
20) while tcpdump records the TCP headers on the loopback interface, then
sums the TCP payload to and from the coordinator's port: what the clients
and the coordinator really exchanged, TLS records and HTTP/2 framing
included (the IP and TCP headers are not counted). Prints both that and
summary.json's bytes_up_total / bytes_down_total (the serialized messages
the coordinator counts), per client per round, and their ratio.

Needs root (packet capture) and tcpdump (`apt-get install tcpdump`). Other
traffic on the loopback interface is left out by the port filter.
Exits 1 when the run or the capture fails.
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "build", "bin")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("config", nargs="?",
                   default=os.path.join(ROOT, "configs", "mnist_fg_mlp.yaml"))
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--out", help="run folder (default: a temporary one)")
    args = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("wire_bytes.py: packet capture needs root")
    if not shutil.which("tcpdump"):
        sys.exit("wire_bytes.py: tcpdump is not installed "
                 "(apt-get install tcpdump)")
    work = tempfile.mkdtemp(prefix="fedfwd-wire-")
    out = args.out or os.path.join(work, "run")
    pcap = os.path.join(work, "lo.pcap")
    # Headers only (-s 128): the payload length is in the IP header.
    cap = subprocess.Popen(["tcpdump", "-i", "lo", "-s", "128", "-w", pcap,
                            "tcp"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
    time.sleep(1.0)
    if cap.poll() is not None:
        sys.exit("wire_bytes.py: tcpdump did not start: "
                 + cap.stderr.read().decode(errors="replace"))
    run = subprocess.run([os.path.join(BIN, "fedfwd-run"), args.config,
                          "--out", out, "--set", f"rounds={args.rounds}",
                          "--set", "eval_every=1000000"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, errors="replace")
    time.sleep(1.0)
    cap.send_signal(signal.SIGINT)
    cap.wait(timeout=30)
    if run.returncode != 0:
        sys.exit("wire_bytes.py: fedfwd-run failed: " + run.stdout[-2000:])
    # fedfwd-run says "started N clients on 127.0.0.1:PORT".
    m = re.search(r"clients on 127\.0\.0\.1:(\d+)", run.stdout)
    if not m:
        sys.exit("wire_bytes.py: fedfwd-run did not say the coordinator's "
                 "port")
    port = m.group(1)
    # -q: "IP a.b.c.d.P > e.f.g.h.Q: tcp LEN", LEN the TCP payload.
    dump = subprocess.run(["tcpdump", "-r", pcap, "-nn", "-q",
                           f"tcp port {port}"], capture_output=True, text=True)
    up = down = 0
    line_re = re.compile(r"IP \S+\.(\d+) > \S+\.(\d+): tcp (\d+)")
    for line in dump.stdout.splitlines():
        lm = line_re.search(line)
        if not lm:
            continue
        n = int(lm.group(3))
        if lm.group(2) == port:
            up += n
        elif lm.group(1) == port:
            down += n
    with open(os.path.join(out, "summary.json")) as f:
        s = json.load(f)
    clients = s.get("config", {}).get("clients") or s.get("clients")
    rounds = s["rounds"]
    per = clients * rounds
    print(f"config: {args.config}, {clients} clients, {rounds} rounds, TLS")
    print(f"counted (summary.json): up {s['bytes_up_total'] / per:,.0f} B, "
          f"down {s['bytes_down_total'] / per:,.0f} B per client per round")
    print(f"wire (TCP payload, TLS and HTTP/2 included): up {up / per:,.0f} B, "
          f"down {down / per:,.0f} B per client per round")
    print(f"wire / counted: up {up / max(1, s['bytes_up_total']):.2f}x, "
          f"down {down / max(1, s['bytes_down_total']):.2f}x")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
