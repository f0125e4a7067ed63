#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, clang, ASan + UBSan, no libtorch) and
# runs each on its seed corpus for a bounded number of runs. Exit 0 when
# none crashed; otherwise the failing target's output names the crashing
# input (saved under the build folder).
#   scripts/fuzz.sh [--runs N] [--build-dir DIR] [--only TARGET] [--max-total-time S]
# Needs clang and libclang-rt-14-dev (scripts/setup.sh installs them).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="$ROOT/build/fuzz"
RUNS=20000
ONLY=""
EXTRA=()
while (($#)); do
  case "$1" in
    --runs) RUNS="$2"; shift 2 ;;
    --build-dir) BUILD_DIR="$2"; shift 2 ;;
    --only) ONLY="$2"; shift 2 ;;
    --max-total-time) EXTRA+=("-max_total_time=$2"); shift 2 ;;
    -h|--help)
      awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
      exit 0 ;;
    *) echo "fuzz.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
done
command -v clang++ >/dev/null || { echo "fuzz.sh: clang++ is missing (apt install clang libclang-rt-14-dev)" >&2; exit 1; }

echo "[fuzz] building in $BUILD_DIR"
CC=clang CXX=clang++ cmake -S "$ROOT" -B "$BUILD_DIR" -DFEDFWD_FUZZ=ON \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$BUILD_DIR.configure.log" 2>&1 ||
  { cat "$BUILD_DIR.configure.log" >&2; exit 1; }
cmake --build "$BUILD_DIR" -j"$(nproc)" >"$BUILD_DIR.build.log" 2>&1 ||
  { tail -50 "$BUILD_DIR.build.log" >&2; exit 1; }

status=0
for corpus in "$ROOT"/fuzz/corpus/*/; do
  name="$(basename "$corpus")"
  [[ -n "$ONLY" && "$name" != "$ONLY" ]] && continue
  bin="$BUILD_DIR/bin/${name}_fuzz"
  [[ -x "$bin" ]] || { echo "[fuzz] $name: no binary $bin" >&2; status=1; continue; }
  # New inputs go to a scratch folder; the checked-in corpus is read only.
  scratch="$BUILD_DIR/scratch/$name"
  rm -rf "$scratch"; mkdir -p "$scratch" "$BUILD_DIR/artifacts"
  if "$bin" "$scratch" "$corpus" -runs="$RUNS" -seed=1 -rss_limit_mb=2048 \
       -max_len=65536 -timeout=10 ${EXTRA[@]+"${EXTRA[@]}"} \
       -artifact_prefix="$BUILD_DIR/artifacts/$name-" >"$BUILD_DIR/$name.log" 2>&1; then
    echo "[fuzz] $name: $(grep -E '^Done' "$BUILD_DIR/$name.log" || echo done)"
  else
    echo "[fuzz] $name: FAILED (log $BUILD_DIR/$name.log)" >&2
    tail -40 "$BUILD_DIR/$name.log" >&2
    status=1
  fi
done
exit $status
