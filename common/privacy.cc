#include "common/privacy.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace fedfwd {

double PrivatizeJvp(double d, double clip, double noise_multiplier,
                    std::mt19937_64& rng) {
  if (!(clip > 0)) return d;
  double out = std::clamp(d, -clip, clip);
  if (noise_multiplier > 0) {
    std::normal_distribution<double> noise(0.0, noise_multiplier * clip);
    out += noise(rng);
  }
  return out;
}

double GaussianEpsilon(int64_t releases, double noise_multiplier,
                       double delta) {
  if (releases <= 0) return 0.0;
  if (!(noise_multiplier > 0) || !(delta > 0) || !(delta < 1)) {
    return std::numeric_limits<double>::infinity();
  }
  // RDP of one release at order alpha: 2 alpha / sigma^2 (sensitivity 2C,
  // noise sigma C).
  const double per_alpha = 2.0 * static_cast<double>(releases) /
                           (noise_multiplier * noise_multiplier);
  const double log_inv_delta = std::log(1.0 / delta);
  // The bound is convex in alpha; its minimum is at
  // alpha* = 1 + sqrt(log(1/delta) / per_alpha). Scan a fine geometric grid
  // around 1 as well, so the answer never depends on that algebra alone.
  auto eps_at = [&](double alpha) {
    return per_alpha * alpha + log_inv_delta / (alpha - 1.0);
  };
  double best = eps_at(1.0 + std::sqrt(log_inv_delta / per_alpha));
  for (double x = 1e-4; x < 1e6; x *= 1.05)
    best = std::min(best, eps_at(1.0 + x));
  return best;
}

}  // namespace fedfwd
