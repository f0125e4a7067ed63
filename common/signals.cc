#include "common/signals.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>

namespace fedfwd {
namespace {

// The handler's only state: process-wide by nature.
int g_pipe_write = -1;
std::atomic<int> g_signals{0};

void OnSignal(int sig) {
  if (g_signals.fetch_add(1) >= 1) _exit(130);
  const unsigned char b = static_cast<unsigned char>(sig);
  [[maybe_unused]] ssize_t n = write(g_pipe_write, &b, 1);
}

}  // namespace

void InstallStopHandler(std::function<void(int)> on_stop) {
  int fds[2];
  if (pipe(fds) != 0) return;
  g_pipe_write = fds[1];
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  // A launcher may have left these blocked across exec.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
  const int read_fd = fds[0];
  std::thread([read_fd, on_stop = std::move(on_stop)] {
    unsigned char b = 0;
    while (true) {
      const ssize_t n = read(read_fd, &b, 1);
      if (n == 1) {
        on_stop(static_cast<int>(b));
        return;
      }
      if (n == 0) return;
    }
  }).detach();
}

}  // namespace fedfwd
