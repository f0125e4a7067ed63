// Crash recovery with the real binaries: the coordinator is SIGKILLed mid-run
// and restarted with --resume on the same address while its clients keep
// running. The round counter must go on from the checkpoint with no gap and
// no repeat, the clients must carry on by themselves, and (merging being
// deterministic) the final model must equal an uninterrupted run's bit for
// bit. Real MNIST (data/mnist, fetched by scripts/setup.sh).
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

#include "absl/strings/str_cat.h"
#include "common/model_file.h"
#include "server/checkpoint.h"
#include "tests/testutil/process.h"
#include "tests/testutil/synthetic_data.h"
#include "tools/launcher.h"

namespace fedfwd::testing {
namespace {

using json = nlohmann::json;

constexpr int kClients = 3;
constexpr int kRounds = 40;

// Forward gradients with momentum (optimizer state that must survive), an
// lr schedule (a function of the round) and label-skewed shards.
std::string Config() {
  return absl::StrCat(R"(model: tiny
dataset:
  name: mnist
  data_dir: )",
                      RealMnistDir(), R"(
  train_limit: 3000
  test_limit: 500
partition: {type: dirichlet, alpha: 0.5}
clients: )",
                      kClients, "\nrounds: ", kRounds, R"(
seed: 11
merge: average
momentum: 0.9
lr: 0.02
lr_schedule: {type: cosine}
clip_jvp: 1.0
batch_size: 128
eval_every: 5
timeouts: {client_s: 30, round_s: 60}
)");
}

