#include "server/peer_engine.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/model_file.h"
#include "common/security.h"
#include "common/status_macros.h"
#include "server/run_summary.h"

namespace fedfwd {
namespace {

constexpr auto kPoll = std::chrono::milliseconds(250);

bool AllFinite(const std::vector<float>& v) {
  return std::all_of(v.begin(), v.end(),
                     [](float x) { return std::isfinite(x); });
}

}  // namespace

PeerEngine::PeerEngine(Config config, ModelSpec spec,
                       std::unique_ptr<Evaluator> evaluator,
                       std::unique_ptr<MetricsWriter> metrics, int threads)
    : config_(std::move(config)),
      spec_(std::move(spec)),
      evaluator_(std::move(evaluator)),
      metrics_(std::move(metrics)),
      threads_(threads),
      run_id_(NewRunId(config_)),
      peer_token_(NewToken()),
      report_every_(std::max<int64_t>(
          1, std::min(config_.eval_every, config_.peer.steps))) {
  for (double t : config_.targets) target_hits_.emplace_back(t, -1);
}

PeerEngine::~PeerEngine() = default;

double PeerEngine::elastic_alpha() const {
  return config_.peer.alpha > 0
             ? config_.peer.alpha
             : DefaultElasticAlpha(config_.peer.beta, config_.clients,
                                   config_.peer.tau);
}

void PeerEngine::Log(const std::string& line, LogFields fields,
                     LogLevel level) {
  LogCoordinatorEvent(line, std::move(fields), level);
}

void PeerEngine::RequestStop() {
  stop_requested_ = true;
  cv_.notify_all();
}

void PeerEngine::CountBytes(int64_t up, int64_t down) {
  bytes_up_ += up;
  bytes_down_ += down;
}

// ---- membership ----

absl::StatusOr<JoinOutcome> PeerEngine::Join(const JoinParams& p) {
  RETURN_IF_ERROR(CheckJoinRequest(p, config_.clients));
  if (p.peer_address.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "this run is decentralized (algorithm ", config_.algorithm,
        "): its workers push to each other; start fedfwd-client with "
        "--peer-listen HOST:PORT (and --peer-advertise when peers reach it "
        "at another address)"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (state_ == State::kFinished) {
    return absl::FailedPreconditionError("the run is over");
  }
  ExpireLocked(absl::Now());
  // A repeat of a join that succeeded (its reply was lost) gets its
  // registration back even once the run has started.
  if (auto* repeat = FindRepeatedJoin(&workers_, p, "worker")) {
    auto& [id, w] = *repeat;
    w.last_seen = absl::Now();
    w.peer_address = p.peer_address;
    return JoinOutcome{id, w.session, w.shard};
  }
  if (state_ != State::kWaiting) {
    return absl::FailedPreconditionError(
        "this decentralized run has started; it takes no new workers");
  }
  std::vector<bool> taken(static_cast<size_t>(config_.clients), false);
  for (const auto& [id, w] : workers_) {
    if (w.alive) taken[static_cast<size_t>(w.shard)] = true;
  }
  ASSIGN_OR_RETURN(const int shard, AssignShard(taken, p.shard));
  const uint32_t id = next_id_++;
  Worker w;
  w.name = p.name;
  w.owner = p.owner;
  w.join_key = p.join_key;
  w.session = NewSession();
  w.peer_address = p.peer_address;
  w.shard = shard;
  w.last_seen = absl::Now();
  workers_[id] = w;
  int live = 0;
  for (const auto& [i, x] : workers_) live += x.alive ? 1 : 0;
  Log(absl::StrFormat("worker %u joined (%s), shard %d, peer %s; %d/%d live",
                      id, p.name, shard, p.peer_address, live, config_.clients),
      {{"event", "join"},
       {"client_id", id},
       {"name", p.name},
       {"shard", shard},
       {"peer_address", p.peer_address},
       {"live", live},
       {"clients", config_.clients}});
  cv_.notify_all();
  return JoinOutcome{id, w.session, shard};
}

absl::StatusOr<PeerEngine::Worker*> PeerEngine::CheckWorkerLocked(
    uint32_t id, const std::string& session) {
  return FindSession(&workers_, id, session, "");
}

void PeerEngine::DropLocked(uint32_t id, Worker* w, const std::string& why) {
  w->alive = false;
  const size_t lost = w->relayed.size();
  w->relayed.clear();
  const bool finished = w->last_step >= config_.peer.steps;
  Log(absl::StrFormat(
          "worker %u (shard %d) %s at local step %d%s", id, w->shard, why,
          w->last_step,
          lost > 0 ? absl::StrCat("; ", lost, " relayed messages dropped")
                   : ""),
      {{"event", "drop"},
       {"client_id", id},
       {"shard", w->shard},
       {"reason", why},
       {"step", w->last_step}},
      finished || state_ != State::kTraining ? LogLevel::kInfo
                                             : LogLevel::kWarn);
  cv_.notify_all();
}

void PeerEngine::ExpireLocked(absl::Time now) {
  const absl::Duration limit = absl::Seconds(config_.timeouts.client_s);
  for (auto& [id, w] : workers_) {
    if (w.alive && now - w.last_seen > limit) {
      DropLocked(id, &w,
                 absl::StrFormat("dropped: not heard from for %.1f s",
                                 absl::ToDoubleSeconds(now - w.last_seen)));
    }
  }
}

std::vector<v1::PeerInfo> PeerEngine::LivePeersLocked() const {
  std::vector<v1::PeerInfo> out;
  for (const auto& [id, w] : workers_) {
    if (!w.alive || !w.assigned || w.last_step >= config_.peer.steps) continue;
    v1::PeerInfo p;
    p.set_client_id(id);
    p.set_address(w.peer_address);
    p.set_index(w.shard);
    out.push_back(std::move(p));
  }
  return out;
}

absl::Status PeerEngine::Heartbeat(uint32_t client_id,
                                   const std::string& session) {
  std::lock_guard<std::mutex> lock(mu_);
  return CheckWorkerLocked(client_id, session).status();
}

absl::Status PeerEngine::Leave(uint32_t client_id, const std::string& session,
                               const std::string& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(Worker * w, CheckWorkerLocked(client_id, session));
  DropLocked(client_id, w, absl::StrCat("left (", reason, ")"));
  return absl::OkStatus();
}

std::vector<std::pair<uint32_t, std::string>> PeerEngine::ClientOwners() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::pair<uint32_t, std::string>> out;
  for (const auto& [id, w] : workers_) out.emplace_back(id, w.owner);
  return out;
}

// ---- tasks ----

absl::StatusOr<TaskOutcome> PeerEngine::NextTask(uint32_t client_id,
                                                 const std::string& session,
                                                 absl::Duration wait,
                                                 uint64_t) {
  const absl::Time deadline = absl::Now() + wait;
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    ASSIGN_OR_RETURN(Worker * w, CheckWorkerLocked(client_id, session));
    TaskOutcome out;
    if (state_ == State::kFinished) {
      out.kind = TaskOutcome::kStop;
      out.message = "the run is over";
      return out;
    }
    // A worker runs its task without polling; one that polls again before
    // its first report never got the task (a lost reply): send it again.
    if (state_ == State::kTraining && w->assigned &&
        (!w->task_sent || w->last_step == 0)) {
      w->task_sent = true;
      out.kind = TaskOutcome::kPeer;
      out.task.client_id = client_id;
      out.task.batch_size = config_.batch_size;
      out.task.lr = config_.lr;
      out.task.momentum = config_.momentum;
      // The initial model's checksum (not the center's: asynchronous EASGD
      // may have moved it before a slow worker asks).
      out.model_version = 1;
      out.model_checksum = initial_checksum_;
      v1::PeerTask& t = out.peer;
      const PeerConfig& c = config_.peer;
      t.set_algorithm(config_.algorithm);
      t.set_steps(c.steps);
      t.set_weight_decay(config_.weight_decay);
      t.set_nesterov(c.nesterov);
      t.set_tau(c.tau);
      t.set_alpha(elastic_alpha());
      t.set_synchronous(c.synchronous);
      t.set_push_probability(c.push_probability);
      t.set_topology(c.topology);
      t.set_degree(c.degree);
      t.set_noise_std(c.noise_std);
      t.set_report_every(report_every_);
      t.set_token(peer_token_);
      t.set_index(w->shard);
      t.set_workers(config_.clients);
      for (v1::PeerInfo& p : LivePeersLocked()) *t.add_peers() = std::move(p);
      return out;
    }
    if (state_ == State::kTraining && !w->assigned) {
      out.kind = TaskOutcome::kStop;
      out.message = "the decentralized run started without this worker";
      return out;
    }
    const absl::Time now = absl::Now();
    if (now >= deadline || stop_requested_) {
      out.kind = TaskOutcome::kWait;
      return out;
    }
    cv_.wait_for(lock, std::min(absl::ToChronoNanoseconds(deadline - now),
                                std::chrono::nanoseconds(kPoll)));
  }
}

