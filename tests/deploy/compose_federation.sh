#!/usr/bin/env bash
# The docker-compose federation, for real: starts a Docker engine of its
# own, makes the Debian base images (deploy/make-base-image.sh), builds the
# runtime-only image from the programs in BIN_DIR (deploy/build-image.sh
# --prebuilt), and runs deploy/docker-compose.yml with 3 client services,
# each with its own identity (deploy/compose-secrets.sh), on Fashion-MNIST:
#   run A  trains to the end: the coordinator exits 0, accuracy rose;
#   run B  the same run; fedfwd-ctl status answers inside the coordinator's
#          container and outside through the published port; the coordinator
#          container is killed mid-run and started again: it resumes from
#          its checkpoint, metrics.jsonl goes on at the checkpoint's round
#          (every round once), and the final model equals run A's bit for
#          bit;
#   run C  a decentralized run (GoSGD) on the same client services: the
#          workers reach each other at their service names;
#   then   the clients are stopped and every container exited 0; `down -v`
#          leaves no container, volume or network of the project.
# Prints each phase's time. The engine (its data root is cached in
# /var/cache/fedfwd/docker-test, so the base images and the runtime base
# layer are made once per machine), the containers and the volumes are
# removed at the end, also on failure.
#
# Needs root, docker.io, docker-compose and debootstrap (scripts/setup.sh
# --test-tools installs them). If the engine does not start, the test fails
# with the engine's own error; it does not skip.
#   tests/deploy/compose_federation.sh BIN_DIR
set -euo pipefail
TEST_NAME=compose_federation
# shellcheck source=tests/deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BIN="$(cd "${1:?usage: compose_federation.sh BIN_DIR}" && pwd)"
for p in fedfwd-server fedfwd-client fedfwd-ctl; do
  [[ -x "$BIN/$p" ]] || fail "$BIN/$p not built"
done
[[ "$(id -u)" -eq 0 ]] || fail "needs root (it starts a Docker engine and runs debootstrap)"
for tool in dockerd docker docker-compose debootstrap; do
  command -v "$tool" >/dev/null ||
    fail "no $tool (scripts/setup.sh --test-tools installs docker.io, docker-compose, debootstrap)"
done

T_START=$SECONDS
phase_t=$SECONDS
phase() {  # prints the time of the phase that ended and names the next
  say "$(printf '%4d s' $((SECONDS - phase_t))) | done: $1"
  phase_t=$SECONDS
}

CACHE=/var/cache/fedfwd/docker-test
RUNDIR="/run/fedfwd-ci-docker"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/fedfwd-compose-run.XXXXXX")"
export DOCKER_HOST="unix://$RUNDIR/docker.sock"
PROJECT=fedfwdci
TAG=fedfwd:ci
PORT="$(free_port)"
COMPOSE=(docker-compose -p "$PROJECT" -f "$DEPLOY_ROOT/deploy/docker-compose.yml"
  -f "$WORK/secrets/clients.yml")
DOCKERD_PID=""

