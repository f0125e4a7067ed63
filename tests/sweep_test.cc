// The pure parts of fedfwd-run's sweeps: parsing and expanding the sweep
// section, cell names, the skip decision on a cell's folder, and the
// results.csv / results.md writers. Running a sweep is covered by
// tests/integration/sweep_test.cc.
#include "tools/sweep.h"

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fedfwd {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

std::string MakeTempDir(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  fs::path dir = fs::path(base != nullptr ? base : fs::temp_directory_path()) /
                 ("sweep_test_" + std::to_string(getpid()) + "_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

std::string Message(const absl::Status& s) { return std::string(s.message()); }

SweepSpec MustSplit(const std::string& yaml) {
  absl::StatusOr<SplitConfigText> split = SplitSweep(yaml, "exp.yaml");
  EXPECT_TRUE(split.ok()) << split.status();
  if (!split.ok() || !split->sweep) return {};
  return *split->sweep;
}

constexpr char kTwoByTwo[] = R"(model: tiny
rounds: 5
seed: 4
sweep:
  lr: [1e-4, 3e-4]
  tangent.distribution: [normal, rademacher]
  seeds: 2
)";

TEST(SplitSweep, WithoutSweepTheTextIsUnchanged) {
  const std::string yaml = "# comment\nmodel: tiny\nrounds: 5\n";
  absl::StatusOr<SplitConfigText> split = SplitSweep(yaml, "exp.yaml");
  ASSERT_TRUE(split.ok()) << split.status();
  EXPECT_FALSE(split->sweep.has_value());
  EXPECT_EQ(split->base_yaml, yaml);
  // Broken YAML is left for the config parser, which names line and column.
  split = SplitSweep("model: [tiny\n", "exp.yaml");
  ASSERT_TRUE(split.ok());
  EXPECT_FALSE(split->sweep.has_value());
}

TEST(SplitSweep, StripsTheSectionAndKeepsKeysInOrder) {
  absl::StatusOr<SplitConfigText> split = SplitSweep(kTwoByTwo, "exp.yaml");
  ASSERT_TRUE(split.ok()) << split.status();
  ASSERT_TRUE(split->sweep.has_value());
  const SweepSpec& s = *split->sweep;
  ASSERT_EQ(s.axes.size(), 2u);
  EXPECT_EQ(s.axes[0].key, "lr");
  EXPECT_THAT(s.axes[0].values, ElementsAre("1e-4", "3e-4"));
  EXPECT_EQ(s.axes[1].key, "tangent.distribution");
  EXPECT_THAT(s.axes[1].values, ElementsAre("normal", "rademacher"));
  EXPECT_EQ(s.seed_count, 2);
  EXPECT_TRUE(s.seed_list.empty());
  // The rest is a config the parser accepts (it refuses unknown keys).
  EXPECT_THAT(split->base_yaml, Not(HasSubstr("sweep")));
  absl::StatusOr<Config> base = ParseConfig(split->base_yaml, ".", {});
  ASSERT_TRUE(base.ok()) << base.status();
  EXPECT_EQ(base->rounds, 5);
  EXPECT_EQ(base->seed, 4u);
}

TEST(SplitSweep, KeepsLineNumbersForTheConfigParser) {
  const std::string yaml =
      "model: tiny\nsweep:\n  lr: [1, 2]\n  # note\n  seeds: 2\n"
      "rounds: 5\nbatch_size: lots\n";
  absl::StatusOr<SplitConfigText> split = SplitSweep(yaml, "exp.yaml");
  ASSERT_TRUE(split.ok()) << split.status();
  EXPECT_EQ(split->base_yaml,
            "model: tiny\n\n\n\n\nrounds: 5\nbatch_size: lots\n");
  absl::StatusOr<Config> config = ParseConfig(split->base_yaml, ".", {});
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(Message(config.status()), HasSubstr("batch_size"));
  EXPECT_THAT(Message(config.status()), HasSubstr("line 7"));
  // A flow-style document is written again without the sweep.
  split = SplitSweep("{model: tiny, sweep: {lr: [1, 2]}, rounds: 5}", "x");
  ASSERT_TRUE(split.ok()) << split.status();
  config = ParseConfig(split->base_yaml, ".", {});
  ASSERT_TRUE(config.ok()) << config.status() << "\n" << split->base_yaml;
  EXPECT_EQ(config->rounds, 5);
}

TEST(SplitSweep, ListValuesAndSeedLists) {
  SweepSpec s =
      MustSplit("sweep:\n  targets: [[0.5], [0.5, 0.8]]\n  seeds: [7, 1, 3]\n");
  ASSERT_EQ(s.axes.size(), 1u);
  EXPECT_THAT(s.axes[0].values, ElementsAre("[0.5]", "[0.5, 0.8]"));
  EXPECT_THAT(s.axes[0].yaml_values, ElementsAre("[0.5]", "[0.5, 0.8]"));
  EXPECT_THAT(s.seed_list, ElementsAre(7u, 1u, 3u));
  EXPECT_EQ(s.seed_count, 0);
}

TEST(SplitSweep, ValuesThatNeedQuotesAreQuotedForTheOverride) {
  SweepSpec s = MustSplit("sweep:\n  dataset.data_dir: ['a: b', plain]\n");
  ASSERT_EQ(s.axes.size(), 1u);
  EXPECT_THAT(s.axes[0].values, ElementsAre("a: b", "plain"));
  EXPECT_EQ(s.axes[0].yaml_values[1], "plain");
  EXPECT_NE(s.axes[0].yaml_values[0], "a: b");  // would read back as a map
}

TEST(SplitSweep, BadSweepsAreNamed) {
  struct Case {
    const char* yaml;
    const char* expected;
  };
  const Case cases[] = {
      {"sweep: [1, 2]\n", "sweep: expected a map"},
      {"sweep: {}\n", "sweep: expected a map"},
      {"sweep:\n  lr: 1e-4\n", "sweep.lr: expected a non-empty list"},
      {"sweep:\n  lr: []\n", "sweep.lr: expected a non-empty list"},
      {"sweep:\n  tangent: {distribution: [normal]}\n",
       "sweep.tangent is a map"},
      {"sweep:\n  lr: [1e-4, 1e-4]\n", "value '1e-4' is listed twice"},
      {"sweep:\n  lr: [{a: 1}]\n", "sweep.lr: each value"},
      {"sweep:\n  lr: [1, ~]\n", "sweep.lr: each value"},
      {"sweep:\n  seed: [1, 2]\n", "sweep.seed: list seeds"},
      {"sweep:\n  seeds: 0\n", "sweep.seeds: expected a count"},
      {"sweep:\n  seeds: 1001\n", "sweep.seeds: expected a count"},
      {"sweep:\n  seeds: x\n", "sweep.seeds: expected a count"},
      {"sweep:\n  seeds: [1, -2]\n", "'-2' is not a seed"},
      {"sweep:\n  seeds: [1, 1.5]\n", "'1.5' is not a seed"},
      {"sweep:\n  seeds: [3, 3]\n", "seed 3 is listed twice"},
      {"sweep:\n  seeds: []\n", "sweep.seeds"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<SplitConfigText> split = SplitSweep(c.yaml, "exp.yaml");
    ASSERT_FALSE(split.ok()) << c.yaml;
    EXPECT_THAT(Message(split.status()), HasSubstr(c.expected)) << c.yaml;
    EXPECT_THAT(Message(split.status()), HasSubstr("exp.yaml")) << c.yaml;
  }
}

TEST(SplitSweep, ErrorsNameTheLine) {
  absl::StatusOr<SplitConfigText> split =
      SplitSweep("model: tiny\nsweep:\n  lr: [1]\n  seeds: -3\n", "exp.yaml");
  ASSERT_FALSE(split.ok());
  EXPECT_THAT(Message(split.status()),
              HasSubstr("exp.yaml (line 4): sweep.seeds"));
}

TEST(ExpandSweep, FirstKeySlowestSeedsInnermost) {
  absl::StatusOr<std::vector<SweepCell>> cells =
      ExpandSweep(MustSplit(kTwoByTwo), /*base_seed=*/4);
  ASSERT_TRUE(cells.ok()) << cells.status();
  ASSERT_EQ(cells->size(), 8u);
  std::vector<std::string> names;
  for (const SweepCell& c : *cells) names.push_back(c.name);
  EXPECT_THAT(names,
              ElementsAre("lr=1e-4,tangent.distribution=normal,seed=4",
                          "lr=1e-4,tangent.distribution=normal,seed=5",
                          "lr=1e-4,tangent.distribution=rademacher,seed=4",
                          "lr=1e-4,tangent.distribution=rademacher,seed=5",
                          "lr=3e-4,tangent.distribution=normal,seed=4",
                          "lr=3e-4,tangent.distribution=normal,seed=5",
                          "lr=3e-4,tangent.distribution=rademacher,seed=4",
                          "lr=3e-4,tangent.distribution=rademacher,seed=5"));
  EXPECT_EQ((*cells)[5].index, 5);
  EXPECT_THAT((*cells)[5].values, ElementsAre("3e-4", "normal"));
  EXPECT_THAT((*cells)[5].overrides,
              ElementsAre("lr=3e-4", "tangent.distribution=normal", "seed=5"));
}

TEST(ExpandSweep, SeedsRule) {
  // seeds: N -> the config's seed and the N-1 after it.
  auto cells = ExpandSweep(MustSplit("sweep: {seeds: 3}\n"), 10);
  ASSERT_TRUE(cells.ok());
  ASSERT_EQ(cells->size(), 3u);
  EXPECT_EQ((*cells)[0].seed, 10u);
  EXPECT_EQ((*cells)[2].seed, 12u);
  EXPECT_EQ((*cells)[2].name, "seed=12");
  // A list is taken as written.
  cells = ExpandSweep(MustSplit("sweep: {lr: [1], seeds: [9, 2]}\n"), 10);
  ASSERT_TRUE(cells.ok());
  ASSERT_EQ(cells->size(), 2u);
  EXPECT_EQ((*cells)[0].seed, 9u);
  EXPECT_EQ((*cells)[1].seed, 2u);
  // No seeds: one run per combination with the config's seed, which the
  // cell does not override.
  cells = ExpandSweep(MustSplit("sweep: {lr: [1, 2]}\n"), 10);
  ASSERT_TRUE(cells.ok());
  ASSERT_EQ(cells->size(), 2u);
  EXPECT_EQ((*cells)[1].seed, 10u);
  EXPECT_THAT((*cells)[1].overrides, ElementsAre("lr=2"));
  EXPECT_EQ((*cells)[1].name, "lr=2,seed=10");
}

TEST(ExpandSweep, NamesThatCollideAreRefused) {
  auto cells =
      ExpandSweep(MustSplit("sweep: {dataset.data_dir: [a/b, a_b]}\n"), 1);
  ASSERT_FALSE(cells.ok());
  EXPECT_THAT(Message(cells.status()), HasSubstr("same folder name"));
  EXPECT_THAT(Message(cells.status()), HasSubstr("dataset.data_dir=a_b"));
}

TEST(CellName, IsSafeForFileNames) {
  EXPECT_EQ(CellName({"targets"}, {"[0.5, 0.8]"}, 1), "targets=0.5_0.8,seed=1");
  EXPECT_EQ(CellName({"dataset.data_dir"}, {"/data/my mnist"}, 2),
            "dataset.data_dir=_data_mymnist,seed=2");
  EXPECT_EQ(CellName({"model"}, {""}, 3), "model=_,seed=3");
  EXPECT_EQ(CellName({}, {}, 7), "seed=7");
}

TEST(CellName, LongNamesAreCutWithAHash) {
  const std::string a(300, 'a');
  std::string b = a;
  b.back() = 'b';
  const std::string na = CellName({"model"}, {a}, 1);
  const std::string nb = CellName({"model"}, {b}, 1);
  EXPECT_EQ(na.size(), 200u);
  EXPECT_EQ(nb.size(), 200u);
  EXPECT_NE(na, nb);
  EXPECT_EQ(na, CellName({"model"}, {a}, 1));  // stable
}

class PlanSweepTest : public ::testing::Test {
 protected:
  absl::StatusOr<SweepPlan> Plan(const std::string& yaml,
                                 const std::vector<std::string>& sets = {}) {
    absl::StatusOr<SplitConfigText> split = SplitSweep(yaml, "exp.yaml");
    if (!split.ok()) return split.status();
    if (!split->sweep) return absl::InvalidArgumentError("no sweep");
    return PlanSweep(split->base_yaml, *split->sweep, "/cfg", sets, "exp.yaml");
  }
};

TEST_F(PlanSweepTest, EveryCellGetsItsValuesTheSetsAndItsSeed) {
  absl::StatusOr<SweepPlan> plan = Plan(kTwoByTwo, {"rounds=7"});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(plan->keys, ElementsAre("lr", "tangent.distribution"));
  EXPECT_TRUE(plan->sweeps_seeds);
  ASSERT_EQ(plan->cells.size(), 8u);
  const PlannedCell& last = plan->cells.back();
  EXPECT_DOUBLE_EQ(last.config.lr, 3e-4);
  EXPECT_EQ(last.config.tangent.distribution, "rademacher");
  EXPECT_EQ(last.config.seed, 5u);
  EXPECT_EQ(last.config.rounds, 7);
  EXPECT_EQ(last.config.model, "tiny");
  EXPECT_EQ(plan->cells.front().config.seed, 4u);
  EXPECT_DOUBLE_EQ(plan->cells.front().config.lr, 1e-4);
}

TEST_F(PlanSweepTest, SetSeedShiftsACountOfSeeds) {
  absl::StatusOr<SweepPlan> plan = Plan(kTwoByTwo, {"seed=20"});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->cells[0].config.seed, 20u);
  EXPECT_EQ(plan->cells[1].config.seed, 21u);
  EXPECT_EQ(plan->cells[1].cell.name,
            "lr=1e-4,tangent.distribution=normal,seed=21");
}

TEST_F(PlanSweepTest, ListValuesReachListKeys) {
  absl::StatusOr<SweepPlan> plan =
      Plan("sweep:\n  targets: [[0.5], [0.5, 0.8]]\n");
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->cells.size(), 2u);
  EXPECT_THAT(plan->cells[1].config.targets, ElementsAre(0.5, 0.8));
  EXPECT_FALSE(plan->sweeps_seeds);
}

TEST_F(PlanSweepTest, BadKeysAndValuesAreNamed) {
  absl::StatusOr<SweepPlan> plan = Plan("sweep:\n  lrr: [1, 2]\n");
  ASSERT_FALSE(plan.ok());
  EXPECT_THAT(Message(plan.status()), HasSubstr("lrr"));
  EXPECT_THAT(Message(plan.status()), HasSubstr("'1'"));

  plan = Plan("sweep:\n  lr: [1e-4, fast]\n");
  ASSERT_FALSE(plan.ok());
  EXPECT_THAT(Message(plan.status()), HasSubstr("sweep lr: value 'fast'"));

  plan = Plan("sweep:\n  tangent.distribution: [normal, uniform]\n");
  ASSERT_FALSE(plan.ok());
  EXPECT_THAT(Message(plan.status()),
              HasSubstr("tangent.distribution: value 'uniform'"));
}

TEST_F(PlanSweepTest, CombinationsAreCheckedToo) {
  // Each value is fine on its own; together the quorum exceeds the clients.
  absl::StatusOr<SweepPlan> plan =
      Plan("sweep:\n  clients: [2, 4]\n  min_clients: [1, 3]\n");
  ASSERT_FALSE(plan.ok());
  EXPECT_THAT(Message(plan.status()),
              HasSubstr("sweep cell clients=2,min_clients=3"));
}

TEST_F(PlanSweepTest, SetOfASweptKeyIsRefused) {
  absl::StatusOr<SweepPlan> plan = Plan(kTwoByTwo, {"lr=0.1"});
  ASSERT_FALSE(plan.ok());
  EXPECT_THAT(Message(plan.status()), HasSubstr("--set lr=0.1"));
  plan = Plan("sweep: {lr: [1, 2], seeds: [1, 2]}\n", {"seed=3"});
  ASSERT_FALSE(plan.ok());
  EXPECT_THAT(Message(plan.status()), HasSubstr("--set seed=3"));
  // A bad --set is reported as the config parser reports it.
  plan = Plan(kTwoByTwo, {"nope=1"});
  ASSERT_FALSE(plan.ok());
  EXPECT_THAT(Message(plan.status()), HasSubstr("nope"));
}

TEST_F(PlanSweepTest, TwoSpellingsOfOneValueAreRefused) {
  absl::StatusOr<SweepPlan> plan = Plan("sweep:\n  lr: [1e-4, 0.0001]\n");
  ASSERT_FALSE(plan.ok());
  EXPECT_THAT(Message(plan.status()), HasSubstr("same config"));
}

// A summary.json as the coordinator writes it (trimmed).
std::string Summary(bool interrupted, const std::string& error = "") {
  return std::string("{") +
         (error.empty() ? "" : "\"error\": \"" + error + "\", ") +
         R"("final_test_acc": 0.5716, "rounds": 50, "wall_s": 5.99,
  "bytes_up_total": 22672, "bytes_down_total": 309064,
  "interrupted": )" +
         (interrupted ? "true" : "false") + R"(,
  "targets": [
    {"bytes_down": 123844, "bytes_up": 9352, "reached": true, "round": 20,
     "target": 0.3, "wall_s": 5.82},
    {"reached": false, "target": 0.9}]})";
}

