#include "server/optimizer.h"

#include <algorithm>
#include <cmath>

#include "common/rng.h"
#include "common/step_rule.h"

namespace fedfwd {

double LearningRate(const Config& config, int64_t round) {
  const double t = static_cast<double>(round > 0 ? round - 1 : 0);
  const auto& s = config.lr_schedule;
  if (s.type == "inverse") return config.lr / (1.0 + t / s.decay_rounds);
  if (s.type == "cosine") {
    const double frac =
        t / static_cast<double>(std::max<int64_t>(1, config.rounds));
    return s.min_lr +
           (config.lr - s.min_lr) * 0.5 * (1.0 + std::cos(M_PI * frac));
  }
  return config.lr;
}

SgdOptimizer::SgdOptimizer(TangentLayout layout, double momentum, int threads)
    : layout_(std::move(layout)), momentum_(momentum), threads_(threads) {}

void SgdOptimizer::Apply(const GradientStep& step, double lr, float* params) {
  if (momentum_ == 0) {
    for (const auto& term : step) {
      AddScaledTangentFlat(term.key, layout_,
                           static_cast<float>(-lr * term.coef), params,
                           threads_, term.restrict_mask);
    }
    return;
  }
  int64_t n = 0;
  for (int64_t s : layout_.sizes) n += s;
  if (buffer_.empty()) buffer_.assign(static_cast<size_t>(n), 0.0f);
  const float mu = static_cast<float>(momentum_);
  for (auto& b : buffer_) b *= mu;
  for (const auto& term : step) {
    AddScaledTangentFlat(term.key, layout_, static_cast<float>(term.coef),
                         buffer_.data(), threads_, term.restrict_mask);
  }
  const float a = static_cast<float>(-lr);
  for (int64_t i = 0; i < n; ++i) params[i] += a * buffer_[i];
}

void SgdOptimizer::ApplyDense(const std::vector<float>& grad, double lr,
                              float* params) {
  const size_t n = grad.size();
  if (momentum_ != 0 && buffer_.empty()) buffer_.assign(n, 0.0f);
  MomentumStep(grad.data(), n, lr, momentum_, buffer_.data(), params);
}

void AdamOptimizer::ApplyDense(const std::vector<float>& grad, double lr,
                               float* params) {
  const size_t n = grad.size();
  if (m_.empty()) {
    m_.assign(n, 0.0f);
    v_.assign(n, 0.0f);
  }
  AdamStep(grad.data(), n, lr, beta1_, beta2_, eps_, m_.data(), v_.data(),
           params);
}

}  // namespace fedfwd
