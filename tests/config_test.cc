#include "common/config.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/step_rule.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace fedfwd {
namespace {

using ::testing::HasSubstr;

absl::StatusOr<Config> Parse(const std::string& yaml,
                             const std::vector<std::string>& overrides = {}) {
  return ParseConfig(yaml, "/base", overrides, "test.yaml");
}

// Expects an InvalidArgument error whose message contains every fragment.
void ExpectError(const absl::StatusOr<Config>& result,
                 const std::vector<std::string>& fragments) {
  ASSERT_FALSE(result.ok())
      << "expected an error containing " << fragments.front();
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument)
      << result.status();
  for (const std::string& f : fragments) {
    EXPECT_THAT(std::string(result.status().message()), HasSubstr(f));
  }
}

void ExpectEqualConfigs(const Config& a, const Config& b) {
  EXPECT_EQ(a.model, b.model);
  EXPECT_EQ(a.dataset.name, b.dataset.name);
  EXPECT_EQ(a.dataset.data_dir, b.dataset.data_dir);
  EXPECT_EQ(a.dataset.train_limit, b.dataset.train_limit);
  EXPECT_EQ(a.dataset.test_limit, b.dataset.test_limit);
  EXPECT_EQ(a.partition.type, b.partition.type);
  EXPECT_EQ(a.partition.shards_per_client, b.partition.shards_per_client);
  EXPECT_EQ(a.partition.alpha, b.partition.alpha);
  EXPECT_EQ(a.local_epochs, b.local_epochs);
  EXPECT_EQ(a.sampling.fraction, b.sampling.fraction);
  EXPECT_EQ(a.sampling.minimum, b.sampling.minimum);
  EXPECT_EQ(a.server_optimizer.type, b.server_optimizer.type);
  EXPECT_EQ(a.server_optimizer.lr, b.server_optimizer.lr);
  EXPECT_EQ(a.server_optimizer.momentum, b.server_optimizer.momentum);
  EXPECT_EQ(a.server_optimizer.beta1, b.server_optimizer.beta1);
  EXPECT_EQ(a.server_optimizer.beta2, b.server_optimizer.beta2);
  EXPECT_EQ(a.server_optimizer.eps, b.server_optimizer.eps);
  EXPECT_EQ(a.compression, b.compression);
  EXPECT_EQ(a.clients, b.clients);
  EXPECT_EQ(a.min_clients, b.min_clients);
  EXPECT_EQ(a.rounds, b.rounds);
  EXPECT_EQ(a.seed, b.seed);
  EXPECT_EQ(a.estimator, b.estimator);
  EXPECT_EQ(a.merge, b.merge);
  EXPECT_EQ(a.algorithm, b.algorithm);
  EXPECT_EQ(a.weight_decay, b.weight_decay);
  EXPECT_EQ(a.peer.steps, b.peer.steps);
  EXPECT_EQ(a.peer.tau, b.peer.tau);
  EXPECT_EQ(a.peer.alpha, b.peer.alpha);
  EXPECT_EQ(a.peer.beta, b.peer.beta);
  EXPECT_EQ(a.peer.synchronous, b.peer.synchronous);
  EXPECT_EQ(a.peer.push_probability, b.peer.push_probability);
  EXPECT_EQ(a.peer.topology, b.peer.topology);
  EXPECT_EQ(a.peer.degree, b.peer.degree);
  EXPECT_EQ(a.peer.noise_std, b.peer.noise_std);
  EXPECT_EQ(a.peer.nesterov, b.peer.nesterov);
  EXPECT_EQ(a.tangent.distribution, b.tangent.distribution);
  EXPECT_EQ(a.tangent.shared_seed, b.tangent.shared_seed);
  EXPECT_EQ(a.lr, b.lr);
  EXPECT_EQ(a.lr_schedule.type, b.lr_schedule.type);
  EXPECT_EQ(a.lr_schedule.decay_rounds, b.lr_schedule.decay_rounds);
  EXPECT_EQ(a.lr_schedule.min_lr, b.lr_schedule.min_lr);
  EXPECT_EQ(a.momentum, b.momentum);
  EXPECT_EQ(a.clip_jvp, b.clip_jvp);
  EXPECT_EQ(a.batch_size, b.batch_size);
  EXPECT_EQ(a.eval_every, b.eval_every);
  EXPECT_EQ(a.targets, b.targets);
  EXPECT_EQ(a.stop_at_target, b.stop_at_target);
  EXPECT_EQ(a.timeouts.round_s, b.timeouts.round_s);
  EXPECT_EQ(a.timeouts.client_s, b.timeouts.client_s);
  EXPECT_EQ(a.timeouts.join_s, b.timeouts.join_s);
  EXPECT_EQ(a.robust.rule, b.robust.rule);
  EXPECT_EQ(a.robust.trim, b.robust.trim);
  EXPECT_EQ(a.robust.quantile, b.robust.quantile);
  EXPECT_EQ(a.robust.multiplier, b.robust.multiplier);
  EXPECT_EQ(a.robust.window, b.robust.window);
  EXPECT_EQ(a.robust.dense, b.robust.dense);
  EXPECT_EQ(a.robust.norm, b.robust.norm);
}

