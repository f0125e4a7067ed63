// Rank-one tangents with a shared row factor (TangentKey::shared_u): the
// tangent itself, the thin-product merge and replay, the compact replay
// runs, and the forward-mode route that carries all K keys in one vector.
#include <torch/torch.h>

#include <cmath>
#include <vector>

#include "c10/core/InferenceMode.h"
#include "common/backprop.h"
#include "common/codec.h"
#include "common/config.h"
#include "common/jvp_rules.h"
#include "common/model.h"
#include "common/rng.h"
#include "common/torch_model.h"
#include "gtest/gtest.h"
#include "server/strategy.h"

namespace fedfwd {
namespace {

TangentKey SharedKey(uint32_t index, uint32_t client = 2) {
  TangentKey k{11, 5, client, index, TangentDistribution::kRademacher};
  k.rank_one = true;
  k.shared_u = true;
  return k;
}

// 3x4 matrix, its bias (3), then a 2x3 matrix, its bias (2), a lone vector.
TangentLayout SmallLayout() {
  return TangentLayout({12, 3, 6, 2, 5}, {3, 0, 2, 0, 0});
}

// ComputeJvpRules on `model` (float64, a random batch) against grad . v_k
// from backprop and the materialized tangent, relative error below `rel`.
void ExpectRulesMatchBackprop(const char* model,
                              const std::vector<TangentKey>& keys,
                              int64_t batch, uint64_t seed, double rel) {
  auto spec = GetModelSpec(model, {1, 28, 28});
  ASSERT_TRUE(spec.ok()) << spec.status();
  std::vector<float> flat = InitialParams(*spec, 3);
  std::vector<at::Tensor> params;
  for (auto& t : ParamViews(*spec, flat.data())) {
    params.push_back(t.to(at::kDouble));
  }
  torch::manual_seed(seed);
  at::Tensor x = torch::randn({batch, 1, 28, 28}, torch::kDouble);
  at::Tensor y = torch::randint(0, 10, {batch}, torch::kLong);
  auto jvp = ComputeJvpRules(*spec, params, keys, x, y);
  ASSERT_TRUE(jvp.ok()) << jvp.status();
  std::vector<at::Tensor> leaves;
  for (const auto& p : params) {
    leaves.push_back(p.detach().requires_grad_(true));
  }
  at::Tensor loss =
      torch::nn::functional::cross_entropy(Forward(*spec, leaves, x), y);
  loss.backward();
  EXPECT_NEAR(jvp->loss, loss.item<double>(), 1e-12);
  const TangentLayout layout = spec->Layout();
  for (size_t k = 0; k < keys.size(); ++k) {
    std::vector<float> v(flat.size());
    GenerateTangentFlat(keys[k], layout, v.data());
    auto views = ParamViews(*spec, v.data());
    double dot = 0;
    for (size_t i = 0; i < leaves.size(); ++i) {
      dot += (leaves[i].grad() * views[i].to(at::kDouble)).sum().item<double>();
    }
    ASSERT_NE(dot, 0.0) << k;
    EXPECT_LT(std::abs(jvp->jvps[k] - dot) / std::abs(dot), rel)
        << "key " << k << ": rules " << jvp->jvps[k] << " backprop " << dot;
  }
}

TEST(SharedUTangent, KeysOfAGroupShareUAndBiasesAreUTimesBeta) {
  const TangentLayout layout = SmallLayout();
  std::vector<float> v0(28), v1(28);
  GenerateTangentFlat(SharedKey(0), layout, v0.data());
  GenerateTangentFlat(SharedKey(1), layout, v1.data());
  float u0[3], a0[4], u1[3], a1[4];
  RankOneFactors(SharedKey(0), 0, 3, 4, u0, a0);
  RankOneFactors(SharedKey(1), 0, 3, 4, u1, a1);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(u0[i], u1[i]);
  bool a_differs = false;
  for (int j = 0; j < 4; ++j) a_differs |= a0[j] != a1[j];
  EXPECT_TRUE(a_differs);
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 4; ++j) EXPECT_EQ(v0[i * 4 + j], u0[i] * a0[j]);
    // The bias (tensor 1) is the matrix's extra column u * beta.
    EXPECT_EQ(v0[12 + i], u0[i] * SharedBiasBeta(SharedKey(0), 1));
  }
  EXPECT_EQ(layout.SharedBiasOf(SharedKey(0), 1), 0);
  EXPECT_EQ(layout.SharedBiasOf(SharedKey(0), 3), 2);
  EXPECT_EQ(layout.SharedBiasOf(SharedKey(0), 4), -1);  // no matrix before
  // Another client's group has its own u; a plain rank-one key differs.
  float u2[3], a2[4];
  RankOneFactors(SharedKey(0, 3), 0, 3, 4, u2, a2);
  TangentKey plain = SharedKey(0);
  plain.shared_u = false;
  std::vector<float> vp(28);
  GenerateTangentFlat(plain, layout, vp.data());
  EXPECT_NE(vp, v0);
  EXPECT_FALSE(ValidTangentKey(SharedKey(kSharedUIndex)));
  TangentKey not_rank_one = SharedKey(0);
  not_rank_one.rank_one = false;
  EXPECT_FALSE(ValidTangentKey(not_rank_one));
}

