#include "client/peer_transport.h"

#include <grpcpp/grpcpp.h>

#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/codec.h"
#include "gtest/gtest.h"

namespace fedfwd {
namespace {

// A daemon's peer service on a free loopback port (plaintext), and a sender.
class PeerTransportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    service_ = std::make_unique<PeerService>(&mailbox_);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_TRUE(server_ != nullptr);
    ASSERT_GT(port, 0);
    address_ = absl::StrCat("127.0.0.1:", port);
    TlsOptions tls;
    tls.insecure = true;
    sender_ = std::make_unique<PeerSender>(tls);
  }
  void TearDown() override { server_->Shutdown(); }

  PeerMessage Message(size_t n) const {
    PeerMessage m;
    m.step = 9;
    m.weight = 0.5;
    for (size_t i = 0; i < n; ++i) m.values.push_back(0.25f * i);
    return m;
  }
  absl::Status Push(const PeerMessage& m, const std::string& token,
                    const std::string& run = "run-a") {
    int64_t bytes = 0;
    return sender_->Push(address_, token, PeerMessageChunks(m, run, 3, 4),
                         absl::Seconds(5), &bytes);
  }

  PeerMailbox mailbox_;
  std::unique_ptr<PeerService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<PeerSender> sender_;
  std::string address_;
};

TEST_F(PeerTransportTest, DeliversAMessageWithTheRunsToken) {
  mailbox_.Open("run-a", "secret-token", 100);
  ASSERT_TRUE(Push(Message(100), "secret-token").ok());
  std::vector<PeerMessage> got = mailbox_.Drain();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].from, 3u);
  EXPECT_EQ(got[0].step, 9);
  EXPECT_EQ(got[0].weight, 0.5);
  EXPECT_EQ(got[0].values, Message(100).values);
  EXPECT_TRUE(mailbox_.Drain().empty());
}

TEST_F(PeerTransportTest, RefusesStrangersAndBadMessages) {
  // Not in a run: UNAVAILABLE (the sender relays through the coordinator).
  EXPECT_TRUE(absl::IsUnavailable(Push(Message(100), "secret-token")));
  mailbox_.Open("run-a", "secret-token", 100);
  EXPECT_TRUE(absl::IsUnauthenticated(Push(Message(100), "wrong-token")));
  EXPECT_TRUE(absl::IsUnauthenticated(Push(Message(100), "")));
  EXPECT_TRUE(absl::IsFailedPrecondition(
      Push(Message(100), "secret-token", "another-run")));
  EXPECT_TRUE(absl::IsInvalidArgument(Push(Message(99), "secret-token")));
  PeerMessage nan = Message(100);
  nan.values[7] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(absl::IsInvalidArgument(Push(nan, "secret-token")));
  PeerMessage weightless = Message(100);
  weightless.weight = -1;
  EXPECT_TRUE(absl::IsInvalidArgument(Push(weightless, "secret-token")));
  EXPECT_TRUE(mailbox_.Drain().empty());
  // After the run the mailbox refuses again.
  mailbox_.Close();
  EXPECT_TRUE(absl::IsUnavailable(Push(Message(100), "secret-token")));
}

TEST_F(PeerTransportTest, AFullMailboxPushesBack) {
  mailbox_.Open("run-a", "t", 4);
  for (size_t i = 0; i < PeerMailbox::kCapacity; ++i) {
    ASSERT_TRUE(mailbox_.Deliver("run-a", Message(4)).ok());
  }
  EXPECT_TRUE(absl::IsResourceExhausted(Push(Message(4), "t")));
  EXPECT_EQ(mailbox_.Drain().size(), PeerMailbox::kCapacity);
  EXPECT_TRUE(Push(Message(4), "t").ok());
}

}  // namespace
}  // namespace fedfwd
