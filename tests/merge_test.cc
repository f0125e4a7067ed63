#include "server/merge.h"

#include <cstdint>
#include <tuple>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fedfwd {
namespace {

TangentKey KeyFor(uint32_t client, uint32_t index = 0) {
  TangentKey k;
  k.run_seed = 1;
  k.round = 9;
  k.client = client;
  k.index = index;
  k.type = TangentDistribution::kNormal;
  return k;
}

JvpContribution Result(uint32_t client, std::vector<double> jvps,
                       int64_t samples) {
  JvpContribution c;
  c.client_id = client;
  for (uint32_t i = 0; i < jvps.size(); ++i)
    c.keys.push_back(KeyFor(client, i));
  c.jvps = std::move(jvps);
  c.num_samples = samples;
  return c;
}

// Clients 1, 2, 3 with jvps {2, -4, 1} and samples {10, 30, 60}, handed over
// out of order.
std::vector<JvpContribution> ThreeClients() {
  return {Result(3, {1.0}, 60), Result(1, {2.0}, 10), Result(2, {-4.0}, 30)};
}

// Checks one step's (client, index, coef) terms in order.
void ExpectStep(
    const GradientStep& step,
    const std::vector<std::tuple<uint32_t, uint32_t, double>>& want) {
  ASSERT_EQ(step.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(step[i].key.client, std::get<0>(want[i])) << "term " << i;
    EXPECT_EQ(step[i].key.index, std::get<1>(want[i])) << "term " << i;
    EXPECT_EQ(step[i].key.round, 9) << "term " << i;
    EXPECT_EQ(step[i].key.run_seed, 1u) << "term " << i;
    EXPECT_EQ(step[i].key.type, TangentDistribution::kNormal) << "term " << i;
    EXPECT_DOUBLE_EQ(step[i].coef, std::get<2>(want[i])) << "term " << i;
  }
}

TEST(PlanMerge, NaiveIsOneStepPerClientInIdOrder) {
  const auto steps = PlanMerge(MergeRule::kNaive, ThreeClients(), 0);
  ASSERT_EQ(steps.size(), 3u);
  ExpectStep(steps[0], {{1, 0, 2.0}});
  ExpectStep(steps[1], {{2, 0, -4.0}});
  ExpectStep(steps[2], {{3, 0, 1.0}});
}

TEST(PlanMerge, AverageDividesByClientCount) {
  const auto steps = PlanMerge(MergeRule::kAverage, ThreeClients(), 0);
  ASSERT_EQ(steps.size(), 1u);
  ExpectStep(steps[0], {{1, 0, 2.0 / 3}, {2, 0, -4.0 / 3}, {3, 0, 1.0 / 3}});
}

TEST(PlanMerge, WeightedUsesSampleShares) {
  // N = 100: weights 0.1, 0.3, 0.6.
  const auto steps = PlanMerge(MergeRule::kWeighted, ThreeClients(), 0);
  ASSERT_EQ(steps.size(), 1u);
  ExpectStep(steps[0], {{1, 0, 0.2}, {2, 0, -1.2}, {3, 0, 0.6}});
}

TEST(PlanMerge, WeightedWithNoSamplesFallsBackToAverage) {
  std::vector<JvpContribution> r = {Result(2, {3.0}, 0), Result(1, {1.0}, 0)};
  const auto steps = PlanMerge(MergeRule::kWeighted, r, 0);
  ASSERT_EQ(steps.size(), 1u);
  ExpectStep(steps[0], {{1, 0, 0.5}, {2, 0, 1.5}});
}

TEST(PlanMerge, ClipBoundsEachJvpBeforeWeighting) {
  // clip 1.5: jvps become {1.5, -1.5, 1}.
  ExpectStep(PlanMerge(MergeRule::kNaive, ThreeClients(), 1.5)[1],
             {{2, 0, -1.5}});
  auto avg = PlanMerge(MergeRule::kAverage, ThreeClients(), 1.5);
  ASSERT_EQ(avg.size(), 1u);
  ExpectStep(avg[0], {{1, 0, 0.5}, {2, 0, -0.5}, {3, 0, 1.0 / 3}});
  auto weighted = PlanMerge(MergeRule::kWeighted, ThreeClients(), 1.5);
  ASSERT_EQ(weighted.size(), 1u);
  ExpectStep(weighted[0], {{1, 0, 0.15}, {2, 0, -0.45}, {3, 0, 0.6}});
}

TEST(PlanMerge, ClipZeroOrNegativeIsOff) {
  for (double clip : {0.0, -1.0}) {
    auto steps = PlanMerge(MergeRule::kAverage, {Result(1, {100.0}, 1)}, clip);
    ASSERT_EQ(steps.size(), 1u);
    ExpectStep(steps[0], {{1, 0, 100.0}});
  }
}

TEST(PlanMerge, InputOrderDoesNotMatter) {
  std::vector<JvpContribution> a = ThreeClients();
  std::vector<JvpContribution> b = {a[2], a[0], a[1]};
  std::vector<JvpContribution> c = {a[1], a[2], a[0]};
  for (MergeRule rule :
       {MergeRule::kNaive, MergeRule::kAverage, MergeRule::kWeighted}) {
    const auto sa = PlanMerge(rule, a, 0.7);
    for (const auto& other : {b, c}) {
      const auto so = PlanMerge(rule, other, 0.7);
      ASSERT_EQ(sa.size(), so.size());
      for (size_t s = 0; s < sa.size(); ++s) {
        ASSERT_EQ(sa[s].size(), so[s].size());
        for (size_t t = 0; t < sa[s].size(); ++t) {
          EXPECT_EQ(sa[s][t].key.client, so[s][t].key.client);
          EXPECT_EQ(sa[s][t].coef, so[s][t].coef);
        }
      }
    }
  }
}

TEST(PlanMerge, SeveralTangentsPerResultAreAveraged) {
  // Client 1: jvps {1, 3} over tangents 0 and 1; client 2: jvp {2}.
  std::vector<JvpContribution> r = {Result(2, {2.0}, 10),
                                    Result(1, {1.0, 3.0}, 30)};
  auto naive = PlanMerge(MergeRule::kNaive, r, 0);
  ASSERT_EQ(naive.size(), 2u);
  ExpectStep(naive[0], {{1, 0, 0.5}, {1, 1, 1.5}});
  ExpectStep(naive[1], {{2, 0, 2.0}});

  auto avg = PlanMerge(MergeRule::kAverage, r, 0);
  ASSERT_EQ(avg.size(), 1u);
  ExpectStep(avg[0], {{1, 0, 0.25}, {1, 1, 0.75}, {2, 0, 1.0}});

  auto weighted = PlanMerge(MergeRule::kWeighted, r, 0);  // weights .75, .25
  ASSERT_EQ(weighted.size(), 1u);
  ExpectStep(weighted[0], {{1, 0, 0.375}, {1, 1, 1.125}, {2, 0, 0.5}});

  // Clipping applies to each tangent's scalar.
  auto clipped = PlanMerge(MergeRule::kNaive, r, 2.0);
  ExpectStep(clipped[0], {{1, 0, 0.5}, {1, 1, 1.0}});
}

// tangent.layer_counts: a result's keys of one parameter mask are averaged
// among themselves (each group an unbiased estimate of its parameters), so
// a group of 1 key keeps its whole value and a group of 3 a third each.
TEST(PlanMerge, KeysOfEachParameterMaskAreAveragedWithinTheirGroup) {
  JvpContribution a = Result(1, {3.0, 6.0, 9.0, 12.0}, 10);
  a.keys[0].param_mask = 0b0011;
  for (int k = 1; k < 4; ++k) a.keys[k].param_mask = 0b1100;
  JvpContribution b = a;
  b.client_id = 2;
  for (auto& key : b.keys) key.client = 2;
  b.num_samples = 30;
  auto avg = PlanMerge(MergeRule::kAverage, {a, b}, 0);
  ASSERT_EQ(avg.size(), 1u);
  ExpectStep(avg[0], {{1, 0, 1.5},
                      {1, 1, 1.0},
                      {1, 2, 1.5},
                      {1, 3, 2.0},
                      {2, 0, 1.5},
                      {2, 1, 1.0},
                      {2, 2, 1.5},
                      {2, 3, 2.0}});
  auto weighted = PlanMerge(MergeRule::kWeighted, {a, b}, 0);  // .25, .75
  ExpectStep(weighted[0], {{1, 0, 0.75},
                           {1, 1, 0.5},
                           {1, 2, 0.75},
                           {1, 3, 1.0},
                           {2, 0, 2.25},
                           {2, 1, 1.5},
                           {2, 2, 2.25},
                           {2, 3, 3.0}});
}

TEST(PlanMerge, SingleClientIsTheSameForEveryRule) {
  for (MergeRule rule :
       {MergeRule::kNaive, MergeRule::kAverage, MergeRule::kWeighted}) {
    auto steps = PlanMerge(rule, {Result(4, {-0.25}, 64)}, 0);
    ASSERT_EQ(steps.size(), 1u);
    ExpectStep(steps[0], {{4, 0, -0.25}});
  }
}

TEST(PlanMerge, EmptyInputGivesNoSteps) {
  for (MergeRule rule :
       {MergeRule::kNaive, MergeRule::kAverage, MergeRule::kWeighted}) {
    EXPECT_TRUE(PlanMerge(rule, {}, 0).empty());
    EXPECT_TRUE(PlanMerge(rule, {}, 1.0).empty());
  }
}

// --- FedAvg / FedSGD dense averages. ---

TEST(WeightedAverage, HandComputedExample) {
  // Three clients with 100, 300 and 600 samples: weights 0.1, 0.3, 0.6.
  const std::vector<float> a = {1.0f, -2.0f, 0.0f};
  const std::vector<float> b = {3.0f, 0.0f, 10.0f};
  const std::vector<float> c = {-1.0f, 4.0f, 5.0f};
  std::vector<float> out;
  ASSERT_TRUE(WeightedAverage({{&a, 100}, {&b, 300}, {&c, 600}}, &out).ok());
  // 0.1*1 + 0.3*3 + 0.6*-1 = 0.4; 0.1*-2 + 0 + 0.6*4 = 2.2;
  // 0 + 0.3*10 + 0.6*5 = 6.0
  ASSERT_EQ(out.size(), 3u);
  EXPECT_FLOAT_EQ(out[0], 0.4f);
  EXPECT_FLOAT_EQ(out[1], 2.2f);
  EXPECT_FLOAT_EQ(out[2], 6.0f);
}

TEST(WeightedAverage, EqualSamplesIsThePlainMean) {
  const std::vector<float> a = {2.0f}, b = {4.0f};
  std::vector<float> out;
  ASSERT_TRUE(WeightedAverage({{&a, 7}, {&b, 7}}, &out).ok());
  EXPECT_FLOAT_EQ(out[0], 3.0f);
}

TEST(WeightedAverage, BadInputIsAnError) {
  const std::vector<float> a = {1.0f, 2.0f}, b = {1.0f};
  std::vector<float> out;
  EXPECT_FALSE(WeightedAverage({}, &out).ok());
  EXPECT_FALSE(WeightedAverage({{&a, 1}, {&b, 1}}, &out).ok());
  EXPECT_FALSE(WeightedAverage({{&a, 0}}, &out).ok());
  EXPECT_FALSE(WeightedAverage({{&a, -5}}, &out).ok());
}

// Shared-tangent rounds: the clients' terms on one key become one term with
// the coefficients' sum (s_k / N under the weighted rule); keys, masks and
// naive's separate steps that differ stay apart, in first-seen order.
TEST(MergeSharedKeys, SumsEachKeysCoefficientsOverTheClients) {
  // Three clients on the shared keys (client slot 0), two tangents each.
  std::vector<JvpContribution> results;
  const std::vector<std::vector<double>> d = {{2, 1}, {-4, 3}, {1, 0.5}};
  const std::vector<int64_t> n = {10, 30, 60};
  for (uint32_t c = 0; c < 3; ++c) {
    JvpContribution r;
    r.client_id = c + 1;
    r.keys = {KeyFor(0, 0), KeyFor(0, 1)};
    r.jvps = d[c];
    r.num_samples = n[c];
    results.push_back(r);
  }
  const auto weighted =
      PlanMerge(MergeRule::kWeighted, results, /*clip=*/0, /*masks=*/{});
  ASSERT_EQ(weighted.size(), 1u);
  ASSERT_EQ(weighted[0].size(), 6u);
  const GradientStep merged = MergeSharedKeys(weighted);
  // Key k: sum_i (n_i / N) d_ik / K.
  ExpectStep(merged, {{0, 0, (10 * 2 - 30 * 4 + 60 * 1) / 100.0 / 2},
                      {0, 1, (10 * 1 + 30 * 3 + 60 * 0.5) / 100.0 / 2}});
  // naive: a step per client; merged, the same two keys.
  const auto naive = PlanMerge(MergeRule::kNaive, results, 0, {});
  ASSERT_EQ(naive.size(), 3u);
  ExpectStep(MergeSharedKeys(naive),
             {{0, 0, (2 - 4 + 1) / 2.0}, {0, 1, (1 + 3 + 0.5) / 2.0}});
  // Different restrict masks or keys are different terms.
  GradientStep mixed = {{KeyFor(0, 0), 1.0, 0},
                        {KeyFor(0, 0), 2.0, 4},
                        {KeyFor(5, 0), 3.0, 0},
                        {KeyFor(0, 0), 0.5, 4}};
  const GradientStep m = MergeSharedKeys({mixed});
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m[0].coef, 1.0);
  EXPECT_EQ(m[1].restrict_mask, 4u);
  EXPECT_EQ(m[1].coef, 2.5);
  EXPECT_EQ(m[2].key.client, 5u);
  EXPECT_TRUE(MergeSharedKeys({}).empty());
}

}  // namespace
}  // namespace fedfwd
