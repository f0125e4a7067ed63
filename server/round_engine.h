// RoundEngine: runs a federated run round by round. It owns the client
// registry, the global model and its snapshots, dispatches the strategy's
// tasks to long-polling clients, collects results until every assigned client
// answered, died or the round deadline passed, asks the strategy to merge,
// evaluates, and writes metrics. It knows no concrete strategy and no gRPC.
//
// Threading: Run() executes on one thread (the "engine thread"); all other
// public methods are called concurrently by the service's RPC threads and
// are thread-safe. Bad input (unknown client, stale session, wrong round,
// duplicate or invalid result) returns a precise error and changes nothing.
#ifndef FEDFWD_SERVER_ROUND_ENGINE_H_
#define FEDFWD_SERVER_ROUND_ENGINE_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/codec.h"
#include "common/config.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/model.h"
#include "server/checkpoint.h"
#include "server/engine.h"
#include "server/evaluator.h"
#include "server/progress.h"
#include "server/strategy.h"

namespace fedfwd {

// Whether `checkpoint` can continue a run of `config` on `spec`: the same
// config, a run that did not finish, parameters and counters that fit.
// RoundEngine::Resume checks it too; callers check it before touching the
// run's outputs (metrics.jsonl is cut back to the checkpoint on resume).
absl::Status CheckResumable(const ckpt::Checkpoint& checkpoint,
                            const Config& config, const ModelSpec& spec);

class RoundEngine final : public CoordinatorEngine {
 public:
  // `out_dir` receives metrics.jsonl, summary.json and the final model.
  RoundEngine(Config config, ModelSpec spec, std::unique_ptr<Strategy> strategy,
              std::unique_ptr<Evaluator> evaluator,
              std::unique_ptr<MetricsWriter> metrics, int threads);
  ~RoundEngine();

  // Checkpoints to `path` (checkpoint.h) after every `every`-th round, but
  // not sooner than `min_interval_s` after the previous checkpoint (0: every
  // `every`-th round without exception), and when the run stops or
  // finishes. Call before Run().
  void EnableCheckpoints(std::string path, int every,
                         double min_interval_s = 0);
  // Restores a checkpoint before Run(): model, optimizer state, counters,
  // targets and the client registry (its clients keep their ids and
  // sessions and have timeouts.client_s to come back); Run() then goes on
  // at round rounds_done + 1. Refuses a checkpoint of another config, of
  // another model size, or of a run that finished.
  absl::Status Resume(const ckpt::Checkpoint& checkpoint);
  // (client id, credential) of every registered client: the service binds
  // ids to credentials again after a resume.
  std::vector<std::pair<uint32_t, std::string>> ClientOwners() override;

  // Runs the whole training; returns when the run is over (or stopped).
  absl::Status Run() override;
  // Asks Run() to stop after the current round (signal handlers, tests).
  void RequestStop() override;

  // --- Called by RPC threads. ---
  absl::StatusOr<JoinOutcome> Join(const JoinParams& params) override;
  // Blocks up to `wait` for a task. Returns kStop once the run is over.
  // `have_version`: the model version the client holds (0: none); the
  // outcome carries the seed updates from there when the coordinator has
  // them (config sync: auto).
  absl::StatusOr<TaskOutcome> NextTask(uint32_t client_id,
                                       const std::string& session,
                                       absl::Duration wait,
                                       uint64_t have_version = 0) override;
  // How many past model versions keep their seed updates for replay.
  static constexpr size_t kReplayHistory = 64;
  absl::Status Submit(const std::string& session, const ClientResult& result,
                      uint64_t model_version) override;
  // The snapshot of `version` (0: current).
  absl::StatusOr<std::shared_ptr<const Snapshot>> GetSnapshot(
      uint32_t client_id, const std::string& session,
      uint64_t version) override;
  absl::StatusOr<std::shared_ptr<const Snapshot>> GetStepState(
      uint32_t client_id, const std::string& session,
      uint64_t version) override;
  absl::Status Heartbeat(uint32_t client_id,
                         const std::string& session) override;
  absl::Status Leave(uint32_t client_id, const std::string& session,
                     const std::string& reason) override;
  EngineStatus GetStatus() override;
  // How many evaluations GetStatus keeps in accuracy_history.
  static constexpr size_t kAccuracyHistory = 10;
  // The run's id ("MODEL-DATASET-sSEED-UNIXTIME-XXXX"; a resumed run keeps
  // its checkpoint's). Fixed once Run() starts.
  const std::string& run_id() const override { return run_id_; }
  // Serialized protobuf bytes seen by the service, per direction.
  void CountBytes(int64_t up, int64_t down) override;

  const Config& config() const override { return config_; }
  const ModelSpec& spec() const override { return spec_; }

 private:
  struct ClientEntry {
    std::string name;
    std::string owner;
    std::string session;
    std::string join_key;
    int shard = 0;
    bool alive = true;
    absl::Time last_seen;
  };
  enum class State { kWaiting, kTraining, kFinished };

