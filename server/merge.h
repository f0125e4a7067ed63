// Merge rules for forward-gradient results, as pure functions over plain
// values (no gRPC, no libtorch), so tests call them directly.
//
// A merge turns the round's accepted results into optimizer steps; each step
// is a gradient estimate g = sum_j coef_j * v(key_j) whose tangents the
// coordinator regenerates from their keys.
//   naive:    one step per result, g_i = d_i v_i, applied in client-id order
//   average:  one step, g = (1/K) sum_i d_i v_i
//   weighted: one step, g = sum_i (n_i / N) d_i v_i, N = sum_i n_i
// With clip > 0 every d_i is clipped to [-clip, clip] first.
#ifndef FEDFWD_SERVER_MERGE_H_
#define FEDFWD_SERVER_MERGE_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "common/config.h"
#include "common/rng.h"

namespace fedfwd {

struct JvpContribution {
  uint32_t client_id = 0;
  std::vector<TangentKey> keys;  // one per JVP scalar
  std::vector<double> jvps;
  int64_t num_samples = 0;
};

struct GradientTerm {
  TangentKey key;
  double coef = 0;
};
using GradientStep = std::vector<GradientTerm>;

// FedAvg / FedSGD: the sample-weighted mean of dense updates,
// out = sum_i (n_i / N) u_i, accumulated in double in the given order.
// Errors: no updates, sizes differ, a weight <= 0.
struct DenseContribution {
  const std::vector<float>* update = nullptr;
  int64_t num_samples = 0;
};
absl::Status WeightedAverage(const std::vector<DenseContribution>& updates,
                             std::vector<float>* out);

// `results` may come in any order; they are merged in client-id order.
// Within one result, several tangents are averaged (mean of d_k v_k).
std::vector<GradientStep> PlanMerge(MergeRule rule,
                                    std::vector<JvpContribution> results,
                                    double clip);

}  // namespace fedfwd

#endif  // FEDFWD_SERVER_MERGE_H_