TEST(ParseRunSummary, ReadsTheFieldsResultsUse) {
  absl::StatusOr<RunSummary> s = ParseRunSummary(Summary(false));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_DOUBLE_EQ(s->final_test_acc, 0.5716);
  EXPECT_EQ(s->rounds, 50);
  EXPECT_DOUBLE_EQ(s->wall_s, 5.99);
  EXPECT_EQ(s->bytes_up, 22672);
  EXPECT_EQ(s->bytes_down, 309064);
  EXPECT_FALSE(s->interrupted);
  EXPECT_TRUE(s->error.empty());
  ASSERT_EQ(s->targets.size(), 2u);
  EXPECT_TRUE(s->targets[0].reached);
  EXPECT_EQ(s->targets[0].round, 20);
  EXPECT_EQ(s->targets[0].bytes_up, 9352);
  EXPECT_FALSE(s->targets[1].reached);
  EXPECT_DOUBLE_EQ(s->targets[1].target, 0.9);

  s = ParseRunSummary(Summary(true, "diverged"));
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(s->interrupted);
  EXPECT_EQ(s->error, "diverged");
  EXPECT_FALSE(ParseRunSummary("{\"rounds\": 3}").ok());
  // Decentralized and central runs count steps under their own keys.
  s = ParseRunSummary(R"({"mode": "decentralized", "final_test_acc": 0.9,
      "steps_per_worker": 1500, "steps_planned": 1500, "wall_s": 200,
      "bytes_up_total": 10, "bytes_down_total": 20,
      "targets": [{"target": 0.5, "reached": true, "step": 300}]})");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->rounds, 1500);
  EXPECT_EQ(s->unit, "step");
  ASSERT_EQ(s->targets.size(), 1u);
  EXPECT_TRUE(s->targets[0].reached);
  EXPECT_EQ(s->targets[0].round, 300);
  s = ParseRunSummary(R"({"mode": "central", "final_test_acc": 0.9,
      "steps": 60, "wall_s": 2, "bytes_up_total": 0,
      "bytes_down_total": 0})");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->rounds, 60);
  EXPECT_FALSE(ParseRunSummary("not json").ok());
  // A regression's summary scores by R^2 and adds the RMSE; written by
  // WriteSummaryCore and read back.
  RunSummary reg;
  reg.task = "regression";
  reg.final_test_acc = 0.46;
  reg.best_test_acc = 0.48;
  reg.final_test_rmse = 0.76;
  reg.rounds = 600;
  nlohmann::json j;
  WriteSummaryCore(reg, &j);
  EXPECT_FALSE(j.contains("final_test_acc"));
  EXPECT_EQ(j["final_test_r2"], 0.46);
  EXPECT_EQ(j["best_test_r2"], 0.48);
  EXPECT_EQ(j["final_test_rmse"], 0.76);
  s = ParseRunSummary(j.dump());
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->task, "regression");
  EXPECT_DOUBLE_EQ(s->final_test_acc, 0.46);
  EXPECT_EQ(s->best_test_acc, 0.48);
  EXPECT_EQ(s->final_test_rmse, 0.76);
}

class InspectCellDirTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = MakeTempDir("cells") + "/lr=1,seed=1"; }
  void TearDown() override { fs::remove_all(fs::path(dir_).parent_path()); }
  void Write(const std::string& name, const std::string& text) {
    fs::create_directories(dir_);
    std::ofstream(dir_ + "/" + name) << text;
  }
  std::string dir_;
};

TEST_F(InspectCellDirTest, NewFolders) {
  EXPECT_EQ(InspectCellDir(dir_, "rounds: 5\n").value(), CellState::kNew);
  fs::create_directories(dir_);
  EXPECT_EQ(InspectCellDir(dir_, "rounds: 5\n").value(), CellState::kNew);
}

TEST_F(InspectCellDirTest, FinishedOnlyWithACleanSummary) {
  Write("config.yaml", "rounds: 5\n");
  EXPECT_EQ(InspectCellDir(dir_, "rounds: 5\n").value(),
            CellState::kUnfinished);
  Write("summary.json", Summary(/*interrupted=*/true));
  EXPECT_EQ(InspectCellDir(dir_, "rounds: 5\n").value(),
            CellState::kUnfinished);
  Write("summary.json", Summary(false, "run failed: diverged"));
  EXPECT_EQ(InspectCellDir(dir_, "rounds: 5\n").value(),
            CellState::kUnfinished);
  Write("summary.json", "{\"final_test_acc\": ");  // torn write
  EXPECT_EQ(InspectCellDir(dir_, "rounds: 5\n").value(),
            CellState::kUnfinished);
  Write("summary.json", Summary(false));
  EXPECT_EQ(InspectCellDir(dir_, "rounds: 5\n").value(), CellState::kFinished);
}

