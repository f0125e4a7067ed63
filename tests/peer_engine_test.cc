#include "server/peer_engine.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/codec.h"
#include "common/dataset.h"
#include "common/metrics.h"
#include "common/model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/evaluator.h"
#include "server/run_summary.h"
#include "tests/testutil/process.h"
#include "tests/testutil/synthetic_data.h"

namespace fedfwd {
namespace {

using ::testing::HasSubstr;

std::vector<float> SnapshotFloats(const Snapshot& s) {
  std::vector<float> out(s.bytes.size() / sizeof(float));
  std::memcpy(out.data(), s.bytes.data(), s.bytes.size());
  return out;
}

class PeerEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::MakeTempDir("fedfwd_peer_engine_test_");
    ASSERT_FALSE(
        testing::WriteSyntheticMnist(dir_ + "/data", 256, 100, 1).empty());
    config_.model = "tiny";
    config_.dataset.name = "mnist";
    config_.dataset.data_dir = dir_ + "/data";
    config_.clients = 2;
    config_.seed = 1;
    config_.batch_size = 32;
    config_.lr = 0.01;
    config_.algorithm = "easgd";
    config_.peer.steps = 4;
    config_.peer.tau = 2;
    config_.peer.alpha = 0.25;
    config_.peer.synchronous = true;
    config_.eval_every = 2;
    config_.timeouts.client_s = 30;
    config_.timeouts.round_s = 5;
    config_.timeouts.join_s = 10;
  }
  void TearDown() override {
    if (engine_) engine_->RequestStop();
    if (run_.valid()) run_.wait_for(std::chrono::seconds(30));
    engine_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  void MakeEngine() {
    auto info = GetDatasetInfo(config_.dataset.name);
    ASSERT_TRUE(info.ok());
    auto spec =
        GetModelSpec(config_.model, {info->channels, info->rows, info->cols});
    ASSERT_TRUE(spec.ok());
    spec_ = *spec;
    auto evaluator = Evaluator::Create(config_, *spec);
    ASSERT_TRUE(evaluator.ok()) << evaluator.status();
    auto metrics = MetricsWriter::Open(dir_ + "/out", "step");
    ASSERT_TRUE(metrics.ok());
    engine_ = std::make_unique<PeerEngine>(
        config_, *spec, std::move(*evaluator), std::move(*metrics), 1);
  }

  // Starts Run() and joins `n` workers, then takes their PEER tasks.
  void StartWithWorkers(int n) {
    MakeEngine();
    run_ = std::async(std::launch::async, [this] { return engine_->Run(); });
    for (int i = 0; i < n; ++i) {
      JoinParams p;
      p.protocol_version = kProtocolVersion;
      p.name = absl::StrCat("w", i);
      p.peer_address = absl::StrCat("127.0.0.1:", 7000 + i);
      p.join_key = absl::StrCat("key", i);
      auto who = engine_->Join(p);
      ASSERT_TRUE(who.ok()) << who.status();
      workers_.push_back(*who);
    }
    for (const JoinOutcome& w : workers_) {
      auto task =
          engine_->NextTask(w.client_id, w.session, absl::Seconds(10), 0);
      ASSERT_TRUE(task.ok()) << task.status();
      ASSERT_EQ(task->kind, TaskOutcome::kPeer);
      tasks_.push_back(task->peer);
    }
  }

  ClientResult Result(int worker, int64_t round, std::vector<float> values) {
    ClientResult r;
    r.client_id = workers_[static_cast<size_t>(worker)].client_id;
    r.round = round;
    r.update = std::move(values);
    r.loss = 1.5;
    return r;
  }
  const std::string& Session(int worker) {
    return workers_[static_cast<size_t>(worker)].session;
  }

  nlohmann::json Summary() {
    std::ifstream in(dir_ + "/out/summary.json");
    std::stringstream ss;
    ss << in.rdbuf();
    return nlohmann::json::parse(ss.str(), nullptr, false);
  }

  std::string dir_;
  Config config_;
  ModelSpec spec_;
  std::unique_ptr<PeerEngine> engine_;
  std::future<absl::Status> run_;
  std::vector<JoinOutcome> workers_;
  std::vector<v1::PeerTask> tasks_;
};

TEST_F(PeerEngineTest, JoinNeedsAPeerService) {
  MakeEngine();
  JoinParams p;
  p.protocol_version = kProtocolVersion;
  auto who = engine_->Join(p);
  ASSERT_FALSE(who.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(who.status()));
  EXPECT_THAT(std::string(who.status().message()), HasSubstr("--peer-listen"));
}

TEST_F(PeerEngineTest, TasksCarryTheAlgorithmAndEveryPeer) {
  StartWithWorkers(2);
  ASSERT_EQ(tasks_.size(), 2u);
  EXPECT_EQ(tasks_[0].algorithm(), "easgd");
  EXPECT_EQ(tasks_[0].steps(), 4);
  EXPECT_EQ(tasks_[0].tau(), 2);
  EXPECT_DOUBLE_EQ(tasks_[0].alpha(), 0.25);
  EXPECT_EQ(tasks_[0].report_every(), 2);
  EXPECT_EQ(tasks_[0].peers_size(), 2);
  EXPECT_EQ(tasks_[0].token().size(), 64u);
  EXPECT_EQ(tasks_[0].token(), tasks_[1].token());
  EXPECT_NE(tasks_[0].index(), tasks_[1].index());
  // A worker that polls again before its first report lost the task: it
  // gets it again; once it reported, it only waits for the end.
  auto again = engine_->NextTask(workers_[0].client_id, Session(0),
                                 absl::ZeroDuration(), 0);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->kind, TaskOutcome::kPeer);
  ASSERT_TRUE(
      engine_
          ->ReportModel(Session(0),
                        Result(0, 2, InitialParams(spec_, config_.seed)), 0)
          .ok());
  auto later = engine_->NextTask(workers_[0].client_id, Session(0),
                                 absl::ZeroDuration(), 0);
  ASSERT_TRUE(later.ok());
  EXPECT_EQ(later->kind, TaskOutcome::kWait);
  // No new workers once the run started.
  JoinParams p;
  p.protocol_version = kProtocolVersion;
  p.peer_address = "127.0.0.1:1";
  EXPECT_TRUE(absl::IsFailedPrecondition(engine_->Join(p).status()));
  // But a worker's repeated join (its reply was lost) gets its registration
  // back.
  p.name = "w0";
  p.join_key = "key0";
  auto repeat = engine_->Join(p);
  ASSERT_TRUE(repeat.ok()) << repeat.status();
  EXPECT_EQ(repeat->client_id, workers_[0].client_id);
  EXPECT_EQ(repeat->session, workers_[0].session);
}

