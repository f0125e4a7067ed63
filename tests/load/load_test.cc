// Load test (ctest label `load`): the real fedfwd-server serving 200
// concurrent clients for 50 rounds over mutual TLS with per-client tokens.
// The clients are real ClientDaemons hosted 50 to a process by
// fedfwd-loadgen, each with its own gRPC channel and TCP connection.
//
// It checks that no round fails or runs short: the run exits 0, every
// round 1..50 merged all 200 clients, the coordinator never logged a missed
// deadline, a dropped client or a retried round, and it held 200 separate
// connections while training.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tests/testutil/process.h"
#include "tests/testutil/synthetic_data.h"
#include "tools/launcher.h"

namespace fedfwd::testing {
namespace {

using json = nlohmann::json;

constexpr int kClients = 200;
constexpr int kProcesses = 4;
constexpr int kRounds = 50;

// 200 shards of 10 MNIST images each, minibatches of 8, a test split of 500
// images evaluated at round 0 and after the last round only: the work per
// client is small, so the test measures the coordinator and the protocol.
std::string LoadConfig(const std::string& data_dir) {
  return absl::StrCat(R"(model: tiny
dataset:
  name: mnist
  data_dir: )",
                      data_dir, R"(
  train_limit: 2000
  test_limit: 500
clients: )",
                      kClients, R"(
min_clients: )",
                      kClients, "\nrounds: ", kRounds, R"(
seed: 5
estimator: jvp
merge: weighted
tangent:
  distribution: rademacher
lr: 0.01
clip_jvp: 1.0
batch_size: 8
eval_every: 1000
timeouts:
  round_s: 60
  client_s: 20
  join_s: 180
)");
}

// Copies the first `n` records of the IDX file `from` to `to` (the header's
// count rewritten). Each daemon reads its dataset files whole, so 200 of them
// reading the 47 MB MNIST training file would measure the disk, not the
// coordinator.
void TruncateIdx(const std::string& from, const std::string& to, uint32_t n) {
  std::ifstream in(from, std::ios::binary);
  ASSERT_TRUE(in) << from;
  unsigned char magic[4];
  in.read(reinterpret_cast<char*>(magic), 4);
  const int dims = magic[3];
  ASSERT_TRUE(magic[0] == 0 && magic[1] == 0 && magic[2] == 8 && dims >= 1)
      << from << " is not an unsigned-byte IDX file";
  std::vector<unsigned char> header(4 * dims);
  in.read(reinterpret_cast<char*>(header.data()), header.size());
  size_t record = 1;
  for (int d = 1; d < dims; ++d) {
    record *= (static_cast<size_t>(header[4 * d]) << 24) |
              (header[4 * d + 1] << 16) | (header[4 * d + 2] << 8) |
              header[4 * d + 3];
  }
  std::vector<char> body(record * n);
  in.read(body.data(), body.size());
  ASSERT_EQ(static_cast<size_t>(in.gcount()), body.size()) << from;
  header[0] = n >> 24;
  header[1] = (n >> 16) & 0xff;
  header[2] = (n >> 8) & 0xff;
  header[3] = n & 0xff;
  std::ofstream out(to, std::ios::binary);
  out.write(reinterpret_cast<const char*>(magic), 4);
  out.write(reinterpret_cast<const char*>(header.data()), header.size());
  out.write(body.data(), body.size());
  ASSERT_TRUE(out.good()) << to;
}

// Established TCP connections whose local end is 127.0.0.1:`port` (the
// coordinator's side of each client connection), from /proc/net/tcp and
// /proc/net/tcp6 (gRPC's sockets are IPv6 ones with IPv4-mapped addresses).
int EstablishedConnections(int port) {
  char v4[32], v6[64];
  std::snprintf(v4, sizeof v4, "0100007F:%04X", port);
  std::snprintf(v6, sizeof v6, "0000000000000000FFFF00000100007F:%04X", port);
  int n = 0;
  for (const char* path : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(path);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string slot, local, remote, state;
      fields >> slot >> local >> remote >> state;
      if ((local == v4 || local == v6) && state == "01") ++n;
    }
  }
  return n;
}

