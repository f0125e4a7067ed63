#!/usr/bin/env bash
# Checks deploy/Dockerfile without a Docker engine, against the programs
# built here (the builder stage runs the same scripts/setup.sh that built
# them):
#   - the builder stage builds with `scripts/setup.sh --no-data`, and
#     .dockerignore keeps build trees, data, runs and secrets out;
#   - every program the image copies (FEDFWD_PROGRAMS) exists in BIN_DIR;
#   - every library a program links directly (ELF NEEDED) comes from a
#     Debian package named in the runtime stage's apt-get install list;
#   - every library `ldd` resolves comes from that list or from what apt
#     installs with it (the Depends closure, apt-cache depends --recurse);
#   - libblas.so.3 and liblapack.so.3 resolve to libopenblas0-pthread, and
#     the list names it (else apt may pick the reference BLAS).
# Exit 0 pass, 1 fail, 77 skip (no dpkg / apt-cache: not a Debian machine).
#   tests/deploy/runtime_libs.sh BIN_DIR
set -euo pipefail
TEST_NAME=runtime_libs
# shellcheck source=tests/deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BIN="${1:?usage: runtime_libs.sh BIN_DIR}"
# FEDFWD_DOCKERFILE: check another Dockerfile (to test this test).
DOCKERFILE="${FEDFWD_DOCKERFILE:-$DEPLOY_ROOT/deploy/Dockerfile}"
for tool in dpkg apt-cache ldd objdump; do
  command -v "$tool" >/dev/null || skip "no $tool here (the check needs a Debian machine)"
done
[[ -d "$BIN" ]] || fail "$BIN: no such folder (build first)"

# ---- the builder stage and the build context ----
grep -Eq '^FROM debian:12 AS build$' "$DOCKERFILE" || fail "no 'FROM debian:12 AS build' stage"
grep -Eq '^FROM debian:12-slim AS runtime-base$' "$DOCKERFILE" || fail "no 'FROM debian:12-slim AS runtime-base' stage"
grep -Eq '^FROM runtime-base AS runtime$' "$DOCKERFILE" || fail "no 'FROM runtime-base AS runtime' stage"
grep -Eq '^FROM runtime-base AS runtime-prebuilt$' "$DOCKERFILE" || fail "no 'FROM runtime-base AS runtime-prebuilt' stage"
grep -Eq 'bash scripts/setup.sh --no-data' "$DOCKERFILE" ||
  fail "the builder does not run scripts/setup.sh --no-data"
for pattern in build 'build-*' data runs deploy/secrets; do
  grep -qx -- "$pattern" "$DEPLOY_ROOT/.dockerignore" ||
    fail ".dockerignore does not exclude $pattern"
done

# ---- the programs ----
programs="$(sed -n 's/^ARG FEDFWD_PROGRAMS="\(.*\)"$/\1/p' "$DOCKERFILE")"
[[ -n "$programs" ]] || fail "no ARG FEDFWD_PROGRAMS=\"...\" line in the Dockerfile"
paths=()
for p in $programs; do
  [[ -x "$BIN/$p" ]] || fail "the image copies $p, but $BIN/$p does not exist"
  paths+=("$BIN/$p")
done
for p in fedfwd-server fedfwd-client fedfwd-ctl; do
  [[ " $programs " == *" $p "* ]] || fail "the image lacks $p"
done

