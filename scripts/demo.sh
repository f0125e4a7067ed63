#!/usr/bin/env bash
# Sets up, then trains the forward-gradient MLP on Fashion-MNIST with a local
# federation (one server, the config's clients) and prints the final test
# accuracy. Extra arguments go to fedfwd-run, e.g.
#   scripts/demo.sh --set rounds=500 --client-threads 2
# Outputs land in runs/demo-<YYYYmmdd-HHMMSS>/ under the repository.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${FEDFWD_BUILD_DIR:-$ROOT/build}"

bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
OUT="runs/demo-$(date +%Y%m%d-%H%M%S)"
echo "[demo] running configs/fmnist_fg_mlp.yaml into $OUT"
rc=0
"$BUILD_DIR/bin/fedfwd-run" configs/fmnist_fg_mlp.yaml --out "$OUT" "$@" || rc=$?
if ((rc != 0)); then
  echo "[demo] fedfwd-run failed with exit code $rc (logs in $ROOT/$OUT)" >&2
  exit "$rc"
fi
# summary.json may be pretty-printed or on one line; take the first number
# after "final_test_acc".
acc="$(tr -d '\n' < "$OUT/summary.json" 2>/dev/null |
  grep -o '"final_test_acc"[[:space:]]*:[[:space:]]*[-0-9.eE+]*' |
  head -n 1 | sed 's/.*:[[:space:]]*//' || true)"
if [[ -z "$acc" ]]; then
  echo "[demo] no final_test_acc in $ROOT/$OUT/summary.json" >&2
  exit 1
fi
echo "[demo] final test accuracy: $acc (outputs in $ROOT/$OUT)"
# What clients computed, the bytes per client per round (means, join
# included), the wall time and when 0.82 was reached, from the run's files.
python3 "$ROOT/bench/flagship.py" "$OUT" --target 0.82 | sed 's/^/[demo] /' || true
