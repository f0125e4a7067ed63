#!/usr/bin/env bash
# Follows deploy/README.md's "Deploy on separate machines" on loopback: the
# commands the systemd units run (their ExecStart= lines expanded with the
# shipped env files, /etc/fedfwd, /var/lib/fedfwd, /run and /usr/local/bin
# pointed into a scratch folder), certificates from scripts/make-certs.sh,
# a coordinator "machine" and a client "machine" running two shards under
# one identity, on real MNIST. Checks, in order:
#   1. fedfwd-ctl status (ops certificate + status.token) answers;
#   2. run-1 (5 rounds) ends with exit 0, every round merged 2 clients;
#      the --stay clients outlive it and their health files pass the check;
#   3. the same unit started again refuses to overwrite run-1 (exit 2);
#   4. FEDFWD_RUN=run-2: the waiting clients join the next run by themselves;
#   5. run-3: the coordinator SIGKILLed mid-run and started again by the same
#      command resumes (fedfwd-coordinator-start adds --resume); rounds
#      0..N each appear once in metrics.jsonl;
#   6. run-4: deleting the client identity's line from the credentials file
#      stops both clients; SIGTERM then stops the coordinator (summary
#      "interrupted").
# Exit 0 pass, 1 fail, 77 skip (programs not built).
#   tests/deploy/units_smoke.sh BIN_DIR
set -euo pipefail
TEST_NAME=units_smoke
# shellcheck source=tests/deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BIN="${1:?usage: units_smoke.sh BIN_DIR}"
[[ -d "$BIN" ]] || skip "$BIN: no such folder (not built)"
BIN="$(cd "$BIN" && pwd)"
for p in fedfwd-server fedfwd-client fedfwd-ctl; do
  [[ -x "$BIN/$p" ]] || skip "$BIN/$p not built"
