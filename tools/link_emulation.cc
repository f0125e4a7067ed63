#include "tools/link_emulation.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace fedfwd {
namespace {

constexpr char kNetnsDir[] = "/run/netns";
constexpr char kNamePrefix[] = "fedfwd-";

// Runs a tool (found on PATH, or under /sbin and /usr/sbin, where iproute2
// lives) and returns its stderr in the error. Only async-signal-safe calls
// between fork and exec, so it is safe in a threaded process.
absl::Status RunTool(const std::vector<std::string>& argv) {
  std::vector<char*> cargv;
  for (const std::string& a : argv)
    cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  const std::string name = argv[0];
  const std::vector<std::string> candidates = {
      "/usr/sbin/" + name, "/sbin/" + name, "/usr/bin/" + name, "/bin/" + name};
  std::string exe;
  for (const std::string& c : candidates) {
    if (access(c.c_str(), X_OK) == 0) {
      exe = c;
      break;
    }
  }
  if (exe.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "`", name, "` not found (install iproute2: apt-get install iproute2)"));
  }
  int err_pipe[2];
  if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    return absl::UnavailableError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  const int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
  pid_t pid = fork();
  if (pid < 0) {
    close(err_pipe[0]);
    close(err_pipe[1]);
    if (null_fd >= 0) close(null_fd);
    return absl::UnavailableError(absl::StrCat("fork: ", std::strerror(errno)));
  }
  if (pid == 0) {
    if (null_fd >= 0) {
      dup2(null_fd, STDIN_FILENO);
      dup2(null_fd, STDOUT_FILENO);
    }
    dup2(err_pipe[1], STDERR_FILENO);
    execv(exe.c_str(), cargv.data());
    _exit(127);
  }
  close(err_pipe[1]);
  if (null_fd >= 0) close(null_fd);
  std::string err;
  char buffer[4096];
  while (true) {
    ssize_t n = read(err_pipe[0], buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    err.append(buffer, static_cast<size_t>(n));
  }
  close(err_pipe[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat("`", absl::StrJoin(argv, " "), "` failed: ",
                   absl::StripAsciiWhitespace(err).empty()
                       ? std::string("no message")
                       : std::string(absl::StripAsciiWhitespace(err))));
}

bool ProcessAlive(pid_t pid) { return kill(pid, 0) == 0 || errno == EPERM; }

std::vector<std::string> FedfwdNamespaces() {
  std::vector<std::string> names;
  DIR* dir = opendir(kNetnsDir);
  if (dir == nullptr) return names;
  while (dirent* entry = readdir(dir)) {
    if (absl::StartsWith(entry->d_name, kNamePrefix)) {
      names.push_back(entry->d_name);
    }
  }
  closedir(dir);
  std::sort(names.begin(), names.end());
  return names;
}

// The pid in "fedfwd-<pid>-...", or -1.
pid_t PidOf(absl::string_view name) {
  if (!absl::ConsumePrefix(&name, kNamePrefix)) return -1;
  const size_t dash = name.find('-');
  int pid = 0;
  if (dash == absl::string_view::npos ||
      !absl::SimpleAtoi(name.substr(0, dash), &pid) || pid <= 0) {
    return -1;
  }
  return pid;
}

}  // namespace

std::string LinkSpec::ToString() const {
  std::vector<std::string> parts;
  if (up_bps > 0) parts.push_back("up=" + FormatRate(up_bps));
  if (down_bps > 0) parts.push_back("down=" + FormatRate(down_bps));
  if (delay > absl::ZeroDuration()) {
    parts.push_back("delay=" + absl::FormatDuration(delay));
  }
  return parts.empty() ? "unshaped" : absl::StrJoin(parts, ",");
}

absl::StatusOr<int64_t> ParseRate(absl::string_view text) {
  const std::string lower = absl::AsciiStrToLower(text);
  struct Unit {
    const char* suffix;
    double factor;
  };
  // Longest suffix first: "kbit" before "bit".
  for (const Unit& unit : {Unit{"gbit", 1e9}, Unit{"mbit", 1e6},
                           Unit{"kbit", 1e3}, Unit{"bit", 1.0}}) {
    absl::string_view number(lower);
    if (!absl::ConsumeSuffix(&number, unit.suffix)) continue;
    double value = 0;
    if (!absl::SimpleAtod(number, &value) || !(value > 0)) break;
    const double bps = std::round(value * unit.factor);
    if (bps < 8000 || bps > 100e9) {
      return absl::InvalidArgumentError(
          absl::StrCat("rate '", text, "' is outside 8kbit to 100gbit"));
    }
    return static_cast<int64_t>(bps);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("rate '", text,
                   "' is not a positive number with a unit of bits per "
                   "second: bit, kbit, mbit or gbit (e.g. 10mbit)"));
}

std::string FormatRate(int64_t bps) {
  if (bps % 1000000000 == 0) return absl::StrCat(bps / 1000000000, "gbit");
  if (bps % 1000000 == 0) return absl::StrCat(bps / 1000000, "mbit");
  if (bps % 1000 == 0) return absl::StrCat(bps / 1000, "kbit");
  return absl::StrCat(bps, "bit");
}

