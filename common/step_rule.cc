#include "common/step_rule.h"

#include <algorithm>
#include <cmath>
#include <functional>

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
  r.frank_wolfe = config.server_optimizer.type == "frank_wolfe";
  r.radius = config.server_optimizer.radius;
  r.fw_k = config.server_optimizer.k;
  r.fw_project = config.server_optimizer.start == "project";
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

void ProjectL1Ball(float* x, size_t n, double radius) {
  double l1 = 0;
  for (size_t i = 0; i < n; ++i) l1 += std::fabs(static_cast<double>(x[i]));
  if (l1 <= radius) return;
  std::vector<double> u(n);
  for (size_t i = 0; i < n; ++i) u[i] = std::fabs(static_cast<double>(x[i]));
  std::sort(u.begin(), u.end(), std::greater<double>());
  // theta = (sum of the k largest - radius) / k for the largest k whose
  // k-th magnitude stays above it.
  double sum = 0, theta = 0;
  for (size_t k = 0; k < n; ++k) {
    sum += u[k];
    const double t = (sum - radius) / static_cast<double>(k + 1);
    if (u[k] > t) theta = t;
  }
  for (size_t i = 0; i < n; ++i) {
    const double a = std::fabs(static_cast<double>(x[i])) - theta;
    x[i] = a > 0 ? static_cast<float>(std::copysign(a, x[i])) : 0.0f;
  }
}

void PruneToL1Ball(float* x, size_t n, double radius) {
  double l1 = 0;
  for (size_t i = 0; i < n; ++i) l1 += std::fabs(static_cast<double>(x[i]));
  if (l1 <= radius) return;
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [x](size_t a, size_t b) {
    const float fa = std::fabs(x[a]), fb = std::fabs(x[b]);
    return fa > fb || (fa == fb && a < b);
  });
  double sum = 0;
  size_t keep = 0;
  while (keep < n &&
         sum + std::fabs(static_cast<double>(x[order[keep]])) <= radius) {
    sum += std::fabs(static_cast<double>(x[order[keep]]));
    ++keep;
  }
  for (size_t r = keep; r < n; ++r) x[order[r]] = 0.0f;
}

void FrankWolfeStep(const float* g, size_t n, double lr, double radius,
                    int64_t k, bool project, float* state, float* params) {
  float* d = state;
  // A step count that is not a count (a damaged state) starts over rather
  // than feeding pow a negative base.
  const double t = state[n] >= 0 ? static_cast<double>(state[n]) : 0.0;
  const size_t kk = std::min(n, static_cast<size_t>(std::max<int64_t>(1, k)));
  const float cap = static_cast<float>(radius / static_cast<double>(kk));
  if (t == 0) {
    if (project) {
      ProjectL1Ball(params, n, radius);
    } else {
      PruneToL1Ball(params, n, radius);
    }
    if (kk > 1) {
      for (size_t i = 0; i < n; ++i)
        params[i] = std::clamp(params[i], -cap, cap);
    }
  }
  const double rho = std::min(1.0, 4.0 / std::pow(t + 8.0, 2.0 / 3.0));
  const float keep = static_cast<float>(1.0 - rho),
              take = static_cast<float>(rho);
  for (size_t i = 0; i < n; ++i) d[i] = keep * d[i] + take * g[i];
  // The vertex's support: the K largest |d_i|, ties to the lower index (a
  // strict order, so every machine picks the same set).
  // A NaN entry ranks below every number, so the order stays strict.
  auto mag = [d](size_t i) {
    return std::isnan(d[i]) ? -1.0f : std::fabs(d[i]);
  };
  std::vector<size_t> support;
  if (kk == 1) {
    size_t best = 0;
    for (size_t i = 1; i < n; ++i) {
      if (mag(i) > mag(best)) best = i;
    }
    support.push_back(best);
  } else {
    support.resize(n);
    for (size_t i = 0; i < n; ++i) support[i] = i;
    auto before = [&mag](size_t a, size_t b) {
      const float fa = mag(a), fb = mag(b);
      return fa > fb || (fa == fb && a < b);
    };
    std::nth_element(support.begin(), support.begin() + (kk - 1), support.end(),
                     before);
    support.resize(kk);
  }
  const float shrink = static_cast<float>(1.0 - lr);
  for (size_t i = 0; i < n; ++i) params[i] *= shrink;
  const float step = static_cast<float>(lr) * cap;
  for (size_t i : support) {
    if (d[i] > 0) params[i] -= step;
    if (d[i] < 0) params[i] += step;
  }
  state[n] = static_cast<float>(t + 1);
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
  if (!rule.adam && !rule.frank_wolfe && !(rule.clip_step > 0)) {
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
  if (rule.frank_wolfe) {
    FrankWolfeStep(g, n, step.lr, rule.radius, rule.fw_k, rule.fw_project,
                   state->data(), params);
  } else if (rule.adam) {
    AdamStep(g, n, step.lr, rule.beta1, rule.beta2, rule.eps, state->data(),
             state->data() + n, params);
  } else {
    MomentumStep(g, n, step.lr, rule.momentum, state->data(), params);
  }
}

}  // namespace fedfwd