// ---- EASGD center ----

std::shared_ptr<const Snapshot> PeerEngine::CenterSnapshotLocked() {
  if (!center_snapshot_ || center_snapshot_->version != center_version_) {
    center_snapshot_ = std::make_shared<const Snapshot>(
        MakeSnapshot(center_, center_version_));
  }
  return center_snapshot_;
}

absl::StatusOr<std::shared_ptr<const Snapshot>> PeerEngine::GetSnapshot(
    uint32_t client_id, const std::string& session, uint64_t version) {
  std::unique_lock<std::mutex> lock(mu_);
  RETURN_IF_ERROR(CheckWorkerLocked(client_id, session).status());
  if (config_.algorithm != "easgd") {
    if (version <= 1) return CenterSnapshotLocked();  // the initial model
    return absl::FailedPreconditionError(
        absl::StrCat(config_.algorithm, " keeps no model on the coordinator"));
  }
  if (version == 0) return CenterSnapshotLocked();
  const absl::Time deadline =
      absl::Now() + absl::Seconds(config_.timeouts.round_s);
  while (center_version_ < version && state_ != State::kFinished &&
         !stop_requested_ && absl::Now() < deadline) {
    cv_.wait_for(lock, kPoll);
    RETURN_IF_ERROR(CheckWorkerLocked(client_id, session).status());
  }
  if (state_ == State::kFinished) return NotTrainingLocked();
  if (center_version_ == version) return CenterSnapshotLocked();
  if (center_version_ > version) {
    return absl::FailedPreconditionError(absl::StrCat(
        "center version ", version, " is gone (now ", center_version_, ")"));
  }
  return absl::UnavailableError(absl::StrCat(
      "center version ", version, " is not ready (now ", center_version_,
      "); waiting for the other workers' exchanges"));
}

