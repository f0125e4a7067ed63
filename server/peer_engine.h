// PeerEngine: the coordinator of a decentralized run (config `algorithm`
// easgd, gosgd or sgp). The workers (client daemons) train and mix among
// themselves over their Peer services; this engine only
//   - keeps membership: joins (each worker must serve the Peer service),
//     heartbeats, leaves, and the live-worker list it hands out;
//   - starts the run once `clients` workers joined (or, after
//     timeouts.join_s, at least min_clients and 2), giving each its PEER
//     task with the peers' addresses and the run's peer token;
//   - holds EASGD's center variable: workers read it (GetSnapshot) and send
//     their elastic differences (Submit, result.round = exchange number);
//     synchronous EASGD completes exchange k once every live worker's
//     difference for k is in (a worker that dies is dropped from the
//     barrier when its heartbeats stop);
//   - relays peer messages whose direct delivery failed (bounded queues);
//   - evaluates the consensus model (the mean of the workers' reported
//     parameters) every peer report step (eval_every local steps) once every
//     live worker has reported that step, with the spread between workers,
//     and writes metrics.jsonl (index `step`: the total local steps of all
//     workers so far), summary.json and final_model.bin (the consensus).
//
// The run ends when every worker finished its steps or died; a worker that
// dies does not stop the others. Checkpoints and --resume are not supported
// for decentralized runs.
//
// Threading as for every CoordinatorEngine: Run() on one thread, the rest
// from RPC threads; all state under mu_.
#ifndef FEDFWD_SERVER_PEER_ENGINE_H_
#define FEDFWD_SERVER_PEER_ENGINE_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common/log.h"
#include "common/metrics.h"
#include "server/engine.h"
#include "server/evaluator.h"

namespace fedfwd {

class PeerEngine final : public CoordinatorEngine {
 public:
  // Messages queued per destination before RelayPush answers
  // RESOURCE_EXHAUSTED (the sender then keeps the message's mass).
  static constexpr size_t kMaxRelayed = 64;
  // Report steps kept waiting for slow workers before the oldest is
  // evaluated with the reports it has.
  static constexpr size_t kMaxPendingReports = 64;

  PeerEngine(Config config, ModelSpec spec,
             std::unique_ptr<Evaluator> evaluator,
             std::unique_ptr<MetricsWriter> metrics, int threads);
  ~PeerEngine() override;

  absl::Status Run() override;
  void RequestStop() override;

  absl::StatusOr<JoinOutcome> Join(const JoinParams& params) override;
  absl::StatusOr<TaskOutcome> NextTask(uint32_t client_id,
                                       const std::string& session,
                                       absl::Duration wait,
                                       uint64_t have_version) override;
  // EASGD only: an elastic difference; see the file comment.
  absl::Status Submit(const std::string& session, const ClientResult& result,
                      uint64_t model_version) override;
  // EASGD only: the center of `version` (0: the current one). Synchronous
  // EASGD waits (at most timeouts.round_s) for that version.
  absl::StatusOr<std::shared_ptr<const Snapshot>> GetSnapshot(
      uint32_t client_id, const std::string& session,
      uint64_t version) override;
  absl::Status Heartbeat(uint32_t client_id,
                         const std::string& session) override;
  absl::Status Leave(uint32_t client_id, const std::string& session,
                     const std::string& reason) override;
  EngineStatus GetStatus() override;
  void CountBytes(int64_t up, int64_t down) override;
  std::vector<std::pair<uint32_t, std::string>> ClientOwners() override;
  const Config& config() const override { return config_; }
  const ModelSpec& spec() const override { return spec_; }
  const std::string& run_id() const override { return run_id_; }

  absl::StatusOr<std::vector<v1::PeerInfo>> ReportModel(
      const std::string& session, const ClientResult& result,
      int64_t peer_bytes) override;
  absl::Status Relay(uint32_t from, const std::string& session, uint32_t to,
                     PeerMessage message) override;
  absl::StatusOr<std::vector<PeerMessage>> TakeRelayed(
      uint32_t client_id, const std::string& session) override;
  int RelayedPending(uint32_t client_id) override;

