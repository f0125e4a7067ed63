#include "server/strategy.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "server/merge.h"
#include "server/optimizer.h"

namespace fedfwd {
namespace {

// Forward gradients: each client returns d = grad f . v for tangents the
// coordinator regenerates from their keys; merge by the config's rule; SGD.
class ForwardGradientStrategy final : public Strategy {
 public:
  ForwardGradientStrategy(const Config& config, const ModelSpec& spec,
                          TangentDistribution dist, int threads)
      : config_(config),
        dist_(dist),
        optimizer_(spec.ParamSizes(), config.momentum, threads) {}

  std::vector<TaskSpec> ConfigureRound(
      int64_t round, const std::vector<uint32_t>& clients) override {
    std::vector<TaskSpec> tasks;
    for (uint32_t id : clients) {
      TaskSpec t;
      t.client_id = id;
      t.round = round;
      t.estimator = "jvp";
      t.batch_size = config_.batch_size;
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
    }
    if (r.num_samples <= 0 || r.num_samples > 1000000) {
      return absl::InvalidArgumentError(
          absl::StrCat("num_samples out of range: ", r.num_samples));
    }
    if (!std::isfinite(r.loss)) {
      return absl::InvalidArgumentError(
          absl::StrCat("loss is not finite: ", r.loss));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<MergeReport> Aggregate(
      int64_t round, const std::vector<TaskSpec>& tasks,
      const std::vector<ClientResult>& results,
      std::vector<float>* params) override {
    std::vector<JvpContribution> contributions;
    MergeReport report;
    double loss_sum = 0;
    int64_t samples = 0;
    for (size_t i = 0; i < results.size(); ++i) {
      JvpContribution c;
      c.client_id = results[i].client_id;
      c.keys = tasks[i].tangents;
      c.jvps = results[i].jvps;
      c.num_samples = results[i].num_samples;
      contributions.push_back(std::move(c));
      loss_sum += results[i].loss * results[i].num_samples;
      samples += results[i].num_samples;
    }
    report.merged = static_cast<int>(results.size());
    report.mean_loss = samples ? loss_sum / samples : 0;
    report.lr = LearningRate(config_, round);
    for (const auto& step :
         PlanMerge(config_.merge, std::move(contributions), config_.clip_jvp)) {
      optimizer_.Apply(step, report.lr, params->data());
    }
    return report;
  }

 private:
  Config config_;
  TangentDistribution dist_;
  SgdOptimizer optimizer_;
};

}  // namespace

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
  return absl::InvalidArgumentError(
      absl::StrCat("unknown estimator '", config.estimator, "' (jvp)"));
}

}  // namespace fedfwd
