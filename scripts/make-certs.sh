#!/usr/bin/env bash
# Makes a private CA, a coordinator certificate, client certificates, client
# tokens and the coordinator's credentials file, for deployments where the
# coordinator and the client daemons run on different machines or in
# containers. (fedfwd-run makes its own throwaway set for loopback runs.)
#
# usage: scripts/make-certs.sh OUT_DIR --server-name NAME [--server-name NAME]...
#                              [--client NAME]... [--clients N] [--days D]
#                              [--peer-certs]
#
#   --server-name  a DNS name or IP address clients use to reach the
#                  coordinator (repeat for each; the first is the subject CN)
#   --client       a client identity (repeat); --clients N adds client-0..N-1
#   --days         validity (default 365)
#   --peer-certs   client certificates also serve a decentralized daemon's
#                  peer service (fedfwd-client --peer-tls-cert) under the
#                  client's name: subjectAltName DNS:NAME and serverAuth
#                  besides clientAuth. For hosts whose name is the client's
#                  name (docker-compose services); elsewhere make the peer
#                  certificate for the host's own name.
#
# Writes into OUT_DIR (mode 0700):
#   ca.pem ca.key                   the CA (keep ca.key offline; rerunning with
#                                   the same OUT_DIR reuses it for new clients)
#   server.pem server.key           for fedfwd-server --tls-cert/--tls-key
#   clients/NAME.pem/.key/.token    for fedfwd-client --tls-cert/--tls-key/
#                                   --token-file (copy these and ca.pem to
#                                   the client's machine)
#   status.token                    read-only status credential
#   credentials                     for fedfwd-server --credentials (token
#                                   hashes only; add or delete lines to admit
#                                   or revoke, the server re-reads it)
# Needs the openssl command (Debian package openssl).
set -euo pipefail

die() { echo "make-certs: error: $*" >&2; exit 2; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

OUT=""
SERVER_NAMES=()
CLIENTS=()
DAYS=365
PEER_CERTS=0
while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --server-name) [[ $# -ge 2 ]] || die "--server-name needs a value"; SERVER_NAMES+=("$2"); shift 2 ;;
    --client) [[ $# -ge 2 ]] || die "--client needs a value"; CLIENTS+=("$2"); shift 2 ;;
    --clients)
      [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || die "--clients needs a number"
      for ((i = 0; i < $2; i++)); do CLIENTS+=("client-$i"); done; shift 2 ;;
    --peer-certs) PEER_CERTS=1; shift ;;
    --days) [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || die "--days needs a number"; DAYS="$2"; shift 2 ;;
    -*) die "unknown option '$1' (try --help)" ;;
    *) [[ -z "$OUT" ]] || die "one OUT_DIR only"; OUT="$1"; shift ;;
  esac
done
[[ -n "$OUT" ]] || { usage >&2; exit 2; }
((${#SERVER_NAMES[@]} > 0)) || die "give at least one --server-name"
command -v openssl >/dev/null || die "openssl not found (apt-get install openssl)"
for c in "${CLIENTS[@]}"; do
  [[ "$c" =~ ^[A-Za-z0-9._-]+$ ]] || die "client name '$c': use letters, digits, . _ -"
  [[ "$c" != "status" ]] || die "'status' is reserved for the status credential"
done

umask 077
mkdir -p "$OUT/clients"
chmod 700 "$OUT" "$OUT/clients"
cd "$OUT"

san=""
for n in "${SERVER_NAMES[@]}"; do
  if [[ "$n" =~ ^[0-9.]+$ || "$n" == *:* ]]; then san+="IP:$n,"; else san+="DNS:$n,"; fi
done
san="${san%,}"

if [[ ! -f ca.key || ! -f ca.pem ]]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout ca.key -out ca.pem -days "$DAYS" -subj "/O=fedfwd/CN=fedfwd CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  echo "made CA: $OUT/ca.pem"
fi

sign() {  # name cn ext
  local name="$1" cn="$2" ext="$3"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$name.key" -out "$name.csr" -subj "/O=fedfwd/CN=$cn" 2>/dev/null
  printf '%b' "$ext" > "$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
    -out "$name.pem" -days "$DAYS" -sha256 -extfile "$name.ext" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
  chmod 600 "$name.key"
  chmod 644 "$name.pem"
}

sign server "${SERVER_NAMES[0]}" \
  "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=$san\n"
echo "made coordinator certificate for $san: $OUT/server.pem"
chmod 644 ca.pem

touch credentials
add_credential() {  # role name tokenfile
  local role="$1" name="$2" file="$3" token hash
  token="$(openssl rand -hex 32)"
  printf '%s\n' "$token" > "$file"
  hash="$(printf '%s' "$token" | openssl dgst -sha256 -r | cut -d' ' -f1)"
  # Replace an older line for the same name.
  grep -v -E "^[a-z]+[[:space:]]+$name[[:space:]]" credentials > credentials.tmp || true
  printf '%s %s %s\n' "$role" "$name" "$hash" >> credentials.tmp
  mv credentials.tmp credentials
}
[[ -f status.token ]] || add_credential status status status.token

for c in "${CLIENTS[@]}"; do
  if ((PEER_CERTS)); then
    ext="extendedKeyUsage=clientAuth,serverAuth\nsubjectAltName=DNS:$c\n"
  else
    ext="extendedKeyUsage=clientAuth\n"
  fi
  sign "clients/$c" "$c" \
    "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n$ext"
  add_credential client "$c" "clients/$c.token"
  echo "made client $c: $OUT/clients/$c.{pem,key,token}"
done
echo "coordinator: fedfwd-server --tls-cert $OUT/server.pem --tls-key $OUT/server.key --tls-ca $OUT/ca.pem --credentials $OUT/credentials ..."
