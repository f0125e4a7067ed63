#include "tools/relay.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace fedfwd {
namespace {

absl::StatusOr<sockaddr_in> ParseAddress(absl::string_view text) {
  const size_t colon = text.rfind(':');
  if (colon == absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("address '", text, "' is not HOST:PORT"));
  }
  const std::string host(text.substr(0, colon));
  int port = 0;
  if (!absl::SimpleAtoi(text.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("address '", text, "' has no valid port"));
  }
  sockaddr_in addr;
  std::memset(&addr, 0, sizeof(addr));
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "address '", text, "': '", host, "' is not an IPv4 address"));
  }
  return addr;
}

void NoDelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

// Both sockets of one relayed connection; closed when the last of its four
// threads lets go.
struct Connection {
  int fds[2] = {-1, -1};  // [0] the accepted side, [1] the target side
  ~Connection() {
    for (int fd : fds) {
      if (fd >= 0) close(fd);
    }
  }
  // Wakes every thread blocked on either socket.
  void Break() {
    for (int fd : fds) shutdown(fd, SHUT_RDWR);
  }
};

// One direction of a connection: chunks read from `from`, written to `to`
// `delay` after they were read.
class Direction {
 public:
  Direction(std::shared_ptr<Connection> conn, int from, int to,
            absl::Duration delay)
      : conn_(std::move(conn)), from_(from), to_(to), delay_(delay) {}

  static void Start(std::shared_ptr<Connection> conn, int from, int to,
                    absl::Duration delay) {
    auto dir = std::make_shared<Direction>(std::move(conn), from, to, delay);
    std::thread([dir] { dir->Read(); }).detach();
    std::thread([dir] { dir->Write(); }).detach();
  }

 private:
  struct Chunk {
    absl::Time due;
    std::string bytes;  // empty: end of stream
  };

  void Read() {
    std::vector<char> buffer(64 << 10);
    while (true) {
      ssize_t n = read(from_, buffer.data(), buffer.size());
      if (n < 0 && errno == EINTR) continue;
      std::unique_lock<std::mutex> lock(mu_);
      if (n <= 0) {
        if (n < 0) failed_ = true;
        queue_.push_back({absl::Now() + delay_, std::string()});
        cv_.notify_all();
        return;
      }
      queue_.push_back({absl::Now() + delay_,
                        std::string(buffer.data(), static_cast<size_t>(n))});
      queued_ += static_cast<size_t>(n);
      cv_.notify_all();
      cv_.wait(lock, [&] {
        return queued_ < DelayRelay::kMaxQueuedBytes || failed_;
      });
      if (failed_) return;
    }
  }

  void Write() {
    while (true) {
      Chunk chunk;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return !queue_.empty(); });
        chunk = std::move(queue_.front());
        queue_.pop_front();
      }
      const absl::Duration wait = chunk.due - absl::Now();
      if (wait > absl::ZeroDuration()) absl::SleepFor(wait);
      if (chunk.bytes.empty()) {
        std::lock_guard<std::mutex> lock(mu_);
        if (failed_) {
          conn_->Break();
        } else {
          shutdown(to_, SHUT_WR);
        }
        return;
      }
      size_t done = 0;
      while (done < chunk.bytes.size()) {
        ssize_t n = send(to_, chunk.bytes.data() + done,
                         chunk.bytes.size() - done, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
          std::lock_guard<std::mutex> lock(mu_);
          failed_ = true;
          cv_.notify_all();
          conn_->Break();
          return;
        }
        done += static_cast<size_t>(n);
      }
      std::lock_guard<std::mutex> lock(mu_);
      queued_ -= chunk.bytes.size();
      cv_.notify_all();
    }
  }

  std::shared_ptr<Connection> conn_;
  const int from_;
  const int to_;
  const absl::Duration delay_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Chunk> queue_;
  size_t queued_ = 0;
  bool failed_ = false;
};

}  // namespace

