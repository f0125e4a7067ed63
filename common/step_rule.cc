#include "common/step_rule.h"

#include <cmath>

namespace fedfwd {

StepRule StepRuleOf(const Config& config) {
  StepRule r;
  r.momentum = config.momentum;
  r.adam = config.server_optimizer.type == "adam";
  r.beta1 = config.server_optimizer.beta1;
  r.beta2 = config.server_optimizer.beta2;
  r.eps = config.server_optimizer.eps;
  r.clip_step = config.clip_step;
  if (r.adam) r.momentum = 0;  // Adam's first moment is its momentum
  return r;
}

void ClipToNorm(float* g, size_t n, double clip) {
  if (!(clip > 0)) return;
  double sq = 0;
  for (size_t i = 0; i < n; ++i) sq += static_cast<double>(g[i]) * g[i];
  const double norm = std::sqrt(sq);
  if (norm > clip) {
    const float f = static_cast<float>(clip / norm);
    for (size_t i = 0; i < n; ++i) g[i] *= f;
  }
}

void MomentumStep(const float* g, size_t n, double lr, double mu, float* buf,
                  float* params) {
  const float a = static_cast<float>(-lr);
  if (mu == 0) {
    for (size_t i = 0; i < n; ++i) params[i] += a * g[i];
    return;
  }
  const float m = static_cast<float>(mu);
  for (size_t i = 0; i < n; ++i) {
    buf[i] = m * buf[i] + g[i];
    params[i] += a * buf[i];
  }
}

void AdamStep(const float* g, size_t n, double lr, double beta1, double beta2,
              double eps, float* m, float* v, float* params) {
  const float b1 = static_cast<float>(beta1), b2 = static_cast<float>(beta2);
  const float e = static_cast<float>(eps), a = static_cast<float>(lr);
  for (size_t i = 0; i < n; ++i) {
    const float gi = g[i];
    m[i] = b1 * m[i] + (1.0f - b1) * gi;
    v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
    params[i] -= a * m[i] / (std::sqrt(v[i]) + e);
  }
}

void ApplySeedStep(const SeedStep& step, const StepRule& rule,
                   const TangentLayout& layout, std::vector<float>* state,
                   float* params, std::vector<float>* scratch, int threads) {
  if (!rule.Stateful()) {
    ApplySeedTerms(step.terms, layout, params, threads);
    return;
  }
  int64_t n64 = 0;
  for (int64_t s : layout.sizes) n64 += s;
  const size_t n = static_cast<size_t>(n64);
  const size_t want = static_cast<size_t>(rule.StateSize(n64));
  if (state->size() != want) state->assign(want, 0.0f);
  if (!rule.adam && !(rule.clip_step > 0)) {
    // Momentum alone: buf = mu buf + g with g's terms added straight into
    // the buffer (no model-sized scratch), then the step.
    float* buf = state->data();
    const float mu = static_cast<float>(rule.momentum);
    for (size_t i = 0; i < n; ++i) buf[i] *= mu;
    ApplySeedTerms(step.terms, layout, buf, threads);
    const float a = static_cast<float>(-step.lr);
    for (size_t i = 0; i < n; ++i) params[i] += a * buf[i];
    return;
  }
  scratch->assign(n, 0.0f);
  float* g = scratch->data();
  ApplySeedTerms(step.terms, layout, g, threads);
  ClipToNorm(g, n, rule.clip_step);
  if (rule.adam) {
    AdamStep(g, n, step.lr, rule.beta1, rule.beta2, rule.eps, state->data(),
             state->data() + n, params);
  } else {
    MomentumStep(g, n, step.lr, rule.momentum, state->data(), params);
  }
}

}  // namespace fedfwd
