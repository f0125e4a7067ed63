// Emulated links (fedfwd-run --link): real network namespaces, tbf and
// fedfwd-relay. They need root, iproute2 and a kernel with network
// namespaces and tbf; without them they fail with the reason (they do not
// skip), because a run that silently went unshaped would be worse than none.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testutil/net.h"
#include "tests/testutil/process.h"
#include "tools/link_emulation.h"

namespace fedfwd {
namespace {

using ::fedfwd::testing::BinPath;
using ::fedfwd::testing::ChildProcess;
using ::fedfwd::testing::DialTcp;
using ::fedfwd::testing::ReadFile;
using ::fedfwd::testing::SourcePath;
using ::fedfwd::testing::WaitUntil;
using ::testing::HasSubstr;

namespace fs = std::filesystem;

std::string TempDir(const std::string& name) {
  std::string dir =
      absl::StrCat(::testing::TempDir(), "/link-", name, "-", getpid());
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// Runs `fn` on a thread of its own inside the network namespace at `netns`
// (a /run/netns path): setns changes only the calling thread.
template <class Fn>
std::thread InNetns(const std::string& netns, Fn fn) {
  return std::thread([netns, fn]() mutable {
    const int fd = open(netns.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
      ADD_FAILURE() << "cannot enter " << netns;
      if (fd >= 0) close(fd);
      fn(false);
      return;
    }
    close(fd);
    fn(true);
  });
}

int ListenOn(const std::string& host, int* port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  inet_pton(AF_INET, host.c_str(), &addr.sin_addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(fd, 4) != 0) {
    close(fd);
    return -1;
  }
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  *port = ntohs(addr.sin_port);
  return fd;
}

bool SendAll(int fd, size_t bytes) {
  std::string chunk(64 << 10, 'x');
  size_t done = 0;
  while (done < bytes) {
    ssize_t n = write(fd, chunk.data(), std::min(chunk.size(), bytes - done));
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// Reads to the end of the stream; the bytes read.
size_t ReadAll(int fd) {
  char buffer[65536];
  size_t total = 0;
  ssize_t n;
  while ((n = read(fd, buffer, sizeof(buffer))) > 0) {
    total += static_cast<size_t>(n);
  }
  return total;
}

// `ip netns pids NAME`: the processes running in a namespace.
std::string NetnsPids(const std::string& name) {
  std::string out;
  FILE* p = popen(absl::StrCat("ip netns pids ", name).c_str(), "r");
  if (p == nullptr) return "?";
  char buffer[256];
  while (std::fgets(buffer, sizeof(buffer), p) != nullptr) out += buffer;
  pclose(p);
  return out;
}

std::string NetnsName(const std::string& path) {
  return fs::path(path).filename().string();
}

// One client link with `link`, fedfwd-relay in the coordinator's namespace
// routing the client's end to 127.0.0.1:<port> there, as fedfwd-run does.
class OneLink {
 public:
  explicit OneLink(const LinkSpec& link) {
    absl::Status support = CheckLinkSupport();
    EXPECT_TRUE(support.ok()) << support;
    if (!support.ok()) return;
    absl::StatusOr<std::unique_ptr<EmulatedNetwork>> net =
        EmulatedNetwork::Create({link});
    EXPECT_TRUE(net.ok()) << net.status();
    if (net.ok()) net_ = *std::move(net);
  }
  bool ok() const { return net_ != nullptr; }
  EmulatedNetwork& net() { return *net_; }

  // Starts the relay to `port` in the coordinator's namespace.
  bool StartRelay(int port, const std::string& log) {
    relay_ = std::make_unique<ChildProcess>(
        std::vector<std::string>{"/usr/sbin/ip", "netns", "exec",
                                 NetnsName(net_->CoordinatorNetns()),
                                 BinPath("fedfwd-relay"), "--route",
                                 net_->RelayRoutes(port)[0]},
        log);
    return WaitUntil(
        [&] { return ReadFile(log).find("listening on") != std::string::npos; },
        absl::Seconds(10));
  }

 private:
  std::unique_ptr<EmulatedNetwork> net_;
  std::unique_ptr<ChildProcess> relay_;
};

// What a client gets through its shaped link: a 2.5 MB download at 4 Mbit/s
// and a 1 MB upload at 2 Mbit/s, through tbf and the relay, as a client's
// snapshot download and its results travel. Fails when a measured rate is
// off the set rate by more than 20 %.
TEST(EmulatedLink, TransfersRunAtTheSetRates) {
  const std::string dir = TempDir("rate");
  LinkSpec link;
  link.up_bps = 2000000;
  link.down_bps = 4000000;
  OneLink one(link);
  ASSERT_TRUE(one.ok());
  constexpr size_t kDown = 2500000;  // 5 s at 4 Mbit/s
  constexpr size_t kUp = 1000000;    // 4 s at 2 Mbit/s

  std::atomic<int> port{0};
  std::atomic<bool> listening{false};
  double up_seconds = 0;
  size_t up_bytes = 0;
  // The coordinator's side: sends kDown, then reads the upload to its end.
  std::thread server = InNetns(one.net().CoordinatorNetns(), [&](bool ok) {
    if (!ok) {
      listening = true;
      return;
    }
    int p = 0;
    const int lfd = ListenOn("127.0.0.1", &p);
    port = p;
    listening = true;
    if (lfd < 0) return;
    const int fd = accept(lfd, nullptr, nullptr);
    SendAll(fd, kDown);
    char first = 0;
    if (read(fd, &first, 1) == 1) {
      const absl::Time start = absl::Now();
      up_bytes = 1 + ReadAll(fd);
      up_seconds = absl::ToDoubleSeconds(absl::Now() - start);
    }
    close(fd);
    close(lfd);
  });
  ASSERT_TRUE(WaitUntil([&] { return listening.load(); }, absl::Seconds(5)));
  ASSERT_GT(port.load(), 0);
  ASSERT_TRUE(one.StartRelay(port, dir + "/relay.log"))
      << ReadFile(dir + "/relay.log");

  double down_seconds = 0;
  size_t down_bytes = 0;
  std::thread client = InNetns(one.net().ClientNetns(0), [&](bool ok) {
    if (!ok) return;
    const int fd = DialTcp(one.net().ClientServerAddress(0), absl::Seconds(10));
    if (fd < 0) return;
    char buffer[65536];
    const absl::Time start = absl::Now();
    while (down_bytes < kDown) {
      ssize_t n = read(fd, buffer, sizeof(buffer));
      if (n <= 0) break;
      down_bytes += static_cast<size_t>(n);
    }
    down_seconds = absl::ToDoubleSeconds(absl::Now() - start);
    SendAll(fd, kUp);
    shutdown(fd, SHUT_WR);
    ReadAll(fd);
    close(fd);
  });
  client.join();
  server.join();
  ASSERT_EQ(down_bytes, kDown);
  ASSERT_EQ(up_bytes, kUp);
  const double down_bps = kDown * 8 / down_seconds;
  const double up_bps = kUp * 8 / up_seconds;
  std::printf("download %.0f bytes in %.2f s: %.3f Mbit/s (set 4)\n",
              double(kDown), down_seconds, down_bps / 1e6);
  std::printf("upload %.0f bytes in %.2f s: %.3f Mbit/s (set 2)\n", double(kUp),
              up_seconds, up_bps / 1e6);
  EXPECT_NEAR(down_bps, 4e6, 0.2 * 4e6);
  EXPECT_NEAR(up_bps, 2e6, 0.2 * 2e6);
}

// The added delay: one byte's round trip through the link is twice the
// one-way delay (plus little), against well under a millisecond without it.
TEST(EmulatedLink, RoundTripsTakeTwiceTheDelay) {
  const std::string dir = TempDir("delay");
  LinkSpec link;
  link.delay = absl::Milliseconds(50);
  OneLink one(link);
  ASSERT_TRUE(one.ok());
  std::atomic<int> port{0};
  std::atomic<bool> listening{false};
  std::thread server = InNetns(one.net().CoordinatorNetns(), [&](bool ok) {
    int p = 0;
    const int lfd = ok ? ListenOn("127.0.0.1", &p) : -1;
    port = p;
    listening = true;
    if (lfd < 0) return;
    for (int conn = 0; conn < 2; ++conn) {  // through the relay, then direct
      const int fd = accept(lfd, nullptr, nullptr);
      int one_flag = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one_flag, sizeof(one_flag));
      char c;
      while (read(fd, &c, 1) == 1) {
        if (write(fd, &c, 1) != 1) break;
      }
      close(fd);
    }
    close(lfd);
  });
  ASSERT_TRUE(WaitUntil([&] { return listening.load(); }, absl::Seconds(5)));
  ASSERT_GT(port.load(), 0);
  ASSERT_TRUE(one.StartRelay(port, dir + "/relay.log"));
  auto median_rtt = [](int fd) {
    std::vector<double> ms;
    for (int i = 0; i < 9; ++i) {
      char c = 'a';
      const absl::Time start = absl::Now();
      if (write(fd, &c, 1) != 1 || read(fd, &c, 1) != 1) return -1.0;
      ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - start));
    }
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
  };
  double relayed_ms = -1;
  double direct_ms = -1;
  std::thread via_link = InNetns(one.net().ClientNetns(0), [&](bool ok) {
    if (!ok) return;
    const int fd = DialTcp(one.net().ClientServerAddress(0), absl::Seconds(10));
    if (fd < 0) return;
    relayed_ms = median_rtt(fd);
    close(fd);
  });
  via_link.join();
  std::thread direct = InNetns(one.net().CoordinatorNetns(), [&](bool ok) {
    if (!ok) return;
    const int fd =
        DialTcp(absl::StrCat("127.0.0.1:", port.load()), absl::Seconds(5));
    if (fd < 0) return;
    direct_ms = median_rtt(fd);
    close(fd);
  });
  direct.join();
  server.join();
  std::printf(
      "round trip: %.2f ms through the link (delay 50 ms each way), "
      "%.3f ms direct\n",
      relayed_ms, direct_ms);
  EXPECT_GE(relayed_ms, 100.0);
  EXPECT_LT(relayed_ms, 130.0);
  EXPECT_GE(direct_ms, 0.0);
  EXPECT_LT(direct_ms, 10.0);
}

// A whole federation over emulated links: it learns, summary.json records
// the links, and no namespace is left behind.
TEST(EmulatedLink, FedfwdRunTrainsOverShapedLinksAndCleansUp) {
  FEDFWD_REQUIRE_MNIST();
  const std::string out = TempDir("run") + "/out";
  ChildProcess run(
      {BinPath("fedfwd-run"), SourcePath("configs/smoke_tiny.yaml"), "--out",
       out, "--set", "rounds=20", "--link", "up=1mbit,down=10mbit,delay=20ms",
       "--client-link", "2=up=256kbit,delay=100ms"},
      TempDir("run") + ".log");
  std::optional<int> code = run.Wait(absl::Seconds(300));
  ASSERT_TRUE(code.has_value()) << run.Log();
  ASSERT_EQ(*code, 0) << run.Log();
  EXPECT_THAT(run.Log(), HasSubstr("emulated links"));
  const nlohmann::json summary =
      nlohmann::json::parse(ReadFile(out + "/summary.json"));
  EXPECT_EQ(summary["link"], "mixed");
  ASSERT_EQ(summary["links"].size(), 3u);
  EXPECT_EQ(summary["links"][0]["spec"], "up=1mbit,down=10mbit,delay=20ms");
  EXPECT_EQ(summary["links"][2]["spec"], "up=256kbit,down=10mbit,delay=100ms");
  EXPECT_EQ(summary["links"][2]["up_bps"], 256000);
  EXPECT_DOUBLE_EQ(summary["links"][2]["delay_ms"].get<double>(), 100.0);
  EXPECT_GT(summary["final_test_acc"].get<double>(), 0.2);
  // Every client joined through its link's relay address.
  for (int i = 0; i < 3; ++i) {
    EXPECT_THAT(ReadFile(absl::StrCat(out, "/client-", i, ".log")),
                HasSubstr(absl::StrCat("joined ", LinkAddress(i, true), ":")));
  }
  EXPECT_THAT(NamespacesOf(run.pid()), ::testing::IsEmpty());
}

// A decentralized run over links: the workers gossip through the peer
// relays on their links' coordinator ends (the sender's uplink, the
// receiver's downlink and delay), summary.json records the links, and no
// namespace is left behind.
TEST(EmulatedLink, DecentralizedWorkersGossipOverTheirLinks) {
  FEDFWD_REQUIRE_MNIST();
  const std::string out = TempDir("gossip") + "/out";
  ChildProcess run(
      {BinPath("fedfwd-run"), SourcePath("configs/mnist_gosgd.yaml"), "--out",
       out, "--set", "clients=3", "--set", "model=tiny", "--set",
       "peer.steps=30", "--set", "eval_every=15", "--link",
       "rate=10mbit,delay=20ms"},
      TempDir("gossip") + ".log");
  std::optional<int> code = run.Wait(absl::Seconds(300));
  ASSERT_TRUE(code.has_value()) << run.Log();
  ASSERT_EQ(*code, 0) << run.Log();
  const nlohmann::json summary =
      nlohmann::json::parse(ReadFile(out + "/summary.json"));
  EXPECT_EQ(summary["mode"], "decentralized");
  EXPECT_EQ(summary["link"], "up=10mbit,down=10mbit,delay=20ms");
  EXPECT_EQ(summary["links"].size(), 3u);
  EXPECT_EQ(summary["workers_finished"], 3);
  EXPECT_GT(summary["peer_bytes_total"].get<int64_t>(), 0);
  for (int i = 0; i < 3; ++i) {
    EXPECT_THAT(ReadFile(absl::StrCat(out, "/client-", i, ".log")),
                HasSubstr(absl::StrCat("advertised as ", LinkAddress(i, true),
                                       ":", EmulatedNetwork::kPeerRelayPort)));
  }
  EXPECT_THAT(NamespacesOf(run.pid()), ::testing::IsEmpty());
}

// Ctrl-C: the coordinator's summary (marked interrupted) still says over
// which links its rounds ran, and the namespaces go.
TEST(EmulatedLink, AnInterruptedRunRecordsItsLinksAndCleansUp) {
  FEDFWD_REQUIRE_MNIST();
  const std::string dir = TempDir("interrupt");
  ChildProcess run(
      {BinPath("fedfwd-run"), SourcePath("configs/smoke_tiny.yaml"), "--out",
       dir + "/out", "--set", "rounds=5000", "--link", "rate=10mbit,delay=5ms"},
      dir + "/run.log");
  ASSERT_TRUE(WaitUntil(
      [&] {
        return ::fedfwd::testing::ReadJsonRows(dir + "/out/metrics.jsonl")
                   .size() >= 5;
      },
      absl::Seconds(120)))
      << run.Log();
  run.Signal(SIGINT);
  std::optional<int> code = run.Wait(absl::Seconds(60));
  ASSERT_TRUE(code.has_value()) << run.Log();
  EXPECT_EQ(*code, 130) << run.Log();
  const nlohmann::json summary =
      nlohmann::json::parse(ReadFile(dir + "/out/summary.json"));
  EXPECT_TRUE(summary["interrupted"].get<bool>());
  EXPECT_EQ(summary["link"], "up=10mbit,down=10mbit,delay=5ms");
  EXPECT_EQ(summary["links"].size(), 3u);
  EXPECT_THAT(NamespacesOf(run.pid()), ::testing::IsEmpty());
}

// A launcher killed outright leaves its namespaces (nothing runs in them:
// its children die with it); the next --link start removes them.
TEST(EmulatedLink, NamespacesOfAKilledLauncherAreRemovedByTheNextStart) {
  FEDFWD_REQUIRE_MNIST();
  const std::string dir = TempDir("kill");
  ChildProcess run(
      {BinPath("fedfwd-run"), SourcePath("configs/smoke_tiny.yaml"), "--out",
       dir + "/out", "--set", "rounds=2000", "--link", "rate=10mbit"},
      dir + "/run.log");
  ASSERT_TRUE(WaitUntil(
      [&] {
        return ReadFile(dir + "/run.log").find("started 3 clients") !=
               std::string::npos;
      },
      absl::Seconds(60)))
      << run.Log();
  const pid_t pid = run.pid();
  ASSERT_EQ(NamespacesOf(pid).size(), 4u);
  run.Signal(SIGKILL);
  run.Wait(absl::Seconds(10));
  ASSERT_EQ(NamespacesOf(pid).size(), 4u);  // SIGKILL: nobody cleaned up
  // Its children (server, relay, clients) went with it.
  EXPECT_TRUE(WaitUntil(
      [&] {
        for (const std::string& ns : NamespacesOf(pid)) {
          if (!NetnsPids(ns).empty()) return false;
        }
        return true;
      },
      absl::Seconds(20)));
  ChildProcess next(
      {BinPath("fedfwd-run"), SourcePath("configs/smoke_tiny.yaml"), "--out",
       dir + "/next", "--set", "rounds=2", "--link", "rate=10mbit"},
      dir + "/next.log");
  std::optional<int> code = next.Wait(absl::Seconds(120));
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0) << next.Log();
  EXPECT_THAT(next.Log(), HasSubstr("removed 4 network namespaces"));
  EXPECT_THAT(NamespacesOf(pid), ::testing::IsEmpty());
  EXPECT_THAT(NamespacesOf(next.pid()), ::testing::IsEmpty());
}

// Without root: a clear refusal, and nothing runs.
TEST(EmulatedLink, RefusedWithoutRoot) {
  ASSERT_EQ(geteuid(), 0u) << "this test drops root with setpriv; run as root";
  const std::string dir = TempDir("noroot");
  fs::permissions(dir, fs::perms::all);
  // The programs and the config in a folder nobody can read, whatever the
  // checkout's own permissions (a checkout under /root is closed to nobody).
  for (const char* exe :
       {"fedfwd-run", "fedfwd-server", "fedfwd-client", "fedfwd-relay"}) {
    fs::copy_file(BinPath(exe), dir + "/" + exe);
    fs::permissions(dir + "/" + exe, fs::perms::all);
  }
  fs::copy_file(SourcePath("configs/smoke_tiny.yaml"), dir + "/smoke.yaml");
  fs::permissions(dir + "/smoke.yaml", fs::perms::all);
  ChildProcess run({"/usr/bin/setpriv", "--reuid=65534", "--regid=65534",
                    "--clear-groups", dir + "/fedfwd-run", dir + "/smoke.yaml",
                    "--out", dir + "/out", "--link", "rate=1mbit"},
                   dir + "/run.log");
  std::optional<int> code = run.Wait(absl::Seconds(60));
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 1) << run.Log();
  EXPECT_THAT(run.Log(), HasSubstr("--link needs root"));
  EXPECT_THAT(run.Log(), HasSubstr("never runs unshaped"));
  EXPECT_FALSE(fs::exists(dir + "/out/server.log"));
  std::error_code ec;
  fs::remove_all(dir, ec);  // the copied programs
}

}  // namespace
}  // namespace fedfwd
