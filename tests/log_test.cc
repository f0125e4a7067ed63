// Structured logs (common/log.h) and the coordinator's progress lines
// (server/progress.h).
#include "common/log.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "server/progress.h"

namespace fedfwd {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using json = nlohmann::json;

// A tmpfile() read back as a string.
class CapturedFile {
 public:
  CapturedFile() : f_(std::tmpfile()) {}
  ~CapturedFile() { std::fclose(f_); }
  FILE* get() const { return f_; }
  std::string Text() const {
    std::fflush(f_);
    std::rewind(f_);
    std::string text;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f_)) > 0) text.append(buf, n);
    std::fseek(f_, 0, SEEK_END);
    return text;
  }

 private:
  FILE* f_;
};

LogRecord Record(LogLevel level, const std::string& msg) {
  LogRecord r;
  r.level = level;
  r.component = "test";
  r.msg = msg;
  return r;
}

TEST(LogFlags, ParseNamesAndRefuseOthers) {
  EXPECT_EQ(*ParseLogLevel("debug"), LogLevel::kDebug);
  EXPECT_EQ(*ParseLogLevel("info"), LogLevel::kInfo);
  EXPECT_EQ(*ParseLogLevel("warn"), LogLevel::kWarn);
  EXPECT_EQ(*ParseLogLevel("error"), LogLevel::kError);
  EXPECT_EQ(*ParseLogFormat("human"), LogFormat::kHuman);
  EXPECT_EQ(*ParseLogFormat("json"), LogFormat::kJson);
  auto bad = ParseLogLevel("verbose");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("'verbose'"));
  EXPECT_FALSE(ParseLogFormat("JSON").ok());
}

TEST(LogJson, FieldsOrderTimestampAndTypes) {
  LogRecord r = Record(LogLevel::kWarn, "client 3 dropped");
  r.component = "coordinator";
  r.fields = {{"client_id", 3u},
              {"shard", -1},
              {"loss", 0.25},
              {"alive", false},
              {"test_acc", std::optional<double>()},
              {"eta_s", std::optional<double>(12.5)},
              {"name", "host:12"}};
  const absl::Time ts = absl::FromUnixMillis(1795428000123);  // 2026-11-23
  const std::string line = FormatJsonLine(r, ts);
  EXPECT_THAT(line, StartsWith("{\"ts\":\"2026-11-23T10:00:00.123Z\",\"level\":"
                               "\"warn\",\"component\":\"coordinator\",\"msg\":"
                               "\"client 3 dropped\","));
  const json j = json::parse(line);
  EXPECT_EQ(j["client_id"], 3);
  EXPECT_EQ(j["shard"], -1);
  EXPECT_DOUBLE_EQ(j["loss"].get<double>(), 0.25);
  EXPECT_EQ(j["alive"], false);
  EXPECT_TRUE(j["test_acc"].is_null());
  EXPECT_DOUBLE_EQ(j["eta_s"].get<double>(), 12.5);
  EXPECT_EQ(j["name"], "host:12");
}

TEST(LogJson, EscapesQuotesNewlinesControlCharactersAndUnicode) {
  const std::string msg =
      "say \"hi\"\nsecond line\twith tab \\ backslash \x01 Größe ✓";
  LogRecord r = Record(LogLevel::kInfo, msg);
  r.fields = {{"reason", "a \"quoted\"\r\nreason"}};
  const std::string line = FormatJsonLine(r, absl::UnixEpoch());
  // One line: the newline is escaped, not written.
  EXPECT_EQ(line.find('\n'), std::string::npos);
  EXPECT_EQ(line.find('\r'), std::string::npos);
  EXPECT_THAT(line, HasSubstr("say \\\"hi\\\"\\nsecond line\\twith tab \\\\ "
                              "backslash \\u0001 Größe ✓"));
  const json j = json::parse(line);
  EXPECT_EQ(j["msg"].get<std::string>(), msg);
  EXPECT_EQ(j["reason"].get<std::string>(), "a \"quoted\"\r\nreason");
}

TEST(LogJson, InvalidUtf8IsReplacedNotThrown) {
  // A client name is free text from the network.
  LogRecord r = Record(LogLevel::kInfo, "joined (bad\xff\xfe name)");
  r.fields = {{"name", std::string("x\xc3")}};
  std::string line;
  ASSERT_NO_THROW(line = FormatJsonLine(r, absl::UnixEpoch()));
  const json j = json::parse(line);
  EXPECT_EQ(j["msg"].get<std::string>(),
            "joined (bad\xEF\xBF\xBD\xEF\xBF\xBD name)");
  EXPECT_EQ(j["name"].get<std::string>(), "x\xEF\xBF\xBD");
}

