#!/usr/bin/env bash
# Checks deploy/systemd/: `systemd-analyze verify` accepts both units (with
# /usr/local/bin pointed at the built programs, since verify checks that
# ExecStart= is executable; a machine without systemd-analyze fails: the
# Debian package systemd has it, scripts/setup.sh --test-tools installs
# it), every variable an ExecStart= uses is set in the shipped env file,
# and every flag of the expanded ExecStart= lines is one the program's --help
# lists. Exit 0 pass, 1 fail, 77 skip (programs not built).
#   tests/deploy/systemd_units.sh BIN_DIR
set -euo pipefail
TEST_NAME=systemd_units
# shellcheck source=tests/deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BIN="${1:?usage: systemd_units.sh BIN_DIR}"
[[ -d "$BIN" ]] || skip "$BIN: no such folder (not built)"
BIN="$(cd "$BIN" && pwd)"
UNITS="$DEPLOY_ROOT/deploy/systemd"
for p in fedfwd-server fedfwd-client; do
  [[ -x "$BIN/$p" ]] || skip "$BIN/$p not built"
done
WORK="$(mktemp -d "${TMPDIR:-/tmp}/fedfwd-units.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# The programs where the units expect them (/usr/local/bin), in a scratch
# folder.
mkdir -p "$WORK/bin" "$WORK/units"
ln -s "$BIN/fedfwd-server" "$BIN/fedfwd-client" "$WORK/bin/"
ln -s "$DEPLOY_ROOT/deploy/fedfwd-coordinator-start" "$WORK/bin/"
sed "s#/usr/local/bin/#$WORK/bin/#g" "$UNITS/fedfwd-coordinator.service" \
  >"$WORK/units/fedfwd-coordinator.service"
sed "s#/usr/local/bin/#$WORK/bin/#g" "$UNITS/fedfwd-client@.service" \
  >"$WORK/units/fedfwd-client@.service"
cp "$WORK/units/fedfwd-client@.service" "$WORK/units/fedfwd-client@3.service"

if command -v systemd-analyze >/dev/null; then
  if ! out="$(cd "$WORK/units" && systemd-analyze verify \
    ./fedfwd-coordinator.service ./fedfwd-client@3.service 2>&1)"; then
    fail "systemd-analyze verify: $out"
  fi
  # verify also exits 0 on some warnings; none is expected.
  [[ -z "$out" ]] || fail "systemd-analyze verify printed: $out"
  say "systemd-analyze verify: both units clean"
else
  fail "no systemd-analyze here (Debian package systemd; scripts/setup.sh --test-tools installs it)"
fi

# Every unit key the guide relies on.
for key in User=fedfwd EnvironmentFile=/etc/fedfwd/coordinator.env \
  StateDirectory=fedfwd Restart=on-failure NoNewPrivileges=yes \
  ProtectSystem=strict ProtectHome=yes PrivateTmp=yes; do
  grep -qx "$key" "$UNITS/fedfwd-coordinator.service" ||
    fail "fedfwd-coordinator.service lacks $key"
done
for key in User=fedfwd EnvironmentFile=/etc/fedfwd/client.env Restart=always \
  NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes PrivateTmp=yes; do
  grep -qx "$key" "$UNITS/fedfwd-client@.service" ||
    fail "fedfwd-client@.service lacks $key"
done

# The expanded command lines, flag by flag.
mapfile -t co < <(expand_exec_start "$UNITS/fedfwd-coordinator.service" \
  "$UNITS/coordinator.env" "")
[[ "${co[0]}" == /usr/local/bin/fedfwd-coordinator-start ]] ||
  fail "coordinator ExecStart runs ${co[0]}, expected fedfwd-coordinator-start"
check_flags_in_help "fedfwd-coordinator.service (fedfwd-server)" \
  "$(help_of "$BIN" fedfwd-server)" "${co[@]:1}"
printf '%s\n' "${co[@]}" | grep -qx -- --out || fail "coordinator: no --out"
printf '%s\n' "${co[@]}" | grep -qx '/var/lib/fedfwd/run-1' ||
  fail "coordinator: --out is not under the StateDirectory /var/lib/fedfwd"

mapfile -t cl < <(expand_exec_start "$UNITS/fedfwd-client@.service" \
  "$UNITS/client.env" 3)
[[ "${cl[0]}" == /usr/local/bin/fedfwd-client ]] ||
  fail "client ExecStart runs ${cl[0]}"
check_flags_in_help "fedfwd-client@.service" "$(help_of "$BIN" fedfwd-client)" "${cl[@]:1}"
joined=" ${cl[*]} "
[[ "$joined" == *" --shard 3 "* ]] || fail "client: the instance is not the shard: $joined"
[[ "$joined" == *" --stay "* ]] || fail "client: no --stay: $joined"
[[ "$joined" == *" --health-file /run/fedfwd-client-3/health "* ]] ||
  fail "client: health file not in its RuntimeDirectory: $joined"
grep -qx 'RuntimeDirectory=fedfwd-client-%i' "$UNITS/fedfwd-client@.service" ||
  fail "client: RuntimeDirectory does not match the health file"
say "PASS: units verified, ExecStart flags known to the programs"
