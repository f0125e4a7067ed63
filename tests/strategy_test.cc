// Strategies as plain values: client sampling, FedAvg/FedSGD tasks, result
// checks and merges (no engine, no network).
#include "server/strategy.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/config.h"
#include "common/estimators.h"
#include "common/model.h"
#include "common/rng.h"
#include "common/step_rule.h"
#include "gtest/gtest.h"
#include "server/merge.h"

namespace fedfwd {
namespace {

ModelSpec Tiny() {
  auto spec = GetModelSpec("tiny", {1, 28, 28});
  EXPECT_TRUE(spec.ok());
  return *spec;
}

std::vector<uint32_t> Ids(int n) {
  std::vector<uint32_t> ids;
  for (int i = 1; i <= n; ++i) ids.push_back(static_cast<uint32_t>(i * 3));
  return ids;
}

TEST(SampleClients, FullFractionTakesEveryone) {
  Config c;
  EXPECT_EQ(SampleClients(c, 5, Ids(10)), Ids(10));
}

TEST(SampleClients, FractionIsASortedDeterministicSubset) {
  Config c;
  c.seed = 11;
  c.sampling.fraction = 0.3;
  const auto live = Ids(10);
  std::set<std::vector<uint32_t>> distinct;
  for (int64_t round = 1; round <= 20; ++round) {
    const auto chosen = SampleClients(c, round, live);
    ASSERT_EQ(chosen.size(), 3u);  // ceil(0.3 * 10)
    EXPECT_TRUE(std::is_sorted(chosen.begin(), chosen.end()));
    EXPECT_EQ(std::set<uint32_t>(chosen.begin(), chosen.end()).size(), 3u);
    for (uint32_t id : chosen) {
      EXPECT_NE(std::find(live.begin(), live.end(), id), live.end());
    }
    EXPECT_EQ(chosen, SampleClients(c, round, live));
    distinct.insert(chosen);
  }
  EXPECT_GT(distinct.size(), 5u);  // rounds draw different subsets
}

TEST(SampleClients, MinimumAndCap) {
  Config c;
  c.sampling.fraction = 0.01;
  c.sampling.minimum = 4;
  EXPECT_EQ(SampleClients(c, 1, Ids(10)).size(), 4u);
  c.sampling.minimum = 50;
  EXPECT_EQ(SampleClients(c, 1, Ids(10)), Ids(10));
  EXPECT_TRUE(SampleClients(c, 1, {}).empty());
}

ClientResult Update(uint32_t id, std::vector<float> u, int64_t n) {
  ClientResult r;
  r.client_id = id;
  r.round = 1;
  r.update = std::move(u);
  r.num_samples = n;
  r.loss = 1.0;
  return r;
}

TEST(BackpropStrategy, FedAvgTasksCarryLocalSgdSettings) {
  Config c;
  c.estimator = "fedavg";
  c.lr = 0.05;
  c.momentum = 0.5;
  c.local_epochs = 3;
  c.batch_size = 32;
  c.compression = "int8";
  auto s = MakeStrategy(c, Tiny());
  ASSERT_TRUE(s.ok()) << s.status();
  const auto tasks = (*s)->ConfigureRound(1, {1, 2});
  ASSERT_EQ(tasks.size(), 2u);
  EXPECT_EQ(tasks[0].estimator, "fedavg");
  EXPECT_EQ(tasks[0].local_epochs, 3);
  EXPECT_DOUBLE_EQ(tasks[0].lr, 0.05);
  EXPECT_DOUBLE_EQ(tasks[0].momentum, 0.5);
  EXPECT_EQ(tasks[0].batch_size, 32);
  EXPECT_EQ(tasks[0].compression, "int8");
  EXPECT_TRUE(tasks[0].tangents.empty());
}

TEST(BackpropStrategy, FedAvgAddsTheSampleWeightedMeanDelta) {
  Config c;
  c.estimator = "fedavg";
  const ModelSpec spec = Tiny();
  auto s = MakeStrategy(c, spec);
  ASSERT_TRUE(s.ok());
  const size_t n = static_cast<size_t>(spec.NumParams());
  std::vector<float> params(n, 1.0f);
  const auto tasks = (*s)->ConfigureRound(1, {1, 2});
  const auto a = Update(1, std::vector<float>(n, 1.0f), 100);
  const auto b = Update(2, std::vector<float>(n, -1.0f), 300);
  ASSERT_TRUE((*s)->ValidateResult(tasks[0], a).ok());
  auto report = (*s)->Aggregate(1, tasks, {a, b}, &params);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->merged, 2);
  // 1 + (0.25 * 1 + 0.75 * -1) = 0.5
  for (float p : params) ASSERT_FLOAT_EQ(p, 0.5f);
}

TEST(BackpropStrategy, FedAvgServerMomentumKeepsMoving) {
  Config c;
  c.estimator = "fedavg";
  c.server_optimizer.momentum = 0.5;
  const ModelSpec spec = Tiny();
  auto s = MakeStrategy(c, spec);
  ASSERT_TRUE(s.ok());
  const size_t n = static_cast<size_t>(spec.NumParams());
  std::vector<float> params(n, 0.0f);
  const auto tasks = (*s)->ConfigureRound(1, {1});
  const auto a = Update(1, std::vector<float>(n, 1.0f), 10);
  ASSERT_TRUE((*s)->Aggregate(1, tasks, {a}, &params).ok());
  ASSERT_TRUE((*s)->Aggregate(2, tasks, {a}, &params).ok());
  // steps of 1 then 1.5
  EXPECT_FLOAT_EQ(params[0], 2.5f);
}

TEST(BackpropStrategy, FedSgdStepsAgainstTheMeanGradient) {
  Config c;
  c.estimator = "fedsgd";
  c.lr = 0.1;
  const ModelSpec spec = Tiny();
  auto s = MakeStrategy(c, spec);
  ASSERT_TRUE(s.ok());
  const size_t n = static_cast<size_t>(spec.NumParams());
  std::vector<float> params(n, 1.0f);
  const auto tasks = (*s)->ConfigureRound(1, {4, 9});
  EXPECT_EQ(tasks[0].estimator, "fedsgd");
  const auto a = Update(4, std::vector<float>(n, 2.0f), 50);
  const auto b = Update(9, std::vector<float>(n, 4.0f), 50);
  ASSERT_TRUE((*s)->Aggregate(1, tasks, {a, b}, &params).ok());
  for (float p : params) ASSERT_FLOAT_EQ(p, 1.0f - 0.1f * 3.0f);
}

TEST(BackpropStrategy, RejectsBadUpdates) {
  Config c;
  c.estimator = "fedavg";
  const ModelSpec spec = Tiny();
  auto s = MakeStrategy(c, spec);
  ASSERT_TRUE(s.ok());
  const size_t n = static_cast<size_t>(spec.NumParams());
  const auto tasks = (*s)->ConfigureRound(1, {1});
  EXPECT_FALSE(
      (*s)->ValidateResult(tasks[0], Update(1, std::vector<float>(n - 1), 5))
          .ok());
  auto nan = Update(1, std::vector<float>(n, 0.0f), 5);
  nan.update[7] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_FALSE((*s)->ValidateResult(tasks[0], nan).ok());
  EXPECT_FALSE(
      (*s)->ValidateResult(tasks[0], Update(1, std::vector<float>(n), 0)).ok());
  auto jvp = Update(1, {}, 5);
  jvp.jvps = {0.5};
  EXPECT_FALSE((*s)->ValidateResult(tasks[0], jvp).ok());
}

TEST(ForwardGradientStrategy, RejectsAModelUpdate) {
  Config c;
  auto s = MakeStrategy(c, Tiny());
  ASSERT_TRUE(s.ok());
  const auto tasks = (*s)->ConfigureRound(1, {1});
  ClientResult r;
  r.client_id = 1;
  r.jvps = {0.1};
  r.update = {1.0f};
  r.num_samples = 5;
  EXPECT_FALSE((*s)->ValidateResult(tasks[0], r).ok());
}

// Seed-replay sync rests on this: the step a strategy reports reproduces
// its Aggregate bit for bit when applied to the model it started from (here
// with weight splitting's per-layer restrict masks and normalized normal
// tangents). Under plain SGD the terms carry -lr * coefficient; with
// momentum, Adam or clip_step they are the raw gradient and a client takes
// the same optimizer step (common/step_rule.h) on its own copy of the
// state, which must end equal to the strategy's, at 1 and 2 threads.
TEST(ForwardGradientStrategy, LastUpdateAsSeedsReplaysTheMergeExactly) {
  const ModelSpec spec = GetModelSpec("mlp", {1, 28, 28}).value();
  Config c;
  c.lr = 0.01;
  c.tangent.count = 2;
  c.tangent.normalize = true;
  c.tangent.split = "layers";
  for (const char* variant : {"sgd", "momentum", "adam", "clip_step",
                              "momentum+clip_step", "frank_wolfe"}) {
    Config m = c;
    const std::string v = variant;
    if (v == "momentum" || v == "momentum+clip_step") m.momentum = 0.9;
    if (v == "adam") m.server_optimizer.type = "adam";
    if (v == "frank_wolfe") {
      m.server_optimizer.type = "frank_wolfe";
      m.server_optimizer.radius = 50;
    }
    if (v == "clip_step" || v == "momentum+clip_step") m.clip_step = 0.05;
    const StepRule rule = StepRuleOf(m);
    EXPECT_EQ(rule.Stateful(), v != "sgd") << v;
    for (int threads : {1, 2}) {
      auto s = MakeStrategy(m, spec, threads);
      ASSERT_TRUE(s.ok()) << s.status();
      std::vector<float> params = InitialParams(spec, 3);
      std::vector<float> replayed = params;
      std::vector<float> state, scratch;
      if (rule.Stateful()) {
        const std::vector<float>* start = (*s)->ReplayState();
        ASSERT_NE(start, nullptr) << v;
        state = *start;  // zeros: what a client starts from
        EXPECT_EQ(
            state,
            std::vector<float>(
                static_cast<size_t>(rule.StateSize(spec.NumParams())), 0.0f))
            << v;
      } else {
        EXPECT_EQ((*s)->ReplayState(), nullptr);
      }
      for (int64_t round = 1; round <= 4; ++round) {
        const auto tasks = (*s)->ConfigureRound(round, {1, 2, 3, 4});
        std::vector<ClientResult> results;
        for (const auto& t : tasks) {
          ClientResult r;
          r.client_id = t.client_id;
          r.round = round;
          r.jvps = {0.25 * t.client_id,
                    -0.5 + 0.1 * static_cast<double>(round)};
          r.num_samples = 10 + t.client_id;
          results.push_back(r);
        }
        const std::vector<float> before = params;
        ASSERT_TRUE((*s)->Aggregate(round, tasks, results, &params).ok());
        SeedStep step;
        ASSERT_TRUE((*s)->LastUpdateAsSeeds(&step)) << v;
        EXPECT_EQ(step.terms.size(), 8u);
        ApplySeedStep(step, rule, spec.Layout(), &state, replayed.data(),
                      &scratch, 3 - threads);
        EXPECT_EQ(replayed, params) << v << " round " << round;
        EXPECT_NE(params, before) << v << " round " << round;
        if (rule.Stateful()) {
          EXPECT_EQ(state, *(*s)->ReplayState()) << v << " round " << round;
        }
      }
    }
  }
}

// tangent.layer_counts on cnn_small (conv1, conv2, fc): the task's first
// `count` keys perturb the convolutions only, then the named layer's keys
// its own parameters only, indices running on; the merge averages each
// group over its own keys, and the round replays bit for bit.
TEST(ForwardGradientStrategy, LayerCountsGiveEachNamedLayerItsOwnKeys) {
  const ModelSpec spec = GetModelSpec("cnn_small", {1, 28, 28}).value();
  ASSERT_EQ(spec.params.size(), 6u);
  Config c;
  c.lr = 0.05;
  c.tangent.count = 2;
  c.tangent.structure = "rank1";
  c.tangent.layer_counts = {{"fc", 5}};
  auto groups = TangentGroups(c, spec);
  ASSERT_TRUE(groups.ok()) << groups.status();
  EXPECT_EQ(*groups, (std::vector<std::pair<uint64_t, int>>{{0b001111, 2},
                                                            {0b110000, 5}}));
  auto s = MakeStrategy(c, spec, 1);
  ASSERT_TRUE(s.ok()) << s.status();
  std::vector<float> params = InitialParams(spec, 3);
  std::vector<float> replayed = params;
  const auto tasks = (*s)->ConfigureRound(1, {1, 2});
  ASSERT_EQ(tasks.size(), 2u);
  std::vector<ClientResult> results;
  for (const auto& t : tasks) {
    ASSERT_EQ(t.tangents.size(), 7u);
    for (uint32_t k = 0; k < 7; ++k) {
      EXPECT_EQ(t.tangents[k].index, k);
      EXPECT_EQ(t.tangents[k].client, t.client_id);
      EXPECT_EQ(t.tangents[k].param_mask, k < 2 ? 0b001111u : 0b110000u);
    }
    ClientResult r;
    r.client_id = t.client_id;
    r.round = 1;
    r.jvps = {0.5, -0.25, 0.1, 0.2, -0.3, 0.4, 0.05};
    r.num_samples = 16;
    results.push_back(r);
  }
  ASSERT_TRUE((*s)->Aggregate(1, tasks, results, &params).ok());
  SeedStep step;
  ASSERT_TRUE((*s)->LastUpdateAsSeeds(&step));
  ASSERT_EQ(step.terms.size(), 14u);
  // -lr * (client weight 1/2) * d / (group size): 2 conv keys, 5 fc keys.
  EXPECT_FLOAT_EQ(step.terms[0].alpha,
                  static_cast<float>(-0.05 * 0.5 * 0.5 / 2));
  EXPECT_FLOAT_EQ(step.terms[2].alpha,
                  static_cast<float>(-0.05 * 0.5 * 0.1 / 5));
  std::vector<float> state, scratch;
  ApplySeedStep(step, StepRuleOf(c), spec.Layout(), &state, replayed.data(),
                &scratch, 2);
  EXPECT_EQ(replayed, params);

  // Errors name the layer and list the model's.
  Config bad = c;
  bad.tangent.layer_counts = {{"fc2", 5}};
  auto unknown = MakeStrategy(bad, spec, 1);
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("'fc2'"), std::string::npos);
  EXPECT_NE(unknown.status().message().find("conv1, conv2, fc"),
            std::string::npos)
      << unknown.status();
  bad.tangent.layer_counts = {{"fc", 5}, {"conv1", 1}, {"conv2", 1}};
  auto all = MakeStrategy(bad, spec, 1);
  ASSERT_FALSE(all.ok());
  EXPECT_NE(all.status().message().find("names every layer"), std::string::npos)
      << all.status();
}

