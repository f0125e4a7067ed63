// What fedfwd-ctl prints (tools/status_report.h).
#include "tools/status_report.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace fedfwd {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

v1::StatusReply SampleReply() {
  v1::StatusReply r;
  r.set_run_id("tiny-mnist-s3-1795428000-00ab");
  r.set_state("training");
  r.set_round(12);
  r.set_rounds(50);
  r.set_model_version(13);
  r.set_last_test_acc(0.4123);
  r.set_last_test_round(10);
  for (auto [round, acc] : {std::pair<int, double>{0, 0.101}, {10, 0.4123}}) {
    auto* a = r.add_accuracy_history();
    a->set_round(round);
    a->set_test_acc(acc);
  }
  r.set_wall_s(4.2);
  r.set_eta_s(13.9);
  r.set_bytes_up(1550);
  r.set_bytes_down(40200);
  r.set_clients_expected(2);
  r.set_min_clients(2);
  r.set_model("tiny");
  r.set_dataset("mnist");
  r.set_estimator("jvp");
  auto* a = r.add_clients();
  a->set_client_id(1);
  a->set_name("alpha:17");
  a->set_shard(0);
  a->set_alive(true);
  a->set_last_seen_s(0.25);
  auto* b = r.add_clients();
  b->set_client_id(12);
  b->set_name("b");
  b->set_shard(1);
  b->set_alive(false);
  b->set_last_seen_s(31);
  return r;
}

TEST(StatusReport, TextReportAndClientTable) {
  const std::string text = FormatStatusReport(SampleReply());
  EXPECT_THAT(text, StartsWith("run       tiny-mnist-s3-1795428000-00ab\n"
                               "state     training\n"
                               "round     12/50 (model version 13)\n"
                               "test acc  0.4123 after round 10\n"
                               "history   0: 0.1010, 10: 0.4123\n"
                               "model     tiny on mnist, estimator jvp\n"
                               "clients   1 alive of 2 registered (the run "
                               "wants 2, at least 2)\n"
                               "wall      0:00:04  eta 0:00:13\n"
                               "bytes     up 1.55 kB  down 40.2 kB\n"));
  EXPECT_THAT(text, HasSubstr("\n"
                              "id  name      shard  alive  last seen\n"
                              " 1  alpha:17      0  yes    0.2 s ago\n"
                              "12  b             1  no     31.0 s ago\n"));
}

TEST(StatusReport, NothingEvaluatedAndNoClients) {
  v1::StatusReply r;
  r.set_state("waiting");
  r.set_last_test_acc(-1);
  r.set_last_test_round(-1);
  r.set_eta_s(-1);
  const std::string text = FormatStatusReport(r);
  EXPECT_THAT(text, HasSubstr("test acc  -\n"));
  EXPECT_THAT(text, HasSubstr("wall      0:00:00\n"));
  EXPECT_EQ(text.find("last seen"), std::string::npos);
}

TEST(StatusReport, JsonHasNumbersAndTheClients) {
  const auto j = nlohmann::json::parse(StatusReplyToJson(SampleReply()));
  EXPECT_EQ(j["run_id"], "tiny-mnist-s3-1795428000-00ab");
  EXPECT_EQ(j["round"], 12);  // a number, not protobuf JSON's "12"
  EXPECT_EQ(j["rounds"], 50);
  EXPECT_EQ(j["bytes_down"], 40200);
  EXPECT_EQ(j["accuracy_history"][1]["round"], 10);
  ASSERT_EQ(j["clients"].size(), 2u);
  EXPECT_EQ(j["clients"][1]["client_id"], 12);
  EXPECT_EQ(j["clients"][1]["alive"], false);
  EXPECT_DOUBLE_EQ(j["clients"][0]["last_seen_s"].get<double>(), 0.25);
}

TEST(StatusReport, ErrorsSayWhichKind) {
  const std::string a = "127.0.0.1:9";
  EXPECT_THAT(DescribeStatusError(absl::UnavailableError("refused"), a, 5),
              StartsWith("unavailable: cannot reach the coordinator at "
                         "127.0.0.1:9 (refused)"));
  EXPECT_THAT(DescribeStatusError(absl::UnauthenticatedError("no token"), a, 5),
              StartsWith("unauthenticated: "));
  EXPECT_THAT(DescribeStatusError(absl::PermissionDeniedError("x"), a, 5),
              StartsWith("permission denied: "));
  EXPECT_EQ(DescribeStatusError(absl::DeadlineExceededError("x"), a, 2.5),
            "deadline: no reply from the coordinator at 127.0.0.1:9 within "
            "2.5 s");
}

}  // namespace
}  // namespace fedfwd
