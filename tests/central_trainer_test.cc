// The centralized trainer and the client estimators it shares with the
// daemons, on synthetic MNIST-shaped data.
#include "tools/central_trainer.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "common/config.h"
#include "common/model.h"
#include "common/model_file.h"
#include "common/rng.h"
#include "common/trainer.h"
#include "gtest/gtest.h"
#include "server/run_summary.h"
#include "tests/testutil/synthetic_data.h"

namespace fedfwd {
namespace {

class CentralTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::MakeTempDir("fedfwd_central_test_");
    ASSERT_FALSE(
        testing::WriteSyntheticMnist(dir_ + "/data", 600, 200, 4).empty());
    config_.model = "tiny";
    config_.dataset.name = "mnist";
    config_.dataset.data_dir = dir_ + "/data";
    config_.rounds = 60;
    config_.eval_every = 20;
    config_.batch_size = 32;
    config_.seed = 2;
    config_.targets = {0.5};
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::vector<nlohmann::json> Rows(const std::string& out) {
    std::vector<nlohmann::json> rows;
    std::ifstream in(out + "/metrics.jsonl");
    std::string line;
    while (std::getline(in, line)) rows.push_back(nlohmann::json::parse(line));
    return rows;
  }
  std::string dir_;
  Config config_;
};

TEST_F(CentralTest, BackpropLearnsAndWritesStepRowsAndModels) {
  config_.estimator = "backprop";
  config_.lr = 0.5;
  CentralOptions o;
  o.out_dir = dir_ + "/out";
  o.quiet = true;
  ASSERT_TRUE(RunCentral(config_, o, nullptr).ok());
  const auto rows = Rows(o.out_dir);
  ASSERT_EQ(rows.size(), 4u);  // step 0, 20, 40, 60
  EXPECT_EQ(rows[3]["step"].get<int64_t>(), 60);
  EXPECT_FALSE(rows[3].contains("round"));
  EXPECT_GT(rows[3]["test_acc"].get<double>(), 0.9);
  std::ifstream s(o.out_dir + "/summary.json");
  const nlohmann::json summary = nlohmann::json::parse(s);
  EXPECT_EQ(summary["steps"].get<int64_t>(), 60);
  EXPECT_TRUE(summary["targets"][0]["reached"].get<bool>());
  auto parsed = ParseRunSummary(summary.dump());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->mode, "central");
  EXPECT_EQ(parsed->rounds, 60);
  ASSERT_FALSE(parsed->targets.empty());
  EXPECT_TRUE(parsed->targets[0].reached);
  EXPECT_GT(parsed->targets[0].round, 0);
  auto final_model = ReadModelFile(o.out_dir + "/final_model.bin");
  ASSERT_TRUE(final_model.ok()) << final_model.status();
  EXPECT_EQ(final_model->header.round, 60);
  auto best = ReadModelFile(o.out_dir + "/best_model.bin");
  ASSERT_TRUE(best.ok()) << best.status();
  EXPECT_DOUBLE_EQ(best->header.test_acc,
                   summary["best_test_acc"].get<double>());
}

TEST_F(CentralTest, ForwardGradientRunsTheJvpPath) {
  config_.estimator = "jvp";
  config_.lr = 0.01;
  config_.rounds = 20;
  CentralOptions o;
  o.out_dir = dir_ + "/fg";
  o.quiet = true;
  ASSERT_TRUE(RunCentral(config_, o, nullptr).ok());
  const auto rows = Rows(o.out_dir);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_GT(rows[1]["test_acc"].get<double>(), 0.0);
}

TEST_F(CentralTest, StopAtTargetEndsAtTheFirstEvaluationReachingIt) {
  config_.estimator = "backprop";
  config_.lr = 0.5;
  config_.rounds = 200;
  config_.eval_every = 10;
  config_.targets = {0.3, 0.6};
  config_.stop_at_target = true;
  CentralOptions o;
  o.out_dir = dir_ + "/stop";
  o.quiet = true;
  ASSERT_TRUE(RunCentral(config_, o, nullptr).ok());
  const auto rows = Rows(o.out_dir);
  ASSERT_GE(rows.size(), 2u);
  EXPECT_LT(rows.back()["step"].get<int64_t>(), 200);
  EXPECT_GE(rows.back()["test_acc"].get<double>(), 0.6);
  for (size_t i = 1; i + 1 < rows.size(); ++i) {
    EXPECT_LT(rows[i]["test_acc"].get<double>(), 0.6) << i;
  }
  std::ifstream s(o.out_dir + "/summary.json");
  const nlohmann::json summary = nlohmann::json::parse(s);
  EXPECT_TRUE(summary["stopped_at_target"].get<bool>());
  EXPECT_FALSE(summary["interrupted"].get<bool>());
}

TEST_F(CentralTest, FedAvgIsRefused) {
  config_.estimator = "fedavg";
  CentralOptions o;
  o.out_dir = dir_ + "/x";
  o.quiet = true;
  EXPECT_TRUE(absl::IsInvalidArgument(RunCentral(config_, o, nullptr)));
}

