// Link specs of fedfwd-run --link and the delay relay on loopback (no root
// needed here; tests/integration/link_test.cc shapes real namespaces).
#include "tools/link_emulation.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testutil/net.h"
#include "tools/relay.h"

namespace fedfwd {
namespace {

using ::testing::HasSubstr;

TEST(LinkSpec, ParsesRatesInTcUnits) {
  EXPECT_EQ(*ParseRate("256kbit"), 256000);
  EXPECT_EQ(*ParseRate("10mbit"), 10000000);
  EXPECT_EQ(*ParseRate("1.5Mbit"), 1500000);
  EXPECT_EQ(*ParseRate("1gbit"), 1000000000);
  EXPECT_EQ(*ParseRate("9600bit"), 9600);
  for (const char* bad : {"10", "10mbps", "-1mbit", "0mbit", "mbit", "1kbit",
                          "nan mbit", "200gbit"}) {
    EXPECT_FALSE(ParseRate(bad).ok()) << bad;
  }
  EXPECT_EQ(FormatRate(256000), "256kbit");
  EXPECT_EQ(FormatRate(10000000), "10mbit");
  EXPECT_EQ(FormatRate(1500000), "1500kbit");
  EXPECT_EQ(FormatRate(9600), "9600bit");
}

TEST(LinkSpec, ParsesKeysAndNamesTheOneAtFault) {
  absl::StatusOr<LinkSpec> home =
      ParseLinkSpec("up=1mbit,down=10mbit,delay=40ms");
  ASSERT_TRUE(home.ok()) << home.status();
  EXPECT_EQ(home->up_bps, 1000000);
  EXPECT_EQ(home->down_bps, 10000000);
  EXPECT_EQ(home->delay, absl::Milliseconds(40));
  EXPECT_EQ(home->ToString(), "up=1mbit,down=10mbit,delay=40ms");
  // The canonical form parses back to the same link.
  absl::StatusOr<LinkSpec> again = ParseLinkSpec(home->ToString());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->ToString(), home->ToString());

  absl::StatusOr<LinkSpec> both = ParseLinkSpec("rate=256kbit, delay=100ms");
  ASSERT_TRUE(both.ok()) << both.status();
  EXPECT_EQ(both->up_bps, 256000);
  EXPECT_EQ(both->down_bps, 256000);

  EXPECT_THAT(ParseLinkSpec("up=1mbit,jitter=5ms").status().message(),
              HasSubstr("unknown key 'jitter'"));
  EXPECT_THAT(ParseLinkSpec("up=fast").status().message(), HasSubstr("up:"));
  EXPECT_THAT(ParseLinkSpec("delay=-4ms").status().message(),
              HasSubstr("delay"));
  EXPECT_THAT(ParseLinkSpec("delay=11s").status().message(),
              HasSubstr("delay"));
  EXPECT_THAT(ParseLinkSpec("10mbit").status().message(),
              HasSubstr("KEY=VALUE"));
  EXPECT_FALSE(ParseLinkSpec("").ok());
  EXPECT_EQ(LinkSpec().ToString(), "unshaped");
}

TEST(LinkSpec, ClientOverridesApplyOverTheCommonLink) {
  absl::StatusOr<std::vector<LinkSpec>> links = ClientLinks(
      "rate=10mbit,delay=10ms", {"0=up=256kbit", "2-3=delay=100ms"}, 4);
  ASSERT_TRUE(links.ok()) << links.status();
  ASSERT_EQ(links->size(), 4u);
  EXPECT_EQ((*links)[0].ToString(), "up=256kbit,down=10mbit,delay=10ms");
  EXPECT_EQ((*links)[1].ToString(), "up=10mbit,down=10mbit,delay=10ms");
  EXPECT_EQ((*links)[2].ToString(), "up=10mbit,down=10mbit,delay=100ms");
  EXPECT_EQ((*links)[3].ToString(), "up=10mbit,down=10mbit,delay=100ms");
  // Overrides alone, no common link.
  links = ClientLinks("", {"1=rate=1mbit"}, 2);
  ASSERT_TRUE(links.ok()) << links.status();
  EXPECT_EQ((*links)[0].ToString(), "unshaped");
  EXPECT_EQ((*links)[1].ToString(), "up=1mbit,down=1mbit");

  EXPECT_THAT(ClientLinks("", {"4=rate=1mbit"}, 4).status().message(),
              HasSubstr("from 0 to 3"));
  EXPECT_THAT(ClientLinks("", {"3-1=rate=1mbit"}, 4).status().message(),
              HasSubstr("'3-1'"));
  EXPECT_THAT(ClientLinks("", {"rate=1mbit"}, 4).status().message(),
              HasSubstr("client index"));
  EXPECT_THAT(ClientLinks("", {"0=rate=1"}, 4).status().message(),
              HasSubstr("--client-link '0=rate=1'"));
}

TEST(LinkSpec, TbfKeepsAFullFrameAndSomeQueueAtAnyRate) {
  for (int64_t bps : {8000LL, 256000LL, 1000000LL, 100000000LL}) {
    const TbfParams p = TbfFor(bps);
    EXPECT_GE(p.burst_bytes, 2 * 1514) << bps;
    EXPECT_GE(p.limit_bytes, p.burst_bytes) << bps;
  }
  // At 100 Mbit/s the bucket holds 10 ms and the queue 200 ms.
  EXPECT_EQ(TbfFor(100000000).burst_bytes, 125000);
  EXPECT_EQ(TbfFor(100000000).limit_bytes, 2500000);
}

TEST(LinkSpec, AddressesOfEachLinkAreItsOwnSlash30) {
  EXPECT_EQ(LinkAddress(0, true), "10.0.0.1");
  EXPECT_EQ(LinkAddress(0, false), "10.0.0.2");
  EXPECT_EQ(LinkAddress(1, true), "10.0.0.5");
  EXPECT_EQ(LinkAddress(64, false), "10.0.1.2");
  EXPECT_EQ(LinkAddress(16384, true), "10.1.0.1");
}

TEST(RelayRoute, ParsesAndRejects) {
  absl::StatusOr<RelayRoute> r =
      ParseRelayRoute("10.0.0.1:7000>127.0.0.1:4321@40ms");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->listen, "10.0.0.1:7000");
  EXPECT_EQ(r->target, "127.0.0.1:4321");
  EXPECT_EQ(r->delay, absl::Milliseconds(40));
  EXPECT_TRUE(ParseRelayRoute("127.0.0.1:0>127.0.0.1:1@0").ok());
  EXPECT_FALSE(ParseRelayRoute("127.0.0.1:0>127.0.0.1:1").ok());
  EXPECT_THAT(ParseRelayRoute("host:1>127.0.0.1:1@0").status().message(),
              HasSubstr("not an IPv4 address"));
  EXPECT_THAT(
      ParseRelayRoute("127.0.0.1:99999>127.0.0.1:1@0").status().message(),
      HasSubstr("port"));
  EXPECT_THAT(
      ParseRelayRoute("127.0.0.1:0>127.0.0.1:1@soon").status().message(),
      HasSubstr("delay 'soon'"));
}

