// Local differential privacy: the client-side clip and noise, the
// accountant, and the config keys.
#include "common/privacy.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <regex>
#include <sstream>
#include <string>

#include "absl/status/status.h"
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
  DpNoise noise;
  auto priv = [&](double d, double clip, double sigma) {
    absl::StatusOr<double> r = PrivatizeJvp(d, clip, sigma, noise);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : std::nan("");
  };
  EXPECT_EQ(priv(5.0, 0, 3), 5.0);  // off
  EXPECT_EQ(priv(5.0, 2, 0), 2.0);  // clip only
  EXPECT_EQ(priv(-5.0, 2, 0), -2.0);
  EXPECT_EQ(priv(0.5, 2, 0), 0.5);
  // 100 clipped to 1, plus N(0, (3 * 1)^2): mean 1, sd 3.
  const int n = 200000;
  double sum = 0, sq = 0;
  for (int i = 0; i < n; ++i) {
    const double v = priv(100.0, 1.0, 3.0) - 1.0;
    sum += v;
    sq += v * v;
  }
  const double mean = sum / n, var = sq / n - mean * mean;
  EXPECT_NEAR(mean, 0.0, 5 * 3.0 / std::sqrt(n));
  EXPECT_NEAR(var, 9.0, 0.1);
}

// Issue 18: the noise must come from the kernel's CSPRNG, a fresh 16 bytes
// per draw, not from a user-space generator seeded once (a 32-bit seed could
// be searched and the noise subtracted).
TEST(DpNoise, DefaultDrawsEveryValueFromTheSecureSource) {
  DpNoise noise;
  const uint64_t before = SecureRandomBytesDrawn();
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(noise.Gaussian(1.0).ok());
  EXPECT_EQ(SecureRandomBytesDrawn() - before, 10u * 16u);
  // Clipping alone draws nothing.
  ASSERT_TRUE(PrivatizeJvp(3.0, 1.0, 0.0, noise).ok());
  EXPECT_EQ(SecureRandomBytesDrawn() - before, 10u * 16u);
  ASSERT_TRUE(PrivatizeJvp(3.0, 1.0, 1.0, noise).ok());
  EXPECT_EQ(SecureRandomBytesDrawn() - before, 11u * 16u);
}

TEST(DpNoise, OutputDependsOnTheSourceBytesAlone) {
  // No hidden state: the same bytes give the same value, whatever came
  // before, and every draw asks the source for 16 bytes.
  int calls = 0;
  unsigned char fill = 0x5a;
  DpNoise noise([&](void* out, size_t n) {
    ++calls;
    EXPECT_EQ(n, 16u);
    std::memset(out, fill, n);
    return absl::OkStatus();
  });
  const double a = *noise.Gaussian(2.0);
  fill = 0x11;
  const double b = *noise.Gaussian(2.0);
  fill = 0x5a;
  EXPECT_EQ(*noise.Gaussian(2.0), a);
  EXPECT_NE(a, b);
  EXPECT_EQ(calls, 3);
  // All-zero and all-one bytes stay finite (the uniforms are in (0, 1]).
  fill = 0x00;
  EXPECT_TRUE(std::isfinite(*noise.Gaussian(1.0)));
  fill = 0xff;
  EXPECT_TRUE(std::isfinite(*noise.Gaussian(1.0)));
}

TEST(DpNoise, AFailingSourceIsAnErrorNotSilentZeroNoise) {
  DpNoise noise(
      [](void*, size_t) { return absl::UnavailableError("no entropy"); });
  absl::StatusOr<double> r = PrivatizeJvp(0.3, 1.0, 1.0, noise);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("no entropy"), std::string::npos);
}