const char kFullYaml[] = R"(
model: cnn
dataset:
  name: fashion-mnist
  data_dir: /data/fm
  train_limit: 5000
  test_limit: 1000
partition: iid
clients: 8
min_clients: 6
rounds: 250
seed: 18446744073709551615
estimator: jvp
merge: naive
tangent:
  distribution: rademacher
  shared_seed: true
lr: 1e-3
lr_schedule:
  type: cosine
  decay_rounds: 500
  min_lr: 1.5e-5
momentum: 0.9
clip_jvp: 1
batch_size: 128
eval_every: 25
targets: [0.8, 0.5, 0.75]
timeouts:
  round_s: 30
  client_s: 5.5
  join_s: 120
)";

TEST(Config, EmptyDocumentGivesDefaults) {
  for (const std::string text : {"", "# only a comment\n", "{}"}) {
    absl::StatusOr<Config> c = Parse(text);
    ASSERT_TRUE(c.ok()) << c.status();
    ExpectEqualConfigs(*c, Config());
    EXPECT_EQ(c->dataset.data_dir, "");
  }
}

TEST(Config, EveryKeyParses) {
  absl::StatusOr<Config> c = Parse(kFullYaml);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model, "cnn");
  EXPECT_EQ(c->dataset.name, "fashion-mnist");
  EXPECT_EQ(c->dataset.data_dir, "/data/fm");
  EXPECT_EQ(c->dataset.train_limit, 5000);
  EXPECT_EQ(c->dataset.test_limit, 1000);
  EXPECT_EQ(c->partition.type, "iid");
  EXPECT_EQ(c->clients, 8);
  EXPECT_EQ(c->min_clients, 6);
  EXPECT_EQ(c->rounds, 250);
  EXPECT_EQ(c->seed, 18446744073709551615ull);
  EXPECT_EQ(c->estimator, "jvp");
  EXPECT_EQ(c->merge, MergeRule::kNaive);
  EXPECT_EQ(c->tangent.distribution, "rademacher");
  EXPECT_TRUE(c->tangent.shared_seed);
  EXPECT_DOUBLE_EQ(c->lr, 1e-3);
  EXPECT_EQ(c->lr_schedule.type, "cosine");
  EXPECT_DOUBLE_EQ(c->lr_schedule.decay_rounds, 500);
  EXPECT_DOUBLE_EQ(c->lr_schedule.min_lr, 1.5e-5);
  EXPECT_DOUBLE_EQ(c->momentum, 0.9);
  EXPECT_DOUBLE_EQ(c->clip_jvp, 1);
  EXPECT_EQ(c->batch_size, 128);
  EXPECT_EQ(c->eval_every, 25);
  EXPECT_EQ(c->targets, (std::vector<double>{0.5, 0.75, 0.8}));
  EXPECT_DOUBLE_EQ(c->timeouts.round_s, 30);
  EXPECT_DOUBLE_EQ(c->timeouts.client_s, 5.5);
  EXPECT_DOUBLE_EQ(c->timeouts.join_s, 120);
  EXPECT_EQ(c->source_path, "");
}

TEST(Config, JvpBitsIs8Or32And8NeedsAClip) {
  auto ok = Parse("clip_jvp: 1\njvp_bits: 8\n");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->jvp_bits, 8);
  auto back = Parse(ConfigToYaml(*ok));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->jvp_bits, 8);
  for (const char* bad : {"jvp_bits: 8\n", "clip_jvp: 1\njvp_bits: 16\n",
                          "clip_jvp: 1\njvp_bits: 4\n"}) {
    auto r = Parse(bad);
    EXPECT_TRUE(absl::IsInvalidArgument(r.status())) << bad;
    EXPECT_NE(r.status().message().find("jvp_bits"), std::string::npos)
        << r.status();
  }
  auto shared = Parse("tangent: {structure: rank1_shared, count: 8}\n");
  ASSERT_TRUE(shared.ok()) << shared.status();
  EXPECT_EQ(shared->tangent.structure, "rank1_shared");
}

