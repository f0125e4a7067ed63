#include "server/strategy.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/codec.h"
#include "common/estimators.h"
#include "common/status_macros.h"
#include "common/step_rule.h"
#include "server/merge.h"
#include "server/optimizer.h"

namespace fedfwd {
namespace {

// The largest JVP value a result may carry (see ValidateResult).
constexpr double kMaxJvp = 1e12;

// Restores `name` from `state` into *out: absent means "not started yet"
// (empty); present must have `size` values. Unknown names are refused.
absl::Status TakeState(
    const StrategyState& state,
    const std::vector<std::pair<std::string, int64_t>>& known,
    std::vector<std::vector<float>*> outs) {
  for (auto* o : outs) o->clear();
  for (const auto& [name, values] : state) {
    bool found = false;
    for (size_t i = 0; i < known.size(); ++i) {
      if (known[i].first != name) continue;
      found = true;
      if (static_cast<int64_t>(values.size()) != known[i].second) {
        return absl::InvalidArgumentError(
            absl::StrCat("optimizer state '", name, "' has ", values.size(),
                         " values, the model ", known[i].second));
      }
      *outs[i] = values;
    }
    if (!found) {
      return absl::InvalidArgumentError(absl::StrCat(
          "optimizer state '", name, "' does not belong to this strategy"));
    }
  }
  return absl::OkStatus();
}

// The SGD momentum buffer and Adam moments a strategy carries, as a
// checkpoint holds them ("sgd.momentum", "adam.m", "adam.v"); absent means
// not started yet.
void SaveOptimizers(const SgdOptimizer& sgd, const AdamOptimizer& adam,
                    StrategyState* state) {
  if (!sgd.buffer().empty()) state->emplace_back("sgd.momentum", sgd.buffer());
  if (!adam.m().empty()) {
    state->emplace_back("adam.m", adam.m());
    state->emplace_back("adam.v", adam.v());
  }
}

absl::Status RestoreOptimizers(const StrategyState& state, int64_t num_params,
                               SgdOptimizer* sgd, AdamOptimizer* adam) {
  std::vector<float> buffer, m, v;
  RETURN_IF_ERROR(TakeState(state,
                            {{"sgd.momentum", num_params},
                             {"adam.m", num_params},
                             {"adam.v", num_params}},
                            {&buffer, &m, &v}));
  if (m.empty() != v.empty()) {
    return absl::InvalidArgumentError(
        "optimizer state has one Adam moment without the other");
  }
  sgd->set_buffer(std::move(buffer));
  adam->set_moments(std::move(m), std::move(v));
  return absl::OkStatus();
}

// Checks every strategy makes: the sample count and the training loss.
absl::Status CheckSamplesAndLoss(const ClientResult& r, int64_t max_samples) {
  if (r.num_samples <= 0 || r.num_samples > max_samples) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_samples out of range: ", r.num_samples));
  }
  if (!std::isfinite(r.loss)) {
    return absl::InvalidArgumentError(
        absl::StrCat("loss is not finite: ", r.loss));
  }
  return absl::OkStatus();
}

// How many results and their sample-weighted mean training loss.
MergeReport ReportOf(const std::vector<ClientResult>& results) {
  MergeReport report;
  double loss_sum = 0;
  int64_t samples = 0;
  for (const auto& r : results) {
    loss_sum += r.loss * r.num_samples;
    samples += r.num_samples;
  }
  report.merged = static_cast<int>(results.size());
  report.mean_loss = samples ? loss_sum / samples : 0;
  return report;
}

// Forward gradients: each client returns d = grad f . v (jvp: forward-mode
// AD; fd: finite differences) for tangents the coordinator regenerates from
// their keys; combine a client's tangents (mean or projection), merge by the
// config's rule (per layer under weight splitting), then SGD or Adam.
class ForwardGradientStrategy final : public Strategy {
 public:
  // groups: (parameter mask, key count) per key group, in key order (one
  // group of mask 0 and tangent.count keys without tangent.layer_counts).
  ForwardGradientStrategy(const Config& config, const ModelSpec& spec,
                          TangentDistribution dist, int threads,
                          std::vector<std::pair<uint64_t, int>> groups)
      : config_(config),
        groups_(std::move(groups)),
        dist_(dist),
        num_params_(spec.NumParams()),
        layout_(spec.Layout()),
        threads_(threads),
        rule_(StepRuleOf(config)),
        step_state_(static_cast<size_t>(rule_.StateSize(num_params_)), 0.0f) {
    if (config.tangent.split == "layers") {
      std::vector<std::string> names;
      for (const auto& p : spec.params) names.push_back(p.name);
      layer_masks_ = LayerMasks(names);
    }
  }