absl::StatusOr<LinkSpec> ParseLinkSpec(absl::string_view text,
                                       const LinkSpec& base) {
  LinkSpec spec = base;
  if (absl::StripAsciiWhitespace(text).empty()) {
    return absl::InvalidArgumentError(
        "empty link; expected e.g. up=1mbit,down=10mbit,delay=40ms");
  }
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    part = absl::StripAsciiWhitespace(part);
    const size_t eq = part.find('=');
    if (eq == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("link '", text, "': '", part,
                       "' is not KEY=VALUE (keys: up, down, rate, delay)"));
    }
    const absl::string_view key = part.substr(0, eq);
    const absl::string_view value = part.substr(eq + 1);
    if (key == "up" || key == "down" || key == "rate") {
      absl::StatusOr<int64_t> bps = ParseRate(value);
      if (!bps.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "link '", text, "', ", key, ": ", bps.status().message()));
      }
      if (key != "down") spec.up_bps = *bps;
      if (key != "up") spec.down_bps = *bps;
    } else if (key == "delay") {
      absl::Duration delay;
      if (!absl::ParseDuration(std::string(value), &delay) ||
          delay < absl::ZeroDuration() || delay > absl::Seconds(10)) {
        return absl::InvalidArgumentError(
            absl::StrCat("link '", text, "', delay: '", value,
                         "' is not a duration from 0 to 10s (e.g. 40ms)"));
      }
      spec.delay = delay;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("link '", text, "': unknown key '", key,
                       "' (keys: up, down, rate, delay)"));
    }
  }
  return spec;
}

absl::StatusOr<std::vector<LinkSpec>> ClientLinks(
    absl::string_view spec, const std::vector<std::string>& overrides,
    int clients) {
  LinkSpec base;
  if (!spec.empty()) {
    absl::StatusOr<LinkSpec> parsed = ParseLinkSpec(spec);
    if (!parsed.ok()) return parsed.status();
    base = *parsed;
  }
  std::vector<LinkSpec> links(static_cast<size_t>(clients), base);
  for (const std::string& o : overrides) {
    const size_t eq = o.find('=');
    const size_t colon = o.find(':');
    // "I=up=..." : the first '=' ends the client part.
    const size_t end = std::min(eq, colon);
    if (end == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--client-link '", o, "' is not I=LINK (e.g. 0=up=256kbit)"));
    }
    const std::string who = o.substr(0, end);
    int first = 0;
    int last = 0;
    std::vector<std::string> range = absl::StrSplit(who, '-');
    if (range.size() > 2 || !absl::SimpleAtoi(range.front(), &first) ||
        !absl::SimpleAtoi(range.back(), &last) || first < 0 || last < first ||
        last >= clients) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--client-link '", o, "': '", who,
          "' is not a client index or range I-J from 0 to ", clients - 1));
    }
    for (int i = first; i <= last; ++i) {
      absl::StatusOr<LinkSpec> parsed =
          ParseLinkSpec(o.substr(end + 1), links[static_cast<size_t>(i)]);
      if (!parsed.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--client-link '", o, "': ", parsed.status().message()));
      }
      links[static_cast<size_t>(i)] = *parsed;
    }
  }
  return links;
}

TbfParams TbfFor(int64_t bps) {
  const int64_t bytes_per_s = bps / 8;
  TbfParams p;
  // 10 ms of traffic, at least 16 KiB. With a bucket of two frames a 2 Mbit/s
  // upload measured 1.75 Mbit/s, with 16 KiB 1.94 (the rest is TCP/IP
  // headers, which tbf counts): EmulatedLink.TransfersRunAtTheSetRates.
  p.burst_bytes = std::max<int64_t>(bytes_per_s / 100, 16 << 10);
  // 200 ms of queue, at least 64 KiB: enough that TCP keeps the link busy
  // without a drop on every window.
  p.limit_bytes = std::max<int64_t>(bytes_per_s / 5, 64 << 10);
  return p;
}

absl::Status CheckLinkSupport() {
  const char* refusal =
      " (fedfwd-run never runs unshaped in place of a requested link)";
  if (geteuid() != 0) {
    return absl::PermissionDeniedError(absl::StrCat(
        "--link needs root: it makes network namespaces, veth pairs and tbf "
        "queueing disciplines (run as root, e.g. with sudo)",
        refusal));
  }
  for (const char* tool : {"ip", "tc"}) {
    absl::Status s = RunTool({tool, "-V"});
    if (!s.ok())
      return absl::FailedPreconditionError(absl::StrCat(s.message(), refusal));
  }
  return absl::OkStatus();
}

std::vector<std::string> NamespacesOf(pid_t pid) {
  std::vector<std::string> out;
  for (const std::string& name : FedfwdNamespaces()) {
    if (PidOf(name) == pid) out.push_back(name);
  }
  return out;
}

int RemoveStaleNamespaces() {
  int removed = 0;
  for (const std::string& name : FedfwdNamespaces()) {
    const pid_t pid = PidOf(name);
    if (pid <= 0 || pid == getpid() || ProcessAlive(pid)) continue;
    if (RunTool({"ip", "netns", "delete", name}).ok()) ++removed;
  }
  return removed;
}

