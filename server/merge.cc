#include "server/merge.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <string>
#include <thread>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace fedfwd {
namespace {

double Clip(double d, double clip) {
  if (clip <= 0) return d;
  return std::clamp(d, -clip, clip);
}

// Per key, the number of r's keys with its parameter mask: a result's values
// are averaged within each group of keys that perturb the same parameters
// (tangent.layer_counts), so every parameter gets one unbiased estimate;
// K for every key when the keys share one mask.
std::vector<double> GroupSizes(const JvpContribution& r) {
  std::map<uint64_t, double> count;
  for (const TangentKey& key : r.keys) count[key.param_mask] += 1;
  std::vector<double> n;
  n.reserve(r.keys.size());
  for (const TangentKey& key : r.keys) n.push_back(count[key.param_mask]);
  return n;
}

// Appends result r's terms scaled by `weight` (a result's tangents are
// averaged, within each group of one parameter mask).
void AddTerms(const JvpContribution& r, double weight, double clip,
              GradientStep* step) {
  const std::vector<double> n = GroupSizes(r);
  for (size_t k = 0; k < r.jvps.size(); ++k) {
    step->push_back({r.keys[k], weight / n[k] * Clip(r.jvps[k], clip)});
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

// A result's parameter mask (its first key's; a result's tangents share it).
uint64_t MaskOf(const JvpContribution& r) {
  return r.keys.empty() ? 0 : r.keys.front().param_mask;
}

// The average / weighted rule layer by layer (see PlanMerge).
GradientStep PerLayerStep(MergeRule rule,
                          const std::vector<JvpContribution>& results,
                          double clip,
                          const std::vector<uint64_t>& layer_masks) {
  GradientStep step;
  for (uint64_t layer : layer_masks) {
    double total = 0;
    for (const auto& r : results) {
      const uint64_t m = MaskOf(r);
      if (m != 0 && (m & layer) == 0) continue;
      total += rule == MergeRule::kWeighted ? static_cast<double>(r.num_samples)
                                            : 1.0;
    }
    if (!(total > 0)) continue;  // no result perturbed this layer
    for (const auto& r : results) {
      const uint64_t m = MaskOf(r);
      if (m != 0 && (m & layer) == 0) continue;
      const double w = rule == MergeRule::kWeighted
                           ? static_cast<double>(r.num_samples)
                           : 1.0;
      const std::vector<double> n = GroupSizes(r);
      for (size_t k = 0; k < r.jvps.size(); ++k) {
        step.push_back(
            {r.keys[k], w / total / n[k] * Clip(r.jvps[k], clip), layer});
      }
    }
  }
  return step;
}

// Rows of one slice: K tangents' entries [off, off + len) of parameter p.
constexpr int64_t kGramSlice = 1 << 16;

}  // namespace

std::vector<uint64_t> LayerMasks(const std::vector<std::string>& names) {
  std::vector<uint64_t> masks;
  std::string current;
  for (size_t p = 0; p < names.size() && p < 64; ++p) {
    const std::string& n = names[p];
    const std::string layer = n.substr(0, n.rfind('.'));
    if (masks.empty() || layer != current) {
      masks.push_back(0);
      current = layer;
    }
    masks.back() |= uint64_t{1} << p;
  }
  return masks;
}

std::vector<double> TangentGram(const std::vector<TangentKey>& keys,
                                const TangentLayout& layout, int threads) {
  const std::vector<int64_t>& sizes = layout.sizes;
  const size_t k = keys.size();
  std::vector<double> gram(k * k, 0.0);
  if (k == 0) return gram;
  // Slices of the model, each a partial Gram; summed in slice order so the
  // result does not depend on `threads`.
  struct Slice {
    uint32_t param;
    int64_t off, len;
  };
  std::vector<Slice> slices;
  for (size_t p = 0; p < sizes.size(); ++p) {
    for (int64_t off = 0; off < sizes[p]; off += kGramSlice) {
      slices.push_back({static_cast<uint32_t>(p), off,
                        std::min<int64_t>(kGramSlice, sizes[p] - off)});
    }
  }
  std::vector<std::vector<double>> partial(slices.size());
  auto work = [&](size_t begin, size_t end) {
    std::vector<float> rows(k * kGramSlice);
    for (size_t s = begin; s < end; ++s) {
      const Slice& sl = slices[s];
      std::vector<size_t> live;  // keys that perturb this parameter
      for (size_t i = 0; i < k; ++i) {
        if (!Perturbs(keys[i], sl.param)) continue;
        GenerateTangentSlice(keys[i], layout, sl.param, sl.off,
                             rows.data() + i * kGramSlice, sl.len);
        live.push_back(i);
      }
      std::vector<double>& g = partial[s];
      g.assign(k * k, 0.0);
      for (size_t a = 0; a < live.size(); ++a) {
        const float* x = rows.data() + live[a] * kGramSlice;
        for (size_t b = a; b < live.size(); ++b) {
          const float* y = rows.data() + live[b] * kGramSlice;
          double dot = 0;
          for (int64_t j = 0; j < sl.len; ++j) {
            dot += static_cast<double>(x[j]) * y[j];
          }
          g[live[a] * k + live[b]] = dot;
        }
      }
    }
  };
  const size_t t = std::clamp<size_t>(static_cast<size_t>(std::max(1, threads)),
                                      1, std::max<size_t>(1, slices.size()));
  std::vector<std::thread> pool;
  for (size_t w = 1; w < t; ++w) {
    pool.emplace_back(work, slices.size() * w / t, slices.size() * (w + 1) / t);
  }
  work(0, slices.size() / t);
  for (auto& th : pool) th.join();
  for (const auto& g : partial) {
    for (size_t i = 0; i < k * k; ++i) gram[i] += g[i];
  }
  // Normalization scales the raw tangents; fill the lower triangle.
  std::vector<double> scale(k);
  for (size_t i = 0; i < k; ++i) scale[i] = TangentScale(keys[i], layout);
  for (size_t a = 0; a < k; ++a) {
    for (size_t b = a; b < k; ++b) {
      const double v = gram[a * k + b] * scale[a] * scale[b];
      gram[a * k + b] = v;
      gram[b * k + a] = v;
    }
  }
  return gram;
}

absl::StatusOr<std::vector<double>> SolveGram(std::vector<double> gram,
                                              const std::vector<double>& d) {
  const size_t k = d.size();
  if (gram.size() != k * k) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Gram matrix has ", gram.size(), " entries for ", k, " values"));
  }
  double diag = 0;
  for (size_t i = 0; i < k; ++i) diag += gram[i * k + i];
  for (double v : gram) {
    if (!std::isfinite(v)) {
      return absl::InvalidArgumentError("Gram matrix is not finite");
    }
  }
  if (k == 0) return std::vector<double>{};
  const double ridge_unit = diag > 0 ? 1e-10 * diag / k : 1e-300;
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::vector<double> l = gram;
    if (attempt == 1) {
      for (size_t i = 0; i < k; ++i) l[i * k + i] += ridge_unit;
    }
    bool ok = true;
    // In place: l becomes the lower Cholesky factor.
    for (size_t j = 0; j < k && ok; ++j) {
      double s = l[j * k + j];
      for (size_t p = 0; p < j; ++p) s -= l[j * k + p] * l[j * k + p];
      if (!(s > ridge_unit * 1e-6)) {
        ok = false;
        break;
      }
      const double ljj = std::sqrt(s);
      l[j * k + j] = ljj;
      for (size_t i = j + 1; i < k; ++i) {
        double t = l[i * k + j];
        for (size_t p = 0; p < j; ++p) t -= l[i * k + p] * l[j * k + p];
        l[i * k + j] = t / ljj;
      }
    }
    if (!ok) continue;
    std::vector<double> c(d);
    for (size_t i = 0; i < k; ++i) {  // L y = d
      for (size_t p = 0; p < i; ++p) c[i] -= l[i * k + p] * c[p];
      c[i] /= l[i * k + i];
    }
    for (size_t i = k; i-- > 0;) {  // L^T c = y
      for (size_t p = i + 1; p < k; ++p) c[i] -= l[p * k + i] * c[p];
      c[i] /= l[i * k + i];
    }
    return c;
  }
  return absl::InvalidArgumentError(
      "Gram matrix is not positive semi-definite");
}

