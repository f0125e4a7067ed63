#include "tools/launcher.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "common/dataset.h"
#include "common/pki.h"
#include "common/security.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace fedfwd {
namespace {

namespace fs = std::filesystem;

constexpr char kPrefix[] = "[fedfwd-run] ";
constexpr char kListeningMarker[] = "fedfwd-server listening on ";
constexpr absl::Duration kMaxPollWait = absl::Milliseconds(250);
// A server line longer than this without a newline is forwarded in pieces.
constexpr size_t kMaxLineBytes = 1 << 20;
constexpr size_t kLogTailLines = 20;

constexpr char kClearLine[] = "\r\033[K";

// Where the launcher's lines go. On a terminal it keeps the coordinator's
// progress on one line at the bottom of stdout, rewritten in place; every
// other line first clears it and then draws it again below itself. Elsewhere
// it only writes whole lines. Single-threaded, like the launcher.
class Console {
 public:
  static Console& Get() {
    static Console* console = new Console();
    return *console;
  }

  bool terminal() const { return terminal_; }

  int Columns() const {
    struct winsize ws;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) {
      return ws.ws_col;
    }
    return 80;
  }

  // Writes one whole line and flushes, so progress shows live even when
  // stdout is a pipe. Write errors (a closed pipe) are ignored.
  void Line(FILE* stream, absl::string_view text) {
    Erase();
    std::fwrite(text.data(), 1, text.size(), stream);
    std::fputc('\n', stream);
    std::fflush(stream);
    Draw();
  }

  void Progress(absl::string_view text) {
    progress_ = std::string(text);
    Draw();
  }

  // Removes the progress line (at the end of a run).
  void EndProgress() {
    Erase();
    progress_.clear();
  }

 private:
  Console() {
    const char* term = std::getenv("TERM");
    terminal_ = isatty(STDOUT_FILENO) == 1 &&
                (term == nullptr || std::strcmp(term, "dumb") != 0);
  }

  void Erase() {
    if (!shown_) return;
    std::fputs(kClearLine, stdout);
    std::fflush(stdout);
    shown_ = false;
  }
  void Draw() {
    if (!terminal_ || progress_.empty()) return;
    std::fputs(kClearLine, stdout);
    std::fwrite(progress_.data(), 1, progress_.size(), stdout);
    std::fflush(stdout);
    shown_ = true;
  }

  bool terminal_ = false;
  std::string progress_;
  bool shown_ = false;
};

void WriteLine(FILE* stream, absl::string_view text) {
  Console::Get().Line(stream, text);
}

// UTF-8 characters (not continuation bytes) in `text`.
size_t CountChars(absl::string_view text) {
  size_t n = 0;
  for (unsigned char c : text) n += (c & 0xC0) != 0x80;
  return n;
}

// The first `max_chars` UTF-8 characters of `text`.
std::string CutChars(absl::string_view text, size_t max_chars) {
  size_t chars = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    if ((static_cast<unsigned char>(text[i]) & 0xC0) == 0x80) continue;
    if (chars == max_chars) return std::string(text.substr(0, i));
    ++chars;
  }
  return std::string(text);
}

// Runs of spaces as one space.
std::string CollapseSpaces(absl::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == ' ' && !out.empty() && out.back() == ' ') continue;
    out.push_back(c);
  }
  return out;
}
void Info(absl::string_view text) {
  WriteLine(stdout, absl::StrCat(kPrefix, text));
}
void Error(absl::string_view text) {
  WriteLine(stderr, absl::StrCat(kPrefix, text));
}

// Opens a log file for a child's output (truncating it), close-on-exec in
// the launcher.
absl::StatusOr<int> OpenLog(const std::string& path) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot create ", path, ": ", std::strerror(errno)));
  }
  return fd;
}

// "60 s", "0.5 s".
std::string Seconds(absl::Duration d) {
  return absl::StrCat(absl::ToDoubleSeconds(d), " s");
}

void CloseFd(int& fd) {
  if (fd >= 0) close(fd);
  fd = -1;
}

// Makes `fd` the descriptor `target` in a child after fork, keeping it open
// across exec. Async-signal-safe.
bool MoveFdTo(int fd, int target) {
  if (fd == target) {
    int flags = fcntl(fd, F_GETFD);
    return flags >= 0 && fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC) == 0;
  }
  return dup2(fd, target) == target;
}

void WriteRaw(const char* text) {
  ssize_t ignored = write(STDERR_FILENO, text, std::strlen(text));
  (void)ignored;
}

// Runs in the child between fork and exec: only async-signal-safe calls.
[[noreturn]] void ExecChild(char* const argv[], int in_fd, int out_fd,
                            int err_fd, int netns_fd, pid_t launcher_pid) {
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  struct sigaction dfl;
  std::memset(&dfl, 0, sizeof(dfl));
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGCHLD, SIGQUIT}) {
    sigaction(sig, &dfl, nullptr);
  }
  // Own process group: a terminal's Ctrl-C reaches only the launcher, which
  // then stops the children itself.
  setpgid(0, 0);
  // Die with the launcher. The getppid check closes the race where the
  // launcher died before prctl took effect.
  if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != launcher_pid) {
    _exit(127);
  }
  if (!MoveFdTo(in_fd, STDIN_FILENO) || !MoveFdTo(out_fd, STDOUT_FILENO) ||
      !MoveFdTo(err_fd, STDERR_FILENO)) {
    _exit(127);
  }
  if (netns_fd >= 0 && setns(netns_fd, CLONE_NEWNET) != 0) {
    WriteRaw("[fedfwd-run] cannot enter the network namespace of ");
    WriteRaw(argv[0]);
    WriteRaw("\n");
    _exit(127);
  }
  execv(argv[0], argv);
  WriteRaw("[fedfwd-run] cannot execute ");
  WriteRaw(argv[0]);
  WriteRaw("\n");
  _exit(127);
}

}  // namespace

