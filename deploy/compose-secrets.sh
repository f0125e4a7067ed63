#!/usr/bin/env bash
# Makes the certificates, tokens and credentials file of the docker-compose
# federation (deploy/docker-compose.yml), one identity per client service,
# with scripts/make-certs.sh, lays them out so each container sees only its
# own, and writes the compose file of the client services.
#
# usage: deploy/compose-secrets.sh [--clients N] [--dir DIR] [--owner UID:GID]
#                                  [--server-name NAME]... [--revoke NAME]...
#   --clients      client services client-1 ... client-N (default 3), each
#                  with its own certificate and token; existing identities
#                  are kept, so a larger N adds clients
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
#   --revoke       take a client's credential out of the coordinator's
#                  credentials file (e.g. --revoke client-2): the running
#                  coordinator re-reads the file and refuses that client
#                  only; its service stays in clients.yml (stop it with
#                  docker-compose stop client-2). Rerunning without
#                  --revoke does not readmit it: delete DIR/pki/clients/NAME.*
#                  and run again for a fresh identity
#
# Writes:
#   DIR/pki/          make-certs.sh's folder: the CA (ca.key stays here,
#                     mounted nowhere) and every credential
#   DIR/coordinator/  server.pem server.key ca.pem credentials status.token,
#                     healthcheck.pem/.key (a certificate for fedfwd-ctl's TLS
#                     handshake; its token is not admitted, the health check
#                     authenticates with status.token)
#   DIR/client-I/     ca.pem client.pem client.key client.token of client-I
#                     (its certificate also serves the peer service under
#                     the name client-I)
#   DIR/clients.yml   the client services, for docker-compose's second -f:
#                     docker-compose -f deploy/docker-compose.yml -f DIR/clients.yml up -d
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="$ROOT/deploy/secrets"
OWNER="10001:10001"
NAMES=(coordinator)
CLIENTS=3
REVOKE=()

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }
die() { echo "compose-secrets: error: $*" >&2; exit 2; }

while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --clients)
      [[ $# -ge 2 && "$2" =~ ^[1-9][0-9]*$ ]] || die "--clients needs a positive number"
      CLIENTS="$2"; shift 2 ;;
    --dir) [[ $# -ge 2 ]] || die "--dir needs a folder"; DIR="$2"; shift 2 ;;
    --owner) [[ $# -ge 2 ]] || die "--owner needs UID:GID"; OWNER="$2"; shift 2 ;;
    --server-name) [[ $# -ge 2 ]] || die "--server-name needs a value"; NAMES+=("$2"); shift 2 ;;
    --revoke)
      [[ $# -ge 2 && "$2" =~ ^client-[1-9][0-9]*$ ]] || die "--revoke needs a client name like client-2"
      REVOKE+=("$2"); shift 2 ;;
    *) die "unknown option '$1' (try --help)" ;;
  esac
done
((CLIENTS <= 1000)) || die "--clients $CLIENTS: at most 1000"
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
for ((i = 1; i <= CLIENTS; i++)); do
  [[ -f "$PKI/clients/client-$i.token" ]] || clients+=(--client "client-$i")
done
[[ -f "$PKI/clients/healthcheck.token" ]] || clients+=(--client healthcheck)
bash "$ROOT/scripts/make-certs.sh" "$PKI" "${name_args[@]}" --peer-certs "${clients[@]}" >/dev/null

# Revoked clients leave the credentials file for good (make-certs.sh only
# adds lines for the identities it makes).
for r in "${REVOKE[@]}"; do
  grep -q -E "^client[[:space:]]+${r}[[:space:]]" "$PKI/credentials" ||
    echo "compose-secrets: note: $r has no credential (already revoked?)" >&2
  grep -v -E "^client[[:space:]]+${r}[[:space:]]" "$PKI/credentials" >"$PKI/credentials.tmp" || true
  mv -f "$PKI/credentials.tmp" "$PKI/credentials"
done

# Identities beyond N (an earlier, larger --clients) get no service here,
# but their credentials stay admitted until revoked.
beyond=()
for t in "$PKI"/clients/client-*.token; do
  [[ -e "$t" ]] || continue
  c="$(basename "$t" .token)"
  ((${c#client-} > CLIENTS)) || continue
  grep -q -E "^client[[:space:]]+${c}[[:space:]]" "$PKI/credentials" && beyond+=("$c")
done
if ((${#beyond[@]} > 0)); then
  echo "compose-secrets: note: identities beyond --clients $CLIENTS (${beyond[*]}) have no service in clients.yml, but" \
    "their credentials are still admitted; --revoke them if they are gone" >&2
fi

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
for ((i = 1; i <= CLIENTS; i++)); do
  install_set "$DIR/client-$i" ca.pem:ca.pem clients/client-$i.pem:client.pem \
    clients/client-$i.key:client.key clients/client-$i.token:client.token
done

# The client services. `extends` copies deploy/compose-client.yml's
# `client`; depends_on is never inherited, so it is here.
{
  cat <<EOT
# Generated by deploy/compose-secrets.sh --clients $CLIENTS; run it again to
# change the clients (edits here are lost). The second compose file:
#   docker-compose -f $ROOT/deploy/docker-compose.yml -f $DIR/clients.yml up -d
version: "3.8"

services:
  coordinator:
    environment:
      FEDFWD_CLIENTS: "$CLIENTS"
EOT
  for ((i = 1; i <= CLIENTS; i++)); do
    cat <<EOT
  client-$i:
    extends:
      file: $ROOT/deploy/compose-client.yml
      service: client
    hostname: client-$i
    volumes:
      - $DIR/client-$i:/secrets:ro
    depends_on:
      - coordinator
EOT
  done
} >"$DIR/.clients.yml.tmp"
mv -f "$DIR/.clients.yml.tmp" "$DIR/clients.yml"
chmod 644 "$DIR/clients.yml"

echo "compose secrets in $DIR (owner $OWNER): coordinator/, client-1/ ... client-$CLIENTS/ (one identity each)"
echo "coordinator certificate names: ${NAMES[*]}"
((${#REVOKE[@]} == 0)) || echo "revoked: ${REVOKE[*]} (the coordinator re-reads its credentials file)"
echo "client services: $DIR/clients.yml (docker-compose -f deploy/docker-compose.yml -f $DIR/clients.yml ...)"