TEST(Load, TwoHundredClientsFiftyRoundsNoFailedRound) {
  FEDFWD_REQUIRE_MNIST();
  const std::string dir = MakeTempDir("fedfwd-load");
  const std::string data = dir + "/mnist";
  std::filesystem::create_directories(data);
  for (const auto& [name, n] : std::vector<std::pair<std::string, uint32_t>>{
           {"train-images-idx3-ubyte", 2000},
           {"train-labels-idx1-ubyte", 2000},
           {"t10k-images-idx3-ubyte", 500},
           {"t10k-labels-idx1-ubyte", 500}}) {
    ASSERT_NO_FATAL_FAILURE(
        TruncateIdx(RealMnistDir() + "/" + name, data + "/" + name, n));
  }
  auto sec = MakeLocalSecurity(dir + "/secrets", kClients);
  ASSERT_TRUE(sec.ok()) << sec.status();
  const std::string config = dir + "/config.yaml";
  std::ofstream(config) << LoadConfig(data);

  const absl::Time start = absl::Now();
  std::vector<std::string> server_argv = {BinPath("fedfwd-server"),
                                          "--config",
                                          config,
                                          "--listen",
                                          "127.0.0.1:0",
                                          "--out",
                                          dir + "/out"};
  server_argv.insert(server_argv.end(), sec->server_args.begin(),
                     sec->server_args.end());
  ChildProcess server(server_argv, dir + "/server.log");
  int port = 0;
  const std::regex listening("listening on 127\\.0\\.0\\.1:([0-9]+)");
  ASSERT_TRUE(WaitUntil(
      [&] {
        std::smatch m;
        const std::string log = server.Log();
        if (std::regex_search(log, m, listening)) port = std::stoi(m[1]);
        return port > 0 || !server.Running();
      },
      absl::Seconds(60)))
      << server.Log();
  ASSERT_GT(port, 0) << server.Log();

  // TLS flags of the clients (all share one client certificate); tokens come
  // from the secrets folder, one per client.
  const std::vector<std::string>& client_sec = sec->client_args.at(0);
  ASSERT_EQ(client_sec.size(), 10u);
  ASSERT_EQ(client_sec[8], "--token-file");
  std::vector<std::unique_ptr<ChildProcess>> loadgens;
  const int per_process = kClients / kProcesses;
  for (int p = 0; p < kProcesses; ++p) {
    std::vector<std::string> argv = {BinPath("fedfwd-loadgen"),
                                     "--server",
                                     absl::StrCat("127.0.0.1:", port),
                                     "--data",
                                     data,
                                     "--clients",
                                     std::to_string(per_process),
                                     "--first-shard",
                                     std::to_string(p * per_process),
                                     "--num-shards",
                                     std::to_string(kClients),
                                     "--threads",
                                     "1",
                                     "--token-dir",
                                     sec->dir};
    argv.insert(argv.end(), client_sec.begin(), client_sec.begin() + 8);
    loadgens.push_back(std::make_unique<ChildProcess>(
        argv, absl::StrCat(dir, "/loadgen-", p, ".log")));
  }

  // Once all have joined, the coordinator holds one connection per client.
  const std::string all_live = absl::StrCat(kClients, "/", kClients, " live");
  ASSERT_TRUE(WaitUntil(
      [&] {
        return server.Log().find(all_live) != std::string::npos ||
               !server.Running();
      },
      absl::Seconds(180)))
      << server.Log();
  ASSERT_NE(server.Log().find(all_live), std::string::npos) << server.Log();
  int connections = 0;
  WaitUntil(
      [&] {
        connections = EstablishedConnections(port);
        return connections >= kClients || !server.Running();
      },
      absl::Seconds(10));
  EXPECT_GE(connections, kClients)
      << "the logical clients share connections; each should have its own";

  const auto code = server.Wait(absl::Seconds(600));
  ASSERT_TRUE(code.has_value()) << "server did not finish\n" << server.Log();
  const std::string log = server.Log();
  ASSERT_EQ(*code, 0) << log;
  for (auto& g : loadgens) {
    const auto gc = g->Wait(absl::Seconds(60));
    ASSERT_TRUE(gc.has_value()) << g->Log();
    EXPECT_EQ(*gc, 0) << g->Log();
    EXPECT_NE(g->Log().find(absl::StrCat(per_process, " of ", per_process,
                                         " clients finished the run")),
              std::string::npos)
        << g->Log();
  }
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);

  const auto rows = ReadJsonRows(dir + "/out/metrics.jsonl");
  ASSERT_EQ(rows.size(), static_cast<size_t>(kRounds + 1));
  EXPECT_EQ(rows[0]["round"].get<int>(), 0);  // the initial model's score
  for (int r = 1; r <= kRounds; ++r) {
    EXPECT_EQ(rows[r]["round"].get<int>(), r) << rows[r];
    EXPECT_EQ(rows[r]["clients"].get<int>(), kClients) << rows[r];
  }
  const std::vector<std::string> lines =
      absl::StrSplit(log, '\n', absl::SkipEmpty());
  for (const std::string& line : lines) {
    EXPECT_EQ(line.find("deadline of"), std::string::npos) << line;
    EXPECT_EQ(line.find("dropped:"), std::string::npos) << line;
    EXPECT_EQ(line.find("retrying"), std::string::npos) << line;
    EXPECT_EQ(line.find("run failed"), std::string::npos) << line;
    if (line.find(" left: ") != std::string::npos) {
      EXPECT_NE(line.find("left: run over"), std::string::npos) << line;
    }
  }
  const double wall = rows.back()["wall_s"].get<double>();
  std::cout << kClients << " clients x " << kRounds
            << " rounds: " << kRounds / wall << " rounds/s (" << wall
            << " s of training), whole test " << seconds << " s\n";
  if (!::testing::Test::HasFailure()) std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace fedfwd::testing
