#!/usr/bin/env bash
# Checks deploy/docker-compose.yml with the client file
# deploy/compose-secrets.sh generates, through Debian's docker-compose (no
# Docker engine needed): `docker-compose config` accepts them, and what it
# renders holds what deploy/README.md promises:
#   - services coordinator and client-1 ... client-N, one image; the
#     coordinator's FEDFWD_CLIENTS is N (compose-secrets.sh --clients N);
#   - each client has its own identity: its own secrets folder with its own
#     certificate (for its service name, also serving the peer service) and
#     token, each token admitted by the coordinator's credentials file, and
#     --revoke takes out one credential only;
#   - clients run --stay without --shard, dial coordinator:50051, serve the
#     peer service on every address;
#   - data, config and secrets mounted read-only; /out only on the
#     coordinator; each service sees only its own secrets folder;
#   - health checks: fedfwd-ctl status with the status token; the client's
#     health-file test passes on a fresh file and fails on a stale or
#     missing one (run here, as the container's shell would run it);
#   - restart policies (coordinator on-failure with a bound, clients
#     unless-stopped);
#   - deploy/compose-secrets.sh makes every file the commands name;
#   - with BIN_DIR: every flag in the commands and health checks is one the
#     programs' --help lists.
# Exit 0 pass, 1 fail (docker-compose missing: scripts/setup.sh
# --test-tools installs it).
#   tests/deploy/compose_config.sh [BIN_DIR]
set -euo pipefail
TEST_NAME=compose_config
# shellcheck source=tests/deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BIN="${1:-}"
command -v docker-compose >/dev/null ||
  fail "docker-compose not installed (scripts/setup.sh --test-tools installs it)"
# FEDFWD_COMPOSE_FILE: check another compose file (to test this test).
COMPOSE="${FEDFWD_COMPOSE_FILE:-$DEPLOY_ROOT/deploy/docker-compose.yml}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/fedfwd-compose.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# The secrets as the guide makes them (as root they go to uid 10001, else to
# us), in a scratch folder the compose file is pointed at: 3 clients, then 7
# (the identities of the first 3 are kept).
owner=()
[[ "$(id -u)" -eq 0 ]] || owner=(--owner "$(id -u):$(id -g)")
secrets() {  # N OUT_FILE [more compose-secrets.sh flags]: clients.yml rendered
  local n="$1" out="$2"
  shift 2
  bash "$DEPLOY_ROOT/deploy/compose-secrets.sh" --dir "$WORK/secrets" --clients "$n" \
    "${owner[@]}" "$@" >"$WORK/secrets.log" 2>&1 ||
    fail "compose-secrets.sh --clients $n: $(cat "$WORK/secrets.log")"
  if ! env -u FEDFWD_CONFIG -u FEDFWD_DATA_DIR -u FEDFWD_OUT \
    FEDFWD_SECRETS_DIR="$WORK/secrets" docker-compose -f "$COMPOSE" \
    -f "$WORK/secrets/clients.yml" config >"$out" 2>"$WORK/config.err"; then
    fail "docker-compose config (--clients $n) refused the files: $(cat "$WORK/config.err")"
  fi
}
secrets 3 "$WORK/config-3.yml"
cp "$WORK/secrets/client-1/client.token" "$WORK/client-1.token.before"
secrets 7 "$WORK/config-7.yml"
cmp -s "$WORK/client-1.token.before" "$WORK/secrets/client-1/client.token" ||
  fail "compose-secrets.sh --clients 7 replaced client-1's token (existing identities must stay)"
say "docker-compose $(docker-compose version --short 2>/dev/null || echo '?') config accepts the files"

# Revoking one client takes its credential line out, and only its line.
cp -a "$WORK/secrets" "$WORK/secrets-revoke"
bash "$DEPLOY_ROOT/deploy/compose-secrets.sh" --dir "$WORK/secrets-revoke" --clients 7 \
  "${owner[@]}" --revoke client-2 >"$WORK/revoke.log" 2>&1 ||
  fail "compose-secrets.sh --revoke client-2: $(cat "$WORK/revoke.log")"