// ---- Pure helpers ----

std::string DefaultOutDir(const std::string& config_path, absl::Time now,
                          absl::TimeZone tz) {
  std::string stem = fs::path(config_path).stem().string();
  if (stem.empty()) stem = "run";
  return absl::StrCat("runs/", stem, "-",
                      absl::FormatTime("%Y%m%d-%H%M%S", now, tz));
}

absl::StatusOr<std::string> FirstFreePath(const std::string& base) {
  std::error_code ec;
  if (!fs::exists(base, ec)) return base;
  for (int i = 2; i <= 1000; ++i) {
    std::string candidate = absl::StrCat(base, "-", i);
    if (!fs::exists(candidate, ec)) return candidate;
  }
  return absl::AlreadyExistsError(
      absl::StrCat("no free output folder name near ", base));
}

std::string ResolveDataDir(const Config& config) {
  if (!config.dataset.data_dir.empty()) return config.dataset.data_dir;
  return DefaultDataDir(config.dataset.name);
}

LocalSecurity InsecureLocalSecurity(int clients) {
  LocalSecurity sec;
  sec.insecure = true;
  sec.server_args = {"--insecure"};
  sec.client_args.assign(clients, {"--insecure"});
  return sec;
}

absl::StatusOr<LocalSecurity> MakeLocalSecurity(
    const std::string& dir, int clients,
    const std::vector<std::string>& more_names) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::PermissionDeniedError("cannot create " + dir);
  fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace, ec);
  std::vector<std::string> names = {"localhost", "127.0.0.1"};
  names.insert(names.end(), more_names.begin(), more_names.end());
  ASSIGN_OR_RETURN(PkiFiles pki, MakeTestPki(dir, names, /*days=*/30));
  auto write_secret = [](const std::string& path,
                         const std::string& text) -> absl::Status {
    int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return absl::PermissionDeniedError("cannot write " + path);
    const bool ok = write(fd, text.data(), text.size()) ==
                    static_cast<ssize_t>(text.size());
    if (close(fd) != 0 || !ok) {
      return absl::DataLossError("cannot write " + path);
    }
    return absl::OkStatus();
  };
  LocalSecurity sec;
  sec.insecure = false;
  sec.dir = dir;
  std::string creds =
      "# Made by fedfwd-run for this run only: role name sha256(token)\n";
  for (int i = 0; i < clients; ++i) {
    const std::string token = NewToken();
    const std::string path = absl::StrCat(dir, "/client-", i, ".token");
    RETURN_IF_ERROR(write_secret(path, token + "\n"));
    absl::StrAppend(&creds, "client client-", i, " ", Sha256Hex(token), "\n");
    sec.client_args.push_back({"--tls-ca", pki.ca_cert, "--tls-cert",
                               pki.client_cert, "--tls-key", pki.client_key,
                               "--tls-server-name", "localhost", "--token-file",
                               path});
  }
  const std::string status_token = NewToken();
  sec.status_token_file = dir + "/status.token";
  RETURN_IF_ERROR(write_secret(sec.status_token_file, status_token + "\n"));
  absl::StrAppend(&creds, "status status ", Sha256Hex(status_token), "\n");
  const std::string creds_path = dir + "/credentials";
  RETURN_IF_ERROR(write_secret(creds_path, creds));
  sec.peer_args = {"--peer-tls-cert", pki.server_cert, "--peer-tls-key",
                   pki.server_key};
  sec.server_args = {"--tls-cert",    pki.server_cert, "--tls-key",
                     pki.server_key,  "--tls-ca",      pki.ca_cert,
                     "--credentials", creds_path};
  return sec;
}

absl::StatusOr<std::vector<std::vector<std::string>>> ParseClientArgs(
    const std::vector<std::string>& specs, int clients) {
  std::vector<std::vector<std::string>> out(std::max(0, clients));
  for (const std::string& spec : specs) {
    const size_t eq = spec.find('=');
    int index = -1;
    if (eq == std::string::npos ||
        !absl::SimpleAtoi(absl::string_view(spec).substr(0, eq), &index)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--client-arg '", spec, "': expected I=FLAG, e.g. 0=--name=x"));
    }
    if (index < 0 || index >= clients) {
      return absl::InvalidArgumentError(
          absl::StrCat("--client-arg '", spec, "': client ", index,
                       " is not in [0, ", clients, ")"));
    }
    if (eq + 1 == spec.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--client-arg '", spec, "': empty flag"));
    }
    out[index].push_back(spec.substr(eq + 1));
  }
  return out;
}

