#include "server/merge.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace fedfwd {
namespace {

double Clip(double d, double clip) {
  if (clip <= 0) return d;
  return std::clamp(d, -clip, clip);
}

// Appends result r's terms scaled by `weight` (tangents of one result are
// averaged).
void AddTerms(const JvpContribution& r, double weight, double clip,
              GradientStep* step) {
  const double per = weight / static_cast<double>(r.jvps.size());
  for (size_t k = 0; k < r.jvps.size(); ++k) {
    step->push_back({r.keys[k], per * Clip(r.jvps[k], clip)});
  }
}

}  // namespace

absl::Status WeightedAverage(const std::vector<DenseContribution>& updates,
                             std::vector<float>* out) {
  if (updates.empty()) return absl::InvalidArgumentError("no updates");
  const size_t n = updates[0].update->size();
  int64_t total = 0;
  for (size_t i = 0; i < updates.size(); ++i) {
    if (updates[i].update->size() != n) {
      return absl::InvalidArgumentError(
          absl::StrCat("update ", i, " has ", updates[i].update->size(),
                       " values, update 0 has ", n));
    }
    if (updates[i].num_samples <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "update ", i, " has sample count ", updates[i].num_samples));
    }
    total += updates[i].num_samples;
  }
  std::vector<double> acc(n, 0.0);
  for (const auto& u : updates) {
    const double w = static_cast<double>(u.num_samples) / total;
    const float* v = u.update->data();
    for (size_t j = 0; j < n; ++j) acc[j] += w * v[j];
  }
  out->resize(n);
  for (size_t j = 0; j < n; ++j) (*out)[j] = static_cast<float>(acc[j]);
  return absl::OkStatus();
}

std::vector<GradientStep> PlanMerge(MergeRule rule,
                                    std::vector<JvpContribution> results,
                                    double clip) {
  std::vector<GradientStep> steps;
  if (results.empty()) return steps;
  std::sort(results.begin(), results.end(),
            [](const JvpContribution& a, const JvpContribution& b) {
              return a.client_id < b.client_id;
            });
  switch (rule) {
    case MergeRule::kNaive:
      for (const auto& r : results) {
        GradientStep step;
        AddTerms(r, 1.0, clip, &step);
        steps.push_back(std::move(step));
      }
      break;
    case MergeRule::kAverage: {
      GradientStep step;
      const double w = 1.0 / static_cast<double>(results.size());
      for (const auto& r : results) AddTerms(r, w, clip, &step);
      steps.push_back(std::move(step));
      break;
    }
    case MergeRule::kWeighted: {
      int64_t total = 0;
      for (const auto& r : results) total += r.num_samples;
      GradientStep step;
      for (const auto& r : results) {
        const double w = total > 0 ? static_cast<double>(r.num_samples) / total
                                   : 1.0 / static_cast<double>(results.size());
        AddTerms(r, w, clip, &step);
      }
      steps.push_back(std::move(step));
      break;
    }
  }
  return steps;
}

}  // namespace fedfwd