absl::Status PeerEngine::Submit(const std::string& session,
                                const ClientResult& r, uint64_t) {
  std::lock_guard<std::mutex> lock(mu_);
  RETURN_IF_ERROR(CheckWorkerLocked(r.client_id, session).status());
  if (config_.algorithm != "easgd") {
    return absl::FailedPreconditionError(absl::StrCat(
        config_.algorithm,
        " workers submit no updates to the coordinator (only easgd does)"));
  }
  if (state_ != State::kTraining) return NotTrainingLocked();
  if (r.update.size() != center_.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("elastic difference has ", r.update.size(),
                     " values, the model ", center_.size()));
  }
  if (!AllFinite(r.update)) {
    return absl::InvalidArgumentError(
        "elastic difference has NaN or Inf values");
  }
  if (!config_.peer.synchronous) {
    for (size_t i = 0; i < center_.size(); ++i) center_[i] += r.update[i];
    ++center_version_;
    cv_.notify_all();
    return absl::OkStatus();
  }
  if (r.round != open_exchange_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "exchange ", r.round, " is not open (open: ", open_exchange_, ")"));
  }
  if (exchanged_.count(r.client_id) > 0) {
    return absl::AlreadyExistsError(absl::StrCat(
        "worker ", r.client_id, " already sent exchange ", r.round));
  }
  if (exchange_sum_.empty()) exchange_sum_.assign(center_.size(), 0.0);
  for (size_t i = 0; i < center_.size(); ++i) exchange_sum_[i] += r.update[i];
  exchanged_.insert(r.client_id);
  MaybeCloseExchangeLocked();
  return absl::OkStatus();
}

