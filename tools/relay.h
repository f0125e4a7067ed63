// A TCP relay that adds a fixed one-way delay, the delay half of fedfwd-run's
// emulated links (link_emulation.h; this kernel has no netem, and a rate
// limit alone is tbf's job). fedfwd-relay runs it in the coordinator's
// network namespace: one route per client link, from the coordinator's end of
// that client's veth pair to the coordinator's port on 127.0.0.1.
//
// Every chunk read from either side of a connection is written to the other
// side `delay` after it was read, in order. A reader and a writer thread per
// direction keep the two apart, so the delay does not cap the throughput:
// up to kMaxQueuedBytes per direction are in flight, beyond that the reader
// waits (TCP's own flow control then slows the sender). An end of stream is
// passed on (shutdown of the write side) after the bytes before it; an error
// on either socket closes the connection.
#ifndef FEDFWD_TOOLS_RELAY_H_
#define FEDFWD_TOOLS_RELAY_H_

#include <atomic>
#include <cstddef>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace fedfwd {

struct RelayRoute {
  std::string listen;  // HOST:PORT (IPv4; port 0 picks a free one)
  std::string target;  // HOST:PORT
  absl::Duration delay;
};

// "LISTEN>TARGET@DELAY", e.g. "10.0.0.1:7000>127.0.0.1:4321@40ms"; DELAY as
// for absl::ParseDuration ("0" allowed). Error names the part at fault.
absl::StatusOr<RelayRoute> ParseRelayRoute(absl::string_view text);

class DelayRelay {
 public:
  static constexpr size_t kMaxQueuedBytes = 8 << 20;

  // Binds every route's listening socket (errors name the address) and starts
  // one accepting thread per route.
  static absl::StatusOr<std::unique_ptr<DelayRelay>> Start(
      std::vector<RelayRoute> routes);
  // Stops accepting; connections in flight end with the process.
  ~DelayRelay();

  DelayRelay(const DelayRelay&) = delete;
  DelayRelay& operator=(const DelayRelay&) = delete;

  // The bound addresses, in route order (HOST:PORT with the real port).
  const std::vector<std::string>& listening() const { return listening_; }

 private:
  DelayRelay() = default;
  void AcceptLoop(size_t route);

  std::vector<RelayRoute> routes_;
  std::vector<int> listen_fds_;
  std::vector<std::string> listening_;
  std::vector<std::thread> acceptors_;
  std::atomic<bool> stopping_{false};
};

}  // namespace fedfwd

#endif  // FEDFWD_TOOLS_RELAY_H_
