// Multi-process tests: the real fedfwd-server, fedfwd-client and fedfwd-run
// binaries on loopback, on real MNIST (data/mnist, fetched by
// scripts/setup.sh) and Fashion-MNIST (the dataset-fashion-mnist package).
#include <dirent.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <regex>

#include "absl/strings/str_cat.h"
#include "common/model_file.h"
#include "tests/testutil/process.h"
#include "tests/testutil/synthetic_data.h"
#include "tools/launcher.h"
#include "tools/sweep.h"

namespace fedfwd::testing {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

// A small, fast federation config: logistic regression on pooled MNIST.
std::string SmallConfig(int clients, int rounds, const std::string& extra) {
  return absl::StrCat(
      R"(model: tiny
dataset:
  name: mnist
  data_dir: )",
      RealMnistDir(), R"(
  train_limit: 3000
  test_limit: 1000
clients: )",
      clients, "\nrounds: ", rounds, R"(
seed: 3
merge: naive
tangent:
  distribution: rademacher
lr: 0.05
clip_jvp: 1.0
batch_size: 256
targets: [0.2, 0.3]
)",
      extra.find("eval_every") == std::string::npos ? "eval_every: 5\n" : "",
      extra);
}

class Federation : public ::testing::Test {
 protected:
  // Every federation here runs over mutual TLS with per-client tokens, as
  // fedfwd-run sets them up.
  void SetUp() override {
    dir_ = MakeTempDir("fedfwd-integ");
    auto sec = MakeLocalSecurity(dir_ + "/secrets", 4);
    ASSERT_TRUE(sec.ok()) << sec.status();
    sec_ = *sec;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string WriteConfig(const std::string& text) {
    const std::string path = dir_ + "/config.yaml";
    std::ofstream(path) << text;
    return path;
  }

  // Starts the coordinator on a free port and returns HOST:PORT.
  std::string StartServer(const std::string& config) {
    server_ = StartServerChild(config, dir_ + "/out", sec_.server_args,
                               dir_ + "/server.log");
    const std::string address = WaitForListenAddress(*server_);
    EXPECT_FALSE(address.empty()) << server_->Log();
    return address;
  }

  // Client flags: TLS and the token of client slot `slot`.
  std::vector<std::string> Security(int slot) const {
    return sec_.client_args.at(static_cast<size_t>(slot));
  }

  ChildProcess* StartClient(const std::string& address, int shard,
                            int num_shards) {
    const auto argv = ClientArgv(address, RealMnistDir(), shard, num_shards,
                                 Security(shard % 4));
    clients_.push_back(std::make_unique<ChildProcess>(
        argv,
        absl::StrCat(dir_, "/client-", shard, "-", clients_.size(), ".log")));
    return clients_.back().get();
  }

  std::string dir_;
  LocalSecurity sec_;
  std::unique_ptr<ChildProcess> server_;
  std::vector<std::unique_ptr<ChildProcess>> clients_;
};

TEST_F(Federation, ThreeClientsLearnInTwentyRounds) {
  FEDFWD_REQUIRE_MNIST();
  const std::string address = StartServer(WriteConfig(SmallConfig(3, 20, "")));
  // One at a time, so client i + 1 holds shard i: the tangent streams are
  // keyed by client id, and a fixed pairing of ids and shards makes this
  // run the same on every machine, not a draw that may land under the bar.
  for (int i = 0; i < 3; ++i) {
    StartClient(address, i, 3);
    const std::string joined = absl::StrCat("client ", i + 1, " joined");
    ASSERT_TRUE(WaitUntil(
        [&] {
          return server_->Log().find(joined) != std::string::npos ||
                 !server_->Running();
        },
        absl::Seconds(60)))
        << server_->Log();
    ASSERT_NE(server_->Log().find(joined), std::string::npos) << server_->Log();
  }
  const auto code = server_->Wait(absl::Seconds(180));
  ASSERT_TRUE(code.has_value()) << "server did not finish\n" << server_->Log();
  ASSERT_EQ(*code, 0) << server_->Log();
  for (auto& c : clients_) {
    const auto cc = c->Wait(absl::Seconds(30));
    ASSERT_TRUE(cc.has_value()) << c->Log();
    EXPECT_EQ(*cc, 0) << c->Log();
  }
  const auto rows = ReadJsonRows(dir_ + "/out/metrics.jsonl");
  ASSERT_EQ(rows.size(), 21u);
  const double acc0 = rows.front()["test_acc"].get<double>();
  const double acc20 = rows.back()["test_acc"].get<double>();
  std::cout << "round 0 " << acc0 << ", round 20 " << acc20 << "\n";
  EXPECT_GE(acc20, acc0 + 0.2) << "round 0 " << acc0 << ", round 20 " << acc20;
  for (size_t r = 1; r < rows.size(); ++r) {
    EXPECT_EQ(rows[r]["round"].get<int>(), static_cast<int>(r));
    EXPECT_EQ(rows[r]["clients"].get<int>(), 3);
    // A forward-gradient upload is a few scalars plus framing per client.
    EXPECT_LT(rows[r]["bytes_up"].get<int64_t>(), 3 * 1024) << rows[r];
    EXPECT_GT(rows[r]["bytes_down"].get<int64_t>(), 0);
    EXPECT_EQ(rows[r]["test_acc"].is_null(), r % 5 != 0);
    // The clients' reported compute: the slowest bounds the round.
    const double max_ms = rows[r]["client_compute_ms_max"].get<double>();
    const double mean_ms = rows[r]["client_compute_ms_mean"].get<double>();
    EXPECT_GT(mean_ms, 0) << rows[r];
    EXPECT_GE(max_ms, mean_ms) << rows[r];
    EXPECT_LT(max_ms / 1000, rows[r]["wall_s"].get<double>()) << rows[r];
  }
  const json summary =
      json::parse(ReadFile(dir_ + "/out/summary.json"), nullptr, false);
  ASSERT_FALSE(summary.is_discarded());
  EXPECT_DOUBLE_EQ(summary["final_test_acc"].get<double>(), acc20);
  EXPECT_EQ(summary["rounds"].get<int>(), 20);
  for (const char* key :
       {"wall_s", "bytes_up_total", "bytes_down_total", "targets", "git_commit",
        "libtorch_version", "server_threads", "host", "config"}) {
    EXPECT_TRUE(summary.contains(key)) << key;
  }
  EXPECT_EQ(summary["config"]["model"], "tiny");
  EXPECT_TRUE(summary["targets"][0]["reached"].get<bool>());
}

// Seed-replay sync (config sync: auto): forward-gradient tasks carry the
// previous round's (seed, coefficient) terms instead of a snapshot, each
// client replays them and checks the model's checksum.
class SeedReplayFederation : public Federation {
 protected:
  struct Outcome {
    std::vector<float> params;
    int64_t bytes_down = 0;
    int64_t sync_replays = 0, sync_snapshots = 0;
    std::vector<std::string> client_logs;
  };
  // A 3-client, 12-round run of SmallConfig plus `extra`; client 2 loses
  // the last term of version `drop_version` (0: none).
  Outcome Run(const std::string& name, const std::string& sync,
              uint64_t drop_version, const std::string& extra = "") {
    const std::string config = dir_ + "/" + name + ".yaml";
    std::string text =
        SmallConfig(3, 12, absl::StrCat("sync: ", sync, "\n", extra));
    for (const auto& [from, to] : edits_) {
      const size_t at = text.find(from);
      EXPECT_NE(at, std::string::npos) << from;
      if (at != std::string::npos) text.replace(at, from.size(), to);
    }
    std::ofstream(config) << text;
    const std::string out = dir_ + "/" + name;
    auto server = StartServerChild(config, out, sec_.server_args,
                                   dir_ + "/" + name + "-server.log");
    const std::string address = WaitForListenAddress(*server);
    EXPECT_FALSE(address.empty()) << server->Log();
    std::vector<std::unique_ptr<ChildProcess>> clients;
    // One at a time, so client i + 1 holds shard i in both runs.
    for (int i = 0; i < 3; ++i) {
      auto argv = ClientArgv(address, RealMnistDir(), i, 3, Security(i));
      if (i == 1 && drop_version > 0) {
        argv.push_back(absl::StrCat("--drop-update-version=", drop_version));
      }
      clients.push_back(std::make_unique<ChildProcess>(
          argv, absl::StrCat(dir_, "/", name, "-client-", i, ".log")));
      const std::string joined = absl::StrCat("client ", i + 1, " joined");
      EXPECT_TRUE(WaitUntil(
          [&] {
            return server->Log().find(joined) != std::string::npos ||
                   !server->Running();
          },
          absl::Seconds(60)))
          << server->Log();
    }
    const auto code = server->Wait(absl::Seconds(180));
    EXPECT_TRUE(code.has_value()) << server->Log();
    EXPECT_EQ(code.value_or(-1), 0) << server->Log();
    Outcome o;
    for (auto& c : clients) {
      const auto cc = c->Wait(absl::Seconds(30));
      EXPECT_EQ(cc.value_or(-1), 0) << c->Log();
      o.client_logs.push_back(c->Log());
    }
    for (const auto& row : ReadJsonRows(out + "/metrics.jsonl")) {
      if (row["round"].get<int>() > 0) EXPECT_EQ(row["clients"].get<int>(), 3);
      if (row.contains("sync_replays")) {
        o.sync_replays += row["sync_replays"].get<int64_t>();
      }
      if (row.contains("sync_snapshots")) {
        o.sync_snapshots += row["sync_snapshots"].get<int64_t>();
      }
    }
    auto model = ReadModelFile(out + "/final_model.bin");
    EXPECT_TRUE(model.ok()) << model.status();
    if (model.ok()) o.params = model->params;
    const json summary =
        json::parse(ReadFile(out + "/summary.json"), nullptr, false);
    EXPECT_FALSE(summary.is_discarded());
    if (!summary.is_discarded()) {
      o.bytes_down = summary["bytes_down_total"].get<int64_t>();
    }
    return o;
  }
  // Replacements in SmallConfig's text (for keys it already sets).
  std::vector<std::pair<std::string, std::string>> edits_;
  static void ExpectSameModel(const Outcome& a, const Outcome& b,
                              const std::string& what) {
    ASSERT_FALSE(a.params.empty()) << what;
    ASSERT_EQ(a.params.size(), b.params.size()) << what;
    EXPECT_EQ(std::memcmp(a.params.data(), b.params.data(),
                          a.params.size() * sizeof(float)),
              0)
        << what << ": seed replay ended on another model than snapshots";
  }
};

// The run must end on the same model, bit for bit, as a run that ships
// snapshots, with far fewer bytes down; a client that loses an update on
// purpose (--drop-update-version) fails its checksum, fetches a snapshot
// and goes on.
TEST_F(SeedReplayFederation, MatchesSnapshotsAndRecoversFromALostUpdate) {
  FEDFWD_REQUIRE_MNIST();
  const Outcome snapshots = Run("snapshot", "snapshot", 0);
  const Outcome replay = Run("replay", "auto", 5);
  ExpectSameModel(replay, snapshots, "plain SGD");
  // `tiny` (pooled MNIST, 510 parameters): a snapshot is 2 KB a client a
  // round, a replay three terms of about 50 bytes (plus the task around
  // them); mlp's 7.45 MB snapshots make the gap far wider.
  std::cout << "bytes down: snapshots " << snapshots.bytes_down << ", replay "
            << replay.bytes_down << "\n";
  EXPECT_LT(replay.bytes_down * 4, snapshots.bytes_down);
  EXPECT_THAT(replay.client_logs[1], HasSubstr("seed replay failed"));
  EXPECT_THAT(replay.client_logs[1], HasSubstr("checksum"));
  for (int i : {0, 2}) {
    EXPECT_EQ(replay.client_logs[i].find("seed replay failed"),
              std::string::npos)
        << replay.client_logs[i];
  }
  for (const auto& log : snapshots.client_logs) {
    EXPECT_EQ(log.find("seed replay"), std::string::npos) << log;
  }
  // Every client reports its peak training memory when the run is over
  // (the flagship's memory figure, bench/flagship.py): a count of KiB, not
  // -1 (unknown), and no more than the peak RSS it was taken from.
  const std::regex memory(
      "training memory (-?[0-9]+) KiB \\(peak RSS ([0-9]+) KiB");
  for (const auto& log : replay.client_logs) {
    std::smatch m;
    ASSERT_TRUE(std::regex_search(log, m, memory)) << log;
    EXPECT_GE(std::stoll(m[1].str()), 0) << log;
    EXPECT_LE(std::stoll(m[1].str()), std::stoll(m[2].str())) << log;
  }
}

// The replay carries the coordinator's optimizer step: with server momentum,
// with Adam (and clip_step beside momentum) and with Frank-Wolfe in a
// K-sparse polytope (its averaged estimate and step count as the state,
// common/step_rule.h) the clients replay the raw
// gradient terms through the same step on their own copy of the state, and
// the run ends on the model of a snapshot run bit for bit. A client that
// loses an update fails the model's checksum once, fetches the model and
// the optimizer state, and goes back to replaying (one failure, not one a
// round).
TEST_F(SeedReplayFederation, CarriesMomentumAdamAndFrankWolfe) {
  FEDFWD_REQUIRE_MNIST();
  const std::vector<std::pair<std::string, std::string>> variants = {
      {"momentum", "momentum: 0.9\nclip_step: 0.5\n"},
      {"adam", "server_optimizer: {type: adam, eps: 0.01}\n"},
      {"frank_wolfe",
       "server_optimizer: {type: frank_wolfe, radius: 5, k: 10}\n"}};
  for (const auto& [name, extra] : variants) {
    const Outcome snapshots = Run(name + "-snapshot", "snapshot", 0, extra);
    const Outcome replay = Run(name + "-replay", "auto", 5, extra);
    ExpectSameModel(replay, snapshots, name);
    EXPECT_LT(replay.bytes_down * 2, snapshots.bytes_down) << name;
    // With sync: snapshot the clients fetch the model only, never the
    // optimizer state: at most 12 rounds x 3 clients model-sized downloads
    // (plus 20 % for tasks and framing), where the state would double or
    // triple it.
    EXPECT_LT(static_cast<double>(snapshots.bytes_down),
              1.2 * 36 * 4 * static_cast<double>(snapshots.params.size()))
        << name;
    // 12 rounds, 3 clients: from round 2 on every task comes with a replay
    // (33); only the first round's tasks count as other syncs (the clients
    // regenerate the initial model). The lost update costs client 2 one
    // snapshot with its state, fetched after its task's replay failed.
    EXPECT_GE(replay.sync_replays, 30) << name;
    EXPECT_LE(replay.sync_snapshots, 3) << name;
    const std::string& lossy = replay.client_logs[1];
    EXPECT_THAT(lossy, HasSubstr("does not match the coordinator's checksum"))
        << name;
    const size_t first = lossy.find("seed replay failed");
    ASSERT_NE(first, std::string::npos) << name << "\n" << lossy;
    EXPECT_EQ(lossy.find("seed replay failed", first + 1), std::string::npos)
        << name << ": the client did not go back to replaying\n"
        << lossy;
    for (int i : {0, 2}) {
      EXPECT_EQ(replay.client_logs[i].find("seed replay failed"),
                std::string::npos)
          << name << "\n"
          << replay.client_logs[i];
    }
  }
}

// A tangent budget per layer (tangent.layer_counts) end to end: each task's
// keys of two parameter masks go to the daemons as two key runs, the
// daemons compute one pass per mask, and the replay of the per-group merge
// (plain SGD and Adam) ends on the snapshot run's model bit for bit.
TEST_F(SeedReplayFederation, LayerCountsTravelAsRunsAndReplayExactly) {
  FEDFWD_REQUIRE_MNIST();
  edits_ = {{"model: tiny", "model: mlp_small"},
            {"tangent:\n",
             "tangent:\n  count: 2\n  structure: rank1\n  layer_counts: "
             "{fc2: 5}\n"}};
  for (const auto& [name, extra] :
       std::vector<std::pair<std::string, std::string>>{
           {"sgd", ""},
           {"adam", "server_optimizer: {type: adam, eps: 0.01}\n"}}) {
    const Outcome snapshots =
        Run("layers-" + name + "-snapshot", "snapshot", 0, extra);
    const Outcome replay = Run("layers-" + name + "-replay", "auto", 5, extra);
    ExpectSameModel(replay, snapshots, "layer_counts, " + name);
    EXPECT_LT(replay.bytes_down * 2, snapshots.bytes_down) << name;
    EXPECT_GE(replay.sync_replays, 30) << name;
  }
}

// FedAvg end to end: model deltas streamed up as int8, label-skewed shards
// computed by each daemon, best/final model files that fedfwd-eval reads.
TEST_F(Federation, FedAvgWithInt8UpdatesOnDirichletShardsLearns) {
  FEDFWD_REQUIRE_MNIST();
  const std::string config = absl::StrCat(R"(model: tiny
dataset:
  name: mnist
  data_dir: )",
                                          RealMnistDir(), R"(
  train_limit: 3000
  test_limit: 1000
partition: {type: dirichlet, alpha: 0.5}
clients: 3
rounds: 4
seed: 3
estimator: fedavg
local_epochs: 1
batch_size: 32
lr: 0.2
compression: int8
eval_every: 1
)");
  const std::string address = StartServer(WriteConfig(config));
  for (int i = 0; i < 3; ++i) StartClient(address, i, 3);
  const auto code = server_->Wait(absl::Seconds(180));
  ASSERT_TRUE(code.has_value()) << "server did not finish\n" << server_->Log();
  ASSERT_EQ(*code, 0) << server_->Log();
  const auto rows = ReadJsonRows(dir_ + "/out/metrics.jsonl");
  ASSERT_EQ(rows.size(), 5u);
  EXPECT_GE(rows.back()["test_acc"].get<double>(), 0.5) << rows.back();
  // tiny has 500 parameters in 2 tensors: an int8 delta is 508 bytes, a
  // float32 one 2000.
  for (size_t r = 1; r < rows.size(); ++r) {
    const int64_t up = rows[r]["bytes_up"].get<int64_t>();
    EXPECT_GT(up, 3 * 508) << rows[r];
    EXPECT_LT(up, 3 * 2000) << rows[r];
  }
  ChildProcess eval(
      {BinPath("fedfwd-eval"), dir_ + "/out/best_model.bin", "--data-dir",
       RealMnistDir(), "--json", dir_ + "/eval.json"},
      dir_ + "/eval.log");
  const auto ecode = eval.Wait(absl::Seconds(120));
  ASSERT_TRUE(ecode.has_value());
  ASSERT_EQ(*ecode, 0) << eval.Log();
  EXPECT_THAT(eval.Log(),
              HasSubstr("per client training shard (3 clients, partition "
                        "dirichlet)"));
  const json report =
      json::parse(ReadFile(dir_ + "/eval.json"), nullptr, false);
  ASSERT_FALSE(report.is_discarded());
  ASSERT_EQ(report["shards"].size(), 3u);
  int64_t total = 0;
  for (const auto& s : report["shards"]) total += s["size"].get<int64_t>();
  EXPECT_EQ(total, 3000);  // the shards cover the training set
  // fedfwd-eval scores on the full test split (the run used 1000 images).
  EXPECT_EQ(report["test_count"].get<int64_t>(), 10000);
  EXPECT_GE(report["test_acc"].get<double>(), 0.5);
}

