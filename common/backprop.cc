#include "common/backprop.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/torch_model.h"

namespace fedfwd {
namespace {

// Gradient without the try/catch; throws c10::Error.
GradientResult GradientOrThrow(const ModelSpec& spec,
                               const std::vector<at::Tensor>& params,
                               const at::Tensor& x, const at::Tensor& y) {
  at::AutoGradMode grad_on(true);
  std::vector<at::Tensor> leaves;
  leaves.reserve(params.size());
  // detach() shares storage: no copy of the weights.
  for (const auto& p : params) leaves.push_back(p.detach().requires_grad_());
  at::Tensor loss = TaskLoss(Forward(spec, leaves, x), y);
  GradientResult r;
  r.grads = torch::autograd::grad({loss}, leaves);
  r.loss = loss.item<double>();
  return r;
}

}  // namespace

absl::StatusOr<GradientResult> ComputeGradient(
    const ModelSpec& spec, const std::vector<at::Tensor>& params,
    const at::Tensor& x, const at::Tensor& y) {
  try {
    return GradientOrThrow(spec, params, x, y);
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("backprop failed: ", e.what_without_backtrace()));
  }
}

absl::Status ApplySgdUpdate(const SgdOptions& o,
                            const std::vector<at::Tensor>& grads,
                            std::vector<at::Tensor>* params,
                            std::vector<at::Tensor>* buffers) {
  try {
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < params->size(); ++i) {
      at::Tensor& p = (*params)[i];
      at::Tensor g = grads[i];
      if (o.weight_decay > 0) g = g.add(p, o.weight_decay);
      if (o.momentum > 0) {
        if (buffers->size() <= i) {
          buffers->push_back(g.clone());
        } else {
          (*buffers)[i].mul_(o.momentum).add_(g);
        }
        if (o.nesterov) {
          p.sub_(g.add((*buffers)[i], o.momentum), o.lr);
        } else {
          p.sub_((*buffers)[i], o.lr);
        }
      } else {
        p.sub_(g, o.lr);
      }
    }
    return absl::OkStatus();
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("SGD update failed: ", e.what_without_backtrace()));
  }
}

absl::StatusOr<double> RunSgdSteps(
    const ModelSpec& spec, std::vector<at::Tensor>* params, int64_t steps,
    const SgdOptions& options,
    const std::function<void(at::Tensor*, at::Tensor*)>& next_batch) {
  try {
    std::vector<at::Tensor> buffers;
    double loss_sum = 0;
    for (int64_t s = 0; s < steps; ++s) {
      at::Tensor x, y;
      next_batch(&x, &y);
      GradientResult g = GradientOrThrow(spec, *params, x, y);
      if (!std::isfinite(g.loss)) {
        return absl::InternalError(
            absl::StrCat("local training diverged at step ", s + 1, " (loss ",
                         g.loss, "); lower lr"));
      }
      loss_sum += g.loss;
      absl::Status applied = ApplySgdUpdate(options, g.grads, params, &buffers);
      if (!applied.ok()) return applied;
    }
    return steps > 0 ? loss_sum / steps : 0.0;
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("local SGD failed: ", e.what_without_backtrace()));
  }
}

}  // namespace fedfwd
