#include "server/round_engine.h"

#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/model_file.h"
#include "common/privacy.h"
#include "common/status_macros.h"
#include "server/run_summary.h"

namespace fedfwd {
namespace {

// User plus system CPU time of this process so far, in ms.
double ProcessCpuMs() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return 1e3 * (static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec)) +
         1e-3 * static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

// A round whose quorum was not met is retried this many times before the
// run fails.
constexpr int kMaxRoundAttempts = 5;

}  // namespace

RoundEngine::RoundEngine(Config config, ModelSpec spec,
                         std::unique_ptr<Strategy> strategy,
                         std::unique_ptr<Evaluator> evaluator,
                         std::unique_ptr<MetricsWriter> metrics, int threads)
    : config_(std::move(config)),
      spec_(std::move(spec)),
      strategy_(std::move(strategy)),
      evaluator_(std::move(evaluator)),
      metrics_(std::move(metrics)),
      threads_(threads),
      run_id_(NewRunId(config_)) {
  params_ = InitialParams(spec_, config_.seed);
  for (double t : config_.targets) targets_.push_back({t});
  PublishSnapshot();
}

RoundEngine::~RoundEngine() = default;

void RoundEngine::Log(const std::string& line, LogFields fields,
                      LogLevel level) {
  LogCoordinatorEvent(line, std::move(fields), level);
}

void RoundEngine::NoteEvaluation(int64_t round, double test_acc) {
  std::lock_guard<std::mutex> lock(mu_);
  last_test_acc_ = test_acc;
  last_test_round_ = round;
  accuracy_history_.emplace_back(round, test_acc);
  while (accuracy_history_.size() > kAccuracyHistory) {
    accuracy_history_.pop_front();
  }
}

void RoundEngine::ReportProgress(const RoundProgress& p, bool evaluated,
                                 absl::Time now) {
  Logger& logger = Logger::Global();
  const bool live = logger.LiveStatusAvailable();
  // On a terminal the line rewritten in place carries the progress and
  // only evaluations leave a line behind; elsewhere (fedfwd-run, files,
  // docker logs) a plain line every evaluation and at most every 10 s.
  const bool plain =
      evaluated || (!live && now - last_plain_log_ > absl::Seconds(10));
  if (plain) last_plain_log_ = now;
  // The status line first, so a plain line below redraws the new one.
  if (live && (evaluated || p.round == p.rounds ||
               now - last_live_update_ >= absl::Milliseconds(250))) {
    last_live_update_ = now;
    logger.SetStatusLine(FormatLiveProgress(p));
  }
  const LogLevel level = plain ? LogLevel::kInfo : LogLevel::kDebug;
  if (logger.Enabled(level)) {
    std::optional<double> eta;
    if (std::isfinite(p.eta_s) && p.eta_s >= 0) eta = p.eta_s;
    Log(FormatProgressLine(p),
        {{"event", "round"},
         {"round", p.round},
         {"rounds", p.rounds},
         {"loss", p.loss},
         {"test_acc", p.test_acc},
         {"clients", p.clients},
         {"bytes_up", p.bytes_up},
         {"bytes_down", p.bytes_down},
         {"wall_s", p.wall_s},
         {"rounds_per_s", p.rounds_per_s},
         {"eta_s", eta}},
        level);
  }
}

void RoundEngine::RequestStop() {
  stop_requested_ = true;
  NotifyAll();
}

void RoundEngine::CountBytes(int64_t up, int64_t down) {
  bytes_up_ += up;
  bytes_down_ += down;
}

double RoundEngine::Epsilon() const {
  // Each round a client releases K scalars (tangent.count plus the
  // per-layer budget), each clipped and noised on its own: one Gaussian
  // mechanism of L2 sensitivity 2C sqrt(K) per round (common/privacy.h).
  return GaussianEpsilon(round_attempts_, config_.privacy.noise_multiplier,
                         config_.privacy.delta,
                         TangentsPerClient(config_.tangent));
}

void RoundEngine::EnableCheckpoints(std::string path, int every,
                                    double min_interval_s) {
  checkpoint_path_ = std::move(path);
  checkpoint_every_ = every;
  checkpoint_min_interval_ = absl::Seconds(min_interval_s);
}

std::vector<std::pair<uint32_t, std::string>> RoundEngine::ClientOwners() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::pair<uint32_t, std::string>> out;
  for (const auto& [id, c] : clients_) out.emplace_back(id, c.owner);
  return out;
}

absl::Status CheckResumable(const ckpt::Checkpoint& c, const Config& config,
                            const ModelSpec& spec) {
  if (c.config_json() != ConfigToJson(config)) {
    return absl::FailedPreconditionError(
        "the checkpoint belongs to another config (its config.yaml is in the "
        "checkpoint's folder); resume with the same config and --set "
        "overrides, or start afresh in another --out");
  }
  if (c.finished()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the run finished after ", c.rounds_done(),
                     " rounds; nothing to resume"));
  }
  const int64_t n = spec.NumParams();
  if (static_cast<int64_t>(c.params().size()) !=
      n * static_cast<int64_t>(sizeof(float))) {
    return absl::DataLossError(
        absl::StrCat("checkpoint holds ", c.params().size() / sizeof(float),
                     " parameters, model ", spec.name, " has ", n));
  }
  if (c.rounds_done() < 0 || c.rounds_done() > config.rounds ||
      c.targets_size() != static_cast<int>(config.targets.size())) {
    return absl::DataLossError("checkpoint counters do not fit the config");
  }
  return absl::OkStatus();
}

