#include "common/finite_diff.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/torch_model.h"

namespace fedfwd {
namespace {

// The forward pass with every parameter and every conv / dense input
// fake-quantized. Throws c10::Error.
at::Tensor QuantizedForward(const ModelSpec& spec,
                            const std::vector<at::Tensor>& params,
                            const at::Tensor& x, const FixedPointSpec& fixed) {
  std::vector<at::Tensor> q;
  q.reserve(params.size());
  for (const auto& p : params) q.push_back(FakeQuantize(p, fixed.weight_bits));
  return Forward(spec, q, x, [&fixed](const at::Tensor& h) {
    return FakeQuantize(h, fixed.activation_bits);
  });
}

double Loss(const ModelSpec& spec, const std::vector<at::Tensor>& params,
            const at::Tensor& x, const at::Tensor& y,
            const FixedPointSpec* fixed) {
  const at::Tensor logits = fixed == nullptr
                                ? Forward(spec, params, x)
                                : QuantizedForward(spec, params, x, *fixed);
  return TaskLoss(logits, y).item<double>();
}

}  // namespace

at::Tensor FakeQuantize(const at::Tensor& x, int bits) {
  const double levels = std::ldexp(1.0, bits - 1) - 1;
  const double max_abs = x.abs().max().item<double>();
  if (!(max_abs > 0)) return x;
  const double scale = max_abs / levels;
  return at::clamp(at::round(x / scale), -levels, levels) * scale;
}

absl::StatusOr<at::Tensor> ForwardFixedPoint(
    const ModelSpec& spec, const std::vector<at::Tensor>& params,
    const at::Tensor& x, const FixedPointSpec& fixed) {
  try {
    at::NoGradGuard no_grad;
    return QuantizedForward(spec, params, x, fixed);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("fixed-point forward failed: ",
                                            e.what_without_backtrace()));
  }
}

absl::StatusOr<JvpResult> ComputeFiniteDifference(
    const ModelSpec& spec, const std::vector<at::Tensor>& params,
    const std::vector<std::vector<at::Tensor>>& tangents, const at::Tensor& x,
    const at::Tensor& y, double epsilon, const FixedPointSpec* fixed) {
  if (tangents.empty()) {
    return absl::InvalidArgumentError(
        "finite differences need at least one tangent");
  }
  if (!(epsilon > 0) || !std::isfinite(epsilon)) {
    return absl::InvalidArgumentError(
        absl::StrCat("finite-difference epsilon must be > 0, got ", epsilon));
  }
  try {
    at::NoGradGuard no_grad;
    JvpResult result;
    result.loss = Loss(spec, params, x, y, fixed);
    std::vector<at::Tensor> shifted(params.size());
    for (size_t k = 0; k < tangents.size(); ++k) {
      if (tangents[k].size() != params.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("tangent ", k, " has ", tangents[k].size(),
                         " tensors, model has ", params.size()));
      }
      for (size_t p = 0; p < params.size(); ++p) {
        shifted[p] = params[p] + epsilon * tangents[k][p];
      }
      const double plus = Loss(spec, shifted, x, y, fixed);
      for (size_t p = 0; p < params.size(); ++p) {
        shifted[p] = params[p] - epsilon * tangents[k][p];
      }
      const double minus = Loss(spec, shifted, x, y, fixed);
      result.jvps.push_back((plus - minus) / (2 * epsilon));
    }
    return result;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("finite differences failed: ",
                                            e.what_without_backtrace()));
  }
}

}  // namespace fedfwd
