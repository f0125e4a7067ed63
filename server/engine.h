// The coordinator's engine as the gRPC service sees it: membership, tasks,
// results, snapshots and status. Two engines implement it: RoundEngine
// (federated rounds, round_engine.h) and PeerEngine (decentralized EASGD,
// GoSGD and SGP between client daemons, peer_engine.h). The service
// validates and converts; engines hold all run state.
//
// Thread-safety: every method may be called concurrently from RPC threads,
// except Run(), which one thread calls once.
#ifndef FEDFWD_SERVER_ENGINE_H_
#define FEDFWD_SERVER_ENGINE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/codec.h"
#include "common/config.h"
#include "common/gossip.h"
#include "common/log.h"
#include "common/model.h"
#include "common/rng.h"
#include "fedfwd.pb.h"
#include "server/run_summary.h"
#include "server/strategy.h"

namespace fedfwd {

struct JoinParams {
  uint32_t protocol_version = 0;
  std::string name;
  int shard = -1;
  int num_shards = 0;
  std::string owner;  // the credential that joins it ("" without auth)
  // Where the client serves the Peer service ("": it does not).
  std::string peer_address;
  // JoinRequest.join_key: equal keys and owners name the same daemon.
  std::string join_key;
};

// "<kind> <id> joined again (<name>), shard <shard>: ..." (FindRepeatedJoin).
void LogRepeatedJoin(const char* kind, uint32_t id, const std::string& name,
                     int shard);

// The live entry of `entries` (id -> entry with alive, join_key, owner and
// shard) that this join repeats: made with the same key and credential, its
// reply was lost. nullptr when none (an empty key never matches); logs the
// repeat when found. `kind` names the entry in the log ("client", "worker").
template <typename Map>
typename Map::value_type* FindRepeatedJoin(Map* entries, const JoinParams& p,
                                           const char* kind) {
  if (p.join_key.empty()) return nullptr;
  for (auto& kv : *entries) {
    const auto& e = kv.second;
    if (e.alive && e.join_key == p.join_key && e.owner == p.owner &&
        (p.shard < 0 || p.shard == e.shard)) {
      LogRepeatedJoin(kind, kv.first, p.name, e.shard);
      return &kv;
    }
  }
  return nullptr;
}

struct JoinOutcome {
  uint32_t client_id = 0;
  std::string session;
  int shard = 0;
};

// One model version's change as seeds (seed-replay sync).
struct ReplayEntry {
  uint64_t version = 0;
  std::shared_ptr<const SeedStep> step;
};

struct TaskOutcome {
  enum Kind { kWait, kCompute, kStop, kPeer } kind = kWait;
  TaskSpec task;
  uint64_t model_version = 0;
  uint64_t model_checksum = 0;
  std::string message;
  // Seed-replay sync: the updates from the client's model version to
  // model_version, oldest first; empty when the client must fetch a
  // snapshot instead.
  std::vector<ReplayEntry> replay;
  // Replay with optimizer state (StepRule::Stateful): XXH64 of the state
  // snapshot of model_version (GetStepState), which a replaying client's
  // state must hash to.
  bool has_step_state = false;
  uint64_t step_state_checksum = 0;
  // kPeer: the decentralized worker's assignment.
  v1::PeerTask peer;
};

struct ClientView {
  uint32_t id = 0;
  std::string name;
  int shard = 0;
  bool alive = false;
  double last_seen_s = 0;
};

struct EngineStatus {
  std::string run_id;
  int64_t round = 0;
  int64_t rounds = 0;
  uint64_t model_version = 0;
  double last_test_acc = -1;
  int64_t last_test_round = -1;  // -1: none yet, or unknown after a resume
  std::string state;
  std::vector<ClientView> clients;
  // The latest evaluations, oldest first (at most kAccuracyHistory).
  std::vector<std::pair<int64_t, double>> accuracy_history;
  double wall_s = 0;  // training time so far (0 before the first round)
  double eta_s = -1;  // -1: unknown
  int64_t bytes_up = 0, bytes_down = 0;  // so far, this round's included
  int clients_expected = 0;              // the config's `clients`
  int min_clients = 0;
  std::string model, dataset, estimator;
};

// A fresh random session string for a joining client.
std::string NewSession();
// A run id ("MODEL-DATASET-sSEED-UNIXTIME-XXXX") that differs between two
// coordinators started in the same second: a client that stays across runs
// (fedfwd-client --stay) tells a new run from the old one by it.
std::string NewRunId(const Config& config);

// Checks a join's protocol version and shard request against a run of
// `clients` shards: FAILED_PRECONDITION for another protocol version,
// INVALID_ARGUMENT for a shard out of range or another shard count.
absl::Status CheckJoinRequest(const JoinParams& p, int clients);
// The shard a joining client gets, `taken[i]` telling whether a live client
// holds shard i: `requested` when it is free (ALREADY_EXISTS when held), or
// for -1 the first free one (RESOURCE_EXHAUSTED when none is).
absl::StatusOr<int> AssignShard(const std::vector<bool>& taken, int requested);

// Looks up client `id` in an engine's registry (entries with `session`,
// `alive` and `last_seen`) and checks its session: NOT_FOUND, UNAUTHENTICATED,
// or FAILED_PRECONDITION "<what> ... was dropped (...)<dropped_hint>" for a
// dropped one. Marks it seen now.
template <typename Entry>
absl::StatusOr<Entry*> FindSession(std::map<uint32_t, Entry>* entries,
                                   uint32_t id, const std::string& session,
                                   const char* dropped_hint) {
  auto it = entries->find(id);
  if (it == entries->end()) {
    return absl::NotFoundError(absl::StrCat("unknown client id ", id));
  }
  if (it->second.session != session) {
    return absl::UnauthenticatedError(
        absl::StrCat("bad session for client ", id));
  }
  if (!it->second.alive) {
    return absl::FailedPreconditionError(
        absl::StrCat("client ", id, " was dropped (missed heartbeats or left)",
                     dropped_hint));
  }
  it->second.last_seen = absl::Now();
  return &it->second;
}

// One coordinator event on stdout (human text `line`, structured `fields`).
void LogCoordinatorEvent(const std::string& line, LogFields fields,
                         LogLevel level);

class CoordinatorEngine {
 public:
  virtual ~CoordinatorEngine() = default;