absl::Status RoundEngine::Resume(const ckpt::Checkpoint& c) {
  RETURN_IF_ERROR(CheckResumable(c, config_, spec_));
  const int64_t n = spec_.NumParams();
  StrategyState state;
  for (const auto& t : c.strategy_state()) {
    if (t.data().size() % sizeof(float) != 0) {
      return absl::DataLossError(
          absl::StrCat("optimizer state '", t.name(), "' is not float32"));
    }
    std::vector<float> v(t.data().size() / sizeof(float));
    std::memcpy(v.data(), t.data().data(), t.data().size());
    state.emplace_back(t.name(), std::move(v));
  }
  RETURN_IF_ERROR(strategy_->LoadState(state));
  params_.assign(static_cast<size_t>(n), 0.0f);
  std::memcpy(params_.data(), c.params().data(), c.params().size());
  run_id_ = c.run_id();
  rounds_done_ = c.rounds_done();
  round_attempts_ = c.round_attempts();
  resumed_elapsed_s_ = c.elapsed_s();
  bytes_up_total_ = c.bytes_up_total();
  bytes_down_total_ = c.bytes_down_total();
  final_test_acc_ = c.final_test_acc();
  best_test_acc_ = c.best_test_acc();
  initial_test_acc_ = c.initial_test_acc();
  for (int i = 0; i < c.targets_size(); ++i) {
    const auto& t = c.targets(i);
    targets_[i] = {t.target(), t.round(), t.wall_s(), t.bytes_up(),
                   t.bytes_down()};
  }
  PublishSnapshot(nullptr, c.model_version());
  std::lock_guard<std::mutex> lock(mu_);
  last_test_acc_ = c.last_test_acc();
  round_ = rounds_done_;
  next_client_id_ = std::max<uint32_t>(1, c.next_client_id());
  clients_.clear();
  const absl::Time now = absl::Now();
  for (const auto& e : c.clients()) {
    if (e.id() == 0 || e.id() >= next_client_id_ || e.shard() < 0 ||
        e.shard() >= config_.clients) {
      return absl::DataLossError(
          absl::StrCat("checkpoint has a bad client entry (id ", e.id(),
                       ", shard ", e.shard(), ")"));
    }
    ClientEntry entry;
    entry.name = e.name();
    entry.owner = e.owner();
    entry.session = e.session();
    entry.shard = e.shard();
    entry.alive = e.alive();
    entry.last_seen = now;  // they get timeouts.client_s to come back
    clients_[e.id()] = std::move(entry);
  }
  resumed_ = true;
  return absl::OkStatus();
}

absl::Status RoundEngine::SaveCheckpoint(bool finished) {
  if (checkpoint_path_.empty()) return absl::OkStatus();
  ckpt::Checkpoint c;
  c.set_format(kCheckpointFormat);
  c.set_config_json(ConfigToJson(config_));
  c.set_run_id(run_id_);
  c.set_rounds_done(rounds_done_);
  c.set_params(params_.data(), params_.size() * sizeof(float));
  for (const auto& [name, values] : strategy_->SaveState()) {
    auto* t = c.add_strategy_state();
    t->set_name(name);
    t->set_data(values.data(), values.size() * sizeof(float));
  }
  c.set_elapsed_s(start_ == absl::InfinitePast()
                      ? resumed_elapsed_s_
                      : absl::ToDoubleSeconds(absl::Now() - start_));
  c.set_bytes_up_total(bytes_up_total_);
  c.set_bytes_down_total(bytes_down_total_);
  c.set_final_test_acc(final_test_acc_);
  c.set_best_test_acc(best_test_acc_);
  c.set_initial_test_acc(initial_test_acc_);
  for (const auto& t : targets_) {
    auto* h = c.add_targets();
    h->set_target(t.target);
    h->set_round(t.round);
    h->set_wall_s(t.wall_s);
    h->set_bytes_up(t.bytes_up);
    h->set_bytes_down(t.bytes_down);
  }
  c.set_finished(finished);
  c.set_round_attempts(round_attempts_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    c.set_model_version(snapshot_->version);
    c.set_last_test_acc(last_test_acc_);
    c.set_next_client_id(next_client_id_);
    for (const auto& [id, e] : clients_) {
      auto* ce = c.add_clients();
      ce->set_id(id);
      ce->set_name(e.name);
      ce->set_shard(e.shard);
      ce->set_session(e.session);
      ce->set_owner(e.owner);
      ce->set_alive(e.alive);
    }
  }
  absl::Status s = WriteCheckpoint(checkpoint_path_, c);
  if (s.ok()) last_checkpoint_ = absl::Now();
  if (!s.ok()) {
    return absl::Status(
        s.code(), absl::StrCat("checkpoint after round ", rounds_done_, ": ",
                               s.message()));
  }
  return absl::OkStatus();
}

