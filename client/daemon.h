// ClientDaemon: the client's main loop. Joins the coordinator (retrying while
// it is unreachable), loads its shard, sends heartbeats from a second
// thread, long-polls for tasks, fetches the model when its copy is stale,
// computes and submits, and leaves when told the run is over.
//
// Every wait is bounded: a coordinator unreachable for longer than
// `unreachable_s` ends the daemon with an error. With `stay` the daemon
// outlives runs instead: when a run ends (STOP, or the coordinator goes away
// and comes back with another run) it waits, reconnecting with the same
// capped backoff for as long as it takes, joins the next run and works; only
// RequestStop (or an error that retrying cannot fix, such as a refused
// credential) ends it. A new run id gets a fresh trainer (data, model
// version, minibatch order); a resumed run (same id) keeps it.
//
// All state lives in the object (many daemons may share a process).
// Thread-safe: RequestStop may be called from any thread (e.g. a signal
// handler thread).
#ifndef FEDFWD_CLIENT_DAEMON_H_
#define FEDFWD_CLIENT_DAEMON_H_

#include <atomic>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "client/coordinator_client.h"
#include "client/peer_transport.h"
#include "common/log.h"
#include "common/privacy.h"
#include "common/step_rule.h"
#include "common/trainer.h"

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
  // Fault injection for tests: when a seed replay reaches this model
  // version, its last term is left out, as if lost (0: off). The replayed
  // model then fails its checksum and the daemon must fetch a snapshot.
  uint64_t drop_update_version = 0;
  // Keep running across runs (see above); unreachable_s does not apply.
  bool stay = false;
  // When set: after every successful exchange with the coordinator (join,
  // task poll, heartbeat, submit, model fetch, or its answer that the run
  // is over) this file is replaced atomically with the current unix time in
  // seconds and a newline (at most once a second), for container health
  // checks.
  std::string health_file;
  // Decentralized runs: serve the Peer service on this HOST:PORT (port 0:
  // any free one); empty: no peer service (federated runs only).
  std::string peer_listen;
  // The address peers dial (default: peer_listen with the bound port).
  std::string peer_advertise;
  // TLS of the Peer service: certificate and key it presents (for the
  // advertised address) and the CA whose client certificates it requires;
  // peer_tls.insecure for plaintext. Peers are dialed with `tls`.
  TlsOptions peer_tls;
  // Accept runs whose model is a TorchScript file sent by the coordinator
  // (RunSpec.torchscript): code that libtorch runs here. Off: such a run is
  // refused at join with an error that names this option.
  bool allow_torchscript = false;
};

class ClientDaemon {
 public:
  explicit ClientDaemon(DaemonOptions options);
  ~ClientDaemon();
  // Returns OK when the coordinator ends the run (never with `stay`);
  // Cancelled after RequestStop; another error when the daemon cannot go
  // on.
  absl::Status Run();
  void RequestStop() { stop_ = true; }
  bool stop_requested() const { return stop_; }

 private:
  absl::Status JoinWithRetry();
  // Until the run ends (OK), RequestStop (OK, stop_ set) or an error.
  absl::Status WorkLoop();
  // Brings the trainer to the task's model: a seed replay when the task
  // carries the updates from the trainer's version and the result hashes
  // to the task's checksum, else a snapshot fetch. Returns false (after
  // logging) when neither worked and the task should be polled again.
  absl::StatusOr<bool> SyncModel(const v1::Task& task);
  // Creates the trainer for the joined run and shard unless the current one
  // is for exactly those.
  absl::Status PrepareTrainer(const v1::JoinReply& reply);
  // Between runs (`stay`): no client id (heartbeats pause), no session, and
  // the next join asks for --shard again (or a fresh assignment).
  void ForgetMembership();
  // Sleeps `d`, or less once RequestStop was called.
  void SleepUnlessStopped(absl::Duration d);
  void TouchHealthFile();
  void Log(const std::string& line, LogFields fields = {},
           LogLevel level = LogLevel::kInfo);

  DaemonOptions options_;
  std::unique_ptr<CoordinatorClient> coordinator_;  // made by Run()
  // The peer service (when options_.peer_listen is set), started by Run().
  absl::Status StartPeerService();
  absl::Status RunPeerTask(const v1::Task& task);
  PeerMailbox mailbox_;
  std::unique_ptr<PeerService> peer_service_;
  std::unique_ptr<grpc::Server> peer_server_;
  std::unique_ptr<PeerSender> peer_sender_;
  std::string peer_address_;  // advertised
  // JoinRequest.join_key: random, one per daemon process, so that a join
  // retried after a lost reply gets its own registration back.
  const std::string join_key_;
  std::atomic<int> relayed_pending_{0};
  std::unique_ptr<Trainer> trainer_;
  std::atomic<bool> stop_{false};
  // Current membership (set by JoinWithRetry, read by the heartbeat thread).
  // session_ is written only by the work-loop thread (in JoinWithRetry),
  // under session_mu_; the heartbeat thread reads it under session_mu_.
  std::atomic<uint32_t> client_id_{0};
  std::mutex session_mu_;
  std::string session_;
  std::atomic<uint32_t> heartbeat_ms_{1000};
  int shard_ = -1;          // held in the current run; -1: none
  int run_num_shards_ = 0;  // the current run's shard count
  std::string run_id_;      // the run joined last ("" before the first)
  // RSS once model and data were loaded (KiB), and whether the peak was
  // reset then (the run_over line reports the training memory).
  int64_t rss_at_load_kib_ = -1;
  bool peak_reset_ = false;
  uint64_t run_seed_ = 0;  // its seed
  // The coordinator's optimizer step that seed replay carries (RunSpec;
  // common/step_rule.h), and this client's copy of its state, valid while
  // the trainer holds a model (version != 0).
  StepRule step_rule_;
  std::vector<float> step_state_;
  std::vector<float> step_scratch_;  // the step's gradient (Adam, clip_step)
  std::string trainer_key_;          // run and shard the trainer was made for
  // Health file (heartbeat thread and work loop).
  std::mutex health_mu_;
  int64_t health_written_s_ = 0;
  bool health_error_reported_ = false;
  // Noise for local differential privacy: every draw from the kernel's
  // CSPRNG (common/privacy.h), never from anything the coordinator knows.
  DpNoise dp_noise_;
};

}  // namespace fedfwd

#endif  // FEDFWD_CLIENT_DAEMON_H_