done
# The units' command lines rely on these: a flag that vanished is a failure.
"$BIN/fedfwd-client" --help | grep -q -- '--stay' || fail "fedfwd-client --help lists no --stay"
"$BIN/fedfwd-server" --help | grep -q -- '--set' || fail "fedfwd-server --help lists no --set"
MNIST="$DEPLOY_ROOT/data/mnist"
[[ -f "$MNIST/train-images-idx3-ubyte" ]] || fail "real MNIST missing in $MNIST (scripts/setup.sh)"
UNITS="$DEPLOY_ROOT/deploy/systemd"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/fedfwd-units-smoke.XXXXXX")"
CO_PID=""
CL_PIDS=()
cleanup() {
  local p
  for p in "${CL_PIDS[@]}" $CO_PID; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
dump_logs() {
  local f
  for f in "$WORK"/*.log; do
    [[ -f "$f" ]] && { echo "---- $f" >&2; tail -n 30 "$f" >&2; }
  done
}
die() { dump_logs; fail "$*"; }
alive() { kill -0 "$1" 2>/dev/null; }

# ---- the two "machines" ----
CO="$WORK/coord"    # stands for / on the coordinator's machine
CL="$WORK/client"   # stands for / on the client's machine
mkdir -p "$WORK/bin" "$CO/etc/fedfwd/pki" "$CO/var/lib/fedfwd" \
  "$CL/etc/fedfwd/pki" "$CL/run/fedfwd-client-0" "$CL/run/fedfwd-client-1" "$WORK/ops"
ln -s "$BIN/fedfwd-server" "$BIN/fedfwd-client" "$BIN/fedfwd-ctl" "$WORK/bin/"
ln -s "$DEPLOY_ROOT/deploy/fedfwd-coordinator-start" "$WORK/bin/"

# Guide step 2: certificates on the coordinator's machine; the ops
# certificate opens TLS for fedfwd-ctl, its token is not admitted.
bash "$DEPLOY_ROOT/scripts/make-certs.sh" "$WORK/pki" --server-name localhost \
  --client client-0 --client ops >"$WORK/make-certs.log" 2>&1 ||
  die "make-certs.sh failed"
sed -i '/^client ops /d' "$WORK/pki/credentials"
cp "$WORK/pki/"{server.pem,server.key,ca.pem,credentials} "$CO/etc/fedfwd/pki/"
cp "$WORK/pki/ca.pem" "$WORK/pki/clients/client-0."{pem,key,token} "$CL/etc/fedfwd/pki/"
cp "$WORK/pki/ca.pem" "$WORK/pki/status.token" "$WORK/pki/clients/ops."{pem,key} "$WORK/ops/"

PORT="$(free_port)"
cat >"$CO/etc/fedfwd/run.yaml" <<YAML
model: tiny
dataset:
  name: mnist
  data_dir: $MNIST
  train_limit: 3000
  test_limit: 1000
clients: 2
rounds: 5
seed: 5
merge: average
lr: 0.05
clip_jvp: 1.0
batch_size: 64
eval_every: 5
timeouts: {client_s: 5, round_s: 20, join_s: 60}
YAML
set_env() {  # FILE KEY VALUE
  grep -q "^$2=" "$1" || fail "$1 has no $2= line"
  sed -i "s|^$2=.*|$2=$3|" "$1"
}
cp "$UNITS/coordinator.env" "$CO/etc/fedfwd/coordinator.env"
set_env "$CO/etc/fedfwd/coordinator.env" FEDFWD_CONFIG /etc/fedfwd/run.yaml
set_env "$CO/etc/fedfwd/coordinator.env" FEDFWD_LISTEN "127.0.0.1:$PORT"
set_env "$CO/etc/fedfwd/coordinator.env" FEDFWD_THREADS 1
cp "$UNITS/client.env" "$CL/etc/fedfwd/client.env"
set_env "$CL/etc/fedfwd/client.env" FEDFWD_SERVER "localhost:$PORT"
set_env "$CL/etc/fedfwd/client.env" FEDFWD_DATA_DIR "$MNIST"
set_env "$CL/etc/fedfwd/client.env" FEDFWD_NUM_SHARDS 2
set_env "$CL/etc/fedfwd/client.env" FEDFWD_CLIENT_NAME client-0

# The unit's command line, with the machine's root folder in front of the
# paths systemd would give it.
command_of() {  # UNIT ENV_FILE INSTANCE ROOT
  local arg
  while IFS= read -r arg; do
    arg="${arg/#\/usr\/local\/bin\//$WORK/bin/}"
    arg="${arg/#\/etc\/fedfwd/$4/etc/fedfwd}"
    arg="${arg/#\/var\/lib\/fedfwd/$4/var/lib/fedfwd}"
    arg="${arg/#\/run\//$4/run/}"
    printf '%s\n' "$arg"
  done < <(expand_exec_start "$1" "$2" "$3")
}
# The coordinator's env file names the config by its /etc path too.
start_coordinator() {
  local args
  mapfile -t args < <(command_of "$UNITS/fedfwd-coordinator.service" \
    "$CO/etc/fedfwd/coordinator.env" "" "$CO")
  for ((i = 0; i < ${#args[@]}; i++)); do
    [[ "${args[i]}" == /etc/fedfwd/* ]] && args[i]="$CO${args[i]}"
  done
  "${args[@]}" >>"$WORK/coordinator.log" 2>&1 </dev/null &
  CO_PID=$!
}
start_client() {  # SHARD
  local args
  mapfile -t args < <(command_of "$UNITS/fedfwd-client@.service" \
    "$CL/etc/fedfwd/client.env" "$1" "$CL")
  "${args[@]}" >>"$WORK/client-$1.log" 2>&1 </dev/null &
  CL_PIDS+=($!)
}
wait_exit() {  # PID SECONDS -> sets rc to the exit status; fails on timeout
  local pid="$1" deadline=$((SECONDS + $2))
  while alive "$pid"; do
    ((SECONDS < deadline)) || die "pid $pid still running after $2 s"
    sleep 0.2
  done
  rc=0
  wait "$pid" || rc=$?
}
ctl_status() {
  "$BIN/fedfwd-ctl" status --server "localhost:$PORT" --tls-ca "$WORK/ops/ca.pem" \
    --tls-cert "$WORK/ops/ops.pem" --tls-key "$WORK/ops/ops.key" \
    --token-file "$WORK/ops/status.token"
}
# Prints "ROWS FIRST LAST MIN_CLIENTS DUPLICATES" of a metrics.jsonl
# (MIN_CLIENTS over rounds >= 1).
metrics_summary() {
  python3 - "$1" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rounds = [r["round"] for r in rows]
merged = [r["clients"] for r in rows if r["round"] >= 1]
print(len(rows), min(rounds), max(rounds), min(merged) if merged else 0,
      len(rounds) - len(set(rounds)))
PY
}
last_round() {  # METRICS -> the last round written, or -1 (no process: polled)
  local line=""
  [[ -s "$1" ]] && line="$(tail -n 1 "$1")"
  if [[ "$line" =~ \"round\":[[:space:]]*([0-9]+) ]]; then
    echo "${BASH_REMATCH[1]}"
  else
    echo -1
  fi
}
STATE="$CO/var/lib/fedfwd"

# ---- guide step 3: the coordinator; step 5: watch it ----
start_coordinator
ok=0
for _ in $(seq 1 300); do
  if ctl_status >"$WORK/ctl.out" 2>&1; then ok=1; break; fi
  alive "$CO_PID" || die "the coordinator exited before answering fedfwd-ctl status"
  sleep 0.2
done
((ok)) || die "fedfwd-ctl status did not answer within 60 s: $(cat "$WORK/ctl.out")"
say "fedfwd-ctl status answers (ops certificate, status token)"

# ---- guide step 4: two shards on the client machine, one identity ----
start_client 0
start_client 1
wait_exit "$CO_PID" 180
[[ "$rc" == 0 ]] || die "run-1: coordinator exit $rc"
read -r n first last minc dup < <(metrics_summary "$STATE/run-1/metrics.jsonl")
[[ "$first" == 0 && "$last" == 5 && "$dup" == 0 && "$minc" == 2 ]] ||
  die "run-1 metrics: rows $n, rounds $first..$last, min clients $minc, duplicates $dup"
[[ -f "$STATE/run-1/summary.json" ]] || die "run-1: no summary.json"
say "run-1: 5 rounds, 2 clients each"

sleep 2
for i in 0 1; do
  alive "${CL_PIDS[i]}" || die "client $i (--stay) exited after the run"
  f="$CL/run/fedfwd-client-$i/health"
  [[ -f "$f" ]] || die "client $i wrote no health file $f"
  test $(($(date +%s) - $(cat "$f"))) -lt 60 || die "client $i health file is stale"
done
say "the --stay clients wait for the next run; health files are fresh"

# ---- the same unit again: run-1 has ended, nothing is overwritten ----
before="$(sha256sum "$STATE/run-1/metrics.jsonl")"
start_coordinator
wait_exit "$CO_PID" 60
[[ "$rc" == 2 ]] || die "restart on a finished run: exit $rc, expected 2"
grep -q "holds a run that finished" "$WORK/coordinator.log" ||
  die "restart on a finished run: no explanation in the log"
[[ "$(sha256sum "$STATE/run-1/metrics.jsonl")" == "$before" ]] ||
  die "restart on a finished run changed its metrics.jsonl"
say "a finished run is not overwritten (exit 2, says why)"

# ---- guide step 6: the next run; the waiting clients join it ----
set_env "$CO/etc/fedfwd/coordinator.env" FEDFWD_RUN run-2
start_coordinator
wait_exit "$CO_PID" 180
[[ "$rc" == 0 ]] || die "run-2: coordinator exit $rc"
read -r n first last minc dup < <(metrics_summary "$STATE/run-2/metrics.jsonl")
[[ "$last" == 5 && "$minc" == 2 ]] || die "run-2 metrics: rounds ..$last, min clients $minc"
say "run-2: the same client daemons joined the next run"

# ---- a crash mid-run: the unit's restart resumes ----
set_env "$CO/etc/fedfwd/coordinator.env" FEDFWD_RUN run-3
set_env "$CO/etc/fedfwd/coordinator.env" FEDFWD_SERVER_ARGS \
  "--set rounds=200 --set eval_every=100 --checkpoint-min-interval 0"
start_coordinator
deadline=$((SECONDS + 120))
while (($(last_round "$STATE/run-3/metrics.jsonl") < 10)); do
  ((SECONDS < deadline)) || die "run-3 did not reach round 10 in 120 s"
  alive "$CO_PID" || die "run-3 ended before round 10"
  sleep 0.02
done
kill -9 "$CO_PID" 2>/dev/null || die "run-3 ended before it could be killed"
wait "$CO_PID" 2>/dev/null || true
killed_at="$(last_round "$STATE/run-3/metrics.jsonl")"
((killed_at < 200)) || die "run-3 finished before it could be killed"
start_coordinator
wait_exit "$CO_PID" 300
[[ "$rc" == 0 ]] || die "run-3 after the restart: coordinator exit $rc"
grep -q "resuming" "$WORK/coordinator.log" || die "run-3: the restart did not resume"
read -r n first last minc dup < <(metrics_summary "$STATE/run-3/metrics.jsonl")
[[ "$n" == 201 && "$first" == 0 && "$last" == 200 && "$dup" == 0 ]] ||
  die "run-3 metrics: rows $n, rounds $first..$last, duplicates $dup"
say "run-3: SIGKILLed at round $killed_at, restarted by the same command, resumed to 200"

# ---- guide step 7: revoke the client identity ----
set_env "$CO/etc/fedfwd/coordinator.env" FEDFWD_RUN run-4
set_env "$CO/etc/fedfwd/coordinator.env" FEDFWD_SERVER_ARGS "--set rounds=100000 --set eval_every=100000"
start_coordinator
deadline=$((SECONDS + 120))
while (($(last_round "$STATE/run-4/metrics.jsonl") < 3)); do
  ((SECONDS < deadline)) || die "run-4 did not reach round 3"
  sleep 0.1
done
sed -i '/^client client-0 /d' "$CO/etc/fedfwd/pki/credentials"
for i in 0 1; do
  wait_exit "${CL_PIDS[i]}" 60
  [[ "$rc" != 0 ]] || die "revoked client $i exited 0"
done
grep -Eqi "unauthenticated|refused|revoked|credential" "$WORK/client-0.log" ||
  die "revoked client 0 does not say why it stopped"
CL_PIDS=()
say "revoking client-0 stopped both shards that used it"
kill -TERM "$CO_PID"
wait_exit "$CO_PID" 120
[[ "$rc" != 0 ]] || die "coordinator stopped by SIGTERM mid-run exited 0"
grep -Eq '"interrupted":[[:space:]]*true' "$STATE/run-4/summary.json" ||
  die "run-4: summary not marked interrupted"
say "PASS"