void RoundEngine::PublishSnapshot(std::shared_ptr<const SeedStep> replay,
                                  uint64_t version) {
  if (version == 0) {
    std::lock_guard<std::mutex> lock(mu_);
    version = snapshot_ ? snapshot_->version + 1 : 1;
  }
  auto snap = std::make_shared<const Snapshot>(MakeSnapshot(params_, version));
  std::shared_ptr<const Snapshot> state;
  const std::vector<float>* s =
      config_.sync == "auto" ? strategy_->ReplayState() : nullptr;
  if (s != nullptr) {
    state = std::make_shared<const Snapshot>(MakeSnapshot(*s, version));
  }
  std::lock_guard<std::mutex> lock(mu_);
  snapshot_ = std::move(snap);
  step_state_ = std::move(state);
  if (replay == nullptr) {
    replay_history_.clear();
    return;
  }
  replay_history_.push_back({version, std::move(replay)});
  while (replay_history_.size() > kReplayHistory) replay_history_.pop_front();
}

absl::StatusOr<JoinOutcome> RoundEngine::Join(const JoinParams& p) {
  RETURN_IF_ERROR(CheckJoinRequest(p, config_.clients));
  std::lock_guard<std::mutex> lock(mu_);
  if (state_ == State::kFinished) {
    return absl::FailedPreconditionError("the run is over");
  }
  ExpireClientsLocked(absl::Now());
  if (auto* repeat = FindRepeatedJoin(&clients_, p, "client")) {
    auto& [id, c] = *repeat;
    c.last_seen = absl::Now();
    return JoinOutcome{id, c.session, c.shard};
  }
  std::vector<bool> taken(static_cast<size_t>(config_.clients), false);
  for (const auto& [id, c] : clients_) {
    if (c.alive) taken[c.shard] = true;
  }
  ASSIGN_OR_RETURN(const int shard, AssignShard(taken, p.shard));
  const uint32_t id = next_client_id_++;
  ClientEntry e;
  e.name = p.name;
  e.owner = p.owner;
  e.join_key = p.join_key;
  e.session = NewSession();
  e.shard = shard;
  e.alive = true;
  e.last_seen = absl::Now();
  clients_[id] = e;
  const int live = LiveCountLocked();
  Log(absl::StrFormat("client %u joined (%s), shard %d; %d/%d live", id, p.name,
                      shard, live, config_.clients),
      {{"event", "join"},
       {"client_id", id},
       {"name", p.name},
       {"shard", shard},
       {"live", live},
       {"clients", config_.clients}});
  NotifyAll();
  return JoinOutcome{id, e.session, shard};
}

absl::StatusOr<RoundEngine::ClientEntry*> RoundEngine::CheckClientLocked(
    uint32_t id, const std::string& session) {
  return FindSession(&clients_, id, session, "; rejoin");
}

void RoundEngine::ExpireClientsLocked(absl::Time now) {
  const absl::Duration limit = absl::Seconds(config_.timeouts.client_s);
  for (auto& [id, c] : clients_) {
    if (c.alive && now - c.last_seen > limit) {
      c.alive = false;
      const double silent_s = absl::ToDoubleSeconds(now - c.last_seen);
      Log(absl::StrFormat(
              "client %u (shard %d) dropped: not heard from for %.1f s", id,
              c.shard, silent_s),
          {{"event", "drop"},
           {"client_id", id},
           {"shard", c.shard},
           {"silent_s", silent_s}},
          LogLevel::kWarn);
    }
  }
}

std::vector<uint32_t> RoundEngine::LiveClientsLocked() const {
  std::vector<uint32_t> ids;
  for (const auto& [id, c] : clients_) {
    if (c.alive) ids.push_back(id);
  }
  return ids;
}

std::vector<ReplayEntry> RoundEngine::ReplayFromLocked(
    uint64_t have_version) const {
  std::vector<ReplayEntry> out;
  const uint64_t current = snapshot_->version;
  if (have_version == 0 || have_version >= current || replay_history_.empty() ||
      replay_history_.front().version > have_version + 1 ||
      replay_history_.back().version != current) {
    return out;
  }
  size_t terms = 0, wire = 0;
  for (const auto& entry : replay_history_) {
    if (entry.version <= have_version) continue;
    terms += entry.step->terms.size();
    wire += SeedRunsWireBytes(entry.step->terms);
    out.push_back(entry);
  }
  // A replay costs the client a tangent generation per term (shared-u
  // groups: one outer product per matrix): past a snapshot's size in wire
  // bytes (with the optimizer state that comes with it), or
  // sync_max_terms, a snapshot is the cheaper way.
  const size_t fetch =
      snapshot_->bytes.size() + (step_state_ ? step_state_->bytes.size() : 0);
  if (wire >= fetch || terms > static_cast<size_t>(config_.sync_max_terms)) {
    out.clear();
  }
  return out;
}

int RoundEngine::LiveCountLocked() const {
  return static_cast<int>(LiveClientsLocked().size());
}