  std::vector<TaskSpec> ConfigureRound(
      int64_t round, const std::vector<uint32_t>& live) override {
    std::vector<TaskSpec> tasks;
    const std::vector<uint32_t> sampled = SampleClients(config_, round, live);
    for (size_t j = 0; j < sampled.size(); ++j) {
      const uint32_t id = sampled[j];
      TaskSpec t;
      t.client_id = id;
      t.round = round;
      t.estimator = config_.estimator;
      t.batch_size = config_.batch_size;
      t.dp_clip = config_.privacy.clip;
      t.jvp_bits = config_.jvp_bits;
      t.jvp_clip = config_.clip_jvp;
      t.dp_noise_multiplier = config_.privacy.noise_multiplier;
      if (config_.estimator == "fd") {
        t.fd_epsilon = config_.fd.epsilon;
        t.fd_fixed_point = config_.fd.precision == "fixed";
      }
      const uint64_t split_mask = SplitMask(round, j);
      uint32_t index = 0;
      for (const auto& [group_mask, count] : groups_) {
        // One group: the split mask (0 without splitting); several: each its
        // layers (layer_counts refuses splitting).
        const uint64_t mask = groups_.size() > 1 ? group_mask : split_mask;
        for (int k = 0; k < count; ++k, ++index) {
          TangentKey key;
          key.run_seed = config_.seed;
          key.round = round;
          key.client = config_.tangent.shared_seed ? 0 : id;
          key.index = index;
          key.type = dist_;
          key.param_mask = mask;
          key.normalized = config_.tangent.normalize;
          key.rank_one = config_.tangent.structure == "rank1" ||
                         config_.tangent.structure == "rank1_shared";
          key.shared_u = config_.tangent.structure == "rank1_shared";
          if (key.shared_u && config_.tangent.u_groups > 1) {
            key.u_group_size = static_cast<uint32_t>(
                (config_.tangent.count + config_.tangent.u_groups - 1) /
                config_.tangent.u_groups);
          }
          t.tangents.push_back(key);
        }
      }
      tasks.push_back(std::move(t));
    }
    return tasks;
  }

  absl::Status ValidateResult(const TaskSpec& task,
                              const ClientResult& r) const override {
    if (!r.update.empty()) {
      return absl::InvalidArgumentError(
          "a forward-gradient task takes JVP scalars, not a model update");
    }
    if (r.jvps.size() != task.tangents.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("expected ", task.tangents.size(), " JVP values, got ",
                       r.jvps.size()));
    }
    for (double d : r.jvps) {
      if (!std::isfinite(d)) {
        return absl::InvalidArgumentError(
            absl::StrCat("JVP value is not finite: ", d));
      }
      // |grad . v| <= |grad| |v|, and |v| = sqrt(P) for a unit-variance
      // tangent: no honest float32 run comes near this; a value past it
      // would overflow the float32 step and poison the model.
      if (std::abs(d) > kMaxJvp) {
        return absl::InvalidArgumentError(
            absl::StrCat("JVP value ", d, " is beyond ", kMaxJvp,
                         " (not a float32 loss "
                         "gradient along a tangent)"));
      }
    }
    return CheckSamplesAndLoss(r, 1000000);
  }

