#!/usr/bin/env bash
# Bytes on the wire per client per round, from a real local federation.
#   bench/bytes_per_round.sh [CONFIG] [ROUNDS] [-- extra fedfwd-run args]
# Runs CONFIG (default configs/mnist_fg_mlp.yaml) for ROUNDS rounds (default
# 50) and prints, over rounds 1..ROUNDS, the mean serialized protobuf bytes
# up and down per client per round (heartbeats and polls included), and the
# rounds per second, and the median round's bytes down (the steady state,
# without the snapshot a client fetches when it joins). Or point it at an existing metrics.jsonl with
#   bench/bytes_per_round.sh --metrics FILE
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

summarize() {
  local tmp
  tmp="$(mktemp)"
  awk '
    {
      match($0, /"round":[0-9]+/); r = substr($0, RSTART + 8, RLENGTH - 8) + 0
      match($0, /"bytes_up":[0-9]+/); up = substr($0, RSTART + 11, RLENGTH - 11) + 0
      match($0, /"bytes_down":[0-9]+/); dn = substr($0, RSTART + 13, RLENGTH - 13) + 0
      match($0, /"clients":[0-9]+/); c = substr($0, RSTART + 10, RLENGTH - 10) + 0
      match($0, /"wall_s":[-0-9.e+]+/); w = substr($0, RSTART + 9, RLENGTH - 9) + 0
      if (r >= 1 && c > 0) {
        n++; su += up / c; sd += dn / c; last = w
        printf "%.1f\n", dn / c > median_file
      }
    }
    END {
      if (n == 0) { print "no rounds with results"; exit 1 }
      printf "rounds %d\nbytes_up per client per round %.1f\n", n, su / n
      printf "bytes_down per client per round %.1f\n", sd / n
      printf "rounds per second %.2f\n", n / last
    }' median_file="$tmp" "$1"
  # The mean above includes each client's first snapshot; the median round
  # is the steady state (seed updates where the run replays them).
  sort -n "$tmp" | awk '{ v[NR] = $1 } END {
    printf "bytes_down per client per round, median round %.1f\n", v[int((NR + 1) / 2)] }'
  rm -f "$tmp"
}

if [[ "${1:-}" == "--metrics" ]]; then
  summarize "$2"
  exit
fi
CONFIG="${1:-$ROOT/configs/mnist_fg_mlp.yaml}"
ROUNDS="${2:-50}"
shift $(( $# >= 2 ? 2 : $# ))
[[ "${1:-}" == "--" ]] && shift
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
"$ROOT/build/bin/fedfwd-run" "$CONFIG" --out "$OUT/run" --set rounds="$ROUNDS" \
  --set eval_every="$ROUNDS" "$@" > "$OUT/log" 2>&1 || { cat "$OUT/log"; exit 1; }
echo "config $CONFIG"
summarize "$OUT/run/metrics.jsonl"