std::vector<std::string> ServerCommand(
    const std::string& server_exe, const std::string& config_yaml,
    const std::string& out_dir, int threads,
    const std::vector<std::string>& security_args) {
  std::vector<std::string> argv = {
      server_exe, "--config",    config_yaml,
      "--listen", "127.0.0.1:0", "--out",
      out_dir,    "--threads",   std::to_string(threads)};
  argv.insert(argv.end(), security_args.begin(), security_args.end());
  return argv;
}

std::vector<std::string> ClientCommand(
    const std::string& client_exe, const std::string& server,
    const std::string& data_dir, int shard, int num_shards, int threads,
    const std::vector<std::string>& security_args) {
  std::vector<std::string> argv = {client_exe,
                                   "--server",
                                   server,
                                   "--data",
                                   data_dir,
                                   "--shard",
                                   std::to_string(shard),
                                   "--num-shards",
                                   std::to_string(num_shards),
                                   "--threads",
                                   std::to_string(threads)};
  argv.insert(argv.end(), security_args.begin(), security_args.end());
  return argv;
}

std::optional<int> ParseListeningPort(absl::string_view line) {
  line = absl::StripAsciiWhitespace(line);
  if (!absl::ConsumePrefix(&line, kListeningMarker)) return std::nullopt;
  size_t colon = line.rfind(':');
  if (colon == absl::string_view::npos || colon == 0) return std::nullopt;
  int port = 0;
  if (!absl::SimpleAtoi(line.substr(colon + 1), &port) || port < 1 ||
      port > 65535) {
    return std::nullopt;
  }
  return port;
}

absl::StatusOr<std::string> FindSiblingExecutable(const std::string& dir,
                                                  const std::string& name) {
  std::string path = (fs::path(dir) / name).string();
  struct stat st;
  if (stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode) ||
      access(path.c_str(), X_OK) != 0) {
    return absl::NotFoundError(absl::StrCat(
        name, " not found at ", path,
        " (fedfwd-run starts the executables that lie beside it; build them "
        "with scripts/setup.sh or cmake --build build)"));
  }
  return path;
}

absl::StatusOr<std::string> SelfExecutableDir() {
  std::error_code ec;
  fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot read /proc/self/exe: ", ec.message()));
  }
  return self.parent_path().string();
}

std::string DescribeWaitStatus(int wait_status) {
  if (WIFEXITED(wait_status)) {
    return absl::StrCat("exited with status ", WEXITSTATUS(wait_status));
  }
  if (WIFSIGNALED(wait_status)) {
    int sig = WTERMSIG(wait_status);
    const char* name = strsignal(sig);
    return absl::StrCat("was killed by signal ", sig, " (",
                        name != nullptr ? name : "?", ")");
  }
  return absl::StrCat("ended with wait status ", wait_status);
}

int ExitCodeFromWaitStatus(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return kExitFailure;
}

std::optional<double> FinalTestAccuracy(const std::string& summary_json) {
  nlohmann::json json = nlohmann::json::parse(summary_json, /*cb=*/nullptr,
                                              /*allow_exceptions=*/false);
  if (!json.is_object()) return std::nullopt;
  auto it = json.find("final_test_acc");
  if (it == json.end() || !it->is_number()) return std::nullopt;
  return it->get<double>();
}

bool IsProgressLine(absl::string_view line) {
  if (!absl::ConsumePrefix(&line, "round ")) return false;
  auto consume_digits = [&line]() {
    size_t n = 0;
    while (n < line.size() && absl::ascii_isdigit(line[n])) ++n;
    line.remove_prefix(n);
    return n > 0;
  };
  return consume_digits() && absl::ConsumePrefix(&line, "/") &&
         consume_digits() && (line.empty() || line.front() == ' ');
}

ConsoleLine ShowServerLine(absl::string_view line, absl::string_view label,
                           bool terminal, int columns) {
  if (!terminal || !IsProgressLine(line)) return {false, std::string(line)};
  const size_t width = static_cast<size_t>(std::max(columns, 20) - 1);
  std::string body(line);
  auto compose = [&](absl::string_view shown_label) {
    return shown_label.empty() ? body
                               : absl::StrCat("[", shown_label, "] ", body);
  };
  std::string text = compose(label);
  if (CountChars(text) > width) {
    body = CollapseSpaces(body);
    text = compose(label);
  }
  // A long label (a sweep cell's values) gives way to the progress itself,
  // down to a third of the width.
  const size_t label_room = std::max<size_t>(width / 3, 12);
  if (CountChars(text) > width && CountChars(label) > label_room) {
    text = compose(absl::StrCat(CutChars(label, label_room - 1), "…"));
  }
  return {true, CutChars(text, width)};
}

std::vector<std::string> LastLines(absl::string_view text, size_t n) {
  if (!text.empty() && text.back() == '\n') text.remove_suffix(1);
  std::vector<std::string> lines;
  if (text.empty() || n == 0) return lines;
  size_t end = text.size();
  while (lines.size() < n) {
    size_t nl = text.rfind('\n', end == 0 ? 0 : end - 1);
    if (end == 0) nl = absl::string_view::npos;
    size_t begin = nl == absl::string_view::npos ? 0 : nl + 1;
    lines.emplace_back(text.substr(begin, end - begin));
    if (nl == absl::string_view::npos) break;
    end = nl;
  }
  std::reverse(lines.begin(), lines.end());
  return lines;
}

// ---- Launcher ----

Launcher::Launcher(LauncherOptions options) : options_(std::move(options)) {
  sigemptyset(&saved_mask_);
  std::memset(&saved_sigpipe_, 0, sizeof(saved_sigpipe_));
}