  absl::StatusOr<MergeReport> Aggregate(
      int64_t round, const std::vector<TaskSpec>& tasks,
      const std::vector<ClientResult>& results,
      std::vector<float>* params) override {
    last_as_seeds_ = false;
    std::vector<JvpContribution> contributions;
    for (size_t i = 0; i < results.size(); ++i) {
      JvpContribution c;
      c.client_id = results[i].client_id;
      c.keys = tasks[i].tangents;
      c.jvps = results[i].jvps;
      c.num_samples = results[i].num_samples;
      contributions.push_back(std::move(c));
    }
    MergeReport report = ReportOf(results);
    report.lr = LearningRate(config_, round);
    std::vector<GradientStep> steps;
    const std::string& combine = config_.tangent.combine;
    if (combine == "mean") {
      steps = PlanRobustMerge(config_.merge, std::move(contributions),
                              config_.clip_jvp, config_.robust, &abs_window_,
                              layer_masks_);
    } else {
      // Clip the measured d, then turn each client's values into projection
      // coefficients (times K, as the merge averages a result's K terms).
      for (auto& c : contributions) {
        for (double& d : c.jvps) d = ClipValue(d, config_.clip_jvp);
      }
      if (combine == "projection") {
        for (auto& c : contributions) {
          ASSIGN_OR_RETURN(
              std::vector<double> coef,
              ProjectionCoefficients(c.keys, c.jvps, layout_, threads_));
          for (size_t k = 0; k < coef.size(); ++k) {
            c.jvps[k] = coef[k] * static_cast<double>(coef.size());
          }
        }
        steps = PlanRobustMerge(config_.merge, std::move(contributions),
                                /*clip=*/0, config_.robust, &abs_window_,
                                layer_masks_);
      } else {  // projection_round: one system over every tangent
        std::vector<TangentKey> keys;
        std::vector<double> d;
        for (const auto& c : contributions) {
          keys.insert(keys.end(), c.keys.begin(), c.keys.end());
          d.insert(d.end(), c.jvps.begin(), c.jvps.end());
        }
        if (!keys.empty()) {
          ASSIGN_OR_RETURN(std::vector<double> coef,
                           ProjectionCoefficients(keys, d, layout_, threads_));
          GradientStep step;
          for (size_t k = 0; k < keys.size(); ++k) {
            step.push_back({keys[k], coef[k]});
          }
          steps.push_back(std::move(step));
        }
      }
    }
    ApplySteps(steps, report.lr, params);
    return report;
  }

  bool LastUpdateAsSeeds(SeedStep* step) const override {
    if (!last_as_seeds_) return false;
    *step = last_step_;
    return true;
  }

  const std::vector<float>* ReplayState() const override {
    return rule_.Stateful() ? &step_state_ : nullptr;
  }

  StrategyState SaveState() const override {
    StrategyState state;
    // The checkpoint names of the dense optimizers' state (SaveOptimizers).
    const size_t n = static_cast<size_t>(num_params_);
    if (rule_.adam) {
      state.emplace_back("adam.m", std::vector<float>(step_state_.begin(),
                                                      step_state_.begin() + n));
      state.emplace_back("adam.v", std::vector<float>(step_state_.begin() + n,
                                                      step_state_.end()));
    } else if (rule_.frank_wolfe) {
      // The average d then the step count (StepRule::StateSize).
      state.emplace_back(kFrankWolfeName, step_state_);
    } else if (rule_.momentum != 0) {
      state.emplace_back("sgd.momentum", step_state_);
    }
    if (!abs_window_.empty()) {
      state.emplace_back(kWindowName, abs_window_);
    }
    return state;
  }

  absl::Status LoadState(const StrategyState& state) override {
    // The |d| window has a variable size (at most robust.window).
    StrategyState rest;
    std::vector<float> window;
    for (const auto& entry : state) {
      if (entry.first != kWindowName) {
        rest.push_back(entry);
        continue;
      }
      if (config_.robust.rule != "quantile_clip" &&
          config_.robust.rule != "quantile_skip") {
        return absl::InvalidArgumentError(absl::StrCat(
            "strategy state '", kWindowName,
            "' needs robust.rule quantile_clip or quantile_skip, the config "
            "has ",
            config_.robust.rule));
      }
      if (entry.second.size() >
          static_cast<size_t>(std::max(1, config_.robust.window))) {
        return absl::InvalidArgumentError(absl::StrCat(
            "strategy state '", kWindowName, "' has ", entry.second.size(),
            " values, robust.window is ", config_.robust.window));
      }
      window = entry.second;
    }
    std::vector<float> buffer, m, v;
    std::vector<std::pair<std::string, int64_t>> known;
    std::vector<std::vector<float>*> outs;
    if (rule_.adam) {
      known = {{"adam.m", num_params_}, {"adam.v", num_params_}};
      outs = {&m, &v};
    } else if (rule_.frank_wolfe) {
      known = {{kFrankWolfeName, num_params_ + 1}};
      outs = {&buffer};
    } else if (rule_.momentum != 0) {
      known = {{"sgd.momentum", num_params_}};
      outs = {&buffer};
    }
    RETURN_IF_ERROR(TakeState(rest, known, outs));
    if (m.empty() != v.empty()) {
      return absl::InvalidArgumentError(
          "optimizer state has one Adam moment without the other");
    }
    // Absent: the run had not stepped yet (zeros).
    std::vector<float> loaded = rule_.adam ? std::move(m) : std::move(buffer);
    if (rule_.adam && !loaded.empty())
      loaded.insert(loaded.end(), v.begin(), v.end());
    if (loaded.empty()) {
      loaded.assign(static_cast<size_t>(rule_.StateSize(num_params_)), 0.0f);
    }
    step_state_ = std::move(loaded);
    abs_window_ = std::move(window);
    return absl::OkStatus();
  }

