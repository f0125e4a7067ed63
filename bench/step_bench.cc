// Client-step costs on the CPU: tangent generation, a forward-gradient step
// (tangent + JVP) and a backprop step (forward + backward + SGD update), for
// the models we ship, at batch 64, on libtorch's current thread count (set
// with --threads, default 1). Run side by side in one process so their ratio
// is meaningful on a noisy machine:
//   build/bin/fedfwd_bench --benchmark_filter='mlp|cnn' [--threads=N]
// and the coordinator's merge of 100 JVPs (BM_Merge100, dense and rank-one);
// the hand-written rules with K tangents in one primal pass against K
// separate forward-AD passes (BM_RulesStep, BM_SeparateJvps). With
// --memory=jvp|rules|rules_rank1|backprop [--model=cnn] [--batch=256] it
// measures one step's training memory instead (see MemoryMode).
#include <benchmark/benchmark.h>
#include <sys/resource.h>
#include <torch/torch.h>

#include <cstdio>
#include <cstring>

#include "common/finite_diff.h"
#include "common/forward_ad.h"
#include "common/jvp_rules.h"
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
// parameters (no tangent materialized per client). Rank-one terms are
// added from their factors, (alpha u_i) a_j per entry, no per-entry random
// numbers.
void BM_Merge100(benchmark::State& state, TangentDistribution dist,
                 int threads = 1, bool rank_one = false) {
  const ModelSpec spec = Spec("mlp");
  const TangentLayout layout = spec.Layout();
  std::vector<float> params = InitialParams(spec, 1);
  std::vector<SeedTerm> terms(100);
  int64_t round = 0;
  for (auto _ : state) {
    ++round;
    for (uint32_t c = 0; c < terms.size(); ++c) {
      terms[c].key = {1, round, c + 1, 0, dist};
      terms[c].key.rank_one = rank_one;
      terms[c].alpha = 1e-6f * static_cast<float>(c + 1);
    }
    ApplySeedTerms(terms, layout, params.data(), threads);
    benchmark::DoNotOptimize(params.data());
  }
}
BENCHMARK_CAPTURE(BM_Merge100, mlp_rank1_rademacher,
                  TangentDistribution::kRademacher, 1, true)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Merge100, mlp_rank1_normal, TangentDistribution::kNormal,
                  1, true)
    ->Unit(benchmark::kMillisecond);

// A forward-gradient step through the hand-written rules (jvp_rules.h), as
// the client runs it: K Rademacher tangents (dense, or rank-one) regenerated
// from their keys and pushed through one primal pass.
void BM_RulesStep(benchmark::State& state, const std::string& model,
                  bool rank_one, int k) {
  const ModelSpec spec = Spec(model);
  std::vector<float> params = InitialParams(spec, 1);
  const auto views = ParamViews(spec, params.data());
  const Inputs in = MakeInputs();
  int64_t round = 0;
  std::vector<TangentKey> keys(static_cast<size_t>(k));
  for (auto _ : state) {
    ++round;
    for (int i = 0; i < k; ++i) {
      keys[i] = {1, round, 0, static_cast<uint32_t>(i),
                 TangentDistribution::kRademacher};
      keys[i].rank_one = rank_one;
    }
    auto r = ComputeJvpRules(spec, views, keys, in.x, in.y);
    benchmark::DoNotOptimize(r);
  }
}

// K separate libtorch forward-AD passes, each after materializing its
// tangent (the path before the rules; still the one for batch-norm models).
void BM_SeparateJvps(benchmark::State& state, const std::string& model,
                     bool rank_one, int k) {
  const ModelSpec spec = Spec(model);
  const TangentLayout layout = spec.Layout();
  std::vector<float> params = InitialParams(spec, 1);
  std::vector<float> v(params.size());
  const auto views = ParamViews(spec, params.data());
  const auto tangent = ParamViews(spec, v.data());
  const Inputs in = MakeInputs();
  int64_t round = 0;
  for (auto _ : state) {
    ++round;
    for (int i = 0; i < k; ++i) {
      TangentKey key{1, round, 0, static_cast<uint32_t>(i),
                     TangentDistribution::kRademacher};
      key.rank_one = rank_one;
      GenerateTangentFlat(key, layout, v.data());
      auto r = ComputeJvp(spec, views, {tangent}, in.x, in.y);
      benchmark::DoNotOptimize(r);
    }
  }
}