absl::StatusOr<TaskOutcome> RoundEngine::NextTask(uint32_t client_id,
                                                  const std::string& session,
                                                  absl::Duration wait,
                                                  uint64_t have_version) {
  const absl::Time deadline = absl::Now() + wait;
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    ASSIGN_OR_RETURN(ClientEntry * entry,
                     CheckClientLocked(client_id, session));
    (void)entry;
    TaskOutcome out;
    if (state_ == State::kFinished) {
      out.kind = TaskOutcome::kStop;
      out.message = stop_message_;
      return out;
    }
    if (round_open_) {
      auto t = tasks_.find(client_id);
      if (t != tasks_.end() && results_.count(client_id) == 0) {
        out.kind = TaskOutcome::kCompute;
        out.task = t->second;
        out.model_version = snapshot_->version;
        out.model_checksum = snapshot_->checksum;
        out.replay = ReplayFromLocked(have_version);
        if (step_state_) {
          out.has_step_state = true;
          out.step_state_checksum = step_state_->checksum;
        }
        // Which way this client syncs to the round's model: a replay, or
        // (behind and no replay) a snapshot fetch.
        if (!out.replay.empty()) {
          ++sync_replays_;
        } else if (have_version != snapshot_->version) {
          ++sync_snapshots_;
        }
        return out;
      }
    }
    const absl::Time now = absl::Now();
    if (now >= deadline) {
      out.kind = TaskOutcome::kWait;
      return out;
    }
    task_cv_.wait_for(lock, absl::ToChronoNanoseconds(std::min(
                                deadline - now, absl::Milliseconds(500))));
  }
}

absl::Status RoundEngine::Submit(const std::string& session,
                                 const ClientResult& result,
                                 uint64_t model_version) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(ClientEntry * entry,
                   CheckClientLocked(result.client_id, session));
  (void)entry;
  if (!round_open_ || result.round != round_) {
    return absl::FailedPreconditionError(
        absl::StrCat("round ", result.round, " is not open (current round ",
                     round_, round_open_ ? ", open)" : ", closed)"));
  }
  auto t = tasks_.find(result.client_id);
  if (t == tasks_.end()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "client ", result.client_id, " has no task in round ", round_));
  }
  if (results_.count(result.client_id)) {
    return absl::AlreadyExistsError(
        absl::StrCat("duplicate result from client ", result.client_id,
                     " for round ", round_));
  }
  if (model_version != snapshot_->version) {
    return absl::FailedPreconditionError(
        absl::StrCat("result computed on model version ", model_version,
                     ", current is ", snapshot_->version));
  }
  RETURN_IF_ERROR(strategy_->ValidateResult(t->second, result));
  results_[result.client_id] = result;
  cv_.notify_all();  // the round loop; no waiting poll gains a task
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const Snapshot>> RoundEngine::GetSnapshot(
    uint32_t client_id, const std::string& session, uint64_t version) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(ClientEntry * entry, CheckClientLocked(client_id, session));
  (void)entry;
  if (version != 0 && version != snapshot_->version) {
    return absl::FailedPreconditionError(absl::StrCat("model version ", version,
                                                      " is gone; current is ",
                                                      snapshot_->version));
  }
  return snapshot_;
}

absl::StatusOr<std::shared_ptr<const Snapshot>> RoundEngine::GetStepState(
    uint32_t client_id, const std::string& session, uint64_t version) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(ClientEntry * entry, CheckClientLocked(client_id, session));
  (void)entry;
  if (step_state_ == nullptr) {
    return absl::FailedPreconditionError(
        "this run's model comes without optimizer state");
  }
  if (version != 0 && version != step_state_->version) {
    return absl::FailedPreconditionError(absl::StrCat("model version ", version,
                                                      " is gone; current is ",
                                                      step_state_->version));
  }
  return step_state_;
}

absl::Status RoundEngine::Heartbeat(uint32_t client_id,
                                    const std::string& session) {
  std::lock_guard<std::mutex> lock(mu_);
  return CheckClientLocked(client_id, session).status();
}

absl::Status RoundEngine::Leave(uint32_t client_id, const std::string& session,
                                const std::string& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(ClientEntry * entry, CheckClientLocked(client_id, session));
  entry->alive = false;
  if (state_ != State::kFinished) {
    Log(absl::StrFormat("client %u (shard %d) left: %s", client_id,
                        entry->shard, reason),
        {{"event", "leave"},
         {"client_id", client_id},
         {"shard", entry->shard},
         {"reason", reason}});
  }
  NotifyAll();
  return absl::OkStatus();
}

EngineStatus RoundEngine::GetStatus() {
  std::lock_guard<std::mutex> lock(mu_);
  EngineStatus s;
  s.run_id = run_id_;
  s.round = round_;
  s.rounds = config_.rounds;
  s.model_version = snapshot_->version;
  s.last_test_acc = last_test_acc_;
  s.last_test_round = last_test_round_;
  s.accuracy_history.assign(accuracy_history_.begin(), accuracy_history_.end());
  if (status_final_wall_s_ >= 0) {
    s.wall_s = status_final_wall_s_;
  } else if (status_start_ != absl::InfinitePast()) {
    s.wall_s = absl::ToDoubleSeconds(absl::Now() - status_start_);
  }
  s.eta_s = status_eta_s_;
  s.bytes_up = status_bytes_up_ + bytes_up_.load();
  s.bytes_down = status_bytes_down_ + bytes_down_.load();
  s.clients_expected = config_.clients;
  s.min_clients = config_.min_clients;
  s.model = spec_.name;
  s.dataset = config_.dataset.name;
  s.estimator = config_.estimator;
  s.state = state_ == State::kWaiting    ? "waiting"
            : state_ == State::kTraining ? "training"
                                         : "finished";
  const absl::Time now = absl::Now();
  for (const auto& [id, c] : clients_) {
    s.clients.push_back({id, c.name, c.shard, c.alive,
                         absl::ToDoubleSeconds(now - c.last_seen)});
  }
  return s;
}

