#include "common/privacy.h"

#include <sys/random.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"

namespace fedfwd {
namespace {

std::atomic<uint64_t> secure_bytes_drawn{0};

// A uniform double in (0, 1] from 53 random bits (never 0, so log is finite).
double UnitInterval(uint64_t bits) {
  return (static_cast<double>(bits >> 11) + 1.0) * 0x1.0p-53;
}

}  // namespace

absl::Status SecureRandomBytes(void* out, size_t n) {
  auto* p = static_cast<unsigned char*>(out);
  size_t got = 0;
  while (got < n) {
    const ssize_t r = getrandom(p + got, n - got, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(
          absl::StrCat("getrandom failed: ", std::strerror(errno)));
    }
    got += static_cast<size_t>(r);
  }
  secure_bytes_drawn.fetch_add(n, std::memory_order_relaxed);
  return absl::OkStatus();
}

uint64_t SecureRandomBytesDrawn() {
  return secure_bytes_drawn.load(std::memory_order_relaxed);
}

DpNoise::DpNoise(RandomBytesFn source) : source_(std::move(source)) {}

absl::StatusOr<double> DpNoise::Gaussian(double sigma) {
  uint64_t bits[2];
  absl::Status s = source_(bits, sizeof(bits));
  if (!s.ok()) return s;
  const double u1 = UnitInterval(bits[0]);
  const double u2 = UnitInterval(bits[1]);
  constexpr double kTwoPi = 6.283185307179586476925286766559;
  return sigma * std::sqrt(-2.0 * std::log(u1)) * std::cos(kTwoPi * u2);
}

absl::StatusOr<double> PrivatizeJvp(double d, double clip,
                                    double noise_multiplier, DpNoise& noise) {
  if (!(clip > 0)) return d;
  double out = std::clamp(d, -clip, clip);
  if (noise_multiplier > 0) {
    absl::StatusOr<double> z = noise.Gaussian(noise_multiplier * clip);
    if (!z.ok()) return z.status();
    out += *z;
  }
  return out;
}

double GaussianEpsilon(int64_t releases, double noise_multiplier, double delta,
                       int64_t scalars_per_release) {
  if (releases <= 0) return 0.0;
  if (!(noise_multiplier > 0) || !(delta > 0) || !(delta < 1) ||
      scalars_per_release < 1) {
    return std::numeric_limits<double>::infinity();
  }
  // RDP of one round at order alpha: alpha * Delta^2 / (2 (sigma C)^2) with
  // Delta = 2C sqrt(K): 2 alpha K / sigma^2.
  const double per_alpha = 2.0 * static_cast<double>(releases) *
                           static_cast<double>(scalars_per_release) /
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
