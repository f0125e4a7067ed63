// The forward-gradient family: multi-tangent projection, normalized and
// split tangents, finite differences (float32 and fixed point), the per-layer
// merge of weight splitting, outlier skipping and Adam on the coordinator.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <numeric>
#include <vector>

#include "common/config.h"
#include "common/finite_diff.h"
#include "common/forward_ad.h"
#include "common/model.h"
#include "common/rng.h"
#include "common/torch_model.h"
#include "server/merge.h"
#include "server/optimizer.h"
#include "server/strategy.h"

namespace fedfwd {
namespace {

std::vector<float> Flat(const TangentKey& key,
                        const std::vector<int64_t>& sizes) {
  const int64_t n = std::accumulate(sizes.begin(), sizes.end(), int64_t{0});
  std::vector<float> v(static_cast<size_t>(n));
  GenerateTangentFlat(key, sizes, v.data());
  return v;
}

double Dot(const std::vector<double>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

TangentKey Key(uint32_t index, bool normalized = false, uint64_t mask = 0) {
  TangentKey k;
  k.run_seed = 5;
  k.round = 9;
  k.client = 2;
  k.index = index;
  k.param_mask = mask;
  k.normalized = normalized;
  return k;
}

// sum_k c_k v_k over the model.
std::vector<double> Combine(const std::vector<TangentKey>& keys,
                            const std::vector<double>& c,
                            const std::vector<int64_t>& sizes) {
  std::vector<double> out;
  for (size_t k = 0; k < keys.size(); ++k) {
    const std::vector<float> v = Flat(keys[k], sizes);
    out.resize(v.size(), 0.0);
    for (size_t i = 0; i < v.size(); ++i) out[i] += c[k] * v[i];
  }
  return out;
}

TEST(Projection, RecoversTheGradientWhenTheTangentsSpanTheSpace) {
  const std::vector<int64_t> sizes = {3, 2};  // 5 entries, 5 tangents
  std::vector<TangentKey> keys;
  for (uint32_t k = 0; k < 5; ++k) keys.push_back(Key(k));
  const std::vector<double> g = {0.5, -1.25, 2.0, 0.125, -3.0};
  std::vector<double> d;
  for (const auto& key : keys) d.push_back(Dot(g, Flat(key, sizes)));
  auto c = ProjectionCoefficients(keys, d, sizes);
  ASSERT_TRUE(c.ok()) << c.status();
  // m / K = 1: the estimate is the projection itself, which is g.
  const std::vector<double> est = Combine(keys, *c, sizes);
  for (size_t i = 0; i < g.size(); ++i) EXPECT_NEAR(est[i], g[i], 1e-9);
}

TEST(Projection, RecoversAGradientInTheSpanUpToTheScale) {
  const std::vector<int64_t> sizes = {700, 300};
  const std::vector<TangentKey> keys = {Key(0, true), Key(1, true), Key(2)};
  // g in span(v0, v1, v2), with normalized and raw tangents mixed.
  const std::vector<double> a = {0.3, -1.2, 0.05};
  const std::vector<double> g = Combine(keys, a, sizes);
  std::vector<double> d;
  for (const auto& key : keys) d.push_back(Dot(g, Flat(key, sizes)));
  auto c = ProjectionCoefficients(keys, d, sizes, /*threads=*/2);
  ASSERT_TRUE(c.ok()) << c.status();
  const double scale = 1000.0 / 3.0;  // m / K
  for (size_t k = 0; k < a.size(); ++k) {
    EXPECT_NEAR((*c)[k] / scale, a[k], 1e-7) << k;
  }
}

TEST(Projection, GramMatchesDotProductsAndIgnoresThreads) {
  const std::vector<int64_t> sizes = {70000, 1000, 5};  // crosses slices
  const std::vector<TangentKey> keys = {Key(0), Key(1, true), Key(2, false, 2)};
  const std::vector<double> g1 = TangentGram(keys, sizes, 1);
  const std::vector<double> g3 = TangentGram(keys, sizes, 3);
  EXPECT_EQ(g1, g3);
  for (size_t a = 0; a < keys.size(); ++a) {
    const std::vector<float> va = Flat(keys[a], sizes);
    for (size_t b = 0; b < keys.size(); ++b) {
      const std::vector<float> vb = Flat(keys[b], sizes);
      double dot = 0;
      for (size_t i = 0; i < va.size(); ++i) {
        dot += static_cast<double>(va[i]) * vb[i];
      }
      EXPECT_NEAR(g1[a * keys.size() + b], dot, 1e-6 * (1 + std::abs(dot)));
    }
  }
}

TEST(Projection, RepeatedTangentsAreSolvedWithARidge) {
  const std::vector<int64_t> sizes = {100};
  const std::vector<TangentKey> keys = {Key(0), Key(0)};
  const std::vector<float> v = Flat(keys[0], sizes);
  std::vector<double> g(v.begin(), v.end());
  const double d = Dot(g, v);
  auto c = ProjectionCoefficients(keys, {d, d}, sizes);
  ASSERT_TRUE(c.ok()) << c.status();
  // Both halves of g: c0 + c1 = (m / K) * 1.
  EXPECT_NEAR((*c)[0] + (*c)[1], 50.0, 1e-4);
  EXPECT_FALSE(ProjectionCoefficients(keys, {d}, sizes).ok());
}

TEST(Tangent, NormalizedHasNormSqrtMAndKeepsTheDirection) {
  const std::vector<int64_t> sizes = {1000, 24};
  const std::vector<float> raw = Flat(Key(3), sizes);
  const std::vector<float> v = Flat(Key(3, true), sizes);
  double sq = 0;
  for (float x : v) sq += static_cast<double>(x) * x;
  EXPECT_NEAR(sq, 1024.0, 1e-2);
  const double ratio = v[0] / raw[0];
  for (size_t i = 0; i < v.size(); i += 97) {
    EXPECT_NEAR(v[i], ratio * raw[i], 1e-5 * (1 + std::abs(v[i])));
  }
  EXPECT_EQ(TangentScale(Key(3, true), sizes, 1),
            TangentScale(Key(3, true), sizes, 4));
  TangentKey rad = Key(3, true);
  rad.type = TangentDistribution::kRademacher;
  EXPECT_EQ(TangentScale(rad, sizes), 1.0f);
}

TEST(Tangent, MaskZeroesTheOtherParametersAndKeepsValues) {
  const std::vector<int64_t> sizes = {10, 20, 30};
  const std::vector<float> full = Flat(Key(1), sizes);
  const std::vector<float> masked = Flat(Key(1, false, 0b101), sizes);
  for (size_t i = 0; i < 60; ++i) {
    const bool kept = i < 10 || i >= 30;
    EXPECT_EQ(masked[i], kept ? full[i] : 0.0f) << i;
  }
  EXPECT_EQ(PerturbedEntries(Key(1, false, 0b101), sizes), 40);
  // restrict_mask adds one parameter of the tangent only.
  std::vector<float> acc(60, 0.0f);
  AddScaledTangentFlat(Key(1, false, 0b101), sizes, 2.0f, acc.data(), 1,
                       /*restrict_mask=*/0b100);
  for (size_t i = 0; i < 60; ++i) {
    EXPECT_EQ(acc[i], i >= 30 ? 2.0f * full[i] : 0.0f) << i;
  }
  // A slice equals that range of the whole parameter.
  std::vector<float> slice(7);
  GenerateTangentSlice(Key(1), 2, 13, slice.data(), 7);
  for (size_t i = 0; i < 7; ++i) EXPECT_EQ(slice[i], full[30 + 13 + i]);
}

TEST(Split, LayerMasksGroupWeightAndBias) {
  EXPECT_EQ(LayerMasks({"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias",
                        "out.weight", "out.bias"}),
            (std::vector<uint64_t>{0b11, 0b1100, 0b110000}));
}

TEST(Split, PerLayerMergeAveragesOverTheClientsThatPerturbedALayer) {
  // Three layers (one parameter each); clients 1 and 2 perturbed layer 0,
  // client 3 layers 1 and 2.
  const std::vector<uint64_t> layers = {0b001, 0b010, 0b100};
  std::vector<JvpContribution> results(3);
  const uint64_t masks[3] = {0b001, 0b001, 0b110};
  for (int i = 0; i < 3; ++i) {
    results[i].client_id = static_cast<uint32_t>(i + 1);
    results[i].keys = {Key(0, false, masks[i])};
    results[i].keys[0].client = static_cast<uint32_t>(i + 1);
    results[i].jvps = {static_cast<double>(i + 1)};
    results[i].num_samples = (i + 1) * 10;
  }
  auto steps = PlanMerge(MergeRule::kAverage, results, 0, layers);
  ASSERT_EQ(steps.size(), 1u);
  // Layer 0: d1/2 and d2/2; layers 1 and 2: d3 at full weight each.
  ASSERT_EQ(steps[0].size(), 4u);
  EXPECT_EQ(steps[0][0].coef, 0.5);
  EXPECT_EQ(steps[0][0].restrict_mask, 0b001u);
  EXPECT_EQ(steps[0][1].coef, 1.0);
  EXPECT_EQ(steps[0][2].coef, 3.0);
  EXPECT_EQ(steps[0][2].restrict_mask, 0b010u);
  EXPECT_EQ(steps[0][3].coef, 3.0);
  EXPECT_EQ(steps[0][3].restrict_mask, 0b100u);
  // Weighted: layer 0 by 10 : 20.
  steps = PlanMerge(MergeRule::kWeighted, results, 0, layers);
  EXPECT_NEAR(steps[0][0].coef, 1.0 / 3.0, 1e-15);
  EXPECT_NEAR(steps[0][1].coef, 2.0 * 2.0 / 3.0, 1e-15);
  EXPECT_EQ(steps[0][2].coef, 3.0);

  // Applied, the step moves each client's layers only, by its own tangent.
  const std::vector<int64_t> sizes = {4, 3, 2};
  std::vector<float> params(9, 0.0f);
  SgdOptimizer sgd(sizes, 0);
  sgd.Apply(steps[0], 1.0, params.data());
  const std::vector<float> v1 = Flat(results[0].keys[0], sizes);
  const std::vector<float> v2 = Flat(results[1].keys[0], sizes);
  const std::vector<float> v3 = Flat(results[2].keys[0], sizes);
  for (int i = 0; i < 4; ++i) {
    EXPECT_NEAR(params[i], -(v1[i] / 3.0 + 4.0 / 3.0 * v2[i]), 1e-5);
  }
  for (int i = 4; i < 9; ++i) EXPECT_NEAR(params[i], -3.0 * v3[i], 1e-5);
}

TEST(Split, StrategyAssignsLayersRoundRobinAndCoversThemAll) {
  Config c;
  c.model = "mlp_small";
  c.tangent.split = "layers";
  c.tangent.count = 2;
  auto spec = GetModelSpec("mlp_small", {1, 28, 28});
  ASSERT_TRUE(spec.ok());
  auto strategy = MakeStrategy(c, *spec, 1);
  ASSERT_TRUE(strategy.ok()) << strategy.status();
  std::vector<std::string> names;
  for (const auto& p : spec->params) names.push_back(p.name);
  const std::vector<uint64_t> layers = LayerMasks(names);
  ASSERT_GE(layers.size(), 2u);
  for (int64_t round = 1; round <= 3; ++round) {
    const auto tasks = (*strategy)->ConfigureRound(round, {1, 2, 3, 4, 5});
    uint64_t covered = 0;
    for (const auto& t : tasks) {
      ASSERT_EQ(t.tangents.size(), 2u);
      const uint64_t m = t.tangents[0].param_mask;
      EXPECT_EQ(t.tangents[1].param_mask, m);
      // Exactly one layer each (blocks_per_client 1).
      EXPECT_EQ(std::count(layers.begin(), layers.end(), m), 1);
      covered |= m;
    }
    uint64_t all = 0;
    for (uint64_t l : layers) all |= l;
    EXPECT_EQ(covered, all) << "round " << round;
  }
  // Without splitting every key perturbs everything.
  c.tangent.split = "none";
  auto plain = MakeStrategy(c, *spec, 1);
  ASSERT_TRUE(plain.ok());
  for (const auto& t : (*plain)->ConfigureRound(1, {1, 2})) {
    EXPECT_EQ(t.tangents[0].param_mask, 0u);
  }
}

class FiniteDifferenceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto spec = GetModelSpec("mlp_small", {1, 28, 28});
    ASSERT_TRUE(spec.ok());
    spec_ = *spec;
    flat_ = InitialParams(spec_, 3);
    params_ = ParamViews(spec_, flat_.data());
    for (uint32_t k = 0; k < 3; ++k) {
      vflat_.push_back(std::vector<float>(flat_.size()));
      GenerateTangentFlat(Key(k, /*normalized=*/true), spec_.ParamSizes(),
                          vflat_.back().data());
      tangents_.push_back(ParamViews(spec_, vflat_.back().data()));
    }
    torch::manual_seed(1);
    x_ = torch::rand({64, 1, 28, 28});
    y_ = torch::randint(0, 10, {64}, torch::kLong);
  }
  ModelSpec spec_;
  std::vector<float> flat_;
  std::vector<std::vector<float>> vflat_;
  std::vector<at::Tensor> params_;
  std::vector<std::vector<at::Tensor>> tangents_;
  at::Tensor x_, y_;
};

// Measured on this test's batch: the central difference converges to the
// exact JVP as eps shrinks (in float64: 0.0761, 0.1190, 0.1207 at eps 1e-3,
// 1e-4, 1e-5 against 0.1225; ReLU kinks crossed by the step eps * v, |v| =
// sqrt(P), are the error), and float32 rounding of the two losses takes over
// below eps 1e-4.
TEST_F(FiniteDifferenceTest, MatchesTheJvpInFloat32) {
  auto jvp = ComputeJvp(spec_, params_, tangents_, x_, y_);
  ASSERT_TRUE(jvp.ok()) << jvp.status();
  auto fd =
      ComputeFiniteDifference(spec_, params_, tangents_, x_, y_, 1e-4, nullptr);
  ASSERT_TRUE(fd.ok()) << fd.status();
  EXPECT_NEAR(fd->loss, jvp->loss, 1e-6);
  ASSERT_EQ(fd->jvps.size(), 3u);
  for (size_t k = 0; k < 3; ++k) {
    EXPECT_NEAR(fd->jvps[k], jvp->jvps[k], 0.1 * std::abs(jvp->jvps[k]) + 5e-3)
        << k;
  }
  // In float64 and a smaller step, the O(eps^2) and kink errors shrink.
  std::vector<at::Tensor> p64, t64;
  for (auto& t : params_) p64.push_back(t.to(at::kDouble));
  for (auto& t : tangents_[0]) t64.push_back(t.to(at::kDouble));
  auto fd64 = ComputeFiniteDifference(spec_, p64, {t64}, x_.to(at::kDouble), y_,
                                      1e-5, nullptr);
  ASSERT_TRUE(fd64.ok()) << fd64.status();
  EXPECT_NEAR(fd64->jvps[0], jvp->jvps[0], 0.03 * std::abs(jvp->jvps[0]));
  EXPECT_FALSE(
      ComputeFiniteDifference(spec_, params_, tangents_, x_, y_, 0, nullptr)
          .ok());
}

TEST_F(FiniteDifferenceTest, FixedPointStaysCloseToFloat32) {
  const FixedPointSpec fixed;
  auto q = ForwardFixedPoint(spec_, params_, x_, fixed);
  ASSERT_TRUE(q.ok()) << q.status();
  const at::Tensor ref = Forward(spec_, params_, x_);
  const double rel = ((*q - ref).abs().max() / ref.abs().max()).item<double>();
  EXPECT_LT(rel, 0.05);
  EXPECT_GT(rel, 0.0);  // it did quantize
  auto fd =
      ComputeFiniteDifference(spec_, params_, tangents_, x_, y_, 1e-2, &fixed);
  auto jvp = ComputeJvp(spec_, params_, tangents_, x_, y_);
  ASSERT_TRUE(fd.ok() && jvp.ok());
  // The fixed-point estimate agrees with the exact JVP in sign and rough size
  // on most tangents (quantization noise is the accuracy cost reported in
  // bench/RESULTS.md).
  for (size_t k = 0; k < 3; ++k) {
    EXPECT_NEAR(fd->jvps[k], jvp->jvps[k], 0.5 * std::abs(jvp->jvps[k]) + 0.05)
        << k;
  }
}

TEST(FakeQuantize, UsesASymmetricGridAndKeepsTheMaximum) {
  const at::Tensor x = torch::tensor({-1.0f, 0.0f, 0.3f, 0.5f, 2.0f});
  const at::Tensor q = FakeQuantize(x, 8);
  const float scale = 2.0f / 127;
  EXPECT_FLOAT_EQ(q[4].item<float>(), 2.0f);
  EXPECT_FLOAT_EQ(q[1].item<float>(), 0.0f);
  for (int i = 0; i < 5; ++i) {
    const float v = q[i].item<float>() / scale;
    EXPECT_NEAR(v, std::round(v), 1e-3);
    EXPECT_LE(std::abs(q[i].item<float>() - x[i].item<float>()), scale / 2);
  }
  EXPECT_TRUE(FakeQuantize(torch::zeros({3}), 8).equal(torch::zeros({3})));
}

TEST(Robust, QuantileSkipDropsOutliersInsteadOfClipping) {
  RobustConfig robust;
  robust.rule = "quantile_skip";
  robust.quantile = 0.5;
  robust.multiplier = 2.0;
  std::vector<float> window;
  std::vector<JvpContribution> results(4);
  const double d[4] = {1.0, -1.5, 1.2, 50.0};
  for (int i = 0; i < 4; ++i) {
    results[i].client_id = static_cast<uint32_t>(i + 1);
    results[i].keys = {Key(0)};
    results[i].keys[0].client = static_cast<uint32_t>(i + 1);
    results[i].jvps = {d[i]};
    results[i].num_samples = 1;
  }
  auto steps =
      PlanRobustMerge(MergeRule::kAverage, results, 0, robust, &window);
  ASSERT_EQ(steps.size(), 1u);
  ASSERT_EQ(steps[0].size(), 3u);  // client 4 skipped
  for (const auto& t : steps[0]) EXPECT_NE(t.key.client, 4u);
  EXPECT_NEAR(steps[0][0].coef, 1.0 / 3.0, 1e-15);
  EXPECT_EQ(window.size(), 4u);  // its |d| still joins the window
}

TEST(ForwardStrategy, AdamAndStepClipMoveTheModelAndKeepState) {
  Config c;
  c.model = "tiny";
  c.lr = 0.01;
  c.server_optimizer.type = "adam";
  c.clip_step = 0.5;
  auto spec = GetModelSpec("tiny", {1, 28, 28});
  ASSERT_TRUE(spec.ok());
  auto strategy = MakeStrategy(c, *spec, 1);
  ASSERT_TRUE(strategy.ok());
  std::vector<float> params(static_cast<size_t>(spec->NumParams()), 0.0f);
  const auto tasks = (*strategy)->ConfigureRound(1, {1, 2});
  std::vector<ClientResult> results(2);
  for (int i = 0; i < 2; ++i) {
    results[i].client_id = tasks[i].client_id;
    results[i].round = 1;
    results[i].jvps = {i == 0 ? 1e6 : 2.0};  // huge: the step is clipped
    results[i].num_samples = 10;
    results[i].loss = 2.3;
    ASSERT_TRUE((*strategy)->ValidateResult(tasks[i], results[i]).ok());
  }
  auto report = (*strategy)->Aggregate(1, tasks, results, &params);
  ASSERT_TRUE(report.ok()) << report.status();
  // Adam's first step moves every coordinate by about lr.
  double moved = 0;
  for (float p : params) moved = std::max(moved, std::abs(double{p}));
  EXPECT_GT(moved, 0.005);
  EXPECT_LT(moved, 0.011);
  const StrategyState state = (*strategy)->SaveState();
  ASSERT_EQ(state.size(), 2u);
  EXPECT_EQ(state[0].first, "adam.m");
  auto restored = MakeStrategy(c, *spec, 1);
  ASSERT_TRUE(restored.ok());
  EXPECT_TRUE((*restored)->LoadState(state).ok());
}

TEST(ForwardStrategy, ProjectionStepIsTheProjectedGradient) {
  // With K = P tangents, per-client projection turns each client's d into
  // its exact gradient: the merged step is the mean of the clients' g.
  Config c;
  c.model = "tiny";
  c.tangent.count = 1;
  auto spec = GetModelSpec("logreg", {1, 2, 2});  // 4*10+10 = 50 parameters
  ASSERT_TRUE(spec.ok()) << spec.status();
  c.tangent.count = static_cast<int>(spec->NumParams());
  c.tangent.combine = "projection";
  c.merge = MergeRule::kAverage;
  c.lr = 1.0;
  auto strategy = MakeStrategy(c, *spec, 2);
  ASSERT_TRUE(strategy.ok()) << strategy.status();
  const auto tasks = (*strategy)->ConfigureRound(1, {1, 2});
  const std::vector<int64_t> sizes = spec->ParamSizes();
  std::vector<std::vector<double>> g(2, std::vector<double>(50));
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 50; ++j) g[i][j] = std::sin(1.0 + i * 50 + j);
  }
  std::vector<ClientResult> results(2);
  for (int i = 0; i < 2; ++i) {
    results[i].client_id = tasks[i].client_id;
    results[i].num_samples = 1;
    results[i].loss = 1;
    for (const auto& key : tasks[i].tangents) {
      results[i].jvps.push_back(Dot(g[i], Flat(key, sizes)));
    }
  }
  std::vector<float> params(50, 0.0f);
  ASSERT_TRUE((*strategy)->Aggregate(1, tasks, results, &params).ok());
  for (int j = 0; j < 50; ++j) {
    EXPECT_NEAR(params[j], -(g[0][j] + g[1][j]) / 2, 1e-4) << j;
  }
}

TEST(ForwardConfig, FamilyKeysParseAndAreChecked) {
  auto c = ParseConfig(
      "estimator: fd\nfd: {epsilon: 0.01, precision: fixed}\n"
      "tangent: {count: 4, combine: projection, normalize: true, split: "
      "layers, blocks_per_client: 2}\nclip_step: 3\n"
      "robust: {rule: quantile_skip}\n",
      "/", {});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->fd.precision, "fixed");
  EXPECT_EQ(c->tangent.count, 4);
  EXPECT_EQ(c->tangent.blocks_per_client, 2);
  auto round_trip = ParseConfig(ConfigToYaml(*c), "/", {});
  ASSERT_TRUE(round_trip.ok()) << round_trip.status();
  EXPECT_EQ(round_trip->tangent.combine, "projection");
  EXPECT_FALSE(
      ParseConfig("estimator: fedavg\ntangent: {count: 4}\n", "/", {}).ok());
  EXPECT_FALSE(ParseConfig("tangent: {combine: projection_round, shared_seed: "
                           "true}\n",
                           "/", {})
                   .ok());
  EXPECT_FALSE(ParseConfig("fd: {precision: int4}\n", "/", {}).ok());
}

}  // namespace
}  // namespace fedfwd