// estimator projected: the scalars g . v_k from one backprop gradient are
// the JVPs along the same tangents, on the same minibatch, to float
// rounding (mask and normalization included).
TEST_F(CentralTest, ProjectedEstimatorGivesTheJvpScalars) {
  TrainerOptions t;
  t.model = "mlp_small";
  t.dataset = "mnist";
  t.data_dir = dir_ + "/data";
  t.seed = 1;
  t.shard = 0;
  t.num_shards = 2;
  auto spec = GetModelSpec("mlp_small", {1, 28, 28});
  ASSERT_TRUE(spec.ok());
  const std::vector<float> start = InitialParams(*spec, 5);
  LocalTask task;
  task.round = 3;
  task.batch_size = 32;
  for (uint32_t k = 0; k < 5; ++k) {
    TangentKey key;
    key.run_seed = 9;
    key.round = 3;
    key.client = 1;
    key.index = k;
    key.type =
        k % 2 ? TangentDistribution::kNormal : TangentDistribution::kRademacher;
    key.normalized = k == 3;
    key.param_mask = k == 4 ? 0x3 : 0;  // the first layer only
    task.tangents.push_back(key);
  }
  std::vector<LocalResult> out;
  for (const char* estimator : {"jvp", "projected"}) {
    auto trainer = Trainer::Create(t);
    ASSERT_TRUE(trainer.ok()) << trainer.status();
    ASSERT_TRUE((*trainer)->SetModel(start, 1).ok());
    task.estimator = estimator;
    auto r = (*trainer)->Run(task);
    ASSERT_TRUE(r.ok()) << r.status();
    out.push_back(*r);
  }
  ASSERT_EQ(out[1].jvps.size(), 5u);
  EXPECT_NEAR(out[1].loss, out[0].loss, 1e-6);
  EXPECT_EQ(out[1].num_samples, 32);
  for (size_t k = 0; k < 5; ++k) {
    EXPECT_NE(out[1].jvps[k], 0.0) << k;
    EXPECT_NEAR(out[1].jvps[k], out[0].jvps[k],
                1e-4 * std::abs(out[0].jvps[k]) + 1e-5)
        << k;
  }
}

TEST_F(CentralTest, FedAvgEstimatorReturnsADeltaAndKeepsTheModel) {
  TrainerOptions t;
  t.model = "tiny";
  t.dataset = "mnist";
  t.data_dir = dir_ + "/data";
  t.seed = 1;
  t.shard = 1;
  t.num_shards = 3;
  auto trainer = Trainer::Create(t);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  auto spec = GetModelSpec("tiny", {1, 28, 28});
  ASSERT_TRUE(spec.ok());
  const std::vector<float> start = InitialParams(*spec, 1);
  ASSERT_TRUE((*trainer)->SetModel(start, 1).ok());
  LocalTask task;
  task.round = 1;
  task.estimator = "fedavg";
  task.batch_size = 50;
  task.local_epochs = 2;
  task.lr = 0.5;
  auto r = (*trainer)->Run(task);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->num_samples, (*trainer)->shard_size());
  ASSERT_EQ(static_cast<int64_t>(r->update.size()), spec->NumParams());
  double norm = 0;
  for (float v : r->update) norm += v * v;
  EXPECT_GT(norm, 0.0);
  EXPECT_EQ((*trainer)->params(), start);  // the installed model is intact
  // A second identical task trains from the same start again.
  task.lr = 0.0;
  EXPECT_FALSE((*trainer)->Run(task).ok());  // lr must be positive

  task.estimator = "fedsgd";
  auto g = (*trainer)->Run(task);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->num_samples, 50);
  EXPECT_EQ(g->update.size(), r->update.size());
}

// A round's minibatch is a function of the round number alone: a trainer
// that computes round 5 straight after starting (a restarted client, a
// resumed run) sees the batch an uninterrupted one sees, and the rounds
// between walk the shard rather than repeat one batch.
TEST_F(CentralTest, ARoundsBatchDependsOnTheRoundNotOnTheHistory) {
  TrainerOptions t;
  t.model = "tiny";
  t.dataset = "mnist";
  t.data_dir = dir_ + "/data";
  t.seed = 1;
  t.shard = 0;
  t.num_shards = 2;  // 300 examples: rounds of 64 wrap past an epoch
  auto spec = GetModelSpec("tiny", {1, 28, 28});
  ASSERT_TRUE(spec.ok());
  const std::vector<float> start = InitialParams(*spec, 1);
  auto make = [&] {
    auto trainer = Trainer::Create(t);
    EXPECT_TRUE(trainer.ok()) << trainer.status();
    EXPECT_TRUE((*trainer)->SetModel(start, 1).ok());
    return std::move(*trainer);
  };
  LocalTask task;
  task.estimator = "fedsgd";
  task.batch_size = 64;
  auto steady = make();
  std::vector<std::vector<float>> grads;
  for (int64_t round = 1; round <= 6; ++round) {
    task.round = round;
    auto g = steady->Run(task);
    ASSERT_TRUE(g.ok()) << g.status();
    grads.push_back(g->update);
  }
  for (size_t i = 1; i < grads.size(); ++i) {
    EXPECT_NE(grads[i], grads[i - 1]) << "rounds " << i << " and " << i + 1;
  }
  for (int64_t round : {5, 2, 6}) {  // fresh trainers, and out of order
    auto fresh = make();
    task.round = round;
    auto g = fresh->Run(task);
    ASSERT_TRUE(g.ok()) << g.status();
    EXPECT_EQ(g->update, grads[static_cast<size_t>(round - 1)])
        << "round " << round;
  }
  // fedavg: round 2 begins where round 1's local epoch ended.
  task.estimator = "fedavg";
  task.lr = 0.1;
  task.batch_size = 50;
  task.round = 2;
  auto a = steady->Run(task);
  auto b = make()->Run(task);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->update, b->update);
}

}  // namespace
}  // namespace fedfwd
