// fedfwd-run's process manager: runs one coordinator and `clients` client
// daemons as child processes on loopback, forwards the coordinator's progress
// lines, and stops every child it started, on every path.
//
// What Launcher::Run does:
//   1. Loads the config with the --set overrides (error: exit kExitUsage),
//      or takes LauncherOptions::config as it is (a sweep cell's).
//   2. Creates the output folder (--out, or runs/<stem>-<YYYYmmdd-HHMMSS>) and
//      writes the effective config to <out>/config.yaml.
//   3. Makes throwaway TLS certificates and tokens in <out>/secrets (unless
//      --insecure) and starts `fedfwd-server --config <out>/config.yaml
//      --listen 127.0.0.1:0 --out <out> --threads N` plus the TLS and
//      credentials flags, from the folder of its own binary; the
//      server's stdout comes back through a pipe, its stderr goes to
//      <out>/server.log. Waits (bounded) for the line
//      "fedfwd-server listening on 127.0.0.1:PORT".
//   4. Starts client i (0-based) as `fedfwd-client --server 127.0.0.1:PORT
//      --data DIR --shard i --num-shards <clients> --threads N` plus its
//      TLS and --token-file flags and the --client-arg flags given for i,
//      stdout and stderr to <out>/client-<i>.log.
//   5. Copies every server stdout line to its own stdout as it arrives. Its
//      own messages are lines starting with "[fedfwd-run] " (stdout for
//      progress, stderr for errors). A client that exits non-zero on its own
//      is reported in one line naming its log; the run goes on. When stdout
//      is a terminal (and TERM is not "dumb"), the coordinator's per-round
//      lines ("round N/M ...") instead replace each other on one line
//      rewritten in place (see ShowServerLine); other lines print above it.
//   6. When the server exits, waits for the clients (bounded), then SIGTERM,
//      then SIGKILL. On SIGINT/SIGTERM/SIGHUP it stops all children the same
//      way (a second signal skips the grace period).
//
// With --link (LauncherOptions::link, client_links) the coordinator and
// every client run in network namespaces of their own, joined by shaped veth
// pairs, and a fedfwd-relay in the coordinator's namespace adds the delay
// (link_emulation.h shows the layout); clients then dial their link's relay,
// summary.json gains "link" and "links", and the namespaces are deleted on
// every way out (the next --link start removes those of a launcher that was
// SIGKILLed).
//
// Children run in their own process groups (a terminal Ctrl-C reaches only
// the launcher, which then stops them) with PR_SET_PDEATHSIG = SIGTERM, so a
// launcher killed outright leaves no orphans.
//
// Threading and signals: Run() must be called from the main thread of a
// single-threaded process. While it runs, SIGINT, SIGTERM, SIGHUP and SIGCHLD
// are blocked and read through a signalfd, and SIGPIPE is ignored; the
// previous mask and SIGPIPE disposition are restored before it returns.
// A Launcher runs at most once.
#ifndef FEDFWD_TOOLS_LAUNCHER_H_
#define FEDFWD_TOOLS_LAUNCHER_H_

#include <signal.h>
#include <sys/types.h>

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/config.h"
#include "tools/link_emulation.h"

namespace fedfwd {

// Process exit codes of fedfwd-run besides the server's own exit code (which
// it passes through; 128 + N when the server died of signal N).
inline constexpr int kExitFailure = 1;        // could not start or run
inline constexpr int kExitUsage = 2;          // bad flags or config
inline constexpr int kExitInterrupted = 130;  // stopped by SIGINT/SIGTERM

struct LauncherOptions {
  std::string config_path;
  std::vector<std::string> overrides;  // "dotted.key=value", as for --set
  std::string out_dir;                 // empty: a fresh DefaultOutDir()
  int server_threads = 1;
  int client_threads = 1;
  // Plaintext and no tokens. Default: throwaway certificates and tokens in
  // <out>/secrets (see MakeLocalSecurity).
  bool insecure = false;
  // Extra flags for single clients, "I=FLAG" (I 0-based), appended to that
  // client's command line in order; e.g. "0=--adversary-scale=100".
  std::vector<std::string> client_arg_specs;
  // Extra flags for the coordinator, appended to its command line in order;
  // e.g. "--checkpoint-every=10".
  std::vector<std::string> server_extra_args;
  // Emulated links (link_emulation.h): "up=1mbit,down=10mbit,delay=40ms" for
  // every client, then "I=LINK" (or "I-J=LINK") overrides for single
  // clients. Either one set: every process runs in its own network namespace
  // (root only; refused otherwise, never run unshaped instead).
  std::string link;
  std::vector<std::string> client_links;
  // Folder holding fedfwd-server and fedfwd-client (and fedfwd-relay for
  // --link). Empty: the folder of the running executable.
  std::string bin_dir;
  // Set: run this config (a sweep cell's) instead of loading config_path
  // with `overrides`; config_path then only names the default out folder.
  std::optional<Config> config;
  // Shown before the progress line on a terminal, e.g. "cell 3/8 lr=1e-4".
  std::string progress_label;

