#!/usr/bin/env bash
# Starts a federation by hand: one fedfwd-server and N fedfwd-client daemons
# as separate background processes on loopback, the way separate machines
# would run them (fedfwd-run does the same from one command). Shows the
# server's progress, waits for it to finish, then stops the clients. Ctrl-C
# stops everything. Logs and the server's outputs go to one folder.
#
# usage: deploy/local-federation.sh N CONFIG [options]
#   --data DIR     client data folder (default: from CONFIG's dataset)
#   --port PORT    server port (default: 0, a free port)
#   --threads T    compute threads per process (default: 1)
#   --logs DIR     folder for logs and outputs (default:
#                  runs/local-federation-<YYYYmmdd-HHMMSS> under the repo)
#   --insecure     plaintext, no tokens (default: mutual TLS and one token
#                  per client, made by scripts/make-certs.sh in DIR/secrets)
# env: FEDFWD_BIN_DIR  folder with fedfwd-server/-client (default build/bin)
#
# N should equal the config's `clients`: the server starts rounds once that
# many clients joined. If this script itself is SIGKILLed, its children keep
# running (fedfwd-run does not have that limit).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN_DIR="${FEDFWD_BIN_DIR:-$ROOT/build/bin}"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }
log() { echo "[local-federation] $*"; }
die() { echo "[local-federation] error: $*" >&2; exit 2; }

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then usage; exit 0; fi
(($# >= 2)) || { usage >&2; exit 2; }
N="$1"
CONFIG="$2"
shift 2
DATA=""
PORT=0
THREADS=1
LOG_DIR=""
INSECURE=0
while (($# > 0)); do
  case "$1" in
    --data) DATA="${2:?--data needs a folder}"; shift 2 ;;
    --port) PORT="${2:?--port needs a number}"; shift 2 ;;
    --threads) THREADS="${2:?--threads needs a number}"; shift 2 ;;
    --logs) LOG_DIR="${2:?--logs needs a folder}"; shift 2 ;;
    --insecure) INSECURE=1; shift ;;
    *) die "unknown option '$1' (try --help)" ;;
  esac
done
[[ "$N" =~ ^[1-9][0-9]*$ ]] || die "N must be a positive number, got '$N'"
[[ "$PORT" =~ ^[0-9]+$ ]] || die "--port must be a number, got '$PORT'"
[[ -f "$CONFIG" ]] || die "config file '$CONFIG' not found"
CONFIG="$(cd "$(dirname "$CONFIG")" && pwd)/$(basename "$CONFIG")"
for exe in fedfwd-server fedfwd-client; do
  [[ -x "$BIN_DIR/$exe" ]] ||
    die "$BIN_DIR/$exe not found (build with scripts/setup.sh, or set FEDFWD_BIN_DIR)"
done

# The config's clients count and data folder, read roughly from the YAML
# (block style); --data overrides the latter.
config_clients="$(sed -n 's/^clients:[[:space:]]*\([0-9][0-9]*\).*/\1/p' "$CONFIG" | head -n 1)"
if [[ -n "$config_clients" && "$config_clients" != "$N" ]]; then
  log "warning: $CONFIG has clients: $config_clients but N is $N; the server waits for $config_clients"
