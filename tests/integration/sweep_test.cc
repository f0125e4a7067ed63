// fedfwd-run sweeps with the real binaries: every cell runs as its own
// federation, results.csv and results.md gather them, a rerun skips what is
// finished, a changed sweep is refused, and Ctrl-C stops the sweep after the
// current cell with the results so far (a rerun starts that cell again).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "tests/testutil/process.h"
#include "tests/testutil/synthetic_data.h"

namespace fedfwd::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using json = nlohmann::json;

// Logistic regression on pooled MNIST, 2 clients: seconds per cell.
std::string SweepConfig(int rounds, const std::string& sweep) {
  return absl::StrCat(R"(model: tiny
dataset:
  name: mnist
  data_dir: )",
                      RealMnistDir(), R"(
  train_limit: 3000
  test_limit: 1000
clients: 2
rounds: )",
                      rounds, R"(
eval_every: 5
merge: naive
tangent:
  distribution: rademacher
lr: 0.05
clip_jvp: 1.0
batch_size: 256
targets: [0.05, 0.999]
)",
                      sweep);
}

// The rows of an RFC 4180 CSV (quoted fields may hold commas, doubled
// quotes and line breaks), header first.
std::vector<std::vector<std::string>> ReadCsv(const std::string& path) {
  const std::string text = ReadFile(path);
  std::vector<std::vector<std::string>> rows(1);
  std::string field;
  bool quoted = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        field.push_back('"');
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        field.push_back(c);
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      rows.back().push_back(std::move(field));
      field.clear();
    } else if (c == '\n') {
      rows.back().push_back(std::move(field));
      field.clear();
      rows.emplace_back();
    } else if (c != '\r') {
      field.push_back(c);
    }
  }
  if (rows.back().empty() && field.empty()) rows.pop_back();
  return rows;
}

int Column(const std::vector<std::string>& header, const std::string& name) {
  for (size_t i = 0; i < header.size(); ++i) {
    if (header[i] == name) return static_cast<int>(i);
  }
  ADD_FAILURE() << "no column " << name;
  return 0;
}

