// Robust merges: the rules on JVP scalars (PlanRobustMerge), the dense
// rules (RobustAverage), their effect on a model when one client sends an
// outlier, and the quantile window across a checkpoint.
#include <cmath>
#include <cstdint>
#include <tuple>
#include <vector>

#include "common/config.h"
#include "common/model.h"
#include "gtest/gtest.h"
#include "server/merge.h"
#include "server/strategy.h"

namespace fedfwd {
namespace {

JvpContribution Result(uint32_t client, double d, int64_t samples = 10) {
  JvpContribution c;
  c.client_id = client;
  TangentKey k;
  k.run_seed = 1;
  k.round = 9;
  k.client = client;
  c.keys.push_back(k);
  c.jvps = {d};
  c.num_samples = samples;
  return c;
}

// (client, coef) of the single step.
void ExpectOneStep(const std::vector<GradientStep>& steps,
                   const std::vector<std::pair<uint32_t, double>>& want) {
  ASSERT_EQ(steps.size(), 1u);
  ASSERT_EQ(steps[0].size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(steps[0][i].key.client, want[i].first) << "term " << i;
    EXPECT_DOUBLE_EQ(steps[0][i].coef, want[i].second) << "term " << i;
  }
}

RobustConfig Rule(const std::string& rule) {
  RobustConfig r;
  r.rule = rule;
  return r;
}

// d by client: 1: 3, 2: -1, 3: 100, 4: 2, 5: 0 (out of order).
std::vector<JvpContribution> FiveClients() {
  return {Result(3, 100), Result(1, 3), Result(5, 0), Result(2, -1),
          Result(4, 2)};
}

TEST(PlanRobustMerge, NoneIsPlanMerge) {
  ExpectOneStep(PlanRobustMerge(MergeRule::kAverage, FiveClients(), 0,
                                Rule("none"), nullptr),
                {{1, 0.6}, {2, -0.2}, {3, 20}, {4, 0.4}, {5, 0}});
}

TEST(PlanRobustMerge, TrimmedMeanDropsTheExtremesOfD) {
  RobustConfig r = Rule("trimmed_mean");
  r.trim = 0.2;  // floor(0.2 * 5) = 1 at each end: clients 2 and 3 go
  ExpectOneStep(
      PlanRobustMerge(MergeRule::kAverage, FiveClients(), 0, r, nullptr),
      {{1, 1.0}, {4, 2.0 / 3}, {5, 0}});
  r.trim = 0.1;  // floor(0.5) = 0: nothing goes
  EXPECT_EQ(
      PlanRobustMerge(MergeRule::kAverage, FiveClients(), 0, r, nullptr)[0]
          .size(),
      5u);
}

TEST(PlanRobustMerge, TrimmedMeanWeightedUsesKeptSamples) {
  RobustConfig r = Rule("trimmed_mean");
  r.trim = 0.25;  // 4 clients: one at each end
  std::vector<JvpContribution> in = {Result(1, 3, 10), Result(2, -1, 10),
                                     Result(3, 100, 10), Result(4, 2, 30)};
  // kept: 1 (d 3, n 10) and 4 (d 2, n 30): weights 1/4, 3/4.
  ExpectOneStep(PlanRobustMerge(MergeRule::kWeighted, in, 0, r, nullptr),
                {{1, 0.75}, {4, 1.5}});
}

TEST(PlanRobustMerge, MedianKeepsTheMiddleClientAtFullWeight) {
  ExpectOneStep(PlanRobustMerge(MergeRule::kAverage, FiveClients(), 0,
                                Rule("median"), nullptr),
                {{4, 2.0}});
  // Even count: the middle two, averaged.
  std::vector<JvpContribution> four = {Result(1, 3), Result(2, -1),
                                       Result(3, 100), Result(4, 2)};
  ExpectOneStep(
      PlanRobustMerge(MergeRule::kAverage, four, 0, Rule("median"), nullptr),
      {{1, 1.5}, {4, 1.0}});
  // Naive: one step per kept client.
  auto naive =
      PlanRobustMerge(MergeRule::kNaive, four, 0, Rule("median"), nullptr);
  ASSERT_EQ(naive.size(), 2u);
  EXPECT_DOUBLE_EQ(naive[0][0].coef, 3);
  EXPECT_DOUBLE_EQ(naive[1][0].coef, 2);
}

TEST(PlanRobustMerge, QuantileClipUsesTheWindowAndUpdatesIt) {
  RobustConfig r = Rule("quantile_clip");
  r.quantile = 0.5;
  r.multiplier = 2;
  r.window = 4;
  std::vector<float> window;
  // |d| = {1, 2, 3, 1000}: ceil(0.5 * 4) = 2nd smallest = 2, bound 4.
  ExpectOneStep(PlanRobustMerge(MergeRule::kAverage,
                                {Result(1, 1), Result(2, -2), Result(3, 3),
                                 Result(4, 1000)},
                                0, r, &window),
                {{1, 0.25}, {2, -0.5}, {3, 0.75}, {4, 1.0}});
  EXPECT_EQ(window, (std::vector<float>{1, 2, 3, 1000}));
  // {1, 2, 3, 1000} + {10}: 3rd smallest of 5 = 3, bound 6; the oldest
  // value leaves the window.
  ExpectOneStep(
      PlanRobustMerge(MergeRule::kAverage, {Result(1, 10)}, 0, r, &window),
      {{1, 6.0}});
  EXPECT_EQ(window, (std::vector<float>{2, 3, 1000, 10}));
  // clip_jvp still applies after the rule.
  ExpectOneStep(
      PlanRobustMerge(MergeRule::kAverage, {Result(1, -10)}, 0.5, r, &window),
      {{1, -0.5}});
}

TEST(RobustAverage, CoordinateWiseMedianAndTrimmedMean) {
  const std::vector<float> a = {1, 5, 3}, b = {2, -4, 0}, c = {100, 0, 1};
  std::vector<DenseContribution> three = {{&a, 1}, {&b, 1}, {&c, 100}};
  RobustConfig r;
  r.dense = "median";
  std::vector<float> out;
  ASSERT_TRUE(RobustAverage(r, three, &out).ok());
  EXPECT_EQ(out, (std::vector<float>{2, 0, 1}));
  const std::vector<float> d = {-50, 1, 7};
  std::vector<DenseContribution> four = {{&a, 1}, {&b, 1}, {&c, 1}, {&d, 1}};
  ASSERT_TRUE(RobustAverage(r, four, &out).ok());
  EXPECT_EQ(out, (std::vector<float>{1.5, 0.5, 2}));
  r.dense = "trimmed_mean";
  r.trim = 0.25;  // one at each end of 4 = the median here
  ASSERT_TRUE(RobustAverage(r, four, &out).ok());
  EXPECT_EQ(out, (std::vector<float>{1.5, 0.5, 2}));
  r.trim = 0;  // plain unweighted mean
  ASSERT_TRUE(RobustAverage(r, four, &out).ok());
  EXPECT_EQ(out, (std::vector<float>{13.25, 0.5, 2.75}));
}

TEST(RobustAverage, NormClipToMedianOrFixedBound) {
  const std::vector<float> a = {3, 4}, b = {0, 1}, c = {30, 40};
  std::vector<DenseContribution> in = {{&a, 1}, {&b, 1}, {&c, 2}};
  RobustConfig r;
  r.dense = "norm_clip";
  std::vector<float> out;
  // median norm 5: c becomes (3, 4); weights 1/4, 1/4, 1/2.
  ASSERT_TRUE(RobustAverage(r, in, &out).ok());
  EXPECT_FLOAT_EQ(out[0], 2.25f);
  EXPECT_FLOAT_EQ(out[1], 3.25f);
  r.norm = 1;  // (0.6, 0.8), (0, 1), (0.6, 0.8)
  ASSERT_TRUE(RobustAverage(r, in, &out).ok());
  EXPECT_FLOAT_EQ(out[0], 0.45f);
  EXPECT_FLOAT_EQ(out[1], 0.85f);
}

TEST(RobustAverage, BadInputIsAnError) {
  RobustConfig r;
  r.dense = "median";
  std::vector<float> out;
  EXPECT_FALSE(RobustAverage(r, {}, &out).ok());
  const std::vector<float> a = {1, 2}, b = {1};
  EXPECT_FALSE(RobustAverage(r, {{&a, 1}, {&b, 1}}, &out).ok());
  EXPECT_FALSE(RobustAverage(r, {{&a, 0}}, &out).ok());
  r.dense = "krum";
  EXPECT_FALSE(RobustAverage(r, {{&a, 1}}, &out).ok());
}

// ---- One client sends 1000x: how far does the model move? ----

ModelSpec Tiny() {
  auto spec = GetModelSpec("tiny", {1, 28, 28});
  EXPECT_TRUE(spec.ok());
  return *spec;
}

double Distance(const std::vector<float>& a, const std::vector<float>& b) {
  double sq = 0;
  for (size_t i = 0; i < a.size(); ++i) sq += (a[i] - b[i]) * (a[i] - b[i]);
  return std::sqrt(sq);
}

const std::vector<double> kHonestJvps = {1.0,  0.5, -0.8, 1.1, 0.3,
                                         -0.6, 0.9, -1.2, 0.7, 0.4};

// One forward-gradient round of 10 clients; client 1's d times `scale`.
double JvpMove(const RobustConfig& robust, double scale) {
  Config c;
  c.lr = 1;
  c.merge = MergeRule::kAverage;
  c.robust = robust;
  const ModelSpec spec = Tiny();
  auto s = MakeStrategy(c, spec);
  EXPECT_TRUE(s.ok());
  std::vector<uint32_t> ids;
  for (uint32_t i = 1; i <= 10; ++i) ids.push_back(i);
  const auto tasks = (*s)->ConfigureRound(1, ids);
  std::vector<ClientResult> results;
  for (size_t i = 0; i < ids.size(); ++i) {
    ClientResult r;
    r.client_id = ids[i];
    r.round = 1;
    r.jvps = {kHonestJvps[i] * (i == 0 ? scale : 1.0)};
    r.num_samples = 100;
    EXPECT_TRUE((*s)->ValidateResult(tasks[i], r).ok());
    results.push_back(r);
  }
  std::vector<float> params(spec.NumParams(), 0.0f);
  const std::vector<float> before = params;
  EXPECT_TRUE((*s)->Aggregate(1, tasks, results, &params).ok());
  return Distance(before, params);
}

TEST(RobustMerge, OneJvpOutlierMovesTheModelOnlyWithoutARobustRule) {
  const double honest = JvpMove(Rule("none"), 1.0);
  ASSERT_GT(honest, 0);
  EXPECT_GT(JvpMove(Rule("none"), 1000.0), 50 * honest);
  for (const char* rule : {"median", "trimmed_mean", "quantile_clip"}) {
    const double moved = JvpMove(Rule(rule), 1000.0);
    EXPECT_LT(moved, 3 * honest) << rule;
    EXPECT_GT(moved, 0) << rule;
  }
}

// One FedAvg round of 10 clients with pseudo-random deltas; client 1's delta
// times `scale`.
double DenseMove(const RobustConfig& robust, double scale) {
  Config c;
  c.estimator = "fedavg";
  c.robust = robust;
  const ModelSpec spec = Tiny();
  auto s = MakeStrategy(c, spec);
  EXPECT_TRUE(s.ok());
  const size_t n = static_cast<size_t>(spec.NumParams());
  std::vector<uint32_t> ids;
  for (uint32_t i = 1; i <= 10; ++i) ids.push_back(i);
  const auto tasks = (*s)->ConfigureRound(1, ids);
  std::vector<ClientResult> results;
  uint32_t state = 12345;
  for (size_t i = 0; i < ids.size(); ++i) {
    ClientResult r;
    r.client_id = ids[i];
    r.round = 1;
    r.num_samples = 100;
    for (size_t j = 0; j < n; ++j) {
      state = state * 1664525u + 1013904223u;
      const float u = 0.01f * (static_cast<float>(state >> 8) / (1 << 24)) +
                      0.005f;  // a shared drift plus noise
      r.update.push_back(static_cast<float>(u * (i == 0 ? scale : 1.0)));
    }
    results.push_back(r);
  }
  std::vector<float> params(n, 0.0f);
  const std::vector<float> before = params;
  EXPECT_TRUE((*s)->Aggregate(1, tasks, results, &params).ok());
  return Distance(before, params);
}

TEST(RobustMerge, OneDenseOutlierMovesTheModelOnlyWithoutARobustRule) {
  RobustConfig none;
  const double honest = DenseMove(none, 1.0);
  ASSERT_GT(honest, 0);
  EXPECT_GT(DenseMove(none, 1000.0), 50 * honest);
  for (const char* rule : {"median", "trimmed_mean", "norm_clip"}) {
    RobustConfig r;
    r.dense = rule;
    const double moved = DenseMove(r, 1000.0);
    EXPECT_LT(moved, 1.5 * honest) << rule;
    EXPECT_GT(moved, 0.5 * honest) << rule;
  }
}

// ---- The quantile window across a checkpoint ----

std::vector<ClientResult> JvpRound(const std::vector<TaskSpec>& tasks,
                                   int64_t round) {
  std::vector<ClientResult> out;
  for (size_t i = 0; i < tasks.size(); ++i) {
    ClientResult r;
    r.client_id = tasks[i].client_id;
    r.round = round;
    r.jvps = {std::sin(0.7 * round + 1.3 * i) * (i == 2 ? 50 : 1)};
    r.num_samples = 10;
    out.push_back(r);
  }
  return out;
}

TEST(RobustMerge, QuantileWindowSurvivesACheckpointBitForBit) {
  Config c;
  c.lr = 0.1;
  c.momentum = 0.5;
  c.robust = Rule("quantile_clip");
  c.robust.window = 7;
  const ModelSpec spec = Tiny();
  auto a = MakeStrategy(c, spec);
  ASSERT_TRUE(a.ok());
  const std::vector<uint32_t> ids = {1, 2, 3, 4};
  std::vector<float> params(spec.NumParams(), 0.0f);
  for (int64_t round = 1; round <= 3; ++round) {
    const auto tasks = (*a)->ConfigureRound(round, ids);
    ASSERT_TRUE(
        (*a)->Aggregate(round, tasks, JvpRound(tasks, round), &params).ok());
  }
  const StrategyState saved = (*a)->SaveState();
  bool has_window = false;
  for (const auto& [name, values] : saved) {
    if (name == "robust.abs_jvp_window") {
      has_window = true;
      EXPECT_EQ(values.size(), 7u);
    }
  }
  EXPECT_TRUE(has_window);
  auto b = MakeStrategy(c, spec);
  ASSERT_TRUE(b.ok());
  ASSERT_TRUE((*b)->LoadState(saved).ok());
  std::vector<float> pa = params, pb = params;
  for (int64_t round = 4; round <= 6; ++round) {
    const auto tasks = (*a)->ConfigureRound(round, ids);
    const auto results = JvpRound(tasks, round);
    ASSERT_TRUE((*a)->Aggregate(round, tasks, results, &pa).ok());
    ASSERT_TRUE((*b)->Aggregate(round, tasks, results, &pb).ok());
  }
  EXPECT_EQ(pa, pb);
  // A fresh strategy without the window merges differently.
  auto fresh = MakeStrategy(c, spec);
  ASSERT_TRUE(fresh.ok());
  StrategyState momentum_only;
  for (const auto& e : saved) {
    if (e.first == "sgd.momentum") momentum_only.push_back(e);
  }
  ASSERT_TRUE((*fresh)->LoadState(momentum_only).ok());
  std::vector<float> pc = params;
  for (int64_t round = 4; round <= 6; ++round) {
    const auto tasks = (*fresh)->ConfigureRound(round, ids);
    ASSERT_TRUE(
        (*fresh)->Aggregate(round, tasks, JvpRound(tasks, round), &pc).ok());
  }
  EXPECT_NE(pa, pc);
}

TEST(RobustMerge, LoadStateRefusesAWindowThatDoesNotFit) {
  Config c;
  c.robust = Rule("quantile_clip");
  c.robust.window = 3;
  auto s = MakeStrategy(c, Tiny());
  ASSERT_TRUE(s.ok());
  EXPECT_FALSE((*s)->LoadState({{"robust.abs_jvp_window", {1, 2, 3, 4}}}).ok());
  EXPECT_TRUE((*s)->LoadState({{"robust.abs_jvp_window", {1, 2, 3}}}).ok());
  Config plain;
  auto p = MakeStrategy(plain, Tiny());
  ASSERT_TRUE(p.ok());
  EXPECT_FALSE((*p)->LoadState({{"robust.abs_jvp_window", {1}}}).ok());
}

}  // namespace
}  // namespace fedfwd