fi
if [[ -z "$DATA" ]]; then
  data_dir="$(sed -n 's/^[[:space:]]*data_dir:[[:space:]]*["'\'']\{0,1\}\([^"'\''#]*\).*/\1/p' "$CONFIG" | head -n 1)"
  data_dir="${data_dir%"${data_dir##*[![:space:]]}"}"
  if [[ -n "$data_dir" ]]; then
    [[ "$data_dir" = /* ]] || data_dir="$(dirname "$CONFIG")/$data_dir"
    DATA="$data_dir"
  elif grep -Eq '^[[:space:]]*name:[[:space:]]*["'\'']?fashion-mnist' "$CONFIG"; then
    DATA=/usr/share/datasets/fashion-mnist
  elif [[ -n "${FEDFWD_DATA:-}" ]]; then
    DATA="$FEDFWD_DATA/mnist"
  else
    DATA="$ROOT/data/mnist"
  fi
fi
[[ -d "$DATA" ]] || die "data folder '$DATA' not found (pass --data DIR; MNIST: scripts/setup.sh)"

LOG_DIR="${LOG_DIR:-$ROOT/runs/local-federation-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$LOG_DIR"
LOG_DIR="$(cd "$LOG_DIR" && pwd)"

SERVER_PID=""
CLIENT_PIDS=()
TAIL_PID=""

alive() { [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null; }
# Sends SIGTERM to the given pids, waits up to $1 seconds, then SIGKILL.
stop_pids() {
  local grace="$1" pid deadline
  shift
  for pid in "$@"; do
    if alive "$pid"; then kill -TERM "$pid" 2>/dev/null || true; fi
  done
  deadline=$((SECONDS + grace))
  for pid in "$@"; do
    while alive "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
    if alive "$pid"; then
      log "pid $pid ignored SIGTERM; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
}
# shellcheck disable=SC2317  # invoked through trap
on_signal() {
  trap '' INT TERM HUP
  log "interrupted; stopping server and clients"
  local pids=("${CLIENT_PIDS[@]}")
  if [[ -n "$SERVER_PID" ]]; then pids+=("$SERVER_PID"); fi
  stop_pids 10 "${pids[@]}"
  if alive "$TAIL_PID"; then kill "$TAIL_PID" 2>/dev/null || true; fi
  log "logs in $LOG_DIR"
  exit 130
}
trap on_signal INT TERM HUP

log "logs and outputs in $LOG_DIR"
SECRETS="$LOG_DIR/secrets"
SERVER_SEC=(--insecure)
if ((INSECURE == 0)); then
  bash "$ROOT/scripts/make-certs.sh" "$SECRETS" --server-name localhost \
    --server-name 127.0.0.1 --clients "$N" >"$LOG_DIR/make-certs.log" ||
    die "scripts/make-certs.sh failed; see $LOG_DIR/make-certs.log"
  SERVER_SEC=(--tls-cert "$SECRETS/server.pem" --tls-key "$SECRETS/server.key"
    --tls-ca "$SECRETS/ca.pem" --credentials "$SECRETS/credentials")
fi
: >"$LOG_DIR/server.out"
"$BIN_DIR/fedfwd-server" --config "$CONFIG" --listen "127.0.0.1:$PORT" \
  --out "$LOG_DIR" --threads "$THREADS" "${SERVER_SEC[@]}" \
  >"$LOG_DIR/server.out" 2>"$LOG_DIR/server.log" </dev/null &
SERVER_PID=$!

# Wait (at most 60 s) for the line that names the port.
listen_line=""
deadline=$((SECONDS + 60))
while [[ -z "$listen_line" ]]; do
  listen_line="$(grep -m 1 'fedfwd-server listening on ' "$LOG_DIR/server.out" || true)"
  [[ -n "$listen_line" ]] && break
  if ! alive "$SERVER_PID"; then
    rc=0; wait "$SERVER_PID" || rc=$?
    log "fedfwd-server exited ($rc) before listening; last lines of server.log:" >&2
    tail -n 20 "$LOG_DIR/server.log" >&2
    exit 1
  fi
  if ((SECONDS >= deadline)); then
    log "fedfwd-server did not report its port within 60 s" >&2
    stop_pids 5 "$SERVER_PID"
    tail -n 20 "$LOG_DIR/server.log" >&2
    exit 1
  fi
  sleep 0.2
done
PORT="${listen_line##*:}"
PORT="${PORT//[^0-9]/}"
log "server pid $SERVER_PID on 127.0.0.1:$PORT"

for ((i = 0; i < N; i++)); do
  CLIENT_SEC=(--insecure)
  if ((INSECURE == 0)); then
    c="$SECRETS/clients/client-$i"
    CLIENT_SEC=(--tls-ca "$SECRETS/ca.pem" --tls-cert "$c.pem" --tls-key "$c.key"
      --token-file "$c.token")
  fi
  "$BIN_DIR/fedfwd-client" --server "127.0.0.1:$PORT" --data "$DATA" \
    --shard "$i" --num-shards "$N" --threads "$THREADS" "${CLIENT_SEC[@]}" \
    >"$LOG_DIR/client-$i.log" 2>&1 </dev/null &
  CLIENT_PIDS+=($!)
  log "client $i pid $! (log: $LOG_DIR/client-$i.log)"
done

# Live progress: the server's stdout, until the server exits.
tail -n +1 -f --pid="$SERVER_PID" "$LOG_DIR/server.out" &
TAIL_PID=$!

server_rc=0
wait "$SERVER_PID" || server_rc=$?
wait "$TAIL_PID" 2>/dev/null || true

# Clients leave on their own once told the run is over; give them 30 s.
deadline=$((SECONDS + 30))
for pid in "${CLIENT_PIDS[@]}"; do
  while alive "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
done
stop_pids 5 "${CLIENT_PIDS[@]}"

if ((server_rc != 0)); then
  log "fedfwd-server exited with status $server_rc; last lines of server.log:" >&2
  tail -n 20 "$LOG_DIR/server.log" >&2
fi
log "done; logs and outputs in $LOG_DIR"
exit "$server_rc"