diff <(awk '{ print $1, $2 }' "$WORK/secrets/coordinator/credentials") \
  <(awk '{ print $1, $2 }' "$WORK/secrets-revoke/coordinator/credentials") >"$WORK/revoke.diff" || true
if [[ "$(grep -c '^[<>]' "$WORK/revoke.diff")" != 1 ]] || ! grep -q '^< client client-2$' "$WORK/revoke.diff"; then
  fail "--revoke client-2 changed the credentials otherwise: $(cat "$WORK/revoke.diff")"
fi
say "--revoke client-2 takes out client-2's credential only"

# docker-compose's own interpreter: it has PyYAML and the compose package
# (whose scale rule the script asks).
PY_COMPOSE="$(head -n 1 "$(command -v docker-compose)" | sed -n 's/^#![[:space:]]*//p')"
[[ -x "${PY_COMPOSE%% *}" ]] || PY_COMPOSE=python3
$PY_COMPOSE - "$WORK" "$BIN" <<'PY'
import os, shlex, subprocess, sys, time
import yaml

work, bin_dir = sys.argv[1], sys.argv[2]
problems = []
def check(cond, what):
    if not cond:
        problems.append(what)

try:
    from compose.project import Project
except ImportError:
    Project = None
    print("[compose_config] note: the compose package is not importable; "
          "replicas read from the file only")

def load(n):
    with open(os.path.join(work, "config-%d.yml" % n)) as f:
        return yaml.safe_load(f)