void PeerEngine::MaybeCloseExchangeLocked() {
  if (config_.algorithm != "easgd" || !config_.peer.synchronous ||
      state_ != State::kTraining || exchanged_.empty()) {
    return;
  }
  for (const auto& [id, w] : workers_) {
    if (w.alive && w.assigned && exchanged_.count(id) == 0) return;
  }
  for (size_t i = 0; i < center_.size(); ++i) {
    center_[i] = static_cast<float>(center_[i] + exchange_sum_[i]);
  }
  ++center_version_;
  ++open_exchange_;
  exchange_sum_.clear();
  exchanged_.clear();
  cv_.notify_all();
}

absl::Status PeerEngine::NotTrainingLocked() const {
  // Workers stop at "the run is over" and poll for their STOP.
  return absl::FailedPreconditionError(
      state_ == State::kFinished ? "the run is over"
                                 : "the run has not started training");
}

// ---- reports and relays ----

absl::StatusOr<std::vector<v1::PeerInfo>> PeerEngine::ReportModel(
    const std::string& session, const ClientResult& r, int64_t peer_bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(Worker * w, CheckWorkerLocked(r.client_id, session));
  if (state_ != State::kTraining) return NotTrainingLocked();
  const int64_t steps = config_.peer.steps;
  if (r.round <= w->last_step || r.round > steps ||
      (r.round % report_every_ != 0 && r.round != steps)) {
    return absl::InvalidArgumentError(
        absl::StrCat("report of local step ", r.round, " (last reported ",
                     w->last_step, "; reports are due every ", report_every_,
                     " steps and at ", steps, ")"));
  }
  if (r.update.size() != static_cast<size_t>(spec_.NumParams())) {
    return absl::InvalidArgumentError(
        absl::StrCat("report has ", r.update.size(), " parameters, the model ",
                     spec_.NumParams()));
  }
  if (!AllFinite(r.update) || !std::isfinite(r.loss)) {
    return absl::InvalidArgumentError(
        absl::StrCat("report of local step ", r.round,
                     " has NaN or Inf values (the worker diverged? lower lr)"));
  }
  PendingReport& p = reports_[r.round];
  if (p.sum.empty()) p.sum.assign(r.update.size(), 0.0);
  double sq = 0;
  for (size_t i = 0; i < r.update.size(); ++i) {
    p.sum[i] += r.update[i];
    sq += static_cast<double>(r.update[i]) * r.update[i];
  }
  p.sum_sq += sq;
  p.loss_sum += r.loss;
  p.from.insert(r.client_id);
  w->last_step = r.round;
  w->last_loss = r.loss;
  w->peer_bytes = std::max<int64_t>(0, peer_bytes);
  cv_.notify_all();
  return LivePeersLocked();
}

