#include "common/jvp_rules.h"

#include <torch/torch.h>

#include <cmath>
#include <string>
#include <vector>

#include "common/forward_ad.h"
#include "common/model.h"
#include "common/rng.h"
#include "common/torch_model.h"
#include "gtest/gtest.h"

namespace fedfwd {
namespace {

struct Case {
  std::string model;
  int64_t batch;
};

class JvpRulesVsBackprop : public ::testing::TestWithParam<Case> {};

std::vector<TangentKey> Keys() {
  std::vector<TangentKey> keys;
  TangentKey dense{7, 3, 1, 0, TangentDistribution::kNormal};
  keys.push_back(dense);
  TangentKey r1 = dense;
  r1.index = 1;
  r1.type = TangentDistribution::kRademacher;
  r1.rank_one = true;
  keys.push_back(r1);
  TangentKey r1n = r1;
  r1n.index = 2;
  r1n.type = TangentDistribution::kNormal;
  r1n.normalized = true;
  keys.push_back(r1n);
  TangentKey masked = r1;
  masked.index = 3;
  masked.param_mask = 0b1100;  // the second layer's weight and bias only
  keys.push_back(masked);
  TangentKey dense_masked = dense;
  dense_masked.index = 4;
  dense_masked.param_mask = 0b0011;  // the first layer only
  dense_masked.normalized = true;
  keys.push_back(dense_masked);
  return keys;
}

// The key sets each case runs: all of Keys() (a dense key makes every
// tensor's stack dense), then rank-one keys only, one to four of them, so
// that factored stacks go through both the few-filter convolution (up to
// three 3x3 filters) and conv2d.
std::vector<std::vector<TangentKey>> KeySets() {
  std::vector<std::vector<TangentKey>> sets = {Keys()};
  std::vector<TangentKey> rank_one;
  for (const TangentKey& key : Keys()) {
    if (key.rank_one) rank_one.push_back(key);
  }
  TangentKey fourth = rank_one[0];
  fourth.index = 9;
  rank_one.push_back(fourth);
  for (size_t n = 1; n <= rank_one.size(); ++n) {
    sets.emplace_back(rank_one.begin(), rank_one.begin() + n);
  }
  return sets;
}

void CheckAgainstBackprop(const Case& c, const std::vector<TangentKey>& keys,
                          bool regression = false);

// K tangents through the hand-written rules in one pass give grad . v_k,
// the gradient from backprop, all in float64.
TEST_P(JvpRulesVsBackprop, MatchesGradDotTangentInFloat64) {
  for (const std::vector<TangentKey>& keys : KeySets()) {
    SCOPED_TRACE(::testing::Message() << keys.size() << " keys");
    CheckAgainstBackprop(GetParam(), keys);
  }
}

// task: regression: float targets [B, 3], three outputs, mean squared
// error through the same rules (the dense-only pass and the general one).
TEST_P(JvpRulesVsBackprop, MatchesGradDotTangentForSquaredError) {
  for (const std::vector<TangentKey>& keys : KeySets()) {
    SCOPED_TRACE(::testing::Message() << keys.size() << " keys");
    CheckAgainstBackprop(GetParam(), keys, /*regression=*/true);
  }
}

void CheckAgainstBackprop(const Case& c, const std::vector<TangentKey>& keys,
                          bool regression) {
  auto spec = GetModelSpec(c.model, {1, 28, 28}, regression ? 3 : 10);
  ASSERT_TRUE(spec.ok()) << spec.status();
  ASSERT_TRUE(SupportsJvpRules(*spec));
  std::vector<float> flat = InitialParams(*spec, 3);
  std::vector<at::Tensor> params;
  for (auto& t : ParamViews(*spec, flat.data())) {
    params.push_back(t.to(at::kDouble));
  }
  torch::manual_seed(0);
  at::Tensor x = torch::randn({c.batch, 1, 28, 28}, torch::kDouble);
  at::Tensor y = regression ? torch::randn({c.batch, 3}, torch::kDouble)
                            : torch::randint(0, 10, {c.batch}, torch::kLong);
  auto jvp = ComputeJvpRules(*spec, params, keys, x, y);
  ASSERT_TRUE(jvp.ok()) << jvp.status();
  ASSERT_EQ(jvp->jvps.size(), keys.size());

  std::vector<at::Tensor> leaves;
  for (const auto& p : params)
    leaves.push_back(p.detach().requires_grad_(true));
  at::Tensor loss =
      regression
          ? torch::nn::functional::mse_loss(Forward(*spec, leaves, x), y)
          : torch::nn::functional::cross_entropy(Forward(*spec, leaves, x), y);
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
    if (PerturbedEntries(keys[k], layout) == 0) {  // a mask past `tiny`
      EXPECT_EQ(jvp->jvps[k], 0.0);
      continue;
    }
    ASSERT_NE(dot, 0.0) << k;
    EXPECT_LT(std::abs(jvp->jvps[k] - dot) / std::abs(dot), 1e-5)
        << "key " << k << ": rules " << jvp->jvps[k] << " backprop " << dot;
  }
}

INSTANTIATE_TEST_SUITE_P(Models, JvpRulesVsBackprop,
                         ::testing::Values(Case{"mlp", 8}, Case{"cnn", 4},
                                           Case{"mlp_small", 16},
                                           Case{"cnn_small", 8},
                                           Case{"tiny", 5}),
                         [](const auto& info) { return info.param.model; });

// In float32 the rules agree with libtorch's forward AD one key at a time.
TEST(JvpRules, AgreesWithLibtorchForwardAdInFloat32) {
  auto spec = GetModelSpec("cnn_small", {1, 28, 28});
  ASSERT_TRUE(spec.ok());
  std::vector<float> flat = InitialParams(*spec, 5);
  const std::vector<at::Tensor> params = ParamViews(*spec, flat.data());
  torch::manual_seed(1);
  at::Tensor x = torch::randn({6, 1, 28, 28});
  at::Tensor y = torch::randint(0, 10, {6}, torch::kLong);
  const std::vector<TangentKey> keys = Keys();
  auto rules = ComputeJvpRules(*spec, params, keys, x, y);
  ASSERT_TRUE(rules.ok()) << rules.status();
  for (size_t k = 0; k < keys.size(); ++k) {
    std::vector<float> v(flat.size());
    GenerateTangentFlat(keys[k], spec->Layout(), v.data());
    auto ad = ComputeJvp(*spec, params, {ParamViews(*spec, v.data())}, x, y);
    ASSERT_TRUE(ad.ok()) << ad.status();
    EXPECT_NEAR(rules->jvps[k], ad->jvps[0], 2e-4 * (1 + std::abs(ad->jvps[0])))
        << k;
    EXPECT_NEAR(rules->loss, ad->loss, 1e-5);
  }
}

// The BLAS path of the projected estimator gives TangentDots' values.
TEST(RankOneDots, EqualTangentDots) {
  for (const std::string model : {"mlp", "cnn_small"}) {
    auto spec = GetModelSpec(model, {1, 28, 28});
    ASSERT_TRUE(spec.ok());
    std::vector<float> g = InitialParams(*spec, 9);
    std::vector<TangentKey> keys = Keys();
    keys.erase(keys.begin());  // the dense key
    keys.pop_back();           // the dense masked key
    auto d = RankOneDots(*spec, ParamViews(*spec, g.data()), keys);
    ASSERT_TRUE(d.ok()) << d.status();
    const std::vector<double> ref = TangentDots(keys, spec->Layout(), g.data());
    ASSERT_EQ(d->size(), ref.size());
    for (size_t k = 0; k < ref.size(); ++k) {
      EXPECT_NEAR((*d)[k], ref[k], 1e-4 * (1 + std::abs(ref[k])))
          << model << " key " << k;
    }
    EXPECT_FALSE(RankOneDots(*spec, ParamViews(*spec, g.data()), Keys()).ok());
  }
}

TEST(JvpRules, RefusesBatchNormAndNoKeys) {
  auto spec = GetModelSpec("mlp_small", {1, 28, 28});
  ASSERT_TRUE(spec.ok());
  std::vector<float> flat = InitialParams(*spec, 5);
  at::Tensor x = torch::randn({2, 1, 28, 28});
  at::Tensor y = torch::zeros({2}, torch::kLong);
  EXPECT_TRUE(absl::IsInvalidArgument(
      ComputeJvpRules(*spec, ParamViews(*spec, flat.data()), {}, x, y)
          .status()));
  bool any_bn = false;
  for (const std::string& name : ModelNames()) {
    auto s = GetModelSpec(name, {1, 28, 28});
    ASSERT_TRUE(s.ok());
    if (SupportsJvpRules(*s)) continue;
    any_bn = true;
    std::vector<float> f = InitialParams(*s, 1);
    EXPECT_TRUE(absl::IsUnimplemented(
        ComputeJvpRules(*s, ParamViews(*s, f.data()), Keys(), x, y).status()))
        << name;
  }
  EXPECT_TRUE(any_bn);
}

}  // namespace
}  // namespace fedfwd
