// Users' own data in a federation of client daemons: a NumPy .npz data set
// and a CSV table (tests/data/make_own_data.py, written with Debian's
// python3-numpy), split one client per site (partition type id), trained by
// fedfwd-run by FedAvg and by forward gradients; and a client whose file is
// malformed stopping the run with an error that names the file and row.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "tests/testutil/process.h"
#include "tests/testutil/synthetic_data.h"

namespace fedfwd::testing {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

class OwnData : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir("fedfwd-own-data");
    const std::string cmd = absl::StrCat(
        "/usr/bin/python3 ", SourcePath("tests/data/make_own_data.py"), " ",
        dir_, " > ", dir_, "/make.log 2>&1");
    ASSERT_EQ(std::system(cmd.c_str()), 0)
        << "writing the data failed (python3-numpy missing? "
           "scripts/setup.sh --test-tools installs python3-torch, which "
           "brings it):\n"
        << ReadFile(dir_ + "/make.log");
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Config(const std::string& name, const std::string& text) {
    const std::string path = absl::StrCat(dir_, "/", name, ".yaml");
    std::ofstream(path) << text;
    return path;
  }

  // Runs fedfwd-run; returns its exit code and fills `rows`.
  int Run(const std::string& config, const std::string& out,
          std::vector<json>* rows, std::string* log = nullptr) {
    ChildProcess run({BinPath("fedfwd-run"), config, "--out", out},
                     out + ".log");
    const auto code = run.Wait(absl::Seconds(600));
    EXPECT_TRUE(code.has_value()) << run.Log();
    if (log != nullptr) *log = run.Log();
    *rows = ReadJsonRows(out + "/metrics.jsonl");
    return code.value_or(-1);
  }

  std::string dir_;
};

TEST_F(OwnData, NpzTrainsByFedAvgOneClientPerSite) {
  const std::string config =
      Config("npz", absl::StrCat("model: mlp_small\n"
                                 "dataset: {name: npz, data_dir: ",
                                 dir_, "/npz, id: site}\n",
                                 "partition: id\nclients: 4\nrounds: 3\n"
                                 "estimator: fedavg\nbatch_size: 32\n"
                                 "lr: 0.05\nmomentum: 0.9\neval_every: 1\n"));
  std::vector<json> rows;
  std::string log;
  ASSERT_EQ(Run(config, dir_ + "/npz-out", &rows, &log), 0) << log;
  ASSERT_EQ(rows.size(), 4u);
  const double acc = rows.back()["test_acc"].get<double>();
  std::cout << "npz, fedavg: round 0 " << rows.front()["test_acc"]
            << ", round 3 " << acc << "\n";
  EXPECT_GT(acc, 0.9);
  // One client per site: the four shards differ in size.
  for (int c = 0; c < 4; ++c) {
    EXPECT_THAT(ReadFile(absl::StrCat(dir_, "/npz-out/client-", c, ".log")),
                HasSubstr("joined"));
  }
}

// Clients forward only: one JVP scalar per tangent goes up.
TEST_F(OwnData, CsvTrainsByForwardGradients) {
  const std::string config = Config(
      "csv", absl::StrCat("model: logreg\n"
                          "dataset: {name: csv, data_dir: ",
                          dir_, "/csv, label: label, id: site}\n",
                          "partition: iid\nclients: 3\nrounds: 40\n"
                          "estimator: jvp\nmerge: weighted\n"
                          "tangent: {count: 8, distribution: rademacher}\n"
                          "lr: 0.05\nclip_jvp: 5.0\nbatch_size: 64\n"
                          "eval_every: 10\n"));
  std::vector<json> rows;
  std::string log;
  ASSERT_EQ(Run(config, dir_ + "/csv-out", &rows, &log), 0) << log;
  ASSERT_GE(rows.size(), 2u);
  const double acc0 = rows.front()["test_acc"].get<double>();
  const double acc = rows.back()["test_acc"].get<double>();
  std::cout << "csv, jvp: round 0 " << acc0 << ", round 40 " << acc << "\n";
  EXPECT_GT(acc, 0.8);
  EXPECT_GT(acc, acc0 + 0.3);
  for (size_t r = 1; r < rows.size(); ++r) {
    EXPECT_LT(rows[r]["bytes_up"].get<int64_t>(), 3 * 1024) << rows[r];
  }
}

// task: regression, clients forward only: the rows and the summary carry
// test R^2 and RMSE (no accuracy), and R^2 climbs from the initial model's.
TEST_F(OwnData, CsvRegressionTrainsByForwardGradients) {
  const std::string config = Config(
      "reg", absl::StrCat("model: mlp_small\ntask: regression\n"
                          "dataset: {name: csv, data_dir: ",
                          dir_, "/reg_csv}\n",
                          "clients: 3\nrounds: 150\n"
                          "estimator: jvp\nmerge: weighted\n"
                          "tangent: {count: 32, distribution: rademacher}\n"
                          "lr: 0.05\nbatch_size: 64\neval_every: 50\n"));
  std::vector<json> rows;
  std::string log;
  ASSERT_EQ(Run(config, dir_ + "/reg-out", &rows, &log), 0) << log;
  ASSERT_EQ(rows.size(), 151u);  // a row a round, evaluated every 50
  std::vector<json> evaluated;
  for (const json& row : rows) {
    EXPECT_FALSE(row.contains("test_acc")) << row;
    if (!row["test_r2"].is_null()) evaluated.push_back(row);
  }
  ASSERT_EQ(evaluated.size(), 4u);
  const double r2_0 = evaluated.front()["test_r2"].get<double>();
  const double r2 = evaluated.back()["test_r2"].get<double>();
  const double rmse = evaluated.back()["test_rmse"].get<double>();
  std::cout << "regression csv, jvp: R2 round 0 " << r2_0 << ", round 150 "
            << r2 << " (RMSE " << rmse << ")\n";
  EXPECT_GT(r2, 0.7);
  EXPECT_GT(r2, r2_0 + 0.5);
  EXPECT_LT(rmse, evaluated.front()["test_rmse"].get<double>());
  const json summary = json::parse(ReadFile(dir_ + "/reg-out/summary.json"));
  EXPECT_EQ(summary["task"], "regression");
  EXPECT_DOUBLE_EQ(summary["final_test_r2"].get<double>(), r2);
  EXPECT_DOUBLE_EQ(summary["final_test_rmse"].get<double>(), rmse);
  EXPECT_FALSE(summary.contains("final_test_acc"));
  EXPECT_THAT(log, HasSubstr("final_test_r2"));
}