absl::Status PeerEngine::Relay(uint32_t from, const std::string& session,
                               uint32_t to, PeerMessage m) {
  std::lock_guard<std::mutex> lock(mu_);
  RETURN_IF_ERROR(CheckWorkerLocked(from, session).status());
  if (config_.algorithm == "easgd") {
    return absl::FailedPreconditionError("easgd workers send no peer messages");
  }
  auto it = workers_.find(to);
  if (it == workers_.end() || !it->second.alive || !it->second.assigned) {
    return absl::FailedPreconditionError(
        absl::StrCat("worker ", to, " is not in the run (left or died)"));
  }
  if (it->second.last_step >= config_.peer.steps) {
    return absl::FailedPreconditionError(
        absl::StrCat("worker ", to, " has finished its steps"));
  }
  if (it->second.relayed.size() >= kMaxRelayed) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "worker ", to, " has ", kMaxRelayed, " relayed messages waiting"));
  }
  m.from = from;
  ++relayed_total_;
  it->second.relayed.push_back(std::move(m));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<PeerMessage>> PeerEngine::TakeRelayed(
    uint32_t client_id, const std::string& session) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(Worker * w, CheckWorkerLocked(client_id, session));
  std::vector<PeerMessage> out(std::make_move_iterator(w->relayed.begin()),
                               std::make_move_iterator(w->relayed.end()));
  relayed_taken_ += static_cast<int64_t>(out.size());
  w->relayed.clear();
  return out;
}

int PeerEngine::RelayedPending(uint32_t client_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = workers_.find(client_id);
  return it == workers_.end() ? 0 : static_cast<int>(it->second.relayed.size());
}

// ---- the run ----

int64_t PeerEngine::ReadyReportLocked() const {
  if (reports_.empty()) return -1;
  const int64_t s = reports_.begin()->first;
  if (reports_.size() > kMaxPendingReports) return s;
  for (const auto& [id, w] : workers_) {
    if (w.alive && w.assigned && w.last_step < s) return -1;
  }
  return s;
}

bool PeerEngine::AllDoneLocked() const {
  if (!reports_.empty()) return false;
  for (const auto& [id, w] : workers_) {
    if (w.alive && w.assigned && w.last_step < config_.peer.steps) {
      return false;
    }
  }
  return true;
}

absl::Status PeerEngine::EvaluateStep(int64_t step, PendingReport report) {
  const size_t n = report.from.size();
  std::vector<float> mean(report.sum.size());
  double mean_sq = 0;
  for (size_t i = 0; i < mean.size(); ++i) {
    const double m = report.sum[i] / static_cast<double>(n);
    mean[i] = static_cast<float>(m);
    mean_sq += m * m;
  }
  const double spread = std::sqrt(
      std::max(0.0, report.sum_sq / static_cast<double>(n) - mean_sq));
  ASSIGN_OR_RETURN(EvalResult score, evaluator_->Evaluate(mean));
  std::optional<double> center_acc;
  std::vector<float> center;
  int64_t total_steps = 0, peer_bytes = 0;
  absl::Time start;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (config_.algorithm == "easgd") center = center_;
    for (const auto& [id, w] : workers_) {
      if (!w.assigned) continue;
      total_steps += std::min(step, w.last_step);
      peer_bytes += w.peer_bytes;
    }
    start = start_;
  }
  if (!center.empty()) {
    ASSIGN_OR_RETURN(EvalResult c, evaluator_->Evaluate(center));
    center_acc = c.accuracy;
  }
  RoundRow row;
  row.round = total_steps;
  row.wall_s = absl::ToDoubleSeconds(absl::Now() - start);
  row.train_loss = report.loss_sum / static_cast<double>(n);
  row.test_acc = score.accuracy;
  if (score.regression) row.test_rmse = score.rmse;
  row.bytes_up = bytes_up_ + peer_bytes;
  row.bytes_down = bytes_down_;
  row.clients = static_cast<int>(n);
  row.lr = config_.lr;
  row.extra = {{"worker_step", static_cast<double>(step)},
               {"spread", spread},
               {"test_loss", score.loss},
               {"peer_bytes", static_cast<double>(peer_bytes)}};
  if (center_acc) row.extra.emplace_back("center_test_acc", *center_acc);
  RETURN_IF_ERROR(metrics_->Append(row));
  Log(absl::StrFormat(
          "step %d/%d  loss %.4f  %s%s  spread %.4g  "
          "workers %d  %.1f s",
          step, config_.peer.steps, *row.train_loss, ScoreText(score),
          center_acc ? absl::StrFormat("  center_acc %.4f", *center_acc) : "",
          spread, n, row.wall_s),
      {{"event", "evaluation"},
       {"worker_step", step},
       {"step", total_steps},
       {"test_acc", score.accuracy},
       {"spread", spread},
       {"workers", static_cast<int64_t>(n)},
       {"wall_s", row.wall_s}});
  std::lock_guard<std::mutex> lock(mu_);
  last_test_acc_ = score.accuracy;
  last_test_rmse_ = score.rmse;
  last_eval_step_ = step;
  accuracy_history_.emplace_back(step, score.accuracy);
  while (accuracy_history_.size() > 10) accuracy_history_.pop_front();
  consensus_ = std::move(mean);
  best_test_acc_ = std::max(best_test_acc_, score.accuracy);
  for (auto& [target, at] : target_hits_) {
    if (at < 0 && score.accuracy >= target) at = total_steps;
  }
  return absl::OkStatus();
}