  // Bounds on every wait.
  absl::Duration listen_timeout = absl::Seconds(60);   // server's port line
  absl::Duration client_grace = absl::Seconds(30);     // clients after server
  absl::Duration term_grace = absl::Seconds(5);        // SIGTERM -> SIGKILL
  absl::Duration interrupt_grace = absl::Seconds(10);  // same, on a signal
};

// Transport security for a loopback federation: a throwaway CA, server and
// client certificates (mutual TLS), one token per client and a status token,
// and the coordinator's credentials file holding their hashes.
struct LocalSecurity {
  bool insecure = true;
  std::string dir;                                    // where the files are
  std::vector<std::string> server_args;               // flags for the server
  std::vector<std::vector<std::string>> client_args;  // flags per client
  // Flags of every client's peer service (decentralized runs): the server
  // certificate, which is valid for 127.0.0.1.
  std::vector<std::string> peer_args;
  std::string status_token_file;
};

class Launcher {
 public:
  explicit Launcher(LauncherOptions options);
  // SIGKILLs and reaps any child still alive (only if Run left one behind,
  // which it does not on its normal paths) and closes its descriptors.
  ~Launcher();

  Launcher(const Launcher&) = delete;
  Launcher& operator=(const Launcher&) = delete;

  // Runs the whole federation and returns the process exit code: the
  // server's exit code, or kExitUsage, kExitFailure or kExitInterrupted.
  int Run();

  // The output folder (absolute); empty until Run has created it.
  const std::string& out_dir() const { return out_dir_; }

 private:
  struct Child {
    std::string name;      // "server", "client 3"
    std::string log_path;  // where its stderr goes
    pid_t pid = -1;
    bool exited = false;
    int wait_status = 0;
    bool signaled_by_us = false;
    bool is_client = false;
    bool is_helper = false;  // fedfwd-relay: stopped after the clients
  };

  // Steps of Run. Each returns OK or a message for stderr.
  absl::Status PrepareOutDir();
  absl::Status StartSignalHandling();
  void StopSignalHandling();
  // `netns`: a /run/netns path the child enters before exec (empty: none).
  absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& argv, int out_fd,
                              int err_fd, const std::string& netns = "");
  absl::Status StartServer(const std::string& server_exe);
  absl::Status StartRelay(const std::string& relay_exe);
  // Writes out_dir/links.json ({"link": spec or "mixed", "links": per
  // client}) for the coordinator's --summary-extra; its path.
  absl::StatusOr<std::string> WriteLinksFile();
  absl::Status StartClients(const std::string& client_exe,
                            const std::string& data_dir);

  // One turn of the event loop: waits at most `max_wait` (capped at 250 ms)
  // for server output or a signal, forwards complete lines, counts
  // SIGINT/SIGTERM/SIGHUP and reaps exited children.
  void Pump(absl::Duration max_wait);
  void ReadServerOutput();
  void EmitServerLine(absl::string_view line);
  void ReapChildren();
  void OnChildExited(const Child& child);

  // Pumps until every child in `which` has exited (true), `timeout` passes,
  // or the signal count reaches `stop_at_signals` (false). 0 never stops.
  enum class Which { kServer, kClients, kAll };
  bool WaitFor(Which which, absl::Duration timeout, int stop_at_signals);
  bool AllExited(Which which) const;
  void SignalChildren(Which which, int sig);
  // SIGTERM, grace period, SIGKILL, then a bounded reap.
  void StopChildren(Which which, absl::Duration grace, int stop_at_signals);
  // The path for a signal that asks the launcher to stop.
  int HandleInterrupt();
  void PrintServerLogTail();
  void PrintOutcome();

  const Child& server() const { return children_.front(); }

  LauncherOptions options_;
  Config config_;
  std::string out_dir_;
  LocalSecurity security_;
  std::vector<Child> children_;  // [0] is the server once started
  int server_out_fd_ = -1;       // read end of the server's stdout pipe
  std::string partial_line_;     // server output after the last newline
  std::optional<int> port_;      // from the server's "listening on" line
  int signal_fd_ = -1;
  int signal_count_ = 0;  // SIGINT/SIGTERM/SIGHUP received
  sigset_t saved_mask_;
  struct sigaction saved_sigpipe_;
  bool signals_installed_ = false;
  bool ran_ = false;
  std::vector<std::vector<std::string>> extra_client_args_;
  std::vector<LinkSpec> links_;  // one per client with --link; else empty
  std::unique_ptr<EmulatedNetwork> network_;
};

