#!/usr/bin/env bash
# Sets up (packages, MNIST, build) and runs the whole test suite.
# Extra arguments go to ctest, e.g. scripts/test.sh -R Config -V
# env: FEDFWD_BUILD_DIR (default <repo>/build), FEDFWD_TEST_JOBS (default 2)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${FEDFWD_BUILD_DIR:-$ROOT/build}"

bash "$ROOT/scripts/setup.sh" --test-tools
echo "[test] ctest in $BUILD_DIR"
ctest --test-dir "$BUILD_DIR" --output-on-failure -j"${FEDFWD_TEST_JOBS:-2}" "$@"