TEST_F(InspectCellDirTest, AnotherConfigIsRefused) {
  Write("config.yaml", "rounds: 5\n");
  Write("summary.json", Summary(false));
  absl::StatusOr<CellState> state = InspectCellDir(dir_, "rounds: 6\n");
  ASSERT_FALSE(state.ok());
  EXPECT_THAT(Message(state.status()), HasSubstr(dir_ + "/config.yaml"));
  EXPECT_THAT(Message(state.status()), HasSubstr("differs"));
}

TEST_F(InspectCellDirTest, AForeignFolderIsRefused) {
  Write("notes.txt", "mine");
  absl::StatusOr<CellState> state = InspectCellDir(dir_, "rounds: 5\n");
  ASSERT_FALSE(state.ok());
  EXPECT_THAT(Message(state.status()), HasSubstr(dir_));
  EXPECT_THAT(Message(state.status()), HasSubstr("no config.yaml"));
}

TEST(CsvField, QuotesOnlyWhatNeedsIt) {
  EXPECT_EQ(CsvField("0.5"), "0.5");
  EXPECT_EQ(CsvField(""), "");
  EXPECT_EQ(CsvField("lr=1,seed=2"), "\"lr=1,seed=2\"");
  EXPECT_EQ(CsvField("say \"hi\""), "\"say \"\"hi\"\"\"");
  EXPECT_EQ(CsvField("two\nlines"), "\"two\nlines\"");
  EXPECT_EQ(CsvField("[0.5, 0.8]"), "\"[0.5, 0.8]\"");
}