 private:
  static double ClipValue(double d, double clip) {
    return clip > 0 ? std::clamp(d, -clip, clip) : d;
  }

  // Weight splitting: the parameter mask of the j-th sampled client of
  // `round` (0: every parameter). Client j perturbs blocks_per_client
  // consecutive layers starting at layer (j * blocks_per_client + round)
  // mod L, so a round's clients cover the layers evenly and each client
  // moves on to other layers every round.
  uint64_t SplitMask(int64_t round, size_t j) const {
    const size_t layers = layer_masks_.size();
    if (layers == 0) return 0;
    const size_t per = std::min<size_t>(
        static_cast<size_t>(config_.tangent.blocks_per_client), layers);
    if (per >= layers) return 0;
    uint64_t mask = 0;
    for (size_t q = 0; q < per; ++q) {
      mask |= layer_masks_[(j * per + q + static_cast<size_t>(round)) % layers];
    }
    return mask;
  }

  // The round's merged steps as one seed step under the run's rule
  // (common/step_rule.h), kept for seed-replay sync: plain SGD folds -lr
  // into each term; momentum, Adam and clip_step take one optimizer step
  // on the sum of the round's steps (under the naive merge too), which the
  // clients replay with the same code and state.
  void ApplySteps(const std::vector<GradientStep>& steps, double lr,
                  std::vector<float>* params) {
    const bool stateful = rule_.Stateful();
    last_step_.terms.clear();
    last_step_.lr = lr;
    // Shared tangents: one term per key, its coefficient summed over the
    // clients (merge.h), so the replay has K terms a round.
    std::vector<GradientStep> merged;
    if (config_.tangent.shared_seed && !steps.empty()) {
      merged.push_back(MergeSharedKeys(steps));
    }
    for (const auto& step : merged.empty() ? steps : merged) {
      for (const auto& term : step) {
        last_step_.terms.push_back(
            {term.key,
             static_cast<float>(stateful ? term.coef : -lr * term.coef),
             term.restrict_mask});
      }
    }
    // int8 replay: each run's factors rounded to 8 bits before they are
    // applied here, so the clients' replay of the 8-bit form is exact.
    if (config_.jvp_bits == 8) QuantizeSeedRuns(&last_step_.terms);
    last_as_seeds_ = true;
    // A round without steps changes nothing (not even the optimizer state);
    // the clients' replay of it is the same no-op.
    if (last_step_.terms.empty()) return;
    ApplySeedStep(last_step_, rule_, layout_, &step_state_, params->data(),
                  &grad_, threads_);
  }

  Config config_;
  std::vector<std::pair<uint64_t, int>> groups_;
  static constexpr const char* kWindowName = "robust.abs_jvp_window";
  static constexpr const char* kFrankWolfeName = "frank_wolfe.average_steps";