bool RoundEngine::WaitForLiveClients(int count, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    ExpireClientsLocked(absl::Now());
    if (LiveCountLocked() >= count) return true;
    if (stop_requested_ || absl::Now() >= deadline) return false;
    cv_.wait_for(lock, std::chrono::milliseconds(200));
  }
}

absl::StatusOr<std::vector<ClientResult>> RoundEngine::RunRound(
    int64_t round, std::vector<TaskSpec>* tasks) {
  {
    std::unique_lock<std::mutex> lock(mu_);
    ExpireClientsLocked(absl::Now());
    *tasks = strategy_->ConfigureRound(round, LiveClientsLocked());
    ++round_attempts_;
    tasks_.clear();
    results_.clear();
    for (const auto& t : *tasks) tasks_[t.client_id] = t;
    round_ = round;
    round_open_ = true;
    NotifyAll();
    const absl::Time deadline =
        absl::Now() + absl::Seconds(config_.timeouts.round_s);
    while (true) {
      ExpireClientsLocked(absl::Now());
      bool pending = false;
      for (const auto& [id, t] : tasks_) {
        if (results_.count(id) == 0 && clients_[id].alive) pending = true;
      }
      if (!pending || stop_requested_) break;
      if (absl::Now() >= deadline) {
        Log(absl::StrFormat("round %d: deadline of %.1f s passed with %d/%d "
                            "results",
                            round, config_.timeouts.round_s, results_.size(),
                            tasks_.size()),
            {{"event", "deadline"},
             {"round", round},
             {"results", results_.size()},
             {"tasks", tasks_.size()}},
            LogLevel::kWarn);
        break;
      }
      cv_.wait_for(lock, std::chrono::milliseconds(100));
    }
    round_open_ = false;
  }
  // Results of clients that finished; in ascending client id (map order),
  // with their tasks in the same order.
  std::vector<ClientResult> results;
  std::vector<TaskSpec> merged_tasks;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [id, r] : results_) {
    results.push_back(r);
    merged_tasks.push_back(tasks_[id]);
  }
  *tasks = std::move(merged_tasks);
  return results;
}

absl::Status RoundEngine::Run() {
  absl::Status status = RunRounds();
  bool already_finished;
  {
    std::lock_guard<std::mutex> lock(mu_);
    already_finished = state_ == State::kFinished;
    if (!already_finished) {
      state_ = State::kFinished;
      stop_message_ = absl::StrCat("the run failed: ", status.message());
    }
    if (status_final_wall_s_ < 0 && status_start_ != absl::InfinitePast()) {
      status_final_wall_s_ = absl::ToDoubleSeconds(absl::Now() - status_start_);
    }
    NotifyAll();
  }
  if (!already_finished) {
    // Failure after training started: keep what was learned and tell the
    // clients (they hear STOP on their next poll).
    Logger::Global().ClearStatusLine();
    Log(absl::StrCat("run failed: ", status.message()),
        {{"event", "run_failed"}, {"error", std::string(status.message())}},
        LogLevel::kError);
    WriteModel("final", rounds_done_, -1).IgnoreError();
    // The last periodic checkpoint stays as it was: --resume goes on from
    // there (the state now may be the failure's, e.g. a diverged model).
    metrics_
        ->WriteSummary(
            SummaryJson(rounds_done_,
                        start_ == absl::InfinitePast()
                            ? 0
                            : absl::ToDoubleSeconds(absl::Now() - start_),
                        true, status))
        .IgnoreError();
    WaitForClientsToLeave(absl::Seconds(5));
  }
  return status;
}

void RoundEngine::WaitForClientsToLeave(absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  const absl::Time deadline = absl::Now() + timeout;
  while (LiveCountLocked() > 0 && absl::Now() < deadline) {
    cv_.wait_for(lock, std::chrono::milliseconds(100));
  }
}