SweepRow Row(std::vector<std::string> values, uint64_t seed, double acc,
             double wall, int64_t up, std::optional<int64_t> round_03,
             const std::string& status = "finished") {
  SweepRow row;
  row.values = std::move(values);
  row.seed = seed;
  row.status = status;
  row.folder = "/runs/x/cell";
  RunSummary s;
  s.final_test_acc = acc;
  s.rounds = 50;
  s.wall_s = wall;
  s.bytes_up = up;
  s.bytes_down = up * 10;
  TargetOutcome t;
  t.target = 0.3;
  if (round_03) {
    t.reached = true;
    t.round = *round_03;
    t.wall_s = wall / 2;
    t.bytes_up = up / 2;
    t.bytes_down = up * 5;
  }
  s.targets.push_back(t);
  row.summary = s;
  return row;
}

TEST(ResultsCsv, OneRowPerRunWithTargetColumns) {
  std::vector<SweepRow> rows = {
      Row({"1e-4", "a,b"}, 1, 0.5, 10, 1000, 20),
      Row({"1e-4", "a,b"}, 2, 0.25, 12, 1000, std::nullopt)};
  SweepRow failed;
  failed.values = {"3e-4", "c"};
  failed.seed = 1;
  failed.status = "failed";
  failed.folder = "/runs/x/lr=3e-4,d=c,seed=1";
  rows.push_back(failed);
  const std::string csv = ResultsCsv({"lr", "d"}, rows);
  EXPECT_EQ(csv,
            "lr,d,seed,final_test_acc,rounds_done,wall_s,bytes_up,bytes_down,"
            "target_0.3_round,target_0.3_wall_s,target_0.3_bytes_up,"
            "target_0.3_bytes_down,status,folder\r\n"
            "1e-4,\"a,b\",1,0.5,50,10,1000,10000,20,5,500,5000,finished,"
            "/runs/x/cell\r\n"
            "1e-4,\"a,b\",2,0.25,50,12,1000,10000,,,,,finished,/runs/x/cell\r\n"
            "3e-4,c,1,,,,,,,,,,failed,\"/runs/x/lr=3e-4,d=c,seed=1\"\r\n");
}

