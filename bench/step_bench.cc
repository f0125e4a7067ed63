// Client-step costs on the CPU: tangent generation, a forward-gradient step
// (tangent + JVP) and a backprop step (forward + backward + SGD update), for
// the models we ship, at batch 64, on libtorch's current thread count (set
// with --threads, default 1). Run side by side in one process so their ratio
// is meaningful on a noisy machine:
//   build/bin/fedfwd_bench --benchmark_filter='mlp|cnn' [--threads=N]
// and the coordinator's merge of 100 JVPs (BM_Merge100). With
// --memory=jvp|backprop [--model=cnn] [--batch=256] it measures one step's
// training memory instead (see MemoryMode).
#include <benchmark/benchmark.h>
#include <sys/resource.h>
#include <torch/torch.h>

#include <cstdio>
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

// One client step of forward gradients: regenerate the tangent, then one
// dual-number forward pass (jvp), or two forward passes at theta +- eps v
// after the loss (fd: float32, or fixed point with int16 weights and int8
// layer inputs).
enum class Step { kJvp, kFdFp32, kFdFixed };
void BM_ForwardGradientStep(benchmark::State& state, const std::string& model,
                            TangentDistribution dist, Step kind = Step::kJvp) {
  const ModelSpec spec = Spec(model);
  std::vector<float> params = InitialParams(spec, 1);
  std::vector<float> v(params.size());
  const auto views = ParamViews(spec, params.data());
  const auto tangent = ParamViews(spec, v.data());
  const Inputs in = MakeInputs();
  const FixedPointSpec fixed;
  int64_t round = 0;
  for (auto _ : state) {
    GenerateTangentFlat({1, round++, 0, 0, dist}, spec.ParamSizes(), v.data());
    auto r = kind == Step::kJvp
                 ? ComputeJvp(spec, views, {tangent}, in.x, in.y)
                 : ComputeFiniteDifference(
                       spec, views, {tangent}, in.x, in.y,
                       kind == Step::kFdFixed ? 1e-2 : 1e-4,
                       kind == Step::kFdFixed ? &fixed : nullptr);
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

// The coordinator's merge of 100 client JVPs into mlp under plain SGD: 100
// seed terms, each tangent regenerated and added straight into the
// parameters (no tangent materialized per client), one thread.
void BM_Merge100(benchmark::State& state, TangentDistribution dist) {
  const ModelSpec spec = Spec("mlp");
  std::vector<float> params = InitialParams(spec, 1);
  std::vector<SeedTerm> terms(100);
  int64_t round = 0;
  for (auto _ : state) {
    ++round;
    for (uint32_t c = 0; c < terms.size(); ++c) {
      terms[c].key = {1, round, c + 1, 0, dist};
      terms[c].alpha = 1e-6f * static_cast<float>(c + 1);
    }
    ApplySeedTerms(terms, spec.ParamSizes(), params.data(), 1);
    benchmark::DoNotOptimize(params.data());
  }
}
BENCHMARK_CAPTURE(BM_Merge100, mlp_rademacher, TangentDistribution::kRademacher)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Merge100, mlp_normal, TangentDistribution::kNormal)
    ->Unit(benchmark::kMillisecond);

BENCHMARK_CAPTURE(BM_ForwardGradientStep, mlp_fd_fp32, "mlp",
                  TangentDistribution::kRademacher, Step::kFdFp32)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_ForwardGradientStep, mlp_fd_fixed, "mlp",
                  TangentDistribution::kRademacher, Step::kFdFixed)
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

namespace fedfwd {
namespace {

// Peak resident memory of this process so far, in KiB.
long PeakRssKib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss;
}

// --memory=jvp|backprop: training memory of one client step on `model` at
// `batch` (the whole batch in one piece): peak RSS after the step minus the
// peak once model, tangent and data are in memory. One mode per process, so
// neither side inherits the other's peak. Prints "memory_kib N".
int MemoryMode(const std::string& mode, const std::string& model,
               int64_t batch) {
  const ModelSpec spec = Spec(model);
  std::vector<float> flat = InitialParams(spec, 1);
  std::vector<float> v(flat.size());
  GenerateTangentFlat({1, 1, 0, 0, TangentDistribution::kRademacher},
                      spec.ParamSizes(), v.data());
  torch::manual_seed(0);
  const at::Tensor x = torch::randn({batch, 1, 28, 28});
  const at::Tensor y = torch::randint(0, 10, {batch}, torch::kLong);
  const auto views = ParamViews(spec, flat.data());
  const auto tangent = ParamViews(spec, v.data());
  std::vector<at::Tensor> params;
  for (auto& t : views) params.push_back(t.clone().requires_grad_(true));
  const long before = PeakRssKib();
  if (mode == "jvp") {
    auto r = ComputeJvp(spec, views, {tangent}, x, y);
    if (!r.ok()) return 1;
  } else if (mode == "backprop") {
    at::Tensor loss =
        torch::nn::functional::cross_entropy(Forward(spec, params, x), y);
    loss.backward();
  } else {
    std::fprintf(stderr, "--memory takes jvp or backprop\n");
    return 2;
  }
  std::printf("memory_kib %ld\n", PeakRssKib() - before);
  return 0;
}

}  // namespace
}  // namespace fedfwd

int main(int argc, char** argv) {
  int threads = 1;
  std::string memory, model = "cnn";
  int64_t batch = 256;
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    if (std::strncmp(argv[i], "--threads=", 10) == 0) {
      threads = std::atoi(argv[i] + 10);
    } else if (std::strncmp(argv[i], "--memory=", 9) == 0) {
      memory = argv[i] + 9;
    } else if (std::strncmp(argv[i], "--model=", 8) == 0) {
      model = argv[i] + 8;
    } else if (std::strncmp(argv[i], "--batch=", 8) == 0) {
      batch = std::atoll(argv[i] + 8);
    } else {
      rest.push_back(argv[i]);
    }
  }
  fedfwd::SetTorchThreads(threads);
  if (!memory.empty()) return fedfwd::MemoryMode(memory, model, batch);
  int n = static_cast<int>(rest.size());
  benchmark::Initialize(&n, rest.data());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
