// Backprop steps: the gradient agrees with forward-mode JVPs (two AD modes
// checking each other), and local SGD does what its contract says.
#include "common/backprop.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "common/forward_ad.h"
#include "common/model.h"
#include "common/rng.h"
#include "common/torch_model.h"

namespace fedfwd {
namespace {

TEST(ComputeGradient, DotTangentEqualsForwardModeJvp) {
  auto spec = GetModelSpec("cnn_small", {1, 28, 28});
  ASSERT_TRUE(spec.ok()) << spec.status();
  std::vector<float> flat = InitialParams(*spec, 5);
  std::vector<float> vflat(flat.size());
  GenerateTangentFlat({5, 1, 2, 0, TangentDistribution::kNormal},
                      spec->ParamSizes(), vflat.data());
  std::vector<at::Tensor> params, tangent;
  for (auto& t : ParamViews(*spec, flat.data()))
    params.push_back(t.to(at::kDouble));
  for (auto& t : ParamViews(*spec, vflat.data()))
    tangent.push_back(t.to(at::kDouble));
  torch::manual_seed(1);
  at::Tensor x = torch::randn({6, 1, 28, 28}, torch::kDouble);
  at::Tensor y = torch::randint(0, 10, {6}, torch::kLong);

  auto g = ComputeGradient(*spec, params, x, y);
  ASSERT_TRUE(g.ok()) << g.status();
  ASSERT_EQ(g->grads.size(), params.size());
  auto jvp = ComputeJvp(*spec, params, {tangent}, x, y);
  ASSERT_TRUE(jvp.ok()) << jvp.status();
  double dot = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_EQ(g->grads[i].sizes(), params[i].sizes());
    dot += (g->grads[i] * tangent[i]).sum().item<double>();
  }
  EXPECT_NEAR(g->loss, jvp->loss, 1e-12);
  EXPECT_LT(std::abs(dot - jvp->jvps[0]) / std::abs(dot), 1e-8);
  // The parameters themselves gained no autograd state.
  for (const auto& p : params) EXPECT_FALSE(p.requires_grad());
}

TEST(ComputeGradient, ShapeMismatchIsAnError) {
  auto spec = GetModelSpec("tiny", {1, 28, 28});
  ASSERT_TRUE(spec.ok());
  std::vector<float> flat = InitialParams(*spec, 1);
  auto params = ParamViews(*spec, flat.data());
  auto g = ComputeGradient(*spec, params, torch::zeros({2, 3, 5, 5}),
                           torch::zeros({2}, torch::kLong));
  EXPECT_FALSE(g.ok());
}

TEST(RunSgdSteps, OneStepIsParamsMinusLrTimesGradient) {
  auto spec = GetModelSpec("tiny", {1, 28, 28});
  ASSERT_TRUE(spec.ok());
  std::vector<float> flat = InitialParams(*spec, 2);
  std::vector<at::Tensor> start, local;
  for (auto& t : ParamViews(*spec, flat.data())) {
    start.push_back(t.clone());
    local.push_back(t.clone());
  }
  torch::manual_seed(2);
  at::Tensor x = torch::randn({8, 1, 28, 28});
  at::Tensor y = torch::randint(0, 10, {8}, torch::kLong);
  auto g = ComputeGradient(*spec, start, x, y);
  ASSERT_TRUE(g.ok());
  auto loss = RunSgdSteps(*spec, &local, 1, {0.5, 0.0},
                          [&](at::Tensor* bx, at::Tensor* by) {
                            *bx = x;
                            *by = y;
                          });
  ASSERT_TRUE(loss.ok()) << loss.status();
  EXPECT_NEAR(*loss, g->loss, 1e-6);
  for (size_t i = 0; i < local.size(); ++i) {
    EXPECT_TRUE(
        at::allclose(local[i], start[i] - 0.5 * g->grads[i], 1e-5, 1e-6));
  }
}

TEST(RunSgdSteps, MomentumTwoStepsMatchHandComputation) {
  auto spec = GetModelSpec("tiny", {1, 28, 28});
  ASSERT_TRUE(spec.ok());
  std::vector<float> flat = InitialParams(*spec, 3);
  std::vector<at::Tensor> local, hand;
  for (auto& t : ParamViews(*spec, flat.data())) {
    local.push_back(t.clone());
    hand.push_back(t.clone());
  }
  torch::manual_seed(3);
  at::Tensor x = torch::randn({8, 1, 28, 28});
  at::Tensor y = torch::randint(0, 10, {8}, torch::kLong);
  auto step = [&](at::Tensor* bx, at::Tensor* by) {
    *bx = x;
    *by = y;
  };
  ASSERT_TRUE(RunSgdSteps(*spec, &local, 2, {0.1, 0.9}, step).ok());
  auto g1 = ComputeGradient(*spec, hand, x, y);
  ASSERT_TRUE(g1.ok());
  std::vector<at::Tensor> b;
  for (size_t i = 0; i < hand.size(); ++i) {
    b.push_back(g1->grads[i].clone());
    hand[i] = hand[i] - 0.1 * b[i];
  }
  auto g2 = ComputeGradient(*spec, hand, x, y);
  ASSERT_TRUE(g2.ok());
  for (size_t i = 0; i < hand.size(); ++i) {
    b[i] = 0.9 * b[i] + g2->grads[i];
    hand[i] = hand[i] - 0.1 * b[i];
    EXPECT_TRUE(at::allclose(local[i], hand[i], 1e-5, 1e-6)) << i;
  }
}

// PyTorch's SGD with weight decay and Nesterov momentum, by hand:
// g' = g + wd p; b = g' (first step), b = m b + g' after; p -= lr (g' + m b).
TEST(ApplySgdUpdate, WeightDecayAndNesterovMatchHandComputation) {
  std::vector<at::Tensor> params = {torch::tensor({1.0f, -2.0f})};
  std::vector<at::Tensor> buffers;
  const SgdOptions o{0.1, 0.5, /*nesterov=*/true, /*weight_decay=*/0.01};
  const std::vector<at::Tensor> g1 = {torch::tensor({0.5f, 0.25f})};
  ASSERT_TRUE(ApplySgdUpdate(o, g1, &params, &buffers).ok());
  // g' = (0.5 + 0.01, 0.25 - 0.02) = (0.51, 0.23); b = g';
  // p -= 0.1 (g' + 0.5 b) = 0.1 * 1.5 g'.
  const float p1a = 1.0f - 0.1f * 1.5f * 0.51f;
  const float p1b = -2.0f - 0.1f * 1.5f * 0.23f;
  EXPECT_NEAR(params[0][0].item<float>(), p1a, 1e-6);
  EXPECT_NEAR(params[0][1].item<float>(), p1b, 1e-6);
  const std::vector<at::Tensor> g2 = {torch::tensor({-1.0f, 0.0f})};
  ASSERT_TRUE(ApplySgdUpdate(o, g2, &params, &buffers).ok());
  const float ga = -1.0f + 0.01f * p1a, gb = 0.0f + 0.01f * p1b;
  const float ba = 0.5f * 0.51f + ga, bb = 0.5f * 0.23f + gb;
  EXPECT_NEAR(params[0][0].item<float>(), p1a - 0.1f * (ga + 0.5f * ba), 1e-6);
  EXPECT_NEAR(params[0][1].item<float>(), p1b - 0.1f * (gb + 0.5f * bb), 1e-6);
}

TEST(RunSgdSteps, DivergenceIsAnError) {
  auto spec = GetModelSpec("tiny", {1, 28, 28});
  ASSERT_TRUE(spec.ok());
  std::vector<float> flat = InitialParams(*spec, 4);
  std::vector<at::Tensor> local;
  for (auto& t : ParamViews(*spec, flat.data())) local.push_back(t.clone());
  at::Tensor x = torch::full({4, 1, 28, 28}, 1e30);
  at::Tensor y = torch::zeros({4}, torch::kLong);
  auto loss = RunSgdSteps(*spec, &local, 3, {1e10, 0.0},
                          [&](at::Tensor* bx, at::Tensor* by) {
                            *bx = x;
                            *by = y;
                          });
  ASSERT_FALSE(loss.ok());
  EXPECT_NE(std::string(loss.status().message()).find("diverged"),
            std::string::npos)
      << loss.status();
}

}  // namespace
}  // namespace fedfwd