absl::Status PeerEngine::Run() {
  std::vector<float> initial = InitialParams(spec_, config_.seed);
  {
    std::lock_guard<std::mutex> lock(mu_);
    center_ = initial;
    consensus_ = initial;
    initial_checksum_ = MakeSnapshot(initial, 1).checksum;
  }
  ASSIGN_OR_RETURN(EvalResult e0, evaluator_->Evaluate(initial));
  RoundRow row0;
  row0.round = 0;
  row0.test_acc = e0.accuracy;
  if (e0.regression) {
    row0.test_rmse = e0.rmse;
    // R^2 has no floor: the first evaluation is the best so far.
    std::lock_guard<std::mutex> lock(mu_);
    best_test_acc_ = -std::numeric_limits<double>::infinity();
  }
  row0.lr = config_.lr;
  row0.extra = {{"worker_step", 0.0}, {"spread", 0.0}};
  RETURN_IF_ERROR(metrics_->Append(row0));
  std::string algo = config_.algorithm;
  if (algo == "easgd") {
    algo = absl::StrFormat("%s%s (tau %d, alpha %.4g)",
                           config_.momentum > 0 ? "eamsgd" : "easgd",
                           config_.peer.synchronous ? "" : " asynchronous",
                           config_.peer.tau, elastic_alpha());
  } else if (algo == "gosgd") {
    algo = absl::StrFormat("gosgd (p %.3g)", config_.peer.push_probability);
  } else {
    algo = absl::StrFormat("sgp (%s graph)", config_.peer.topology);
  }
  Log(absl::StrFormat("decentralized run %s: %s, %d workers x %d local steps, "
                      "%s (%d parameters) on %s, batch %d, lr %g, %s at the "
                      "start",
                      run_id_, algo, config_.clients, config_.peer.steps,
                      spec_.name, spec_.NumParams(), config_.dataset.name,
                      config_.batch_size, config_.lr, ScoreText(e0)),
      {{"event", "start"},
       {"run_id", run_id_},
       {"algorithm", config_.algorithm},
       {"workers", config_.clients},
       {"steps", config_.peer.steps}});

  std::unique_lock<std::mutex> lock(mu_);
  const absl::Time join_deadline =
      absl::Now() + absl::Seconds(config_.timeouts.join_s);
  const int least = std::max(2, config_.min_clients);
  while (true) {
    const absl::Time now = absl::Now();
    ExpireLocked(now);
    int live = 0;
    for (const auto& [id, w] : workers_) live += w.alive ? 1 : 0;
    if (live >= config_.clients) break;
    if (stop_requested_) {
      state_ = State::kFinished;
      cv_.notify_all();
      lock.unlock();
      RETURN_IF_ERROR(Finish(0, true, absl::OkStatus()));
      return absl::CancelledError("stopped before the run started");
    }
    if (now >= join_deadline) {
      if (live >= least) break;
      state_ = State::kFinished;
      cv_.notify_all();
      const absl::Status error = absl::DeadlineExceededError(absl::StrFormat(
          "only %d of %d workers joined within timeouts.join_s = %g s (at "
          "least %d needed)",
          live, config_.clients, config_.timeouts.join_s, least));
      lock.unlock();
      RETURN_IF_ERROR(Finish(0, false, error));
      return error;
    }
    cv_.wait_for(lock, kPoll);
  }
  for (auto& [id, w] : workers_) {
    if (w.alive) {
      w.assigned = true;
      ++workers_started_;
    }
  }
  state_ = State::kTraining;
  start_ = absl::Now();
  cv_.notify_all();
  Log(absl::StrFormat("training: %d workers", workers_started_),
      {{"event", "training"}, {"workers", workers_started_}});

  absl::Status error;
  bool interrupted = false;
  while (true) {
    if (stop_requested_) {
      interrupted = true;
      break;
    }
    ExpireLocked(absl::Now());
    MaybeCloseExchangeLocked();
    const int64_t ready = ReadyReportLocked();
    if (ready >= 0) {
      PendingReport report = std::move(reports_[ready]);
      reports_.erase(ready);
      lock.unlock();
      error = EvaluateStep(ready, std::move(report));
      lock.lock();
      if (!error.ok()) break;
      continue;
    }
    if (AllDoneLocked()) break;
    bool anyone = false;
    for (const auto& [id, w] : workers_) anyone |= w.alive && w.assigned;
    if (!anyone) {
      error = absl::UnavailableError(
          "every worker died or left before finishing its steps");
      break;
    }
    cv_.wait_for(lock, kPoll);
  }
  const double wall_s = absl::ToDoubleSeconds(absl::Now() - start_);
  state_ = State::kFinished;
  final_wall_s_ = wall_s;
  cv_.notify_all();
  lock.unlock();
  RETURN_IF_ERROR(Finish(wall_s, interrupted, error));
  // Give the workers a moment to hear STOP and leave (bounded; not when
  // stopped by a signal, where the operator wants out now).
  const absl::Time leave_deadline =
      absl::Now() + (interrupted ? absl::ZeroDuration() : absl::Seconds(5));
  lock.lock();
  while (absl::Now() < leave_deadline) {
    bool anyone = false;
    for (const auto& [id, w] : workers_) anyone |= w.alive;
    if (!anyone) break;
    cv_.wait_for(lock, kPoll);
  }
  lock.unlock();
  if (interrupted) return absl::CancelledError("stopped by a signal");
  return error;
}