TEST(Config, DecentralizedKeysParseAndRoundTrip) {
  absl::StatusOr<Config> c = Parse(
      "algorithm: sgp\nclients: 8\nweight_decay: 1e-4\npeer:\n  steps: "
      "1500\n  tau: 8\n  alpha: 0.05\n  beta: 0.8\n  synchronous: false\n"
      "  push_probability: 0.2\n  topology: random\n  degree: 3\n"
      "  noise_std: 0.01\n  nesterov: false\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->algorithm, "sgp");
  EXPECT_DOUBLE_EQ(c->weight_decay, 1e-4);
  EXPECT_EQ(c->peer.steps, 1500);
  EXPECT_EQ(c->peer.tau, 8);
  EXPECT_DOUBLE_EQ(c->peer.alpha, 0.05);
  EXPECT_DOUBLE_EQ(c->peer.beta, 0.8);
  EXPECT_FALSE(c->peer.synchronous);
  EXPECT_DOUBLE_EQ(c->peer.push_probability, 0.2);
  EXPECT_EQ(c->peer.topology, "random");
  EXPECT_EQ(c->peer.degree, 3);
  EXPECT_DOUBLE_EQ(c->peer.noise_std, 0.01);
  EXPECT_FALSE(c->peer.nesterov);
  absl::StatusOr<Config> back = Parse(ConfigToYaml(*c));
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectEqualConfigs(*back, *c);
}

TEST(Config, DecentralizedErrorsNameKeyAndValue) {
  auto ring = Parse("algorithm: sgp\npeer: {topology: ring}\n");
  ASSERT_FALSE(ring.ok());
  EXPECT_THAT(std::string(ring.status().message()), HasSubstr("peer.topology"));
  auto alone = Parse("algorithm: gosgd\nclients: 1\n");
  ASSERT_FALSE(alone.ok());
  EXPECT_THAT(std::string(alone.status().message()), HasSubstr("clients"));
  auto algo = Parse("algorithm: allreduce\n");
  ASSERT_FALSE(algo.ok());
  EXPECT_THAT(std::string(algo.status().message()), HasSubstr("algorithm"));
  EXPECT_FALSE(Parse("peer: {alpha: 1.0}\n").ok());
  EXPECT_FALSE(Parse("peer: {push_probability: 1.5}\n").ok());
  EXPECT_FALSE(Parse("weight_decay: -1\n").ok());
}

TEST(Config, LayerCountsParseRoundTripAndRefuseWhatTheyCannotJoin) {
  auto c = Parse(
      "estimator: jvp\ntangent: {count: 64, layer_counts: {fc: 512, conv2: "
      "3}}\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->tangent.layer_counts,
            (std::map<std::string, int>{{"fc", 512}, {"conv2", 3}}));
  // Every key's scalar counts (privacy accounting uses this total).
  EXPECT_EQ(TangentsPerClient(c->tangent), 64 + 512 + 3);
  EXPECT_EQ(TangentsPerClient(Config().tangent), 1);
  auto back = Parse(ConfigToYaml(*c));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->tangent.layer_counts, c->tangent.layer_counts);
  auto set = Parse("estimator: jvp\n", {"tangent.layer_counts={fc: 7}"});
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->tangent.layer_counts, (std::map<std::string, int>{{"fc", 7}}));
  ExpectError(Parse("tangent: {layer_counts: [1, 2]}\n"),
              {"tangent.layer_counts", "expected a map"});
  ExpectError(Parse("tangent: {layer_counts: {fc: 0}}\n"),
              {"tangent.layer_counts.fc", "must be in [1, 16384]"});
  ExpectError(Parse("tangent: {layer_counts: {fc: many}}\n"),
              {"tangent.layer_counts.fc", "expected an integer"});
  ExpectError(Parse("estimator: fedavg\ntangent: {layer_counts: {fc: 8}}\n"),
              {"'tangent.layer_counts' applies to forward gradients"});
  ExpectError(Parse("tangent: {split: layers, layer_counts: {fc: 8}}\n"),
              {"'tangent.split: none'"});
  ExpectError(Parse("tangent: {combine: projection, layer_counts: {fc: 8}}\n"),
              {"'tangent.combine: mean'"});
  ExpectError(Parse("tangent: {count: 1000, layer_counts: {fc: 16000}}\n"),
              {"17000 tangents per client per round"});
}

TEST(Config, MergeRulesParseAndName) {
  for (MergeRule rule :
       {MergeRule::kNaive, MergeRule::kAverage, MergeRule::kWeighted}) {
    absl::StatusOr<Config> c =
        Parse(std::string("merge: ") + MergeRuleName(rule));
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->merge, rule);
  }
  EXPECT_STREQ(MergeRuleName(MergeRule::kAverage), "average");
}