absl::Status RoundEngine::RunRounds() {
  Log(absl::StrFormat(
          "run %s: model %s (%d parameters), %s, %d clients, %d rounds, "
          "merge %s, lr %g",
          run_id_, spec_.name, spec_.NumParams(), config_.dataset.name,
          config_.clients, config_.rounds, MergeRuleName(config_.merge),
          config_.lr),
      {{"event", "run_start"},
       {"run_id", run_id_},
       {"model", spec_.name},
       {"params", spec_.NumParams()},
       {"dataset", config_.dataset.name},
       {"estimator", config_.estimator},
       {"clients", config_.clients},
       {"rounds", config_.rounds},
       {"merge", MergeRuleName(config_.merge)},
       {"lr", config_.lr}});
  if (config_.privacy.clip > 0) {
    Log(absl::StrFormat(
        "privacy: clients clip each of their %d JVPs a round to %g and add "
        "noise sigma %g x clip; all %d rounds cost each client at most "
        "epsilon %.3g at delta %g",
        TangentsPerClient(config_.tangent), config_.privacy.clip,
        config_.privacy.noise_multiplier, config_.rounds,
        GaussianEpsilon(config_.rounds, config_.privacy.noise_multiplier,
                        config_.privacy.delta,
                        TangentsPerClient(config_.tangent)),
        config_.privacy.delta));
  }
  if (resumed_) {
    std::lock_guard<std::mutex> lock(mu_);
    Log(absl::StrFormat(
            "resuming after round %d from the checkpoint (model version %d, "
            "%d registered clients keep their ids)",
            rounds_done_, snapshot_->version, clients_.size()),
        {{"event", "resume"},
         {"round", rounds_done_},
         {"model_version", snapshot_->version},
         {"registered", clients_.size()}});
  }
  // A fresh run starts with all its clients; a resumed one had started
  // already and goes on as soon as its quorum is there (its registered
  // clients count until timeouts.client_s passes without a word).
  const int needed = resumed_ ? config_.min_clients : config_.clients;
  Log(absl::StrFormat("waiting for %d clients to join (up to %.0f s)", needed,
                      config_.timeouts.join_s),
      {{"event", "waiting"},
       {"clients", needed},
       {"timeout_s", config_.timeouts.join_s}});
  if (!WaitForLiveClients(needed, absl::Seconds(config_.timeouts.join_s))) {
    std::lock_guard<std::mutex> lock(mu_);
    state_ = State::kFinished;
    NotifyAll();
    if (stop_requested_) return absl::CancelledError("stopped before start");
    return absl::DeadlineExceededError(
        absl::StrFormat("only %d of %d clients joined within %.0f s",
                        LiveCountLocked(), needed, config_.timeouts.join_s));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    state_ = State::kTraining;
  }
  if (!resumed_) {
    // Round 0: the initial model.
    ASSIGN_OR_RETURN(EvalResult initial, evaluator_->Evaluate(params_));
    NoteEvaluation(0, initial.accuracy);
    initial_test_acc_ = initial.accuracy;
    RoundRow row0;
    row0.round = 0;
    row0.test_acc = initial.accuracy;
    if (initial.regression) {
      row0.test_rmse = initial.rmse;
      final_test_rmse_ = initial.rmse;
      // R^2 has no floor: the first evaluated round is the best so far.
      best_test_acc_ = -std::numeric_limits<double>::infinity();
    }
    row0.bytes_up = bytes_up_.exchange(0);
    row0.bytes_down = bytes_down_.exchange(0);
    bytes_up_total_ += row0.bytes_up;
    bytes_down_total_ += row0.bytes_down;
    RETURN_IF_ERROR(metrics_->Append(row0));
    Log(absl::StrFormat("round 0: %s (initial model, %d test examples)",
                        ScoreText(initial), initial.count),
        {{"event", "round"},
         {"round", 0},
         {"rounds", config_.rounds},
         {"test_acc", initial.accuracy},
         {"test_images", initial.count},
         {"bytes_up", bytes_up_total_},
         {"bytes_down", bytes_down_total_}});
  }

  // A resumed run's clock goes on from the checkpoint's.
  start_ = absl::Now() - absl::Seconds(resumed_elapsed_s_);
  last_cpu_ms_ = ProcessCpuMs();
  const absl::Time start = start_;
  {
    std::lock_guard<std::mutex> lock(mu_);
    status_start_ = start_;
    status_bytes_up_ = bytes_up_total_;
    status_bytes_down_ = bytes_down_total_;
  }
  last_plain_log_ = absl::Now();
  bool interrupted = false;
  for (int64_t round = rounds_done_ + 1; round <= config_.rounds; ++round) {
    if (stop_requested_) {
      interrupted = true;
      break;
    }
    std::vector<TaskSpec> tasks;
    std::vector<ClientResult> results;
    int attempt = 0;
    for (;; ++attempt) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        ExpireClientsLocked(absl::Now());
      }
      if (!WaitForLiveClients(config_.min_clients,
                              absl::Seconds(config_.timeouts.join_s))) {
        if (stop_requested_) break;
        return absl::UnavailableError(absl::StrFormat(
            "round %d: fewer than min_clients=%d live clients for %.0f s",
            round, config_.min_clients, config_.timeouts.join_s));
      }
      ASSIGN_OR_RETURN(results, RunRound(round, &tasks));
      if (static_cast<int>(results.size()) >= config_.min_clients ||
          stop_requested_) {
        break;
      }
      if (attempt + 1 >= kMaxRoundAttempts) {
        return absl::UnavailableError(absl::StrFormat(
            "round %d: quorum of %d results not reached in %d attempts", round,
            config_.min_clients, kMaxRoundAttempts));
      }
      Log(absl::StrFormat("round %d: %d results < min_clients %d; retrying",
                          round, results.size(), config_.min_clients),
          {{"event", "retry"},
           {"round", round},
           {"results", results.size()},
           {"min_clients", config_.min_clients}},
          LogLevel::kWarn);
    }
    if (stop_requested_ &&
        static_cast<int>(results.size()) < config_.min_clients) {
      interrupted = true;
      break;
    }
    ASSIGN_OR_RETURN(MergeReport report,
                     strategy_->Aggregate(round, tasks, results, &params_));
    std::shared_ptr<const SeedStep> replay;
    if (config_.sync == "auto") {
      auto step = std::make_shared<SeedStep>();
      if (strategy_->LastUpdateAsSeeds(step.get())) replay = std::move(step);
    }
    PublishSnapshot(std::move(replay));
    rounds_done_ = round;

    RoundRow row;
    row.round = round;
    row.train_loss = report.mean_loss;
    row.clients = report.merged;
    row.lr = report.lr;
    // The clients' own compute (their reported task time: the estimator on
    // the batch, not replay or transfers): the round waits for the slowest.
    if (!results.empty()) {
      // A client's figure is its word: one that is not a finite,
      // non-negative number is left out.
      double max_ms = 0;
      double sum_ms = 0;
      int counted = 0;
      for (const ClientResult& r : results) {
        if (!std::isfinite(r.compute_ms) || r.compute_ms < 0) continue;
        max_ms = std::max(max_ms, r.compute_ms);
        sum_ms += r.compute_ms;
        ++counted;
      }
      if (counted > 0) {
        row.extra.emplace_back("client_compute_ms_max", max_ms);
        row.extra.emplace_back("client_compute_ms_mean", sum_ms / counted);
      }
    }
    if (config_.privacy.clip > 0) row.epsilon = Epsilon();
    const bool eval =
        round % config_.eval_every == 0 || round == config_.rounds;
    if (eval) {
      ASSIGN_OR_RETURN(EvalResult score, evaluator_->Evaluate(params_));
      if (!std::isfinite(score.loss)) {
        return absl::InternalError(absl::StrFormat(
            "training diverged at round %d (test loss %g); lower lr or set "
            "clip_jvp",
            round, score.loss));
      }
      row.test_acc = score.accuracy;
      if (score.regression) {
        row.test_rmse = score.rmse;
        final_test_rmse_ = score.rmse;
      }
      if (score.accuracy > best_test_acc_) {
        best_test_acc_ = score.accuracy;
        RETURN_IF_ERROR(WriteModel("best", round, score.accuracy));
      }
      NoteEvaluation(round, score.accuracy);
    }
    const absl::Time now = absl::Now();
    row.wall_s = absl::ToDoubleSeconds(now - start);
    // The coordinator's own cost of the round: CPU time of this process
    // (gRPC threads, merge, evaluation) since the previous row; clients'
    // compute is not in it.
    const double cpu_ms = ProcessCpuMs();
    row.extra.emplace_back("coordinator_cpu_ms", cpu_ms - last_cpu_ms_);
    last_cpu_ms_ = cpu_ms;
    row.bytes_up = bytes_up_.exchange(0);
    row.bytes_down = bytes_down_.exchange(0);
    // Tasks handed out since the previous row that came with a seed replay,
    // and those whose client was behind with none offered (it fetches a
    // snapshot, or, holding no model yet, first tries the initial model
    // regenerated from the run seed).
    row.extra.emplace_back("sync_replays",
                           static_cast<double>(sync_replays_.exchange(0)));
    row.extra.emplace_back("sync_snapshots",
                           static_cast<double>(sync_snapshots_.exchange(0)));
    bytes_up_total_ += row.bytes_up;
    bytes_down_total_ += row.bytes_down;
    RETURN_IF_ERROR(metrics_->Append(row));
    if (row.test_acc) {
      final_test_acc_ = *row.test_acc;
      for (auto& t : targets_) {
        if (t.round < 0 && *row.test_acc >= t.target) {
          t.round = round;
          t.wall_s = row.wall_s;
          t.bytes_up = bytes_up_total_;
          t.bytes_down = bytes_down_total_;
        }
      }
    }
    const bool target_done = config_.stop_at_target && !targets_.empty() &&
                             targets_.back().round >= 0;
    {
      RoundProgress p;
      p.round = round;
      p.rounds = config_.rounds;
      p.loss = report.mean_loss;
      p.test_acc = row.test_acc;
      p.regression = config_.dataset.file.regression;
      p.clients = report.merged;
      p.wall_s = row.wall_s;
      p.rounds_per_s = round / std::max(1e-9, row.wall_s);
      p.eta_s = (config_.rounds - round) / p.rounds_per_s;
      p.bytes_up = bytes_up_total_;
      p.bytes_down = bytes_down_total_;
      {
        std::lock_guard<std::mutex> lock(mu_);
        p.last_test_acc = last_test_acc_;
        p.last_test_round = last_test_round_;
        status_bytes_up_ = bytes_up_total_;
        status_bytes_down_ = bytes_down_total_;
        status_eta_s_ = p.eta_s;
      }
      ReportProgress(p, eval, now);
    }
    if (checkpoint_every_ > 0 && round % checkpoint_every_ == 0 &&
        round < config_.rounds && !target_done &&
        now - last_checkpoint_ >= checkpoint_min_interval_) {
      RETURN_IF_ERROR(SaveCheckpoint(/*finished=*/false));
    }
    if (target_done) {
      stopped_at_target_ = true;
      Log(absl::StrFormat("round %d: target %.4f reached; stopping", round,
                          targets_.back().target),
          {{"event", "target"},
           {"round", round},
           {"target", targets_.back().target}});
      break;
    }
  }
  const double wall_s = absl::ToDoubleSeconds(absl::Now() - start);
  if (interrupted && rounds_done_ > 0) {
    // Evaluate what was trained so the summary tells the truth.
    ASSIGN_OR_RETURN(EvalResult score, evaluator_->Evaluate(params_));
    final_test_acc_ = score.accuracy;
    final_test_rmse_ = score.rmse;
  } else if (rounds_done_ == 0) {
    final_test_acc_ = initial_test_acc_;
  }
  return Finish(rounds_done_, wall_s, interrupted);
}

