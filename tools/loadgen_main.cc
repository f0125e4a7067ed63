// fedfwd-loadgen: many logical clients in one process, for load tests and
// benchmarks of the coordinator.
//
// Each logical client is a real ClientDaemon (the same join / long-poll /
// heartbeat / fetch / compute / submit loop and the same Trainer as
// fedfwd-client) on its own thread, with its own gRPC channel (its own TCP
// connection and TLS session: CoordinatorClient uses a local subchannel
// pool) and its own token. Client i (0-based) of this process trains on
// shard first_shard + i of num_shards and reads its token from
// <token-dir>/client-<first_shard + i>.token, the names MakeLocalSecurity
// (tools/launcher.h) writes.
//
// Exit code: 0 when every daemon ended because the coordinator ended the
// run; 1 when any daemon failed (each failure is printed on stderr); 2 for
// bad flags; 130 when stopped by SIGINT/SIGTERM.
#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "client/daemon.h"
#include "common/metrics.h"
#include "common/security.h"
#include "common/signals.h"
#include "common/torch_model.h"

int main(int argc, char** argv) {
  CLI::App app{
      "fedfwd load generator: runs --clients logical client daemons in this "
      "process, each with its own gRPC channel, TLS session and token, "
      "against one coordinator. Exits 0 when every one of them finished the "
      "run."};
  std::string server;
  std::string data_dir;
  int clients = 0;
  int first_shard = 0;
  int num_shards = 0;
  int threads = 1;
  double unreachable_s = 120;
  std::string token_dir;
  std::string name_prefix = "load";
  fedfwd::TlsOptions tls;
  app.add_option("--server", server, "coordinator HOST:PORT")->required();
  app.add_option("--data", data_dir, "folder holding the dataset files")
      ->required()
      ->check(CLI::ExistingDirectory);
  app.add_option("--clients", clients, "logical clients in this process")
      ->required()
      ->check(CLI::Range(1, 10000));
  auto* first = app.add_option(
      "--first-shard", first_shard,
      "shard (and token number) of this process's first client; client i "
      "gets first-shard + i");
  first->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--num-shards", num_shards,
                 "shards in the run (0: the coordinator assigns shards)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--threads", threads,
                 "libtorch threads shared by all clients of this process")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--unreachable-timeout", unreachable_s,
                 "a client gives up after the coordinator is unreachable "
                 "this long (s)")
      ->capture_default_str();
  app.add_option("--name-prefix", name_prefix,
                 "client i is named <prefix>-<first-shard + i> in the "
                 "coordinator's logs")
      ->capture_default_str();
  app.add_option("--token-dir", token_dir,
                 "folder holding client-<k>.token files (one token per "
                 "client, as fedfwd-run's secrets folder); without it no "
                 "token is sent")
      ->check(CLI::ExistingDirectory);
  app.add_option("--tls-ca", tls.ca_file,
                 "PEM CA that signed the coordinator's certificate");
  app.add_option("--tls-cert", tls.cert_file,
                 "PEM client certificate, for mutual TLS");
  app.add_option("--tls-key", tls.key_file, "PEM key of --tls-cert");
  app.add_option("--tls-server-name", tls.server_name,
                 "name to expect in the coordinator's certificate when it "
                 "differs from the --server host");
  app.add_flag("--insecure", tls.insecure,
               "plaintext instead of TLS (trusted networks only)");
  CLI11_PARSE(app, argc, argv);

  if (num_shards > 0 && first_shard + clients > num_shards) {
    std::fprintf(stderr,
                 "fedfwd-loadgen: --first-shard %d + --clients %d exceeds "
                 "--num-shards %d\n",
                 first_shard, clients, num_shards);
    return 2;
  }
  if (num_shards == 0 && first->count() > 0) {
    std::fprintf(stderr, "fedfwd-loadgen: --first-shard needs --num-shards\n");
    return 2;
  }

  std::vector<fedfwd::DaemonOptions> options(clients);
  for (int i = 0; i < clients; ++i) {
    const int k = first_shard + i;
    fedfwd::DaemonOptions& o = options[i];
    o.server = server;
    o.data_dir = data_dir;
    o.shard = num_shards > 0 ? k : -1;
    o.num_shards = num_shards;
    o.threads = threads;
    o.name = absl::StrCat(name_prefix, "-", k);
    o.unreachable_s = unreachable_s;
    o.tls = tls;
    if (!token_dir.empty()) {
      const std::string path = absl::StrCat(token_dir, "/client-", k, ".token");
      auto token = fedfwd::ReadTokenFile(path);
      if (!token.ok()) {
        std::fprintf(stderr, "fedfwd-loadgen: --token-dir: client %d: %s\n", k,
                     std::string(token.status().message()).c_str());
        return 2;
      }
      o.token = *token;
    }
  }
  if (tls.insecure && !token_dir.empty()) {
    std::fprintf(stderr,
                 "fedfwd-loadgen: warning: --insecure: tokens go in "
                 "plaintext\n");
  }

  fedfwd::SetTorchThreads(threads);
  std::vector<std::unique_ptr<fedfwd::ClientDaemon>> daemons;
  daemons.reserve(clients);
  for (auto& o : options) {
    daemons.push_back(std::make_unique<fedfwd::ClientDaemon>(o));
  }
  std::atomic<bool> stopped{false};
  fedfwd::InstallStopHandler([&](int) {
    stopped = true;
    for (auto& d : daemons) d->RequestStop();
  });

  std::vector<absl::Status> results(clients);
  std::vector<std::thread> workers;
  workers.reserve(clients);
  for (int i = 0; i < clients; ++i) {
    workers.emplace_back([&, i] { results[i] = daemons[i]->Run(); });
  }
  for (auto& w : workers) w.join();

  int failed = 0;
  for (int i = 0; i < clients; ++i) {
    if (results[i].ok()) continue;
    ++failed;
    std::fprintf(stderr, "fedfwd-loadgen: client %s: %s\n",
                 options[i].name.c_str(), results[i].ToString().c_str());
  }
  std::printf("fedfwd-loadgen: %d of %d clients finished the run, %d failed\n",
              clients - failed, clients, failed);
  std::fflush(stdout);
  if (stopped) return 130;
  return failed == 0 ? 0 : 1;
}