Launcher::~Launcher() {
  for (Child& child : children_) {
    if (child.exited) continue;
    kill(child.pid, SIGKILL);
    // SIGKILL cannot be caught; the only wait left is the kernel's teardown.
    int status = 0;
    while (waitpid(child.pid, &status, 0) < 0 && errno == EINTR) {
    }
    child.exited = true;
  }
  CloseFd(server_out_fd_);
  StopSignalHandling();
}

int Launcher::Run() {
  if (ran_) {
    Error("a Launcher runs only once");
    return kExitFailure;
  }
  ran_ = true;

  if (options_.config.has_value()) {
    config_ = *options_.config;
  } else {
    absl::StatusOr<Config> config =
        LoadConfigFile(options_.config_path, options_.overrides);
    if (!config.ok()) {
      Error(config.status().message());
      return kExitUsage;
    }
    config_ = *std::move(config);
  }
  if (config_.clients < 1) {
    Error(absl::StrCat("clients must be at least 1, got ", config_.clients));
    return kExitUsage;
  }
  absl::StatusOr<std::vector<std::vector<std::string>>> extra =
      ParseClientArgs(options_.client_arg_specs, config_.clients);
  if (!extra.ok()) {
    Error(extra.status().message());
    return kExitUsage;
  }
  extra_client_args_ = *std::move(extra);
  if (!options_.link.empty() || !options_.client_links.empty()) {
    absl::StatusOr<std::vector<LinkSpec>> links =
        ClientLinks(options_.link, options_.client_links, config_.clients);
    if (!links.ok()) {
      Error(links.status().message());
      return kExitUsage;
    }
    links_ = *std::move(links);
  }

  std::string bin_dir = options_.bin_dir;
  if (bin_dir.empty()) {
    absl::StatusOr<std::string> self_dir = SelfExecutableDir();
    if (!self_dir.ok()) {
      Error(self_dir.status().message());
      return kExitFailure;
    }
    bin_dir = *self_dir;
  }
  absl::StatusOr<std::string> server_exe =
      FindSiblingExecutable(bin_dir, "fedfwd-server");
  absl::StatusOr<std::string> client_exe =
      FindSiblingExecutable(bin_dir, "fedfwd-client");
  for (const auto* exe : {&server_exe, &client_exe}) {
    if (!exe->ok()) {
      Error(exe->status().message());
      return kExitFailure;
    }
  }
  absl::StatusOr<std::string> relay_exe;
  if (!links_.empty()) {
    relay_exe = FindSiblingExecutable(bin_dir, "fedfwd-relay");
    if (!relay_exe.ok()) {
      Error(relay_exe.status().message());
      return kExitFailure;
    }
    if (absl::Status s = CheckLinkSupport(); !s.ok()) {
      Error(s.message());
      return kExitFailure;
    }
  }

  std::string data_dir = ResolveDataDir(config_);
  std::error_code ec;
  if (!data_dir.empty()) {
    fs::path absolute = fs::absolute(data_dir, ec);
    if (!ec) data_dir = absolute.lexically_normal().string();
  }
  if (!fs::is_directory(data_dir, ec)) {
    Error(absl::StrCat("data folder ", data_dir, " for dataset ",
                       config_.dataset.name,
                       " does not exist (set dataset.data_dir; for MNIST run "
                       "scripts/setup.sh, which downloads it to data/mnist)"));
    return kExitFailure;
  }

  if (absl::Status s = PrepareOutDir(); !s.ok()) {
    Error(s.message());
    return kExitFailure;
  }
  if (absl::Status s = StartSignalHandling(); !s.ok()) {
    Error(s.message());
    return kExitFailure;
  }
  // From here on, every return goes through StopSignalHandling and leaves
  // no progress line behind.
  struct Restore {
    Launcher* self;
    ~Restore() {
      Console::Get().EndProgress();
      self->StopSignalHandling();
      self->network_.reset();  // deletes the namespaces and links
    }
  } restore{this};

  Info(absl::StrCat("output folder ", out_dir_));
  if (options_.insecure) {
    security_ = InsecureLocalSecurity(config_.clients);
  } else {
    // Decentralized runs over links: peers dial each other at the links'
    // coordinator ends (EmulatedNetwork::ClientPeerAdvertise).
    std::vector<std::string> peer_names;
    if (!links_.empty() && config_.algorithm != "federated") {
      for (int i = 0; i < config_.clients; ++i) {
        peer_names.push_back(LinkAddress(i, /*coordinator_end=*/true));
      }
    }
    absl::StatusOr<LocalSecurity> sec =
        MakeLocalSecurity(out_dir_ + "/secrets", config_.clients, peer_names);
    if (!sec.ok()) {
      Error(absl::StrCat("cannot make throwaway certificates: ",
                         sec.status().message(), " (--insecure runs without)"));
      return kExitFailure;
    }
    security_ = std::move(*sec);
  }
  if (!links_.empty()) {
    if (int stale = RemoveStaleNamespaces(); stale > 0) {
      Info(absl::StrCat("removed ", stale,
                        " network namespaces left by a launcher that is no "
                        "longer running"));
    }
    absl::StatusOr<std::unique_ptr<EmulatedNetwork>> net =
        EmulatedNetwork::Create(links_);
    if (!net.ok()) {
      Error(absl::StrCat("cannot set up the emulated links: ",
                         net.status().message()));
      return kExitFailure;
    }
    network_ = *std::move(net);
    std::vector<std::string> shown;
    for (size_t i = 0; i < links_.size(); ++i) {
      if (i > 0 && links_[i].ToString() == links_[0].ToString()) continue;
      shown.push_back(
          absl::StrCat(i == 0 ? "" : absl::StrCat("client ", i, ": "),
                       links_[i].ToString()));
    }
    Info(absl::StrCat(
        "emulated links (each client in its own network namespace): ",
        absl::StrJoin(shown, "; "),
        config_.algorithm == "federated"
            ? ""
            : "; peers reach each other through their links: a message "
              "crosses the sender's uplink and the receiver's downlink and "
              "carries the receiver's delay"));
  }
  if (absl::Status s = StartServer(*server_exe); !s.ok()) {
    Error(s.message());
    return kExitFailure;
  }

  // Wait for the server's port.
  const absl::Time listen_deadline = absl::Now() + options_.listen_timeout;
  while (!port_.has_value()) {
    if (signal_count_ > 0) return HandleInterrupt();
    if (server().exited) {
      Error(absl::StrCat("fedfwd-server ",
                         DescribeWaitStatus(server().wait_status),
                         " before it was listening"));
      PrintServerLogTail();
      int code = ExitCodeFromWaitStatus(server().wait_status);
      return code != 0 ? code : kExitFailure;
    }
    absl::Time now = absl::Now();
    if (now >= listen_deadline) {
      Error(absl::StrCat("fedfwd-server did not report its port within ",
                         Seconds(options_.listen_timeout), "; stopping it"));
      StopChildren(Which::kAll, options_.term_grace, /*stop_at_signals=*/0);
      PrintServerLogTail();
      return kExitFailure;
    }
    Pump(listen_deadline - now);
  }

  if (network_) {
    if (absl::Status s = StartRelay(*relay_exe); !s.ok()) {
      Error(absl::StrCat(s.message(), "; stopping the federation"));
      StopChildren(Which::kAll, options_.term_grace, /*stop_at_signals=*/0);
      return kExitFailure;
    }
  }
  if (absl::Status s = StartClients(*client_exe, data_dir); !s.ok()) {
    Error(absl::StrCat(s.message(), "; stopping the federation"));
    StopChildren(Which::kAll, options_.term_grace, /*stop_at_signals=*/0);
    return kExitFailure;
  }
  if (network_) {
    Info(absl::StrCat("started ", config_.clients,
                      " clients, each dialing the relay at its end of its "
                      "link (logs in ",
                      out_dir_, "/client-*.log, relay.log)"));
  } else {
    Info(absl::StrCat("started ", config_.clients, " clients on 127.0.0.1:",
                      *port_, " (logs in ", out_dir_, "/client-*.log)"));
  }

  // The run itself: its length is the server's business (it has its own
  // round and join deadlines); the launcher waits for it or for a signal.
  while (!server().exited) {
    if (signal_count_ > 0) return HandleInterrupt();
    Pump(kMaxPollWait);
  }
  // The server is gone, so its pipe is at EOF once drained; bound it anyway.
  const absl::Time drain_deadline = absl::Now() + absl::Seconds(2);
  while (server_out_fd_ >= 0 && absl::Now() < drain_deadline) {
    Pump(drain_deadline - absl::Now());
  }

  if (!WaitFor(Which::kClients, options_.client_grace, 1)) {
    if (signal_count_ > 0) return HandleInterrupt();
    Info(absl::StrCat("clients still running ", Seconds(options_.client_grace),
                      " after the server ended; stopping them"));
    StopChildren(Which::kClients, options_.term_grace, 1);
    if (signal_count_ > 0) return HandleInterrupt();
  }
  if (network_) {
    StopChildren(Which::kAll, options_.term_grace, 1);  // the relay
    if (signal_count_ > 0) return HandleInterrupt();
  }

  const int code = ExitCodeFromWaitStatus(server().wait_status);
  if (code != 0) {
    Error(absl::StrCat("fedfwd-server ",
                       DescribeWaitStatus(server().wait_status)));
    PrintServerLogTail();
  }
  PrintOutcome();
  return code;
}

