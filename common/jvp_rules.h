// Hand-written forward-mode rules for the layers fedfwd ships (dense, conv,
// ReLU, max and average pooling, flatten; mean cross-entropy), pushing K
// tangents through one primal pass.
//
// The tangents of a batch of keys travel together as one tensor [K, B, ...]
// beside the primal activations [B, ...], so the primal is computed once
// for all K (libtorch's forward AD, forward_ad.h, runs one dual pass per
// tangent). A rank-one key's weight tangent V = u a^T is never formed:
// V x = u (a^T x), one matrix-vector product per example for a dense layer,
// and one single-filter convolution scaled per output channel for a conv.
// Values equal ComputeJvp's to float32 rounding (tests/jvp_rules_test.cc).
//
// Shared-u keys (TangentKey::shared_u, one group) on a model of dense, ReLU
// and flatten layers take a cheaper route: layer l's tangent for key k is
// u_l s_lk[b] with s_lk[b] = a_lk . h_b + beta_lk, and everything after the
// layer is linear in the tangent, so one vector u_l pushed forward through
// the rest of the network carries all K keys; the K values cost one extra
// forward pass per layer plus one [B, in] x [in, K] product, and memory
// holds [B, K] numbers, not [K, B, features] tangents. No backward pass,
// no autograd graph (SharedRankOneJvpApplies says when it is taken).
//
// Batch norm has no rule here: SupportsJvpRules() says so and callers fall
// back to ComputeJvp.
#ifndef FEDFWD_COMMON_JVP_RULES_H_
#define FEDFWD_COMMON_JVP_RULES_H_

#include <ATen/core/Tensor.h>

#include <vector>

#include "absl/status/statusor.h"
#include "common/forward_ad.h"
#include "common/model.h"
#include "common/rng.h"

namespace fedfwd {

// Whether every layer of `spec` has a rule (no batch norm).
bool SupportsJvpRules(const ModelSpec& spec);

// d_k = grad f(theta) . v(keys[k]) of the batch's mean cross-entropy, for all
// keys in one primal pass (tangents regenerated from the keys on the CPU,
// normalization and masks included, then moved to the parameters' device).
// x [B, C, H, W], y int64 [B]. Errors: no keys, a model with batch norm,
// shape mismatches (as InvalidArgument / Internal).
absl::StatusOr<JvpResult> ComputeJvpRules(const ModelSpec& spec,
                                          const std::vector<at::Tensor>& params,
                                          const std::vector<TangentKey>& keys,
                                          const at::Tensor& x,
                                          const at::Tensor& y);

// Whether ComputeJvpRules takes the shared-u route for these keys.
bool SharedRankOneJvpApplies(const ModelSpec& spec,
                             const std::vector<TangentKey>& keys);

// d_k = grads . v(keys[k]) for rank-one keys (every key must be rank-one),
// `grads` one tensor per parameter: per weight matrix one matrix product
// G A^T [rows, K] and a weighted sum with U (BLAS), the same values as
// TangentDots (rng.h) to float32 rounding at a fraction of its time.
absl::StatusOr<std::vector<double>> RankOneDots(
    const ModelSpec& spec, const std::vector<at::Tensor>& grads,
    const std::vector<TangentKey>& keys);

}  // namespace fedfwd

#endif  // FEDFWD_COMMON_JVP_RULES_H_
