#include "server/optimizer.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <vector>

#include "common/config.h"
#include "common/rng.h"
#include "gtest/gtest.h"
#include "server/merge.h"

namespace fedfwd {
namespace {

// --- Learning-rate schedules (round is 1-based; t = round - 1). ---

TEST(LearningRate, ConstantIsTheSameEveryRound) {
  Config c;
  c.lr = 0.1;
  c.rounds = 50;
  for (int64_t round : {1, 2, 17, 50, 1000}) {
    EXPECT_DOUBLE_EQ(LearningRate(c, round), 0.1) << round;
  }
}

TEST(LearningRate, InverseDecay) {
  Config c;
  c.lr = 0.1;
  c.lr_schedule.type = "inverse";
  c.lr_schedule.decay_rounds = 10;
  EXPECT_DOUBLE_EQ(LearningRate(c, 1), 0.1);
  EXPECT_DOUBLE_EQ(LearningRate(c, 6), 0.1 / 1.5);
  EXPECT_DOUBLE_EQ(LearningRate(c, 11), 0.05);
  EXPECT_DOUBLE_EQ(LearningRate(c, 31), 0.025);
  EXPECT_DOUBLE_EQ(LearningRate(c, 91), 0.01);
}

TEST(LearningRate, CosineFromLrToMinLr) {
  Config c;
  c.lr = 0.1;
  c.rounds = 4;
  c.lr_schedule.type = "cosine";
  c.lr_schedule.min_lr = 0.01;
  // frac = t / rounds with t = round - 1: 0, 1/4, 1/2, 3/4.
  EXPECT_DOUBLE_EQ(LearningRate(c, 1), 0.1);
  EXPECT_NEAR(LearningRate(c, 2), 0.01 + 0.045 * (1 + std::sqrt(0.5)), 1e-15);
  EXPECT_NEAR(LearningRate(c, 3), 0.055, 1e-15);
  EXPECT_NEAR(LearningRate(c, 4), 0.01 + 0.045 * (1 - std::sqrt(0.5)), 1e-15);
}

TEST(LearningRate, RoundZeroCountsAsTheFirstRound) {
  Config c;
  c.lr = 0.2;
  c.lr_schedule.type = "inverse";
  c.lr_schedule.decay_rounds = 1;
  EXPECT_DOUBLE_EQ(LearningRate(c, 0), 0.2);
  EXPECT_DOUBLE_EQ(LearningRate(c, 1), 0.2);
  EXPECT_DOUBLE_EQ(LearningRate(c, 2), 0.1);
}

// Round 1 (t = 0) always trains at `lr`, also in a one-round run.
TEST(LearningRate, CosineSingleRoundTrainsAtLr) {
  Config c;
  c.lr = 0.1;
  c.rounds = 1;
  c.lr_schedule.type = "cosine";
  c.lr_schedule.min_lr = 0.0;
  EXPECT_DOUBLE_EQ(LearningRate(c, 1), 0.1);
}

// --- SGD. ---

const std::vector<int64_t> kSizes = {300, 7, 5000, 1};

int64_t Total() {
  return std::accumulate(kSizes.begin(), kSizes.end(), int64_t{0});
}

TangentKey Key(uint32_t client, uint32_t index = 0,
               TangentDistribution type = TangentDistribution::kNormal) {
  TangentKey k;
  k.run_seed = 3;
  k.round = 2;
  k.client = client;
  k.index = index;
  k.type = type;
  return k;
}

std::vector<float> Tangent(const TangentKey& key) {
  std::vector<float> v(static_cast<size_t>(Total()));
  GenerateTangentFlat(key, kSizes, v.data());
  return v;
}

std::vector<float> StartParams() {
  std::vector<float> p(static_cast<size_t>(Total()));
  FillUniform(5, 0, -1.0f, 1.0f, p.data(), Total());
  return p;
}

GradientStep ThreeTerms() {
  return {{Key(1), 0.5},
          {Key(2, 0, TangentDistribution::kRademacher), -1.25},
          {Key(1, 1), 2.0}};
}

TEST(SgdOptimizer, WithoutMomentumSubtractsLrTimesStep) {
  const double lr = 0.1;
  const GradientStep step = ThreeTerms();
  const std::vector<float> start = StartParams();
  std::vector<double> want(start.begin(), start.end());
  for (const auto& term : step) {
    const std::vector<float> v = Tangent(term.key);
    for (int64_t i = 0; i < Total(); ++i) want[i] -= lr * term.coef * v[i];
  }
  std::vector<float> params = StartParams();
  SgdOptimizer opt(kSizes, 0.0);
  opt.Apply(step, lr, params.data());
  for (int64_t i = 0; i < Total(); ++i) {
    ASSERT_NEAR(params[i], want[i], 1e-6) << "entry " << i;
  }
}

TEST(SgdOptimizer, EmptyStepWithoutMomentumChangesNothing) {
  std::vector<float> params = StartParams();
  SgdOptimizer opt(kSizes, 0.0);
  opt.Apply({}, 0.5, params.data());
  EXPECT_EQ(params, StartParams());
}

TEST(SgdOptimizer, ThreadCountDoesNotChangeTheBits) {
  for (double momentum : {0.0, 0.9}) {
    std::vector<float> one = StartParams(), two = StartParams();
    SgdOptimizer opt1(kSizes, momentum, 1), opt2(kSizes, momentum, 2);
    for (int s = 0; s < 2; ++s) {
      opt1.Apply(ThreeTerms(), 0.05, one.data());
      opt2.Apply(ThreeTerms(), 0.05, two.data());
    }
    EXPECT_EQ(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)),
              0)
        << "momentum " << momentum;
  }
}

