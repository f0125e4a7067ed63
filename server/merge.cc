#include "server/merge.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

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

// The rank statistic of a result: the mean of its JVP scalars.
double MeanJvp(const JvpContribution& r) {
  if (r.jvps.empty()) return 0;
  double sum = 0;
  for (double d : r.jvps) sum += d;
  return sum / static_cast<double>(r.jvps.size());
}

// Keeps results [cut, K - cut) of the order by (mean d, client id).
std::vector<JvpContribution> KeepMiddle(std::vector<JvpContribution> results,
                                        size_t cut) {
  std::vector<std::pair<double, size_t>> order;
  for (size_t i = 0; i < results.size(); ++i) {
    order.emplace_back(MeanJvp(results[i]), i);
  }
  // `results` is in client-id order, so index order breaks ties by id.
  std::sort(order.begin(), order.end());
  std::vector<JvpContribution> kept;
  for (size_t j = cut; j + cut < order.size(); ++j) {
    kept.push_back(std::move(results[order[j].second]));
  }
  std::sort(kept.begin(), kept.end(),
            [](const JvpContribution& a, const JvpContribution& b) {
              return a.client_id < b.client_id;
            });
  return kept;
}

// The ceil(q * n)-th smallest of `values` (n > 0, q in (0, 1]).
double Quantile(std::vector<double> values, double q) {
  const size_t n = values.size();
  size_t k = static_cast<size_t>(std::ceil(q * static_cast<double>(n)));
  k = std::clamp<size_t>(k, 1, n) - 1;
  std::nth_element(values.begin(), values.begin() + k, values.end());
  return values[k];
}

// Sorts `v` in place and returns its median (mean of the middle two when
// even).
double SortedMedian(std::vector<double>* v) {
  std::sort(v->begin(), v->end());
  const size_t n = v->size();
  return n % 2 ? (*v)[n / 2] : ((*v)[n / 2 - 1] + (*v)[n / 2]) / 2;
}

absl::Status CheckDense(const std::vector<DenseContribution>& updates) {
  if (updates.empty()) return absl::InvalidArgumentError("no updates");
  const size_t n = updates[0].update->size();
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
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status WeightedAverage(const std::vector<DenseContribution>& updates,
                             std::vector<float>* out) {
  RETURN_IF_ERROR(CheckDense(updates));
  const size_t n = updates[0].update->size();
  int64_t total = 0;
  for (const auto& u : updates) total += u.num_samples;
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

std::vector<GradientStep> PlanRobustMerge(MergeRule rule,
                                          std::vector<JvpContribution> results,
                                          double clip,
                                          const RobustConfig& robust,
                                          std::vector<float>* abs_window) {
  std::sort(results.begin(), results.end(),
            [](const JvpContribution& a, const JvpContribution& b) {
              return a.client_id < b.client_id;
            });
  const size_t k = results.size();
  if (k == 0 || robust.rule == "none") {
    return PlanMerge(rule, std::move(results), clip);
  }
  if (robust.rule == "trimmed_mean") {
    const size_t cut =
        static_cast<size_t>(std::floor(robust.trim * static_cast<double>(k)));
    results = KeepMiddle(std::move(results), std::min(cut, (k - 1) / 2));
  } else if (robust.rule == "median") {
    results = KeepMiddle(std::move(results), (k - 1) / 2);
  } else if (robust.rule == "quantile_clip" && abs_window != nullptr) {
    std::vector<double> values(abs_window->begin(), abs_window->end());
    std::vector<float> fresh;
    for (const auto& r : results) {
      for (double d : r.jvps) {
        // Stored and used as float: the window a checkpoint restores is
        // the one used here, bit for bit.
        fresh.push_back(static_cast<float>(std::abs(d)));
        values.push_back(fresh.back());
      }
    }
    if (!values.empty()) {
      const double bound =
          robust.multiplier * Quantile(values, robust.quantile);
      for (auto& r : results) {
        for (double& d : r.jvps) d = std::clamp(d, -bound, bound);
      }
    }
    abs_window->insert(abs_window->end(), fresh.begin(), fresh.end());
    const size_t cap = static_cast<size_t>(std::max(1, robust.window));
    if (abs_window->size() > cap) {
      abs_window->erase(abs_window->begin(),
                        abs_window->end() - static_cast<std::ptrdiff_t>(cap));
    }
  }
  return PlanMerge(rule, std::move(results), clip);
}

absl::Status RobustAverage(const RobustConfig& robust,
                           const std::vector<DenseContribution>& updates,
                           std::vector<float>* out) {
  if (robust.dense == "none") return WeightedAverage(updates, out);
  RETURN_IF_ERROR(CheckDense(updates));
  const size_t k = updates.size();
  const size_t n = updates[0].update->size();
  if (robust.dense == "norm_clip") {
    std::vector<double> norms;
    for (const auto& u : updates) {
      double sq = 0;
      for (float v : *u.update) sq += static_cast<double>(v) * v;
      norms.push_back(std::sqrt(sq));
    }
    std::vector<double> sorted = norms;
    const double bound = robust.norm > 0 ? robust.norm : SortedMedian(&sorted);
    int64_t total = 0;
    for (const auto& u : updates) total += u.num_samples;
    std::vector<double> acc(n, 0.0);
    for (size_t i = 0; i < k; ++i) {
      const double scale =
          norms[i] > bound && norms[i] > 0 ? bound / norms[i] : 1.0;
      const double w =
          static_cast<double>(updates[i].num_samples) / total * scale;
      const float* v = updates[i].update->data();
      for (size_t j = 0; j < n; ++j) acc[j] += w * v[j];
    }
    out->resize(n);
    for (size_t j = 0; j < n; ++j) (*out)[j] = static_cast<float>(acc[j]);
    return absl::OkStatus();
  }
  size_t cut;
  if (robust.dense == "median") {
    cut = (k - 1) / 2;
  } else if (robust.dense == "trimmed_mean") {
    cut = std::min(
        static_cast<size_t>(std::floor(robust.trim * static_cast<double>(k))),
        (k - 1) / 2);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown dense robust rule '", robust.dense, "'"));
  }
  out->resize(n);
  std::vector<double> column(k);
  for (size_t j = 0; j < n; ++j) {
    for (size_t i = 0; i < k; ++i) column[i] = (*updates[i].update)[j];
    std::sort(column.begin(), column.end());
    double sum = 0;
    for (size_t i = cut; i + cut < k; ++i) sum += column[i];
    (*out)[j] = static_cast<float>(sum / static_cast<double>(k - 2 * cut));
  }
  return absl::OkStatus();
}

}  // namespace fedfwd
