// fedfwd-ctl status against the real fedfwd-server over mutual TLS: a
// status-only credential reads the run (exit 0, the client table, --json),
// a caller without a token is refused (exit 1, "unauthenticated"), a closed
// port is reported as unreachable (exit 1, "unavailable"), bad flags exit 2.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "tests/testutil/process.h"
#include "tests/testutil/synthetic_data.h"
#include "tools/launcher.h"

namespace fedfwd::testing {
namespace {

using ::testing::HasSubstr;

class Ctl : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir("fedfwd-ctl");
    data_ = WriteSyntheticMnist(dir_ + "/data", 600, 200, 6);
    ASSERT_FALSE(data_.empty());
    auto sec = MakeLocalSecurity(dir_ + "/secrets", 2);
    ASSERT_TRUE(sec.ok()) << sec.status();
    sec_ = *sec;
    ASSERT_TRUE(std::filesystem::exists(BinPath("fedfwd-ctl")))
        << BinPath("fedfwd-ctl") << " is not built (cmake --build ... "
        << "--target fedfwd-ctl)";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Client slot 0's TLS flags with `token_file` in place of its token ("":
  // no token at all).
  std::vector<std::string> TlsWithToken(const std::string& token_file) const {
    std::vector<std::string> args;
    const auto& client = sec_.client_args.at(0);
    for (size_t i = 0; i < client.size(); ++i) {
      if (client[i] == "--token-file") {
        ++i;
        if (!token_file.empty()) {
          args.push_back("--token-file");
          args.push_back(token_file);
        }
        continue;
      }
      args.push_back(client[i]);
    }
    return args;
  }

  // Runs fedfwd-ctl with `args`; returns its exit code and output.
  std::pair<int, std::string> RunCtl(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {BinPath("fedfwd-ctl")};
    argv.insert(argv.end(), args.begin(), args.end());
    const std::string log = absl::StrCat(dir_, "/ctl-", runs_++, ".log");
    ChildProcess ctl(argv, log);
    const auto code = ctl.Wait(absl::Seconds(30));
    return {code.value_or(-1), ctl.Log()};
  }

  std::string dir_, data_;
  LocalSecurity sec_;
  int runs_ = 0;
};

TEST_F(Ctl, StatusShowsTheRunAndItsClients) {
  const std::string config = dir_ + "/config.yaml";
  std::ofstream(config) << absl::StrCat(R"(model: tiny
dataset:
  name: mnist
  data_dir: )",
                                        data_, R"(
clients: 2
rounds: 100000
seed: 4
merge: average
lr: 0.05
clip_jvp: 1.0
batch_size: 32
eval_every: 20
)");
  auto server = StartServerChild(config, dir_ + "/out", sec_.server_args,
                                 dir_ + "/server.log");
  const std::string address = WaitForListenAddress(*server);
  ASSERT_FALSE(address.empty()) << server->Log();
  const auto status_flags = TlsWithToken(sec_.status_token_file);
  auto status_argv = [&](std::vector<std::string> extra) {
    std::vector<std::string> argv = {"status", "--server", address};
    argv.insert(argv.end(), status_flags.begin(), status_flags.end());
    argv.insert(argv.end(), extra.begin(), extra.end());
    return argv;
  };

  // Before anyone joined.
  auto [code, out] = RunCtl(status_argv({}));
  ASSERT_EQ(code, 0) << out;
  EXPECT_THAT(out, HasSubstr("state     waiting\n"));
  EXPECT_THAT(out, HasSubstr("0 alive of 0 registered (the run wants 2"));