TEST_F(Federation, SurvivesAClientKilledMidRun) {
  FEDFWD_REQUIRE_MNIST();
  const std::string address = StartServer(WriteConfig(SmallConfig(
      3, 40, "eval_every: 10\ntimeouts:\n  client_s: 1.5\n  round_s: 30\n")));
  for (int i = 0; i < 3; ++i) StartClient(address, i, 3);
  const std::string metrics = dir_ + "/out/metrics.jsonl";
  ASSERT_TRUE(WaitUntil([&] { return ReadJsonRows(metrics).size() >= 6; },
                        absl::Seconds(120)))
      << server_->Log();
  clients_[1]->Signal(SIGKILL);
  const size_t rows_at_kill = ReadJsonRows(metrics).size();
  const auto code = server_->Wait(absl::Seconds(180));
  ASSERT_TRUE(code.has_value()) << server_->Log();
  ASSERT_EQ(*code, 0) << server_->Log();
  EXPECT_THAT(server_->Log(), HasSubstr("dropped"));
  const auto rows = ReadJsonRows(metrics);
  ASSERT_EQ(rows.size(), 41u);
  // Once the killed client is dropped, every later round merges the two
  // survivors.
  size_t first_two = 0;
  for (size_t r = rows_at_kill; r < rows.size(); ++r) {
    if (rows[r]["clients"].get<int>() == 2) {
      first_two = r;
      break;
    }
  }
  ASSERT_GT(first_two, 0u) << "no round merged 2 clients after the kill";
  for (size_t r = first_two; r < rows.size(); ++r) {
    EXPECT_EQ(rows[r]["clients"].get<int>(), 2) << "round " << r;
  }
  EXPECT_FALSE(rows.back()["test_acc"].is_null());
  for (int i : {0, 2}) {
    const auto cc = clients_[i]->Wait(absl::Seconds(30));
    ASSERT_TRUE(cc.has_value());
    EXPECT_EQ(*cc, 0) << clients_[i]->Log();
  }
}

