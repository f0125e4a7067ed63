// Decentralized runs as separate processes: a real fedfwd-server and one
// fedfwd-client per worker, each serving its peer service over mutual TLS
// (the throwaway certificates of a loopback federation), on real MNIST.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/testutil/process.h"
#include "tests/testutil/synthetic_data.h"
#include "tools/launcher.h"

namespace fedfwd::testing {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

class Decentralized : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    FEDFWD_REQUIRE_MNIST();
    dir_ = MakeTempDir("fedfwd-decentral");
    auto sec = MakeLocalSecurity(dir_ + "/secrets", 3);
    ASSERT_TRUE(sec.ok()) << sec.status();
    sec_ = *sec;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Config(int steps) const {
    return absl::StrCat(R"(model: tiny
dataset:
  name: mnist
  data_dir: )",
                        RealMnistDir(), R"(
  train_limit: 6000
  test_limit: 1000
clients: 3
seed: 5
algorithm: )",
                        GetParam(), R"(
peer:
  steps: )",
                        steps, R"(
  tau: 2
  push_probability: 0.5
batch_size: 32
lr: 0.05
weight_decay: 0.0001
eval_every: 100
timeouts:
  client_s: 1.5
  round_s: 20
)");
  }

  // `advertise`: --peer-advertise per worker ("" for the default).
  void Start(int steps, std::vector<std::string> advertise = {}) {
    const std::string config = dir_ + "/config.yaml";
    std::ofstream(config) << Config(steps);
    server_ = StartServerChild(config, dir_ + "/out", sec_.server_args,
                               dir_ + "/server.log");
    const std::string address = WaitForListenAddress(*server_);
    ASSERT_FALSE(address.empty()) << server_->Log();
    for (int i = 0; i < 3; ++i) {
      std::vector<std::string> flags = sec_.client_args[i];
      flags.push_back("--peer-listen");
      flags.push_back("127.0.0.1:0");
      flags.insert(flags.end(), sec_.peer_args.begin(), sec_.peer_args.end());
      if (static_cast<size_t>(i) < advertise.size() &&
          !advertise[static_cast<size_t>(i)].empty()) {
        flags.push_back("--peer-advertise");
        flags.push_back(advertise[static_cast<size_t>(i)]);
      }
      clients_.push_back(std::make_unique<ChildProcess>(
          ClientArgv(address, RealMnistDir(), i, 3, flags),
          absl::StrCat(dir_, "/client-", i, ".log")));
    }
  }

  json Summary() const {
    return json::parse(ReadFile(dir_ + "/out/summary.json"), nullptr, false);
  }

  std::string dir_;
  LocalSecurity sec_;
  std::unique_ptr<ChildProcess> server_;
  std::vector<std::unique_ptr<ChildProcess>> clients_;
};

// Every worker finishes; the consensus learns; the peers' bytes are counted.
TEST_P(Decentralized, WorkersLearnTogether) {
  Start(1000);
  const auto code = server_->Wait(absl::Seconds(240));
  ASSERT_TRUE(code.has_value()) << server_->Log();
  ASSERT_EQ(*code, 0) << server_->Log() << clients_[0]->Log();
  for (auto& c : clients_) {
    const auto cc = c->Wait(absl::Seconds(30));
    ASSERT_TRUE(cc.has_value());
    EXPECT_EQ(*cc, 0) << c->Log();
  }
  const json s = Summary();
  ASSERT_FALSE(s.is_discarded());
  EXPECT_EQ(s["mode"], "decentralized");
  EXPECT_EQ(s["workers_finished"].get<int>(), 3);
  EXPECT_EQ(s["workers_lost"].get<int>(), 0);
  EXPECT_GT(s["final_test_acc"].get<double>(), 0.6) << server_->Log();
  if (GetParam() == "easgd") {
    // All of EASGD's traffic is with the coordinator: 500 exchanges per
    // worker, each a 500-value difference up (and the center down).
    EXPECT_EQ(s["peer_bytes_total"].get<int64_t>(), 0);
    EXPECT_GT(s["bytes_up_total"].get<int64_t>(), 3 * 500 * 500 * 4);
  } else {
    EXPECT_GT(s["peer_bytes_total"].get<int64_t>(), 0);
  }
  const auto rows = ReadJsonRows(dir_ + "/out/metrics.jsonl");
  ASSERT_EQ(rows.size(), 11u);  // step 0 and worker steps 100, ..., 1000
  EXPECT_EQ(rows.back()["step"].get<int64_t>(), 3000);
  EXPECT_EQ(rows.back()["worker_step"].get<double>(), 1000.0);
  EXPECT_TRUE(rows.back().contains("spread"));
}