  // Two clients: training starts.
  std::vector<std::unique_ptr<ChildProcess>> clients;
  for (int i = 0; i < 2; ++i) {
    std::vector<std::string> argv = {BinPath("fedfwd-client"),
                                     "--server",
                                     address,
                                     "--data",
                                     data_,
                                     "--threads",
                                     "1",
                                     "--name",
                                     absl::StrCat("worker-", i)};
    const auto& sec = sec_.client_args.at(static_cast<size_t>(i));
    argv.insert(argv.end(), sec.begin(), sec.end());
    clients.push_back(std::make_unique<ChildProcess>(
        argv, absl::StrCat(dir_, "/client-", i, ".log")));
  }
  nlohmann::json j;
  ASSERT_TRUE(WaitUntil(
      [&] {
        auto [c, o] = RunCtl(status_argv({"--json"}));
        if (c != 0) return false;
        j = nlohmann::json::parse(o, nullptr, false);
        return !j.is_discarded() && j["state"] == "training" &&
               j["round"].get<int64_t>() >= 2;
      },
      absl::Seconds(90)))
      << server->Log();
  EXPECT_THAT(j["run_id"].get<std::string>(), HasSubstr("tiny-mnist-s4-"));
  EXPECT_EQ(j["rounds"], 100000);
  EXPECT_EQ(j["clients_expected"], 2);
  ASSERT_EQ(j["clients"].size(), 2u);
  std::set<std::string> names;
  for (const auto& c : j["clients"]) {
    names.insert(c["name"].get<std::string>());
    EXPECT_EQ(c["alive"], true);
    EXPECT_LT(c["last_seen_s"].get<double>(), 10);
  }
  EXPECT_EQ(names, (std::set<std::string>{"worker-0", "worker-1"}));
  ASSERT_GE(j["accuracy_history"].size(), 1u);
  EXPECT_EQ(j["accuracy_history"][0]["round"], 0);
  EXPECT_EQ(j["last_test_round"], j["accuracy_history"].back()["round"]);
  EXPECT_GT(j["bytes_down"].get<int64_t>(), 0);

  // The text form: header lines and a row per client.
  std::tie(code, out) = RunCtl(status_argv({"--timeout", "10"}));
  ASSERT_EQ(code, 0) << out;
  EXPECT_THAT(out, HasSubstr("state     training\n"));
  EXPECT_THAT(out, HasSubstr("2 alive of 2 registered"));
  EXPECT_THAT(out, HasSubstr("id  name      shard  alive  last seen\n"));
  EXPECT_THAT(out, HasSubstr("worker-0"));
  EXPECT_THAT(out, HasSubstr("worker-1"));
  EXPECT_THAT(out, HasSubstr("  yes    "));
  EXPECT_THAT(out, HasSubstr(" s ago\n"));

  // TLS but no token: refused, and it says so.
  std::tie(code, out) = RunCtl([&] {
    std::vector<std::string> argv = {"status", "--server", address};
    for (const auto& a : TlsWithToken("")) argv.push_back(a);
    return argv;
  }());
  EXPECT_EQ(code, 1) << out;
  EXPECT_THAT(out, HasSubstr("fedfwd-ctl: unauthenticated: "));

  server->Signal(SIGTERM);
  const auto server_code = server->Wait(absl::Seconds(60));
  ASSERT_TRUE(server_code.has_value()) << server->Log();
  EXPECT_EQ(*server_code, 130) << server->Log();
  for (auto& c : clients) c->Wait(absl::Seconds(30));

  // Nobody listens there now.
  std::tie(code, out) = RunCtl(status_argv({"--timeout", "3"}));
  EXPECT_EQ(code, 1) << out;
  EXPECT_THAT(out, HasSubstr("fedfwd-ctl: unavailable: cannot reach the "
                             "coordinator at " +
                             address));
}

TEST_F(Ctl, BadFlagsExitTwo) {
  EXPECT_EQ(RunCtl({"status"}).first, 2);  // no --server
  EXPECT_EQ(RunCtl({"status", "--server", "127.0.0.1:1", "--insecure",
                    "--timeout", "0"})
                .first,
            2);
  EXPECT_EQ(RunCtl({"frobnicate"}).first, 2);
  EXPECT_EQ(RunCtl({"status", "--server", "127.0.0.1:1", "--token-file",
                    dir_ + "/missing.token", "--insecure"})
                .first,
            2);
  const auto help = RunCtl({"status", "--help"});
  EXPECT_EQ(help.first, 0);
  EXPECT_THAT(help.second, HasSubstr("--server"));
  EXPECT_THAT(help.second, HasSubstr("--json"));
}

}  // namespace
}  // namespace fedfwd::testing