absl::StatusOr<std::string> CreateOutDir(const std::string& requested,
                                         const std::string& config_path) {
  std::string out = requested;
  if (out.empty()) {
    ASSIGN_OR_RETURN(out, FirstFreePath(DefaultOutDir(config_path, absl::Now(),
                                                      absl::LocalTimeZone())));
  }
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot create output folder ", out, ": ", ec.message()));
  }
  fs::path absolute = fs::absolute(out, ec);
  std::string result = ec ? out : absolute.lexically_normal().string();
  if (result.size() > 1 && result.back() == '/') result.pop_back();
  return result;
}

absl::Status Launcher::PrepareOutDir() {
  ASSIGN_OR_RETURN(out_dir_,
                   CreateOutDir(options_.out_dir, options_.config_path));

  const std::string config_path = out_dir_ + "/config.yaml";
  std::ofstream file(config_path, std::ios::trunc);
  file << ConfigToYaml(config_);
  file.close();
  if (!file) {
    return absl::UnavailableError(absl::StrCat("cannot write ", config_path));
  }
  return absl::OkStatus();
}

absl::Status Launcher::StartSignalHandling() {
  sigset_t mask;
  sigemptyset(&mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGCHLD}) sigaddset(&mask, sig);
  if (sigprocmask(SIG_BLOCK, &mask, &saved_mask_) != 0) {
    return absl::InternalError(
        absl::StrCat("sigprocmask: ", std::strerror(errno)));
  }
  signal_fd_ = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  if (signal_fd_ < 0) {
    int err = errno;
    sigprocmask(SIG_SETMASK, &saved_mask_, nullptr);
    return absl::InternalError(absl::StrCat("signalfd: ", std::strerror(err)));
  }
  // A closed stdout (fedfwd-run | head) must not kill the launcher before it
  // has stopped its children.
  struct sigaction ignore;
  std::memset(&ignore, 0, sizeof(ignore));
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  sigaction(SIGPIPE, &ignore, &saved_sigpipe_);
  signals_installed_ = true;
  return absl::OkStatus();
}

