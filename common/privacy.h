// Local differential privacy for forward-gradient releases.
//
// A client releases, each round it takes part in, K scalars
// d_k = grad f(theta; its minibatch) . v_k (K = tangent.count). With privacy
// on, the client clips each d_k to [-C, C] and adds Gaussian noise of
// standard deviation sigma * C to each before sending (PrivatizeJvp).
//
// Noise source. The noise never derives from anything the coordinator
// knows (the tangent seeds) and never from a seeded user-space generator
// whose state could be searched: every Gaussian draw consumes 16 fresh
// bytes from the kernel's CSPRNG (getrandom(2), SecureRandomBytes), so no
// output, or any number of outputs, reveals anything about another.
// DpNoise takes its byte source as a parameter: that is the seam tests use.
//
// Unit of privacy and guarantee: one whole client (all of its examples),
// against the coordinator and anyone who sees what the client sends. Any
// change of the client's data moves each clipped d_k by at most 2C, so the
// K-vector of one round moves by at most 2C sqrt(K) in L2: one round is the
// Gaussian mechanism with L2 sensitivity 2C sqrt(K) and per-coordinate
// noise sigma C, Renyi-DP eps_alpha = alpha (2C sqrt(K))^2 / (2 (sigma C)^2)
// = 2 alpha K / sigma^2 (Mironov 2017). R rounds compose to
// R * 2 alpha K / sigma^2, converted to (epsilon, delta)-DP by
// epsilon = min over alpha of that + log(1/delta) / (alpha - 1)
// (GaussianEpsilon). No amplification by subsampling is claimed.
// Not covered: the loss and sample count a client also reports. No libtorch
// here.
#ifndef FEDFWD_COMMON_PRIVACY_H_
#define FEDFWD_COMMON_PRIVACY_H_

#include <cstddef>
#include <cstdint>
#include <functional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fedfwd {

// Fills out[0, n) from the kernel's CSPRNG (getrandom(2), blocking until the
// pool is initialized, retried on EINTR and short reads).
absl::Status SecureRandomBytes(void* out, size_t n);

// Bytes SecureRandomBytes has delivered in this process (for tests that
// check a code path draws from it).
uint64_t SecureRandomBytesDrawn();

using RandomBytesFn = std::function<absl::Status(void* out, size_t n)>;

// Gaussian noise for DP releases. Each draw reads 16 bytes from `source`
// (two 53-bit uniforms, Box-Muller): there is no state carried between
// draws. Thread-safe when `source` is (SecureRandomBytes is).
class DpNoise {
 public:
  explicit DpNoise(RandomBytesFn source = SecureRandomBytes);
  // N(0, sigma^2); an error when the source fails.
  absl::StatusOr<double> Gaussian(double sigma);

 private:
  RandomBytesFn source_;
};

// clip(d, -clip, clip) + N(0, (noise_multiplier * clip)^2); d unchanged when
// clip <= 0.
absl::StatusOr<double> PrivatizeJvp(double d, double clip,
                                    double noise_multiplier, DpNoise& noise);

// (epsilon, delta)-DP of `releases` rounds of the Gaussian mechanism, each
// round releasing `scalars_per_release` values each clipped at C with noise
// noise_multiplier * C (L2 sensitivity 2C sqrt(scalars_per_release)).
// +inf when noise_multiplier is 0 and releases > 0; 0 for no release.
double GaussianEpsilon(int64_t releases, double noise_multiplier, double delta,
                       int64_t scalars_per_release = 1);

}  // namespace fedfwd

#endif  // FEDFWD_COMMON_PRIVACY_H_