  TangentDistribution dist_;
  int64_t num_params_;
  TangentLayout layout_;
  int threads_;
  StepRule rule_;
  // The rule's optimizer state (StepRule::StateSize floats: the momentum
  // buffer, or Adam's m then v), zeros from the start.
  std::vector<float> step_state_;
  std::vector<uint64_t> layer_masks_;  // split: layers; empty: no split
  std::vector<float> grad_;            // materialized step (Adam, clip_step)
  // The last Aggregate's change as a seed step.
  SeedStep last_step_;
  bool last_as_seeds_ = false;
  // robust quantile_clip/skip: past |d|, oldest first (PlanRobustMerge).
  std::vector<float> abs_window_;
};

// FedSGD and FedAvg: clients return dense updates (a minibatch gradient, or
// the delta of local epochs of SGD); the coordinator averages them weighted
// by samples. fedsgd steps with SGD(lr schedule, momentum) on the mean
// gradient; fedavg applies the mean delta through the server optimizer
// (sgd with lr 1 and no momentum: plain FedAvg).
class BackpropStrategy final : public Strategy {
 public:
  BackpropStrategy(const Config& config, const ModelSpec& spec)
      : config_(config),
        num_params_(spec.NumParams()),
        fedavg_(config.estimator == "fedavg"),
        sgd_(spec.ParamSizes(),
             fedavg_ ? config.server_optimizer.momentum : config.momentum),
        adam_(config.server_optimizer.beta1, config.server_optimizer.beta2,
              config.server_optimizer.eps) {}

  std::vector<TaskSpec> ConfigureRound(
      int64_t round, const std::vector<uint32_t>& live) override {
    std::vector<TaskSpec> tasks;
    for (uint32_t id : SampleClients(config_, round, live)) {
      TaskSpec t;
      t.client_id = id;
      t.round = round;
      t.estimator = fedavg_ ? "fedavg" : "fedsgd";
      t.batch_size = config_.batch_size;
      t.compression = config_.compression;
      if (fedavg_) {
        t.local_epochs = config_.local_epochs;
        t.lr = LearningRate(config_, round);
        t.momentum = config_.momentum;
        t.weight_decay = config_.weight_decay;
      }
      tasks.push_back(std::move(t));
    }
    return tasks;
  }

  absl::Status ValidateResult(const TaskSpec& task,
                              const ClientResult& r) const override {
    if (!r.jvps.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "a ", task.estimator, " task takes a model update, not JVPs"));
    }
    if (static_cast<int64_t>(r.update.size()) != num_params_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "update has ", r.update.size(), " values, the model ", num_params_));
    }
    for (size_t i = 0; i < r.update.size(); ++i) {
      if (!std::isfinite(r.update[i])) {
        return absl::InvalidArgumentError(
            absl::StrCat("update value ", i, " is not finite"));
      }
    }
    return CheckSamplesAndLoss(r, 100000000);
  }

  absl::StatusOr<MergeReport> Aggregate(
      int64_t round, const std::vector<TaskSpec>&,
      const std::vector<ClientResult>& results,
      std::vector<float>* params) override {
    std::vector<DenseContribution> updates;
    for (const auto& r : results) updates.push_back({&r.update, r.num_samples});
    MergeReport report = ReportOf(results);
    report.lr = LearningRate(config_, round);
    if (results.empty()) return report;
    RETURN_IF_ERROR(RobustAverage(config_.robust, updates, &mean_));
    if (!fedavg_) {
      // L2 weight decay on the coordinator's step: g + wd * w.
      if (config_.weight_decay > 0) {
        const float wd = static_cast<float>(config_.weight_decay);
        for (size_t i = 0; i < mean_.size(); ++i) mean_[i] += wd * (*params)[i];
      }
      sgd_.ApplyDense(mean_, report.lr, params->data());
      return report;
    }
    // The pseudo-gradient is the negated mean delta.
    for (float& v : mean_) v = -v;
    const auto& o = config_.server_optimizer;
    if (o.type == "adam") {
      adam_.ApplyDense(mean_, o.lr, params->data());
    } else {
      sgd_.ApplyDense(mean_, o.lr, params->data());
    }
    return report;
  }

  StrategyState SaveState() const override {
    StrategyState state;
    SaveOptimizers(sgd_, adam_, &state);
    return state;
  }

  absl::Status LoadState(const StrategyState& state) override {
    return RestoreOptimizers(state, num_params_, &sgd_, &adam_);
  }

 private:
  Config config_;
  int64_t num_params_;
  bool fedavg_;
  SgdOptimizer sgd_;
  AdamOptimizer adam_;
  std::vector<float> mean_;  // reused across rounds
};

}  // namespace

