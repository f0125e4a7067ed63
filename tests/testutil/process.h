// Child processes for multi-process tests: start a real fedfwd executable
// with its output in a file, wait for it with a bound, kill it. The
// destructor SIGKILLs and reaps a child still running, so a failing test
// leaves no process behind.
#ifndef FEDFWD_TESTS_TESTUTIL_PROCESS_H_
#define FEDFWD_TESTS_TESTUTIL_PROCESS_H_

#include <sys/types.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace fedfwd::testing {

class ChildProcess {
 public:
  // Starts argv[0] (a path) with stdout and stderr appended to `log_path`.
  ChildProcess(const std::vector<std::string>& argv,
               const std::string& log_path);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  // Exit code (128 + N for signal N), or nullopt if still running after
  // `timeout`.
  std::optional<int> Wait(absl::Duration timeout);
  bool Running();
  void Signal(int sig);
  const std::string& log_path() const { return log_path_; }
  std::string Log() const;

 private:
  pid_t pid_ = -1;
  std::optional<int> exit_code_;
  std::string log_path_;
};

// Absolute path of a built executable (build/bin/NAME).
std::string BinPath(const std::string& name);
// Path of a file in the source tree.
std::string SourcePath(const std::string& relative);
// Waits until `pred` is true, polling every 50 ms; false after `timeout`.
template <typename Pred>
bool WaitUntil(Pred pred, absl::Duration timeout);
std::string ReadFile(const std::string& path);

template <typename Pred>
bool WaitUntil(Pred pred, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (pred()) return true;
    absl::SleepFor(absl::Milliseconds(50));
  }
  return pred();
}

// How many times `what` occurs in `text` (overlapping matches count).
int CountOf(const std::string& text, const std::string& what);

// The rows of a metrics.jsonl; lines that do not parse are skipped.
std::vector<nlohmann::json> ReadJsonRows(const std::string& path);
// Waits for the "listening on 127.0.0.1:PORT" line of a fedfwd-server child
// and returns "127.0.0.1:PORT"; "" if the child exits first or `timeout`
// passes.
std::string WaitForListenAddress(ChildProcess& server,
                                 absl::Duration timeout = absl::Seconds(60));
// Starts fedfwd-server on `config`, writing to `out`, listening on `listen`
// (port 0: a free one), with `flags` (TLS, tokens, --resume...) appended;
// its output goes to `log`.
std::unique_ptr<ChildProcess> StartServerChild(
    const std::string& config, const std::string& out,
    const std::vector<std::string>& flags, const std::string& log,
    const std::string& listen = "127.0.0.1:0");
// The argv of a fedfwd-client for shard `shard` of `num_shards`, one
// libtorch thread, with `flags` appended.
std::vector<std::string> ClientArgv(const std::string& address,
                                    const std::string& data_dir, int shard,
                                    int num_shards,
                                    const std::vector<std::string>& flags);
// Real MNIST in the checkout (data/mnist, fetched by scripts/setup.sh).
std::string RealMnistDir();
bool HaveRealMnist();

}  // namespace fedfwd::testing

// Stops the current test (a fatal failure) when real MNIST is missing,
// saying how to fetch it. A macro, so that the ASSERT returns from the test
// itself.
#define FEDFWD_REQUIRE_MNIST()                                              \
  ASSERT_TRUE(::fedfwd::testing::HaveRealMnist())                           \
      << "real MNIST is missing from " << ::fedfwd::testing::RealMnistDir() \
      << "; run scripts/setup.sh"

#endif  // FEDFWD_TESTS_TESTUTIL_PROCESS_H_