import hashlib
for n in (3, 7):
    cfg = load(n)
    svcs = cfg.get("services", {})
    names = ["client-%d" % i for i in range(1, n + 1)]
    check(set(svcs) == {"coordinator", *names},
          "--clients %d: services are %s, expected coordinator and %s" % (n, sorted(svcs), names))
    if set(svcs) != {"coordinator", *names}:
        continue
    co = svcs["coordinator"]
    check(str((co.get("environment") or {}).get("FEDFWD_CLIENTS")) == str(n),
          "--clients %d: the coordinator's FEDFWD_CLIENTS is %r" % (n, co.get("environment")))
    co_cmd = shlex.split(co["command"])
    check("clients=%d" % n not in co_cmd, "the coordinator's command fixes clients: %s" % co_cmd)
    cl = svcs["client-1"]
    cl_cmd = shlex.split(cl["command"])
    for name in names:
        c = svcs[name]
        check(shlex.split(c["command"]) == cl_cmd, "%s runs another command than client-1" % name)
        check(c.get("hostname") == name, "%s has host name %r (peers dial the service name)"
              % (name, c.get("hostname")))
        check("coordinator" in (c.get("depends_on") or {}), "%s does not depend on the coordinator" % name)
        if Project is not None:
            scale = Project.get_service_scale(None, dict(c))
            check(scale == 1, "docker-compose would start %r of %s, not 1" % (scale, name))
    if n != 3:
        continue
    # One identity per client: its own folder, certificate for its name
    # (client and server use: the peer service), and admitted token.
    creds = {}
    with open(os.path.join(work, "secrets", "coordinator", "credentials")) as f:
        for line in f:
            role, who, digest = line.split()
            creds[who] = (role, digest)
    tokens = set()
    for name in names:
        src = [v.split(":")[0] for v in svcs[name].get("volumes", []) if v.split(":")[1] == "/secrets"]
        check(src == [os.path.join(work, "secrets", name)], "%s mounts /secrets from %s" % (name, src))
        if not src:
            continue
        with open(os.path.join(src[0], "client.token")) as f:
            token = f.readline().strip()
        tokens.add(token)
        check(creds.get(name) == ("client", hashlib.sha256(token.encode()).hexdigest()),
              "%s's token is not admitted as client %s by the coordinator's credentials" % (name, name))
        text = subprocess.run(["openssl", "x509", "-noout", "-text", "-in",
                               os.path.join(src[0], "client.pem")],
                              capture_output=True, text=True).stdout
        check("CN = %s" % name in text or "CN=%s" % name in text, "%s's certificate is not for %s" % (name, name))
        check("DNS:%s" % name in text, "%s's certificate lacks subjectAltName DNS:%s" % (name, name))
        check("TLS Web Server Authentication" in text and "TLS Web Client Authentication" in text,
              "%s's certificate is not for both client and server (peer) use" % name)
    check(len(tokens) == n, "clients share tokens")
    check("healthcheck" not in creds, "the health check's token is admitted")
    check(co.get("image") == cl.get("image"), "coordinator and client use other images")
    check(co.get("build", {}).get("dockerfile") == "deploy/Dockerfile",
          "the coordinator is not built from deploy/Dockerfile")
    check(co_cmd[0] == "fedfwd-coordinator-start", "coordinator runs %s" % co_cmd[0])
    def opt(cmd, flag):
        return cmd[cmd.index(flag) + 1] if flag in cmd else None
    check(opt(co_cmd, "--listen") == "0.0.0.0:50051", "coordinator --listen %s" % opt(co_cmd, "--listen"))
    check((opt(co_cmd, "--out") or "").startswith("/out/"), "coordinator --out not under /out")
    check((opt(co_cmd, "--config") or "").startswith("/config/"), "coordinator --config not under /config")
    for f in ("--tls-cert", "--tls-key", "--tls-ca", "--credentials"):
        check(f in co_cmd, "coordinator lacks %s" % f)
    check("--stay" in cl_cmd, "clients lack --stay")
    check((opt(cl_cmd, "--peer-listen") or "").startswith("0.0.0.0:"),
          "clients do not serve the peer service on every address: %s" % opt(cl_cmd, "--peer-listen"))
    check("--peer-advertise" not in cl_cmd, "clients fix --peer-advertise (the host name is the default)")
    check("--shard" not in cl_cmd and "--num-shards" not in cl_cmd,
          "clients must not pick a shard (the coordinator assigns one): %s" % cl_cmd)
    check(opt(cl_cmd, "--server") == "coordinator:50051", "clients dial %s" % opt(cl_cmd, "--server"))
    check(opt(cl_cmd, "--data") == "/data", "clients --data %s" % opt(cl_cmd, "--data"))
    for f in ("--tls-ca", "--tls-cert", "--tls-key", "--token-file"):
        check(f in cl_cmd, "clients lack %s" % f)

    # Mounts.
    def mounts(svc):
        out = {}
        for v in svc.get("volumes", []):
            parts = v.split(":")
            src, dst = parts[0], parts[1]
            mode = parts[2] if len(parts) > 2 else "rw"
            out[dst] = (src, mode)
        return out
    cm, lm = mounts(co), mounts(cl)
    for dst in ("/data", "/config", "/secrets"):
        check(dst in cm and cm[dst][1] == "ro", "coordinator %s not mounted read-only: %r" % (dst, cm.get(dst)))
    for dst in ("/data", "/secrets"):
        check(dst in lm and lm[dst][1] == "ro", "client %s not mounted read-only: %r" % (dst, lm.get(dst)))
    check("/out" in cm and cm["/out"][1] == "rw", "coordinator /out not writable")
    check("/out" not in lm and "/config" not in lm, "clients mount /out or /config")
    check(cm["/secrets"][0].endswith("/coordinator"), "coordinator secrets from %s" % cm["/secrets"][0])
    check(lm["/secrets"][0].endswith("/client-1"), "client-1's secrets from %s" % lm["/secrets"][0])
    check(cm["/data"][0] == lm["/data"][0], "coordinator and clients mount other data")
    check(cm["/data"][0] == "/usr/share/datasets/fashion-mnist",
          "default data %s, not Fashion-MNIST from dataset-fashion-mnist" % cm["/data"][0])
    check(os.path.isfile(os.path.join(cm["/config"][0], opt(co_cmd, "--config")[len("/config/"):])),
          "the default config %s is not in %s" % (opt(co_cmd, "--config"), cm["/config"][0]))
    check("out" in (cfg.get("volumes") or {}), "no named volume out")

    # Every /secrets file a command or health check names exists in the
    # folder compose-secrets.sh made for that service.
    co_hc = co.get("healthcheck", {}).get("test", [])
    cl_hc = cl.get("healthcheck", {}).get("test", [])
    for name, cmd, src in (("coordinator", co_cmd + co_hc, cm["/secrets"][0]),
                           ("client", cl_cmd, lm["/secrets"][0])):
        for a in cmd:
            if a.startswith("/secrets/"):
                check(os.path.isfile(os.path.join(src, a[len("/secrets/"):])),
                      "%s names %s, which compose-secrets.sh did not make" % (name, a))

    # Health checks.
    check(co_hc[:3] == ["CMD", "fedfwd-ctl", "status"], "coordinator health check: %s" % co_hc)
    check("/secrets/status.token" in co_hc, "coordinator health check does not use status.token")
    check(opt(co_hc, "--tls-server-name") == "coordinator", "health check expects another certificate name")
    check(cl_hc and cl_hc[0] == "CMD-SHELL", "client health check: %s" % cl_hc)
    health = opt(cl_cmd, "--health-file")
    check(health is not None, "clients have no --health-file")
    if cl_hc and health:
        script = cl_hc[1].replace("$$", "$")  # compose's escape for a literal $
        check(health in script, "client health check does not read %s" % health)
        f = os.path.join(work, "health")
        def run_check(content):
            if content is None:
                if os.path.exists(f):
                    os.remove(f)
            else:
                with open(f, "w") as h:
                    h.write(content)
            return subprocess.run(["sh", "-c", script.replace(health, f)]).returncode
        check(run_check(str(int(time.time()))) == 0, "client health check fails on a fresh file")
        check(run_check(str(int(time.time()) - 120)) != 0, "client health check passes on a stale file")
        check(run_check(None) != 0, "client health check passes without a file")
    for name, svc in (("coordinator", co), ("client-1", cl)):
        for key in ("interval", "retries", "start_period"):
            check(key in svc.get("healthcheck", {}), "%s health check lacks %s" % (name, key))

    # Restart policies.
    check(str(co.get("restart", "")).startswith("on-failure"), "coordinator restart %r" % co.get("restart"))
    check(cl.get("restart") == "unless-stopped", "client restart %r" % cl.get("restart"))

    # Flags against the programs.
    if bin_dir:
        def help_of(*argv):
            return subprocess.run([os.path.join(bin_dir, argv[0])] + list(argv[1:]) + ["--help"],
                                  capture_output=True, text=True).stdout
        import re
        def known(help_text, flag):
            return re.search(r"(^|[\s,])%s([\s=]|$)" % re.escape(flag), help_text, re.M)
        for what, args, text in (("coordinator", co_cmd[1:], help_of("fedfwd-server")),
                                 ("client", cl_cmd[1:], help_of("fedfwd-client")),
                                 ("coordinator health check", co_hc[3:], help_of("fedfwd-ctl", "status"))):
            check(text.strip() != "", "%s: no --help output from the program" % what)
            for a in args:
                if a.startswith("--"):
                    check(known(text, a.split("=")[0]), "%s: %s is not in the program's --help" % (what, a))

if problems:
    for p in problems:
        print("[compose_config] FAIL: " + p, file=sys.stderr)
    sys.exit(1)
print("[compose_config] rendered configuration checked%s" %
      (" (flags against %s)" % bin_dir if bin_dir else ""))
PY

# The scripts the deployment ships parse and pass shellcheck.
scripts=("$DEPLOY_ROOT"/deploy/*.sh "$DEPLOY_ROOT/deploy/fedfwd-coordinator-start"
  "$DEPLOY_ROOT"/tests/deploy/*.sh)
for s in "${scripts[@]}"; do
  bash -n "$s" || fail "$s: syntax error"
done
command -v shellcheck >/dev/null ||
  fail "no shellcheck here (scripts/setup.sh --test-tools installs it)"
shellcheck -x -P "$DEPLOY_ROOT" "${scripts[@]}" || fail "shellcheck"
say "PASS"