  // The EASGD moving rate in use (config peer.alpha, or beta / (p tau)).
  double elastic_alpha() const;

 private:
  enum class State { kWaiting, kTraining, kFinished };
  struct Worker {
    std::string name, owner, session, peer_address, join_key;
    int shard = 0;
    bool alive = true;
    bool assigned = false;  // took part from the start
    bool task_sent = false;
    int64_t last_step = 0;  // last reported local step
    double last_loss = 0;
    int64_t peer_bytes = 0;
    absl::Time last_seen;
    std::deque<PeerMessage> relayed;  // their `from` is the sender
  };
  // The reports of one step, summed as they arrive.
  struct PendingReport {
    std::vector<double> sum;  // of the workers' parameters
    double sum_sq = 0;        // of their squared norms
    double loss_sum = 0;
    std::set<uint32_t> from;
  };

  absl::StatusOr<Worker*> CheckWorkerLocked(uint32_t id,
                                            const std::string& session);
  void ExpireLocked(absl::Time now);
  void DropLocked(uint32_t id, Worker* w, const std::string& why);
  // The workers still training (alive, assigned, steps left).
  std::vector<v1::PeerInfo> LivePeersLocked() const;
  // Synchronous EASGD: applies the open exchange once every live worker
  // that still has exchanges to make sent its difference.
  void MaybeCloseExchangeLocked();
  // The smallest pending report step every live assigned worker reported
  // (or any, when too many are pending); -1: none ready.
  int64_t ReadyReportLocked() const;
  bool AllDoneLocked() const;
  // The error for a training call outside the training phase.
  absl::Status NotTrainingLocked() const;
  std::shared_ptr<const Snapshot> CenterSnapshotLocked();
  absl::Status EvaluateStep(int64_t step, PendingReport report);
  absl::Status Finish(double wall_s, bool interrupted,
                      const absl::Status& error);
  void Log(const std::string& line, LogFields fields = {},
           LogLevel level = LogLevel::kInfo);

  const Config config_;
  const ModelSpec spec_;
  std::unique_ptr<Evaluator> evaluator_;
  std::unique_ptr<MetricsWriter> metrics_;
  const int threads_;
  const std::string run_id_;
  const std::string peer_token_;
  const int64_t report_every_;
  std::atomic<int64_t> bytes_up_{0}, bytes_down_{0};
  std::atomic<bool> stop_requested_{false};

  std::mutex mu_;
  std::condition_variable cv_;
  State state_ = State::kWaiting;
  std::map<uint32_t, Worker> workers_;
  uint32_t next_id_ = 1;
  int workers_started_ = 0;
  std::map<int64_t, PendingReport> reports_;
  absl::Time start_ = absl::InfinitePast();
  // EASGD center variable and its version (1 at the start, +1 per applied
  // difference (asynchronous) or per closed exchange (synchronous)).
  std::vector<float> center_;
  uint64_t initial_checksum_ = 0;  // XXH64 of the initial model
  uint64_t center_version_ = 1;
  std::shared_ptr<const Snapshot> center_snapshot_;
  int64_t open_exchange_ = 1;         // synchronous: the exchange collecting
  std::vector<double> exchange_sum_;  // its differences, summed
  std::set<uint32_t> exchanged_;      // who sent one
  // Figures (under mu_).
  double last_test_acc_ = -1;
  double last_test_rmse_ = 0;  // regression: beside the score
  int64_t last_eval_step_ = -1;
  std::deque<std::pair<int64_t, double>> accuracy_history_;
  std::vector<float> consensus_;  // the last evaluated consensus
  double best_test_acc_ = -1;
  std::vector<std::pair<double, int64_t>> target_hits_;  // (target, step)
  double final_wall_s_ = -1;
  int64_t relayed_total_ = 0;  // messages queued by Relay
  int64_t relayed_taken_ = 0;  // ... and fetched by their destination
};

}  // namespace fedfwd

#endif  // FEDFWD_SERVER_PEER_ENGINE_H_
