// Strategy: plans each round (which clients, what task) and merges the
// results into the model; the RoundEngine runs the round (dispatch,
// deadlines, collection) and never names a concrete strategy. Strategies
// never touch gRPC: tasks and results are plain values here.
//
// Adding an estimator or merge family = a new Strategy subclass and a name
// in MakeStrategy. Not thread-safe: called from the engine thread only.
#ifndef FEDFWD_SERVER_STRATEGY_H_
#define FEDFWD_SERVER_STRATEGY_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/config.h"
#include "common/model.h"
#include "common/rng.h"
#include "common/step_rule.h"

namespace fedfwd {

struct TaskSpec {
  uint32_t client_id = 0;
  int64_t round = 0;
  std::string estimator;
  std::vector<TangentKey> tangents;
  int batch_size = 0;
  // Backprop estimators: fedavg's local passes, client lr and momentum; the
  // upload encoding of the update (none | fp16 | int8).
  int local_epochs = 0;
  double lr = 0;
  double momentum = 0;
  double weight_decay = 0;
  std::string compression;
  // jvp with privacy: the client clips and noises its values (privacy.h).
  int jvp_bits = 32;  // 8: int8 values up (Task.jvp_bits)
  double jvp_clip = 0;
  double dp_clip = 0;
  double dp_noise_multiplier = 0;
  // fd: finite-difference step and fixed-point forward passes.
  double fd_epsilon = 0;
  bool fd_fixed_point = false;
};

struct ClientResult {
  uint32_t client_id = 0;
  int64_t round = 0;
  std::vector<double> jvps;
  std::vector<float> update;  // fedsgd gradient / fedavg delta
  int64_t num_samples = 0;
  double loss = 0;
  double compute_ms = 0;
};

struct MergeReport {
  int merged = 0;        // results merged
  double lr = 0;         // learning rate used
  double mean_loss = 0;  // sample-weighted training loss of the results
};

// Named float vectors: a strategy's optimizer state (momentum buffer, Adam
// moments) as a checkpoint carries it.
using StrategyState = std::vector<std::pair<std::string, std::vector<float>>>;

class Strategy {
 public:
  virtual ~Strategy() = default;
  // One task per client in `clients` (ascending ids) for `round`.
  virtual std::vector<TaskSpec> ConfigureRound(
      int64_t round, const std::vector<uint32_t>& clients) = 0;
  // Checks a result against its task before the engine accepts it.
  virtual absl::Status ValidateResult(const TaskSpec& task,
                                      const ClientResult& result) const = 0;
  // Merges accepted results (ascending client id) into `params`.
  virtual absl::StatusOr<MergeReport> Aggregate(
      int64_t round, const std::vector<TaskSpec>& tasks,
      const std::vector<ClientResult>& results, std::vector<float>* params) = 0;
  // The state Aggregate carries from round to round, and its restore; a
  // restored strategy merges the next round exactly as the saved one would.
  // LoadState refuses names or sizes this strategy does not have.
  virtual StrategyState SaveState() const = 0;
  virtual absl::Status LoadState(const StrategyState& state) = 0;
  // Seed-replay sync: true when the last Aggregate changed the model by
  // exactly ApplySeedStep(*step) under the run's StepRule (forward
  // gradients: plain SGD, momentum, Adam, clip_step; common/step_rule.h),
  // with the step set; false when its change is not expressible as seeds
  // (dense updates).
  virtual bool LastUpdateAsSeeds(SeedStep* step) const {
    (void)step;
    return false;
  }
  // The optimizer state a replaying client holds beside the model (the
  // momentum buffer, Adam's m then v; empty for clip_step alone), current
  // after the last Aggregate; null when the replay is plain SGD or there is
  // no replay.
  virtual const std::vector<float>* ReplayState() const { return nullptr; }
};

// The clients that take part in `round`: all of `live` when
// sampling.fraction is 1, else the first max(minimum, ceil(fraction * K))
// (at most K) of a permutation drawn from (seed, round); ascending ids.
std::vector<uint32_t> SampleClients(const Config& config, int64_t round,
                                    const std::vector<uint32_t>& live);

// Chooses the strategy named by config.estimator (jvp | fedsgd | backprop |
// fedavg).
// `threads`: CPU threads the strategy may use for merging.
// The key groups of a forward-gradient task: (parameter mask, key count) in
// key order. Without tangent.layer_counts one group, mask 0 (every
// parameter), tangent.count keys; with it, first tangent.count keys over the
// layers not named, then each named layer's keys in the model's layer order.
// Errors: a layer the model does not have, every layer named, a model of
// more than 64 parameter tensors.
absl::StatusOr<std::vector<std::pair<uint64_t, int>>> TangentGroups(
    const Config& config, const ModelSpec& spec);

absl::StatusOr<std::unique_ptr<Strategy>> MakeStrategy(const Config& config,
                                                       const ModelSpec& spec,
                                                       int threads = 1);

// Proto-free tangent type names, shared by config and codec.
absl::StatusOr<TangentDistribution> ParseTangentDistribution(
    const std::string& name);

}  // namespace fedfwd

#endif  // FEDFWD_SERVER_STRATEGY_H_