// The center moves by the sum of all workers' elastic differences at once,
// and only when the last live worker's difference of the exchange is in.
TEST_F(PeerEngineTest, SynchronousExchangeAppliesEveryDifferenceAtOnce) {
  StartWithWorkers(2);
  const size_t n = static_cast<size_t>(spec_.NumParams());
  const std::vector<float> initial = InitialParams(spec_, config_.seed);
  auto c1 = engine_->GetSnapshot(workers_[0].client_id, Session(0), 1);
  ASSERT_TRUE(c1.ok()) << c1.status();
  EXPECT_EQ(SnapshotFloats(**c1), initial);

  std::vector<float> da(n), db(n);
  for (size_t i = 0; i < n; ++i) {
    da[i] = 0.001f * static_cast<float>(i % 7);
    db[i] = -0.002f * static_cast<float>(i % 5);
  }
  std::vector<float> bad = da;
  bad[3] = std::nanf("");
  EXPECT_TRUE(absl::IsInvalidArgument(
      engine_->Submit(Session(0), Result(0, 1, bad), 1)));
  ASSERT_TRUE(engine_->Submit(Session(0), Result(0, 1, da), 1).ok());
  EXPECT_TRUE(
      absl::IsAlreadyExists(engine_->Submit(Session(0), Result(0, 1, da), 1)));
  // Half the exchange is in: the center has not moved.
  auto still = engine_->GetSnapshot(workers_[1].client_id, Session(1), 0);
  ASSERT_TRUE(still.ok());
  EXPECT_EQ((*still)->version, 1u);
  EXPECT_EQ(SnapshotFloats(**still), initial);
  ASSERT_TRUE(engine_->Submit(Session(1), Result(1, 1, db), 1).ok());
  auto c2 = engine_->GetSnapshot(workers_[1].client_id, Session(1), 2);
  ASSERT_TRUE(c2.ok()) << c2.status();
  EXPECT_EQ((*c2)->version, 2u);
  const std::vector<float> center = SnapshotFloats(**c2);
  for (size_t i = 0; i < n; ++i) {
    const float want = static_cast<float>(
        initial[i] + (static_cast<double>(da[i]) + static_cast<double>(db[i])));
    ASSERT_EQ(center[i], want) << i;
  }
  // Exchange 1 is closed; exchange 2 is open.
  EXPECT_TRUE(absl::IsFailedPrecondition(
      engine_->Submit(Session(0), Result(0, 1, da), 1)));
  EXPECT_TRUE(absl::IsFailedPrecondition(
      engine_->Submit(Session(0), Result(0, 3, da), 1)));
}

