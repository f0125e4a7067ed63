# Helpers shared by the tests in tests/deploy/ (sourced, not run).
# shellcheck shell=bash

# shellcheck disable=SC2034  # used by the tests that source this
DEPLOY_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

say() { echo "[${TEST_NAME:-deploy}] $*"; }
fail() { echo "[${TEST_NAME:-deploy}] FAIL: $*" >&2; exit 1; }
skip() { echo "[${TEST_NAME:-deploy}] SKIP: $*"; exit 77; }

# Prints the --help text of a program (for fedfwd-ctl: of its subcommand).
#   help_of BIN_DIR PROGRAM [SUBCOMMAND]
help_of() {
  local bin="$1" prog="$2" sub="${3:-}"
  if [[ -n "$sub" ]]; then "$bin/$prog" "$sub" --help; else "$bin/$prog" --help; fi
}

# Fails unless every --flag among ARGS appears in HELP_TEXT (CLI11 lists
# options as "  --name TYPE" or "-h,--help").
#   check_flags_in_help WHAT HELP_TEXT ARGS...
check_flags_in_help() {
  local what="$1" help="$2" arg flag
  shift 2
  for arg in "$@"; do
    [[ "$arg" == --* ]] || continue
    flag="${arg%%=*}"
    grep -Eq -- "(^|[[:space:],])${flag}([[:space:]=]|\$)" <<<"$help" ||
      fail "$what: flag $flag is not in the program's --help"
  done
}

# Expands a systemd unit's ExecStart= the way systemd does for the simple
# forms the fedfwd units use: %i and %H, "${VAR}" inside a word (one word),
# "$VAR" as a whole word (split at whitespace), variables from ENV_FILE
# (KEY=VALUE lines; # comments). Prints one argument per line.
#   expand_exec_start UNIT_FILE ENV_FILE INSTANCE
expand_exec_start() {
  local unit="$1" env_file="$2" instance="$3" line key value word name out
  local -
  set -f  # no globbing of the words
  declare -A vars=()
  while IFS= read -r line || [[ -n "$line" ]]; do
    [[ "$line" =~ ^[[:space:]]*(#|$) ]] && continue
    [[ "$line" =~ ^([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] ||
      fail "$env_file: cannot parse line '$line'"
    key="${BASH_REMATCH[1]}"
    value="${BASH_REMATCH[2]}"
    vars[$key]="$value"
  done <"$env_file"
  line="$(sed -n 's/^ExecStart=//p' "$unit")"
  [[ -n "$line" ]] || fail "$unit has no ExecStart="
  line="${line//%i/$instance}"
  line="${line//%H/$(hostname)}"
  for word in $line; do
    if [[ "$word" =~ ^\$([A-Za-z_][A-Za-z0-9_]*)$ ]]; then
      name="${BASH_REMATCH[1]}"
      [[ -n "${vars[$name]+set}" ]] || fail "$unit uses \$$name, which $env_file does not set"
      # shellcheck disable=SC2086  # systemd splits $VAR at whitespace
      for value in ${vars[$name]}; do printf '%s\n' "$value"; done
      continue
    fi
    out="$word"
    while [[ "$out" =~ \$\{([A-Za-z_][A-Za-z0-9_]*)\} ]]; do
      name="${BASH_REMATCH[1]}"
      [[ -n "${vars[$name]+set}" ]] || fail "$unit uses \${$name}, which $env_file does not set"
      out="${out//\$\{$name\}/${vars[$name]}}"
    done
    printf '%s\n' "$out"
  done
}

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