// ---- Pure helpers (tested directly) ----

// runs/<config file stem>-<YYYYmmdd-HHMMSS>, the time taken in `tz`.
std::string DefaultOutDir(const std::string& config_path, absl::Time now,
                          absl::TimeZone tz);

// `base` if no such path exists, else the first free "<base>-2", "<base>-3",
// ... (error after 1000 tries).
absl::StatusOr<std::string> FirstFreePath(const std::string& base);

// Creates the output folder `requested` (empty: a fresh DefaultOutDir of
// `config_path`, made unique by FirstFreePath) and returns it absolute,
// normalized, without a trailing slash.
absl::StatusOr<std::string> CreateOutDir(const std::string& requested,
                                         const std::string& config_path);

// The data folder the clients get: config.dataset.data_dir, or
// DefaultDataDir(config.dataset.name) when that is empty.
std::string ResolveDataDir(const Config& config);

// Writes <dir>/{ca,server,client}.pem, the keys (0600), client-<i>.token,
// status.token and credentials (dir itself 0700) for `clients` clients.
// The server certificate (also the peer services' in decentralized runs)
// is valid for localhost, 127.0.0.1 and `more_names` (--link: the links'
// addresses peers dial).
absl::StatusOr<LocalSecurity> MakeLocalSecurity(
    const std::string& dir, int clients,
    const std::vector<std::string>& more_names = {});
// The flags of an --insecure run.
LocalSecurity InsecureLocalSecurity(int clients);

// Splits "I=FLAG" specs into per-client flag lists (`clients` lists).
// Errors: no '=', I not an integer in [0, clients), an empty FLAG.
absl::StatusOr<std::vector<std::vector<std::string>>> ParseClientArgs(
    const std::vector<std::string>& specs, int clients);

// Full argv (argv[0] = `server_exe`) for the coordinator.
std::vector<std::string> ServerCommand(
    const std::string& server_exe, const std::string& config_yaml,
    const std::string& out_dir, int threads,
    const std::vector<std::string>& security_args);
// Full argv for client `shard` of `num_shards`, dialing `server` (HOST:PORT:
// 127.0.0.1 and the coordinator's port, or with --link the relay at the
// client's end of its link).
std::vector<std::string> ClientCommand(
    const std::string& client_exe, const std::string& server,
    const std::string& data_dir, int shard, int num_shards, int threads,
    const std::vector<std::string>& security_args);

// The port in "fedfwd-server listening on HOST:PORT" (surrounding whitespace
// allowed); nullopt for any other line or a port outside 1..65535.
std::optional<int> ParseListeningPort(absl::string_view line);

// `dir`/`name` if it is an executable regular file; NotFound otherwise, with
// a message saying how to build it.
absl::StatusOr<std::string> FindSiblingExecutable(const std::string& dir,
                                                  const std::string& name);
// The folder of the running executable (from /proc/self/exe).
absl::StatusOr<std::string> SelfExecutableDir();

// "exited with status 3", "was killed by signal 9 (Killed)".
std::string DescribeWaitStatus(int wait_status);
// Exit code a shell would report: the status, or 128 + signal number.
int ExitCodeFromWaitStatus(int wait_status);

// The top-level number "final_test_acc" of a summary.json text; nullopt if
// the text is not JSON or has no such number.
std::optional<double> FinalTestAccuracy(const std::string& summary_json);

// The last `n` lines of `text` (without their newlines).
std::vector<std::string> LastLines(absl::string_view text, size_t n);

// True for the coordinator's per-round progress lines: "round N/M" (N, M
// digits) then a space or the end. Only this beginning is relied on; the
// rest of the line passes through as it is.
bool IsProgressLine(absl::string_view line);

// How fedfwd-run shows one line of the coordinator's stdout.
struct ConsoleLine {
  // true: rewrite the live progress line with `text` ("\r\033[K" + text, no
  // newline); false: print `text` as a line of its own.
  bool in_place = false;
  std::string text;
};
// On a terminal (`terminal`), a progress line becomes "[label] line" (or the
// line alone without a label), cut to `columns` - 1 characters (UTF-8 aware;
// at least 20 columns assumed) so that it never wraps, since a wrapped line
// cannot be rewritten in place. Other lines, and every line when not on a
// terminal, are printed unchanged.
ConsoleLine ShowServerLine(absl::string_view line, absl::string_view label,
                           bool terminal, int columns);

}  // namespace fedfwd

#endif  // FEDFWD_TOOLS_LAUNCHER_H_