// The projected estimator's dot products: d_k = g . v_k for 64 Rademacher
// tangents against one flat gradient of mlp (TangentDots, one thread).
void BM_TangentDots64(benchmark::State& state, bool rank_one) {
  const ModelSpec spec = Spec("mlp");
  const TangentLayout layout = spec.Layout();
  const std::vector<float> g = InitialParams(spec, 2);
  std::vector<TangentKey> keys(64);
  int64_t round = 0;
  for (auto _ : state) {
    ++round;
    for (uint32_t i = 0; i < keys.size(); ++i) {
      keys[i] = {1, round, 0, i, TangentDistribution::kRademacher};
      keys[i].rank_one = rank_one;
    }
    auto d = TangentDots(keys, layout, g.data());
    benchmark::DoNotOptimize(d);
  }
}
// The same 64 rank-one dots through matrix products (RankOneDots, what the
// client runs when every key is rank-one).
void BM_RankOneDots64(benchmark::State& state) {
  const ModelSpec spec = Spec("mlp");
  std::vector<float> g = InitialParams(spec, 2);
  const auto grads = ParamViews(spec, g.data());
  std::vector<TangentKey> keys(64);
  int64_t round = 0;
  for (auto _ : state) {
    ++round;
    for (uint32_t i = 0; i < keys.size(); ++i) {
      keys[i] = {1, round, 0, i, TangentDistribution::kRademacher};
      keys[i].rank_one = true;
    }
    auto d = RankOneDots(spec, grads, keys);
    benchmark::DoNotOptimize(d);
  }
}
BENCHMARK(BM_RankOneDots64)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_TangentDots64, mlp_dense, false)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_TangentDots64, mlp_rank1, true)
    ->Unit(benchmark::kMillisecond);

BENCHMARK_CAPTURE(BM_RulesStep, mlp_dense_k1, "mlp", false, 1)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_RulesStep, mlp_rank1_k1, "mlp", true, 1)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_RulesStep, cnn_dense_k1, "cnn", false, 1)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_RulesStep, cnn_rank1_k1, "cnn", true, 1)
    ->Unit(benchmark::kMillisecond);