TEST(LogJson, FieldsNeverOverwriteTheFixedKeys) {
  LogRecord r = Record(LogLevel::kError, "real message");
  r.fields = {{"msg", "impostor"}, {"level", "debug"}, {"extra", 1}};
  const json j = json::parse(FormatJsonLine(r, absl::UnixEpoch()));
  EXPECT_EQ(j["msg"], "real message");
  EXPECT_EQ(j["level"], "error");
  EXPECT_EQ(j["extra"], 1);
}

TEST(LogHuman, PrefixAndMessageOnly) {
  LogRecord r = Record(LogLevel::kInfo, "joined 127.0.0.1:5: shard 0 of 3");
  r.human_prefix = "[client 2] ";
  r.fields = {{"shard", 0}};
  EXPECT_EQ(FormatHumanLine(r), "[client 2] joined 127.0.0.1:5: shard 0 of 3");
}

TEST(Logger, FiltersByLevelAndPicksTheStream) {
  CapturedFile out, err;
  Logger logger;
  logger.SetOutputsForTest(out.get(), err.get(), false, 80);
  logger.Configure(LogFormat::kHuman, LogLevel::kWarn);
  logger.Write(Record(LogLevel::kDebug, "debug line"));
  logger.Write(Record(LogLevel::kInfo, "info line"));
  logger.Write(Record(LogLevel::kWarn, "warn line"));
  logger.Write(Record(LogLevel::kError, "error line"));
  LogRecord listening = Record(LogLevel::kInfo, "fedfwd-server listening on x");
  listening.always = true;
  logger.Write(listening);
  LogRecord forced_out = Record(LogLevel::kError, "run failed: x");
  forced_out.stream = LogStream::kStdout;
  logger.Write(forced_out);
  EXPECT_EQ(out.Text(), "fedfwd-server listening on x\nrun failed: x\n");
  EXPECT_EQ(err.Text(), "warn line\nerror line\n");

  logger.Configure(LogFormat::kHuman, LogLevel::kDebug);
  EXPECT_TRUE(logger.Enabled(LogLevel::kDebug));
  logger.Write(Record(LogLevel::kDebug, "now shown"));
  EXPECT_THAT(out.Text(), HasSubstr("now shown\n"));
}

TEST(Logger, JsonGoesToTheSameStreamsOneObjectPerLine) {
  CapturedFile out, err;
  Logger logger;
  logger.SetOutputsForTest(out.get(), err.get(), true, 80);
  logger.Configure(LogFormat::kJson, LogLevel::kInfo);
  // No live status line in JSON: a terminal still gets plain objects.
  EXPECT_FALSE(logger.LiveStatusAvailable());
  logger.SetStatusLine("progress");
  logger.Write(Record(LogLevel::kInfo, "a"));
  logger.Write(Record(LogLevel::kWarn, "b"));
  EXPECT_EQ(json::parse(out.Text())["msg"], "a");
  EXPECT_EQ(json::parse(err.Text())["msg"], "b");
  EXPECT_EQ(out.Text().find('\r'), std::string::npos);
}

TEST(Logger, StatusLineIsRewrittenInPlaceAndRedrawnAfterOtherLines) {
  CapturedFile out, err;
  Logger logger;
  logger.SetOutputsForTest(out.get(), err.get(), true, 20);
  ASSERT_TRUE(logger.LiveStatusAvailable());
  logger.SetStatusLine("round 1/9");
  logger.SetStatusLine("round 2/9");
  logger.Write(Record(LogLevel::kInfo, "client 4 joined"));
  logger.Write(Record(LogLevel::kWarn, "warning"));
  // Longer than the terminal: cut to width - 1 so it never wraps.
  logger.SetStatusLine("round 3/9  loss 0.1234  acc 0.5");
  logger.ClearStatusLine();
  logger.Write(Record(LogLevel::kInfo, "finished"));
  const std::string e = "\r\033[K";
  EXPECT_EQ(out.Text(), e + "round 1/9" + e + "round 2/9" + e +
                            "client 4 joined\n" + e + "round 2/9" + e + e +
                            "round 2/9" + e + "round 3/9  loss 0.1" + e +
                            "finished\n");
  EXPECT_EQ(err.Text(), "warning\n");
}

TEST(Logger, NoStatusLineWhenStdoutIsNotATerminal) {
  CapturedFile out, err;
  Logger logger;
  logger.SetOutputsForTest(out.get(), err.get(), false, 80);
  EXPECT_FALSE(logger.LiveStatusAvailable());
  logger.SetStatusLine("round 1/9");
  logger.Write(Record(LogLevel::kInfo, "line"));
  logger.ClearStatusLine();
  EXPECT_EQ(out.Text(), "line\n");
}

