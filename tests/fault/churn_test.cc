// Stragglers and churn with the real binaries on loopback (TLS, tokens): a
// client slower than the round deadline (frozen with SIGSTOP) is left out
// of that round and takes part again afterwards; a client SIGKILLed
// mid-run and started again takes its shard back by itself while the
// others go on. (A late result for a closed round is refused: see
// HostileInputTest.)
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

#include "absl/strings/str_cat.h"
#include "tests/testutil/process.h"
#include "tests/testutil/synthetic_data.h"
#include "tools/launcher.h"

namespace fedfwd::testing {
namespace {

using json = nlohmann::json;

class Churn : public ::testing::Test {
 protected:
  void SetUp() override {
    FEDFWD_REQUIRE_MNIST();
    dir_ = MakeTempDir("fedfwd-churn");
    auto sec = MakeLocalSecurity(dir_ + "/secrets", 3);
    ASSERT_TRUE(sec.ok()) << sec.status();
    sec_ = *sec;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string StartServer(const std::string& extra) {
    const std::string config = dir_ + "/config.yaml";
    std::ofstream(config) << absl::StrCat(R"(model: tiny
dataset:
  name: mnist
  data_dir: )",
                                          RealMnistDir(), R"(
  train_limit: 3000
  test_limit: 500
clients: 3
seed: 2
merge: average
lr: 0.05
clip_jvp: 1.0
batch_size: 64
min_clients: 1
)",
                                          extra);
    server_ = StartServerChild(config, dir_ + "/out", sec_.server_args,
                               dir_ + "/server.log");
    const std::string address = WaitForListenAddress(*server_);
    EXPECT_FALSE(address.empty()) << server_->Log();
    return address;
  }

  ChildProcess* StartClient(const std::string& address, int shard) {
    const auto argv =
        ClientArgv(address, RealMnistDir(), shard, 3,
                   sec_.client_args.at(static_cast<size_t>(shard)));
    clients_.push_back(std::make_unique<ChildProcess>(
        argv,
        absl::StrCat(dir_, "/client-", shard, "-", clients_.size(), ".log")));
    return clients_.back().get();
  }

  size_t Rows() { return ReadJsonRows(dir_ + "/out/metrics.jsonl").size(); }

  std::string dir_;
  LocalSecurity sec_;
  std::unique_ptr<ChildProcess> server_;
  std::vector<std::unique_ptr<ChildProcess>> clients_;
};

TEST_F(Churn, ClientSlowerThanTheDeadlineIsLeftOutAndCarriesOn) {
  // A short round deadline, a long client timeout: a frozen client is late,
  // not dead.
  const std::string address = StartServer(
      "rounds: 60\neval_every: 10\n"
      "timeouts: {round_s: 1.5, client_s: 60}\n");
  for (int i = 0; i < 3; ++i) StartClient(address, i);
  ASSERT_TRUE(WaitUntil([&] { return Rows() >= 6; }, absl::Seconds(120)))
      << server_->Log();
  ChildProcess* slow = clients_[2].get();
  slow->Signal(SIGSTOP);  // slower than any deadline for 4 s
  absl::SleepFor(absl::Seconds(4));
  slow->Signal(SIGCONT);
  const auto code = server_->Wait(absl::Seconds(240));
  ASSERT_TRUE(code.has_value()) << server_->Log();
  ASSERT_EQ(*code, 0) << server_->Log();
  const auto rows = ReadJsonRows(dir_ + "/out/metrics.jsonl");
  ASSERT_EQ(rows.size(), 61u);
  size_t first_partial = 0;
  bool back = false;
  for (size_t r = 1; r < rows.size(); ++r) {
    EXPECT_EQ(rows[r]["round"].get<int64_t>(), static_cast<int64_t>(r));
    const int merged = rows[r]["clients"].get<int>();
    if (merged == 2 && first_partial == 0) first_partial = r;
    if (merged == 3 && first_partial > 0) back = true;
  }
  EXPECT_GT(first_partial, 0u) << "no round closed at its deadline without it";
  EXPECT_TRUE(back) << "it did not take part again";
  const std::string log = server_->Log();
  EXPECT_NE(log.find("deadline of 1.5 s passed with 2/3 results"),
            std::string::npos)
      << log;
  EXPECT_EQ(log.find("dropped"), std::string::npos) << log;
  // It was never told to leave and finishes with the others.
  const auto slow_code = slow->Wait(absl::Seconds(30));
  ASSERT_TRUE(slow_code.has_value()) << slow->Log();
  EXPECT_EQ(*slow_code, 0) << slow->Log();
}

TEST_F(Churn, ClientKilledMidRoundAndRestartedTakesItsShardBack) {
  // Open-ended: the test stops the coordinator (SIGINT) once the restarted
  // client has taken part for a while, however fast rounds are here.
  const std::string address = StartServer(
      "rounds: 1000000\neval_every: 1000\n"
      "timeouts: {round_s: 10, client_s: 3}\n");
  for (int i = 0; i < 3; ++i) StartClient(address, i);
  ASSERT_TRUE(WaitUntil([&] { return Rows() >= 8; }, absl::Seconds(120)))
      << server_->Log();
  clients_[1]->Signal(SIGKILL);
  ASSERT_EQ(clients_[1]->Wait(absl::Seconds(10)), 128 + SIGKILL);
  // Started again at once: its old registration is still live for up to
  // client_s, so the new daemon waits for the shard instead of giving up.
  ChildProcess* again = StartClient(address, 1);
  ASSERT_TRUE(
      WaitUntil([&] { return CountOf(server_->Log(), "shard 1; ") >= 2; },
                absl::Seconds(60)))
      << server_->Log() << again->Log();
  const size_t rejoined_at = Rows();
  ASSERT_TRUE(
      WaitUntil([&] { return Rows() >= rejoined_at + 10; }, absl::Seconds(60)))
      << server_->Log();
  server_->Signal(SIGINT);
  const auto code = server_->Wait(absl::Seconds(60));
  ASSERT_TRUE(code.has_value()) << server_->Log();
  EXPECT_EQ(*code, 130) << server_->Log();
  const auto rows = ReadJsonRows(dir_ + "/out/metrics.jsonl");
  ASSERT_GE(rows.size(), rejoined_at + 10);
  int partial = 0, full_after = 0;
  for (size_t r = 1; r < rows.size(); ++r) {
    EXPECT_EQ(rows[r]["round"].get<int64_t>(), static_cast<int64_t>(r));
    const int merged = rows[r]["clients"].get<int>();
    if (merged < 3) ++partial;
    if (merged == 3 && r >= rejoined_at) ++full_after;
  }
  EXPECT_GE(partial, 1) << "no round went on without the killed client";
  // (The round the SIGINT cut short may have merged fewer.)
  EXPECT_GE(full_after, 5) << "it did not take part again";
  // Told to stop, every daemon ends cleanly, the restarted one included.
  for (ChildProcess* c : {clients_[0].get(), clients_[2].get(), again}) {
    const auto cc = c->Wait(absl::Seconds(30));
    ASSERT_TRUE(cc.has_value()) << c->Log();
    EXPECT_EQ(*cc, 0) << c->Log();
  }
}

}  // namespace
}  // namespace fedfwd::testing