void Launcher::StopSignalHandling() {
  if (!signals_installed_) return;
  signals_installed_ = false;
  // Consume what is pending so that unblocking does not deliver a SIGINT
  // the launcher has already acted on.
  signalfd_siginfo info;
  while (read(signal_fd_, &info, sizeof(info)) == sizeof(info)) {
  }
  CloseFd(signal_fd_);
  sigaction(SIGPIPE, &saved_sigpipe_, nullptr);
  sigprocmask(SIG_SETMASK, &saved_mask_, nullptr);
}

absl::StatusOr<pid_t> Launcher::Spawn(const std::vector<std::string>& argv,
                                      int out_fd, int err_fd,
                                      const std::string& netns) {
  // Everything the child needs is prepared before fork.
  std::vector<char*> cargv;
  cargv.reserve(argv.size() + 1);
  for (const std::string& arg : argv) {
    cargv.push_back(const_cast<char*>(arg.c_str()));
  }
  cargv.push_back(nullptr);
  int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot open /dev/null: ", std::strerror(errno)));
  }
  int netns_fd = -1;
  if (!netns.empty()) {
    netns_fd = open(netns.c_str(), O_RDONLY | O_CLOEXEC);
    if (netns_fd < 0) {
      const int err = errno;
      close(null_fd);
      return absl::UnavailableError(absl::StrCat(
          "cannot open network namespace ", netns, ": ", std::strerror(err)));
    }
  }
  const pid_t launcher_pid = getpid();
  std::fflush(stdout);
  std::fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) {
    int err = errno;
    close(null_fd);
    if (netns_fd >= 0) close(netns_fd);
    return absl::UnavailableError(
        absl::StrCat("fork for ", argv[0], ": ", std::strerror(err)));
  }
  if (pid == 0) {
    ExecChild(cargv.data(), null_fd, out_fd, err_fd, netns_fd, launcher_pid);
  }
  // Also set here, so the group exists before the launcher may signal it.
  setpgid(pid, pid);
  close(null_fd);
  if (netns_fd >= 0) close(netns_fd);
  return pid;
}

absl::Status Launcher::StartServer(const std::string& server_exe) {
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) {
    return absl::UnavailableError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  server_out_fd_ = pipe_fds[0];
  fcntl(server_out_fd_, F_SETFL, fcntl(server_out_fd_, F_GETFL) | O_NONBLOCK);

  Child child;
  child.name = "fedfwd-server";
  child.log_path = out_dir_ + "/server.log";
  absl::StatusOr<int> log_fd = OpenLog(child.log_path);
  if (!log_fd.ok()) {
    close(pipe_fds[1]);
    return log_fd.status();
  }
  std::vector<std::string> server_args = security_.server_args;
  if (network_) {
    // The coordinator records the links in its summary.json (one writer),
    // also when the run is interrupted.
    ASSIGN_OR_RETURN(std::string links, WriteLinksFile());
    server_args.insert(server_args.end(), {"--summary-extra", links});
  }
  server_args.insert(server_args.end(), options_.server_extra_args.begin(),
                     options_.server_extra_args.end());
  absl::StatusOr<pid_t> pid =
      Spawn(ServerCommand(server_exe, out_dir_ + "/config.yaml", out_dir_,
                          options_.server_threads, server_args),
            pipe_fds[1], *log_fd,
            network_ ? network_->CoordinatorNetns() : std::string());
  close(pipe_fds[1]);
  close(*log_fd);
  if (!pid.ok()) return pid.status();
  child.pid = *pid;
  children_.push_back(std::move(child));
  return absl::OkStatus();
}

absl::Status Launcher::StartRelay(const std::string& relay_exe) {
  Child child;
  child.name = "fedfwd-relay";
  child.log_path = out_dir_ + "/relay.log";
  child.is_helper = true;
  ASSIGN_OR_RETURN(int log_fd, OpenLog(child.log_path));
  std::vector<std::string> argv = {relay_exe};
  for (const std::string& route : network_->RelayRoutes(
           *port_, /*peers=*/config_.algorithm != "federated")) {
    argv.push_back("--route");
    argv.push_back(route);
  }
  absl::StatusOr<pid_t> pid =
      Spawn(argv, log_fd, log_fd, network_->CoordinatorNetns());
  close(log_fd);
  if (!pid.ok()) return pid.status();
  child.pid = *pid;
  children_.push_back(std::move(child));
  return absl::OkStatus();
}