TEST_F(Federation, TwoClientsClaimingOneShardAreRefused) {
  FEDFWD_REQUIRE_MNIST();
  const std::string address = StartServer(WriteConfig(SmallConfig(2, 5, "")));
  StartClient(address, 0, 2);
  ASSERT_TRUE(WaitUntil(
      [&] { return server_->Log().find("joined") != std::string::npos; },
      absl::Seconds(30)));
  // The second waits a bounded while (20 s) in case the holder is its own
  // earlier run about to expire, then gives up.
  ChildProcess* second = StartClient(address, 0, 2);
  const auto code = second->Wait(absl::Seconds(90));
  ASSERT_TRUE(code.has_value()) << second->Log();
  EXPECT_NE(*code, 0);
  EXPECT_THAT(second->Log(), HasSubstr("shard 0 is already held"));
  // The first client is unaffected; a client without --shard gets shard 1
  // and the run completes.
  std::vector<std::string> argv = {BinPath("fedfwd-client"), "--server",
                                   address, "--data", RealMnistDir()};
  const auto sec = Security(3);
  argv.insert(argv.end(), sec.begin(), sec.end());
  clients_.push_back(std::make_unique<ChildProcess>(argv, dir_ + "/auto.log"));
  const auto server_code = server_->Wait(absl::Seconds(120));
  ASSERT_TRUE(server_code.has_value()) << server_->Log();
  EXPECT_EQ(*server_code, 0) << server_->Log();
  EXPECT_THAT(ReadFile(dir_ + "/auto.log"), HasSubstr("shard 1 of 2"));
}

