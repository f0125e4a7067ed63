// Client-step costs on the CPU: tangent generation, a forward-gradient step
// (tangent + JVP) and a backprop step (forward + backward + SGD update), for
// the models we ship, at batch 64, on libtorch's current thread count (set
// with --threads, default 1). Run side by side in one process so their ratio
// is meaningful on a noisy machine:
//   build/bin/fedfwd_bench --benchmark_filter='mlp|cnn' [--threads=N]
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <cstring>

#include "common/finite_diff.h"
#include "common/forward_ad.h"
#include "common/model.h"
#include "common/rng.h"
#include "common/torch_model.h"

namespace fedfwd {
namespace {

constexpr int64_t kBatch = 64;

ModelSpec Spec(const std::string& name) {
  return GetModelSpec(name, {1, 28, 28}).value();
}

void BM_Tangent(benchmark::State& state, TangentDistribution dist) {
  const ModelSpec spec = Spec("mlp");
  std::vector<float> v(static_cast<size_t>(spec.NumParams()));
  int64_t round = 0;
  for (auto _ : state) {
    GenerateTangentFlat({1, round++, 0, 0, dist}, spec.ParamSizes(), v.data());
    benchmark::DoNotOptimize(v.data());
  }
  state.SetItemsProcessed(state.iterations() * spec.NumParams());
}
BENCHMARK_CAPTURE(BM_Tangent, mlp_normal, TangentDistribution::kNormal)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Tangent, mlp_rademacher, TangentDistribution::kRademacher)
    ->Unit(benchmark::kMillisecond);

struct Inputs {
  at::Tensor x, y;
};
Inputs MakeInputs() {
  torch::manual_seed(0);
  return {torch::randn({kBatch, 1, 28, 28}),
          torch::randint(0, 10, {kBatch}, torch::kLong)};
}

// One client step of forward gradients: regenerate the tangent, one
// dual-number forward pass.
void BM_ForwardGradientStep(benchmark::State& state, const std::string& model,
                            TangentDistribution dist) {
  const ModelSpec spec = Spec(model);
  std::vector<float> params = InitialParams(spec, 1);
  std::vector<float> v(params.size());
  const auto views = ParamViews(spec, params.data());
  const auto tangent = ParamViews(spec, v.data());
  const Inputs in = MakeInputs();
  int64_t round = 0;
  for (auto _ : state) {
    GenerateTangentFlat({1, round++, 0, 0, dist}, spec.ParamSizes(), v.data());
    auto r = ComputeJvp(spec, views, {tangent}, in.x, in.y);
    benchmark::DoNotOptimize(r);
  }
}

// One backprop SGD step: forward, backward, parameter update.
void BM_BackpropStep(benchmark::State& state, const std::string& model) {
  const ModelSpec spec = Spec(model);
  std::vector<float> flat = InitialParams(spec, 1);
  std::vector<at::Tensor> params;
  for (auto& t : ParamViews(spec, flat.data())) {
    params.push_back(t.clone().requires_grad_(true));
  }
  const Inputs in = MakeInputs();
  for (auto _ : state) {
    at::Tensor loss =
        torch::nn::functional::cross_entropy(Forward(spec, params, in.x), in.y);
    loss.backward();
    torch::NoGradGuard g;
    for (auto& p : params) {
      p.sub_(p.grad(), 0.01);
      p.grad().zero_();
    }
  }
}

// One client step of finite-difference forward gradients (estimator fd):
// regenerate the tangent, two forward passes at theta +- eps v, in float32
// or with the fixed-point passes (int16 weights, int8 layer inputs).
void BM_FiniteDifferenceStep(benchmark::State& state, const std::string& model,
                             bool fixed_point) {
  const ModelSpec spec = Spec(model);
  std::vector<float> params = InitialParams(spec, 1);
  std::vector<float> v(params.size());
  const auto views = ParamViews(spec, params.data());
  const auto tangent = ParamViews(spec, v.data());
  const Inputs in = MakeInputs();
  const FixedPointSpec fixed;
  int64_t round = 0;
  for (auto _ : state) {
    GenerateTangentFlat({1, round++, 0, 0, TangentDistribution::kRademacher},
                        spec.ParamSizes(), v.data());
    auto r = ComputeFiniteDifference(spec, views, {tangent}, in.x, in.y,
                                     fixed_point ? 1e-2 : 1e-4,
                                     fixed_point ? &fixed : nullptr);
    benchmark::DoNotOptimize(r);
  }
}

BENCHMARK_CAPTURE(BM_FiniteDifferenceStep, mlp_fp32, "mlp", false)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_FiniteDifferenceStep, mlp_fixed, "mlp", true)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_ForwardGradientStep, mlp_rademacher, "mlp",
                  TangentDistribution::kRademacher)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_ForwardGradientStep, mlp_normal, "mlp",
                  TangentDistribution::kNormal)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_BackpropStep, mlp, "mlp")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_ForwardGradientStep, cnn_rademacher, "cnn",
                  TangentDistribution::kRademacher)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_BackpropStep, cnn, "cnn")->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace fedfwd

int main(int argc, char** argv) {
  int threads = 1;
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    if (std::strncmp(argv[i], "--threads=", 10) == 0) {
      threads = std::atoi(argv[i] + 10);
    } else {
      rest.push_back(argv[i]);
    }
  }
  fedfwd::SetTorchThreads(threads);
  int n = static_cast<int>(rest.size());
  benchmark::Initialize(&n, rest.data());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
