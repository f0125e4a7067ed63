#!/usr/bin/env bash
# Builds the benchmarks and prints one line per performance target of
# issue 6, "NAME: VALUE UNIT (target TARGET)" (bench/targets.py; see
# bench/README.md), then rewrites its section of bench/RESULTS.md.
#   bench/run.sh            quick version (a few minutes on 2 cores)
#   bench/run.sh --full     longer benchmark times and runs
#   bench/run.sh --smoke    each piece as briefly as possible, nothing
#                           written (what CI runs, so the benchmarks build
#                           and run)
# Needs a configured build (scripts/setup.sh) and real MNIST in data/mnist.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
for a in "$@"; do
  case "$a" in
    --full|--smoke|--no-write) ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/run.sh: unknown option $a (see --help)" >&2; exit 2 ;;
  esac
done
if [[ ! -f "$ROOT/build/CMakeCache.txt" ]]; then
  echo "bench/run.sh: no build in $ROOT/build; run scripts/setup.sh" >&2
  exit 1
fi
cmake --build "$ROOT/build" -j"$(nproc)" --target fedfwd_bench fedfwd-run \
  fedfwd-server fedfwd-client fedfwd-loadgen > /dev/null
if [[ ! -x "$ROOT/build/bin/fedfwd_bench" ]]; then
  echo "bench/run.sh: fedfwd_bench was not built (libbenchmark-dev missing?)" >&2
  exit 1
fi
exec python3 "$ROOT/bench/targets.py" "$@"
