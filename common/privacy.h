// Local differential privacy for forward-gradient releases.
//
// A client releases d = grad f(theta; its minibatch) . v per tangent. With
// privacy on, the client clips d to [-C, C] and adds Gaussian noise of
// standard deviation sigma * C before sending (PrivatizeJvp), drawing the
// noise from its own non-reproducible generator: the coordinator knows the
// tangent seeds, so noise derived from them would not hide anything.
//
// Guarantee (per client, against the coordinator and anyone who sees what
// the client sends): any change of the client's data, one example or all of
// them, moves a clipped d by at most 2C, so each release is the Gaussian
// mechanism with L2 sensitivity 2C and noise sigma * C, i.e. Renyi-DP
// eps_alpha = alpha (2C)^2 / (2 (sigma C)^2) = 2 alpha / sigma^2 (Mironov
// 2017). k releases compose to k * 2 alpha / sigma^2, converted to
// (epsilon, delta)-DP by epsilon = min over alpha of
// k * 2 alpha / sigma^2 + log(1/delta) / (alpha - 1) (GaussianEpsilon).
// No amplification by subsampling is claimed. No libtorch here.
#ifndef FEDFWD_COMMON_PRIVACY_H_
#define FEDFWD_COMMON_PRIVACY_H_

#include <cstdint>
#include <random>

namespace fedfwd {

// clip(d, -clip, clip) + N(0, (noise_multiplier * clip)^2); d unchanged when
// clip <= 0.
double PrivatizeJvp(double d, double clip, double noise_multiplier,
                    std::mt19937_64& rng);

// (epsilon, delta)-DP of `releases` Gaussian-mechanism releases, each with
// noise multiplier `noise_multiplier` relative to the clip C (sensitivity
// 2C). +inf when noise_multiplier is 0 and releases > 0; 0 for no release.
double GaussianEpsilon(int64_t releases, double noise_multiplier, double delta);

}  // namespace fedfwd

#endif  // FEDFWD_COMMON_PRIVACY_H_