absl::Status PeerEngine::Finish(double wall_s, bool interrupted,
                                const absl::Status& error) {
  std::vector<float> consensus;
  nlohmann::json j;
  int finished = 0, lost = 0;
  int64_t peer_bytes = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    consensus = consensus_;
    for (const auto& [id, w] : workers_) {
      if (!w.assigned) continue;
      peer_bytes += w.peer_bytes;
      if (w.last_step >= config_.peer.steps) {
        ++finished;
      } else {
        ++lost;
      }
    }
    RunSummary core;
    core.mode = "decentralized";
    core.unit = "step";
    core.final_test_acc = last_test_acc_;
    core.best_test_acc = best_test_acc_;
    if (config_.dataset.file.regression) {
      core.task = "regression";
      core.final_test_rmse = last_test_rmse_;
    }
    core.rounds = last_eval_step_ < 0 ? 0 : last_eval_step_;
    core.planned = config_.peer.steps;
    core.wall_s = wall_s;
    core.bytes_up = bytes_up_ + peer_bytes;
    core.bytes_down = bytes_down_.load();
    core.interrupted = interrupted;
    if (!error.ok()) core.error = std::string(error.message());
    WriteSummaryCore(core, &j);
    j["run_id"] = run_id_;
    j["algorithm"] = config_.algorithm;
    j["steps_per_worker"] = core.rounds;  // the older keys (run_summary.h)
    j["steps_planned"] = config_.peer.steps;
    j["workers"] = workers_started_;
    j["workers_finished"] = finished;
    j["workers_lost"] = lost;
    j["peer_bytes_total"] = peer_bytes;
    j["relayed_messages"] = relayed_total_;
    j["relayed_messages_fetched"] = relayed_taken_;
    j["coordinator_bytes_up"] = bytes_up_.load();
    if (config_.algorithm == "easgd") j["elastic_alpha"] = elastic_alpha();
    nlohmann::json targets = nlohmann::json::array();
    for (const auto& [target, at] : target_hits_) {
      nlohmann::json t;
      t["target"] = target;
      t["reached"] = at >= 0;
      if (at >= 0) t["step"] = at;
      targets.push_back(t);
    }
    j["targets"] = targets;
  }
  j["model"] = spec_.name;
  j["num_params"] = spec_.NumParams();
  j["git_commit"] = GitCommit();
  j["libtorch_version"] = TorchVersion();
  j["server_threads"] = threads_;
  j["host"] = HostName();
  j["config"] = nlohmann::json::parse(ConfigToJson(config_), nullptr, false);
  MergeSummaryExtra(summary_extra_, &j);
  RETURN_IF_ERROR(metrics_->WriteFileAtomically(
      "final_model.bin",
      EncodeModelFile(
          RunModelHeader(config_, "final", last_eval_step_, last_test_acc_),
          consensus)));
  RETURN_IF_ERROR(metrics_->WriteSummary(j.dump(2)));
  Log(absl::StrFormat("decentralized run over: consensus %s %.4f, %d "
                      "workers finished, %d lost, %.1f s",
                      config_.dataset.file.regression ? "test_r2" : "test_acc",
                      last_test_acc_, finished, lost, wall_s),
      {{"event", "finished"},
       {"final_test_acc", last_test_acc_},
       {"workers_finished", finished},
       {"workers_lost", lost},
       {"wall_s", wall_s}});
  return absl::OkStatus();
}

