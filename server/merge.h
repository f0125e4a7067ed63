// Merge rules for forward-gradient results, as pure functions over plain
// values (no gRPC, no libtorch), so tests call them directly.
//
// A merge turns the round's accepted results into optimizer steps; each step
// is a gradient estimate g = sum_j coef_j * v(key_j) whose tangents the
// coordinator regenerates from their keys.
//   naive:    one step per result, g_i = d_i v_i, applied in client-id order
//   average:  one step, g = (1/K) sum_i d_i v_i
//   weighted: one step, g = sum_i (n_i / N) d_i v_i, N = sum_i n_i
// With clip > 0 every d_i is clipped to [-clip, clip] first. A result of K
// tangents enters as the mean of its d_k v_k, the mean taken within each
// group of its keys that share a parameter mask (tangent.layer_counts: the
// 1/K becomes 1/K_group, so every parameter gets one unbiased estimate).
//
// Robust rules (RobustConfig.rule; PlanRobustMerge) act on the scalars d_i
// before the merge rule, never coordinate-wise on tangents: the tangents are
// independent random directions, so a coordinate-wise median of d_i v_i
// would erase the gradient signal. The rank statistic of a result is its d
// (the mean of its d_k when it has several tangents); ties go by client id.
//   trimmed_mean: sort the K results by d, drop floor(trim * K) at each end,
//                 merge the rest with the merge rule (average: 1/kept each;
//                 weighted: n_i over the kept samples; naive: a step each).
//   median:       the same with everything but the middle result (K odd) or
//                 the middle two (K even) dropped: the step is the median
//                 client's own d_m v_m at full weight, the magnitude of one
//                 client's unbiased estimate, as the average has.
//   quantile_clip: T = multiplier * (q-quantile of the |d| in the window of
//                 past values plus this round's); every d_i is clipped to
//                 [-T, T]; then this round's |d| join the window (oldest
//                 out past `window`). The q-quantile of n values is the
//                 ceil(q * n)-th smallest.
// The tradeoff, honestly: each d_i v_i alone is an unbiased estimate of its
// client's gradient; selecting or clipping by the size of d is not. Dropping
// or clipping the largest |d| removes the draws whose tangent happened to
// align best with the gradient, so even with honest iid clients the
// expected step is shrunk (it stays along the gradient when the clients
// share it and tangents are symmetric; with heterogeneous clients it leans
// to those whose d is central). median also loses the 1/K variance
// reduction of averaging K independent tangents. The gain: one client's d
// moves the step by at most the spread of the honest ones (trimmed_mean
// with floor(trim * K) >= number of attackers, median with fewer than K/2
// attackers), or by at most T (quantile_clip, while attackers are a
// minority of the window below the q-quantile).
//
// Dense updates (RobustAverage, RobustConfig.dense), over the vectors u_i:
//   median:       coordinate-wise median (even K: mean of the middle two);
//   trimmed_mean: coordinate-wise, drop floor(trim * K) at each end, plain
//                 mean of the rest. Both ignore sample counts (a weighted
//                 order statistic would let a client claim weight).
//   norm_clip:    u_i *= min(1, B / |u_i|_2), B = `norm` or, when 0, the
//                 median of the round's norms; then the sample-weighted
//                 mean. Unlike the others it keeps FedAvg's mean of honest
//                 updates unchanged when their norms are below B.
#ifndef FEDFWD_SERVER_MERGE_H_
#define FEDFWD_SERVER_MERGE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
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
  // Nonzero: only these parameter tensors of the tangent (per-layer merge of
  // weight splitting).
  uint64_t restrict_mask = 0;
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
//
// Weight splitting: with `layer_masks` (one parameter mask per layer, see
// LayerMasks) the average and weighted rules merge each layer over the
// results whose tangents perturb it: layer b gets sum_{i in S_b} (w_i / W_b)
// d_i v_i|_b with W_b = sum_{i in S_b} w_i (w = 1 or n_i), so a layer that
// two of ten clients perturbed is not shrunk five times. naive ignores them.
std::vector<GradientStep> PlanMerge(
    MergeRule rule, std::vector<JvpContribution> results, double clip,
    const std::vector<uint64_t>& layer_masks = {});

// One parameter mask per layer that has parameters (a layer's weight and
// bias share it), in layer order.
std::vector<uint64_t> LayerMasks(const std::vector<std::string>& param_names);

// Multi-tangent projection (Flugel et al.). G_ij = v_i . v_j over the
// tangents of `keys` (normalization and masks included), accumulated in
// double, regenerating the tangents slice by slice (memory: keys.size()
// slices of 64K floats). Cost: K(K+1)/2 dot products of the model's size.
std::vector<double> TangentGram(const std::vector<TangentKey>& keys,
                                const TangentLayout& layout, int threads = 1);
// Solves G c = d for a symmetric positive semi-definite K x K matrix
// (row-major) by Cholesky; a singular G (repeated or dependent tangents)
// gets a ridge of 1e-10 * mean(diag G) added. Errors: sizes differ, G not
// finite.
absl::StatusOr<std::vector<double>> SolveGram(std::vector<double> gram,
                                              const std::vector<double>& d);
// The coefficients c of the projection estimate sum_k c_k v_k =
// (m / K) V (V^T V)^-1 d, where d_k = g . v_k and m is the number of entries
// the tangents perturb (the largest over the keys): the orthogonal
// projection of g onto span(V), scaled so that its expectation is g for
// tangents with E[v v^T] = I on m entries (E[P_V] = (K / m) I there). With K
// tangents that span g, the unscaled projection is g itself.
absl::StatusOr<std::vector<double>> ProjectionCoefficients(
    const std::vector<TangentKey>& keys, const std::vector<double>& d,
    const TangentLayout& layout, int threads = 1);

// The robust rule of `robust` (see the top of this file), then PlanMerge.
// `abs_window` is quantile_clip's window of past |d| (as float, so that a
// checkpoint restores it exactly), oldest first; it is read and updated
// only by quantile_clip and may be null for the other rules.
// quantile_skip: the bound of quantile_clip, but a result with any |d| beyond
// it is dropped (FedKSeed's skip of outlier steps); its |d| still join the
// window.
std::vector<GradientStep> PlanRobustMerge(
    MergeRule rule, std::vector<JvpContribution> results, double clip,
    const RobustConfig& robust, std::vector<float>* abs_window,
    const std::vector<uint64_t>& layer_masks = {});

// FedAvg / FedSGD with `robust.dense` (none: WeightedAverage). Same errors
// as WeightedAverage, and for an unknown rule name.
absl::Status RobustAverage(const RobustConfig& robust,
                           const std::vector<DenseContribution>& updates,
                           std::vector<float>* out);

// Shared-tangent rounds (tangent.shared_seed): every client of a round
// holds the same keys, so the round's steps add up to one term per distinct
// (key, restrict_mask), whose coefficient is the sum of that key's
// coefficients over all steps, in step then term order (double). One step
// comes back, keys in the order they first appear. Under the weighted rule a
// key's coefficient is s_k / (K N) with s_k = sum_i n_i d_ik: the
// coordinator needs only those sums, and seed replay carries K terms a
// round whatever the number of clients. (For plain SGD the sum is the same
// update as the steps one after another; momentum, Adam and clip_step take
// one step on the round's sum either way.)
GradientStep MergeSharedKeys(const std::vector<GradientStep>& steps);

}  // namespace fedfwd

#endif  // FEDFWD_SERVER_MERGE_H_
