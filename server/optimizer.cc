#include "server/optimizer.h"

#include <algorithm>
#include <cmath>

#include "common/rng.h"

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
  const float a = static_cast<float>(-lr);
  if (momentum_ == 0) {
    for (size_t i = 0; i < n; ++i) params[i] += a * grad[i];
    return;
  }
  if (buffer_.empty()) buffer_.assign(n, 0.0f);
  const float mu = static_cast<float>(momentum_);
  for (size_t i = 0; i < n; ++i) {
    buffer_[i] = mu * buffer_[i] + grad[i];
    params[i] += a * buffer_[i];
  }
}

void AdamOptimizer::ApplyDense(const std::vector<float>& grad, double lr,
                               float* params) {
  const size_t n = grad.size();
  if (m_.empty()) {
    m_.assign(n, 0.0f);
    v_.assign(n, 0.0f);
  }
  const float b1 = static_cast<float>(beta1_), b2 = static_cast<float>(beta2_);
  const float eps = static_cast<float>(eps_), a = static_cast<float>(lr);
  for (size_t i = 0; i < n; ++i) {
    const float g = grad[i];
    m_[i] = b1 * m_[i] + (1.0f - b1) * g;
    v_[i] = b2 * v_[i] + (1.0f - b2) * g * g;
    params[i] -= a * m_[i] / (std::sqrt(v_[i]) + eps);
  }
}

}  // namespace fedfwd