absl::Status RoundEngine::Finish(int64_t rounds_done, double wall_s,
                                 bool interrupted) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    state_ = State::kFinished;
    NotifyAll();
  }
  RETURN_IF_ERROR(WriteModel("final", rounds_done, final_test_acc_));
  // Interrupted: --resume goes on from here. Finished: --resume refuses.
  RETURN_IF_ERROR(SaveCheckpoint(/*finished=*/!interrupted));
  RETURN_IF_ERROR(metrics_->WriteSummary(
      SummaryJson(rounds_done, wall_s, interrupted, absl::OkStatus())));
  {
    std::lock_guard<std::mutex> lock(mu_);
    status_bytes_up_ = bytes_up_total_;
    status_bytes_down_ = bytes_down_total_;
    status_eta_s_ = 0;
    status_final_wall_s_ = wall_s;
  }
  Logger::Global().ClearStatusLine();
  const bool regression = config_.dataset.file.regression;
  Log(absl::StrFormat(
          "%s after %d rounds: %s  wall %.1f s  "
          "bytes up %d down %d",
          interrupted ? "stopped" : "finished", rounds_done,
          regression ? absl::StrFormat("final_test_r2 %.4f  "
                                       "final_test_rmse %.4g",
                                       final_test_acc_, final_test_rmse_)
                     : absl::StrFormat("final_test_acc %.4f", final_test_acc_),
          wall_s, bytes_up_total_, bytes_down_total_),
      {{"event", interrupted ? "stopped" : "finished"},
       {"rounds", rounds_done},
       {"final_test_acc", final_test_acc_},
       {"wall_s", wall_s},
       {"bytes_up", bytes_up_total_},
       {"bytes_down", bytes_down_total_}});
  // Give polling clients a bounded moment to hear STOP and leave.
  WaitForClientsToLeave(absl::Seconds(5));
  return interrupted ? absl::CancelledError("run stopped before the last round")
                     : absl::OkStatus();
}

