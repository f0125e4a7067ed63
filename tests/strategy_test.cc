// Strategies as plain values: client sampling, FedAvg/FedSGD tasks, result
// checks and merges (no engine, no network).
#include "server/strategy.h"

#include <cmath>
#include <limits>
#include <set>
#include <vector>

#include "common/config.h"
#include "common/model.h"
#include "common/rng.h"
#include "gtest/gtest.h"

namespace fedfwd {
namespace {

ModelSpec Tiny() {
  auto spec = GetModelSpec("tiny", {1, 28, 28});
  EXPECT_TRUE(spec.ok());
  return *spec;
}

std::vector<uint32_t> Ids(int n) {
  std::vector<uint32_t> ids;
  for (int i = 1; i <= n; ++i) ids.push_back(static_cast<uint32_t>(i * 3));
  return ids;
}

TEST(SampleClients, FullFractionTakesEveryone) {
  Config c;
  EXPECT_EQ(SampleClients(c, 5, Ids(10)), Ids(10));
}

TEST(SampleClients, FractionIsASortedDeterministicSubset) {
  Config c;
  c.seed = 11;
  c.sampling.fraction = 0.3;
  const auto live = Ids(10);
  std::set<std::vector<uint32_t>> distinct;
  for (int64_t round = 1; round <= 20; ++round) {
    const auto chosen = SampleClients(c, round, live);
    ASSERT_EQ(chosen.size(), 3u);  // ceil(0.3 * 10)
    EXPECT_TRUE(std::is_sorted(chosen.begin(), chosen.end()));
    EXPECT_EQ(std::set<uint32_t>(chosen.begin(), chosen.end()).size(), 3u);
    for (uint32_t id : chosen) {
      EXPECT_NE(std::find(live.begin(), live.end(), id), live.end());
    }
    EXPECT_EQ(chosen, SampleClients(c, round, live));
    distinct.insert(chosen);
  }
  EXPECT_GT(distinct.size(), 5u);  // rounds draw different subsets
}

TEST(SampleClients, MinimumAndCap) {
  Config c;
  c.sampling.fraction = 0.01;
  c.sampling.minimum = 4;
  EXPECT_EQ(SampleClients(c, 1, Ids(10)).size(), 4u);
  c.sampling.minimum = 50;
  EXPECT_EQ(SampleClients(c, 1, Ids(10)), Ids(10));
  EXPECT_TRUE(SampleClients(c, 1, {}).empty());
}

ClientResult Update(uint32_t id, std::vector<float> u, int64_t n) {
  ClientResult r;
  r.client_id = id;
  r.round = 1;
  r.update = std::move(u);
  r.num_samples = n;
  r.loss = 1.0;
  return r;
}

TEST(BackpropStrategy, FedAvgTasksCarryLocalSgdSettings) {
  Config c;
  c.estimator = "fedavg";
  c.lr = 0.05;
  c.momentum = 0.5;
  c.local_epochs = 3;
  c.batch_size = 32;
  c.compression = "int8";
  auto s = MakeStrategy(c, Tiny());
  ASSERT_TRUE(s.ok()) << s.status();
  const auto tasks = (*s)->ConfigureRound(1, {1, 2});
  ASSERT_EQ(tasks.size(), 2u);
  EXPECT_EQ(tasks[0].estimator, "fedavg");
  EXPECT_EQ(tasks[0].local_epochs, 3);
  EXPECT_DOUBLE_EQ(tasks[0].lr, 0.05);
  EXPECT_DOUBLE_EQ(tasks[0].momentum, 0.5);
  EXPECT_EQ(tasks[0].batch_size, 32);
  EXPECT_EQ(tasks[0].compression, "int8");
  EXPECT_TRUE(tasks[0].tangents.empty());
}

TEST(BackpropStrategy, FedAvgAddsTheSampleWeightedMeanDelta) {
  Config c;
  c.estimator = "fedavg";
  const ModelSpec spec = Tiny();
  auto s = MakeStrategy(c, spec);
  ASSERT_TRUE(s.ok());
  const size_t n = static_cast<size_t>(spec.NumParams());
  std::vector<float> params(n, 1.0f);
  const auto tasks = (*s)->ConfigureRound(1, {1, 2});
  const auto a = Update(1, std::vector<float>(n, 1.0f), 100);
  const auto b = Update(2, std::vector<float>(n, -1.0f), 300);
  ASSERT_TRUE((*s)->ValidateResult(tasks[0], a).ok());
  auto report = (*s)->Aggregate(1, tasks, {a, b}, &params);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->merged, 2);
  // 1 + (0.25 * 1 + 0.75 * -1) = 0.5
  for (float p : params) ASSERT_FLOAT_EQ(p, 0.5f);
}

TEST(BackpropStrategy, FedAvgServerMomentumKeepsMoving) {
  Config c;
  c.estimator = "fedavg";
  c.server_optimizer.momentum = 0.5;
  const ModelSpec spec = Tiny();
  auto s = MakeStrategy(c, spec);
  ASSERT_TRUE(s.ok());
  const size_t n = static_cast<size_t>(spec.NumParams());
  std::vector<float> params(n, 0.0f);
  const auto tasks = (*s)->ConfigureRound(1, {1});
  const auto a = Update(1, std::vector<float>(n, 1.0f), 10);
  ASSERT_TRUE((*s)->Aggregate(1, tasks, {a}, &params).ok());
  ASSERT_TRUE((*s)->Aggregate(2, tasks, {a}, &params).ok());
  // steps of 1 then 1.5
  EXPECT_FLOAT_EQ(params[0], 2.5f);
}

TEST(BackpropStrategy, FedSgdStepsAgainstTheMeanGradient) {
  Config c;
  c.estimator = "fedsgd";
  c.lr = 0.1;
  const ModelSpec spec = Tiny();
  auto s = MakeStrategy(c, spec);
  ASSERT_TRUE(s.ok());
  const size_t n = static_cast<size_t>(spec.NumParams());
  std::vector<float> params(n, 1.0f);
  const auto tasks = (*s)->ConfigureRound(1, {4, 9});
  EXPECT_EQ(tasks[0].estimator, "fedsgd");
  const auto a = Update(4, std::vector<float>(n, 2.0f), 50);
  const auto b = Update(9, std::vector<float>(n, 4.0f), 50);
  ASSERT_TRUE((*s)->Aggregate(1, tasks, {a, b}, &params).ok());
  for (float p : params) ASSERT_FLOAT_EQ(p, 1.0f - 0.1f * 3.0f);
}

TEST(BackpropStrategy, RejectsBadUpdates) {
  Config c;
  c.estimator = "fedavg";
  const ModelSpec spec = Tiny();
  auto s = MakeStrategy(c, spec);
  ASSERT_TRUE(s.ok());
  const size_t n = static_cast<size_t>(spec.NumParams());
  const auto tasks = (*s)->ConfigureRound(1, {1});
  EXPECT_FALSE(
      (*s)->ValidateResult(tasks[0], Update(1, std::vector<float>(n - 1), 5))
          .ok());
  auto nan = Update(1, std::vector<float>(n, 0.0f), 5);
  nan.update[7] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_FALSE((*s)->ValidateResult(tasks[0], nan).ok());
  EXPECT_FALSE(
      (*s)->ValidateResult(tasks[0], Update(1, std::vector<float>(n), 0)).ok());
  auto jvp = Update(1, {}, 5);
  jvp.jvps = {0.5};
  EXPECT_FALSE((*s)->ValidateResult(tasks[0], jvp).ok());
}

TEST(ForwardGradientStrategy, RejectsAModelUpdate) {
  Config c;
  auto s = MakeStrategy(c, Tiny());
  ASSERT_TRUE(s.ok());
  const auto tasks = (*s)->ConfigureRound(1, {1});
  ClientResult r;
  r.client_id = 1;
  r.jvps = {0.1};
  r.update = {1.0f};
  r.num_samples = 5;
  EXPECT_FALSE((*s)->ValidateResult(tasks[0], r).ok());
}

// Seed-replay sync rests on this: under plain SGD the terms a strategy
// reports reproduce its Aggregate bit for bit when applied to the model it
// started from (here with weight splitting's per-layer restrict masks and
// normalized normal tangents); with momentum or Adam there are none.
TEST(ForwardGradientStrategy, LastUpdateAsSeedsReplaysTheMergeExactly) {
  const ModelSpec spec = GetModelSpec("mlp", {1, 28, 28}).value();
  Config c;
  c.lr = 0.01;
  c.tangent.count = 2;
  c.tangent.normalize = true;
  c.tangent.split = "layers";
  auto s = MakeStrategy(c, spec, 2);
  ASSERT_TRUE(s.ok()) << s.status();
  std::vector<float> params = InitialParams(spec, 3);
  for (int64_t round = 1; round <= 3; ++round) {
    const auto tasks = (*s)->ConfigureRound(round, {1, 2, 3, 4});
    std::vector<ClientResult> results;
    for (const auto& t : tasks) {
      ClientResult r;
      r.client_id = t.client_id;
      r.round = round;
      r.jvps = {0.25 * t.client_id, -0.5 + 0.1 * static_cast<double>(round)};
      r.num_samples = 10 + t.client_id;
      results.push_back(r);
    }
    const std::vector<float> before = params;
    ASSERT_TRUE((*s)->Aggregate(round, tasks, results, &params).ok());
    std::vector<SeedTerm> terms;
    ASSERT_TRUE((*s)->LastUpdateAsSeeds(&terms));
    EXPECT_EQ(terms.size(), 8u);
    std::vector<float> replayed = before;
    ApplySeedTerms(terms, spec.ParamSizes(), replayed.data(), 1);
    EXPECT_EQ(replayed, params) << "round " << round;
    EXPECT_NE(replayed, before);
  }
  for (const char* variant : {"momentum", "adam", "clip_step"}) {
    Config m = c;
    if (std::string(variant) == "momentum") m.momentum = 0.9;
    if (std::string(variant) == "adam") m.server_optimizer.type = "adam";
    if (std::string(variant) == "clip_step") m.clip_step = 1.0;
    auto ms = MakeStrategy(m, spec);
    ASSERT_TRUE(ms.ok());
    const auto tasks = (*ms)->ConfigureRound(1, {1});
    ClientResult r;
    r.client_id = 1;
    r.round = 1;
    r.jvps = {0.5, 0.5};
    r.num_samples = 10;
    std::vector<float> p = InitialParams(spec, 3);
    ASSERT_TRUE((*ms)->Aggregate(1, tasks, {r}, &p).ok());
    std::vector<SeedTerm> terms;
    EXPECT_FALSE((*ms)->LastUpdateAsSeeds(&terms)) << variant;
  }
}

}  // namespace
}  // namespace fedfwd
