#!/usr/bin/env bash
# Builds the fedfwd container image (deploy/Dockerfile) and checks that its
# programs start.
#
# usage: deploy/build-image.sh [--prebuilt [BIN_DIR]] [--tag NAME] [--jobs N]
#   (default)    from source: the Dockerfile's `build` stage runs
#                scripts/setup.sh --no-data and compiles everything (about
#                as long as a fresh build on the host)
#   --prebuilt   target `runtime-prebuilt`: copies the programs already
#                built in BIN_DIR (default build/bin; built on Debian 12, as
#                scripts/setup.sh does) into the runtime base; seconds, not
#                a second compile
#   --tag        image name (default fedfwd:latest, what
#                deploy/docker-compose.yml runs)
#   --jobs       parallel compile jobs in a from-source build (default: all)
# env: DOCKER_HOST  the engine (as for the docker command)
#
# The base images debian:12 and debian:12-slim must be in the engine or
# reachable in a registry: deploy/make-base-image.sh makes them from the
# Debian archive.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TAG="fedfwd:latest"
PREBUILT=0
BIN_DIR="$ROOT/build/bin"
JOBS=""

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }
die() { echo "build-image: error: $*" >&2; exit 2; }
log() { echo "[build-image] $*"; }

while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --prebuilt)
      PREBUILT=1
      if [[ $# -ge 2 && "$2" != --* ]]; then BIN_DIR="$2"; shift; fi
      shift ;;
    --tag) [[ $# -ge 2 ]] || die "--tag needs a name"; TAG="$2"; shift 2 ;;
    --jobs) [[ $# -ge 2 ]] || die "--jobs needs a number"; JOBS="$2"; shift 2 ;;
    *) die "unknown option '$1' (try --help)" ;;
  esac
done

command -v docker >/dev/null || die "no docker command (Debian package docker.io)"
docker info >/dev/null 2>&1 ||
  die "no Docker engine answers at ${DOCKER_HOST:-the default socket}: $(docker info 2>&1 | tail -1)"
for base in debian:12-slim $( ((PREBUILT)) || echo debian:12); do
  docker image inspect "$base" >/dev/null 2>&1 ||
    log "note: $base is not in the engine; the build will try a registry (without one: sudo deploy/make-base-image.sh)"
done

DOCKERFILE="$ROOT/deploy/Dockerfile"
programs="$(sed -n 's/^ARG FEDFWD_PROGRAMS="\(.*\)"$/\1/p' "$DOCKERFILE")"
[[ -n "$programs" ]] || die "no ARG FEDFWD_PROGRAMS=\"...\" line in $DOCKERFILE"

T0=$SECONDS
if ((PREBUILT)); then
  [[ -d "$BIN_DIR" ]] || die "$BIN_DIR: no such folder (build first: scripts/setup.sh)"
  CTX="$(mktemp -d)"
  trap 'rm -rf "$CTX"' EXIT
  mkdir -p "$CTX/deploy/prebuilt"
  for p in $programs; do
    [[ -x "$BIN_DIR/$p" ]] || die "$BIN_DIR/$p is missing (build first: scripts/setup.sh)"
    install -m 0755 "$BIN_DIR/$p" "$CTX/deploy/prebuilt/"
  done
  install -m 0755 "$ROOT/deploy/fedfwd-coordinator-start" "$CTX/deploy/"
  log "runtime-prebuilt from $BIN_DIR ($(du -sh "$CTX" | cut -f1) of programs) as $TAG"
  docker build -q --network host -f "$DOCKERFILE" --target runtime-prebuilt -t "$TAG" "$CTX" >/dev/null
else
  log "from source (target runtime) as $TAG; this compiles everything"
  docker build --network host -f "$DOCKERFILE" ${JOBS:+--build-arg FEDFWD_JOBS="$JOBS"} -t "$TAG" "$ROOT"
fi
log "built $TAG in $((SECONDS - T0)) s ($(docker image inspect -f '{{.Size}}' "$TAG" | awk '{ printf "%.0f MB", $1 / 1e6 }'))"

# Every program must start in the image (a missing runtime library shows
# here, not in the first federation).
for p in $programs; do
  out="$(docker run --rm --entrypoint "$p" "$TAG" --help 2>&1)" ||
    die "$p --help fails in $TAG: $(echo "$out" | tail -3)"
done
docker run --rm --entrypoint sh "$TAG" -c 'command -v fedfwd-coordinator-start >/dev/null' ||
  die "fedfwd-coordinator-start is not on PATH in $TAG"
log "every program starts in $TAG: $programs fedfwd-coordinator-start"