absl::Status RoundEngine::WriteModel(const std::string& kind, int64_t round,
                                     double test_acc) {
  return metrics_->WriteFileAtomically(
      kind + "_model.bin",
      EncodeModelFile(RunModelHeader(config_, kind, round, test_acc), params_));
}

std::string RoundEngine::SummaryJson(int64_t rounds_done, double wall_s,
                                     bool interrupted,
                                     const absl::Status& error) const {
  nlohmann::json j;
  RunSummary core;
  core.mode = "federated";
  core.unit = "round";
  core.final_test_acc = final_test_acc_;
  core.best_test_acc = best_test_acc_;
  if (config_.dataset.file.regression) {
    core.task = "regression";
    core.final_test_rmse = final_test_rmse_;
  }
  core.rounds = rounds_done;
  core.planned = config_.rounds;
  core.wall_s = wall_s;
  core.bytes_up = bytes_up_total_;
  core.bytes_down = bytes_down_total_;
  core.interrupted = interrupted;
  core.stopped_at_target = stopped_at_target_;
  if (!error.ok()) core.error = std::string(error.message());
  WriteSummaryCore(core, &j);
  j["run_id"] = run_id_;
  j["rounds"] = rounds_done;  // the older keys (run_summary.h)
  j["rounds_planned"] = config_.rounds;
  nlohmann::json targets = nlohmann::json::array();
  for (const auto& t : targets_) {
    nlohmann::json tj;
    tj["target"] = t.target;
    if (t.round < 0) {
      tj["reached"] = false;
    } else {
      tj["reached"] = true;
      tj["round"] = t.round;
      tj["wall_s"] = t.wall_s;
      tj["bytes_up"] = t.bytes_up;
      tj["bytes_down"] = t.bytes_down;
    }
    targets.push_back(tj);
  }
  j["targets"] = targets;
  if (config_.privacy.clip > 0) {
    j["privacy"] = {
        {"epsilon", Epsilon()},
        {"delta", config_.privacy.delta},
        {"clip", config_.privacy.clip},
        {"noise_multiplier", config_.privacy.noise_multiplier},
        {"releases_per_client_at_most", round_attempts_},
        {"scalars_per_release", TangentsPerClient(config_.tangent)}};
  }
  j["model"] = spec_.name;
  j["num_params"] = spec_.NumParams();
  j["git_commit"] = GitCommit();
  j["libtorch_version"] = TorchVersion();
  j["server_threads"] = threads_;
  j["host"] = HostName();
  j["config"] = nlohmann::json::parse(ConfigToJson(config_), nullptr, false);
  MergeSummaryExtra(summary_extra_, &j);
  return j.dump(2);
}

}  // namespace fedfwd
