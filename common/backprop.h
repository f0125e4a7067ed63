// Reverse-mode (backprop) training steps over the functional models of
// torch_model.h, for the baselines: FedSGD gradients, FedAvg local epochs and
// the centralized trainer. The autograd calls live here (as forward_ad.cc
// holds the forward-mode ones); callers get plain tensors and absl::Status.
// Thread-compatible: no shared state.
#ifndef FEDFWD_COMMON_BACKPROP_H_
#define FEDFWD_COMMON_BACKPROP_H_

#include <ATen/core/Tensor.h>

#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model.h"
#include "common/sgd_options.h"

namespace fedfwd {

struct GradientResult {
  double loss = 0;                // mean cross-entropy of the batch
  std::vector<at::Tensor> grads;  // d loss / d params, shaped like params
};

// Gradient of the mean cross-entropy at `params` (not modified) on x, y.
absl::StatusOr<GradientResult> ComputeGradient(
    const ModelSpec& spec, const std::vector<at::Tensor>& params,
    const at::Tensor& x, const at::Tensor& y);

// One SGD update of `params` in place from `grads` (shaped alike).
// `buffers` is the momentum state: empty at the start, filled by the first
// call with momentum, passed back unchanged between calls.
absl::Status ApplySgdUpdate(const SgdOptions& options,
                            const std::vector<at::Tensor>& grads,
                            std::vector<at::Tensor>* params,
                            std::vector<at::Tensor>* buffers);

// Minibatch SGD (SgdOptions) on `params` in place, for `steps` batches
// drawn by `next_batch(&x, &y)`. Returns the mean training loss over the
// steps. Fails (leaving params partly updated) if the loss stops being
// finite.
absl::StatusOr<double> RunSgdSteps(
    const ModelSpec& spec, std::vector<at::Tensor>* params, int64_t steps,
    const SgdOptions& options,
    const std::function<void(at::Tensor*, at::Tensor*)>& next_batch);

}  // namespace fedfwd

#endif  // FEDFWD_COMMON_BACKPROP_H_