TEST_F(Federation, ClientWithoutCoordinatorGivesUpWithAClearError) {
  FEDFWD_REQUIRE_MNIST();
  ChildProcess client(
      {BinPath("fedfwd-client"), "--server", "127.0.0.1:1", "--data",
       RealMnistDir(), "--unreachable-timeout", "1", "--insecure"},
      dir_ + "/lonely.log");
  const auto code = client.Wait(absl::Seconds(30));
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 1);
  EXPECT_THAT(client.Log(), HasSubstr("cannot join 127.0.0.1:1"));
}

// Strangers are turned away with a message that says why, and the run goes
// on with the credentialed clients.
TEST_F(Federation, ClientsWithoutValidCredentialsAreRefused) {
  FEDFWD_REQUIRE_MNIST();
  const std::string address = StartServer(WriteConfig(SmallConfig(2, 5, "")));
  const std::string bogus = dir_ + "/bogus.token";
  std::ofstream(bogus) << "not-a-valid-token\n";
  struct Case {
    std::string name;
    std::vector<std::string> flags;
    std::string says;
  };
  std::vector<std::string> base = Security(0);
  std::vector<std::string> no_token(base.begin(), base.end() - 2);
  std::vector<std::string> wrong_token = no_token;
  wrong_token.insert(wrong_token.end(), {"--token-file", bogus});
  const std::vector<Case> cases = {
      {"no-token", no_token, "no credentials"},
      {"wrong-token", wrong_token, "unknown or revoked token"},
      {"plaintext",
       {"--insecure", "--unreachable-timeout", "3"},
       "cannot join"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> argv = {BinPath("fedfwd-client"), "--server",
                                     address, "--data", RealMnistDir()};
    argv.insert(argv.end(), c.flags.begin(), c.flags.end());
    ChildProcess stranger(argv, dir_ + "/" + c.name + ".log");
    const auto code = stranger.Wait(absl::Seconds(60));
    ASSERT_TRUE(code.has_value()) << c.name;
    EXPECT_EQ(*code, 1) << c.name << "\n" << stranger.Log();
    EXPECT_THAT(stranger.Log(), HasSubstr(c.says)) << c.name;
  }
  StartClient(address, 0, 2);
  StartClient(address, 1, 2);
  const auto code = server_->Wait(absl::Seconds(120));
  ASSERT_TRUE(code.has_value()) << server_->Log();
  EXPECT_EQ(*code, 0) << server_->Log();
  EXPECT_EQ(ReadJsonRows(dir_ + "/out/metrics.jsonl").back()["round"], 5);
}

// The deployment path: certificates and tokens from scripts/make-certs.sh
// (the openssl tool, not our own generator) work with both daemons.
TEST_F(Federation, CertificatesFromMakeCertsWork) {
  FEDFWD_REQUIRE_MNIST();
  const std::string pki = dir_ + "/pki";
  ChildProcess make(
      {"/bin/bash", SourcePath("scripts/make-certs.sh"), pki, "--server-name",
       "localhost", "--server-name", "127.0.0.1", "--clients", "2"},
      dir_ + "/make-certs.log");
  const auto made = make.Wait(absl::Seconds(60));
  ASSERT_TRUE(made.has_value());
  ASSERT_EQ(*made, 0) << make.Log();
  sec_.server_args = {"--tls-cert",        pki + "/server.pem", "--tls-key",
                      pki + "/server.key", "--tls-ca",          pki + "/ca.pem",
                      "--credentials",     pki + "/credentials"};
  for (int i = 0; i < 2; ++i) {
    const std::string c = absl::StrCat(pki, "/clients/client-", i);
    sec_.client_args[i] = {"--tls-ca",     pki + "/ca.pem", "--tls-cert",
                           c + ".pem",     "--tls-key",     c + ".key",
                           "--token-file", c + ".token"};
  }
  const std::string address = StartServer(WriteConfig(SmallConfig(2, 3, "")));
  StartClient(address, 0, 2);
  StartClient(address, 1, 2);
  const auto code = server_->Wait(absl::Seconds(120));
  ASSERT_TRUE(code.has_value()) << server_->Log();
  EXPECT_EQ(*code, 0) << server_->Log();
}

// Every shipped config is valid and runs one round on a tiny shard.
TEST(Configs, EveryConfigRunsOneRound) {
  FEDFWD_REQUIRE_MNIST();
  const std::string dir = MakeTempDir("fedfwd-configs");
  int count = 0;
  for (const auto& entry :
       std::filesystem::directory_iterator(SourcePath("configs"))) {
    if (entry.path().extension() != ".yaml") continue;
    ++count;
    const std::string out = dir + "/" + entry.path().stem().string();
    // A config with a sweep section runs every cell, one round each.
    const auto split =
        SplitSweep(ReadFile(entry.path().string()), entry.path().string());
    ASSERT_TRUE(split.ok()) << split.status();
    const bool sweep = split->sweep.has_value();
    ChildProcess run(
        {BinPath("fedfwd-run"), entry.path().string(), "--out", out, "--set",
         "rounds=1", "--set", "eval_every=1", "--set", "peer.steps=2", "--set",
         "dataset.train_limit=2000", "--set", "dataset.test_limit=300"},
        out + ".log");
    const auto code = run.Wait(absl::Seconds(sweep ? 900 : 300));
    ASSERT_TRUE(code.has_value()) << entry.path();
    EXPECT_EQ(*code, 0) << entry.path() << "\n" << run.Log();
    std::vector<std::string> runs = {out};
    if (sweep) {
      const json cells =
          json::parse(ReadFile(out + "/sweep.json"), nullptr, false);
      ASSERT_FALSE(cells.is_discarded()) << entry.path();
      runs.clear();
      for (const json& cell : cells["cells"]) {
        runs.push_back(out + "/" + cell["folder"].get<std::string>());
      }
      EXPECT_GE(runs.size(), 2u) << entry.path();
      EXPECT_TRUE(std::filesystem::exists(out + "/results.csv"));
    }
    for (const std::string& run_dir : runs) {
      const json summary =
          json::parse(ReadFile(run_dir + "/summary.json"), nullptr, false);
      ASSERT_FALSE(summary.is_discarded()) << run_dir;
      if (summary.value("mode", "") == "decentralized") {
        // Decentralized configs: two local steps per worker, every worker.
        EXPECT_EQ(summary["steps_per_worker"].get<int>(), 2) << run_dir;
        EXPECT_EQ(summary["workers_lost"].get<int>(), 0) << run_dir;
        continue;
      }
      EXPECT_EQ(summary["rounds"].get<int>(), 1) << run_dir;
    }
    if (entry.path().stem().string().find("central") == std::string::npos) {
      continue;
    }
    ChildProcess train({BinPath("fedfwd-train"), entry.path().string(), "--out",
                        out + "-central", "--set", "rounds=2", "--set",
                        "eval_every=1", "--set", "dataset.train_limit=2000",
                        "--set", "dataset.test_limit=300"},
                       out + "-central.log");
    const auto tcode = train.Wait(absl::Seconds(300));
    ASSERT_TRUE(tcode.has_value()) << entry.path();
    EXPECT_EQ(*tcode, 0) << entry.path() << "\n" << train.Log();
    const json central =
        json::parse(ReadFile(out + "-central/summary.json"), nullptr, false);
    ASSERT_FALSE(central.is_discarded()) << entry.path();
    EXPECT_EQ(central["steps"].get<int>(), 2) << entry.path();
  }
  EXPECT_GE(count, 6);
  std::filesystem::remove_all(dir);
}

// Scans /proc for processes whose command line mentions `needle`.
int CountProcessesMentioning(const std::string& needle) {
  int n = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmd = ReadFile(entry.path().string() + "/cmdline");
    std::replace(cmd.begin(), cmd.end(), '\0', ' ');
    if (cmd.find(needle) != std::string::npos &&
        cmd.find("fedfwd_integration_tests") == std::string::npos) {
      ++n;
    }
  }
  return n;
}