// A worker killed mid-run does not stop the others: the coordinator drops
// it, its peers stop sending to it, and the survivors finish.
TEST_P(Decentralized, AKilledWorkerDoesNotStopTheOthers) {
  Start(4000);
  const std::string metrics = dir_ + "/out/metrics.jsonl";
  ASSERT_TRUE(WaitUntil([&] { return ReadJsonRows(metrics).size() >= 3; },
                        absl::Seconds(120)))
      << server_->Log();
  clients_[1]->Signal(SIGKILL);
  const auto code = server_->Wait(absl::Seconds(400));
  ASSERT_TRUE(code.has_value()) << server_->Log();
  ASSERT_EQ(*code, 0) << server_->Log();
  EXPECT_THAT(server_->Log(), HasSubstr("dropped"));
  const json s = Summary();
  ASSERT_FALSE(s.is_discarded());
  EXPECT_EQ(s["workers_finished"].get<int>(), 2) << server_->Log();
  EXPECT_EQ(s["workers_lost"].get<int>(), 1);
  EXPECT_GT(s["final_test_acc"].get<double>(), 0.6);
  const auto rows = ReadJsonRows(metrics);
  ASSERT_FALSE(rows.empty());
  EXPECT_EQ(rows.back()["worker_step"].get<double>(), 4000.0);
  EXPECT_EQ(rows.back()["clients"].get<int>(), 2);
  for (int i : {0, 2}) {
    const auto cc = clients_[i]->Wait(absl::Seconds(30));
    ASSERT_TRUE(cc.has_value());
    EXPECT_EQ(*cc, 0) << clients_[i]->Log();
  }
}

// A worker its peers cannot reach (it advertises an address where nothing
// listens) still gets their messages through the coordinator's relay, and
// the run completes with every worker.
TEST_P(Decentralized, AnUnreachableWorkerGetsItsMessagesByRelay) {
  if (GetParam() == "easgd") GTEST_SKIP() << "EASGD workers push no peers";
  Start(1000, {"", "127.0.0.1:1", ""});
  const auto code = server_->Wait(absl::Seconds(240));
  ASSERT_TRUE(code.has_value()) << server_->Log();
  ASSERT_EQ(*code, 0) << server_->Log();
  const json s = Summary();
  ASSERT_FALSE(s.is_discarded());
  EXPECT_EQ(s["workers_finished"].get<int>(), 3) << server_->Log();
  EXPECT_GT(s["relayed_messages"].get<int64_t>(), 0);
  EXPECT_GT(s["relayed_messages_fetched"].get<int64_t>(), 0);
  EXPECT_GT(s["final_test_acc"].get<double>(), 0.6);
  for (auto& c : clients_) {
    const auto cc = c->Wait(absl::Seconds(30));
    ASSERT_TRUE(cc.has_value());
    EXPECT_EQ(*cc, 0) << c->Log();
  }
}

INSTANTIATE_TEST_SUITE_P(Algorithms, Decentralized,
                         ::testing::Values("easgd", "gosgd", "sgp"));

}  // namespace
}  // namespace fedfwd::testing