TEST(DpNoise, TwoProcessesStartedAtOnceDrawDifferentNoise) {
  // Both children are released by the same write, so they draw at the same
  // moment; each sends back 8 noised values of the same input.
  int go[2];
  ASSERT_EQ(pipe(go), 0);
  int result[2][2];
  pid_t pids[2];
  for (int c = 0; c < 2; ++c) {
    ASSERT_EQ(pipe(result[c]), 0);
    pids[c] = fork();
    ASSERT_GE(pids[c], 0);
    if (pids[c] == 0) {
      char byte;
      if (read(go[0], &byte, 1) != 1) _exit(2);
      DpNoise noise;
      double v[8];
      for (double& x : v) {
        absl::StatusOr<double> r = PrivatizeJvp(0.25, 1.0, 1.0, noise);
        if (!r.ok()) _exit(3);
        x = *r;
      }
      if (write(result[c][1], v, sizeof(v)) != sizeof(v)) _exit(4);
      _exit(0);
    }
    close(result[c][1]);
  }
  const char bytes[2] = {1, 1};
  ASSERT_EQ(write(go[1], bytes, 2), 2);
  double v[2][8];
  for (int c = 0; c < 2; ++c) {
    ASSERT_EQ(read(result[c][0], v[c], sizeof(v[c])),
              static_cast<ssize_t>(sizeof(v[c])));
    int status = 0;
    ASSERT_EQ(waitpid(pids[c], &status, 0), pids[c]);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  int equal = 0;
  for (int i = 0; i < 8; ++i) equal += v[0][i] == v[1][i];
  EXPECT_EQ(equal, 0);
}

TEST(GaussianEpsilon, KScalarsARoundCostKTimesTheRdpOfOne) {
  // Sensitivity 2C sqrt(K): RDP 2 alpha K / sigma^2 per round, so R rounds
  // of K scalars are R K rounds of one.
  EXPECT_DOUBLE_EQ(GaussianEpsilon(50, 2.0, 1e-5, 4),
                   GaussianEpsilon(200, 2.0, 1e-5, 1));
  EXPECT_GT(GaussianEpsilon(50, 2.0, 1e-5, 4), GaussianEpsilon(50, 2.0, 1e-5));
  EXPECT_TRUE(std::isinf(GaussianEpsilon(50, 2.0, 1e-5, 0)));
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

// Issue 18: docs/security.md names the estimators privacy is refused for; the
// config refuses each of them, and accepts each one it names as covered.
TEST(PrivacyConfig, TheReadmeSaysWhatTheConfigDoes) {
  std::ifstream in(std::string(FEDFWD_SOURCE_DIR) + "/docs/security.md");
  ASSERT_TRUE(in.good());
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  for (char& ch : text) {
    if (ch == '\n') ch = ' ';
  }
  const std::regex sentence(
      "`privacy` applies to `estimator:` ([^.]*?) and is refused for "
      "([^.]*?)\\.");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(text, m, sentence))
      << "docs/security.md lacks the sentence naming the estimators privacy "
         "applies to and is refused for";
  auto names = [](const std::string& s) {
    std::vector<std::string> out;
    const std::regex name("`([a-z_]+)`");
    for (std::sregex_iterator it(s.begin(), s.end(), name), end; it != end;
         ++it) {
      out.push_back((*it)[1]);
    }
    return out;
  };
  const std::vector<std::string> covered = names(m[1]);
  const std::vector<std::string> refused = names(m[2]);
  ASSERT_FALSE(covered.empty());
  ASSERT_FALSE(refused.empty());
  for (const std::string& e : refused) {
    auto r = ParseConfig("estimator: " + e + "\nprivacy: {clip: 1}\n", "/", {});
    EXPECT_TRUE(absl::IsInvalidArgument(r.status())) << e;
  }
  for (const std::string& e : covered) {
    auto r = ParseConfig(
        "estimator: " + e + "\nprivacy: {clip: 1, noise_multiplier: 1}\n", "/",
        {});
    EXPECT_TRUE(r.ok()) << e << ": " << r.status();
  }
}

}  // namespace
}  // namespace fedfwd
