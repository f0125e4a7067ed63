#!/usr/bin/env bash
# Makes the certificates, tokens and credentials file that
# deploy/docker-compose.yml mounts, with scripts/make-certs.sh, and lays them
# out so each container sees only what it needs.
#
# usage: deploy/compose-secrets.sh [--dir DIR] [--owner UID:GID]
#                                  [--server-name NAME]...
#   --dir          where to write (default: deploy/secrets; the compose file
#                  reads FEDFWD_SECRETS_DIR, default ./secrets)
#   --owner        who the containers run as (default 10001:10001, the
#                  image's fedfwd user; compose: FEDFWD_UID/FEDFWD_GID).
#                  The keys are mode 0600, so they are given to this owner:
#                  run as root (sudo), or pass your own --owner "$(id -u):$(id -g)"
#                  and set FEDFWD_UID/FEDFWD_GID to the same
#   --server-name  more names (DNS or IP) for the coordinator's certificate,
#                  for clients outside compose that dial the published port;
#                  "coordinator" (the compose service) is always included
#
# Writes:
#   DIR/pki/          make-certs.sh's folder: the CA (ca.key stays here,
#                     mounted nowhere) and every credential; rerunning reuses
#                     the CA and keeps existing credentials
#   DIR/coordinator/  server.pem server.key ca.pem credentials status.token,
#                     healthcheck.pem/.key (a certificate for fedfwd-ctl's TLS
#                     handshake; its token is not admitted, the health check
#                     authenticates with status.token)
#   DIR/client/       ca.pem client.pem client.key client.token: the one
#                     identity every scaled client replica shares
#                     ("compose-client")
#
# Revoking: delete the "client compose-client" line from DIR/pki/credentials
# and run this again (or delete it in DIR/coordinator/credentials, which a
# later run would restore); the coordinator re-reads the file and refuses
# every replica, since they share the identity.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="$ROOT/deploy/secrets"
OWNER="10001:10001"
NAMES=(coordinator)

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }
die() { echo "compose-secrets: error: $*" >&2; exit 2; }

while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dir) [[ $# -ge 2 ]] || die "--dir needs a folder"; DIR="$2"; shift 2 ;;
    --owner) [[ $# -ge 2 ]] || die "--owner needs UID:GID"; OWNER="$2"; shift 2 ;;
    --server-name) [[ $# -ge 2 ]] || die "--server-name needs a value"; NAMES+=("$2"); shift 2 ;;
    *) die "unknown option '$1' (try --help)" ;;
  esac
done
[[ "$OWNER" =~ ^[0-9]+:[0-9]+$ ]] || die "--owner must be numeric UID:GID, got '$OWNER'"
if [[ "$(id -u)" -ne 0 && "$OWNER" != "$(id -u):$(id -g)" ]]; then
  die "the keys must belong to $OWNER (the containers' user) and only root can" \
    "give them away: run with sudo, or pass --owner $(id -u):$(id -g) and set" \
    "FEDFWD_UID=$(id -u) FEDFWD_GID=$(id -g) for docker-compose (deploy/.env)"
fi

name_args=()
for n in "${NAMES[@]}"; do name_args+=(--server-name "$n"); done
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
PKI="$DIR/pki"
# The server certificate is made again on every call (the names may have
# changed); client credentials that exist are kept.
clients=()
[[ -f "$PKI/clients/compose-client.token" ]] || clients+=(--client compose-client)
[[ -f "$PKI/clients/healthcheck.token" ]] || clients+=(--client healthcheck)
bash "$ROOT/scripts/make-certs.sh" "$PKI" "${name_args[@]}" "${clients[@]}" >/dev/null

umask 077
# Files are replaced one by one (rename in the same folder), never the
# folder itself: a running container's bind mount keeps pointing at it, so
# the coordinator sees a new credentials file.
install_set() {  # target_dir src:dst...
  local target="$1" pair dst
  shift
  mkdir -p "$target"
  for pair in "$@"; do
    dst="${pair##*:}"
    cp "$PKI/${pair%%:*}" "$target/.$dst.tmp"
    case "$dst" in *.pem) chmod 644 "$target/.$dst.tmp" ;; *) chmod 600 "$target/.$dst.tmp" ;; esac
    chown "$OWNER" "$target/.$dst.tmp"
    mv -f "$target/.$dst.tmp" "$target/$dst"
  done
  chmod 700 "$target"
  chown "$OWNER" "$target"
}
# The health check's certificate only opens the TLS session (mutual TLS);
# its token must not be able to train, so its credential line is dropped.
grep -v -E '^client[[:space:]]+healthcheck[[:space:]]' "$PKI/credentials" >"$PKI/credentials.compose"
install_set "$DIR/coordinator" server.pem:server.pem server.key:server.key \
  ca.pem:ca.pem credentials.compose:credentials status.token:status.token \
  clients/healthcheck.pem:healthcheck.pem clients/healthcheck.key:healthcheck.key
rm -f "$PKI/credentials.compose"
install_set "$DIR/client" ca.pem:ca.pem clients/compose-client.pem:client.pem \
  clients/compose-client.key:client.key clients/compose-client.token:client.token

echo "compose secrets in $DIR (owner $OWNER): coordinator/ for the coordinator, client/ shared by every client replica"
echo "coordinator certificate names: ${NAMES[*]}"
