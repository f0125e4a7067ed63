// Forward-mode JVPs against backprop: d = grad f . v in float64.
#include "common/forward_ad.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "common/model.h"
#include "common/rng.h"
#include "common/torch_model.h"

namespace fedfwd {
namespace {

struct Case {
  std::string model;
  int64_t batch;
  std::vector<int64_t> input = {1, 28, 28};  // C, H, W
};

class JvpVsBackprop : public ::testing::TestWithParam<Case> {};

TEST_P(JvpVsBackprop, MatchesGradDotTangentInFloat64) {
  const Case c = GetParam();
  auto spec = GetModelSpec(c.model, c.input);
  ASSERT_TRUE(spec.ok()) << spec.status();
  std::vector<float> flat = InitialParams(*spec, 7);
  std::vector<float> vflat(flat.size());
  GenerateTangentFlat({7, 3, 1, 0, TangentDistribution::kNormal},
                      spec->ParamSizes(), vflat.data());
  std::vector<at::Tensor> params, tangent;
  for (auto& t : ParamViews(*spec, flat.data()))
    params.push_back(t.to(at::kDouble));
  for (auto& t : ParamViews(*spec, vflat.data()))
    tangent.push_back(t.to(at::kDouble));
  torch::manual_seed(0);
  at::Tensor x = torch::randn({c.batch, c.input[0], c.input[1], c.input[2]},
                              torch::kDouble);
  at::Tensor y = torch::randint(0, 10, {c.batch}, torch::kLong);

  auto jvp = ComputeJvp(*spec, params, {tangent}, x, y);
  ASSERT_TRUE(jvp.ok()) << jvp.status();
  // No parameter requires grad: the JVP path built no autograd graph.
  for (const auto& p : params) EXPECT_FALSE(p.requires_grad());

  std::vector<at::Tensor> leaves;
  for (const auto& p : params)
    leaves.push_back(p.detach().requires_grad_(true));
  at::Tensor loss =
      torch::nn::functional::cross_entropy(Forward(*spec, leaves, x), y);
  loss.backward();
  double dot = 0;
  for (size_t i = 0; i < leaves.size(); ++i) {
    dot += (leaves[i].grad() * tangent[i]).sum().item<double>();
  }
  EXPECT_NEAR(jvp->loss, loss.item<double>(), 1e-12);
  ASSERT_NE(dot, 0.0);
  EXPECT_LT(std::abs(jvp->jvps[0] - dot) / std::abs(dot), 1e-6)
      << "jvp " << jvp->jvps[0] << " backprop " << dot;
}

INSTANTIATE_TEST_SUITE_P(
    Models, JvpVsBackprop,
    ::testing::Values(Case{"mlp", 8}, Case{"cnn", 4}, Case{"mlp_small", 16},
                      Case{"cnn_small", 8},
                      // Batch norm (batch statistics),
                      // 5x5 convolutions, no padding.
                      Case{"lenet5", 3}, Case{"lenet5", 4, {3, 32, 32}},
                      Case{"cifar_cnn", 2}, Case{"cifar_cnn", 2, {3, 32, 32}}),
    [](const auto& info) {
      return info.param.model + (info.param.input[0] == 3 ? "_cifar" : "");
    });

TEST(ComputeJvp, SeveralTangentsGiveSeveralScalars) {
  auto spec = GetModelSpec("mlp_small", {1, 28, 28});
  ASSERT_TRUE(spec.ok());
  std::vector<float> flat = InitialParams(*spec, 1);
  std::vector<float> v1(flat.size()), v2(flat.size());
  GenerateTangentFlat({1, 0, 0, 0, TangentDistribution::kNormal},
                      spec->ParamSizes(), v1.data());
  GenerateTangentFlat({1, 0, 0, 1, TangentDistribution::kNormal},
                      spec->ParamSizes(), v2.data());
  at::Tensor x = torch::randn({4, 1, 28, 28});
  at::Tensor y = torch::tensor({1, 2, 3, 4}, torch::kLong);
  auto r = ComputeJvp(
      *spec, ParamViews(*spec, flat.data()),
      {ParamViews(*spec, v1.data()), ParamViews(*spec, v2.data())}, x, y);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->jvps.size(), 2u);
  EXPECT_NE(r->jvps[0], r->jvps[1]);
}

TEST(ComputeJvp, ShapeMismatchIsAnErrorNotACrash) {
  auto spec = GetModelSpec("mlp_small", {1, 28, 28});
  ASSERT_TRUE(spec.ok());
  std::vector<float> flat = InitialParams(*spec, 1);
  auto params = ParamViews(*spec, flat.data());
  at::Tensor x = torch::randn({4, 1, 14, 14});  // wrong image size
  at::Tensor y = torch::zeros({4}, torch::kLong);
  auto r = ComputeJvp(*spec, params, {params}, x, y);
  EXPECT_FALSE(r.ok());
}

TEST(Models, ParameterCounts) {
  auto mlp = GetModelSpec("mlp", {1, 28, 28});
  ASSERT_TRUE(mlp.ok());
  EXPECT_EQ(mlp->NumParams(), 1863690);  // 784-1024-1024-10
  auto cnn = GetModelSpec("cnn", {1, 28, 28});
  ASSERT_TRUE(cnn.ok());
  // conv 1->64: 640; three conv 64->64: 3 * 36928; dense 64*7*7 -> 10: 31370.
  EXPECT_EQ(cnn->NumParams(), 142794);
  EXPECT_FALSE(GetModelSpec("resnet", {1, 28, 28}).ok());
}

}  // namespace
}  // namespace fedfwd