std::string LinkAddress(int client, bool coordinator_end) {
  const uint32_t base = static_cast<uint32_t>(client) * 4u;
  return absl::StrCat("10.", (base >> 16) & 255u, ".", (base >> 8) & 255u, ".",
                      (base & 255u) + (coordinator_end ? 1u : 2u));
}

absl::StatusOr<std::unique_ptr<EmulatedNetwork>> EmulatedNetwork::Create(
    const std::vector<LinkSpec>& client_links) {
  if (client_links.empty() || client_links.size() > (1u << 20)) {
    return absl::InvalidArgumentError("links for 1 to 1048576 clients");
  }
  std::unique_ptr<EmulatedNetwork> net(new EmulatedNetwork());
  net->prefix_ = absl::StrCat(kNamePrefix, getpid());
  net->links_ = client_links;
  if (absl::Status s = net->Build(); !s.ok()) return s;  // ~ removes the rest
  return net;
}

absl::Status EmulatedNetwork::Build() {
  const std::string co = prefix_ + "-co";
  auto add_ns = [&](const std::string& name) -> absl::Status {
    if (absl::Status s = RunTool({"ip", "netns", "add", name}); !s.ok()) {
      return s;
    }
    made_.push_back(name);
    return RunTool({"ip", "-n", name, "link", "set", "lo", "up"});
  };
  auto shape = [](const std::string& ns, const std::string& dev,
                  int64_t bps) -> absl::Status {
    if (bps <= 0) return absl::OkStatus();
    const TbfParams p = TbfFor(bps);
    return RunTool({"tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf",
                    "rate", absl::StrCat(bps, "bit"), "burst",
                    absl::StrCat(p.burst_bytes), "limit",
                    absl::StrCat(p.limit_bytes)});
  };
  if (absl::Status s = add_ns(co); !s.ok()) return s;
  for (size_t i = 0; i < links_.size(); ++i) {
    const int c = static_cast<int>(i);
    const std::string ns = absl::StrCat(prefix_, "-c", i);
    const std::string co_dev = absl::StrCat("cl", i);
    if (absl::Status s = add_ns(ns); !s.ok()) return s;
    for (const std::vector<std::string>& cmd :
         std::vector<std::vector<std::string>>{
             {"ip", "-n", co, "link", "add", co_dev, "type", "veth", "peer",
              "name", "eth0", "netns", ns},
             {"ip", "-n", co, "addr", "add", LinkAddress(c, true) + "/30",
              "dev", co_dev},
             {"ip", "-n", ns, "addr", "add", LinkAddress(c, false) + "/30",
              "dev", "eth0"},
             {"ip", "-n", co, "link", "set", co_dev, "up"},
             {"ip", "-n", ns, "link", "set", "eth0", "up"},
             // Every link's coordinator end (the peer relays of
             // decentralized runs) through this client's own link.
             {"ip", "-n", ns, "route", "add", "10.0.0.0/8", "via",
              LinkAddress(c, true)}}) {
      if (absl::Status s = RunTool(cmd); !s.ok()) return s;
    }
    if (absl::Status s = shape(ns, "eth0", links_[i].up_bps); !s.ok()) {
      return s;
    }
    if (absl::Status s = shape(co, co_dev, links_[i].down_bps); !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

EmulatedNetwork::~EmulatedNetwork() {
  // Client namespaces first: each takes its veth pair along.
  for (auto it = made_.rbegin(); it != made_.rend(); ++it) {
    (void)RunTool({"ip", "netns", "delete", *it});
  }
}

std::string EmulatedNetwork::CoordinatorNetns() const {
  return absl::StrCat(kNetnsDir, "/", prefix_, "-co");
}

std::string EmulatedNetwork::ClientNetns(int client) const {
  return absl::StrCat(kNetnsDir, "/", prefix_, "-c", client);
}

std::string EmulatedNetwork::ClientServerAddress(int client) const {
  return absl::StrCat(LinkAddress(client, true), ":", kRelayPort);
}

std::string EmulatedNetwork::ClientPeerListen(int client) const {
  return absl::StrCat(LinkAddress(client, false), ":", kPeerPort);
}

std::string EmulatedNetwork::ClientPeerAdvertise(int client) const {
  return absl::StrCat(LinkAddress(client, true), ":", kPeerRelayPort);
}

std::vector<std::string> EmulatedNetwork::RelayRoutes(int server_port,
                                                      bool peers) const {
  std::vector<std::string> routes;
  for (size_t i = 0; i < links_.size(); ++i) {
    const int c = static_cast<int>(i);
    const std::string delay = absl::FormatDuration(links_[i].delay);
    routes.push_back(absl::StrCat(ClientServerAddress(c),
                                  ">127.0.0.1:", server_port, "@", delay));
    if (peers) {
      routes.push_back(absl::StrCat(ClientPeerAdvertise(c), ">",
                                    ClientPeerListen(c), "@", delay));
    }
  }
  return routes;
}

}  // namespace fedfwd