TEST(Config, UnknownTopLevelKeyIsNamed) {
  ExpectError(Parse("rounds: 3\nround: 4\n"),
              {"unknown config key 'round'", "test.yaml", "line 2"});
}

TEST(Config, UnknownNestedKeyIsNamedInFull) {
  ExpectError(Parse("tangent:\n  distrib: normal\n"),
              {"unknown config key 'tangent.distrib' in test.yaml"});
  ExpectError(Parse("timeouts: {round_s: 1, rounds: 2}"),
              {"'timeouts.rounds'"});
}

TEST(Config, DuplicateKeyIsAnError) {
  ExpectError(Parse("lr: 0.1\nlr: 0.2\n"), {"duplicate config key 'lr'"});
}

TEST(Config, TypeErrorsNameKeyAndValue) {
  ExpectError(Parse("rounds: abc"), {"'rounds'", "'abc'", "integer"});
  ExpectError(Parse("rounds: 1e3"), {"'rounds'", "'1e3'"});
  ExpectError(Parse("rounds: 2.5"), {"'rounds'", "'2.5'"});
  ExpectError(Parse("targets: 3"), {"'targets'", "list"});
  ExpectError(Parse("targets: [0.5, x]"), {"'targets[1]'", "'x'"});
  ExpectError(Parse("lr: fast"), {"'lr'", "'fast'", "number"});
  ExpectError(Parse("tangent: {shared_seed: maybe}"),
              {"'tangent.shared_seed'", "'maybe'"});
  ExpectError(Parse("dataset: mnist"), {"'dataset'", "expected a map"});
  ExpectError(Parse("model: [a, b]"), {"'model'", "a list"});
  ExpectError(Parse("seed: -1"), {"'seed'", "'-1'"});
  ExpectError(Parse("- 1\n- 2\n"), {"must be a YAML map"});
}

TEST(Config, RangeErrorsNameKeyAndValue) {
  ExpectError(Parse("clients: 0"), {"'clients'", "got 0"});
  ExpectError(Parse("clients: 1025"), {"'clients'", "1025"});
  ExpectError(Parse("clients: 4\nmin_clients: 5\n"),
              {"'min_clients'", "<= clients", "5"});
  ExpectError(Parse("min_clients: 0"), {"'min_clients'"});
  ExpectError(Parse("rounds: 0"), {"'rounds'", "got 0"});
  ExpectError(Parse("lr: 0"), {"'lr'", "got 0"});
  ExpectError(Parse("lr: -1e-3"), {"'lr'", "-0.001"});
  ExpectError(Parse("lr: .inf"), {"'lr'"});
  ExpectError(Parse("lr: nan"), {"'lr'", "finite"});
  ExpectError(Parse("momentum: 1"), {"'momentum'", "got 1"});
  ExpectError(Parse("momentum: -0.1"), {"'momentum'"});
  ExpectError(Parse("clip_jvp: -1"), {"'clip_jvp'"});
  ExpectError(Parse("batch_size: 65537"), {"'batch_size'", "65537"});
  ExpectError(Parse("eval_every: 0"), {"'eval_every'"});
  ExpectError(Parse("targets: [0.5, 1.5]"), {"'targets[1]'", "1.5"});
  ExpectError(Parse("targets: [0]"), {"'targets[0]'"});
  ExpectError(Parse("timeouts: {join_s: 0}"), {"'timeouts.join_s'"});
  ExpectError(Parse("lr_schedule: {decay_rounds: 0}"),
              {"'lr_schedule.decay_rounds'"});
  ExpectError(Parse("lr_schedule: {min_lr: -1}"), {"'lr_schedule.min_lr'"});
  ExpectError(Parse("dataset: {train_limit: -1}"),
              {"'dataset.train_limit'", "-1"});
  ExpectError(Parse("dataset: {name: svhn}"), {"'dataset.name'", "'svhn'"});
  ExpectError(Parse("merge: median"), {"'merge'", "'median'"});
  ExpectError(Parse("partition: banana"), {"'partition.type'", "'banana'"});
  ExpectError(Parse("partition: {type: dirichlet, alpha: 0}"),
              {"'partition.alpha'"});
  ExpectError(Parse("partition: {shards_per_client: 0}"),
              {"'partition.shards_per_client'"});
  ExpectError(Parse("sampling: {fraction: 0}"), {"'sampling.fraction'"});
  ExpectError(Parse("sampling: {fraction: 1.5}"), {"'sampling.fraction'"});
  ExpectError(Parse("server_optimizer: {type: lamb}"),
              {"'server_optimizer.type'", "'lamb'"});
  ExpectError(Parse("server_optimizer: {beta2: 1}"),
              {"'server_optimizer.beta2'"});
  ExpectError(Parse("compression: zip"), {"'compression'", "'zip'"});
  ExpectError(Parse("local_epochs: 0"), {"'local_epochs'"});
  ExpectError(Parse("estimator: spsa"), {"'estimator'", "'spsa'"});
  ExpectError(Parse("tangent: {distribution: uniform}"),
              {"'tangent.distribution'", "'uniform'"});
  ExpectError(Parse("lr_schedule: {type: step}"),
              {"'lr_schedule.type'", "'step'"});
  ExpectError(Parse("model: ''"), {"'model'", "empty"});
}