  // All *Locked methods require mu_.
  absl::StatusOr<ClientEntry*> CheckClientLocked(uint32_t id,
                                                 const std::string& session);
  void ExpireClientsLocked(absl::Time now);
  std::vector<uint32_t> LiveClientsLocked() const;
  int LiveCountLocked() const;
  // The replay from `have_version` to the current snapshot (TaskOutcome).
  std::vector<ReplayEntry> ReplayFromLocked(uint64_t have_version) const;
  // About what one SeedUpdate takes on the wire.
  static constexpr size_t kSeedUpdateWireBytes = 48;
  bool WaitForLiveClients(int count, absl::Duration timeout);
  absl::StatusOr<std::vector<ClientResult>> RunRound(
      int64_t round, std::vector<TaskSpec>* tasks);
  // Publishes params_ as the next model version (`version`: that number
  // instead, for a resumed run), with the strategy's replay state beside it
  // when its replay carries one; `replay`: the seed step that turned the
  // previous version into it (null: not expressible, which ends the replay
  // chain until the next such update).
  void PublishSnapshot(std::shared_ptr<const SeedStep> replay = nullptr,
                       uint64_t version = 0);
  absl::Status RunRounds();
  absl::Status Finish(int64_t rounds_done, double wall_s, bool interrupted);
  void WaitForClientsToLeave(absl::Duration timeout);
  // Writes <kind>_model.bin (model_file.h format) from params_.
  absl::Status WriteModel(const std::string& kind, int64_t round,
                          double test_acc);
  std::string SummaryJson(int64_t rounds_done, double wall_s, bool interrupted,
                          const absl::Status& error) const;
  // One coordinator event: `line` is the human text (unchanged from before
  // structured logs; tests and fedfwd-run parse some of it), `fields` its
  // structured form. Always on stdout.
  void Log(const std::string& line, LogFields fields = {},
           LogLevel level = LogLevel::kInfo);
  // Progress after round p.round: the plain line (every evaluation and at
  // most every 10 s, or every round at debug level), the live status line
  // on a terminal (at most 4 times a second).
  void ReportProgress(const RoundProgress& p, bool evaluated, absl::Time now);
  // Records an evaluation for GetStatus (any thread but mu_ not held).
  void NoteEvaluation(int64_t round, double test_acc);
  // Writes the checkpoint now (engine thread, between rounds).
  absl::Status SaveCheckpoint(bool finished);

  const Config config_;
  const ModelSpec spec_;
  std::unique_ptr<Strategy> strategy_;
  std::unique_ptr<Evaluator> evaluator_;
  std::unique_ptr<MetricsWriter> metrics_;
  const int threads_;
  std::string run_id_;  // engine thread (and before Run)
  std::string checkpoint_path_;
  int checkpoint_every_ = 0;
  absl::Duration checkpoint_min_interval_;
  absl::Time last_checkpoint_ = absl::InfinitePast();
  bool resumed_ = false;
  double resumed_elapsed_s_ = 0;
  double initial_test_acc_ = -1;

  std::vector<float> params_;  // engine thread only
  std::atomic<int64_t> bytes_up_{0}, bytes_down_{0};
  std::atomic<int64_t> sync_replays_{0}, sync_snapshots_{0};
  std::atomic<bool> stop_requested_{false};

  // Target bookkeeping (engine thread only).
  struct TargetHit {
    double target;
    int64_t round = -1;
    double wall_s = 0;
    int64_t bytes_up = 0, bytes_down = 0;
  };
  std::vector<TargetHit> targets_;
  int64_t bytes_up_total_ = 0, bytes_down_total_ = 0;
  double final_test_acc_ = -1;
  double final_test_rmse_ = 0;  // regression: the RMSE beside the score
  double best_test_acc_ = -1;
  double last_cpu_ms_ = 0;  // ProcessCpuMs() at the previous row
  bool stopped_at_target_ = false;
  int64_t rounds_done_ = 0;
  // Rounds opened, retried ones included: with privacy on, each is at most
  // one release per client (engine thread).
  int64_t round_attempts_ = 0;
  double Epsilon() const;
  absl::Time start_ = absl::InfinitePast();  // first round's start

  std::mutex mu_;
  std::condition_variable cv_;
  // Long-polled GetTask calls wait here: woken by every change cv_ hears
  // except a submitted result, which gives no other client a task (with
  // one condition variable each round's submits woke every waiting poll).
  std::condition_variable task_cv_;
  void NotifyAll() {
    cv_.notify_all();
    task_cv_.notify_all();
  }
  State state_ = State::kWaiting;
  std::string stop_message_ = "the run is over";
  std::map<uint32_t, ClientEntry> clients_;
  uint32_t next_client_id_ = 1;
  int64_t round_ = 0;
  bool round_open_ = false;
  std::map<uint32_t, TaskSpec> tasks_;
  std::map<uint32_t, ClientResult> results_;
  std::shared_ptr<const Snapshot> snapshot_;
  // The strategy's replay state at snapshot_'s version (null: none).
  std::shared_ptr<const Snapshot> step_state_;
  // Seed updates of the latest versions (consecutive, oldest first).
  std::deque<ReplayEntry> replay_history_;
  double last_test_acc_ = -1;
  int64_t last_test_round_ = -1;
  std::deque<std::pair<int64_t, double>> accuracy_history_;
  // Copies of engine-thread figures for GetStatus (under mu_).
  absl::Time status_start_ = absl::InfinitePast();
  int64_t status_bytes_up_ = 0, status_bytes_down_ = 0;
  double status_eta_s_ = -1;
  double status_final_wall_s_ = -1;  // set when the run ends

  // Progress reporting (engine thread only).
  absl::Time last_plain_log_ = absl::InfinitePast();
  absl::Time last_live_update_ = absl::InfinitePast();
};

}  // namespace fedfwd

#endif  // FEDFWD_SERVER_ROUND_ENGINE_H_
