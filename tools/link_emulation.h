// Emulated network links for fedfwd-run --link: every client daemon in its
// own Linux network namespace, joined to the coordinator's namespace by its
// own veth pair, the rate shaped by tbf each way and the delay added by
// fedfwd-relay (relay.h; this kernel has no netem).
//
//   client i's namespace              coordinator's namespace
//   fedfwd-<pid>-c<i>                 fedfwd-<pid>-co
//   eth0 10.x.y.(4i+2)/30 ---veth--- cl<i> 10.x.y.(4i+1)/30
//   egress: tbf at `up`               egress: tbf at `down`
//   fedfwd-client --server            fedfwd-relay: cl<i>'s address:7000
//     10.x.y.(4i+1):7000                -> 127.0.0.1:<coordinator's port>,
//                                          `delay` each way
//                                       fedfwd-server --listen 127.0.0.1:0
//
// Decentralized runs: client i serves the peer service on its own end,
// 10.x.y.(4i+2):7100, and advertises its link's coordinator end,
// 10.x.y.(4i+1):7001, where a relay route adds client i's delay each way.
// A client reaches any 10/8 address through its link (one route), so a
// peer message from i to j crosses i's uplink and j's downlink (each tbf
// once) and carries j's delay: the path through a shared switch, with the
// receiving end's delay only (this kernel has no netem for the sender's).
//
// Everything lives in namespaces of its own: the host's network and routes
// are not touched, and two launchers do not see each other's addresses. The
// namespaces are named after the launcher's pid; deleting them removes the
// veth pairs and queueing disciplines with them. A launcher killed outright
// (SIGKILL) cannot do that, so every start first removes the namespaces of
// launchers that are no longer running (RemoveStaleNamespaces).
//
// Needs root (CAP_NET_ADMIN and /run/netns) and iproute2's `ip` and `tc`;
// CheckLinkSupport says what is missing. Nothing is ever run unshaped in
// place of a link that could not be set up.
#ifndef FEDFWD_TOOLS_LINK_EMULATION_H_
#define FEDFWD_TOOLS_LINK_EMULATION_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace fedfwd {

struct LinkSpec {
  int64_t up_bps = 0;    // client -> coordinator, bits per second; 0: unshaped
  int64_t down_bps = 0;  // coordinator -> client
  absl::Duration delay;  // one way, added in each direction
  // "up=1mbit,down=10mbit,delay=40ms" (unshaped directions left out).
  std::string ToString() const;
};

// "256kbit", "10mbit", "1gbit", "9600bit" (decimal units, as tc reads them).
absl::StatusOr<int64_t> ParseRate(absl::string_view text);
// "1mbit" for 1000000, "256kbit", ...: the shortest exact form.
std::string FormatRate(int64_t bps);

// Comma-separated KEY=VALUE: up=RATE, down=RATE, rate=RATE (both ways),
// delay=DURATION (e.g. 40ms). Applied over `base` (keys not given keep
// base's values). Errors name the key at fault.
absl::StatusOr<LinkSpec> ParseLinkSpec(absl::string_view text,
                                       const LinkSpec& base = LinkSpec());

// One link per client: `spec` for all (may be empty), then each override
// "I=SPEC" (I 0-based, or a range "I-J") applied over it.
absl::StatusOr<std::vector<LinkSpec>> ClientLinks(
    absl::string_view spec, const std::vector<std::string>& overrides,
    int clients);

// The queueing discipline's parameters for a rate: burst (bytes a full
// bucket passes at once) and limit (bytes that may wait in the queue).
struct TbfParams {
  int64_t burst_bytes = 0;
  int64_t limit_bytes = 0;
};
TbfParams TbfFor(int64_t bps);

// Root, `ip` and `tc` found, and network namespaces usable. The error says
// what is missing and that fedfwd-run does not run unshaped instead.
absl::Status CheckLinkSupport();

// Deletes the fedfwd-<pid>-* namespaces of launchers no longer running (and
// so their links). Returns how many it removed.
int RemoveStaleNamespaces();

// The namespaces fedfwd-run made for one pid (for tests: "nothing left").
std::vector<std::string> NamespacesOf(pid_t pid);

class EmulatedNetwork {
 public:
  static constexpr int kRelayPort = 7000;
  // Decentralized runs: the peer relay on each link's coordinator end, and
  // the peer service's port in each client's namespace.
  static constexpr int kPeerRelayPort = 7001;
  static constexpr int kPeerPort = 7100;

  // Creates the namespaces and links for one run of this process (named
  // after getpid()). On error, whatever was made is removed again.
  static absl::StatusOr<std::unique_ptr<EmulatedNetwork>> Create(
      const std::vector<LinkSpec>& client_links);
  // Deletes the namespaces (and with them links and queueing disciplines).
  ~EmulatedNetwork();

  EmulatedNetwork(const EmulatedNetwork&) = delete;
  EmulatedNetwork& operator=(const EmulatedNetwork&) = delete;

  // /run/netns/<name>, for setns(2) in a child before exec.
  std::string CoordinatorNetns() const;
  std::string ClientNetns(int client) const;
  // HOST:PORT a client dials: the relay on its link's coordinator end.
  std::string ClientServerAddress(int client) const;
  // Decentralized runs: the client's --peer-listen (its own end) and
  // --peer-advertise (the peer relay on its link's coordinator end).
  std::string ClientPeerListen(int client) const;
  std::string ClientPeerAdvertise(int client) const;
  // fedfwd-relay --route values, one per client, to 127.0.0.1:server_port;
  // with `peers`, one more per client from its peer relay to its peer
  // service, with its delay.
  std::vector<std::string> RelayRoutes(int server_port,
                                       bool peers = false) const;
  const std::vector<LinkSpec>& links() const { return links_; }

 private:
  EmulatedNetwork() = default;
  absl::Status Build();

  std::string prefix_;  // fedfwd-<pid>
  std::vector<LinkSpec> links_;
  std::vector<std::string> made_;  // namespaces created, to delete
};

// Addresses of client i's link (coordinator end .1, client end .2 of the
// i-th /30 in 10.0.0.0/8).
std::string LinkAddress(int client, bool coordinator_end);

}  // namespace fedfwd

#endif  // FEDFWD_TOOLS_LINK_EMULATION_H_