TEST(SharedUTangent, DotsEqualTheMaterializedTangent) {
  const TangentLayout layout = SmallLayout();
  std::vector<float> g(28);
  for (size_t i = 0; i < g.size(); ++i) g[i] = std::sin(0.7 * i + 0.1);
  std::vector<TangentKey> keys;
  for (uint32_t k = 0; k < 5; ++k) keys.push_back(SharedKey(k));
  const std::vector<double> dots = TangentDots(keys, layout, g.data());
  for (size_t k = 0; k < keys.size(); ++k) {
    std::vector<float> v(28);
    GenerateTangentFlat(keys[k], layout, v.data());
    double want = 0;
    for (size_t i = 0; i < v.size(); ++i) want += double(v[i]) * g[i];
    EXPECT_NEAR(dots[k], want, 1e-5) << k;
  }
}

// The thin-product merge: one outer product per group and matrix, the same
// bits at any thread count, equal to the materialized sum within rounding.
TEST(SharedUTangent, ThinProductReplayIsExactAcrossThreadsAndCloseToTheSum) {
  auto spec = GetModelSpec("mlp", {1, 28, 28});
  ASSERT_TRUE(spec.ok());
  const TangentLayout layout = spec->Layout();
  std::vector<SeedTerm> terms;
  for (uint32_t c = 0; c < 3; ++c) {
    for (uint32_t k = 0; k < 64; ++k) {
      terms.push_back({SharedKey(k, c), 1e-3f * float(int(k % 7) - 3), 0});
    }
  }
  std::vector<float> base = InitialParams(*spec, 1);
  std::vector<float> one = base, two = base;
  ApplySeedTerms(terms, layout, one.data(), 1);
  ApplySeedTerms(terms, layout, two.data(), 2);
  EXPECT_EQ(one, two);
  std::vector<double> want(base.begin(), base.end());
  std::vector<float> v(base.size());
  for (const SeedTerm& t : terms) {
    GenerateTangentFlat(t.key, layout, v.data());
    for (size_t i = 0; i < v.size(); ++i) want[i] += double(t.alpha) * v[i];
  }
  double worst = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    worst = std::max(worst, std::abs(want[i] - one[i]));
  }
  EXPECT_LT(worst, 1e-5);
  // Replay of the same runs on another "machine" (a fresh copy, the terms
  // through the compact wire form) gives the same bits.
  google::protobuf::RepeatedPtrField<v1::SeedRun> runs;
  AppendSeedRuns(terms, 9, &runs);
  EXPECT_EQ(runs.size(), 3);  // one run per client group
  std::vector<std::pair<uint64_t, SeedTerm>> back;
  ASSERT_TRUE(ExpandSeedRuns(runs, &back).ok());
  ASSERT_EQ(back.size(), terms.size());
  std::vector<SeedTerm> replay;
  for (const auto& [version, t] : back) {
    EXPECT_EQ(version, 9u);
    replay.push_back(t);
  }
  std::vector<float> three = base;
  ApplySeedTerms(replay, layout, three.data(), 2);
  EXPECT_EQ(three, one);
  EXPECT_LT(SeedRunsWireBytes(terms), terms.size() * 5 + 3 * 48 + 1);
}