absl::StatusOr<RelayRoute> ParseRelayRoute(absl::string_view text) {
  const size_t gt = text.find('>');
  const size_t at = text.rfind('@');
  if (gt == absl::string_view::npos || at == absl::string_view::npos ||
      at < gt) {
    return absl::InvalidArgumentError(
        absl::StrCat("route '", text,
                     "' is not LISTEN>TARGET@DELAY, e.g. "
                     "10.0.0.1:7000>127.0.0.1:4321@40ms"));
  }
  RelayRoute route;
  route.listen = std::string(text.substr(0, gt));
  route.target = std::string(text.substr(gt + 1, at - gt - 1));
  for (const std::string* address : {&route.listen, &route.target}) {
    if (absl::StatusOr<sockaddr_in> a = ParseAddress(*address); !a.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("route '", text, "': ", a.status().message()));
    }
  }
  const std::string delay(text.substr(at + 1));
  if (!absl::ParseDuration(delay, &route.delay) ||
      route.delay < absl::ZeroDuration() || route.delay > absl::Seconds(60)) {
    return absl::InvalidArgumentError(
        absl::StrCat("route '", text, "': delay '", delay,
                     "' is not a duration from 0 to 60s (e.g. 40ms)"));
  }
  return route;
}

absl::StatusOr<std::unique_ptr<DelayRelay>> DelayRelay::Start(
    std::vector<RelayRoute> routes) {
  std::unique_ptr<DelayRelay> relay(new DelayRelay());
  relay->routes_ = std::move(routes);
  for (const RelayRoute& route : relay->routes_) {
    absl::StatusOr<sockaddr_in> addr = ParseAddress(route.listen);
    if (!addr.ok()) return addr.status();
    if (absl::StatusOr<sockaddr_in> t = ParseAddress(route.target); !t.ok()) {
      return t.status();
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      return absl::UnavailableError(
          absl::StrCat("socket: ", std::strerror(errno)));
    }
    relay->listen_fds_.push_back(fd);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, reinterpret_cast<const sockaddr*>(&*addr), sizeof(*addr)) !=
            0 ||
        listen(fd, 128) != 0) {
      return absl::UnavailableError(absl::StrCat(
          "cannot listen on ", route.listen, ": ", std::strerror(errno)));
    }
    sockaddr_in bound;
    socklen_t len = sizeof(bound);
    getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
    char host[INET_ADDRSTRLEN] = {0};
    inet_ntop(AF_INET, &bound.sin_addr, host, sizeof(host));
    relay->listening_.push_back(absl::StrCat(host, ":", ntohs(bound.sin_port)));
  }
  for (size_t i = 0; i < relay->routes_.size(); ++i) {
    DelayRelay* self = relay.get();
    relay->acceptors_.emplace_back([self, i] { self->AcceptLoop(i); });
  }
  return relay;
}

DelayRelay::~DelayRelay() {
  stopping_ = true;
  for (int fd : listen_fds_) shutdown(fd, SHUT_RDWR);
  for (std::thread& t : acceptors_) t.join();
  for (int fd : listen_fds_) close(fd);
}

void DelayRelay::AcceptLoop(size_t route) {
  const RelayRoute& r = routes_[route];
  const sockaddr_in target = *ParseAddress(r.target);
  while (!stopping_) {
    int in = accept4(listen_fds_[route], nullptr, nullptr, SOCK_CLOEXEC);
    if (in < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (stopping_) return;
      absl::SleepFor(absl::Milliseconds(10));  // EMFILE and the like
      continue;
    }
    int out = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (out < 0 || connect(out, reinterpret_cast<const sockaddr*>(&target),
                           sizeof(target)) != 0) {
      // The target is not there (yet): the caller sees a closed connection
      // and retries, as it would against the target itself.
      if (out >= 0) close(out);
      close(in);
      continue;
    }
    NoDelay(in);
    NoDelay(out);
    auto conn = std::make_shared<Connection>();
    conn->fds[0] = in;
    conn->fds[1] = out;
    Direction::Start(conn, in, out, r.delay);
    Direction::Start(conn, out, in, r.delay);
  }
}

}  // namespace fedfwd