TEST(Config, RobustKeysParse) {
  absl::StatusOr<Config> c = Parse(
      "robust: {rule: quantile_clip, trim: 0.2, quantile: 0.9, multiplier: "
      "3, window: 50, dense: norm_clip, norm: 2.5}\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->robust.rule, "quantile_clip");
  EXPECT_DOUBLE_EQ(c->robust.trim, 0.2);
  EXPECT_DOUBLE_EQ(c->robust.quantile, 0.9);
  EXPECT_DOUBLE_EQ(c->robust.multiplier, 3);
  EXPECT_EQ(c->robust.window, 50);
  EXPECT_EQ(c->robust.dense, "norm_clip");
  EXPECT_DOUBLE_EQ(c->robust.norm, 2.5);
  absl::StatusOr<Config> back =
      ParseConfig(ConfigToYaml(*c), "/", {}, "roundtrip");
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectEqualConfigs(*c, *back);
  EXPECT_EQ(Config().robust.rule, "none");
  EXPECT_EQ(Config().robust.dense, "none");
  auto set = Parse("", {"robust.rule=median", "robust.dense=trimmed_mean"});
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->robust.rule, "median");
  EXPECT_EQ(set->robust.dense, "trimmed_mean");
}

TEST(Config, RobustErrorsNameKeyAndValue) {
  ExpectError(Parse("robust: {rule: krum}"),
              {"'robust.rule'", "'krum'", "quantile_clip"});
  ExpectError(Parse("robust: {dense: krum}"),
              {"'robust.dense'", "'krum'", "norm_clip"});
  ExpectError(Parse("robust: {trim: 0.5}"), {"'robust.trim'", "[0, 0.5)"});
  ExpectError(Parse("robust: {trim: -0.1}"), {"'robust.trim'"});
  ExpectError(Parse("robust: {quantile: 0}"), {"'robust.quantile'", "(0, 1]"});
  ExpectError(Parse("robust: {quantile: 1.5}"), {"'robust.quantile'"});
  ExpectError(Parse("robust: {multiplier: 0}"), {"'robust.multiplier'"});
  ExpectError(Parse("robust: {window: 0}"), {"'robust.window'", "got 0"});
  ExpectError(Parse("robust: {norm: -1}"), {"'robust.norm'"});
  ExpectError(Parse("robust: {median: true}"),
              {"unknown config key 'robust.median'"});
  ExpectError(Parse("robust: median"), {"'robust'", "expected a map"});
}

TEST(Config, SyntaxErrorNamesFileAndLine) {
  ExpectError(Parse("rounds: 3\nlr: [1, 2\nseed: 4\n"),
              {"YAML syntax error", "test.yaml", "line "});
  absl::StatusOr<Config> c = Parse("a: b\n  c: d: e\n");
  ExpectError(c, {"test.yaml", "line 2"});
}

TEST(Config, BackpropKeysParse) {
  absl::StatusOr<Config> c = Parse(R"(
estimator: fedavg
partition: {type: dirichlet, alpha: 0.1, shards_per_client: 3}
local_epochs: 5
sampling: {fraction: 0.3, minimum: 2}
server_optimizer: {type: adam, lr: 0.01, momentum: 0.5, beta1: 0.8,
                   beta2: 0.95, eps: 1e-4}
compression: int8
stop_at_target: true
)");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->estimator, "fedavg");
  EXPECT_EQ(c->partition.type, "dirichlet");
  EXPECT_DOUBLE_EQ(c->partition.alpha, 0.1);
  EXPECT_EQ(c->partition.shards_per_client, 3);
  EXPECT_EQ(c->local_epochs, 5);
  EXPECT_DOUBLE_EQ(c->sampling.fraction, 0.3);
  EXPECT_EQ(c->sampling.minimum, 2);
  EXPECT_EQ(c->server_optimizer.type, "adam");
  EXPECT_DOUBLE_EQ(c->server_optimizer.lr, 0.01);
  EXPECT_DOUBLE_EQ(c->server_optimizer.momentum, 0.5);
  EXPECT_DOUBLE_EQ(c->server_optimizer.beta1, 0.8);
  EXPECT_DOUBLE_EQ(c->server_optimizer.beta2, 0.95);
  EXPECT_DOUBLE_EQ(c->server_optimizer.eps, 1e-4);
  EXPECT_EQ(c->compression, "int8");
  EXPECT_TRUE(c->stop_at_target);
  absl::StatusOr<Config> back =
      ParseConfig(ConfigToYaml(*c), "/", {}, "roundtrip");
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectEqualConfigs(*back, *c);
}