remove_project() {  # whatever the project left on the engine
  local kind
  docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" | xargs -r docker rm -f >/dev/null 2>&1 || true
  for kind in volume network; do
    docker "$kind" ls -q --filter "label=com.docker.compose.project=$PROJECT" |
      xargs -r docker "$kind" rm >/dev/null 2>&1 || true
  done
}
stop_engine() {
  [[ -n "$DOCKERD_PID" ]] || return 0
  kill "$DOCKERD_PID" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
  kill -9 "$DOCKERD_PID" 2>/dev/null || true
  DOCKERD_PID=""
  # The engine's network namespace mounts outlive it.
  awk -v d="$RUNDIR/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r |
    xargs -r -n 1 umount -l 2>/dev/null || true
}
cleanup() {
  local rc=$?
  if [[ -n "$DOCKERD_PID" ]]; then
    if ((rc != 0)); then
      say "on failure: the coordinator's last log lines"
      "${COMPOSE[@]}" logs --no-color --tail 30 coordinator 2>/dev/null || true
    fi
    "${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
    remove_project
  fi
  stop_engine
  rm -rf "$RUNDIR" "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- the engine ----
mkdir -p "$CACHE/data" "$RUNDIR"
# A daemon a killed earlier run left on this data root holds its lock.
if [[ -f "$RUNDIR/docker.pid" ]] && kill -0 "$(cat "$RUNDIR/docker.pid")" 2>/dev/null; then
  kill "$(cat "$RUNDIR/docker.pid")" || true
  sleep 3
fi
dockerd --iptables=false --ip6tables=false --bridge none \
  --data-root "$CACHE/data" --exec-root "$RUNDIR/exec" \
  --host "$DOCKER_HOST" --pidfile "$RUNDIR/docker.pid" \
  >"$WORK/dockerd.log" 2>&1 &
DOCKERD_PID=$!
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && break
  kill -0 "$DOCKERD_PID" 2>/dev/null ||
    fail "dockerd did not start: $(grep -E 'level=(fatal|error)|failed' "$WORK/dockerd.log" | tail -3)"
  sleep 1
done
docker info >/dev/null 2>&1 || fail "dockerd does not answer after 60 s: $(tail -3 "$WORK/dockerd.log")"
# Leftovers of an earlier run on the cached data root.
remove_project
phase "engine $(docker version -f '{{.Server.Version}}') on $DOCKER_HOST"

# ---- images ----
bash "$DEPLOY_ROOT/deploy/make-base-image.sh" >"$WORK/base.log" 2>&1 ||
  fail "make-base-image.sh: $(tail -5 "$WORK/base.log")"
phase "base images ($(tail -1 "$WORK/base.log" | sed 's/^\[make-base-image\] //'))"
bash "$DEPLOY_ROOT/deploy/build-image.sh" --prebuilt "$BIN" --tag "$TAG" >"$WORK/image.log" 2>&1 ||
  fail "build-image.sh --prebuilt: $(tail -5 "$WORK/image.log")"
phase "runtime-only image $TAG ($(grep -o "built $TAG in .*" "$WORK/image.log" | head -1))"

# ---- secrets ----
bash "$DEPLOY_ROOT/deploy/compose-secrets.sh" --dir "$WORK/secrets" --clients 3 >"$WORK/secrets.log" 2>&1 ||
  fail "compose-secrets.sh: $(cat "$WORK/secrets.log")"
mkdir -p "$WORK/out"
chown 10001:10001 "$WORK/out"
export FEDFWD_IMAGE="$TAG" FEDFWD_SECRETS_DIR="$WORK/secrets" FEDFWD_OUT="$WORK/out" \
  FEDFWD_PUBLISH="127.0.0.1:$PORT" FEDFWD_CONFIG=fmnist_fg_mlp.yaml \
  FEDFWD_DATA_DIR=/usr/share/datasets/fashion-mnist \
  FEDFWD_SERVER_ARGS="--set rounds=60 --set eval_every=10 --checkpoint-min-interval 0"
[[ -f "$FEDFWD_DATA_DIR/t10k-images-idx3-ubyte.gz" || -f "$FEDFWD_DATA_DIR/t10k-images-idx3-ubyte" ]] ||
  fail "no Fashion-MNIST in $FEDFWD_DATA_DIR (Debian package dataset-fashion-mnist)"
phase "3 client identities"

coordinator_id() { "${COMPOSE[@]}" ps -q coordinator; }
wait_exit() {  # container timeout_s: prints its exit code
  local id="$1" t="$2" code
  code="$(timeout "$t" docker wait "$id")" || fail "the coordinator did not finish within $t s"
  echo "$code"
}
rows() { grep -c '"round"' "$1" 2>/dev/null || true; }

# ---- run A: uninterrupted ----
export FEDFWD_RUN=run-a
"${COMPOSE[@]}" up -d >"$WORK/up-a.log" 2>&1 || fail "docker-compose up: $(tail -5 "$WORK/up-a.log")"
code="$(wait_exit "$(coordinator_id)" 400)"
[[ "$code" == 0 ]] || fail "run A: the coordinator exited $code"
A="$WORK/out/run-a"
[[ -f "$A/summary.json" && -f "$A/final_model.bin" ]] || fail "run A left no summary.json or final_model.bin in the mounted folder"
python3 - "$A" <<'PY' || fail "run A: accuracy did not rise"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl")]
acc = [r["test_acc"] for r in rows if r.get("test_acc") is not None]
s = json.load(open(sys.argv[1] + "/summary.json"))
print("[compose_federation] run A: test accuracy %s -> %.4f (summary %.4f), %d rounds"
      % (acc[0], acc[-1], s["final_test_acc"], s["rounds"]))
sys.exit(0 if len(acc) >= 2 and s["final_test_acc"] > acc[0] + 0.3 and s["rounds"] == 60 else 1)
PY
phase "run A, 60 rounds to the end"

# ---- run B: status inside and outside, killed and resumed ----
export FEDFWD_RUN=run-b
B="$WORK/out/run-b"
"${COMPOSE[@]}" up -d >"$WORK/up-b.log" 2>&1 || fail "docker-compose up: $(tail -5 "$WORK/up-b.log")"
for _ in $(seq 1 600); do [[ "$(rows "$B/metrics.jsonl")" -ge 5 ]] && break; sleep 0.2; done
[[ "$(rows "$B/metrics.jsonl")" -ge 5 ]] || fail "run B: no rounds after 120 s"
S="$WORK/secrets/coordinator"
"$BIN/fedfwd-ctl" status --server "127.0.0.1:$PORT" --tls-server-name coordinator \
  --tls-ca "$S/ca.pem" --tls-cert "$S/healthcheck.pem" --tls-key "$S/healthcheck.key" \
  --token-file "$S/status.token" --timeout 10 >"$WORK/status-out.txt" 2>&1 ||
  fail "fedfwd-ctl status outside the containers: $(cat "$WORK/status-out.txt")"
"${COMPOSE[@]}" exec -T coordinator fedfwd-ctl status --server localhost:50051 \
  --tls-server-name coordinator --tls-ca /secrets/ca.pem --tls-cert /secrets/healthcheck.pem \
  --tls-key /secrets/healthcheck.key --token-file /secrets/status.token --timeout 10 \
  >"$WORK/status-in.txt" 2>&1 || fail "fedfwd-ctl status inside the coordinator: $(cat "$WORK/status-in.txt")"
say "fedfwd-ctl status, outside: $(grep -m 1 -i round "$WORK/status-out.txt" | tr -s ' ')"
for _ in $(seq 1 600); do [[ "$(rows "$B/metrics.jsonl")" -ge 20 ]] && break; sleep 0.1; done
"${COMPOSE[@]}" kill coordinator >/dev/null 2>&1
killed_at="$(rows "$B/metrics.jsonl")"
[[ ! -f "$B/summary.json" ]] || fail "run B ended before the kill (raise its rounds)"
((killed_at < 61)) || fail "run B ended before the kill"
phase "run B to round $((killed_at - 1)); status inside and outside; coordinator killed"
"${COMPOSE[@]}" up -d coordinator >"$WORK/up-b2.log" 2>&1 || fail "docker-compose up -d coordinator: $(tail -5 "$WORK/up-b2.log")"
code="$(wait_exit "$(coordinator_id)" 400)"
[[ "$code" == 0 ]] || fail "run B after the restart: the coordinator exited $code"
"${COMPOSE[@]}" logs --no-color coordinator >"$WORK/coordinator-b.log" 2>&1
grep -q 'resuming after round' "$WORK/coordinator-b.log" ||
  fail "the restarted coordinator did not resume from its checkpoint"
python3 - "$B" <<'PY' || fail "run B's metrics.jsonl does not go on at the checkpoint's round"
import json, sys
rounds = [json.loads(l).get("round") for l in open(sys.argv[1] + "/metrics.jsonl")]
sys.exit(0 if rounds == list(range(0, 61)) else 1)
PY
cmp -s "$A/final_model.bin" "$B/final_model.bin" ||
  fail "the resumed run's final model differs from the uninterrupted run's"
phase "run B resumed ($(grep -m 1 -o 'resuming after round [0-9]*' "$WORK/coordinator-b.log")), final model equals run A's bit for bit"

# ---- run C: decentralized (GoSGD), peers dialing each other by name ----
export FEDFWD_RUN=run-c FEDFWD_CONFIG=mnist_gosgd.yaml \
  FEDFWD_SERVER_ARGS="--set dataset.name=fashion-mnist --set peer.steps=60 --set eval_every=30"
"${COMPOSE[@]}" up -d coordinator >"$WORK/up-c.log" 2>&1 || fail "docker-compose up (run C): $(tail -5 "$WORK/up-c.log")"
code="$(wait_exit "$(coordinator_id)" 400)"
[[ "$code" == 0 ]] || fail "run C (gosgd): the coordinator exited $code"
python3 - "$WORK/out/run-c" <<'PY' || fail "run C (gosgd): no peer traffic or no 3 finished workers"
import json, sys
s = json.load(open(sys.argv[1] + "/summary.json"))
print("[compose_federation] run C (gosgd): consensus test_acc %.4f, %d bytes between peers"
      % (s.get("final_test_acc", float("nan")), s.get("peer_bytes_total", 0)))
sys.exit(0 if s.get("peer_bytes_total", 0) > 0 and "error" not in s else 1)
PY
"${COMPOSE[@]}" logs --no-color coordinator 2>&1 | grep -q 'peer client-3:50052' ||
  fail "run C: the workers did not advertise their service names as peer addresses"
phase "run C, GoSGD: 3 workers gossiping over client-N:50052"

# ---- every container exits 0; nothing left ----
"${COMPOSE[@]}" stop >/dev/null 2>&1
for id in $("${COMPOSE[@]}" ps -q); do
  st="$(docker inspect -f '{{.Name}} {{.State.Status}} {{.State.ExitCode}}' "$id")"
  [[ "$st" == *" exited 0" ]] || fail "container not exited with 0: $st"
done
"${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1
left="$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT")$(docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT")$(docker network ls -q --filter "label=com.docker.compose.project=$PROJECT")"
[[ -z "$left" ]] || fail "docker-compose down -v left: $left"
phase "every container exited 0; down -v left nothing"
say "total $((SECONDS - T_START)) s"
say PASS
