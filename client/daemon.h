// ClientDaemon: the client's main loop. Joins the coordinator (retrying while
// it is unreachable), loads its shard, sends heartbeats from a second
// thread, long-polls for tasks, fetches the model when its copy is stale,
// computes and submits, and leaves when told the run is over.
//
// Every wait is bounded: a coordinator unreachable for longer than
// `unreachable_s` ends the daemon with an error. Thread-safe: RequestStop may
// be called from any thread (e.g. a signal handler thread).
#ifndef FEDFWD_CLIENT_DAEMON_H_
#define FEDFWD_CLIENT_DAEMON_H_

#include <atomic>
#include <memory>
#include <mutex>
#include <random>
#include <string>

#include "absl/status/status.h"
#include "client/coordinator_client.h"
#include "client/trainer.h"

namespace fedfwd {

struct DaemonOptions {
  std::string server;    // HOST:PORT
  std::string data_dir;  // where the dataset files are
  int shard = -1;        // -1: the coordinator assigns one
  int num_shards = 0;
  std::string device = "cpu";
  int threads = 0;
  std::string name;  // for the coordinator's logs
  double unreachable_s = 120;
  TlsOptions tls;     // transport security (see common/security.h)
  std::string token;  // bearer token sent on every call; empty: none
  // Robustness experiments only: multiplies every JVP value and every
  // update this daemon sends by this factor (1: honest).
  double adversary_scale = 1.0;
};

class ClientDaemon {
 public:
  explicit ClientDaemon(DaemonOptions options);
  ~ClientDaemon();
  // Returns OK when the coordinator ends the run; Cancelled after
  // RequestStop; another error when the daemon cannot go on.
  absl::Status Run();
  void RequestStop() { stop_ = true; }

 private:
  absl::Status JoinWithRetry();
  absl::Status WorkLoop();
  void Log(const std::string& line);

  DaemonOptions options_;
  std::unique_ptr<CoordinatorClient> coordinator_;  // made by Run()
  std::unique_ptr<Trainer> trainer_;
  std::atomic<bool> stop_{false};
  // Current membership (set by JoinWithRetry, read by the heartbeat thread).
  // session_ is written only by the work-loop thread (in JoinWithRetry),
  // under session_mu_; the heartbeat thread reads it under session_mu_.
  std::atomic<uint32_t> client_id_{0};
  std::mutex session_mu_;
  std::string session_;
  std::atomic<uint32_t> heartbeat_ms_{1000};
  int shard_ = -1;
  // Noise for local differential privacy: seeded from the OS, never from
  // anything the coordinator knows.
  std::mt19937_64 dp_rng_{std::random_device{}()};
};

}  // namespace fedfwd

#endif  // FEDFWD_CLIENT_DAEMON_H_