std::vector<uint32_t> SampleClients(const Config& config, int64_t round,
                                    const std::vector<uint32_t>& live) {
  const int64_t k = static_cast<int64_t>(live.size());
  if (config.sampling.fraction >= 1.0 || k == 0) return live;
  int64_t m = static_cast<int64_t>(std::ceil(config.sampling.fraction * k));
  m = std::min(k, std::max<int64_t>(m, config.sampling.minimum));
  if (m >= k) return live;
  const std::vector<int64_t> perm = RandomPermutation(
      k, config.seed, RngDomain::kSampling, static_cast<uint32_t>(round));
  std::vector<uint32_t> chosen;
  for (int64_t i = 0; i < m; ++i) chosen.push_back(live[perm[i]]);
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

absl::StatusOr<TangentDistribution> ParseTangentDistribution(
    const std::string& name) {
  if (name == "normal") return TangentDistribution::kNormal;
  if (name == "rademacher") return TangentDistribution::kRademacher;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown tangent distribution '", name, "' (normal | rademacher)"));
}

absl::StatusOr<std::vector<std::pair<uint64_t, int>>> TangentGroups(
    const Config& config, const ModelSpec& spec) {
  const auto& counts = config.tangent.layer_counts;
  if (counts.empty()) {
    return std::vector<std::pair<uint64_t, int>>{{0, config.tangent.count}};
  }
  if (spec.params.size() > 64) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tangent.layer_counts: model ", spec.name, " has ", spec.params.size(),
        " parameter tensors; per-layer tangent counts handle at most 64"));
  }
  std::vector<std::string> names;
  for (const auto& p : spec.params) names.push_back(p.name);
  const std::vector<uint64_t> masks = LayerMasks(names);
  // Each mask's layer name: its first parameter's name up to the last dot.
  std::vector<std::string> layers;
  for (uint64_t m : masks) {
    const std::string& first = names[static_cast<size_t>(__builtin_ctzll(m))];
    layers.push_back(first.substr(0, first.rfind('.')));
  }
  for (const auto& [layer, n] : counts) {
    if (std::find(layers.begin(), layers.end(), layer) == layers.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tangent.layer_counts names layer '", layer, "', which model ",
          spec.name,
          " does not have; its layers: ", absl::StrJoin(layers, ", ")));
    }
  }
  uint64_t rest = 0;
  std::vector<std::pair<uint64_t, int>> named;
  for (size_t l = 0; l < layers.size(); ++l) {
    auto it = counts.find(layers[l]);
    if (it == counts.end()) {
      rest |= masks[l];
    } else {
      named.push_back({masks[l], it->second});
    }
  }
  if (rest == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tangent.layer_counts names every layer of model ", spec.name,
        ", so the 'tangent.count' keys (which perturb the layers not named) "
        "would perturb nothing; leave at least one layer out"));
  }
  std::vector<std::pair<uint64_t, int>> groups = {{rest, config.tangent.count}};
  groups.insert(groups.end(), named.begin(), named.end());
  return groups;
}

absl::StatusOr<std::unique_ptr<Strategy>> MakeStrategy(const Config& config,
                                                       const ModelSpec& spec,
                                                       int threads) {
  if (IsForwardGradientEstimator(config.estimator)) {
    auto dist = ParseTangentDistribution(config.tangent.distribution);
    if (!dist.ok()) return dist.status();
    if (config.tangent.split != "none" && spec.params.size() > 64) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tangent.split: model ", spec.name, " has ", spec.params.size(),
          " parameter tensors; weight splitting handles at most 64"));
    }
    ASSIGN_OR_RETURN(auto groups, TangentGroups(config, spec));
    return std::unique_ptr<Strategy>(new ForwardGradientStrategy(
        config, spec, *dist, threads, std::move(groups)));
  }
  if (IsDenseUpdateEstimator(config.estimator)) {
    return std::unique_ptr<Strategy>(new BackpropStrategy(config, spec));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown estimator '", config.estimator, "' (",
                   absl::StrJoin(ConfigEstimators(), " | "), ")"));
}

}  // namespace fedfwd