TEST(Config, RegressionTakesOwnDataAndAnIidOrIdPartition) {
  absl::StatusOr<Config> c = Parse(R"(
task: regression
dataset: {name: csv, data_dir: data/d, label: y}
partition: iid
)");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->task, "regression");
  EXPECT_TRUE(c->dataset.file.regression);
  absl::StatusOr<Config> back =
      ParseConfig(ConfigToYaml(*c), "/", {}, "roundtrip");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(back->dataset.file.regression);
  EXPECT_FALSE(
      Parse("dataset: {name: csv, data_dir: d}\n")->dataset.file.regression);
  ExpectError(Parse("task: regression\n"), {"task", "own data", "mnist"});
  ExpectError(Parse("task: regression\ndataset: {name: npz, data_dir: d}\n"
                    "partition: {type: dirichlet}\n"),
              {"partition.type", "dirichlet", "iid or id"});
  ExpectError(Parse("task: regression\ndataset: {name: npz, data_dir: d, "
                    "classes: 3}\n"),
              {"dataset.classes"});
  ExpectError(Parse("task: ranking\n"), {"task", "ranking"});
}

TEST(Config, FrankWolfeTakesARadiusAndForwardOnlyClients) {
  absl::StatusOr<Config> c = Parse(R"(
estimator: jvp
lr: 0.25
lr_schedule: {type: inverse, decay_rounds: 8}
server_optimizer: {type: frank_wolfe, radius: 300}
)");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->server_optimizer.type, "frank_wolfe");
  EXPECT_DOUBLE_EQ(c->server_optimizer.radius, 300);
  const StepRule rule = StepRuleOf(*c);
  EXPECT_TRUE(rule.frank_wolfe);
  EXPECT_EQ(rule.radius, 300);
  absl::StatusOr<Config> back =
      ParseConfig(ConfigToYaml(*c), "/", {}, "roundtrip");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_DOUBLE_EQ(back->server_optimizer.radius, 300);
  ExpectError(Parse("server_optimizer: {type: frank_wolfe}\n"),
              {"server_optimizer.radius", "> 0"});
  ExpectError(Parse("estimator: fedavg\nserver_optimizer: {type: "
                    "frank_wolfe, radius: 5}\n"),
              {"jvp or fd", "fedavg"});
  ExpectError(Parse("estimator: projected\nserver_optimizer: {type: "
                    "frank_wolfe, radius: 5}\n"),
              {"jvp or fd", "projected"});
  ExpectError(Parse("lr: 1.5\nserver_optimizer: {type: frank_wolfe, radius: "
                    "5}\n"),
              {"step size", "1.5"});
  ExpectError(Parse("momentum: 0.9\nserver_optimizer: {type: frank_wolfe, "
                    "radius: 5}\n"),
              {"momentum"});
  ExpectError(Parse("server_optimizer: {radius: 5}\n"),
              {"server_optimizer.radius", "frank_wolfe"});
  ExpectError(Parse("server_optimizer: {k: 5}\n"),
              {"server_optimizer.k", "frank_wolfe"});
  absl::StatusOr<Config> k =
      Parse("server_optimizer: {type: frank_wolfe, radius: 300, k: 1000}\n");
  ASSERT_TRUE(k.ok()) << k.status();
  EXPECT_EQ(StepRuleOf(*k).fw_k, 1000);
  EXPECT_FALSE(StepRuleOf(*k).fw_project);  // start: prune
  k = Parse(
      "server_optimizer: {type: frank_wolfe, radius: 300, start: project}\n");
  ASSERT_TRUE(k.ok()) << k.status();
  EXPECT_TRUE(StepRuleOf(*k).fw_project);
  ExpectError(Parse("server_optimizer: {start: project}\n"),
              {"server_optimizer.start", "frank_wolfe"});
}