#define FEDFWD_K_SWEEP(K)                                             \
  BENCHMARK_CAPTURE(BM_RulesStep, mlp_dense_k##K, "mlp", false, K)    \
      ->Unit(benchmark::kMillisecond);                                \
  BENCHMARK_CAPTURE(BM_RulesStep, mlp_rank1_k##K, "mlp", true, K)     \
      ->Unit(benchmark::kMillisecond);                                \
  BENCHMARK_CAPTURE(BM_SeparateJvps, mlp_dense_k##K, "mlp", false, K) \
      ->Unit(benchmark::kMillisecond);                                \
  BENCHMARK_CAPTURE(BM_SeparateJvps, mlp_rank1_k##K, "mlp", true, K)  \
      ->Unit(benchmark::kMillisecond);
FEDFWD_K_SWEEP(4)
FEDFWD_K_SWEEP(8)
FEDFWD_K_SWEEP(16)
BENCHMARK_CAPTURE(BM_SeparateJvps, mlp_dense_k1, "mlp", false, 1)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_SeparateJvps, mlp_rank1_k1, "mlp", true, 1)
    ->Unit(benchmark::kMillisecond);

BENCHMARK_CAPTURE(BM_Merge100, mlp_rademacher, TangentDistribution::kRademacher)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Merge100, mlp_normal, TangentDistribution::kNormal)
    ->Unit(benchmark::kMillisecond);
// Two threads: the coordinator's --threads 2 on a 2-core machine.
BENCHMARK_CAPTURE(BM_Merge100, mlp_rademacher_2threads,
                  TangentDistribution::kRademacher, 2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

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

// The flagship's client step (configs/mnist_fg_mlp.yaml): K rank-one keys
// with a shared u (rank1_shared) through the hand-written rules on mlp at
// batch 256, forward only; against it, `projected` (backprop, then the K
// dots from the gradient) and a plain backprop step at the same batch.
std::vector<TangentKey> SharedKeys(int64_t round, int k) {
  std::vector<TangentKey> keys(static_cast<size_t>(k));
  for (int i = 0; i < k; ++i) {
    keys[i] = {1, round, 0, static_cast<uint32_t>(i),
               TangentDistribution::kRademacher};
    keys[i].rank_one = true;
    keys[i].shared_u = true;
  }
  return keys;
}

Inputs MakeInputs256() {
  torch::manual_seed(0);
  return {torch::randn({256, 1, 28, 28}),
          torch::randint(0, 10, {256}, torch::kLong)};
}

void BM_SharedStep256(benchmark::State& state) {
  const ModelSpec spec = Spec("mlp");
  std::vector<float> params = InitialParams(spec, 1);
  const auto views = ParamViews(spec, params.data());
  const Inputs in = MakeInputs256();
  int64_t round = 0;
  for (auto _ : state) {
    std::vector<TangentKey> keys = SharedKeys(++round, state.range(0));
    for (TangentKey& k : keys) {
      k.u_group_size = static_cast<uint32_t>(state.range(1));
    }
    auto r = ComputeJvpRules(spec, views, keys, in.x, in.y);
    benchmark::DoNotOptimize(r);
  }
}
// Args: K, keys per u block (0: one u). {800, 50} is the flagship's step.
BENCHMARK(BM_SharedStep256)
    ->Args({1, 0})
    ->Args({16, 0})
    ->Args({64, 0})
    ->Args({128, 0})
    ->Args({256, 0})
    ->Args({800, 200})
    ->Args({800, 50})
    ->Unit(benchmark::kMillisecond);

void BM_ProjectedStep256(benchmark::State& state) {
  const ModelSpec spec = Spec("mlp");
  std::vector<float> flat = InitialParams(spec, 1);
  std::vector<at::Tensor> params;
  for (auto& t : ParamViews(spec, flat.data())) {
    params.push_back(t.clone().requires_grad_(true));
  }
  const Inputs in = MakeInputs256();
  int64_t round = 0;
  for (auto _ : state) {
    at::Tensor loss =
        torch::nn::functional::cross_entropy(Forward(spec, params, in.x), in.y);
    loss.backward();
    std::vector<at::Tensor> grads;
    for (auto& p : params) grads.push_back(p.grad());
    std::vector<TangentKey> keys = SharedKeys(++round, state.range(0));
    for (auto& k : keys) k.shared_u = false;  // projected's rank1 keys
    auto d = RankOneDots(spec, grads, keys);
    benchmark::DoNotOptimize(d);
    for (auto& p : params) p.grad().zero_();
  }
}
BENCHMARK(BM_ProjectedStep256)->Arg(128)->Unit(benchmark::kMillisecond);

void BM_BackpropStep256(benchmark::State& state) {
  const ModelSpec spec = Spec("mlp");
  std::vector<float> flat = InitialParams(spec, 1);
  std::vector<at::Tensor> params;
  for (auto& t : ParamViews(spec, flat.data())) {
    params.push_back(t.clone().requires_grad_(true));
  }
  const Inputs in = MakeInputs256();
  for (auto _ : state) {
    at::Tensor loss =
        torch::nn::functional::cross_entropy(Forward(spec, params, in.x), in.y);
    loss.backward();
    for (auto& p : params) p.grad().zero_();
  }
}
BENCHMARK(BM_BackpropStep256)->Unit(benchmark::kMillisecond);

// A round's replay on a client: 10 clients x K shared-u terms into mlp in
// u blocks of G keys (one outer product per block and matrix). Args: K, G.
// {128, 128} is the older flagship's round, {800, 50} the current one's.
void BM_ReplayShared(benchmark::State& state) {
  const ModelSpec spec = Spec("mlp");
  const TangentLayout layout = spec.Layout();
  std::vector<float> params = InitialParams(spec, 1);
  int64_t round = 0;
  for (auto _ : state) {
    ++round;
    std::vector<SeedTerm> terms;
    for (uint32_t c = 0; c < 10; ++c) {
      for (TangentKey k : SharedKeys(round, state.range(0))) {
        k.client = c;
        k.u_group_size = static_cast<uint32_t>(state.range(1));
        terms.push_back({k, 1e-6f, 0});
      }
    }
    ApplySeedTerms(terms, layout, params.data(), 1);
  }
}
BENCHMARK(BM_ReplayShared)
    ->Args({128, 128})
    ->Args({800, 50})
    ->Unit(benchmark::kMillisecond);

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

// --memory=jvp|rules|rules_rank1|flagship|fedsgd|backprop: training memory
// of one client
// step (libtorch forward AD, the hand-written rules with a dense or a
// rank-one tangent, or backprop) on `model` at
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
  if (getenv("WARM")) {
    at::Tensor w = at::matmul(torch::randn({batch, 1024}), views[2].t());
    std::printf("warm %ld\n", PeakRssKib());
  }
  const long before = PeakRssKib();
  if (mode == "jvp") {
    auto r = ComputeJvp(spec, views, {tangent}, x, y);
    if (!r.ok()) return 1;
  } else if (mode == "rules" || mode == "rules_rank1") {
    TangentKey key{1, 1, 0, 0, TangentDistribution::kRademacher};
    key.rank_one = mode == "rules_rank1";
    auto r = ComputeJvpRules(spec, views, {key}, x, y);
    if (!r.ok()) return 1;
  } else if (mode == "flagship") {
    // The flagship client's round (configs/mnist_fg_mlp.yaml): K = 800
    // shared-u keys in 16 u blocks through the rules, then a replay of the
    // round's 8,000 terms into the parameters in place (what
    // ClientDaemon::SyncModel does).
    std::vector<TangentKey> keys = SharedKeys(1, 800);
    for (TangentKey& k : keys) k.u_group_size = 50;
    auto r = ComputeJvpRules(spec, views, keys, x, y);
    if (!r.ok()) return 1;
    std::printf("step_kib %ld\n", PeakRssKib() - before);
    std::vector<SeedTerm> terms;
    for (uint32_t c = 0; c < 10; ++c) {
      for (TangentKey k : keys) {
        k.client = c;
        terms.push_back({k, 1e-6f, 0});
      }
    }
    ApplySeedTerms(terms, spec.Layout(), flat.data(), 1);
  } else if (mode == "fedsgd") {
    // A fedsgd client's round: the minibatch gradient by backprop, flattened
    // into the update it sends.
    at::Tensor loss =
        torch::nn::functional::cross_entropy(Forward(spec, params, x), y);
    loss.backward();
    std::vector<float> update;
    update.reserve(flat.size());
    for (auto& p : params) {
      const at::Tensor g = p.grad().contiguous();
      update.insert(update.end(), g.data_ptr<float>(),
                    g.data_ptr<float>() + g.numel());
    }
    benchmark::DoNotOptimize(update.data());
  } else if (mode == "backprop") {
    at::Tensor loss =
        torch::nn::functional::cross_entropy(Forward(spec, params, x), y);
    loss.backward();
  } else {
    std::fprintf(stderr,
                 "--memory takes jvp, rules, rules_rank1, flagship, fedsgd "
                 "or backprop\n");
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