// Reports are averaged into the consensus; the spread is the RMS distance
// of the workers to it; the run ends when every worker reported its last
// step.
TEST_F(PeerEngineTest, EvaluatesTheConsensusAndEndsAfterTheLastReports) {
  config_.algorithm = "gosgd";
  StartWithWorkers(2);
  const size_t n = static_cast<size_t>(spec_.NumParams());
  const std::vector<float> initial = InitialParams(spec_, config_.seed);
  std::vector<float> a = initial, b = initial;
  double norm2 = 0;
  for (size_t i = 0; i < n; ++i) {
    const float d = (i % 2 == 0) ? 0.5f : -0.25f;
    a[i] += d;
    b[i] -= d;
    norm2 += static_cast<double>(d) * d;
  }
  // Bad reports change nothing.
  EXPECT_TRUE(absl::IsInvalidArgument(
      engine_->ReportModel(Session(0), Result(0, 3, a), 0).status()));
  std::vector<float> nan = a;
  nan[0] = std::numeric_limits<float>::infinity();
  EXPECT_TRUE(absl::IsInvalidArgument(
      engine_->ReportModel(Session(0), Result(0, 2, nan), 0).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(
      engine_->ReportModel(Session(0), Result(0, 2, {1.0f}), 0).status()));

  auto peers = engine_->ReportModel(Session(0), Result(0, 2, a), 100);
  ASSERT_TRUE(peers.ok()) << peers.status();
  EXPECT_EQ(peers->size(), 2u);
  EXPECT_TRUE(absl::IsInvalidArgument(
      engine_->ReportModel(Session(0), Result(0, 2, a), 0).status()));
  ASSERT_TRUE(engine_->ReportModel(Session(1), Result(1, 2, b), 200).ok());
  ASSERT_TRUE(engine_->ReportModel(Session(0), Result(0, 4, a), 300).ok());
  ASSERT_TRUE(engine_->ReportModel(Session(1), Result(1, 4, b), 400).ok());
  ASSERT_EQ(run_.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  EXPECT_TRUE(run_.get().ok());

  const auto rows = testing::ReadJsonRows(dir_ + "/out/metrics.jsonl");
  ASSERT_EQ(rows.size(), 3u);                    // step 0, worker steps 2 and 4
  EXPECT_EQ(rows[1]["step"].get<int64_t>(), 4);  // 2 workers x 2 steps
  EXPECT_EQ(rows[2]["step"].get<int64_t>(), 8);
  EXPECT_EQ(rows[2]["worker_step"].get<double>(), 4.0);
  EXPECT_NEAR(rows[1]["spread"].get<double>(), std::sqrt(norm2),
              1e-4 * std::sqrt(norm2));
  EXPECT_EQ(rows[2]["clients"].get<int>(), 2);
  const nlohmann::json s = Summary();
  ASSERT_FALSE(s.is_discarded());
  EXPECT_EQ(s["mode"], "decentralized");
  EXPECT_EQ(s["workers_finished"].get<int>(), 2);
  EXPECT_EQ(s["workers_lost"].get<int>(), 0);
  EXPECT_EQ(s["peer_bytes_total"].get<int64_t>(), 700);
  EXPECT_DOUBLE_EQ(s["final_test_acc"].get<double>(),
                   rows[2]["test_acc"].get<double>());
  // The one reader of summary.json (sweeps, reports) reads it: steps per
  // worker done, a sweep does not take it for a failed cell.
  auto parsed = ParseRunSummary(s.dump());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->mode, "decentralized");
  EXPECT_EQ(parsed->unit, "step");
  EXPECT_EQ(parsed->rounds, 4);
  EXPECT_EQ(parsed->planned, 4);
  EXPECT_TRUE(parsed->error.empty());
  EXPECT_FALSE(parsed->interrupted);
  // Every worker hears that the run is over.
  auto stop = engine_->NextTask(workers_[0].client_id, Session(0),
                                absl::ZeroDuration(), 0);
  ASSERT_TRUE(stop.ok());
  EXPECT_EQ(stop->kind, TaskOutcome::kStop);
}

// A worker that stops sending heartbeats is dropped: the synchronous
// exchange closes without it, and the run ends with the survivor.
TEST_F(PeerEngineTest, ADeadWorkerLeavesTheBarrierAndTheRun) {
  config_.timeouts.client_s = 0.5;
  StartWithWorkers(2);
  const size_t n = static_cast<size_t>(spec_.NumParams());
  std::vector<float> d(n, 0.01f);
  ASSERT_TRUE(engine_->Submit(Session(0), Result(0, 1, d), 1).ok());
  // Worker 1 says nothing from now on; worker 0 keeps heartbeating while
  // it waits for the center of exchange 2.
  absl::StatusOr<std::shared_ptr<const Snapshot>> c2 =
      absl::UnknownError("unset");
  const absl::Time give_up = absl::Now() + absl::Seconds(20);
  while (absl::Now() < give_up) {
    ASSERT_TRUE(engine_->Heartbeat(workers_[0].client_id, Session(0)).ok());
    c2 = engine_->GetSnapshot(workers_[0].client_id, Session(0), 2);
    if (c2.ok()) break;
  }
  ASSERT_TRUE(c2.ok()) << c2.status();
  const std::vector<float> initial = InitialParams(spec_, config_.seed);
  EXPECT_EQ(SnapshotFloats(**c2)[0], initial[0] + 0.01f);
  const std::vector<float> x = InitialParams(spec_, config_.seed);
  ASSERT_TRUE(engine_->ReportModel(Session(0), Result(0, 2, x), 0).ok());
  ASSERT_TRUE(engine_->Submit(Session(0), Result(0, 2, d), 2).ok());
  ASSERT_TRUE(engine_->ReportModel(Session(0), Result(0, 4, x), 0).ok());
  ASSERT_EQ(run_.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  EXPECT_TRUE(run_.get().ok());
  const nlohmann::json s = Summary();
  EXPECT_EQ(s["workers_finished"].get<int>(), 1);
  EXPECT_EQ(s["workers_lost"].get<int>(), 1);
}

TEST_F(PeerEngineTest, RelaysOnlyToWorkersStillTraining) {
  config_.algorithm = "sgp";
  StartWithWorkers(2);
  const size_t n = static_cast<size_t>(spec_.NumParams());
  PeerMessage m;
  m.step = 3;
  m.weight = 0.5;
  m.values.assign(n, 0.25f);
  const uint32_t a = workers_[0].client_id, b = workers_[1].client_id;
  ASSERT_TRUE(engine_->Relay(a, Session(0), b, m).ok());
  EXPECT_EQ(engine_->RelayedPending(b), 1);
  EXPECT_TRUE(
      absl::IsFailedPrecondition(engine_->Relay(a, Session(0), 999, m)));
  EXPECT_TRUE(absl::IsUnauthenticated(engine_->Relay(a, "forged", b, m)));
  auto got = engine_->TakeRelayed(b, Session(1));
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->size(), 1u);
  EXPECT_EQ((*got)[0].from, a);
  EXPECT_EQ((*got)[0].step, 3);
  EXPECT_EQ((*got)[0].values, m.values);
  EXPECT_EQ(engine_->RelayedPending(b), 0);
  for (size_t i = 0; i < PeerEngine::kMaxRelayed; ++i) {
    ASSERT_TRUE(engine_->Relay(a, Session(0), b, m).ok());
  }
  EXPECT_TRUE(absl::IsResourceExhausted(engine_->Relay(a, Session(0), b, m)));
  // A worker that finished its steps takes no more relayed messages: its
  // senders keep the mass.
  std::vector<float> x = InitialParams(spec_, config_.seed);
  ASSERT_TRUE(engine_->ReportModel(Session(0), Result(0, 2, x), 0).ok());
  ASSERT_TRUE(engine_->ReportModel(Session(0), Result(0, 4, x), 0).ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(engine_->Relay(b, Session(1), a, m)));
}

TEST(PeerMessageCodec, ChunksRoundTripAndBrokenStreamsAreRefused) {
  PeerMessage m;
  m.from = 7;
  m.step = 42;
  m.weight = 0.125;
  m.values.resize(kSnapshotChunkBytes / sizeof(float) + 10);
  for (size_t i = 0; i < m.values.size(); ++i) {
    m.values[i] = static_cast<float>(i) * 0.5f;
  }
  const auto chunks = PeerMessageChunks(m, "run-1", 7, 9);
  ASSERT_EQ(chunks.size(), 2u);
  EXPECT_EQ(chunks[0].to(), 9u);
  PeerMessageAssembler ok(static_cast<int64_t>(m.values.size()));
  for (const auto& c : chunks) ASSERT_TRUE(ok.Add(c).ok());
  auto back = ok.Finish();
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->values, m.values);
  EXPECT_EQ(back->from, 7u);
  EXPECT_EQ(back->step, 42);
  EXPECT_EQ(back->weight, 0.125);
  EXPECT_EQ(ok.header().run_id(), "run-1");

  // Wrong size announced.
  PeerMessageAssembler small(10);
  EXPECT_TRUE(absl::IsInvalidArgument(small.Add(chunks[0])));
  // Truncated.
  PeerMessageAssembler cut(static_cast<int64_t>(m.values.size()));
  ASSERT_TRUE(cut.Add(chunks[0]).ok());
  EXPECT_TRUE(absl::IsDataLoss(cut.Finish().status()));
  // Out of order.
  PeerMessageAssembler order(static_cast<int64_t>(m.values.size()));
  ASSERT_TRUE(order.Add(chunks[0]).ok());
  EXPECT_TRUE(absl::IsDataLoss(order.Add(chunks[0])));
  // Corrupted data.
  auto bad = chunks;
  std::string data = bad[1].data();
  data[0] ^= 1;
  bad[1].set_data(data);
  PeerMessageAssembler corrupt(static_cast<int64_t>(m.values.size()));
  for (const auto& c : bad) ASSERT_TRUE(corrupt.Add(c).ok());
  EXPECT_TRUE(absl::IsDataLoss(corrupt.Finish().status()));
  // A non-finite value or a bad weight with a matching checksum.
  PeerMessage inf = m;
  inf.values[5] = std::numeric_limits<float>::infinity();
  PeerMessageAssembler nonfinite(static_cast<int64_t>(m.values.size()));
  for (const auto& c : PeerMessageChunks(inf, "r", 1, 2)) {
    ASSERT_TRUE(nonfinite.Add(c).ok());
  }
  EXPECT_TRUE(absl::IsInvalidArgument(nonfinite.Finish().status()));
  PeerMessage zero = m;
  zero.weight = 0;
  PeerMessageAssembler weightless(static_cast<int64_t>(m.values.size()));
  for (const auto& c : PeerMessageChunks(zero, "r", 1, 2)) {
    ASSERT_TRUE(weightless.Add(c).ok());
  }
  EXPECT_TRUE(absl::IsInvalidArgument(weightless.Finish().status()));
}

}  // namespace
}  // namespace fedfwd
