#include "server/round_engine.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <limits>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/codec.h"
#include "common/config.h"
#include "common/dataset.h"
#include "common/metrics.h"
#include "common/model.h"
#include "common/model_file.h"
#include "common/privacy.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/evaluator.h"
#include "server/run_summary.h"
#include "server/strategy.h"
#include "tests/testutil/synthetic_data.h"

namespace fedfwd {
namespace {

using ::testing::HasSubstr;

// Runs `fn` on its own thread. Every wait is bounded: if the thread has not
// finished when the object dies, the binary aborts with a message instead of
// hanging ctest.
template <typename T>
class Background {
 public:
  explicit Background(std::function<T()> fn)
      : future_(promise_.get_future().share()) {
    thread_ =
        std::thread([this, fn = std::move(fn)] { promise_.set_value(fn()); });
  }
  ~Background() {
    if (!WaitFor(absl::Seconds(60))) {
      std::fprintf(stderr, "round_engine_test: background thread hung\n");
      std::abort();
    }
    thread_.join();
  }
  bool WaitFor(absl::Duration d) {
    return future_.wait_for(absl::ToChronoNanoseconds(d)) ==
           std::future_status::ready;
  }
  const T& Get() { return future_.get(); }

 private:
  std::promise<T> promise_;
  std::shared_future<T> future_;
  std::thread thread_;
};

// Sets a flag when it goes out of scope, so that early test exits stop the
// scripted clients before their Background waits for them.
class SetOnExit {
 public:
  explicit SetOnExit(std::atomic<bool>* flag) : flag_(flag) {}
  ~SetOnExit() { *flag_ = true; }

 private:
  std::atomic<bool>* flag_;
};

// What one scripted client saw.
struct ClientLog {
  int accepted = 0;
  std::set<int64_t> rounds;
  bool stopped = false;
  bool stop_again = false;  // NextTask after STOP answered STOP again
  std::vector<std::string> errors;
};

// A well-behaved in-process client: polls, submits a finite result for every
// task, and on STOP asks once more, then leaves. Bounded by `limit`.
ClientLog RunClient(RoundEngine* engine, JoinOutcome who,
                    const std::atomic<bool>* quit, absl::Duration limit) {
  ClientLog log;
  const absl::Time deadline = absl::Now() + limit;
  while (!*quit && absl::Now() < deadline) {
    auto task =
        engine->NextTask(who.client_id, who.session, absl::Milliseconds(200));
    if (!task.ok()) {
      log.errors.push_back(task.status().ToString());
      return log;
    }
    if (task->kind == TaskOutcome::kStop) {
      log.stopped = true;
      auto again =
          engine->NextTask(who.client_id, who.session, absl::ZeroDuration());
      log.stop_again = again.ok() && again->kind == TaskOutcome::kStop;
      engine->Leave(who.client_id, who.session, "done").IgnoreError();
      return log;
    }
    if (task->kind != TaskOutcome::kCompute) continue;
    ClientResult r;
    r.client_id = who.client_id;
    r.round = task->task.round;
    r.jvps.assign(task->task.tangents.size(), 0.5);
    r.num_samples = 64;
    r.loss = 2.3;
    // Counted before submitting: the last result may close the run.
    engine->CountBytes(7, 11);
    absl::Status s = engine->Submit(who.session, r, task->model_version);
    if (s.ok()) {
      ++log.accepted;
      log.rounds.insert(r.round);
    } else {
      log.errors.push_back(s.ToString());
    }
  }
  log.errors.push_back("client gave up before STOP");
  return log;
}

std::vector<nlohmann::json> ReadRows(const std::string& path) {
  std::vector<nlohmann::json> rows;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) rows.push_back(nlohmann::json::parse(line));
  }
  return rows;
}

nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return nlohmann::json::parse(ss.str(), nullptr, false);
}

class RoundEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::MakeTempDir("fedfwd_round_engine_test_");
    ASSERT_FALSE(dir_.empty());
    ASSERT_FALSE(
        testing::WriteSyntheticMnist(dir_ + "/data", 512, 200, 1).empty());
    config_.model = "mlp_small";
    config_.dataset.name = "mnist";
    config_.dataset.data_dir = dir_ + "/data";
    config_.clients = 2;
    config_.min_clients = 1;
    config_.rounds = 3;
    config_.eval_every = 1;
    config_.seed = 1;
    config_.batch_size = 64;
    config_.lr = 1e-3;
    config_.targets = {0.0, 1.01};
    config_.timeouts.client_s = 1.0;
    config_.timeouts.round_s = 5;
    config_.timeouts.join_s = 10;
  }
  void TearDown() override {
    StopRun();
    engine_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // Builds engine_ from config_; output goes to out_dir().
  void MakeEngine() {
    auto info = GetDatasetInfo(config_.dataset.name);
    ASSERT_TRUE(info.ok()) << info.status();
    auto spec =
        GetModelSpec(config_.model, {info->channels, info->rows, info->cols});
    ASSERT_TRUE(spec.ok()) << spec.status();
    auto strategy = MakeStrategy(config_, *spec);
    ASSERT_TRUE(strategy.ok()) << strategy.status();
    auto evaluator = Evaluator::Create(config_, *spec);
    ASSERT_TRUE(evaluator.ok()) << evaluator.status();
    auto metrics = MetricsWriter::Open(out_dir());
    ASSERT_TRUE(metrics.ok()) << metrics.status();
    engine_ = std::make_unique<RoundEngine>(
        config_, *spec, std::move(*strategy), std::move(*evaluator),
        std::move(*metrics), 1);
  }

  std::string out_dir() const { return dir_ + "/out"; }

  JoinOutcome MustJoin(int shard = -1) {
    JoinParams p;
    p.protocol_version = kProtocolVersion;
    p.name = "test";
    p.shard = shard;
    p.num_shards = shard >= 0 ? config_.clients : 0;
    auto j = engine_->Join(p);
    EXPECT_TRUE(j.ok()) << j.status();
    return j.ok() ? *j : JoinOutcome{};
  }

  absl::Status JoinStatus(uint32_t version, int shard, int num_shards) {
    JoinParams p;
    p.protocol_version = version;
    p.name = "test";
    p.shard = shard;
    p.num_shards = num_shards;
    return engine_->Join(p).status();
  }

  // Starts Run() in the background; RequestStop() before the bounded wait
  // when the test ends early.
  void StartRun() {
    run_ = std::make_unique<Background<absl::Status>>(
        [e = engine_.get()] { return e->Run(); });
  }
  // Waits (bounded) for Run() to return and gives its status.
  absl::Status WaitRun(absl::Duration limit) {
    if (!run_->WaitFor(limit)) {
      engine_->RequestStop();
      run_->WaitFor(absl::Seconds(20));
      return absl::DeadlineExceededError("Run() did not return in time");
    }
    return run_->Get();
  }
  // Joins two well-behaved clients, runs the whole run with them and waits
  // (bounded) for Run() and both clients to end. Call inside
  // ASSERT_NO_FATAL_FAILURE.
  void RunWithTwoClients() {
    const JoinOutcome a = MustJoin(), b = MustJoin();
    StartRun();
    std::atomic<bool> quit{false};
    Background<ClientLog> ca(
        [&] { return RunClient(engine_.get(), a, &quit, absl::Seconds(60)); });
    Background<ClientLog> cb(
        [&] { return RunClient(engine_.get(), b, &quit, absl::Seconds(60)); });
    SetOnExit stop_clients(&quit);
    ASSERT_TRUE(WaitRun(absl::Seconds(60)).ok());
    quit = true;
    ASSERT_TRUE(ca.WaitFor(absl::Seconds(20)));
    ASSERT_TRUE(cb.WaitFor(absl::Seconds(20)));
  }
  void StopRun() {
    if (run_) {
      engine_->RequestStop();
      run_.reset();
    }
  }

  // Waits (bounded) for the engine to hand `who` a task.
  absl::StatusOr<TaskOutcome> WaitTask(const JoinOutcome& who,
                                       absl::Duration limit) {
    const absl::Time deadline = absl::Now() + limit;
    while (absl::Now() < deadline) {
      auto t = engine_->NextTask(who.client_id, who.session,
                                 absl::Milliseconds(200));
      if (!t.ok() || t->kind != TaskOutcome::kWait) return t;
    }
    return absl::DeadlineExceededError("no task in time");
  }

  ClientResult ValidResult(const JoinOutcome& who, const TaskOutcome& task) {
    ClientResult r;
    r.client_id = who.client_id;
    r.round = task.task.round;
    r.jvps.assign(task.task.tangents.size(), 1.0);
    r.num_samples = 64;
    r.loss = 2.3;
    return r;
  }

  uint64_t SnapshotChecksum(const JoinOutcome& who) {
    auto s = engine_->GetSnapshot(who.client_id, who.session, 0);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? (*s)->checksum : 0;
  }

  std::string dir_;
  Config config_;
  std::unique_ptr<RoundEngine> engine_;
  // Declared after engine_ so it is destroyed (bounded wait) first.
  std::unique_ptr<Background<absl::Status>> run_;
};