// Shared-tangent rounds: ten clients with K = 3 shared keys give a round
// of 3 seed terms (not 30), and the step is the unshared merge's up to
// float rounding.
TEST(ForwardGradientStrategy, SharedSeedRoundsReplayKTermsWhateverTheClients) {
  const ModelSpec spec = Tiny();
  Config c;
  c.lr = 0.1;
  c.tangent.count = 3;
  c.tangent.shared_seed = true;
  std::vector<uint32_t> live;
  for (uint32_t id = 1; id <= 10; ++id) live.push_back(id);
  auto results_of = [](const std::vector<TaskSpec>& tasks) {
    std::vector<ClientResult> out;
    for (const auto& t : tasks) {
      ClientResult r;
      r.client_id = t.client_id;
      r.round = t.round;
      for (int k = 0; k < 3; ++k) {
        r.jvps.push_back(0.1 * t.client_id - 0.2 * k);
      }
      r.num_samples = 5 + t.client_id;
      out.push_back(r);
    }
    return out;
  };
  for (const std::string merge : {"weighted", "average", "naive"}) {
    const MergeRule rule = merge == "weighted"  ? MergeRule::kWeighted
                           : merge == "average" ? MergeRule::kAverage
                                                : MergeRule::kNaive;
    c.merge = rule;
    auto s = MakeStrategy(c, spec);
    ASSERT_TRUE(s.ok()) << s.status();
    std::vector<float> params = InitialParams(spec, 2);
    const std::vector<float> start = params;
    const auto tasks = (*s)->ConfigureRound(1, live);
    ASSERT_EQ(tasks.size(), 10u);
    for (const auto& t : tasks) EXPECT_EQ(t.tangents, tasks[0].tangents);
    const auto results = results_of(tasks);
    ASSERT_TRUE((*s)->Aggregate(1, tasks, results, &params).ok());
    SeedStep step;
    ASSERT_TRUE((*s)->LastUpdateAsSeeds(&step));
    EXPECT_EQ(step.terms.size(), 3u) << merge;
    // The same merge with every term applied on its own.
    std::vector<JvpContribution> contributions;
    for (size_t i = 0; i < tasks.size(); ++i) {
      contributions.push_back({results[i].client_id, tasks[i].tangents,
                               results[i].jvps, results[i].num_samples});
    }
    std::vector<float> separate = start;
    for (const auto& g : PlanMerge(rule, contributions, 0, {})) {
      for (const auto& term : g) {
        AddScaledTangentFlat(term.key, spec.Layout(),
                             static_cast<float>(-c.lr * term.coef),
                             separate.data());
      }
    }
    double diff = 0, moved = 0;
    for (size_t i = 0; i < params.size(); ++i) {
      diff = std::max(diff,
                      static_cast<double>(std::abs(params[i] - separate[i])));
      moved =
          std::max(moved, static_cast<double>(std::abs(params[i] - start[i])));
    }
    EXPECT_GT(moved, 1e-3) << merge;
    EXPECT_LT(diff, 1e-5) << merge;
  }
}

