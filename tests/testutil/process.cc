#include "tests/testutil/process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "absl/time/clock.h"

namespace fedfwd::testing {

ChildProcess::ChildProcess(const std::vector<std::string>& argv,
                           const std::string& log_path)
    : log_path_(log_path) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t parent = getpid();
  pid_ = fork();
  if (pid_ == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    const int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      close(fd);
    }
    execv(args[0], args.data());
    _exit(127);
  }
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0 && !exit_code_) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
}

std::optional<int> ChildProcess::Wait(absl::Duration timeout) {
  if (exit_code_) return exit_code_;
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    int status = 0;
    const pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      exit_code_ =
          WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return exit_code_;
    }
    if (absl::Now() >= deadline) return std::nullopt;
    absl::SleepFor(absl::Milliseconds(20));
  }
}

bool ChildProcess::Running() { return !Wait(absl::ZeroDuration()); }

void ChildProcess::Signal(int sig) {
  if (pid_ > 0 && !exit_code_) kill(pid_, sig);
}

std::string ChildProcess::Log() const { return ReadFile(log_path_); }

std::string BinPath(const std::string& name) {
  return std::string(FEDFWD_BIN_DIR) + "/" + name;
}

std::string SourcePath(const std::string& relative) {
  return std::string(FEDFWD_SOURCE_DIR) + "/" + relative;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<nlohmann::json> ReadJsonRows(const std::string& path) {
  std::vector<nlohmann::json> rows;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded()) rows.push_back(std::move(j));
  }
  return rows;
}

std::string WaitForListenAddress(ChildProcess& server, absl::Duration timeout) {
  static const std::regex re("listening on (127\\.0\\.0\\.1:[0-9]+)");
  std::string address;
  WaitUntil(
      [&] {
        std::smatch m;
        const std::string log = server.Log();
        if (std::regex_search(log, m, re)) address = m[1];
        return !address.empty() || !server.Running();
      },
      timeout);
  return address;
}

std::unique_ptr<ChildProcess> StartServerChild(
    const std::string& config, const std::string& out,
    const std::vector<std::string>& flags, const std::string& log,
    const std::string& listen) {
  std::vector<std::string> argv = {BinPath("fedfwd-server"),
                                   "--config",
                                   config,
                                   "--listen",
                                   listen,
                                   "--out",
                                   out};
  argv.insert(argv.end(), flags.begin(), flags.end());
  return std::make_unique<ChildProcess>(argv, log);
}

std::vector<std::string> ClientArgv(const std::string& address,
                                    const std::string& data_dir, int shard,
                                    int num_shards,
                                    const std::vector<std::string>& flags) {
  std::vector<std::string> argv = {BinPath("fedfwd-client"),
                                   "--server",
                                   address,
                                   "--data",
                                   data_dir,
                                   "--shard",
                                   std::to_string(shard),
                                   "--num-shards",
                                   std::to_string(num_shards),
                                   "--threads",
                                   "1"};
  argv.insert(argv.end(), flags.begin(), flags.end());
  return argv;
}

int CountOf(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t p = text.find(what); p != std::string::npos;
       p = text.find(what, p + 1)) {
    ++n;
  }
  return n;
}

std::string RealMnistDir() { return SourcePath("data/mnist"); }

bool HaveRealMnist() {
  return std::filesystem::exists(RealMnistDir() + "/train-images-idx3-ubyte");
}

}  // namespace fedfwd::testing