// --- Join. ---

TEST_F(RoundEngineTest, JoinProtocolMismatchNamesBothVersions) {
  MakeEngine();
  const absl::Status s = JoinStatus(kProtocolVersion + 98, -1, 0);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr(absl::StrCat(kProtocolVersion + 98)));
  EXPECT_THAT(s.message(),
              HasSubstr(absl::StrCat("coordinator speaks ", kProtocolVersion)));
  EXPECT_EQ(JoinStatus(0, -1, 0).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(RoundEngineTest, JoinShardOutOfRange) {
  MakeEngine();
  EXPECT_EQ(JoinStatus(kProtocolVersion, 2, 2).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(JoinStatus(kProtocolVersion, -2, 0).code(),
            absl::StatusCode::kInvalidArgument);
  // The client believes in another shard count.
  const absl::Status s = JoinStatus(kProtocolVersion, 0, 3);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("3"));
  // None of these took a shard: both are still free.
  MustJoin(0);
  MustJoin(1);
}

TEST_F(RoundEngineTest, JoinSameShardTwiceIsAlreadyExists) {
  MakeEngine();
  MustJoin(1);
  const absl::Status s = JoinStatus(kProtocolVersion, 1, 2);
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(s.message(), HasSubstr("shard 1"));
}

// A join retried with the same key (its first reply was lost) gets its own
// registration back; another key, another credential or no key is refused
// the held shard, and a keyed retry of an assigned join takes no second one.
TEST_F(RoundEngineTest, JoinRetriedWithItsKeyGetsItsRegistrationBack) {
  MakeEngine();
  auto join = [&](int shard, const std::string& key, const std::string& owner) {
    JoinParams p;
    p.protocol_version = kProtocolVersion;
    p.name = "test";
    p.shard = shard;
    p.num_shards = shard >= 0 ? config_.clients : 0;
    p.join_key = key;
    p.owner = owner;
    return engine_->Join(p);
  };
  auto first = join(1, "k1", "alice");
  ASSERT_TRUE(first.ok()) << first.status();
  auto again = join(1, "k1", "alice");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->client_id, first->client_id);
  EXPECT_EQ(again->session, first->session);
  EXPECT_EQ(again->shard, 1);
  EXPECT_EQ(join(1, "k2", "alice").status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(join(1, "k1", "mallory").status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(join(1, "", "alice").status().code(),
            absl::StatusCode::kAlreadyExists);
  // An assigned join retried: the same registration, shard 0 stays free.
  auto any = join(-1, "k1", "alice");
  ASSERT_TRUE(any.ok()) << any.status();
  EXPECT_EQ(any->client_id, first->client_id);
  EXPECT_EQ(MustJoin(0).shard, 0);
}

TEST_F(RoundEngineTest, JoinAnyShardGetsAFreeOneThenResourceExhausted) {
  MakeEngine();
  const JoinOutcome a = MustJoin(1);
  const JoinOutcome b = MustJoin(-1);
  EXPECT_EQ(a.shard, 1);
  EXPECT_EQ(b.shard, 0);
  EXPECT_NE(a.client_id, b.client_id);
  EXPECT_FALSE(a.session.empty());
  EXPECT_NE(a.session, b.session);
  EXPECT_EQ(JoinStatus(kProtocolVersion, -1, 0).code(),
            absl::StatusCode::kResourceExhausted);
}

TEST_F(RoundEngineTest, LeaveFreesTheShard) {
  MakeEngine();
  const JoinOutcome a = MustJoin(0);
  MustJoin(1);
  ASSERT_TRUE(engine_->Leave(a.client_id, a.session, "bye").ok());
  const JoinOutcome c = MustJoin(-1);
  EXPECT_EQ(c.shard, 0);
  EXPECT_NE(c.client_id, a.client_id);
  // The old identity is dead.
  auto t = engine_->NextTask(a.client_id, a.session, absl::ZeroDuration());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(RoundEngineTest, SilentClientLosesItsShard) {
  config_.timeouts.client_s = 0.3;
  MakeEngine();
  const JoinOutcome a = MustJoin(0);
  absl::SleepFor(absl::Milliseconds(500));
  const JoinOutcome b = MustJoin(0);  // a expired
  EXPECT_EQ(b.shard, 0);
  EXPECT_EQ(engine_->Heartbeat(a.client_id, a.session).code(),
            absl::StatusCode::kFailedPrecondition);
}

// --- Identity checks. ---

TEST_F(RoundEngineTest, UnknownClientIsNotFoundAndWrongSessionUnauthenticated) {
  MakeEngine();
  const JoinOutcome a = MustJoin(-1);
  EXPECT_EQ(
      engine_->NextTask(a.client_id + 100, a.session, absl::ZeroDuration())
          .status()
          .code(),
      absl::StatusCode::kNotFound);
  EXPECT_EQ(
      engine_->NextTask(a.client_id, a.session + "x", absl::ZeroDuration())
          .status()
          .code(),
      absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(
      engine_->NextTask(a.client_id, "", absl::ZeroDuration()).status().code(),
      absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(engine_->Heartbeat(a.client_id, "nope").code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(engine_->GetSnapshot(a.client_id, "nope", 0).status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(engine_->Leave(a.client_id + 1, a.session, "x").code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(engine_->Heartbeat(a.client_id, a.session).ok());
}

TEST_F(RoundEngineTest, NextTaskBeforeTheRunWaitsForItsBudget) {
  MakeEngine();
  const JoinOutcome a = MustJoin(-1);
  auto t = engine_->NextTask(a.client_id, a.session, absl::ZeroDuration());
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->kind, TaskOutcome::kWait);
  const absl::Time start = absl::Now();
  t = engine_->NextTask(a.client_id, a.session, absl::Milliseconds(300));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->kind, TaskOutcome::kWait);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(290));
}

TEST_F(RoundEngineTest, SnapshotIsTheInitialModel) {
  MakeEngine();
  const JoinOutcome a = MustJoin(-1);
  auto snap = engine_->GetSnapshot(a.client_id, a.session, 0);
  ASSERT_TRUE(snap.ok()) << snap.status();
  const std::vector<float> init = InitialParams(engine_->spec(), config_.seed);
  EXPECT_EQ((*snap)->bytes, MakeSnapshot(init, 1).bytes);
  EXPECT_EQ((*snap)->checksum, MakeSnapshot(init, 1).checksum);
  EXPECT_EQ(engine_->GetSnapshot(a.client_id, a.session, (*snap)->version)
                .status()
                .code(),
            absl::StatusCode::kOk);
  EXPECT_EQ(engine_->GetSnapshot(a.client_id, a.session, (*snap)->version + 1)
                .status()
                .code(),
            absl::StatusCode::kFailedPrecondition);
}

// --- A full run. ---

TEST_F(RoundEngineTest, RejectsBadResultsThenRunsToTheEnd) {
  // Generous client timeout: this test is about results, not liveness, and
  // the build machine may be loaded.
  config_.timeouts.client_s = 5;
  config_.timeouts.round_s = 30;
  MakeEngine();
  const JoinOutcome a = MustJoin(0);
  const JoinOutcome b = MustJoin(1);
  StartRun();

  auto ta = WaitTask(a, absl::Seconds(20));
  ASSERT_TRUE(ta.ok()) << ta.status();
  ASSERT_EQ(ta->kind, TaskOutcome::kCompute);
  EXPECT_EQ(ta->task.round, 1);
  ASSERT_EQ(ta->task.tangents.size(), 1u);
  EXPECT_EQ(ta->task.tangents[0].round, 1);
  EXPECT_EQ(ta->task.tangents[0].client, a.client_id);
  EXPECT_EQ(ta->task.tangents[0].run_seed, config_.seed);
  auto tb = WaitTask(b, absl::Seconds(5));
  ASSERT_TRUE(tb.ok()) << tb.status();
  ASSERT_EQ(tb->kind, TaskOutcome::kCompute);
  EXPECT_EQ(tb->model_version, ta->model_version);

  const uint64_t before = SnapshotChecksum(a);
  EXPECT_EQ(before, ta->model_checksum);

  const ClientResult good = ValidResult(a, *ta);
  auto submit = [&](const ClientResult& r, uint64_t version) {
    return engine_->Submit(a.session, r, version);
  };
  const uint64_t v = ta->model_version;
  {
    ClientResult r = good;
    r.round = 2;
    const absl::Status s = submit(r, v);
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    EXPECT_THAT(s.message(), HasSubstr("round 2"));
    r.round = 0;
    EXPECT_EQ(submit(r, v).code(), absl::StatusCode::kFailedPrecondition);
  }
  {
    ClientResult r = good;
    r.jvps = {std::numeric_limits<double>::quiet_NaN()};
    EXPECT_EQ(submit(r, v).code(), absl::StatusCode::kInvalidArgument);
    r.jvps = {std::numeric_limits<double>::infinity()};
    EXPECT_EQ(submit(r, v).code(), absl::StatusCode::kInvalidArgument);
  }
  {
    ClientResult r = good;
    r.jvps = {1.0, 2.0};
    EXPECT_EQ(submit(r, v).code(), absl::StatusCode::kInvalidArgument);
    r.jvps.clear();
    EXPECT_EQ(submit(r, v).code(), absl::StatusCode::kInvalidArgument);
  }
  {
    ClientResult r = good;
    r.num_samples = 0;
    EXPECT_EQ(submit(r, v).code(), absl::StatusCode::kInvalidArgument);
    r.num_samples = 64;
    r.loss = std::numeric_limits<double>::quiet_NaN();
    EXPECT_EQ(submit(r, v).code(), absl::StatusCode::kInvalidArgument);
  }
  {
    const absl::Status s = submit(good, v + 1);
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(s.message(), HasSubstr("version"));
  }
  EXPECT_EQ(engine_->Submit(a.session + "x", good, v).code(),
            absl::StatusCode::kUnauthenticated);
  {
    // Client b's session with client a's id.
    EXPECT_EQ(engine_->Submit(b.session, good, v).code(),
              absl::StatusCode::kUnauthenticated);
    ClientResult r = good;
    r.client_id = 999;
    EXPECT_EQ(submit(r, v).code(), absl::StatusCode::kNotFound);
  }
  EXPECT_EQ(SnapshotChecksum(a), before);

  ASSERT_TRUE(submit(good, v).ok());
  EXPECT_EQ(submit(good, v).code(), absl::StatusCode::kAlreadyExists);
  // Once submitted, a has nothing to do until the next round.
  auto again = engine_->NextTask(a.client_id, a.session, absl::ZeroDuration());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->kind, TaskOutcome::kWait);
  // b is still pending: the round stays open and the model unchanged.
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ(SnapshotChecksum(a), before);
  EXPECT_EQ(engine_->GetStatus().model_version, v);
  EXPECT_EQ(engine_->GetStatus().state, "training");

  ASSERT_TRUE(engine_->Submit(b.session, ValidResult(b, *tb), v).ok());
  // Round 2 comes with the merged model.
  auto next = WaitTask(a, absl::Seconds(20));
  ASSERT_TRUE(next.ok()) << next.status();
  ASSERT_EQ(next->kind, TaskOutcome::kCompute);
  EXPECT_EQ(next->task.round, 2);
  EXPECT_EQ(next->model_version, v + 1);
  EXPECT_NE(next->model_checksum, before);
  EXPECT_EQ(SnapshotChecksum(a), next->model_checksum);
  // A late result for round 1 is refused.
  EXPECT_EQ(submit(good, v).code(), absl::StatusCode::kFailedPrecondition);

  // Scripted clients finish the run.
  std::atomic<bool> quit{false};
  Background<ClientLog> ca(
      [&] { return RunClient(engine_.get(), a, &quit, absl::Seconds(60)); });
  Background<ClientLog> cb(
      [&] { return RunClient(engine_.get(), b, &quit, absl::Seconds(60)); });
  SetOnExit stop_clients(&quit);
  const absl::Status run = WaitRun(absl::Seconds(60));
  quit = true;
  ASSERT_TRUE(ca.WaitFor(absl::Seconds(20)));
  ASSERT_TRUE(cb.WaitFor(absl::Seconds(20)));
  EXPECT_TRUE(run.ok()) << run;
  for (const ClientLog* log : {&ca.Get(), &cb.Get()}) {
    EXPECT_TRUE(log->errors.empty()) << log->errors.front();
    EXPECT_TRUE(log->stopped);
    EXPECT_TRUE(log->stop_again);
    EXPECT_EQ(log->rounds, (std::set<int64_t>{2, 3}));
  }
  // The run is over: no new clients.
  const absl::Status late = JoinStatus(kProtocolVersion, -1, 0);
  EXPECT_EQ(late.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(late.message(), HasSubstr("over"));
  EXPECT_EQ(engine_->GetStatus().state, "finished");

  const std::vector<nlohmann::json> rows =
      ReadRows(out_dir() + "/metrics.jsonl");
  ASSERT_EQ(rows.size(), static_cast<size_t>(config_.rounds + 1));
  int64_t up = 0, down = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    const nlohmann::json& row = rows[i];
    for (const char* key : {"round", "wall_s", "train_loss", "test_acc",
                            "bytes_up", "bytes_down", "clients"}) {
      EXPECT_TRUE(row.contains(key)) << "row " << i << " lacks " << key;
    }
    EXPECT_EQ(row["round"].get<int64_t>(), static_cast<int64_t>(i));
    ASSERT_TRUE(row["test_acc"].is_number()) << row.dump();
    EXPECT_GE(row["test_acc"].get<double>(), 0.0);
    EXPECT_LE(row["test_acc"].get<double>(), 1.0);
    up += row["bytes_up"].get<int64_t>();
    down += row["bytes_down"].get<int64_t>();
    if (i == 0) {
      EXPECT_TRUE(row["train_loss"].is_null());
      EXPECT_EQ(row["clients"].get<int>(), 0);
    } else {
      EXPECT_EQ(row["clients"].get<int>(), 2) << row.dump();
      EXPECT_NEAR(row["train_loss"].get<double>(), 2.3, 1e-9);
      EXPECT_GE(row["wall_s"].get<double>(),
                rows[i - 1]["wall_s"].get<double>());
    }
  }
  EXPECT_EQ(up, 4 * 7);  // the scripted clients counted 4 submissions
  EXPECT_EQ(down, 4 * 11);

  const nlohmann::json summary = ReadJson(out_dir() + "/summary.json");
  ASSERT_TRUE(summary.is_object());
  for (const char* key : {"final_test_acc", "rounds", "wall_s",
                          "bytes_up_total", "bytes_down_total", "targets",
                          "git_commit", "libtorch_version", "host", "config"}) {
    EXPECT_TRUE(summary.contains(key)) << "summary lacks " << key;
  }
  EXPECT_EQ(summary["rounds"].get<int64_t>(), config_.rounds);
  auto parsed = ParseRunSummary(summary.dump());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->mode, "federated");
  EXPECT_EQ(parsed->rounds, config_.rounds);
  EXPECT_EQ(summary["done"].get<int64_t>(), config_.rounds);
  EXPECT_DOUBLE_EQ(summary["final_test_acc"].get<double>(),
                   rows.back()["test_acc"].get<double>());
  EXPECT_EQ(summary["bytes_up_total"].get<int64_t>(), up);
  EXPECT_EQ(summary["bytes_down_total"].get<int64_t>(), down);
  EXPECT_EQ(summary["libtorch_version"].get<std::string>(), TorchVersion());
  EXPECT_TRUE(summary["config"].is_object());
  EXPECT_EQ(summary["config"]["model"].get<std::string>(), "mlp_small");
  ASSERT_EQ(summary["targets"].size(), 2u);
  EXPECT_TRUE(summary["targets"][0]["reached"].get<bool>());
  EXPECT_EQ(summary["targets"][0]["round"].get<int64_t>(), 1);
  EXPECT_FALSE(summary["targets"][1]["reached"].get<bool>());

  absl::StatusOr<ModelFile> final_model =
      ReadModelFile(out_dir() + "/final_model.bin");
  ASSERT_TRUE(final_model.ok()) << final_model.status();
  EXPECT_EQ(final_model->header.model, "mlp_small");
  EXPECT_EQ(final_model->header.kind, "final");
  EXPECT_EQ(static_cast<int64_t>(final_model->params.size()),
            engine_->spec().NumParams());
  absl::StatusOr<ModelFile> best = ReadModelFile(out_dir() + "/best_model.bin");
  ASSERT_TRUE(best.ok()) << best.status();
  EXPECT_EQ(best->header.kind, "best");
  EXPECT_DOUBLE_EQ(best->header.test_acc,
                   summary["best_test_acc"].get<double>());
}

// A client releases tangent.count clipped and noised scalars a round: the
// accountant composes one Gaussian mechanism of L2 sensitivity 2C sqrt(K)
// per round, not one scalar (issue 18). The expected value is computed here
// from the RDP of the Gaussian mechanism, not through GaussianEpsilon.
TEST_F(RoundEngineTest, PrivacyEpsilonCountsEveryScalarOfARound) {
  config_.estimator = "jvp";
  config_.tangent.count = 4;
  config_.tangent.distribution = "rademacher";
  config_.privacy.clip = 0.5;
  config_.privacy.noise_multiplier = 3.0;
  config_.privacy.delta = 1e-5;
  config_.rounds = 3;
  MakeEngine();
  ASSERT_NO_FATAL_FAILURE(RunWithTwoClients());
  const nlohmann::json summary = ReadJson(out_dir() + "/summary.json");
  ASSERT_TRUE(summary.contains("privacy")) << summary.dump();
  const nlohmann::json& p = summary["privacy"];
  const int64_t rounds = p["releases_per_client_at_most"].get<int64_t>();
  EXPECT_EQ(rounds, config_.rounds);
  EXPECT_EQ(p["scalars_per_release"].get<int64_t>(), 4);
  // Sensitivity of the released 4-vector: each entry moves by at most 2C.
  const double c = config_.privacy.clip, sigma_c = 3.0 * c;
  const double sensitivity = 2.0 * c * std::sqrt(4.0);
  double expected = std::numeric_limits<double>::infinity();
  for (double alpha = 1.0001; alpha < 1000; alpha *= 1.0001) {
    const double rdp =
        rounds * alpha * sensitivity * sensitivity / (2 * sigma_c * sigma_c);
    expected = std::min(expected, rdp + std::log(1 / 1e-5) / (alpha - 1));
  }
  EXPECT_NEAR(p["epsilon"].get<double>(), expected, 1e-3 * expected);
  // One scalar a round would be the old, smaller figure.
  EXPECT_GT(p["epsilon"].get<double>(),
            1.5 * GaussianEpsilon(rounds, 3.0, 1e-5));
}

// Extra summary keys (fedfwd-run --link's links, via fedfwd-server
// --summary-extra): a JSON object only; its keys land in summary.json
// beside the engine's own, which win on a clash.
TEST_F(RoundEngineTest, SummaryExtraKeysLandBesideTheEnginesOwn) {
  config_.rounds = 1;
  MakeEngine();
  EXPECT_FALSE(engine_->SetSummaryExtra("[1, 2]").ok());
  EXPECT_FALSE(engine_->SetSummaryExtra("not json").ok());
  ASSERT_TRUE(engine_
                  ->SetSummaryExtra(R"({"link": "rate=10mbit", "links": [1],
                                        "model": "not the model"})")
                  .ok());
  ASSERT_NO_FATAL_FAILURE(RunWithTwoClients());
  const nlohmann::json summary = ReadJson(out_dir() + "/summary.json");
  EXPECT_EQ(summary["link"], "rate=10mbit");
  EXPECT_EQ(summary["links"], nlohmann::json::array({1}));
  EXPECT_NE(summary["model"], "not the model");
}

TEST_F(RoundEngineTest, StoppedClientIsDroppedAndRoundClosesWithoutIt) {
  config_.timeouts.client_s = 1.0;
  config_.timeouts.round_s = 20;  // the drop, not the deadline, closes it
  config_.rounds = 2;
  MakeEngine();
  const JoinOutcome a = MustJoin(0);
  const JoinOutcome b = MustJoin(1);
  StartRun();
  std::atomic<bool> quit{false};
  Background<ClientLog> ca(
      [&] { return RunClient(engine_.get(), a, &quit, absl::Seconds(60)); });
  SetOnExit stop_clients(&quit);
  // b takes round 1's task, then goes silent.
  auto tb = WaitTask(b, absl::Seconds(20));
  ASSERT_TRUE(tb.ok()) << tb.status();
  ASSERT_EQ(tb->kind, TaskOutcome::kCompute);
  EXPECT_EQ(tb->task.round, 1);

  const absl::Status run = WaitRun(absl::Seconds(60));
  quit = true;
  ASSERT_TRUE(ca.WaitFor(absl::Seconds(20)));
  EXPECT_TRUE(run.ok()) << run;
  EXPECT_TRUE(ca.Get().errors.empty()) << ca.Get().errors.front();
  EXPECT_EQ(ca.Get().rounds, (std::set<int64_t>{1, 2}));

  const std::vector<nlohmann::json> rows =
      ReadRows(out_dir() + "/metrics.jsonl");
  ASSERT_EQ(rows.size(), 3u);
  for (size_t i = 1; i < rows.size(); ++i) {
    EXPECT_EQ(rows[i]["clients"].get<int>(), 1) << rows[i].dump();
  }
  // Round 1 closed about client_s after b's last call, far before round_s.
  EXPECT_LT(rows[1]["wall_s"].get<double>(), 10.0);

  bool b_alive = true;
  for (const ClientView& c : engine_->GetStatus().clients) {
    if (c.id == b.client_id) b_alive = c.alive;
  }
  EXPECT_FALSE(b_alive);
  const auto late =
      engine_->NextTask(b.client_id, b.session, absl::ZeroDuration());
  EXPECT_EQ(late.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(late.status().message(), HasSubstr("dropped"));
}

TEST_F(RoundEngineTest, RoundDeadlineClosesRoundWithoutASilentWorker) {
  // b keeps heartbeating (so it stays alive) but never submits: only the
  // round deadline can close the round.
  config_.timeouts.client_s = 5;
  config_.timeouts.round_s = 1.5;
  config_.rounds = 1;
  MakeEngine();
  const JoinOutcome a = MustJoin(0);
  const JoinOutcome b = MustJoin(1);
  StartRun();
  std::atomic<bool> quit{false};
  Background<ClientLog> ca(
      [&] { return RunClient(engine_.get(), a, &quit, absl::Seconds(60)); });
  Background<bool> hb([&] {
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (!quit && absl::Now() < deadline) {
      if (!engine_->Heartbeat(b.client_id, b.session).ok()) return false;
      if (engine_->GetStatus().state == "finished") {
        engine_->Leave(b.client_id, b.session, "done").IgnoreError();
        return true;
      }
      absl::SleepFor(absl::Milliseconds(100));
    }
    return false;
  });
  SetOnExit stop_clients(&quit);
  const absl::Status run = WaitRun(absl::Seconds(60));
  quit = true;
  ASSERT_TRUE(ca.WaitFor(absl::Seconds(20)));
  ASSERT_TRUE(hb.WaitFor(absl::Seconds(20)));
  EXPECT_TRUE(run.ok()) << run;
  EXPECT_TRUE(hb.Get());
  const std::vector<nlohmann::json> rows =
      ReadRows(out_dir() + "/metrics.jsonl");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[1]["clients"].get<int>(), 1);
  EXPECT_GE(rows[1]["wall_s"].get<double>(), 1.4);
}

// A run that fails after training started still tells clients to stop.
TEST_F(RoundEngineTest, FailedRunStopsClients) {
  config_.min_clients = 2;
  config_.timeouts.client_s = 5;
  config_.timeouts.round_s = 0.3;
  config_.rounds = 2;
  MakeEngine();
  const JoinOutcome a = MustJoin(0);
  const JoinOutcome b = MustJoin(1);  // alive (heartbeats), never submits
  StartRun();
  std::atomic<bool> quit{false};
  Background<ClientLog> ca(
      [&] { return RunClient(engine_.get(), a, &quit, absl::Seconds(60)); });
  Background<bool> hb([&] {
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (!quit && absl::Now() < deadline) {
      engine_->Heartbeat(b.client_id, b.session).IgnoreError();
      absl::SleepFor(absl::Milliseconds(100));
    }
    return true;
  });
  SetOnExit stop_clients(&quit);
  const absl::Status run = WaitRun(absl::Seconds(60));
  EXPECT_EQ(run.code(), absl::StatusCode::kUnavailable) << run;
  EXPECT_THAT(run.message(), HasSubstr("quorum"));
  EXPECT_EQ(engine_->GetStatus().state, "finished");
  auto t = engine_->NextTask(b.client_id, b.session, absl::ZeroDuration());
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->kind, TaskOutcome::kStop);
}

TEST_F(RoundEngineTest, RunFailsWhenClientsNeverJoin) {
  config_.timeouts.join_s = 0.5;
  MakeEngine();
  MustJoin(0);  // one of two
  StartRun();
  const absl::Status run = WaitRun(absl::Seconds(30));
  EXPECT_EQ(run.code(), absl::StatusCode::kDeadlineExceeded) << run;
  EXPECT_THAT(run.message(), HasSubstr("1 of 2"));
  EXPECT_EQ(engine_->GetStatus().state, "finished");
}

TEST_F(RoundEngineTest, RequestStopEndsAWaitingRun) {
  config_.timeouts.join_s = 60;
  MakeEngine();
  StartRun();
  absl::SleepFor(absl::Milliseconds(200));
  engine_->RequestStop();
  const absl::Status run = WaitRun(absl::Seconds(10));
  EXPECT_EQ(run.code(), absl::StatusCode::kCancelled) << run;
}

}  // namespace
}  // namespace fedfwd