class Resume : public ::testing::Test {
 protected:
  void SetUp() override {
    FEDFWD_REQUIRE_MNIST();
    dir_ = MakeTempDir("fedfwd-resume");
    auto sec = MakeLocalSecurity(dir_ + "/secrets", kClients);
    ASSERT_TRUE(sec.ok()) << sec.status();
    sec_ = *sec;
    config_ = dir_ + "/config.yaml";
    std::ofstream(config_) << Config();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Starts the coordinator writing to `out` and returns HOST:PORT.
  std::string StartServer(const std::string& out, const std::string& listen,
                          bool resume) {
    std::vector<std::string> flags = sec_.server_args;
    // Strictly every round, however fast rounds are.
    flags.push_back("--checkpoint-min-interval=0");
    if (resume) flags.push_back("--resume");
    server_ = StartServerChild(
        config_, out, flags,
        absl::StrCat(out, "-server-", ++server_starts_, ".log"), listen);
    const std::string address = WaitForListenAddress(*server_);
    EXPECT_FALSE(address.empty()) << server_->Log();
    return address;
  }

  // Client i + 1 holds shard i: one at a time, so that the pairing of
  // client ids (which key the tangents) and shards is the same in every run.
  void StartClients(const std::string& address, const std::string& out) {
    for (int i = 0; i < kClients; ++i) {
      const auto argv = ClientArgv(address, RealMnistDir(), i, kClients,
                                   sec_.client_args.at(static_cast<size_t>(i)));
      clients_.push_back(std::make_unique<ChildProcess>(
          argv, absl::StrCat(out, "-client-", i, ".log")));
      const std::string joined = absl::StrCat("client ", i + 1, " joined");
      ASSERT_TRUE(WaitUntil(
          [&] {
            return server_->Log().find(joined) != std::string::npos ||
                   !server_->Running();
          },
          absl::Seconds(60)))
          << server_->Log();
      ASSERT_NE(server_->Log().find(joined), std::string::npos)
          << server_->Log();
    }
  }

  void ExpectCleanEnd() {
    const auto code = server_->Wait(absl::Seconds(300));
    ASSERT_TRUE(code.has_value()) << "server did not finish\n"
                                  << server_->Log();
    EXPECT_EQ(*code, 0) << server_->Log();
    for (auto& c : clients_) {
      const auto cc = c->Wait(absl::Seconds(30));
      ASSERT_TRUE(cc.has_value()) << c->Log();
      EXPECT_EQ(*cc, 0) << c->Log();
    }
    clients_.clear();
  }

  std::vector<float> FinalParams(const std::string& out) {
    auto f = ReadModelFile(out + "/final_model.bin");
    EXPECT_TRUE(f.ok()) << f.status();
    return f.ok() ? f->params : std::vector<float>{};
  }

  std::string dir_, config_;
  LocalSecurity sec_;
  int server_starts_ = 0;
  std::unique_ptr<ChildProcess> server_;
  std::vector<std::unique_ptr<ChildProcess>> clients_;
};

TEST_F(Resume, KilledCoordinatorResumesWithNoLostRoundAndTheSameModel) {
  // The reference: one uninterrupted run.
  const std::string ref = dir_ + "/ref";
  StartClients(StartServer(ref, "127.0.0.1:0", false), ref);
  ExpectCleanEnd();
  const std::vector<float> expected = FinalParams(ref);
  ASSERT_FALSE(expected.empty());

  // The same run, SIGKILLed once some rounds are done, resumed on the same
  // address; the clients are never restarted.
  const std::string out = dir_ + "/out";
  const std::string address = StartServer(out, "127.0.0.1:0", false);
  StartClients(address, out);
  ASSERT_TRUE(WaitUntil(
      [&] { return ReadJsonRows(out + "/metrics.jsonl").size() >= 12; },
      absl::Seconds(120)))
      << server_->Log();
  ASSERT_TRUE(server_->Running()) << "the run ended before the kill";
  server_->Signal(SIGKILL);
  ASSERT_EQ(server_->Wait(absl::Seconds(10)), 128 + SIGKILL);
  auto checkpoint = ReadCheckpoint(out + "/" + kCheckpointFileName);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  const int64_t saved = checkpoint->rounds_done();
  const int64_t rows_at_kill =
      static_cast<int64_t>(ReadJsonRows(out + "/metrics.jsonl").size());
  // Checkpoint every round: at most the round being written is lost.
  EXPECT_GE(saved, rows_at_kill - 2);
  EXPECT_LT(saved, kRounds);

  // A resume with another config is refused and touches nothing.
  {
    const std::string other = dir_ + "/other.yaml";
    std::string text = Config();
    text.replace(text.find("lr: 0.02"), 8, "lr: 0.03");
    std::ofstream(other) << text;
    const std::string rows_before = ReadFile(out + "/metrics.jsonl");
    std::vector<std::string> flags = sec_.server_args;
    flags.push_back("--resume");
    auto refused = StartServerChild(other, out, flags, dir_ + "/other.log");
    EXPECT_EQ(refused->Wait(absl::Seconds(60)), 2);
    EXPECT_NE(refused->Log().find("another config"), std::string::npos)
        << refused->Log();
    EXPECT_EQ(ReadFile(out + "/metrics.jsonl"), rows_before);
  }

  StartServer(out, address, true);
  ExpectCleanEnd();
  const std::string log = server_->Log();
  EXPECT_NE(log.find(absl::StrCat("resuming after round ", saved)),
            std::string::npos)
      << log;
  // The clients rode the outage out under the ids they had.
  EXPECT_EQ(log.find("joined"), std::string::npos) << log;

  // Rounds 0..kRounds, each once, in order.
  const auto rows = ReadJsonRows(out + "/metrics.jsonl");
  ASSERT_EQ(rows.size(), static_cast<size_t>(kRounds + 1));
  for (size_t r = 0; r < rows.size(); ++r) {
    EXPECT_EQ(rows[r]["round"].get<int64_t>(), static_cast<int64_t>(r));
  }
  const auto ref_rows = ReadJsonRows(ref + "/metrics.jsonl");
  ASSERT_EQ(ref_rows.size(), rows.size());
  for (size_t r = 0; r < rows.size(); r += 5) {
    EXPECT_EQ(rows[r]["test_acc"], ref_rows[r]["test_acc"]) << "round " << r;
  }
  const std::vector<float> got = FinalParams(out);
  ASSERT_EQ(got.size(), expected.size());
  EXPECT_TRUE(got == expected) << "the resumed model differs";

  // The finished run is not resumed again.
  auto summary = json::parse(ReadFile(out + "/summary.json"), nullptr, false);
  ASSERT_FALSE(summary.is_discarded());
  EXPECT_EQ(summary["rounds"].get<int64_t>(), kRounds);
  EXPECT_FALSE(summary["interrupted"].get<bool>());
  std::vector<std::string> flags = sec_.server_args;
  flags.push_back("--resume");
  const std::string rows_before = ReadFile(out + "/metrics.jsonl");
  auto refused = StartServerChild(config_, out, flags, dir_ + "/again.log");
  EXPECT_EQ(refused->Wait(absl::Seconds(60)), 2);
  EXPECT_NE(refused->Log().find("nothing to resume"), std::string::npos)
      << refused->Log();
  EXPECT_EQ(ReadFile(out + "/metrics.jsonl"), rows_before);
}

TEST_F(Resume, DamagedOrMissingCheckpointIsRefusedClearly) {
  const std::string out = dir_ + "/empty";
  std::filesystem::create_directories(out);
  std::vector<std::string> flags = sec_.server_args;
  flags.push_back("--resume");
  {
    auto p = StartServerChild(config_, out, flags, dir_ + "/missing.log");
    EXPECT_EQ(p->Wait(absl::Seconds(60)), 2);
    EXPECT_NE(p->Log().find("no checkpoint in"), std::string::npos) << p->Log();
  }
  // A checkpoint cut short (a disk that filled up, a bad copy).
  ckpt::Checkpoint c;
  c.set_format(kCheckpointFormat);
  c.set_params(std::string(4000, '\0'));
  std::string bytes = EncodeCheckpoint(c);
  bytes.resize(bytes.size() - 100);
  std::ofstream(out + "/" + kCheckpointFileName, std::ios::binary) << bytes;
  {
    auto p = StartServerChild(config_, out, flags, dir_ + "/truncated.log");
    EXPECT_EQ(p->Wait(absl::Seconds(60)), 2);
    EXPECT_NE(p->Log().find("truncated"), std::string::npos) << p->Log();
  }
}

}  // namespace
}  // namespace fedfwd::testing
