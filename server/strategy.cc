#include "server/strategy.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
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

// Forward gradients: each client returns d = grad f . v for tangents the
// coordinator regenerates from their keys; merge by the config's rule; SGD.
class ForwardGradientStrategy final : public Strategy {
 public:
  ForwardGradientStrategy(const Config& config, const ModelSpec& spec,
                          TangentDistribution dist, int threads)
      : config_(config),
        dist_(dist),
        num_params_(spec.NumParams()),
        optimizer_(spec.ParamSizes(), config.momentum, threads) {}

  std::vector<TaskSpec> ConfigureRound(
      int64_t round, const std::vector<uint32_t>& live) override {
    std::vector<TaskSpec> tasks;
    for (uint32_t id : SampleClients(config_, round, live)) {
      TaskSpec t;
      t.client_id = id;
      t.round = round;
      t.estimator = "jvp";
      t.batch_size = config_.batch_size;
      t.dp_clip = config_.privacy.clip;
      t.dp_noise_multiplier = config_.privacy.noise_multiplier;
      TangentKey key;
      key.run_seed = config_.seed;
      key.round = round;
      key.client = config_.tangent.shared_seed ? 0 : id;
      key.index = 0;
      key.type = dist_;
      t.tangents.push_back(key);
      tasks.push_back(std::move(t));
    }
    return tasks;
  }

  absl::Status ValidateResult(const TaskSpec& task,
                              const ClientResult& r) const override {
    if (!r.update.empty()) {
      return absl::InvalidArgumentError(
          "a jvp task takes JVP scalars, not a model update");
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
    for (const auto& step :
         PlanRobustMerge(config_.merge, std::move(contributions),
                         config_.clip_jvp, config_.robust, &abs_window_)) {
      optimizer_.Apply(step, report.lr, params->data());
    }
    return report;
  }

  StrategyState SaveState() const override {
    StrategyState state;
    if (!optimizer_.buffer().empty()) {
      state.emplace_back("sgd.momentum", optimizer_.buffer());
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
      if (config_.robust.rule != "quantile_clip") {
        return absl::InvalidArgumentError(
            absl::StrCat("strategy state '", kWindowName,
                         "' needs robust.rule quantile_clip, the config has ",
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
    std::vector<float> buffer;
    RETURN_IF_ERROR(
        TakeState(rest, {{"sgd.momentum", num_params_}}, {&buffer}));
    optimizer_.set_buffer(std::move(buffer));
    abs_window_ = std::move(window);
    return absl::OkStatus();
  }

 private:
  Config config_;
  static constexpr const char* kWindowName = "robust.abs_jvp_window";

  TangentDistribution dist_;
  int64_t num_params_;
  SgdOptimizer optimizer_;
  // robust quantile_clip: past |d|, oldest first (see PlanRobustMerge).
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
    if (!sgd_.buffer().empty())
      state.emplace_back("sgd.momentum", sgd_.buffer());
    if (!adam_.m().empty()) {
      state.emplace_back("adam.m", adam_.m());
      state.emplace_back("adam.v", adam_.v());
    }
    return state;
  }

  absl::Status LoadState(const StrategyState& state) override {
    std::vector<float> buffer, m, v;
    RETURN_IF_ERROR(TakeState(state,
                              {{"sgd.momentum", num_params_},
                               {"adam.m", num_params_},
                               {"adam.v", num_params_}},
                              {&buffer, &m, &v}));
    if (m.empty() != v.empty()) {
      return absl::InvalidArgumentError(
          "optimizer state has one Adam moment without the other");
    }
    sgd_.set_buffer(std::move(buffer));
    adam_.set_moments(std::move(m), std::move(v));
    return absl::OkStatus();
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

absl::StatusOr<std::unique_ptr<Strategy>> MakeStrategy(const Config& config,
                                                       const ModelSpec& spec,
                                                       int threads) {
  if (config.estimator == "jvp") {
    auto dist = ParseTangentDistribution(config.tangent.distribution);
    if (!dist.ok()) return dist.status();
    return std::unique_ptr<Strategy>(
        new ForwardGradientStrategy(config, spec, *dist, threads));
  }
  if (config.estimator == "fedsgd" || config.estimator == "backprop" ||
      config.estimator == "fedavg") {
    return std::unique_ptr<Strategy>(new BackpropStrategy(config, spec));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown estimator '", config.estimator,
                   "' (jvp | fedsgd | backprop | fedavg)"));
}

}  // namespace fedfwd