// A one-connection echo server on 127.0.0.1; returns its port.
int ListenLoopback(int* fd) {
  *fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(*fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  listen(*fd, 4);
  socklen_t len = sizeof(addr);
  getsockname(*fd, reinterpret_cast<sockaddr*>(&addr), &len);
  return ntohs(addr.sin_port);
}

// Median round trip of one byte, over `n` exchanges.
absl::Duration MedianRoundTrip(int fd, int n) {
  std::vector<absl::Duration> rtts;
  for (int i = 0; i < n; ++i) {
    char c = static_cast<char>('a' + i);
    const absl::Time start = absl::Now();
    if (write(fd, &c, 1) != 1) return absl::InfiniteDuration();
    char back = 0;
    if (read(fd, &back, 1) != 1 || back != c) return absl::InfiniteDuration();
    rtts.push_back(absl::Now() - start);
  }
  std::sort(rtts.begin(), rtts.end());
  return rtts[rtts.size() / 2];
}

TEST(DelayRelay, AddsItsDelayEachWayAndPassesTheBytesInOrder) {
  int listen_fd = -1;
  const int port = ListenLoopback(&listen_fd);
  std::thread echo([listen_fd] {
    int fd = accept(listen_fd, nullptr, nullptr);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    char buffer[65536];
    ssize_t n;
    while ((n = read(fd, buffer, sizeof(buffer))) > 0) {
      ssize_t done = 0;
      while (done < n) {
        ssize_t w = write(fd, buffer + done, static_cast<size_t>(n - done));
        if (w <= 0) break;
        done += w;
      }
    }
    close(fd);
  });
  absl::StatusOr<std::unique_ptr<DelayRelay>> relay =
      DelayRelay::Start({{"127.0.0.1:0", absl::StrCat("127.0.0.1:", port),
                          absl::Milliseconds(40)}});
  ASSERT_TRUE(relay.ok()) << relay.status();
  const int fd = testing::DialTcp((*relay)->listening()[0]);
  ASSERT_GE(fd, 0);
  const absl::Duration rtt = MedianRoundTrip(fd, 7);
  // 40 ms out and 40 ms back, plus loopback and scheduling (generous: this
  // unit test runs beside others on a loaded machine).
  EXPECT_GE(rtt, absl::Milliseconds(80));
  EXPECT_LT(rtt, absl::Milliseconds(160));
  // A megabyte comes back whole and in order: the delay does not reorder
  // chunks or cap the stream at one chunk per delay.
  std::string sent(1 << 20, '\0');
  for (size_t i = 0; i < sent.size(); ++i) sent[i] = static_cast<char>(i * 7);
  std::thread writer([fd, &sent] {
    size_t done = 0;
    while (done < sent.size()) {
      ssize_t w = write(fd, sent.data() + done, sent.size() - done);
      if (w <= 0) return;
      done += static_cast<size_t>(w);
    }
    shutdown(fd, SHUT_WR);
  });
  const absl::Time start = absl::Now();
  std::string got;
  char buffer[65536];
  ssize_t n;
  while ((n = read(fd, buffer, sizeof(buffer))) > 0) got.append(buffer, n);
  const absl::Duration took = absl::Now() - start;
  writer.join();
  close(fd);
  echo.join();
  close(listen_fd);
  EXPECT_EQ(got.size(), sent.size());
  EXPECT_TRUE(got == sent);
  EXPECT_LT(took, absl::Seconds(5));
}

TEST(DelayRelay, RefusesAnAddressItCannotListenOn) {
  absl::StatusOr<std::unique_ptr<DelayRelay>> relay = DelayRelay::Start(
      {{"192.0.2.1:7000", "127.0.0.1:1", absl::ZeroDuration()}});
  ASSERT_FALSE(relay.ok());
  EXPECT_THAT(relay.status().message(),
              HasSubstr("cannot listen on 192.0.2.1:7000"));
}

}  // namespace
}  // namespace fedfwd