absl::StatusOr<std::string> Launcher::WriteLinksFile() {
  nlohmann::ordered_json links = nlohmann::ordered_json::array();
  bool same = true;
  for (const LinkSpec& link : links_) {
    same &= link.ToString() == links_.front().ToString();
    links.push_back({{"spec", link.ToString()},
                     {"up_bps", link.up_bps},
                     {"down_bps", link.down_bps},
                     {"delay_ms", absl::ToDoubleMilliseconds(link.delay)}});
  }
  nlohmann::ordered_json j;
  j["link"] = same ? links_.front().ToString() : std::string("mixed");
  j["links"] = std::move(links);
  const std::string path = out_dir_ + "/links.json";
  std::ofstream out(path, std::ios::trunc);
  out << j.dump(2) << "\n";
  if (!out.flush()) {
    return absl::UnavailableError(absl::StrCat("cannot write ", path));
  }
  return path;
}

absl::Status Launcher::StartClients(const std::string& client_exe,
                                    const std::string& data_dir) {
  for (int i = 0; i < config_.clients; ++i) {
    Child child;
    child.name = absl::StrCat("client ", i);
    child.log_path = absl::StrCat(out_dir_, "/client-", i, ".log");
    child.is_client = true;
    ASSIGN_OR_RETURN(int log_fd, OpenLog(child.log_path));
    // With --link: the relay at this client's end of its link, from the
    // client's own namespace.
    const std::string server = network_ ? network_->ClientServerAddress(i)
                                        : absl::StrCat("127.0.0.1:", *port_);
    const std::string netns = network_ ? network_->ClientNetns(i) : "";
    std::vector<std::string> argv =
        ClientCommand(client_exe, server, data_dir, i, config_.clients,
                      options_.client_threads, security_.client_args[i]);
    // The config's own TorchScript model: the daemons may run it.
    if (!config_.torchscript.empty()) argv.push_back("--allow-torchscript");
    if (config_.algorithm != "federated") {
      // Decentralized runs: each daemon serves the peer service on a free
      // loopback port, or with --link on its own end of its link, reached
      // through the peer relay on the link's coordinator end (which adds
      // the link's delay). The throwaway server certificate is valid for
      // 127.0.0.1 and the links' addresses, unless --insecure.
      argv.push_back("--peer-listen");
      if (network_) {
        argv.push_back(network_->ClientPeerListen(i));
        argv.push_back("--peer-advertise");
        argv.push_back(network_->ClientPeerAdvertise(i));
      } else {
        argv.push_back("127.0.0.1:0");
      }
      argv.insert(argv.end(), security_.peer_args.begin(),
                  security_.peer_args.end());
    }
    argv.insert(argv.end(), extra_client_args_[i].begin(),
                extra_client_args_[i].end());
    absl::StatusOr<pid_t> pid = Spawn(argv, log_fd, log_fd, netns);
    close(log_fd);
    if (!pid.ok()) return pid.status();
    child.pid = *pid;
    children_.push_back(std::move(child));
  }
  return absl::OkStatus();
}

void Launcher::Pump(absl::Duration max_wait) {
  max_wait = std::clamp(max_wait, absl::ZeroDuration(), kMaxPollWait);
  pollfd fds[2];
  nfds_t count = 0;
  fds[count++] = {signal_fd_, POLLIN, 0};
  const int pipe_index = server_out_fd_ >= 0 ? static_cast<int>(count) : -1;
  if (pipe_index >= 0) fds[count++] = {server_out_fd_, POLLIN, 0};
  const int timeout_ms = static_cast<int>(
      absl::ToInt64Milliseconds(absl::Ceil(max_wait, absl::Milliseconds(1))));
  int ready = poll(fds, count, timeout_ms);
  if (ready > 0) {
    if (fds[0].revents & POLLIN) {
      signalfd_siginfo info;
      while (read(signal_fd_, &info, sizeof(info)) == sizeof(info)) {
        if (info.ssi_signo != SIGCHLD) ++signal_count_;
      }
    }
    if (pipe_index >= 0 && fds[pipe_index].revents != 0) ReadServerOutput();
  }
  // Reap on every turn, not only on SIGCHLD: signals coalesce.
  ReapChildren();
}

void Launcher::ReadServerOutput() {
  char buffer[65536];
  // Bounded, so a chatty server cannot starve signal handling.
  for (int reads = 0; reads < 16; ++reads) {
    ssize_t n = read(server_out_fd_, buffer, sizeof(buffer));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      n = 0;  // treat a read error as end of output
    }
    if (n == 0) {
      if (!partial_line_.empty()) EmitServerLine(partial_line_);
      partial_line_.clear();
      CloseFd(server_out_fd_);
      return;
    }
    partial_line_.append(buffer, static_cast<size_t>(n));
    size_t start = 0;
    for (size_t nl; (nl = partial_line_.find('\n', start)) != std::string::npos;
         start = nl + 1) {
      EmitServerLine(
          absl::string_view(partial_line_).substr(start, nl - start));
    }
    partial_line_.erase(0, start);
    if (partial_line_.size() > kMaxLineBytes) {
      EmitServerLine(partial_line_);
      partial_line_.clear();
    }
  }
}

