#include "server/merge.h"

#include <algorithm>

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