absl::StatusOr<std::vector<double>> ProjectionCoefficients(
    const std::vector<TangentKey>& keys, const std::vector<double>& d,
    const TangentLayout& layout, int threads) {
  if (keys.size() != d.size() || keys.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("projection needs one value per tangent: ", keys.size(),
                     " keys, ", d.size(), " values"));
  }
  ASSIGN_OR_RETURN(std::vector<double> c,
                   SolveGram(TangentGram(keys, layout, threads), d));
  int64_t m = 0;
  for (const auto& key : keys) m = std::max(m, PerturbedEntries(key, layout));
  const double scale =
      static_cast<double>(m) / static_cast<double>(keys.size());
  for (double& v : c) v *= scale;
  return c;
}

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
                                    double clip,
                                    const std::vector<uint64_t>& layer_masks) {
  std::vector<GradientStep> steps;
  if (results.empty()) return steps;
  std::sort(results.begin(), results.end(),
            [](const JvpContribution& a, const JvpContribution& b) {
              return a.client_id < b.client_id;
            });
  if (!layer_masks.empty() && rule != MergeRule::kNaive) {
    steps.push_back(PerLayerStep(rule, results, clip, layer_masks));
    return steps;
  }
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

std::vector<GradientStep> PlanRobustMerge(
    MergeRule rule, std::vector<JvpContribution> results, double clip,
    const RobustConfig& robust, std::vector<float>* abs_window,
    const std::vector<uint64_t>& layer_masks) {
  std::sort(results.begin(), results.end(),
            [](const JvpContribution& a, const JvpContribution& b) {
              return a.client_id < b.client_id;
            });
  const size_t k = results.size();
  if (k == 0 || robust.rule == "none") {
    return PlanMerge(rule, std::move(results), clip, layer_masks);
  }
  if (robust.rule == "trimmed_mean") {
    const size_t cut =
        static_cast<size_t>(std::floor(robust.trim * static_cast<double>(k)));
    results = KeepMiddle(std::move(results), std::min(cut, (k - 1) / 2));
  } else if (robust.rule == "median") {
    results = KeepMiddle(std::move(results), (k - 1) / 2);
  } else if ((robust.rule == "quantile_clip" ||
              robust.rule == "quantile_skip") &&
             abs_window != nullptr) {
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
      if (robust.rule == "quantile_clip") {
        for (auto& r : results) {
          for (double& d : r.jvps) d = std::clamp(d, -bound, bound);
        }
      } else {
        results.erase(std::remove_if(results.begin(), results.end(),
                                     [bound](const JvpContribution& r) {
                                       for (double d : r.jvps) {
                                         if (std::abs(d) > bound) return true;
                                       }
                                       return false;
                                     }),
                      results.end());
      }
    }
    abs_window->insert(abs_window->end(), fresh.begin(), fresh.end());
    const size_t cap = static_cast<size_t>(std::max(1, robust.window));
    if (abs_window->size() > cap) {
      abs_window->erase(abs_window->begin(),
                        abs_window->end() - static_cast<std::ptrdiff_t>(cap));
    }
  }
  return PlanMerge(rule, std::move(results), clip, layer_masks);
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

GradientStep MergeSharedKeys(const std::vector<GradientStep>& steps) {
  using Id = std::tuple<uint64_t, int64_t, uint32_t, uint32_t, int, uint64_t,
                        bool, bool, bool, uint32_t, uint64_t>;
  std::map<Id, size_t> where;
  GradientStep out;
  for (const auto& step : steps) {
    for (const auto& t : step) {
      const TangentKey& k = t.key;
      const Id id{k.run_seed,
                  k.round,
                  k.client,
                  k.index,
                  static_cast<int>(k.type),
                  k.param_mask,
                  k.normalized,
                  k.rank_one,
                  k.shared_u,
                  k.u_group_size,
                  t.restrict_mask};
      auto [it, fresh] = where.emplace(id, out.size());
      if (fresh) {
        out.push_back(t);
      } else {
        out[it->second].coef += t.coef;
      }
    }
  }
  return out;
}

}  // namespace fedfwd