  // Runs the whole training; returns when the run is over (or stopped).
  virtual absl::Status Run() = 0;
  // Asks Run() to stop soon (signal handlers, tests).
  virtual void RequestStop() = 0;

  virtual absl::StatusOr<JoinOutcome> Join(const JoinParams& params) = 0;
  // Blocks up to `wait` for a task; kStop once the run is over.
  virtual absl::StatusOr<TaskOutcome> NextTask(uint32_t client_id,
                                               const std::string& session,
                                               absl::Duration wait,
                                               uint64_t have_version) = 0;
  virtual absl::Status Submit(const std::string& session,
                              const ClientResult& result,
                              uint64_t model_version) = 0;
  // The model of `version` (0: current).
  virtual absl::StatusOr<std::shared_ptr<const Snapshot>> GetSnapshot(
      uint32_t client_id, const std::string& session, uint64_t version) = 0;
  // The optimizer state that goes with the model of `version` (0: current)
  // in a run whose seed replay carries it (momentum, Adam; float32 like a
  // snapshot: the momentum buffer, or Adam's m then v), for a client that
  // fetched the model instead of replaying. Runs without it refuse.
  virtual absl::StatusOr<std::shared_ptr<const Snapshot>> GetStepState(
      uint32_t client_id, const std::string& session, uint64_t version) {
    (void)client_id;
    (void)session;
    (void)version;
    return absl::FailedPreconditionError(
        "this run's model comes without optimizer state");
  }
  virtual absl::Status Heartbeat(uint32_t client_id,
                                 const std::string& session) = 0;
  virtual absl::Status Leave(uint32_t client_id, const std::string& session,
                             const std::string& reason) = 0;
  virtual EngineStatus GetStatus() = 0;
  // Serialized protobuf bytes seen by the service, per direction.
  virtual void CountBytes(int64_t up, int64_t down) = 0;
  // (client id, credential) of every registered client.
  virtual std::vector<std::pair<uint32_t, std::string>> ClientOwners() = 0;
  virtual const Config& config() const = 0;
  virtual const ModelSpec& spec() const = 0;
  virtual const std::string& run_id() const = 0;

  // Extra keys for summary.json (a JSON object's text), written beside the
  // engine's own (which win on a clash): fedfwd-run --link passes the
  // emulated links this way, so the coordinator stays the file's only
  // writer. Errors: not a JSON object. Call before Run().
  absl::Status SetSummaryExtra(const std::string& json_object) {
    absl::Status s = CheckSummaryExtra(json_object);
    if (s.ok()) summary_extra_ = json_object;
    return s;
  }

  // --- Decentralized runs only; the defaults refuse with
  // FAILED_PRECONDITION (a federated run). ---
  // A worker's parameters after result.round local steps (in
  // result.update); returns the live workers.
  virtual absl::StatusOr<std::vector<v1::PeerInfo>> ReportModel(
      const std::string& session, const ClientResult& result,
      int64_t peer_bytes);
  // Queues `message` from `from` for `to` (relay).
  virtual absl::Status Relay(uint32_t from, const std::string& session,
                             uint32_t to, PeerMessage message);
  // Removes and returns the messages queued for `client_id`.
  virtual absl::StatusOr<std::vector<PeerMessage>> TakeRelayed(
      uint32_t client_id, const std::string& session);
  // How many relayed messages wait for `client_id` (heartbeat replies).
  virtual int RelayedPending(uint32_t client_id) { return 0; }

 protected:
  std::string summary_extra_;  // SetSummaryExtra; empty: none
};

}  // namespace fedfwd

#endif  // FEDFWD_SERVER_ENGINE_H_