// The optimizer state a forward-gradient strategy carries survives a
// checkpoint under its old names (sgd.momentum; adam.m and adam.v), and a
// restored strategy steps exactly as the saved one.
TEST(ForwardGradientStrategy, StepStateSurvivesSaveAndLoad) {
  const ModelSpec spec = Tiny();
  for (const char* variant : {"momentum", "adam", "frank_wolfe"}) {
    Config c;
    c.lr = 0.05;
    const std::string v = variant;
    if (v == "momentum") c.momentum = 0.9;
    if (v == "adam") c.server_optimizer.type = "adam";
    if (v == "frank_wolfe") {
      c.server_optimizer.type = "frank_wolfe";
      c.server_optimizer.radius = 5;
    }
    auto a = MakeStrategy(c, spec);
    auto b = MakeStrategy(c, spec);
    ASSERT_TRUE(a.ok() && b.ok());
    std::vector<float> pa = InitialParams(spec, 1);
    auto round = [&](Strategy* s, int64_t r, std::vector<float>* p) {
      const auto tasks = s->ConfigureRound(r, {1});
      ClientResult res;
      res.client_id = 1;
      res.round = r;
      res.jvps = {0.3 + 0.1 * static_cast<double>(r)};
      res.num_samples = 10;
      ASSERT_TRUE(s->Aggregate(r, tasks, {res}, p).ok());
    };
    round(a->get(), 1, &pa);
    round(a->get(), 2, &pa);
    const StrategyState saved = (*a)->SaveState();
    ASSERT_EQ(saved.size(), v == "adam" ? 2u : 1u);
    EXPECT_EQ(saved[0].first, v == "adam"          ? "adam.m"
                              : v == "frank_wolfe" ? "frank_wolfe.average_steps"
                                                   : "sgd.momentum");
    if (v == "frank_wolfe") {
      // d, then the two steps taken.
      ASSERT_EQ(saved[0].second.size(),
                static_cast<size_t>(spec.NumParams() + 1));
      EXPECT_EQ(saved[0].second.back(), 2.0f);
    }
    ASSERT_TRUE((*b)->LoadState(saved).ok());
    std::vector<float> pb = pa;
    round(a->get(), 3, &pa);
    round(b->get(), 3, &pb);
    EXPECT_EQ(pa, pb) << variant;
    EXPECT_EQ(*(*a)->ReplayState(), *(*b)->ReplayState()) << variant;
    // A state of the wrong size or of the other optimizer is refused.
    StrategyState wrong = saved;
    wrong[0].second.pop_back();
    EXPECT_FALSE((*b)->LoadState(wrong).ok()) << variant;
    StrategyState other = {
        {std::string(variant) == "adam" ? "sgd.momentum" : "adam.m",
         saved[0].second}};
    EXPECT_FALSE((*b)->LoadState(other).ok()) << variant;
  }
}

// The estimator names live in one place (common/estimators.h): every name
// a config may set parses and gets a strategy, on exactly one side of the
// forward / dense line; every name a task carries is one of them.
TEST(Estimators, EveryConfigNameParsesAndHasOneStrategy) {
  for (const std::string& name : ConfigEstimators()) {
    auto config = ParseConfig(
        absl::StrCat("model: tiny\nestimator: ", name, "\n"), "/", {});
    ASSERT_TRUE(config.ok()) << name << ": " << config.status();
    EXPECT_TRUE(MakeStrategy(*config, Tiny()).ok()) << name;
    EXPECT_NE(IsForwardGradientEstimator(name), IsDenseUpdateEstimator(name))
        << name;
  }
  for (const std::string& name : TaskEstimators()) {
    EXPECT_NE(
        std::find(ConfigEstimators().begin(), ConfigEstimators().end(), name),
        ConfigEstimators().end())
        << name;
  }
  auto bad = ParseConfig("model: tiny\nestimator: backward\n", "/", {});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("projected"), std::string::npos)
      << bad.status();
}

}  // namespace
}  // namespace fedfwd
