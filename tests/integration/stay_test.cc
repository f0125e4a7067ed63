// fedfwd-client --stay with the real binaries on loopback (TLS, tokens): a
// staying client outlives its coordinator's run, waits while no coordinator
// listens (longer than its --unreachable-timeout), joins the next
// coordinator started on the same port, works through that run too, keeps
// its --health-file fresh, and exits 0 on SIGTERM. A client without --stay
// exits 0 when the first run ends, as always.
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "tests/testutil/process.h"
#include "tests/testutil/synthetic_data.h"
#include "tools/launcher.h"

namespace fedfwd::testing {
namespace {

using ::testing::HasSubstr;

// A port nothing listens on right now (the kernel's pick, released again).
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

class Stay : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir("fedfwd-stay");
    data_ = WriteSyntheticMnist(dir_ + "/data", 600, 200, 5);
    ASSERT_FALSE(data_.empty());
    auto sec = MakeLocalSecurity(dir_ + "/secrets", 2);
    ASSERT_TRUE(sec.ok()) << sec.status();
    sec_ = *sec;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string WriteConfig(const std::string& name, int clients, int rounds) {
    const std::string path = absl::StrCat(dir_, "/", name, ".yaml");
    std::ofstream(path) << absl::StrCat(R"(model: tiny
dataset:
  name: mnist
  data_dir: )",
                                        data_, R"(
clients: )",
                                        clients, "\nrounds: ", rounds, R"(
seed: 4
merge: average
lr: 0.05
clip_jvp: 1.0
batch_size: 32
eval_every: 5
)");
    return path;
  }

  // A client that lets the coordinator assign its shard, with `flags`.
  std::unique_ptr<ChildProcess> StartClient(
      const std::string& address, int slot, const std::string& name,
      const std::vector<std::string>& flags) {
    std::vector<std::string> argv = {BinPath("fedfwd-client"),
                                     "--server",
                                     address,
                                     "--data",
                                     data_,
                                     "--threads",
                                     "1",
                                     "--name",
                                     name};
    const auto& sec = sec_.client_args.at(static_cast<size_t>(slot));
    argv.insert(argv.end(), sec.begin(), sec.end());
    argv.insert(argv.end(), flags.begin(), flags.end());
    return std::make_unique<ChildProcess>(
        argv, absl::StrCat(dir_, "/", name, ".log"));
  }

  std::string dir_, data_;
  LocalSecurity sec_;
};

TEST_F(Stay, ClientOutlivesARunAndFinishesTheNextOnTheSamePort) {
  const int port = FreePort();
  ASSERT_GT(port, 0);
  const std::string listen = absl::StrCat("127.0.0.1:", port);
  const std::string health = dir_ + "/health";

  // Run 1: a staying client and an ordinary one.
  auto server1 =
      StartServerChild(WriteConfig("run1", 2, 5), dir_ + "/out1",
                       sec_.server_args, dir_ + "/server1.log", listen);
  ASSERT_EQ(WaitForListenAddress(*server1), listen) << server1->Log();
  auto stayer = StartClient(
      listen, 0, "stayer",
      {"--stay", "--unreachable-timeout", "1", "--health-file", health});
  auto once = StartClient(listen, 1, "once", {});
  const auto code1 = server1->Wait(absl::Seconds(120));
  ASSERT_TRUE(code1.has_value()) << server1->Log();
  ASSERT_EQ(*code1, 0) << server1->Log();
  const auto once_code = once->Wait(absl::Seconds(30));
  ASSERT_TRUE(once_code.has_value()) << once->Log();
  EXPECT_EQ(*once_code, 0) << once->Log();

  // Between runs: no coordinator for longer than --unreachable-timeout.
  ASSERT_TRUE(WaitUntil(
      [&] {
        return stayer->Log().find("finished; waiting for the next run") !=
                   std::string::npos ||
               !stayer->Running();
      },
      absl::Seconds(30)))
      << stayer->Log();
  absl::SleepFor(absl::Seconds(3));
  ASSERT_TRUE(stayer->Running()) << stayer->Log();
  const std::string log1 = stayer->Log();
  EXPECT_THAT(log1, HasSubstr("finished; waiting for the next run"));

  // The health file holds a recent unix time.
  int64_t touched = 0;
  ASSERT_TRUE(
      absl::SimpleAtoi(absl::StripAsciiWhitespace(ReadFile(health)), &touched))
      << "'" << ReadFile(health) << "'";
  const int64_t now = absl::ToUnixSeconds(absl::Now());
  EXPECT_LE(touched, now);
  EXPECT_GT(touched, now - 60);

  // Run 2 on the same port, with the staying client alone.
  auto server2 =
      StartServerChild(WriteConfig("run2", 1, 5), dir_ + "/out2",
                       sec_.server_args, dir_ + "/server2.log", listen);
  ASSERT_EQ(WaitForListenAddress(*server2), listen) << server2->Log();
  const auto code2 = server2->Wait(absl::Seconds(120));
  ASSERT_TRUE(code2.has_value()) << server2->Log() << stayer->Log();
  ASSERT_EQ(*code2, 0) << server2->Log() << stayer->Log();
  EXPECT_THAT(server2->Log(), HasSubstr("joined (stayer), shard 0"));
  const auto summary = nlohmann::json::parse(
      ReadFile(dir_ + "/out2/summary.json"), nullptr, false);
  ASSERT_FALSE(summary.is_discarded()) << server2->Log();
  EXPECT_EQ(summary["rounds"], 5);
  EXPECT_EQ(summary["interrupted"], false);
  const auto rows = ReadJsonRows(dir_ + "/out2/metrics.jsonl");
  ASSERT_EQ(rows.size(), 6u);
  for (size_t r = 1; r < rows.size(); ++r) {
    EXPECT_EQ(rows[r]["clients"], 1) << "round " << r;
  }

  // Still there after the second run, and it joined two runs.
  ASSERT_TRUE(WaitUntil(
      [&] {
        return CountOf(stayer->Log(), "finished; waiting for the next run") >=
               2;
      },
      absl::Seconds(30)))
      << stayer->Log();
  EXPECT_TRUE(stayer->Running()) << stayer->Log();
  EXPECT_EQ(CountOf(stayer->Log(), "] joined 127.0.0.1:"), 2) << stayer->Log();

  stayer->Signal(SIGTERM);
  const auto stay_code = stayer->Wait(absl::Seconds(20));
  ASSERT_TRUE(stay_code.has_value()) << stayer->Log();
  EXPECT_EQ(*stay_code, 0) << stayer->Log();
}

}  // namespace
}  // namespace fedfwd::testing