TEST(SeedRuns, RoundTripAndRefuseBadRuns) {
  std::vector<SeedTerm> terms = {{SharedKey(0), 0.5f, 0},
                                 {SharedKey(1), -0.25f, 0},
                                 {SharedKey(3), 1.0f, 0},   // gap: new run
                                 {SharedKey(4), 2.0f, 4}};  // mask: new run
  google::protobuf::RepeatedPtrField<v1::SeedRun> runs;
  AppendSeedRuns(terms, 2, &runs);
  ASSERT_EQ(runs.size(), 3);
  std::vector<std::pair<uint64_t, SeedTerm>> back;
  ASSERT_TRUE(ExpandSeedRuns(runs, &back).ok());
  ASSERT_EQ(back.size(), terms.size());
  for (size_t i = 0; i < terms.size(); ++i) {
    EXPECT_EQ(back[i].second.key, terms[i].key);
    EXPECT_EQ(back[i].second.alpha, terms[i].alpha);
    EXPECT_EQ(back[i].second.restrict_mask, terms[i].restrict_mask);
  }
  auto bad = runs;
  bad.Mutable(0)->set_coefficients(0, std::nanf(""));
  back.clear();
  EXPECT_FALSE(ExpandSeedRuns(bad, &back).ok());
  bad = runs;
  bad.Mutable(0)->mutable_first()->set_index(kMaxTangentIndex - 1);
  back.clear();
  EXPECT_FALSE(ExpandSeedRuns(bad, &back).ok());
  bad = runs;
  bad.Mutable(0)->clear_coefficients();
  back.clear();
  EXPECT_FALSE(ExpandSeedRuns(bad, &back).ok());
}

// int8 values up: unbiased, on the grid, reproducible; bad bytes refused.
TEST(Jvp8, StochasticRoundingIsUnbiasedOnTheGridAndReproducible) {
  std::vector<double> d(4000);
  for (size_t i = 0; i < d.size(); ++i) d[i] = 0.3 + 1e-4 * (i % 7);
  d[0] = 5.0;  // clamped to the clip
  d[1] = -5.0;
  d[2] = std::nan("");  // sent as 0
  float scale = 0;
  const std::string q = EncodeJvp8(d, 1.0, 7, 3, 11, &scale);
  ASSERT_EQ(q.size(), d.size());
  EXPECT_FLOAT_EQ(scale, 1.0f / 127);
  float again_scale = 0;
  EXPECT_EQ(EncodeJvp8(d, 1.0, 7, 3, 11, &again_scale), q);
  EXPECT_NE(EncodeJvp8(d, 1.0, 7, 3, 12, &again_scale), q);  // other round
  auto back = DecodeJvp8(q, scale);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_NEAR((*back)[0], 1.0, 1e-6);
  EXPECT_NEAR((*back)[1], -1.0, 1e-6);
  EXPECT_EQ((*back)[2], 0.0);
  double sum = 0, want = 0;
  for (size_t i = 3; i < d.size(); ++i) {
    // Each value is one of the two grid points around d.
    EXPECT_LE(std::abs((*back)[i] - d[i]), 1.0 / 127 + 1e-6);
    sum += (*back)[i];
    want += d[i];
  }
  // Unbiased: the mean error is far below one grid step (sd of the mean
  // about 0.5 / 127 / sqrt(4000)).
  EXPECT_NEAR(sum / (d.size() - 3), want / (d.size() - 3), 2e-4);
  EXPECT_FALSE(DecodeJvp8(q, 0.0f).ok());
  EXPECT_FALSE(DecodeJvp8(q, std::nanf("")).ok());
  EXPECT_FALSE(DecodeJvp8(std::string(1, static_cast<char>(-128)), 1.0f).ok());
}