TEST(SgdOptimizer, MomentumMatchesHandLoop) {
  const double lr = 0.1, mu = 0.9;
  const GradientStep step1 = ThreeTerms();
  const GradientStep step2 = {{Key(7), -0.75}, {Key(8), 0.25}};
  const std::vector<float> start = StartParams();
  std::vector<double> theta(start.begin(), start.end());
  std::vector<double> buf(theta.size(), 0.0);
  for (const GradientStep* step : {&step1, &step2}) {
    for (auto& b : buf) b *= mu;
    for (const auto& term : *step) {
      const std::vector<float> v = Tangent(term.key);
      for (int64_t i = 0; i < Total(); ++i) buf[i] += term.coef * v[i];
    }
    for (int64_t i = 0; i < Total(); ++i) theta[i] -= lr * buf[i];
  }
  std::vector<float> params = StartParams();
  SgdOptimizer opt(kSizes, mu);
  opt.Apply(step1, lr, params.data());
  opt.Apply(step2, lr, params.data());
  for (int64_t i = 0; i < Total(); ++i) {
    ASSERT_NEAR(params[i], theta[i], 1e-6) << "entry " << i;
  }
}

TEST(SgdOptimizer, MomentumKeepsMovingOnAnEmptyStep) {
  const double lr = 0.1, mu = 0.5;
  const GradientStep step = {{Key(1), 1.0}};
  const std::vector<float> v = Tangent(Key(1));
  std::vector<float> params = StartParams();
  SgdOptimizer opt(kSizes, mu);
  opt.Apply(step, lr, params.data());
  const std::vector<float> after_one = params;
  opt.Apply({}, lr, params.data());
  // The second update is lr * mu * v.
  for (int64_t i = 0; i < Total(); ++i) {
    ASSERT_NEAR(params[i] - after_one[i], -lr * mu * v[i], 1e-6) << i;
  }
}

// --- Dense steps (FedSGD, FedAvg server optimizers). ---

TEST(SgdOptimizer, DenseWithoutMomentum) {
  SgdOptimizer opt(std::vector<int64_t>{3}, 0.0);
  std::vector<float> p = {1.0f, 2.0f, 3.0f};
  opt.ApplyDense({1.0f, -1.0f, 0.5f}, 0.5, p.data());
  EXPECT_FLOAT_EQ(p[0], 0.5f);
  EXPECT_FLOAT_EQ(p[1], 2.5f);
  EXPECT_FLOAT_EQ(p[2], 2.75f);
}

TEST(SgdOptimizer, DenseMomentumMatchesHandLoop) {
  SgdOptimizer opt(std::vector<int64_t>{2}, 0.9);
  std::vector<float> p = {0.0f, 0.0f};
  opt.ApplyDense({1.0f, 2.0f}, 0.1, p.data());  // b = g
  opt.ApplyDense({1.0f, 2.0f}, 0.1, p.data());  // b = 0.9 g + g
  EXPECT_NEAR(p[0], -0.1f - 0.19f, 1e-6);
  EXPECT_NEAR(p[1], -0.2f - 0.38f, 1e-6);
}

TEST(AdamOptimizer, FirstStepsMatchTheFedAdamRule) {
  AdamOptimizer opt(0.9, 0.99, 1e-3);
  std::vector<float> p = {1.0f, -1.0f};
  opt.ApplyDense({0.5f, 0.0f}, 0.01, p.data());
  // m = 0.05, v = 0.0025, step = 0.01 * 0.05 / (0.05 + 1e-3)
  EXPECT_NEAR(p[0], 1.0f - 0.01f * 0.05f / (0.05f + 1e-3f), 1e-7);
  EXPECT_FLOAT_EQ(p[1], -1.0f);  // zero gradient, zero moments: no move
  opt.ApplyDense({0.5f, 0.0f}, 0.01, p.data());
  const double m = 0.9 * 0.05 + 0.1 * 0.5;
  const double v = 0.99 * 0.0025 + 0.01 * 0.25;
  EXPECT_NEAR(
      p[0],
      1.0 - 0.01 * 0.05 / (0.05 + 1e-3) - 0.01 * m / (std::sqrt(v) + 1e-3),
      1e-6);
}

}  // namespace
}  // namespace fedfwd
