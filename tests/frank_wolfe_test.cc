// Frank-Wolfe in the l1 ball (common/step_rule.h): the projection, the
// oracle's vertex, the average of past estimates and the ball's invariant.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <vector>

#include "common/step_rule.h"

namespace fedfwd {
namespace {

double L1(const std::vector<float>& x) {
  double s = 0;
  for (float v : x) s += std::fabs(static_cast<double>(v));
  return s;
}

size_t NonZeros(const std::vector<float>& x) {
  size_t n = 0;
  for (float v : x) n += v != 0;
  return n;
}

TEST(ProjectL1Ball, SoftThresholdsOntoTheSphere) {
  // |x|_1 = 10 > 4. Sorted magnitudes 4, 3, 2, 1; (prefix sum - 4) / k is
  // 0, 1.5, 5/3, 1.5 and stays below the k-th magnitude up to k = 3, so
  // theta = 5/3: 4, 3, 2 shrink by it (summing to 4) and 1 drops out.
  std::vector<float> x = {3, -2, 4, -1};
  ProjectL1Ball(x.data(), x.size(), 4.0);
  const double theta = 5.0 / 3.0;
  EXPECT_NEAR(x[0], 3 - theta, 1e-6);
  EXPECT_NEAR(x[1], -(2 - theta), 1e-6);
  EXPECT_NEAR(x[2], 4 - theta, 1e-6);
  EXPECT_EQ(x[3], 0.0f);
  EXPECT_NEAR(L1(x), 4.0, 1e-5);
  // Inside the ball: unchanged, bit for bit.
  std::vector<float> inside = {0.5f, -0.25f, 0.125f};
  const std::vector<float> copy = inside;
  ProjectL1Ball(inside.data(), inside.size(), 1.0);
  EXPECT_EQ(inside, copy);
}

TEST(ProjectL1Ball, MatchesTheMinimumDistancePointOnRandomVectors) {
  // The projection is the closest point of the ball: no feasible point
  // found by perturbing it along pairs of coordinates is closer.
  uint32_t state = 12345;
  auto next = [&state] {
    state = state * 1664525u + 1013904223u;
    return static_cast<float>(state >> 8) / 16777216.0f - 0.5f;
  };
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<float> x(50);
    for (float& v : x) v = next();
    std::vector<float> p = x;
    ProjectL1Ball(p.data(), p.size(), 2.0);
    EXPECT_LE(L1(p), 2.0 + 1e-5);
    for (size_t i = 0; i < x.size(); ++i) {
      // Same sign or zero, and never larger.
      EXPECT_LE(std::fabs(p[i]), std::fabs(x[i]) + 1e-7);
      EXPECT_GE(p[i] * x[i], 0.0f);
    }
    // Shrinking every kept magnitude by the same theta: the differences
    // |x_i| - |p_i| of the non-zeros are equal.
    double theta = -1;
    for (size_t i = 0; i < x.size(); ++i) {
      if (p[i] == 0) continue;
      const double d = std::fabs(x[i]) - std::fabs(p[i]);
      if (theta < 0) theta = d;
      EXPECT_NEAR(d, theta, 1e-5);
    }
    // ... and every zeroed coordinate was below theta.
    for (size_t i = 0; i < x.size(); ++i) {
      if (p[i] == 0) EXPECT_LE(std::fabs(x[i]), theta + 1e-6);
    }
  }
}

TEST(PruneToL1Ball, KeepsTheLargestMagnitudesThatFitUnchanged) {
  // |x|_1 = 10 > 6. In magnitude order: 4 (sum 4), then 3 would make 7 > 6,
  // so the rest go (a prefix of the order is kept).
  std::vector<float> x = {3, -2, 4, -1};
  PruneToL1Ball(x.data(), x.size(), 6.0);
  EXPECT_EQ(x, (std::vector<float>{0, 0, 4, 0}));
  std::vector<float> y = {3, -2, 4, -1};
  PruneToL1Ball(y.data(), y.size(), 7.0);
  EXPECT_EQ(y, (std::vector<float>{3, 0, 4, 0}));
  // Ties go to the lower index; inside the ball nothing changes.
  std::vector<float> z = {1, -1, 1};
  PruneToL1Ball(z.data(), z.size(), 2.0);
  EXPECT_EQ(z, (std::vector<float>{1, -1, 0}));
  PruneToL1Ball(z.data(), z.size(), 2.0);
  EXPECT_EQ(z, (std::vector<float>{1, -1, 0}));
}

TEST(FrankWolfeStep, PruneStartKeepsTheLargestWeights) {
  const size_t n = 5;
  std::vector<float> params = {0.1f, -0.9f, 0.5f, 0.05f, -0.3f};
  std::vector<float> state(n + 1, 0.0f);
  const std::vector<float> g(n, 0.0f);  // no vertex: the start alone
  FrankWolfeStep(g.data(), n, 0.5, 1.5, 1, /*project=*/false, state.data(),
                 params.data());
  // 0.9 + 0.5 = 1.4 fits, + 0.3 would not: the rest are zero, then halved.
  EXPECT_EQ(params, (std::vector<float>{0, -0.45f, 0.25f, 0, 0}));
}

TEST(FrankWolfeStep, MovesTowardsTheVertexOfTheLargestAveragedEntry) {
  const size_t n = 4;
  std::vector<float> params = {0.5f, 0, 0, 0};
  std::vector<float> state(n + 1, 0.0f);
  const std::vector<float> g = {0.1f, -2.0f, 0.3f, 0};
  FrankWolfeStep(g.data(), n, 0.25, 2.0, 1, /*project=*/true, state.data(),
                 params.data());
  // Step 0: rho = min(1, 4 / 8^(2/3)) = 1: d = g; vertex -2 sign(-2) e_1.
  EXPECT_EQ(std::vector<float>(state.begin(), state.begin() + n), g);
  EXPECT_EQ(state[n], 1.0f);
  EXPECT_FLOAT_EQ(params[0], 0.375f);  // 0.5 * 0.75
  EXPECT_FLOAT_EQ(params[1], 0.5f);    // 0.25 * 2
  EXPECT_EQ(params[2], 0.0f);
  // Later steps average more: at step 100, rho = 4 / 108^(2/3) = 0.18, so a
  // single new estimate pointing at coordinate 2 does not outweigh the
  // history at coordinate 1 (at step 1, rho = 0.92, it would).
  state[n] = 100;
  const std::vector<float> g2 = {0, 0, 2.5f, 0};
  FrankWolfeStep(g2.data(), n, 0.25, 2.0, 1, /*project=*/true, state.data(),
                 params.data());
  const double rho = 4.0 / std::pow(108.0, 2.0 / 3.0);
  EXPECT_NEAR(state[1], -2.0 * (1 - rho), 1e-6);
  EXPECT_NEAR(state[2], 0.3 * (1 - rho) + 2.5 * rho, 1e-6);
  EXPECT_GT(std::fabs(state[1]), std::fabs(state[2]));
  EXPECT_FLOAT_EQ(params[1], 0.5f * 0.75f + 0.5f);
  EXPECT_EQ(params[2], 0.0f);
  EXPECT_EQ(state[n], 101.0f);
}

TEST(FrankWolfeStep, StaysInTheBallAndAddsAtMostOneNonZeroAStep) {
  const size_t n = 200;
  std::vector<float> params(n);
  for (size_t i = 0; i < n; ++i) {
    params[i] = std::sin(static_cast<float>(i)) * 0.3f;
  }
  const double radius = 3.0;
  ASSERT_GT(L1(params), radius);
  std::vector<float> state(n + 1, 0.0f);
  std::vector<float> g(n);
  FrankWolfeStep(g.data(), n, 0.1, radius, 1, /*project=*/true, state.data(),
                 params.data());
  // The first step projected the start onto the ball (a zero estimate
  // has no vertex): sparse, on the sphere.
  EXPECT_NEAR(L1(params), radius * 0.9, 1e-4);
  size_t nonzeros = NonZeros(params);
  EXPECT_LT(nonzeros, n);
  for (int step = 1; step < 50; ++step) {
    for (size_t i = 0; i < n; ++i) {
      g[i] = std::cos(static_cast<float>(i * 7 + step * 13));
    }
    FrankWolfeStep(g.data(), n, 2.0 / (step + 2), radius, 1, /*project=*/true,
                   state.data(), params.data());
    EXPECT_LE(L1(params), radius * (1 + 1e-5)) << "step " << step;
    const size_t now = NonZeros(params);
    EXPECT_LE(now, nonzeros + 1) << "step " << step;
    nonzeros = now;
  }
  EXPECT_EQ(state[n], 50.0f);
}

// K = 3: the K-sparse polytope {|x|_1 <= R, |x|_inf <= R/3}. The start is
// clipped to R/3 after the projection; a step moves the three largest
// averaged entries (ties to the lower index) by lr * R/3 towards -sign(d).
TEST(FrankWolfeStep, KSparseVertexMovesTheKLargestEntries) {
  const size_t n = 6;
  std::vector<float> params = {3, 0, 0, 0, 0, -0.25f};
  std::vector<float> state(n + 1, 0.0f);
  const std::vector<float> g = {0.5f, -2, 1, 1, 0, 0.5f};
  FrankWolfeStep(g.data(), n, 0.5, 3.0, 3, /*project=*/true, state.data(),
                 params.data());
  // Projection onto |x|_1 <= 3: theta = 0.125 -> (2.875, 0, .., -0.125);
  // clipped to 1; then halved, and the support {1, 2, 3} (|d| 2, 1, 1; 0
  // and 5 have 0.5) moves by 0.5 * 1 towards -sign(d).
  EXPECT_FLOAT_EQ(params[0], 0.5f);
  EXPECT_FLOAT_EQ(params[1], 0.5f);
  EXPECT_FLOAT_EQ(params[2], -0.5f);
  EXPECT_FLOAT_EQ(params[3], -0.5f);
  EXPECT_EQ(params[4], 0.0f);
  EXPECT_FLOAT_EQ(params[5], -0.0625f);
  double l1 = 0;
  for (float v : params) l1 += std::fabs(v);
  EXPECT_LE(l1, 3.0 + 1e-6);
}

}  // namespace
}  // namespace fedfwd