// int8 replay factors: the coordinator rounds each run before applying it,
// so the 8-bit wire form replays to the same bits.
TEST(SeedRuns, Int8RunsAreExactAfterQuantizeSeedRuns) {
  auto spec = GetModelSpec("mlp_small", {1, 28, 28});
  ASSERT_TRUE(spec.ok());
  const TangentLayout layout = spec->Layout();
  std::vector<SeedTerm> terms;
  for (uint32_t c = 0; c < 3; ++c) {
    for (uint32_t k = 0; k < 40; ++k) {
      terms.push_back({SharedKey(k, c), 1e-4f * std::sin(0.3f * k + c), 0});
    }
  }
  QuantizeSeedRuns(&terms);
  google::protobuf::RepeatedPtrField<v1::SeedRun> runs;
  AppendSeedRuns(terms, 4, &runs);
  ASSERT_EQ(runs.size(), 3);
  for (const auto& run : runs) {
    EXPECT_EQ(run.coefficients_size(), 0);
    EXPECT_EQ(run.coefficients8().size(), 40u);
  }
  EXPECT_LT(SeedRunsWireBytes(terms), 3 * (48 + 40) + 1);
  std::vector<std::pair<uint64_t, SeedTerm>> back;
  ASSERT_TRUE(ExpandSeedRuns(runs, &back).ok());
  ASSERT_EQ(back.size(), terms.size());
  std::vector<float> a = InitialParams(*spec, 2), b = a;
  std::vector<SeedTerm> replay;
  for (const auto& [v, t] : back) {
    EXPECT_EQ(t.alpha, terms[replay.size()].alpha);
    replay.push_back(t);
  }
  ApplySeedTerms(terms, layout, a.data(), 1);
  ApplySeedTerms(replay, layout, b.data(), 2);
  EXPECT_EQ(a, b);
  // Unquantized factors stay float32 on the wire.
  std::vector<SeedTerm> raw = {
      {SharedKey(0), 0.1f, 0},  {SharedKey(1), 0.3f, 0},
      {SharedKey(2), 0.7f, 0},  {SharedKey(3), 0.11f, 0},
      {SharedKey(4), 0.13f, 0}, {SharedKey(5), 0.17f, 0},
      {SharedKey(6), 0.19f, 0}, {SharedKey(7), 0.23f, 0}};
  google::protobuf::RepeatedPtrField<v1::SeedRun> fruns;
  AppendSeedRuns(raw, 1, &fruns);
  ASSERT_EQ(fruns.size(), 1);
  EXPECT_EQ(fruns[0].coefficients_size(), 8);
  auto bad = runs;
  bad.Mutable(0)->set_scale(-1);
  back.clear();
  EXPECT_FALSE(ExpandSeedRuns(bad, &back).ok());
  bad = runs;
  bad.Mutable(0)->add_coefficients(1.0f);  // both forms
  back.clear();
  EXPECT_FALSE(ExpandSeedRuns(bad, &back).ok());
}

TEST(KeyRuns, TaskTangentsTravelAsARun) {
  std::vector<TangentKey> keys;
  for (uint32_t k = 0; k < 5; ++k) keys.push_back(SharedKey(k));
  EXPECT_TRUE(IsKeyRun(keys));
  EXPECT_FALSE(IsKeyRun({keys[0]}));  // one key goes as itself
  std::vector<TangentKey> gap = {keys[0], keys[2]};
  EXPECT_FALSE(IsKeyRun(gap));
  auto back = ExpandKeyRun(ToProto(keys[0]), 5);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, keys);
  EXPECT_FALSE(ExpandKeyRun(ToProto(keys[0]), 1).ok());
  EXPECT_FALSE(ExpandKeyRun(ToProto(SharedKey(kSharedUIndex - 2)), 5).ok());
}

// Keys of several masks (tangent.layer_counts) travel as one run per mask.
TEST(KeyRuns, KeysOfSeveralMasksTravelAsRuns) {
  std::vector<TangentKey> keys;
  for (uint32_t k = 0; k < 7; ++k) {
    TangentKey key = SharedKey(k);
    key.param_mask = k < 3 ? 0b0011 : 0b1100;
    keys.push_back(key);
  }
  EXPECT_FALSE(IsKeyRun(keys));
  using Runs = std::vector<std::pair<size_t, size_t>>;
  EXPECT_EQ(KeyRuns(keys), (Runs{{0, 3}, {3, 7}}));
  EXPECT_EQ(KeyRuns({keys[0], keys[2], keys[3]}),
            (Runs{{0, 1}, {1, 2}, {2, 3}}));
  EXPECT_EQ(KeyRuns({}), Runs{});
  google::protobuf::RepeatedPtrField<v1::TangentRun> runs;
  for (const auto& [begin, end] : KeyRuns(keys)) {
    v1::TangentRun* run = runs.Add();
    *run->mutable_first() = ToProto(keys[begin]);
    run->set_count(static_cast<uint32_t>(end - begin));
  }
  auto back = ExpandKeyRuns(runs);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, keys);
  // Hostile runs: an empty one, one past the index limit, too many in all.
  auto bad = runs;
  bad.Mutable(1)->set_count(0);
  EXPECT_FALSE(ExpandKeyRuns(bad).ok());
  bad = runs;
  *bad.Mutable(1)->mutable_first() = ToProto(SharedKey(kSharedUIndex - 2));
  EXPECT_FALSE(ExpandKeyRuns(bad).ok());
  bad = runs;
  bad.Mutable(0)->set_count(kMaxTangentIndex);
  bad.Mutable(1)->set_count(kMaxTangentIndex);
  const auto status = ExpandKeyRuns(bad).status();
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("in all"), std::string::npos) << status;
}

