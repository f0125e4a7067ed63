#!/usr/bin/env bash
# Fault test: a federation across separate network stacks. The coordinator
# and three client daemons each run in their own Linux network namespace
# with their own address (10.77.0.0/24), joined by veth pairs through a
# bridge that lives in a namespace of its own (the host's network is not
# touched). TLS uses certificates made by scripts/make-certs.sh for the
# coordinator's address. Clients reach the coordinator through
# scripts/delay_relay.py: 50 ms each way, and 1 % of chunks held back 200 ms more
# (the stall a lost segment causes; this kernel has no netem). Mid-run one
# client's link is cut (ip link set down): the coordinator drops it and the
# federation goes on with two; the link comes back and the client rejoins by
# itself. Exit 0 pass, 1 fail, 77 skip (no `ip netns`, not root).
#   tests/fault/netns_federation.sh BIN_DIR
set -euo pipefail

BIN="${1:?usage: netns_federation.sh BIN_DIR}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
MNIST="$ROOT/data/mnist"
TAG="ffw$$"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/fedfwd-netns.XXXXXX")"
NS=("$TAG-br" "$TAG-co" "$TAG-c0" "$TAG-c1" "$TAG-c2")
PIDS=()

log() { echo "[netns] $*"; }
fail() {
  echo "[netns] FAIL: $*" >&2
  for f in "$WORK"/*.log; do [[ -f "$f" ]] && { echo "---- $f" >&2; tail -25 "$f" >&2; }; done
  exit 1
}
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for ns in "${NS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

if [[ "$(id -u)" -ne 0 ]]; then echo "SKIP: needs root for ip netns"; exit 77; fi
if ! command -v ip >/dev/null; then echo "SKIP: no ip command (iproute2)"; exit 77; fi
if ! err="$(ip netns add "$TAG-br" 2>&1)"; then
  echo "SKIP: ip netns add failed: $err"; exit 77
fi
[[ -f "$MNIST/train-images-idx3-ubyte" ]] || fail "real MNIST missing in $MNIST (scripts/setup.sh)"

# Topology: the bridge namespace holds br0 and one veth end per node.
ip -n "$TAG-br" link add br0 type bridge
ip -n "$TAG-br" link set br0 up
node() {  # node NAMESPACE INDEX ADDRESS
  local ns="$1" i="$2" addr="$3"
  [[ "$ns" == "$TAG-br" ]] || ip netns list | grep -qw "$ns" || ip netns add "$ns"
  ip link add "v$TAG$i" type veth peer name "e$TAG$i"
  ip link set "v$TAG$i" netns "$ns"
  ip link set "e$TAG$i" netns "$TAG-br"
  ip -n "$TAG-br" link set "e$TAG$i" master br0 up
  ip -n "$ns" addr add "$addr/24" dev "v$TAG$i"
  ip -n "$ns" link set "v$TAG$i" up
  ip -n "$ns" link set lo up
}
node "$TAG-co" 9 10.77.0.1
for i in 0 1 2; do node "$TAG-c$i" "$i" "10.77.0.$((i + 10))"; done

bash "$ROOT/scripts/make-certs.sh" "$WORK/pki" --server-name 10.77.0.1 --clients 3 \
  >"$WORK/make-certs.out" 2>&1 || fail "make-certs.sh: $(cat "$WORK/make-certs.out")"

cat >"$WORK/config.yaml" <<YAML
model: tiny
dataset:
  name: mnist
  data_dir: $MNIST
  train_limit: 3000
  test_limit: 500
clients: 3
rounds: 100
seed: 4
merge: average
lr: 0.05
clip_jvp: 1.0
batch_size: 128
eval_every: 10
min_clients: 1
timeouts: {client_s: 4, round_s: 20, join_s: 120}
YAML

ip netns exec "$TAG-co" "$BIN/fedfwd-server" --config "$WORK/config.yaml" \
  --listen 127.0.0.1:50051 --out "$WORK/out" --tls-cert "$WORK/pki/server.pem" \
  --tls-key "$WORK/pki/server.key" --tls-ca "$WORK/pki/ca.pem" \
  --credentials "$WORK/pki/credentials" >"$WORK/server.log" 2>&1 &
SERVER=$!; PIDS+=("$SERVER")
ip netns exec "$TAG-co" python3 "$ROOT/scripts/delay_relay.py" \
  10.77.0.1:50052 127.0.0.1:50051 --delay-ms 50 --stall-prob 0.01 --stall-ms 200 \
  >"$WORK/relay.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 100); do grep -q "relay listening" "$WORK/relay.log" && break; sleep 0.1; done
grep -q "relay listening" "$WORK/relay.log" || fail "relay did not start"

for i in 0 1 2; do
  ip netns exec "$TAG-c$i" "$BIN/fedfwd-client" --server 10.77.0.1:50052 \
    --data "$MNIST" --shard "$i" --num-shards 3 --threads 1 \
    --tls-ca "$WORK/pki/ca.pem" --tls-cert "$WORK/pki/clients/client-$i.pem" \
    --tls-key "$WORK/pki/clients/client-$i.key" \
    --token-file "$WORK/pki/clients/client-$i.token" >"$WORK/client-$i.log" 2>&1 &
  PIDS+=("$!")
done

rows() { [[ -f "$WORK/out/metrics.jsonl" ]] && wc -l <"$WORK/out/metrics.jsonl" || echo 0; }
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local t="$1" what="$2"; shift 2
  for _ in $(seq $((t * 10))); do "$@" && return 0; sleep 0.1; done
  fail "timed out after ${t}s waiting for: $what"
}
has_rows() { (($(rows) >= $1)); }
wait_for 120 "10 rounds over the delayed links" has_rows 11
log "10 rounds done through the relay; cutting client 2's link"

ip -n "$TAG-br" link set "e${TAG}2" down
wait_for 60 "client 2 dropped" grep -q "shard 2) dropped" "$WORK/server.log"
cut_rows=$(rows)
wait_for 60 "rounds going on without client 2" has_rows $((cut_rows + 3))
log "coordinator dropped client 2 and went on; restoring the link"
ip -n "$TAG-br" link set "e${TAG}2" up
rejoined() { (($(grep -c "joined (.*), shard 2;" "$WORK/server.log") >= 2)); }
wait_for 90 "client 2 rejoining by itself" rejoined
log "client 2 rejoined"

for _ in $(seq 3000); do kill -0 "$SERVER" 2>/dev/null || break; sleep 0.1; done
kill -0 "$SERVER" 2>/dev/null && fail "the run did not finish within 300 s"
wait "$SERVER" || fail "fedfwd-server exited with $?"

python3 - "$WORK/out/metrics.jsonl" "$cut_rows" <<'PY' || fail "metrics check"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
cut = int(sys.argv[2])  # rounds done when the link went down
assert [r["round"] for r in rows] == list(range(101)), "rounds are not 0..100"
two = [r["round"] for r in rows[1:] if r["clients"] == 2]
assert [t for t in two if t >= cut], "no round merged 2 clients while the link was down"
assert rows[-1]["clients"] == 3, f"last round merged {rows[-1]['clients']} clients"
last2 = max(two)
assert all(r["clients"] == 3 for r in rows[last2 + 1:]), "client 2 did not stay back"
print(f"[netns] rounds 0..100; link cut after round {cut - 1}; rounds "
      f"with 2 clients: {two}; 3 clients from round {last2 + 1}; "
      f"final test_acc {rows[-1]['test_acc']}")
PY
for i in 0 1 2; do
  pid=${PIDS[$((i + 2))]}
  for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  wait "$pid" || fail "client $i exited with $?"
done
log "PASS"