TEST(ComputeMeanStd, SampleStandardDeviation) {
  MeanStd m = ComputeMeanStd({1, 2, 3, 4});
  EXPECT_EQ(m.n, 4);
  EXPECT_DOUBLE_EQ(m.mean, 2.5);
  EXPECT_NEAR(m.stddev, std::sqrt(5.0 / 3.0), 1e-12);  // n - 1 in the divisor
  m = ComputeMeanStd({0.8});
  EXPECT_EQ(m.n, 1);
  EXPECT_DOUBLE_EQ(m.mean, 0.8);
  EXPECT_EQ(m.stddev, 0);
  EXPECT_EQ(ComputeMeanStd({}).n, 0);
}

TEST(ResultsMarkdown, AggregatesSeedsPerCombination) {
  const std::vector<SweepRow> rows = {
      Row({"1e-4"}, 1, 0.80, 10, 1000, 20),
      Row({"3e-4"}, 1, 0.90, 30, 3000, 10),
      Row({"1e-4"}, 2, 0.70, 20, 1000, std::nullopt),
      Row({"3e-4"}, 2, 0.10, 99, 5000, 1, "failed"),
      Row({"1e-4"}, 3, 0.60, 30, 1000, 40),
  };
  const std::string md = ResultsMarkdown({"lr"}, rows, "# Sweep x");
  EXPECT_EQ(md,
            "# Sweep x\n\n"
            "| `lr` | runs | final_test_acc | wall_s | bytes up | bytes down | "
            "round to 0.3 |\n"
            "|---|---:|---:|---:|---:|---:|---:|\n"
            "| 1e-4 | 3 | 0.7000 ± 0.1000 | 20.0 ± 10.0 | 1.00 kB ± 0 B | "
            "10.0 kB ± 0 B | 30 (2/3) |\n"
            "| 3e-4 | 1 (+1 failed) | 0.9000 | 30.0 | 3.00 kB | 30.0 kB | "
            "10 (1/1) |\n");
}