TEST(Sweep, RunsEveryCellWritesResultsAndARerunSkipsThem) {
  FEDFWD_REQUIRE_MNIST();
  const std::string dir = MakeTempDir("fedfwd-sweep");
  const std::string config = dir + "/sweep.yaml";
  std::ofstream(config) << SweepConfig(
      5, "sweep:\n  lr: [0.02, 0.05]\n  seeds: 2\n");
  const std::string out = dir + "/out";

  ChildProcess run({BinPath("fedfwd-run"), config, "--out", out},
                   dir + "/run.log");
  const auto code = run.Wait(absl::Seconds(300));
  ASSERT_TRUE(code.has_value()) << run.Log();
  ASSERT_EQ(*code, 0) << run.Log();

  const std::vector<std::string> cells = {"lr=0.02,seed=1", "lr=0.02,seed=2",
                                          "lr=0.05,seed=1", "lr=0.05,seed=2"};
  const auto csv = ReadCsv(out + "/results.csv");
  ASSERT_EQ(csv.size(), 5u) << ReadFile(out + "/results.csv");
  const auto& header = csv[0];
  EXPECT_EQ(header[0], "lr");
  EXPECT_EQ(header[1], "seed");
  const int acc = Column(header, "final_test_acc");
  const int rounds = Column(header, "rounds_done");
  const int status = Column(header, "status");
  const int folder = Column(header, "folder");
  const int reached = Column(header, "target_0.05_round");
  const int unreached = Column(header, "target_0.999_round");
  for (size_t i = 0; i < cells.size(); ++i) {
    const auto& row = csv[i + 1];
    ASSERT_EQ(row.size(), header.size());
    EXPECT_EQ(row[status], "finished") << cells[i];
    EXPECT_EQ(row[rounds], "5") << cells[i];
    const double a = std::stod(row[acc]);
    EXPECT_GT(a, 0.05) << cells[i];
    EXPECT_LE(a, 1.0) << cells[i];
    EXPECT_FALSE(row[reached].empty()) << cells[i];
    EXPECT_TRUE(row[unreached].empty()) << cells[i];
    // The CSV's accuracy is the cell's own summary's.
    const json summary =
        json::parse(ReadFile(out + "/" + cells[i] + "/summary.json"));
    EXPECT_NEAR(summary["final_test_acc"].get<double>(), a, 1e-6);
    EXPECT_THAT(ReadFile(out + "/" + cells[i] + "/config.yaml"),
                HasSubstr(absl::StrCat("\nseed: ", i % 2 == 0 ? 1 : 2, "\n")));
    EXPECT_NE(row[folder].find(cells[i]), std::string::npos);
  }
  EXPECT_EQ(csv[1][0], "0.02");
  EXPECT_EQ(csv[4][0], "0.05");
  EXPECT_EQ(csv[4][1], "2");

  const std::string md = ReadFile(out + "/results.md");
  EXPECT_THAT(md, HasSubstr("| `lr` | runs | final_test_acc |"));
  EXPECT_THAT(md, HasSubstr("| 0.02 | 2 | 0."));
  EXPECT_THAT(md, HasSubstr("| 0.05 | 2 | 0."));
  EXPECT_THAT(md, HasSubstr(" ± "));
  const json sweep = json::parse(ReadFile(out + "/sweep.json"));
  EXPECT_EQ(sweep["cells"].size(), 4u);

  // Same command again: nothing runs.
  const auto before =
      fs::last_write_time(out + "/" + cells[0] + "/summary.json");
  const absl::Time start = absl::Now();
  ChildProcess rerun({BinPath("fedfwd-run"), config, "--out", out},
                     dir + "/rerun.log");
  const auto recode = rerun.Wait(absl::Seconds(60));
  ASSERT_TRUE(recode.has_value()) << rerun.Log();
  EXPECT_EQ(*recode, 0) << rerun.Log();
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  EXPECT_EQ(CountOf(rerun.Log(), "finished earlier; skipped"), 4)
      << rerun.Log();
  EXPECT_EQ(CountOf(rerun.Log(), "started 2 clients"), 0) << rerun.Log();
  EXPECT_EQ(fs::last_write_time(out + "/" + cells[0] + "/summary.json"),
            before);
  EXPECT_EQ(ReadCsv(out + "/results.csv").size(), 5u);

  // Another config into the same folders is refused before anything runs.
  ChildProcess changed(
      {BinPath("fedfwd-run"), config, "--out", out, "--set", "rounds=6"},
      dir + "/changed.log");
  const auto ccode = changed.Wait(absl::Seconds(60));
  ASSERT_TRUE(ccode.has_value());
  EXPECT_NE(*ccode, 0);
  EXPECT_THAT(changed.Log(), HasSubstr(cells[0] + "/config.yaml differs"));
  EXPECT_EQ(fs::last_write_time(out + "/" + cells[0] + "/summary.json"),
            before);
  fs::remove_all(dir);
}

// A decentralized config sweeps too: its summary.json counts steps per
// worker, which the shared reader (server/run_summary.h) takes as the
// cell's progress, so the cells finish (before, every cell read as failed).
TEST(Sweep, ADecentralizedSweepFinishesItsCells) {
  FEDFWD_REQUIRE_MNIST();
  const std::string dir = MakeTempDir("fedfwd-sweep-peer");
  const std::string config = dir + "/sweep.yaml";
  std::ofstream(config) << absl::StrCat(R"(model: tiny
dataset:
  name: mnist
  data_dir: )",
                                        RealMnistDir(), R"(
  train_limit: 3000
  test_limit: 1000
clients: 2
seed: 5
algorithm: gosgd
peer:
  steps: 20
  push_probability: 0.5
batch_size: 32
eval_every: 10
timeouts:
  client_s: 1.5
  round_s: 20
sweep:
  lr: [0.02, 0.05]
)");
  const std::string out = dir + "/out";
  ChildProcess run({BinPath("fedfwd-run"), config, "--out", out},
                   dir + "/run.log");
  const auto code = run.Wait(absl::Seconds(300));
  ASSERT_TRUE(code.has_value()) << run.Log();
  ASSERT_EQ(*code, 0) << run.Log();
  const auto csv = ReadCsv(out + "/results.csv");
  ASSERT_EQ(csv.size(), 3u) << ReadFile(out + "/results.csv");
  const int status = Column(csv[0], "status");
  const int rounds = Column(csv[0], "rounds_done");
  for (size_t i = 1; i < csv.size(); ++i) {
    EXPECT_EQ(csv[i][status], "finished") << ReadFile(out + "/results.csv");
    EXPECT_EQ(csv[i][rounds], "20") << ReadFile(out + "/results.csv");
  }
  fs::remove_all(dir);
}

