// fedfwd-relay: TCP relay with a fixed one-way delay per route (see
// tools/relay.h). fedfwd-run --link starts it in the coordinator's network
// namespace; it also serves tests and experiments by hand.
#include <signal.h>

#include <cstdio>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_join.h"
#include "tools/relay.h"

int main(int argc, char** argv) {
  std::vector<std::string> specs;
  CLI::App app{
      "Relays TCP connections and delays every byte by a fixed time in each "
      "direction (one way), for emulated links on kernels without netem. "
      "Prints \"fedfwd-relay listening on ADDR[, ADDR...]\" once every route "
      "listens, then runs until SIGTERM or SIGINT.",
      "fedfwd-relay"};
  app.add_option("--route", specs,
                 "LISTEN>TARGET@DELAY, e.g. 10.0.0.1:7000>127.0.0.1:4321@40ms "
                 "(repeatable; port 0 picks a free one)")
      ->required()
      ->allow_extra_args(false)
      ->type_name("ROUTE");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  std::vector<fedfwd::RelayRoute> routes;
  for (const std::string& spec : specs) {
    absl::StatusOr<fedfwd::RelayRoute> route = fedfwd::ParseRelayRoute(spec);
    if (!route.ok()) {
      std::fprintf(stderr, "fedfwd-relay: %s\n",
                   std::string(route.status().message()).c_str());
      return 2;
    }
    routes.push_back(*route);
  }
  // Block the stop signals before any thread starts, then wait for one.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  signal(SIGPIPE, SIG_IGN);
  absl::StatusOr<std::unique_ptr<fedfwd::DelayRelay>> relay =
      fedfwd::DelayRelay::Start(std::move(routes));
  if (!relay.ok()) {
    std::fprintf(stderr, "fedfwd-relay: %s\n",
                 std::string(relay.status().message()).c_str());
    return 1;
  }
  std::printf("fedfwd-relay listening on %s\n",
              absl::StrJoin((*relay)->listening(), ", ").c_str());
  std::fflush(stdout);
  int sig = 0;
  sigwait(&stop, &sig);
  // Connections in flight end with the process.
  std::_Exit(0);
}