TEST(ResultsMarkdown, NothingFinishedShowsDashes) {
  const std::vector<SweepRow> rows = {
      Row({"a|b"}, 1, 0.5, 1, 1, 1, "interrupted")};
  const std::string md = ResultsMarkdown({"model"}, rows, "");
  EXPECT_THAT(md, HasSubstr("| a\\|b | 0 (+1 interrupted) | – | – | – | – | "
                            "– (0/0) |"));
}

TEST(FormatBytes, DecimalUnitsThreeDigits) {
  EXPECT_EQ(FormatBytes(0), "0 B");
  EXPECT_EQ(FormatBytes(950), "950 B");
  EXPECT_EQ(FormatBytes(1550), "1.55 kB");
  EXPECT_EQ(FormatBytes(155000), "155 kB");
  EXPECT_EQ(FormatBytes(999999), "1.00 MB");
  EXPECT_EQ(FormatBytes(7455040), "7.46 MB");
  EXPECT_EQ(FormatBytes(2.5e12), "2.50 TB");
}

TEST(ShellQuote, QuotesWhatTheShellWouldSplit) {
  EXPECT_EQ(ShellQuote("--set"), "--set");
  EXPECT_EQ(ShellQuote("lr=1e-4"), "lr=1e-4");
  EXPECT_EQ(ShellQuote("targets=[0.5, 0.8]"), "'targets=[0.5, 0.8]'");
  EXPECT_EQ(ShellQuote("it's"), "'it'\\''s'");
  EXPECT_EQ(ShellQuote(""), "''");
}

}  // namespace
}  // namespace fedfwd