EngineStatus PeerEngine::GetStatus() {
  std::lock_guard<std::mutex> lock(mu_);
  EngineStatus s;
  s.run_id = run_id_;
  s.round = std::max<int64_t>(0, last_eval_step_);
  s.rounds = config_.peer.steps;
  s.model_version = center_version_;
  s.last_test_acc = last_test_acc_;
  s.last_test_round = last_eval_step_;
  s.state = state_ == State::kWaiting    ? "waiting"
            : state_ == State::kTraining ? "training"
                                         : "finished";
  const absl::Time now = absl::Now();
  for (const auto& [id, w] : workers_) {
    ClientView v;
    v.id = id;
    v.name = w.name;
    v.shard = w.shard;
    v.alive = w.alive;
    v.last_seen_s = absl::ToDoubleSeconds(now - w.last_seen);
    s.clients.push_back(v);
  }
  s.accuracy_history.assign(accuracy_history_.begin(), accuracy_history_.end());
  s.wall_s = final_wall_s_ >= 0 ? final_wall_s_
             : start_ == absl::InfinitePast()
                 ? 0
                 : absl::ToDoubleSeconds(now - start_);
  s.bytes_up = bytes_up_;
  s.bytes_down = bytes_down_;
  s.clients_expected = config_.clients;
  s.min_clients = config_.min_clients;
  s.model = spec_.name;
  s.dataset = config_.dataset.name;
  s.estimator = config_.algorithm;
  return s;
}

}  // namespace fedfwd