TEST(Config, PartitionShorthandTakesOverrides) {
  absl::StatusOr<Config> c =
      Parse("partition: shards\n", {"partition.shards_per_client=4"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->partition.type, "shards");
  EXPECT_EQ(c->partition.shards_per_client, 4);
  c = Parse("", {"partition.type=dirichlet", "partition.alpha=0.3"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->partition.type, "dirichlet");
  EXPECT_DOUBLE_EQ(c->partition.alpha, 0.3);
}

TEST(Config, OverrideScalar) {
  absl::StatusOr<Config> c = Parse("lr: 0.5\nrounds: 3\n", {"lr=1e-3"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->lr, 1e-3);
  EXPECT_EQ(c->rounds, 3);
}

TEST(Config, OverrideNestedCreatesMap) {
  absl::StatusOr<Config> c =
      Parse("", {"dataset.name=fashion-mnist", "tangent.shared_seed=true"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->dataset.name, "fashion-mnist");
  EXPECT_TRUE(c->tangent.shared_seed);

  c = Parse("dataset:\n  name: mnist\n  train_limit: 7\n",
            {"dataset.name=fashion-mnist"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->dataset.name, "fashion-mnist");
  EXPECT_EQ(c->dataset.train_limit, 7);
}

TEST(Config, OverrideList) {
  absl::StatusOr<Config> c = Parse("targets: [0.9]", {"targets=[0.8,0.5]"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->targets, (std::vector<double>{0.5, 0.8}));
}

TEST(Config, OverrideLastWins) {
  absl::StatusOr<Config> c = Parse("", {"rounds=5", "rounds=9"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rounds, 9);
}

TEST(Config, OverrideErrors) {
  ExpectError(Parse("", {"tangent.distrib=normal"}),
              {"unknown config key 'tangent.distrib'"});
  ExpectError(Parse("", {"lr.x=1"}), {"unknown config key 'lr.x'"});
  ExpectError(Parse("", {"lr"}), {"malformed override 'lr'"});
  ExpectError(Parse("", {"=3"}), {"malformed override"});
  ExpectError(Parse("", {"rounds=abc"}), {"'rounds'", "'abc'"});
  ExpectError(Parse("", {"targets=[0.5"}), {"targets=[0.5", "YAML"});
  ExpectError(Parse("dataset: 3", {"dataset.name=mnist"}),
              {"'dataset'", "not a map"});
}

TEST(Config, EmptyOverrideValueIsEmptyString) {
  absl::StatusOr<Config> c =
      Parse("dataset: {data_dir: rel}", {"dataset.data_dir="});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->dataset.data_dir, "");
}

TEST(Config, RelativeDataDirResolvesAgainstBaseDir) {
  absl::StatusOr<Config> c =
      ParseConfig("dataset: {data_dir: ../data/./mnist/}", "/srv/run/configs",
                  {}, "x.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->dataset.data_dir, "/srv/run/data/mnist");

  c = ParseConfig("dataset: {data_dir: /abs//dir}", "/elsewhere", {}, "x");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->dataset.data_dir, "/abs/dir");
}

TEST(Config, RoundTripThroughYaml) {
  absl::StatusOr<Config> c = Parse(kFullYaml);
  ASSERT_TRUE(c.ok()) << c.status();
  // Values that do not print exactly in few digits, and odd strings.
  c->lr = 0.1 + 0.2;
  c->lr_schedule.min_lr = 1.0 / 3.0;
  c->model = "yes";
  c->dataset.data_dir = "/path with spaces/: colon";
  const std::string yaml = ConfigToYaml(*c);
  absl::StatusOr<Config> back = ParseConfig(yaml, "/", {}, "roundtrip");
  ASSERT_TRUE(back.ok()) << back.status() << "\n" << yaml;
  ExpectEqualConfigs(*back, *c);

  absl::StatusOr<Config> defaults =
      ParseConfig(ConfigToYaml(Config()), "/", {}, "defaults");
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  ExpectEqualConfigs(*defaults, Config());
}

TEST(Config, JsonHasSameShape) {
  absl::StatusOr<Config> c = Parse(kFullYaml);
  ASSERT_TRUE(c.ok()) << c.status();
  nlohmann::json j = nlohmann::json::parse(ConfigToJson(*c));
  EXPECT_EQ(j["model"], "cnn");
  EXPECT_EQ(j["dataset"]["name"], "fashion-mnist");
  EXPECT_EQ(j["merge"], "naive");
  EXPECT_EQ(j["seed"].get<uint64_t>(), 18446744073709551615ull);
  EXPECT_EQ(j["tangent"]["shared_seed"], true);
  EXPECT_EQ(j["lr"].get<double>(), 1e-3);
  EXPECT_EQ(j["targets"].size(), 3u);
  EXPECT_EQ(j["timeouts"]["client_s"].get<double>(), 5.5);
}

// Dotted leaf keys of a config's JSON form (lists are leaves).
void FlattenJson(const nlohmann::json& j, const std::string& prefix,
                 std::map<std::string, nlohmann::json>* out) {
  if (!j.is_object()) {
    (*out)[prefix] = j;
    return;
  }
  for (auto it = j.begin(); it != j.end(); ++it) {
    FlattenJson(it.value(), prefix.empty() ? it.key() : prefix + "." + it.key(),
                out);
  }
}

// configs/README.md is the one place where keys are documented: its table
// must list every key the parser knows, each with the parser's default.
TEST(Config, ReferenceDocumentsEveryKeyWithItsDefault) {
  std::ifstream in(std::string(FEDFWD_SOURCE_DIR) + "/configs/README.md");
  ASSERT_TRUE(in.good()) << "configs/README.md is missing";
  std::map<std::string, nlohmann::json> defaults;
  FlattenJson(nlohmann::json::parse(ConfigToJson(Config())), "", &defaults);
  std::map<std::string, std::string> documented;  // key -> default text
  std::string line;
  while (std::getline(in, line)) {
    // | `key` | `default` | meaning |
    if (line.rfind("| `", 0) != 0) continue;
    const size_t key_end = line.find('`', 3);
    ASSERT_NE(key_end, std::string::npos) << line;
    const size_t d0 = line.find("| `", key_end);
    ASSERT_NE(d0, std::string::npos) << "no default in: " << line;
    const size_t d1 = line.find('`', d0 + 3);
    ASSERT_NE(d1, std::string::npos) << line;
    const std::string key = line.substr(3, key_end - 3);
    std::string value = line.substr(d0 + 3, d1 - d0 - 3);
    if (value == "\"\"") value.clear();
    EXPECT_TRUE(documented.emplace(key, value).second)
        << key << " is documented twice";
  }
  for (const auto& [key, value] : defaults) {
    EXPECT_TRUE(documented.count(key)) << "undocumented config key " << key;
  }
  for (const auto& [key, text] : documented) {
    if (text == "{}" && !defaults.count(key)) {
      // A map the config tree carries only when set (tangent.layer_counts):
      // the parser knows it, and setting it empty leaves the tree as the
      // default's.
      absl::StatusOr<Config> c = Parse("", {key + "={}"});
      ASSERT_TRUE(c.ok()) << key << ": " << c.status();
      EXPECT_EQ(ConfigToJson(*c), ConfigToJson(Config())) << key;
      continue;
    }
    if (key == "model.torchscript" && !defaults.count(key)) {
      // The map form of `model` (model: {torchscript: FILE}): the tree
      // carries it only when set, and a registered model is the default.
      EXPECT_EQ(defaults["model"], "mlp");
      EXPECT_EQ(text, "");
      continue;
    }
    ASSERT_TRUE(defaults.count(key))
        << "documented key " << key << " is not a config key";
    // The documented default, set explicitly, must give the default value.
    absl::StatusOr<Config> c = Parse("", {key + "=" + text});
    ASSERT_TRUE(c.ok()) << key << ": " << c.status();
    std::map<std::string, nlohmann::json> got;
    FlattenJson(nlohmann::json::parse(ConfigToJson(*c)), "", &got);
    EXPECT_EQ(got[key], defaults[key])
        << key << " is documented with default '" << text << "'";
  }
}

class ConfigFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fedfwd_config_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Write(const std::string& name, const std::string& text) {
    std::filesystem::create_directories(
        std::filesystem::path(dir_ + "/" + name).parent_path());
    std::ofstream(dir_ + "/" + name) << text;
    return dir_ + "/" + name;
  }
  std::string dir_;
};

TEST_F(ConfigFileTest, LoadsFileResolvesPathsAndAppliesOverrides) {
  const std::string path =
      Write("configs/exp.yaml", "rounds: 7\ndataset: {data_dir: ../data}\n");
  absl::StatusOr<Config> c = LoadConfigFile(path, {"seed=99"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rounds, 7);
  EXPECT_EQ(c->seed, 99u);
  EXPECT_EQ(c->source_path, path);
  EXPECT_EQ(c->dataset.data_dir,
            std::filesystem::path(dir_ + "/data").lexically_normal().string());
}

TEST_F(ConfigFileTest, ErrorsNameTheFile) {
  const std::string path = Write("bad.yaml", "tangent:\n  distrib: x\n");
  absl::StatusOr<Config> c = LoadConfigFile(path);
  ExpectError(c, {"'tangent.distrib'", path, "line 2"});
}

TEST_F(ConfigFileTest, MissingFileIsNotFound) {
  const std::string path = dir_ + "/nope.yaml";
  absl::StatusOr<Config> c = LoadConfigFile(path);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr(path));
}

}  // namespace
}  // namespace fedfwd
