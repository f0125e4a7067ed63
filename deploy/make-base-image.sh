#!/usr/bin/env bash
# Builds the Debian 12 base images that deploy/Dockerfile starts from,
# `debian:12` and `debian:12-slim`, from the Debian archive with debootstrap,
# for Docker hosts that reach Debian's archive but no image registry. Where a
# registry is reachable, `docker pull debian:12 debian:12-slim` does the same
# job and this script is not needed.
#
# usage: sudo deploy/make-base-image.sh [--force] [--mirror URL] [--cache DIR]
#   --force   build again even when both tags are already in the engine
#   --mirror  Debian mirror (default http://deb.debian.org/debian)
#   --cache   folder that keeps the root file system tarball between calls
#             (default /var/cache/fedfwd/base-image); a tarball there is
#             imported again without debootstrap, e.g. into another engine
#             (delete it for a fresh debootstrap)
# env: DOCKER_HOST  the engine to import into (as for the docker command)
#
# Idempotent: a tag already in the engine is left alone. Needs root
# (debootstrap makes device nodes and chroots), debootstrap, and a running
# Docker engine. Prints how long each step took.
#
# `debian:12` is debootstrap's minbase variant (essential packages and apt);
# `debian:12-slim` is the same with documentation, manual pages and locales
# removed and kept out of later installs by dpkg path excludes, as the
# official slim images do.
set -euo pipefail

MIRROR="http://deb.debian.org/debian"
CACHE="/var/cache/fedfwd/base-image"
FORCE=0
SUITE=bookworm
TAG_FULL="debian:12"
TAG_SLIM="debian:12-slim"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }
die() { echo "make-base-image: error: $*" >&2; exit 2; }
log() { echo "[make-base-image] $*"; }

while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --force) FORCE=1; shift ;;
    --mirror) [[ $# -ge 2 ]] || die "--mirror needs a URL"; MIRROR="$2"; shift 2 ;;
    --cache) [[ $# -ge 2 ]] || die "--cache needs a folder"; CACHE="$2"; shift 2 ;;
    *) die "unknown option '$1' (try --help)" ;;
  esac
done

command -v docker >/dev/null || die "no docker command (Debian package docker.io)"
docker info >/dev/null 2>&1 ||
  die "no Docker engine answers at ${DOCKER_HOST:-the default socket}: $(docker info 2>&1 | tail -1)"

have() { docker image inspect "$1" >/dev/null 2>&1; }
if ((!FORCE)) && have "$TAG_FULL" && have "$TAG_SLIM"; then
  log "$TAG_FULL and $TAG_SLIM are already in the engine (--force builds them again)"
  exit 0
fi
[[ "$(id -u)" -eq 0 ]] || die "debootstrap needs root: run with sudo"

T0=$SECONDS
FULL_TAR="$CACHE/$SUITE-minbase.tar"
SLIM_TAR="$CACHE/$SUITE-minbase-slim.tar"
mkdir -p "$CACHE"
if [[ ! -s "$FULL_TAR" || ! -s "$SLIM_TAR" ]]; then
  command -v debootstrap >/dev/null || die "no debootstrap (Debian package debootstrap)"
  ROOTFS="$(mktemp -d "$CACHE/rootfs.XXXXXX")"
  trap 'rm -rf "$ROOTFS" "$CACHE"/.*.tar.tmp' EXIT
  log "debootstrap --variant=minbase $SUITE from $MIRROR ..."
  debootstrap --variant=minbase "$SUITE" "$ROOTFS" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
    die "debootstrap failed; its log: $CACHE/debootstrap.log ($(tail -1 "$CACHE/debootstrap.log"))"
  log "debootstrap done in $((SECONDS - T0)) s"
  # What the official images do for containers: no package lists or .deb
  # cache kept in the image, and no services started by package scripts.
  rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin \
    "$ROOTFS"/var/cache/apt/archives/*.deb
  cat >"$ROOTFS/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  printf '#!/bin/sh\nexit 101\n' >"$ROOTFS/usr/sbin/policy-rc.d"
  chmod 755 "$ROOTFS/usr/sbin/policy-rc.d"
  tar --numeric-owner -C "$ROOTFS" -cf "$CACHE/.full.tar.tmp" .
  # The slim variant: documentation, manual pages and locales out, now and
  # in every later install.
  cat >"$ROOTFS/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
EOF
  find "$ROOTFS/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$ROOTFS/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/groff/* \
    "$ROOTFS"/usr/share/info/* "$ROOTFS"/usr/share/locale/* \
    "$ROOTFS"/usr/share/lintian/*
  tar --numeric-owner -C "$ROOTFS" -cf "$CACHE/.slim.tar.tmp" .
  mv -f "$CACHE/.full.tar.tmp" "$FULL_TAR"
  mv -f "$CACHE/.slim.tar.tmp" "$SLIM_TAR"
  rm -rf "$ROOTFS"
  trap - EXIT
else
  log "reusing the root file systems in $CACHE (delete them for a fresh debootstrap)"
fi

import() {  # tarball tag
  local t=$SECONDS
  docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' \
    --message "debootstrap --variant=minbase $SUITE ($MIRROR), deploy/make-base-image.sh" \
    "$1" "$2" >/dev/null
  log "imported $2 ($(du -h "$1" | cut -f1) tarball) in $((SECONDS - t)) s"
}
if ((FORCE)) || ! have "$TAG_FULL"; then import "$FULL_TAR" "$TAG_FULL"; fi
if ((FORCE)) || ! have "$TAG_SLIM"; then import "$SLIM_TAR" "$TAG_SLIM"; fi
log "done in $((SECONDS - T0)) s: $(docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' debian | tr '\n' ' ')"