// The shared-u route of ComputeJvpRules equals grad . v_k from backprop and
// the materialized tangent, in float64, for every key of the group.
TEST(SharedUJvp, MatchesBackpropAndTakesTheSharedRoute) {
  for (const char* model : {"mlp", "mlp_small", "logreg"}) {
    SCOPED_TRACE(model);
    auto spec = GetModelSpec(model, {1, 28, 28});
    ASSERT_TRUE(spec.ok()) << spec.status();
    std::vector<TangentKey> keys;
    for (uint32_t k = 0; k < 6; ++k) keys.push_back(SharedKey(k));
    keys[4].param_mask = 0b0011;  // the first layer only
    // One group needs equal masks: the masked key is not in it.
    std::vector<TangentKey> group(keys.begin(), keys.begin() + 4);
    ASSERT_TRUE(SharedRankOneJvpApplies(*spec, group));
    ASSERT_FALSE(SharedRankOneJvpApplies(*spec, keys));  // masks differ
    ExpectRulesMatchBackprop(model, group, 16, 0, 1e-9);
    // All six, masks mixed (tangent.layer_counts): one pass per mask, the
    // values back in key order.
    ExpectRulesMatchBackprop(model, keys, 16, 0, 1e-9);
  }
}

// The shared route goes through the batch in passes of 64 samples and
// makes the factors 64 keys at a time: 150 samples (64 + 64 + 22) and 130
// keys (64 + 64 + 2) in blocks of 50 still give grad . v_k for every key,
// and the loss of the whole batch.
TEST(SharedUJvp, BatchPassesAndKeyChunksMatchBackprop) {
  std::vector<TangentKey> keys;
  for (uint32_t k = 0; k < 130; ++k) {
    TangentKey key = SharedKey(k);
    key.u_group_size = 50;
    keys.push_back(key);
  }
  auto spec = GetModelSpec("mlp_small", {1, 28, 28});
  ASSERT_TRUE(spec.ok());
  ASSERT_TRUE(SharedRankOneJvpApplies(*spec, keys));
  ExpectRulesMatchBackprop("mlp_small", keys, 150, 4, 1e-9);
}

// u blocks (tangent.u_groups): keys share u only within their block; the
// forward route, the merge and the replay handle several blocks at once.
TEST(SharedUBlocks, UPerBlockJvpsMatchBackpropAndReplayIsExact) {
  auto block_key = [](uint32_t index, uint32_t client) {
    TangentKey k = SharedKey(index, client);
    k.u_group_size = 2;
    return k;
  };
  float u0[3], u1[3], u2[3], a[4];
  RankOneFactors(block_key(0, 2), 0, 3, 4, u0, a);
  RankOneFactors(block_key(1, 2), 0, 3, 4, u1, a);
  RankOneFactors(block_key(2, 2), 0, 3, 4, u2, a);
  bool differs = false;
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(u0[i], u1[i]);
    differs |= u0[i] != u2[i];
  }
  EXPECT_TRUE(differs);
  EXPECT_FALSE(ValidTangentKey(block_key(kSharedUIndex / 2, 2)));
  TangentKey plain = block_key(0, 2);
  plain.shared_u = false;
  EXPECT_FALSE(ValidTangentKey(plain));

  auto spec = GetModelSpec("mlp_small", {1, 28, 28});
  ASSERT_TRUE(spec.ok());
  std::vector<TangentKey> keys;
  for (uint32_t k = 0; k < 7; ++k) keys.push_back(block_key(k, 2));
  ASSERT_TRUE(SharedRankOneJvpApplies(*spec, keys));
  ExpectRulesMatchBackprop("mlp_small", keys, 12, 2, 1e-9);
  const TangentLayout layout = spec->Layout();
  std::vector<float> flat = InitialParams(*spec, 3);

  std::vector<SeedTerm> terms;
  for (uint32_t c = 0; c < 2; ++c) {
    for (uint32_t k = 0; k < 9; ++k) {
      terms.push_back({block_key(k, c), 1e-3f * float(int(k % 5) - 2), 0});
    }
  }
  std::vector<float> one = flat, two = flat;
  ApplySeedTerms(terms, layout, one.data(), 1);
  ApplySeedTerms(terms, layout, two.data(), 2);
  EXPECT_EQ(one, two);
  std::vector<double> want(flat.begin(), flat.end());
  std::vector<float> v(flat.size());
  for (const SeedTerm& t : terms) {
    GenerateTangentFlat(t.key, layout, v.data());
    for (size_t i = 0; i < v.size(); ++i) want[i] += double(t.alpha) * v[i];
  }
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_NEAR(want[i], one[i], 1e-5) << i;
  }
}