TEST(Logger, ConcurrentWritersNeverInterleaveLines) {
  CapturedFile out, err;
  Logger logger;
  logger.SetOutputsForTest(out.get(), err.get(), false, 80);
  logger.Configure(LogFormat::kJson, LogLevel::kInfo);
  constexpr int kThreads = 8, kLines = 200;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&logger, t] {
      for (int i = 0; i < kLines; ++i) {
        LogRecord r = Record(LogLevel::kInfo, std::string(100, 'a' + t));
        r.fields = {{"thread", t}, {"i", i}};
        logger.Write(r);
      }
    });
  }
  for (auto& th : threads) th.join();
  std::vector<std::string> lines =
      absl::StrSplit(out.Text(), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), static_cast<size_t>(kThreads * kLines));
  std::vector<int> next(kThreads, 0);
  for (const std::string& line : lines) {
    const json j = json::parse(line);  // throws (fails) on a torn line
    const int t = j["thread"];
    EXPECT_EQ(j["msg"].get<std::string>(), std::string(100, 'a' + t));
    EXPECT_EQ(j["i"], next[t]++);  // each thread's lines in its order
  }
}

TEST(HumanBytes, DecimalUnitsThreeDigits) {
  EXPECT_EQ(HumanBytes(0), "0 B");
  EXPECT_EQ(HumanBytes(999), "999 B");
  EXPECT_EQ(HumanBytes(1000), "1.00 kB");
  EXPECT_EQ(HumanBytes(1550), "1.55 kB");
  EXPECT_EQ(HumanBytes(40200), "40.2 kB");
  EXPECT_EQ(HumanBytes(999960), "1.00 MB");
  EXPECT_EQ(HumanBytes(7455040), "7.46 MB");
  EXPECT_EQ(HumanBytes(123456789), "123 MB");
  EXPECT_EQ(HumanBytes(int64_t{5} * 1000 * 1000 * 1000 * 1000), "5.00 TB");
}

RoundProgress SampleProgress() {
  RoundProgress p;
  p.round = 20;
  p.rounds = 50;
  p.loss = 0.41234;
  p.test_acc = 0.85123;
  p.last_test_acc = 0.85123;
  p.last_test_round = 20;
  p.clients = 3;
  p.wall_s = 1.6;
  p.rounds_per_s = 12.34;
  p.eta_s = 2.4;
  p.bytes_up = 1550;
  p.bytes_down = 40200;
  return p;
}

TEST(Progress, PlainLineKeepsItsBeginningAndEndsWithBytes) {
  RoundProgress p = SampleProgress();
  // The text before "  up" is the line fedfwd-run and scripts have always
  // parsed.
  EXPECT_EQ(FormatProgressLine(p),
            "round 20/50  loss 0.4123  test_acc 0.8512  clients 3  12.3 "
            "rounds/s  elapsed 0:00:01  eta 0:00:02  up 1.55 kB  down 40.2 kB");
  p.test_acc.reset();
  p.eta_s = std::numeric_limits<double>::infinity();
  EXPECT_EQ(FormatProgressLine(p),
            "round 20/50  loss 0.4123  test_acc -  clients 3  12.3 rounds/s  "
            "elapsed 0:00:01  eta ?  up 1.55 kB  down 40.2 kB");
}

TEST(Progress, LiveLineShowsTheLastEvaluation) {
  RoundProgress p = SampleProgress();
  p.round = 23;
  p.test_acc.reset();
  EXPECT_EQ(FormatLiveProgress(p),
            "round 23/50  loss 0.4123  acc 0.8512 @20  eta 0:00:02  12.3 "
            "rounds/s  up 1.55 kB  down 40.2 kB");
  p.last_test_round = -1;  // resumed: the accuracy is known, its round not
  EXPECT_THAT(FormatLiveProgress(p), HasSubstr("  acc 0.8512  eta"));
  p.last_test_acc = -1;
  EXPECT_THAT(FormatLiveProgress(p), HasSubstr("  acc -  eta"));
}

TEST(Progress, Durations) {
  EXPECT_EQ(FormatDuration(0), "0:00:00");
  EXPECT_EQ(FormatDuration(3725.9), "1:02:05");
  EXPECT_EQ(FormatDuration(-1), "?");
  EXPECT_EQ(FormatDuration(std::nan("")), "?");
}

}  // namespace
}  // namespace fedfwd