# ---- the runtime stage's package list ----
# The words after "apt-get install -y --no-install-recommends" up to the
# one that ends with ";" in the runtime stage.
mapfile -t listed < <(awk '
  /^FROM debian:12-slim/ { rt = 1 }
  rt && /apt-get install -y --no-install-recommends/ { on = 1; sub(/.*--no-install-recommends/, "") }
  on {
    gsub(/\\/, "")
    for (i = 1; i <= NF; i++) {
      w = $i; last = (w ~ /;$/); sub(/;$/, "", w)
      if (w != "") print w
      if (last) exit
    }
  }' "$DOCKERFILE")
((${#listed[@]} > 0)) || fail "no runtime apt-get install list found"
say "runtime packages: ${listed[*]}"
if ! err="$(apt-cache show "${listed[@]}" 2>&1 >/dev/null)" || [[ -n "$err" ]]; then
  fail "apt does not know every runtime package: $err"
fi
declare -A in_list=()
for pkg in "${listed[@]}"; do in_list[$pkg]=1; done

# ---- which package holds each library ----
# ldd of every program, once; then one dpkg -S for all the files (merged
# /usr: each file is asked for under /lib and /usr/lib, as found and with
# symlinks resolved).
declare -A ldd_of=()
for exe in "${paths[@]}"; do
  ldd_of[$exe]="$(ldd "$exe")" || fail "ldd $exe failed"
done
mapfile -t resolved < <(for exe in "${paths[@]}"; do
  awk '$2 == "=>" && $3 ~ /^\// { print $3 }' <<<"${ldd_of[$exe]}"
done | sort -u)
# All the names each file may have (merged /usr: under /lib and /usr/lib, as
# found and with symlinks resolved), without a process per file.
mapfile -t reals < <(readlink -f "${resolved[@]}")
declare -A cands_of=()
all_cands=()
for i in "${!resolved[@]}"; do
  f="${resolved[i]}"
  real="${reals[i]}"
  c="$f $real /usr${f#/usr} /usr${real#/usr}"
  [[ "$f" == /usr/* ]] && c+=" ${f#/usr}"
  [[ "$real" == /usr/* ]] && c+=" ${real#/usr}"
  cands_of[$f]="$c"
  # shellcheck disable=SC2206  # the names hold no spaces
  all_cands+=($c)
done
declare -A pkg_of_path=()
while IFS= read -r line; do
  [[ "$line" == *": /"* ]] || continue
  pkg="${line%%: /*}"
  pkg="${pkg%%,*}"
  pkg="${pkg%%:*}"
  pkg_of_path["/${line#*: /}"]="$pkg"
done < <(printf '%s\n' "${all_cands[@]}" | sort -u | xargs dpkg -S 2>/dev/null || true)
declare -A pkg_of_file=()
for f in "${resolved[@]}"; do
  for c in ${cands_of[$f]}; do
    if [[ -n "${pkg_of_path[$c]+x}" ]]; then
      pkg_of_file[$f]="${pkg_of_path[$c]}"
      break
    fi
  done
done
package_of() {  # FILE -> its package, or fails
  [[ -n "${pkg_of_file[$1]+x}" ]] || return 1
  echo "${pkg_of_file[$1]}"
}
file_of() {  # EXE SONAME -> the file ldd resolved it to
  awk -v s="$2" '$1 == s && $2 == "=>" { print $3; exit }' <<<"${ldd_of[$1]}"
}

# ---- direct dependencies: each must be listed ----
declare -A seen=()
for exe in "${paths[@]}"; do
  while read -r soname; do
    [[ -z "${seen[$soname]+x}" ]] || continue
    seen[$soname]=1
    file="$(file_of "$exe" "$soname")"
    [[ "$file" == /* ]] || fail "$exe: ldd does not find $soname"
    pkg="$(package_of "$file")" || fail "$soname ($file) belongs to no Debian package"
    [[ -n "${in_list[$pkg]+x}" ]] ||
      fail "$(basename "$exe") links $soname from package $pkg, which the Dockerfile's runtime list lacks"
  done < <(objdump -p "$exe" | awk '$1 == "NEEDED" { print $2 }')
done
say "every directly linked library's package is listed (${#seen[@]} sonames)"

# ---- everything ldd resolves: listed or pulled in by apt ----
mapfile -t closure < <(apt-cache depends --recurse --no-recommends --no-suggests \
  --no-conflicts --no-breaks --no-replaces --no-enhances "${listed[@]}" |
  awk '/^[^ <]/ { print $1 }' | sort -u)
declare -A in_closure=()
for pkg in "${closure[@]}"; do in_closure[$pkg]=1; done
for file in "${resolved[@]}"; do
  [[ -n "${pkg_of_file[$file]+x}" ]] || fail "$file (needed at run time) belongs to no Debian package"
  pkg="${pkg_of_file[$file]}"
  [[ -n "${in_closure[$pkg]+x}" ]] ||
    fail "$file comes from $pkg, which installing the runtime list would not bring"
done
say "all ${#resolved[@]} libraries ldd resolves come with the runtime list"

# ---- BLAS ----
[[ -n "${in_list[libopenblas0-pthread]+x}" ]] || fail "the runtime list lacks libopenblas0-pthread"
for so in libblas.so.3 liblapack.so.3; do
  file=""
  for exe in "${paths[@]}"; do
    file="$(file_of "$exe" "$so")"
    [[ -z "$file" ]] || break
  done
  [[ -n "$file" ]] || continue
  pkg="$(package_of "$file")" || fail "$so ($file) belongs to no package"
  [[ "$pkg" == libopenblas0-pthread ]] ||
    fail "$so resolves to $file from $pkg here, not OpenBLAS (pthread): libtorch would run slowly"
done
say "PASS"