// Models with convolutions keep the general rules (the shared u is then
// just another rank-one factor) and still get grad . v_k.
TEST(SharedUJvp, ConvModelsUseTheGeneralRulesAndAgree) {
  auto spec = GetModelSpec("cnn_small", {1, 28, 28});
  ASSERT_TRUE(spec.ok());
  std::vector<TangentKey> group;
  for (uint32_t k = 0; k < 3; ++k) group.push_back(SharedKey(k));
  EXPECT_FALSE(SharedRankOneJvpApplies(*spec, group));
  ExpectRulesMatchBackprop("cnn_small", group, 4, 1, 1e-6);
}

// The flagship's estimator (jvp, rank1_shared, K = 128, mlp, batch 256)
// needs no autograd at all: under InferenceMode, with inference tensors as
// parameters, no graph can be recorded and any backward pass throws, yet
// the values come out. The control shows the check can fail: a backprop
// gradient of the same batch is refused there.
TEST(SharedUJvp, FlagshipEstimatorRunsWithoutAnyAutogradGraph) {
  auto spec = GetModelSpec("mlp", {1, 28, 28});
  ASSERT_TRUE(spec.ok());
  std::vector<TangentKey> keys;
  for (uint32_t k = 0; k < 128; ++k) keys.push_back(SharedKey(k));
  ASSERT_TRUE(SharedRankOneJvpApplies(*spec, keys));
  std::vector<float> flat = InitialParams(*spec, 3);
  c10::InferenceMode guard;
  std::vector<at::Tensor> params;
  for (auto& t : ParamViews(*spec, flat.data())) params.push_back(t.clone());
  ASSERT_TRUE(params[0].is_inference());
  at::Tensor x = torch::rand({256, 1, 28, 28});
  at::Tensor y = torch::randint(0, 10, {256}, torch::kLong);
  auto jvp = ComputeJvpRules(*spec, params, keys, x, y);
  ASSERT_TRUE(jvp.ok()) << jvp.status();
  ASSERT_EQ(jvp->jvps.size(), keys.size());
  for (double d : jvp->jvps) EXPECT_TRUE(std::isfinite(d));
  EXPECT_FALSE(ComputeGradient(*spec, params, x, y).ok());
}

// The forward-only CNN config (configs/mnist_fg_cnn.yaml: rank-one keys
// over the convolutions plus a budget of dense-layer keys) takes the
// hand-written rules with no autograd graph either: its task's keys, as the
// coordinator makes them, run under InferenceMode (where autograd cannot
// record), one pass per parameter mask.
TEST(SharedUJvp, CnnConfigEstimatorRunsWithoutAnyAutogradGraph) {
  auto config = LoadConfigFile(
      std::string(FEDFWD_SOURCE_DIR) + "/configs/mnist_fg_cnn.yaml", {});
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->estimator, "jvp");
  ASSERT_FALSE(config->tangent.layer_counts.empty());
  auto spec = GetModelSpec(config->model, {1, 28, 28});
  ASSERT_TRUE(spec.ok());
  auto strategy = MakeStrategy(*config, *spec, 1);
  ASSERT_TRUE(strategy.ok()) << strategy.status();
  const auto tasks = (*strategy)->ConfigureRound(1, {1});
  ASSERT_EQ(tasks.size(), 1u);
  const std::vector<TangentKey>& keys = tasks[0].tangents;
  ASSERT_GT(keys.size(), static_cast<size_t>(config->tangent.count));
  EXPECT_NE(keys.front().param_mask, keys.back().param_mask);
  std::vector<float> flat = InitialParams(*spec, 3);
  c10::InferenceMode guard;
  std::vector<at::Tensor> params;
  for (auto& t : ParamViews(*spec, flat.data())) params.push_back(t.clone());
  ASSERT_TRUE(params[0].is_inference());
  at::Tensor x = torch::rand({config->batch_size, 1, 28, 28});
  at::Tensor y = torch::randint(0, 10, {config->batch_size}, torch::kLong);
  auto jvp = ComputeJvpRules(*spec, params, keys, x, y);
  ASSERT_TRUE(jvp.ok()) << jvp.status();
  ASSERT_EQ(jvp->jvps.size(), keys.size());
  for (double d : jvp->jvps) EXPECT_TRUE(std::isfinite(d));
  EXPECT_FALSE(ComputeGradient(*spec, params, x, y).ok());
}

}  // namespace
}  // namespace fedfwd
