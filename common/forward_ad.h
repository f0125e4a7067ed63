// The one adapter over libtorch's forward-mode AD (at::_make_dual,
// at::_unpack_dual, ForwardADLevel). Nothing else in fedfwd calls them.
//
// ComputeJvp runs one forward pass per tangent with dual tensors and returns
// the directional derivatives d_k = grad f(theta) . v_k of the mean
// cross-entropy loss, with no backward pass and no autograd graph (grad mode
// is off; no tensor requires grad). Thread-compatible: each call enters and
// releases its own dual level.
#ifndef FEDFWD_COMMON_FORWARD_AD_H_
#define FEDFWD_COMMON_FORWARD_AD_H_

#include <ATen/core/Tensor.h>

#include <vector>

#include "absl/status/statusor.h"
#include "common/model.h"

namespace fedfwd {

struct JvpResult {
  double loss = 0;           // mean cross-entropy of the batch
  std::vector<double> jvps;  // one per tangent
};

// `tangents[k]` has one tensor per parameter, same shapes/device/dtype as
// `params`. x [B, C, H, W], y int64 [B].
absl::StatusOr<JvpResult> ComputeJvp(
    const ModelSpec& spec, const std::vector<at::Tensor>& params,
    const std::vector<std::vector<at::Tensor>>& tangents, const at::Tensor& x,
    const at::Tensor& y);

}  // namespace fedfwd

#endif  // FEDFWD_COMMON_FORWARD_AD_H_
