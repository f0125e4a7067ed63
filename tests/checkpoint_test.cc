// The checkpoint frame, resumable metrics and strategy state round trips.
#include "server/checkpoint.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/metrics.h"
#include "gtest/gtest.h"
#include "server/strategy.h"
#include "tests/testutil/synthetic_data.h"

namespace fedfwd {
namespace {

ckpt::Checkpoint Sample() {
  ckpt::Checkpoint c;
  c.set_format(kCheckpointFormat);
  c.set_run_id("run");
  c.set_rounds_done(7);
  const std::vector<float> p = {1.5f, -2.0f, 3.25f};
  c.set_params(p.data(), p.size() * sizeof(float));
  auto* e = c.add_clients();
  e->set_id(2);
  e->set_session("s");
  return c;
}

TEST(Checkpoint, RoundTripsAndRefusesEveryDamage) {
  const std::string bytes = EncodeCheckpoint(Sample());
  auto back = DecodeCheckpoint(bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->rounds_done(), 7);
  EXPECT_EQ(back->params(), Sample().params());
  EXPECT_EQ(back->clients(0).session(), "s");

  for (size_t cut : {size_t{0}, size_t{5}, size_t{24}, bytes.size() - 1}) {
    auto r = DecodeCheckpoint(bytes.substr(0, cut));
    EXPECT_TRUE(absl::IsDataLoss(r.status())) << cut << " " << r.status();
  }
  std::string flipped = bytes;
  flipped[flipped.size() - 3] ^= 0x10;
  auto r = DecodeCheckpoint(flipped);
  EXPECT_TRUE(absl::IsDataLoss(r.status()));
  EXPECT_NE(r.status().message().find("checksum"), std::string::npos);
  ckpt::Checkpoint future = Sample();
  future.set_format(kCheckpointFormat + 1);
  EXPECT_TRUE(absl::IsFailedPrecondition(
      DecodeCheckpoint(EncodeCheckpoint(future)).status()));
}

TEST(Checkpoint, FileIsPrivateAndReplacedWhole) {
  const std::string dir = testing::MakeTempDir("fedfwd_ckpt_test_");
  const std::string path = dir + "/checkpoint.bin";
  EXPECT_TRUE(absl::IsNotFound(ReadCheckpoint(path).status()));
  ASSERT_TRUE(WriteCheckpoint(path, Sample()).ok());
  ckpt::Checkpoint next = Sample();
  next.set_rounds_done(8);
  ASSERT_TRUE(WriteCheckpoint(path, next).ok());
  auto back = ReadCheckpoint(path);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->rounds_done(), 8);
  const auto perms = std::filesystem::status(path).permissions();
  EXPECT_EQ(perms & std::filesystem::perms::group_read,
            std::filesystem::perms::none);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  std::filesystem::remove_all(dir);
}

TEST(MetricsWriter, ResumeKeepsRowsThroughTheCheckpointAndDropsATornLine) {
  const std::string dir = testing::MakeTempDir("fedfwd_ckpt_test_");
  std::ofstream(dir + "/metrics.jsonl")
      << "{\"round\":0}\n{\"round\":1}\n{\"round\":2}\n{\"round\":3}\n"
         "{\"round\":4,\"tes";
  auto w = MetricsWriter::OpenForResume(dir, 2);
  ASSERT_TRUE(w.ok()) << w.status();
  RoundRow row;
  row.round = 3;
  ASSERT_TRUE((*w)->Append(row).ok());
  w->reset();
  std::ifstream in(dir + "/metrics.jsonl");
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[2], "{\"round\":2}");
  const auto last = nlohmann::json::parse(lines[3], nullptr, false);
  ASSERT_FALSE(last.is_discarded()) << lines[3];
  EXPECT_EQ(last["round"], 3);
  EXPECT_TRUE(absl::IsNotFound(
      MetricsWriter::OpenForResume(dir + "/nowhere", 1).status()));
  std::filesystem::remove_all(dir);
}

TEST(StrategyState, SavedStateRestoresTheSameNextMerge) {
  Config config;
  config.model = "tiny";
  config.estimator = "fedsgd";
  config.momentum = 0.9;
  config.lr = 0.1;
  auto spec = GetModelSpec("tiny", {1, 28, 28});
  ASSERT_TRUE(spec.ok());
  auto a = MakeStrategy(config, *spec);
  auto b = MakeStrategy(config, *spec);
  ASSERT_TRUE(a.ok() && b.ok());
  const int64_t n = spec->NumParams();
  ClientResult r;
  r.client_id = 1;
  r.num_samples = 10;
  r.update.assign(static_cast<size_t>(n), 0.0f);
  for (int64_t i = 0; i < n; ++i)
    r.update[i] = 0.001f * static_cast<float>(i % 7);
  std::vector<float> pa(static_cast<size_t>(n), 0.0f), pb;
  const auto tasks = (*a)->ConfigureRound(1, {1});
  ASSERT_TRUE((*a)->Aggregate(1, tasks, {r}, &pa).ok());
  EXPECT_TRUE((*b)->LoadState({{"bogus", {}}}).code() ==
              absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE((*b)->LoadState({{"sgd.momentum", {1.0f}}}).code() ==
              absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE((*b)->LoadState((*a)->SaveState()).ok());
  pb = pa;
  const std::vector<float> after_round_1 = pa;
  ASSERT_TRUE((*a)->Aggregate(2, tasks, {r}, &pa).ok());
  ASSERT_TRUE((*b)->Aggregate(2, tasks, {r}, &pb).ok());
  EXPECT_EQ(pa, pb);
  // Without the momentum buffer the second step differs.
  auto c = MakeStrategy(config, *spec);
  ASSERT_TRUE(c.ok());
  std::vector<float> pc = after_round_1;
  ASSERT_TRUE((*c)->Aggregate(2, tasks, {r}, &pc).ok());
  EXPECT_NE(pc, pa);
}

}  // namespace
}  // namespace fedfwd