// Two float targets per example from an .npz, clients backprop (FedAvg).
TEST_F(OwnData, NpzRegressionWithTwoTargetsTrainsByFedAvg) {
  const std::string config =
      Config("reg2", absl::StrCat("model: mlp_small\ntask: regression\n"
                                  "dataset: {name: npz, data_dir: ",
                                  dir_, "/reg_npz}\n",
                                  "clients: 3\nrounds: 3\nestimator: fedavg\n"
                                  "batch_size: 16\nlr: 0.02\neval_every: 1\n"));
  std::vector<json> rows;
  std::string log;
  ASSERT_EQ(Run(config, dir_ + "/reg2-out", &rows, &log), 0) << log;
  ASSERT_EQ(rows.size(), 4u);
  const double r2 = rows.back()["test_r2"].get<double>();
  std::cout << "regression npz (2 targets), fedavg: R2 round 0 "
            << rows.front()["test_r2"] << ", round 3 " << r2 << "\n";
  EXPECT_GT(r2, 0.9);
}

// The regression configs as a user runs them, on the diabetes data of
// Debian's python3-sklearn (scripts/diabetes_csv.py reads the installed
// package's files, or fetches its .deb with apt-get download): forward
// gradients, FedAvg and the centralized trainer each reach a test R^2 the
// initial model is far from (the full runs reach 0.455-0.459).
TEST_F(OwnData, DiabetesConfigsLearnTheDebianPackagesData) {
  const std::string data = dir_ + "/diabetes";
  const std::string cmd =
      absl::StrCat("/usr/bin/python3 ", SourcePath("scripts/diabetes_csv.py"),
                   " ", data, " > ", dir_, "/diabetes.log 2>&1");
  ASSERT_EQ(std::system(cmd.c_str()), 0)
      << "converting the diabetes data failed (python3-sklearn's .deb "
         "not reachable through apt?):\n"
      << ReadFile(dir_ + "/diabetes.log");
  const struct {
    const char* program;
    const char* config;
    const char* rounds;
  } runs[] = {{"fedfwd-run", "diabetes_fg_mlp.yaml", "rounds=200"},
              {"fedfwd-run", "diabetes_fedavg_mlp.yaml", "rounds=20"},
              {"fedfwd-train", "diabetes_central.yaml", "rounds=330"}};
  for (const auto& r : runs) {
    const std::string out = dir_ + "/" + r.config;
    ChildProcess run(
        {BinPath(r.program),
         SourcePath(absl::StrCat("configs/regression/", r.config)), "--out",
         out, "--set", r.rounds, "--set", "dataset.data_dir=" + data},
        out + ".log");
    const auto code = run.Wait(absl::Seconds(300));
    ASSERT_TRUE(code.has_value()) << run.Log();
    ASSERT_EQ(*code, 0) << run.Log();
    const json summary = json::parse(ReadFile(out + "/summary.json"));
    const double r2 = summary["final_test_r2"].get<double>();
    std::cout << r.config << ": final test R2 " << r2 << ", RMSE "
              << summary["final_test_rmse"] << "\n";
    EXPECT_GT(r2, 0.3) << r.config;
  }
}

TEST_F(OwnData, MalformedRowStopsTheRunWithFileAndRow) {
  // Row 5 of the training file gets a value that is not a number.
  const std::string train = dir_ + "/csv/train.csv";
  std::string text = ReadFile(train);
  size_t at = 0;
  for (int line = 1; line < 5; ++line) at = text.find('\n', at) + 1;
  text.replace(at, text.find(',', at) - at, "oops");
  std::ofstream(train) << text;
  const std::string config =
      Config("bad", absl::StrCat("model: logreg\n"
                                 "dataset: {name: csv, data_dir: ",
                                 dir_,
                                 "/csv, id: site}\nclients: 2\nrounds: 2\n"
                                 "timeouts: {join_s: 30}\n"));
  std::vector<json> rows;
  std::string log;
  EXPECT_NE(Run(config, dir_ + "/bad-out", &rows, &log), 0);
  const std::string client = ReadFile(dir_ + "/bad-out/client-0.log");
  EXPECT_THAT(client, HasSubstr("train.csv"));
  EXPECT_THAT(client, HasSubstr("line 5"));
  EXPECT_THAT(client, HasSubstr("'f0'"));
  EXPECT_THAT(client, HasSubstr("oops"));
}

}  // namespace
}  // namespace fedfwd::testing
