// Local differential privacy: the client-side clip and noise, the
// accountant, and the config keys.
#include "common/privacy.h"

#include <cmath>
#include <limits>

#include "common/config.h"
#include "gtest/gtest.h"

namespace fedfwd {
namespace {

TEST(GaussianEpsilon, MatchesTheClosedFormOfTheRdpBound) {
  // eps(alpha) = a alpha + L / (alpha - 1), a = 2k / sigma^2, L = log(1/d):
  // minimum a + 2 sqrt(a L) at alpha = 1 + sqrt(L / a).
  for (const auto& [k, sigma, delta] :
       {std::tuple<int64_t, double, double>{100, 10, 1e-5},
        {1, 1, 1e-6},
        {1000, 4, 1e-5}}) {
    const double a = 2.0 * static_cast<double>(k) / (sigma * sigma);
    const double l = std::log(1.0 / delta);
    EXPECT_NEAR(GaussianEpsilon(k, sigma, delta), a + 2 * std::sqrt(a * l),
                1e-9)
        << k << " " << sigma << " " << delta;
  }
  // 100 releases at sigma 10, delta 1e-5: 2 + 2 sqrt(2 ln 1e5) = 11.597...
  EXPECT_NEAR(GaussianEpsilon(100, 10, 1e-5), 11.5970, 1e-4);
}

TEST(GaussianEpsilon, GrowsWithReleasesShrinksWithNoise) {
  EXPECT_EQ(GaussianEpsilon(0, 1, 1e-5), 0.0);
  EXPECT_TRUE(std::isinf(GaussianEpsilon(1, 0, 1e-5)));
  EXPECT_LT(GaussianEpsilon(10, 5, 1e-5), GaussianEpsilon(20, 5, 1e-5));
  EXPECT_GT(GaussianEpsilon(10, 2, 1e-5), GaussianEpsilon(10, 4, 1e-5));
  EXPECT_GT(GaussianEpsilon(10, 4, 1e-7), GaussianEpsilon(10, 4, 1e-5));
}

TEST(PrivatizeJvp, ClipsAndAddsNoiseOfTheStatedSize) {
  std::mt19937_64 rng(7);
  EXPECT_EQ(PrivatizeJvp(5.0, 0, 3, rng), 5.0);  // off
  EXPECT_EQ(PrivatizeJvp(5.0, 2, 0, rng), 2.0);  // clip only
  EXPECT_EQ(PrivatizeJvp(-5.0, 2, 0, rng), -2.0);
  EXPECT_EQ(PrivatizeJvp(0.5, 2, 0, rng), 0.5);
  // 100 clipped to 1, plus N(0, (3 * 1)^2): mean 1, sd 3.
  const int n = 200000;
  double sum = 0, sq = 0;
  for (int i = 0; i < n; ++i) {
    const double v = PrivatizeJvp(100.0, 1.0, 3.0, rng) - 1.0;
    sum += v;
    sq += v * v;
  }
  const double mean = sum / n, var = sq / n - mean * mean;
  EXPECT_NEAR(mean, 0.0, 5 * 3.0 / std::sqrt(n));
  EXPECT_NEAR(var, 9.0, 0.1);
}

TEST(PrivacyConfig, KeysParseAndBadOnesAreNamed) {
  auto c = ParseConfig(
      "privacy: {clip: 1.5, noise_multiplier: 2, delta: 1e-6}\n", "/", {});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->privacy.clip, 1.5);
  EXPECT_EQ(c->privacy.noise_multiplier, 2.0);
  EXPECT_EQ(c->privacy.delta, 1e-6);
  auto back = ParseConfig(ConfigToYaml(*c), "/", {});
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->privacy.noise_multiplier, 2.0);
  for (const char* bad :
       {"privacy: {clip: -1}\n", "privacy: {delta: 0}\n",
        "privacy: {delta: 1}\n", "privacy: {noise_multiplier: 1}\n",
        "privacy: {clip: 1, sigma: 2}\n",
        "estimator: fedavg\nprivacy: {clip: 1}\n"}) {
    auto r = ParseConfig(bad, "/", {});
    EXPECT_TRUE(absl::IsInvalidArgument(r.status())) << bad;
    EXPECT_NE(r.status().message().find("privacy"), std::string::npos)
        << r.status();
  }
}

}  // namespace
}  // namespace fedfwd