TEST(Sweep, BadSweepValueIsRefusedBeforeAnythingRuns) {
  FEDFWD_REQUIRE_MNIST();
  const std::string dir = MakeTempDir("fedfwd-sweep-bad");
  const std::string config = dir + "/sweep.yaml";
  std::ofstream(config) << SweepConfig(
      5, "sweep:\n  tangent.distribution: [normal, gaussian]\n");
  ChildProcess run({BinPath("fedfwd-run"), config, "--out", dir + "/out"},
                   dir + "/run.log");
  const auto code = run.Wait(absl::Seconds(60));
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 2) << run.Log();
  EXPECT_THAT(run.Log(), HasSubstr("tangent.distribution: value 'gaussian'"));
  EXPECT_FALSE(fs::exists(dir + "/out"));
  fs::remove_all(dir);
}

TEST(Sweep, InterruptStopsAfterTheCurrentCellAndARerunStartsItAgain) {
  FEDFWD_REQUIRE_MNIST();
  const std::string dir = MakeTempDir("fedfwd-sweep-int");
  const std::string config = dir + "/sweep.yaml";
  std::ofstream(config) << SweepConfig(100000, "sweep:\n  lr: [0.02, 0.05]\n");
  const std::string out = dir + "/out";
  const std::string first = out + "/lr=0.02,seed=1";

  ChildProcess run({BinPath("fedfwd-run"), config, "--out", out},
                   dir + "/run.log");
  ASSERT_TRUE(WaitUntil(
      [&] { return ReadJsonRows(first + "/metrics.jsonl").size() >= 10; },
      absl::Seconds(120)))
      << run.Log();
  run.Signal(SIGINT);
  const auto code = run.Wait(absl::Seconds(60));
  ASSERT_TRUE(code.has_value()) << run.Log();
  EXPECT_EQ(*code, 130) << run.Log();
  EXPECT_FALSE(fs::exists(out + "/lr=0.05,seed=1")) << run.Log();
  const json summary = json::parse(ReadFile(first + "/summary.json"));
  EXPECT_TRUE(summary["interrupted"].get<bool>());
  const auto csv = ReadCsv(out + "/results.csv");
  ASSERT_EQ(csv.size(), 2u) << ReadFile(out + "/results.csv");
  EXPECT_EQ(csv[1][Column(csv[0], "status")], "interrupted");
  EXPECT_THAT(ReadFile(out + "/results.md"), HasSubstr("0 (+1 interrupted)"));
  const size_t rows_before = ReadJsonRows(first + "/metrics.jsonl").size();

  // The rerun starts the interrupted cell from scratch: a fresh
  // metrics.jsonl, shorter than the old one, rounds counting up from 0.
  ChildProcess rerun({BinPath("fedfwd-run"), config, "--out", out},
                     dir + "/rerun.log");
  ASSERT_TRUE(WaitUntil(
      [&] {
        const auto rows = ReadJsonRows(first + "/metrics.jsonl");
        return !rows.empty() && rows.size() < rows_before &&
               !fs::exists(first + "/summary.json");
      },
      absl::Seconds(120)))
      << rerun.Log();
  const auto rows = ReadJsonRows(first + "/metrics.jsonl");
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(rows[i]["round"].get<size_t>(), i);
  }
  rerun.Signal(SIGINT);
  const auto recode = rerun.Wait(absl::Seconds(60));
  ASSERT_TRUE(recode.has_value()) << rerun.Log();
  EXPECT_EQ(*recode, 130);
  EXPECT_THAT(rerun.Log(), Not(HasSubstr("skipped")));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace fedfwd::testing
