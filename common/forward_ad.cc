#include "common/forward_ad.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/forward_grad.h>

#include <mutex>

#include "absl/strings/str_cat.h"
#include "common/torch_model.h"

namespace fedfwd {
namespace {

// libtorch's forward-AD levels are process-wide, not per thread: a second
// level entered while one is open fails with "Nested forward mode AD is not
// supported". Logical clients sharing a process (fedfwd-loadgen) compute on
// several threads, so levels are entered one at a time.
std::mutex& DualLevelMutex() {
  static std::mutex* mu = new std::mutex;
  return *mu;
}

// Enters a fresh forward-AD level and releases it (dropping every dual
// tangent made at it) on scope exit, also when an error unwinds. Holds
// DualLevelMutex() for its lifetime.
class DualLevel {
 public:
  DualLevel()
      : lock_(DualLevelMutex()),
        idx_(torch::autograd::ForwardADLevel::get_next_idx()) {}
  ~DualLevel() { torch::autograd::ForwardADLevel::release_idx(idx_); }
  DualLevel(const DualLevel&) = delete;
  DualLevel& operator=(const DualLevel&) = delete;
  int64_t idx() const { return static_cast<int64_t>(idx_); }

 private:
  std::lock_guard<std::mutex> lock_;  // declared first: taken before idx_
  uint64_t idx_;
};

}  // namespace

absl::StatusOr<JvpResult> ComputeJvp(
    const ModelSpec& spec, const std::vector<at::Tensor>& params,
    const std::vector<std::vector<at::Tensor>>& tangents, const at::Tensor& x,
    const at::Tensor& y) {
  if (tangents.empty()) {
    return absl::InvalidArgumentError("ComputeJvp needs at least one tangent");
  }
  try {
    at::NoGradGuard no_grad;  // no autograd graph; forward AD stays on
    JvpResult result;
    for (size_t k = 0; k < tangents.size(); ++k) {
      if (tangents[k].size() != params.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("tangent ", k, " has ", tangents[k].size(),
                         " tensors, model has ", params.size()));
      }
      DualLevel level;
      std::vector<at::Tensor> duals;
      duals.reserve(params.size());
      for (size_t p = 0; p < params.size(); ++p) {
        duals.push_back(at::_make_dual(params[p], tangents[k][p], level.idx()));
      }
      at::Tensor loss = TaskLoss(Forward(spec, duals, x), y);
      auto unpacked = at::_unpack_dual(loss, level.idx());
      const at::Tensor& tangent_out = std::get<1>(unpacked);
      if (!tangent_out.defined()) {
        return absl::InternalError("forward AD produced no tangent output");
      }
      if (k == 0) result.loss = std::get<0>(unpacked).item<double>();
      result.jvps.push_back(tangent_out.item<double>());
    }
    return result;
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("forward-mode JVP failed: ", e.what_without_backtrace()));
  }
}

}  // namespace fedfwd