TEST(FedfwdRun, InterruptStopsEveryChildAndKeepsTheSummary) {
  FEDFWD_REQUIRE_MNIST();
  const std::string dir = MakeTempDir("fedfwd-sigint");
  const std::string config = dir + "/long.yaml";
  std::ofstream(config) << SmallConfig(3, 100000, "");
  const std::string out = dir + "/out";
  ChildProcess run({BinPath("fedfwd-run"), config, "--out", out},
                   dir + "/run.log");
  ASSERT_TRUE(WaitUntil(
      [&] { return ReadJsonRows(out + "/metrics.jsonl").size() >= 10; },
      absl::Seconds(120)))
      << run.Log();
  std::smatch m;
  const std::string log = run.Log();
  ASSERT_TRUE(std::regex_search(
      log, m, std::regex("listening on (127\\.0\\.0\\.1:[0-9]+)")))
      << log;
  const std::string address = m[1];
  // Launcher, server and the 3 clients (their certificates and tokens are
  // in <out>/secrets).
  EXPECT_EQ(CountProcessesMentioning(out), 5);
  EXPECT_EQ(CountProcessesMentioning(address), 3);  // the clients
  run.Signal(SIGINT);
  const auto code = run.Wait(absl::Seconds(60));
  ASSERT_TRUE(code.has_value()) << run.Log();
  EXPECT_EQ(*code, 130);
  EXPECT_TRUE(WaitUntil(
      [&] {
        return CountProcessesMentioning(out) == 0 &&
               CountProcessesMentioning(address) == 0;
      },
      absl::Seconds(10)));
  const json summary =
      json::parse(ReadFile(out + "/summary.json"), nullptr, false);
  ASSERT_FALSE(summary.is_discarded()) << run.Log();
  EXPECT_TRUE(summary["interrupted"].get<bool>());
  EXPECT_GT(summary["rounds"].get<int>(), 0);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace fedfwd::testing