void Launcher::EmitServerLine(absl::string_view line) {
  if (!port_.has_value()) port_ = ParseListeningPort(line);
  Console& console = Console::Get();
  ConsoleLine shown =
      ShowServerLine(line, options_.progress_label, console.terminal(),
                     console.terminal() ? console.Columns() : 80);
  if (shown.in_place) {
    console.Progress(shown.text);
  } else {
    console.Line(stdout, shown.text);
  }
}

void Launcher::ReapChildren() {
  for (Child& child : children_) {
    if (child.exited) continue;
    int status = 0;
    pid_t r = waitpid(child.pid, &status, WNOHANG);
    if (r == child.pid) {
      child.exited = true;
      child.wait_status = status;
      OnChildExited(child);
    } else if (r < 0 && errno == ECHILD) {
      // Reaped elsewhere (should not happen); do not wait for it forever.
      child.exited = true;
      child.wait_status = 0;
    }
  }
}

void Launcher::OnChildExited(const Child& child) {
  if (child.is_helper && !child.signaled_by_us) {
    Error(absl::StrCat(child.name, " ", DescribeWaitStatus(child.wait_status),
                       "; see ", child.log_path,
                       " (clients can no longer reach the coordinator)"));
    return;
  }
  if (!child.is_client || child.signaled_by_us) return;
  if (WIFEXITED(child.wait_status) && WEXITSTATUS(child.wait_status) == 0) {
    return;
  }
  Error(absl::StrCat(child.name, " ", DescribeWaitStatus(child.wait_status),
                     "; see ", child.log_path,
                     (server().exited ? "" : " (the run goes on)")));
}

bool Launcher::AllExited(Which which) const {
  for (const Child& child : children_) {
    if (which == Which::kServer && (child.is_client || child.is_helper)) {
      continue;
    }
    if (which == Which::kClients && !child.is_client) continue;
    if (!child.exited) return false;
  }
  return true;
}

bool Launcher::WaitFor(Which which, absl::Duration timeout,
                       int stop_at_signals) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!AllExited(which)) {
    if (stop_at_signals > 0 && signal_count_ >= stop_at_signals) return false;
    absl::Time now = absl::Now();
    if (now >= deadline) return false;
    Pump(deadline - now);
  }
  return true;
}

void Launcher::SignalChildren(Which which, int sig) {
  for (Child& child : children_) {
    if (child.exited) continue;
    if (which == Which::kServer && (child.is_client || child.is_helper)) {
      continue;
    }
    if (which == Which::kClients && !child.is_client) continue;
    child.signaled_by_us = true;
    // Its group first (it leads one), so anything it started goes too.
    if (kill(-child.pid, sig) != 0) kill(child.pid, sig);
  }
}

void Launcher::StopChildren(Which which, absl::Duration grace,
                            int stop_at_signals) {
  if (AllExited(which)) return;
  SignalChildren(which, SIGTERM);
  if (WaitFor(which, grace, stop_at_signals)) return;
  for (const Child& child : children_) {
    if (child.exited) continue;
    if (which == Which::kServer && (child.is_client || child.is_helper)) {
      continue;
    }
    if (which == Which::kClients && !child.is_client) continue;
    Error(absl::StrCat(child.name, " did not stop after SIGTERM; killing it"));
  }
  SignalChildren(which, SIGKILL);
  if (!WaitFor(which, absl::Seconds(5), 0)) {
    Error("some children did not go away after SIGKILL");
  }
}

int Launcher::HandleInterrupt() {
  Info("interrupted; stopping the server and clients (again to kill them)");
  StopChildren(Which::kAll, options_.interrupt_grace,
               /*stop_at_signals=*/signal_count_ + 1);
  Info(absl::StrCat("outputs so far in ", out_dir_));
  return kExitInterrupted;
}

void Launcher::PrintServerLogTail() {
  std::ifstream file(server().log_path);
  std::stringstream text;
  text << file.rdbuf();
  std::vector<std::string> lines = LastLines(text.str(), kLogTailLines);
  if (lines.empty()) {
    Error(absl::StrCat(server().log_path, " is empty"));
    return;
  }
  Error(absl::StrCat("last lines of ", server().log_path, ":"));
  for (const std::string& line : lines) WriteLine(stderr, "  " + line);
}

void Launcher::PrintOutcome() {
  std::ifstream file(out_dir_ + "/summary.json");
  if (file) {
    std::stringstream text;
    text << file.rdbuf();
    if (std::optional<double> acc = FinalTestAccuracy(text.str())) {
      char formatted[32];
      std::snprintf(formatted, sizeof(formatted), "%.4f", *acc);
      Info(absl::StrCat("final_test_acc ", formatted));
    } else {
      // A regression's summary: R^2 and RMSE.
      nlohmann::json json = nlohmann::json::parse(text.str(), /*cb=*/nullptr,
                                                  /*allow_exceptions=*/false);
      if (json.is_object() && json.contains("final_test_r2") &&
          json["final_test_r2"].is_number() &&
          json.contains("final_test_rmse") &&
          json["final_test_rmse"].is_number()) {
        Info(absl::StrFormat("final_test_r2 %.4f  final_test_rmse %.4g",
                             json["final_test_r2"].get<double>(),
                             json["final_test_rmse"].get<double>()));
      }
    }
  }
  Info(absl::StrCat("outputs in ", out_dir_));
}

}  // namespace fedfwd
