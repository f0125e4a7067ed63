#include "client/daemon.h"

#include <grpcpp/grpcpp.h>

#include <cerrno>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "client/peer_worker.h"
#include "common/codec.h"
#include "common/estimators.h"
#include "common/metrics.h"
#include "common/privacy.h"
#include "common/status_macros.h"
#include "common/update_codec.h"

namespace fedfwd {
namespace {

// The coordinator forgot us (restart, or we were dropped): join again.
bool NeedsRejoin(const absl::Status& s) {
  return absl::IsNotFound(s) || absl::IsUnauthenticated(s) ||
         (absl::IsFailedPrecondition(s) &&
          s.message().find("rejoin") != absl::string_view::npos);
}

// Exponential backoff with jitter between retries: waits grow 250 ms, 500
// ms, ... up to 5 s, each drawn uniformly from [d/2, d], so a fleet of
// daemons that lost the coordinator together do not come back in lockstep
// (the coordinator's restart would otherwise meet them all in the same
// millisecond, round after round).
class Backoff {
 public:
  Backoff() : rng_(std::random_device{}()) {}
  absl::Duration Next() {
    const double d = absl::ToDoubleSeconds(next_);
    next_ = std::min(next_ * 2, absl::Seconds(5));
    return absl::Seconds(
        std::uniform_real_distribution<double>(d / 2, d)(rng_));
  }
  void Reset() { next_ = absl::Milliseconds(250); }

 private:
  absl::Duration next_ = absl::Milliseconds(250);
  std::mt19937_64 rng_;
};

// How long a restarted daemon waits for its shard's earlier registration
// to expire on the coordinator (timeouts.client_s, 10 s by default).
constexpr absl::Duration kHeldShardWait = absl::Seconds(20);

// The resident set size and its peak since the last ResetPeakRss (VmRSS and
// VmHWM of /proc/self/status), in KiB; -1 where unknown.
struct Rss {
  int64_t now_kib = -1;
  int64_t peak_kib = -1;
};
Rss ReadRss() {
  Rss r;
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    long long v = 0;
    if (std::sscanf(line.c_str(), "VmRSS: %lld kB", &v) == 1) r.now_kib = v;
    if (std::sscanf(line.c_str(), "VmHWM: %lld kB", &v) == 1) r.peak_kib = v;
  }
  return r;
}
// Resets VmHWM to the current RSS (Linux 4.0+); false where it cannot.
bool ResetPeakRss() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.flush();
  return static_cast<bool>(out);
}

// The run's step rule as the coordinator sent it (unset: plain SGD), with
// the ranges the coordinator's config allows.
absl::StatusOr<StepRule> StepRuleFromProto(const v1::RunSpec& run) {
  if (!run.has_step_rule()) return StepRule();
  absl::StatusOr<StepRule> rule = FromProto(run.step_rule());
  if (!rule.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the coordinator's ", rule.status().message()));
  }
  return rule;
}

}  // namespace

ClientDaemon::ClientDaemon(DaemonOptions options)
    : options_(std::move(options)), join_key_(NewToken()) {}

ClientDaemon::~ClientDaemon() = default;

void ClientDaemon::Log(const std::string& line, LogFields fields,
                       LogLevel level) {
  Logger& logger = Logger::Global();
  if (!logger.Enabled(level)) return;
  const uint32_t id = client_id_.load();
  LogRecord r;
  r.level = level;
  r.component = "client";
  r.msg = line;
  r.human_prefix = absl::StrCat("[client ", id, "] ");
  r.fields.reserve(fields.size() + 2);
  r.fields.push_back({"client_id", id});
  if (!options_.name.empty()) r.fields.push_back({"name", options_.name});
  for (LogField& f : fields) r.fields.push_back(std::move(f));
  r.stream = LogStream::kStdout;
  logger.Write(r);
}

void ClientDaemon::SleepUnlessStopped(absl::Duration d) {
  const absl::Time end = absl::Now() + d;
  while (!stop_) {
    const absl::Duration left = end - absl::Now();
    if (left <= absl::ZeroDuration()) return;
    absl::SleepFor(std::min(left, absl::Milliseconds(100)));
  }
}

void ClientDaemon::TouchHealthFile() {
  if (options_.health_file.empty()) return;
  const int64_t now = absl::ToUnixSeconds(absl::Now());
  std::lock_guard<std::mutex> lock(health_mu_);
  if (now == health_written_s_) return;
  // Written beside the file and renamed over it, so a reader never sees a
  // half-written number.
  const std::string tmp = options_.health_file + ".tmp";
  bool ok = false;
  if (FILE* f = std::fopen(tmp.c_str(), "w")) {
    ok = std::fprintf(f, "%lld\n", static_cast<long long>(now)) > 0;
    ok = (std::fclose(f) == 0) && ok;
    ok = ok && std::rename(tmp.c_str(), options_.health_file.c_str()) == 0;
  }
  if (ok) {
    health_written_s_ = now;
    health_error_reported_ = false;
  } else if (!health_error_reported_) {
    health_error_reported_ = true;
    Log(absl::StrCat("cannot write --health-file ", options_.health_file, ": ",
                     std::strerror(errno)),
        {{"event", "health_file_error"}, {"path", options_.health_file}},
        LogLevel::kWarn);
  }
}

void ClientDaemon::ForgetMembership() {
  client_id_ = 0;
  {
    std::lock_guard<std::mutex> lock(session_mu_);
    session_.clear();
  }
  shard_ = -1;
}

absl::Status ClientDaemon::PrepareTrainer(const v1::JoinReply& reply) {
  const v1::RunSpec& run = reply.run();
  // A new run (another id) gets a fresh trainer even on the same data: its
  // model versions start again at 1 and its minibatch order at the start.
  const std::string key = absl::StrCat(
      run.run_id(), "|", run.model(), "|", run.dataset(), "|", run.seed(), "|",
      reply.shard(), "/", run.num_shards(), "|", run.train_limit(), "|",
      run.partition(), "|", run.shards_per_client(), "|", run.partition_alpha(),
      "|", run.data_label(), "|", run.data_features(), "|", run.data_id(), "|",
      run.regression(), "|", run.torchscript().size(), ":",
      std::hash<std::string>{}(run.torchscript()));
  if (trainer_ && key == trainer_key_) return absl::OkStatus();
  if (!run.torchscript().empty() && !options_.allow_torchscript) {
    return absl::FailedPreconditionError(absl::StrCat(
        "run ", run.run_id(), " trains a TorchScript model (",
        run.torchscript().size(),
        " bytes from the coordinator, which libtorch would run on this "
        "machine); this daemon runs only the built-in models unless started "
        "with --allow-torchscript"));
  }
  trainer_.reset();
  trainer_key_.clear();
  TrainerOptions t;
  t.model = run.model();
  t.torchscript = run.torchscript();
  t.torchscript_name = absl::StrCat("from coordinator ", options_.server);
  t.dataset = run.dataset();
  t.file.label = run.data_label();
  t.file.features = run.data_features();
  t.file.id = run.data_id();
  t.file.regression = run.regression();
  t.input_shape.assign(run.data_shape().begin(), run.data_shape().end());
  t.num_classes = run.num_classes();
  t.class_names.assign(run.class_names().begin(), run.class_names().end());
  t.data_dir = options_.data_dir;
  t.seed = run.seed();
  t.shard = reply.shard();
  t.num_shards = run.num_shards();
  t.train_limit = run.train_limit();
  t.partition.type = run.partition().empty() ? "iid" : run.partition();
  t.partition.shards_per_client = run.shards_per_client();
  t.partition.alpha = run.partition_alpha();
  t.device = options_.device;
  ASSIGN_OR_RETURN(trainer_, Trainer::Create(t));
  trainer_key_ = key;
  // Model and data are loaded: training memory counts from here (the peak
  // RSS from now on minus the RSS now; see the run_over log line).
  peak_reset_ = ResetPeakRss();
  rss_at_load_kib_ = ReadRss().now_kib;
  return absl::OkStatus();
}

absl::Status ClientDaemon::JoinWithRetry() {
  v1::JoinRequest req;
  req.set_protocol_version(kProtocolVersion);
  req.set_client_name(options_.name);
  req.set_join_key(join_key_);
  // After a first join keep the shard we were given, unless the coordinator
  // (a new run of another size, or another client holding it now) refuses
  // it: then take what it assigns.
  bool remembered = shard_ >= 0 && options_.shard < 0;
  if (remembered) {
    req.set_shard(shard_);
    req.set_num_shards(run_num_shards_);
  } else {
    req.set_shard(options_.shard);
    req.set_num_shards(options_.shard >= 0 ? options_.num_shards : 0);
  }
  for (const std::string& e : TaskEstimators()) {
    req.mutable_capabilities()->add_estimators(e);
  }
  req.mutable_capabilities()->set_device(options_.device);
  req.set_peer_address(peer_address_);
  req.mutable_capabilities()->set_threads(options_.threads);
  const absl::Time give_up =
      options_.stay ? absl::InfiniteFuture()
                    : absl::Now() + absl::Seconds(options_.unreachable_s);
  Backoff backoff;
  absl::Time held_since = absl::InfinitePast();
  bool reported_over = false;
  bool reported_unreachable = false;
  while (true) {
    if (stop_) return absl::CancelledError("stopped");
    auto reply = coordinator_->Join(req);
    if (reply.ok()) TouchHealthFile();
    if (reply.ok()) {
      if (reply->protocol_version() != kProtocolVersion) {
        return absl::FailedPreconditionError(absl::StrCat(
            "protocol version mismatch: coordinator speaks ",
            reply->protocol_version(), ", client speaks ", kProtocolVersion));
      }
      const v1::RunSpec& run = reply->run();
      // Registered from here on: heartbeats start now, so a shard that
      // takes long to load does not get this client dropped.
      {
        std::lock_guard<std::mutex> lock(session_mu_);
        session_ = reply->session();
      }
      heartbeat_ms_ = std::max<uint32_t>(50, reply->heartbeat_ms());
      client_id_ = reply->client_id();
      if (!run_id_.empty() && run.run_id() != run_id_) {
        Log(absl::StrCat("the coordinator runs a new run ", run.run_id(),
                         " (the last one was ", run_id_, ")"),
            {{"event", "new_run"},
             {"run_id", run.run_id()},
             {"previous_run_id", run_id_}});
      }
      run_id_ = run.run_id();
      run_seed_ = run.seed();
      ASSIGN_OR_RETURN(step_rule_, StepRuleFromProto(run));
      RETURN_IF_ERROR(PrepareTrainer(*reply));
      shard_ = reply->shard();
      run_num_shards_ = run.num_shards();
      Log(absl::StrFormat("joined %s: shard %d of %d (%d examples), model %s, "
                          "device %s",
                          options_.server, shard_, run.num_shards(),
                          trainer_->shard_size(), run.model(),
                          trainer_->device_name()),
          {{"event", "join"},
           {"run_id", run_id_},
           {"shard", shard_},
           {"num_shards", run.num_shards()},
           {"examples", trainer_->shard_size()},
           {"model", run.model()},
           {"device", trainer_->device_name()}});
      return absl::OkStatus();
    }
    if (remembered && (absl::IsInvalidArgument(reply.status()) ||
                       absl::IsAlreadyExists(reply.status()))) {
      Log(absl::StrCat("shard ", shard_, " refused (", reply.status().message(),
                       "); asking for a free one"));
      remembered = false;
      req.set_shard(-1);
      req.set_num_shards(0);
      continue;
    }
    // --stay: a finished run's coordinator answers until it exits; the
    // next one will take us.
    if (options_.stay && IsRunOver(reply.status())) {
      TouchHealthFile();  // it answered: we are connected and waiting
      if (!reported_over) {
        reported_over = true;
        Log("the coordinator's run is over; waiting for the next run",
            {{"event", "waiting_for_run"}});
      }
      SleepUnlessStopped(backoff.Next());
      continue;
    }
    // A shard still held by a live registration is most likely this
    // daemon's previous run (killed and restarted): the coordinator drops
    // it after its client timeout, so wait a bounded while for that.
    bool held = absl::IsAlreadyExists(reply.status());
    if (held) {
      if (held_since == absl::InfinitePast()) {
        held_since = absl::Now();
        Log(absl::StrFormat("%s; waiting up to %.0f s for an earlier "
                            "registration to expire",
                            reply.status().message(),
                            absl::ToDoubleSeconds(kHeldShardWait)),
            {{"event", "shard_held"}, {"shard", options_.shard}});
      }
      held = absl::Now() - held_since < kHeldShardWait;
    }
    if ((!IsRetryable(reply.status()) && !held) || absl::Now() > give_up) {
      return absl::Status(reply.status().code(),
                          absl::StrCat("cannot join ", options_.server, ": ",
                                       reply.status().message()));
    }
    if (!held && !reported_unreachable) {
      reported_unreachable = true;
      Log(absl::StrCat("cannot join ", options_.server, " yet (",
                       reply.status().message(), "); retrying with backoff",
                       options_.stay ? " until it is back (--stay)" : ""),
          {{"event", "join_retry"},
           {"error", std::string(reply.status().message())}},
          options_.stay ? LogLevel::kInfo : LogLevel::kDebug);
    }
    SleepUnlessStopped(std::min(
        backoff.Next(), give_up - absl::Now() + absl::Milliseconds(10)));
  }
}

absl::Status ClientDaemon::Run() {
  ASSIGN_OR_RETURN(coordinator_,
                   CoordinatorClient::Connect(options_.server, options_.tls,
                                              options_.token));
  RETURN_IF_ERROR(StartPeerService());
  // Heartbeats keep us alive on the coordinator while the shard loads and
  // while we compute (none before the first join: client id 0).
  std::mutex hb_mu;
  std::condition_variable hb_cv;
  bool hb_done = false;
  std::thread heartbeat([&] {
    std::unique_lock<std::mutex> lock(hb_mu);
    while (!hb_done) {
      hb_cv.wait_for(lock, std::chrono::milliseconds(heartbeat_ms_.load()));
      if (hb_done) break;
      const uint32_t id = client_id_;
      if (id == 0) continue;
      std::string session;
      {
        std::lock_guard<std::mutex> session_lock(session_mu_);
        session = session_;
      }
      lock.unlock();
      int relayed = 0;
      if (coordinator_->Heartbeat(id, session, &relayed).ok()) {
        TouchHealthFile();
        relayed_pending_ = relayed;
      }
      lock.lock();
    }
  });
  absl::Status status;
  while (true) {
    status = JoinWithRetry();
    if (status.ok()) status = WorkLoop();
    if (!status.ok() || stop_ || !options_.stay) break;
    Log(absl::StrCat("run ", run_id_.empty() ? "?" : run_id_,
                     " finished; waiting for the next run"),
        {{"event", "run_finished"}, {"run_id", run_id_}});
    ForgetMembership();
  }
  {
    std::lock_guard<std::mutex> lock(hb_mu);
    hb_done = true;
  }
  hb_cv.notify_all();
  heartbeat.join();
  if ((!status.ok() || stop_) && client_id_ != 0) {
    coordinator_
        ->Leave(client_id_, session_,
                stop_ ? "stopped by signal" : std::string(status.message()))
        .IgnoreError();
  }
  if (stop_ && status.ok()) return absl::CancelledError("stopped by signal");
  return status;
}

absl::StatusOr<bool> ClientDaemon::SyncModel(const v1::Task& task) {
  const uint64_t have = trainer_->model_version();
  const uint64_t want = task.model_version();
  if (have == want) return true;
  if (task.updates_size() > 0 || task.update_runs_size() > 0) {
    // Seed replay: the terms must start right after our version and end at
    // the task's, in order; then the result must hash to the checksum.
    absl::Status replay = absl::OkStatus();
    std::vector<std::pair<uint64_t, SeedTerm>> seq;  // (version, term)
    if (task.updates_size() > 0 && task.update_runs_size() > 0) {
      replay = absl::InvalidArgumentError(
          "task carries seed updates both as terms and as runs");
    }
    for (const auto& u : task.updates()) {
      if (!replay.ok()) break;
      auto term = FromProto(u);
      if (!term.ok()) {
        replay = term.status();
        break;
      }
      seq.emplace_back(u.version(), *term);
    }
    if (replay.ok()) replay = ExpandSeedRuns(task.update_runs(), &seq);
    uint64_t prev = have;
    for (const auto& entry : seq) {
      const uint64_t version = entry.first;
      if (!replay.ok()) break;
      if (version != prev && version != prev + 1) {
        replay = absl::InvalidArgumentError(absl::StrCat(
            "seed updates jump from version ", prev, " to ", version));
        break;
      }
      prev = version;
    }
    if (replay.ok() &&
        (seq.empty() || seq.front().first != have + 1 || prev != want)) {
      replay = absl::InvalidArgumentError(absl::StrCat(
          "seed updates cover versions ", seq.empty() ? 0 : seq.front().first,
          "..", prev, ", need ", have + 1, "..", want));
    }
    const bool stateful = step_rule_.Stateful();
    if (replay.ok() && stateful &&
        static_cast<uint64_t>(task.replay_lr_size()) != want - have) {
      replay = absl::InvalidArgumentError(absl::StrCat(
          "a replay with the optimizer step needs a learning rate per version: "
          "got ",
          task.replay_lr_size(), " for ", want - have));
    }
    for (int v = 0; replay.ok() && v < task.replay_lr_size(); ++v) {
      if (!std::isfinite(task.replay_lr(v))) {
        replay = absl::InvalidArgumentError(
            absl::StrCat("replay learning rate ", task.replay_lr(v)));
      }
    }
    if (replay.ok()) {
      if (options_.drop_update_version != 0 &&
          options_.drop_update_version > have &&
          options_.drop_update_version <= want) {
        // Test fault: lose the last term of the chosen version.
        for (size_t i = seq.size(); i-- > 0;) {
          if (seq[i].first == options_.drop_update_version) {
            seq.erase(seq.begin() + static_cast<std::ptrdiff_t>(i));
            break;
          }
        }
      }
      // In place: no second model in memory (the client's peak training
      // memory counts). A replay that misses the checksum leaves no valid
      // model, so the version drops to 0 and a snapshot follows.
      std::vector<float>& params = *trainer_->mutable_params();
      const int threads = std::max(1, options_.threads);
      if (!stateful) {
        std::vector<SeedTerm> terms;
        terms.reserve(seq.size());
        for (const auto& entry : seq) terms.push_back(entry.second);
        ApplySeedTerms(terms, trainer_->tangent_layout(), params.data(),
                       threads);
      } else {
        // The coordinator's optimizer step, version by version, on this
        // client's copy of the state (common/step_rule.h).
        SeedStep step;
        size_t i = 0;
        for (uint64_t v = have + 1; v <= want; ++v) {
          step.terms.clear();
          step.lr = task.replay_lr(static_cast<int>(v - have - 1));
          while (i < seq.size() && seq[i].first == v) {
            step.terms.push_back(seq[i++].second);
          }
          if (step.terms.empty()) continue;  // the coordinator's no-op too
          ApplySeedStep(step, step_rule_, trainer_->tangent_layout(),
                        &step_state_, params.data(), &step_scratch_, threads);
        }
      }
      const bool model_ok =
          Checksum(params.data(), params.size() * sizeof(float)) ==
          task.model_checksum();
      const bool state_ok =
          !stateful ||
          Checksum(step_state_.data(), step_state_.size() * sizeof(float)) ==
              task.step_state_checksum();
      if (model_ok && state_ok) {
        trainer_->ParamsChanged(want);
        return true;
      }
      trainer_->ParamsChanged(0);
      replay = absl::DataLossError(absl::StrCat(
          "replayed ", model_ok ? "optimizer state" : "model", " of version ",
          want, " does not match the coordinator's checksum"));
    }
    Log(absl::StrCat("seed replay failed (", replay.message(),
                     "); fetching a snapshot"),
        {{"event", "replay_failed"},
         {"version", static_cast<int64_t>(want)},
         {"error", std::string(replay.message())}},
        LogLevel::kWarn);
  }
  if (have == 0) {
    // A client without a model regenerates the run's initial model from its
    // seed (the same counter-based generator as the coordinator's); when it
    // hashes to the task's checksum no snapshot needs to come down.
    std::vector<float> initial = trainer_->InitialModel(run_seed_);
    // The optimizer state starts at zeros (replay with momentum or Adam).
    std::vector<float> state(
        static_cast<size_t>(step_rule_.StateSize(trainer_->num_params())),
        0.0f);
    if (Checksum(initial.data(), initial.size() * sizeof(float)) ==
            task.model_checksum() &&
        (!step_rule_.Stateful() ||
         Checksum(state.data(), state.size() * sizeof(float)) ==
             task.step_state_checksum())) {
      RETURN_IF_ERROR(trainer_->SetModel(std::move(initial), want));
      step_state_ = std::move(state);
      return true;
    }
  }
  std::vector<float> params;
  uint64_t checksum = 0;
  absl::Status fetched = coordinator_->FetchModel(
      client_id_, session_, want, trainer_->num_params(), &params, &checksum);
  if (fetched.ok() && checksum != task.model_checksum()) {
    fetched = absl::DataLossError("snapshot checksum differs from task's");
  }
  std::vector<float> state;
  if (fetched.ok() && step_rule_.Stateful()) {
    // The optimizer state that goes with the model, for the replays that
    // follow.
    uint64_t state_checksum = 0;
    fetched =
        coordinator_->FetchModel(client_id_, session_, want,
                                 step_rule_.StateSize(trainer_->num_params()),
                                 &state, &state_checksum, /*step_state=*/true);
    if (fetched.ok() && state_checksum != task.step_state_checksum()) {
      fetched =
          absl::DataLossError("optimizer state checksum differs from task's");
    }
  }
  if (!fetched.ok()) {
    // The round moved on, or the transfer broke: ask again.
    Log(absl::StrCat("model fetch failed: ", fetched.message()),
        {{"event", "fetch_failed"}, {"error", std::string(fetched.message())}},
        LogLevel::kWarn);
    return false;
  }
  TouchHealthFile();
  RETURN_IF_ERROR(trainer_->SetModel(std::move(params), want));
  step_state_ = std::move(state);
  return true;
}

absl::Status ClientDaemon::WorkLoop() {
  absl::Time last_contact = absl::Now();
  absl::Time last_log = absl::Now();
  Backoff backoff;
  bool reported_outage = false;
  int64_t rounds_done = 0;
  double compute_ms = 0;
  while (!stop_) {
    auto task = coordinator_->GetTask(client_id_, session_, absl::Seconds(2),
                                      trainer_ ? trainer_->model_version() : 0);
    if (!task.ok()) {
      if (NeedsRejoin(task.status())) {
        Log(absl::StrCat("coordinator says: ", task.status().message()),
            {{"event", "rejoin"},
             {"error", std::string(task.status().message())}});
        RETURN_IF_ERROR(JoinWithRetry());
        last_contact = absl::Now();
        continue;
      }
      if (IsRetryable(task.status()) &&
          (options_.stay || absl::Now() - last_contact <
                                absl::Seconds(options_.unreachable_s))) {
        if (!reported_outage) {
          reported_outage = true;
          Log(options_.stay
                  ? absl::StrFormat("coordinator unreachable (%s); retrying "
                                    "with backoff until it is back (--stay)",
                                    task.status().message())
                  : absl::StrFormat("coordinator unreachable (%s); retrying "
                                    "with backoff for up to %.0f s",
                                    task.status().message(),
                                    options_.unreachable_s),
              {{"event", "unreachable"},
               {"error", std::string(task.status().message())}},
              LogLevel::kWarn);
        }
        SleepUnlessStopped(backoff.Next());
        continue;
      }
      return absl::Status(
          task.status().code(),
          absl::StrCat("lost the coordinator: ", task.status().message()));
    }
    last_contact = absl::Now();
    TouchHealthFile();
    backoff.Reset();
    if (reported_outage) {
      reported_outage = false;
      Log("coordinator reachable again", {{"event", "reachable"}});
    }
    if (task->kind() == v1::Task::STOP) {
      // Peak training memory: the peak RSS since model and data were
      // loaded minus the RSS then (-1 where /proc cannot say).
      const Rss rss = ReadRss();
      const int64_t training_kib =
          peak_reset_ && rss.peak_kib >= 0 && rss_at_load_kib_ >= 0
              ? rss.peak_kib - rss_at_load_kib_
              : -1;
      Log(absl::StrFormat("run over (%s) after %d tasks; training memory %d "
                          "KiB (peak RSS %d KiB, %d KiB once model and data "
                          "were loaded)",
                          task->message(), rounds_done, training_kib,
                          rss.peak_kib, rss_at_load_kib_),
          {{"event", "run_over"},
           {"run_id", run_id_},
           {"reason", task->message()},
           {"tasks", rounds_done},
           {"training_memory_kib", training_kib},
           {"peak_rss_kib", rss.peak_kib},
           {"rss_at_load_kib", rss_at_load_kib_}});
      coordinator_->Leave(client_id_, session_, "run over").IgnoreError();
      return absl::OkStatus();
    }
    if (task->kind() == v1::Task::PEER) {
      absl::Status s = RunPeerTask(*task);
      if (!s.ok()) return s;
      continue;
    }
    if (task->kind() != v1::Task::COMPUTE) continue;

    ASSIGN_OR_RETURN(bool synced, SyncModel(*task));
    if (!synced) continue;
    LocalTask local;
    local.round = task->round();
    local.estimator = task->estimator();
    local.batch_size = task->batch_size();
    local.local_epochs = task->local_epochs();
    local.lr = task->lr();
    local.momentum = task->momentum();
    local.weight_decay = task->weight_decay();
    if (task->estimator() == "fd") {
      local.fd_epsilon = task->fd_epsilon();
      local.fd_fixed_point = task->fd_fixed_point();
    }
    if ((task->tangent_run_count() > 0) + (task->tangents_size() > 0) +
            (task->tangent_runs_size() > 0) >
        1) {
      return absl::InvalidArgumentError(
          "task carries tangents in more than one form (keys, a run, runs)");
    }
    if (task->tangent_runs_size() > 0) {
      ASSIGN_OR_RETURN(local.tangents, ExpandKeyRuns(task->tangent_runs()));
    }
    for (const auto& k : task->tangents()) {
      ASSIGN_OR_RETURN(TangentKey key, FromProto(k));
      local.tangents.push_back(key);
    }
    if (task->tangent_run_count() > 0) {
      ASSIGN_OR_RETURN(local.tangents, ExpandKeyRun(task->tangent_run_first(),
                                                    task->tangent_run_count()));
    }
    ASSIGN_OR_RETURN(LocalResult r, trainer_->Run(local));
    if (task->dp_clip() > 0) {
      if (!std::isfinite(task->dp_clip()) ||
          !(task->dp_noise_multiplier() >= 0) ||
          !std::isfinite(task->dp_noise_multiplier())) {
        return absl::InvalidArgumentError(absl::StrCat(
            "task asks for privacy with clip ", task->dp_clip(),
            " and noise multiplier ", task->dp_noise_multiplier()));
      }
      for (double& d : r.jvps) {
        ASSIGN_OR_RETURN(
            d, PrivatizeJvp(d, task->dp_clip(), task->dp_noise_multiplier(),
                            dp_noise_));
      }
    }
    if (options_.adversary_scale != 1.0) {
      for (double& d : r.jvps) d *= options_.adversary_scale;
      for (float& u : r.update) {
        u = static_cast<float>(u * options_.adversary_scale);
      }
    }
    v1::TaskResult result;
    result.set_client_id(client_id_);
    result.set_session(session_);
    result.set_round(task->round());
    result.set_model_version(task->model_version());
    if (task->jvp_bits() == 8 && !r.jvps.empty()) {
      if (!std::isfinite(task->jvp_clip()) || !(task->jvp_clip() > 0)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "task asks for int8 values with clip ", task->jvp_clip()));
      }
      float scale = 0;
      result.set_jvp8(EncodeJvp8(r.jvps, task->jvp_clip(), run_seed_,
                                 client_id_, task->round(), &scale));
      result.set_jvp8_scale(scale);
    } else {
      for (double d : r.jvps) result.add_jvp32(static_cast<float>(d));
    }
    result.set_num_samples(r.num_samples);
    result.set_loss(r.loss);
    result.set_compute_ms(r.compute_ms);
    absl::Status submitted;
    if (r.update.empty()) {
      submitted = coordinator_->Submit(result);
    } else {
      const std::string compression =
          task->compression().empty() ? "none" : task->compression();
      ASSIGN_OR_RETURN(UpdateEncoding encoding,
                       ParseUpdateEncoding(compression));
      ASSIGN_OR_RETURN(
          std::string bytes,
          EncodeUpdate(r.update.data(), trainer_->param_sizes(), encoding));
      submitted = coordinator_->SubmitUpdate(result, compression, bytes);
    }
    if (!submitted.ok()) {
      Log(absl::StrCat("result for round ", task->round(),
                       " refused: ", submitted.message()),
          {{"event", "result_refused"},
           {"round", task->round()},
           {"error", std::string(submitted.message())}},
          LogLevel::kWarn);
      if (NeedsRejoin(submitted)) RETURN_IF_ERROR(JoinWithRetry());
      continue;
    }
    TouchHealthFile();
    ++rounds_done;
    compute_ms += r.compute_ms;
    const bool progress_due = absl::Now() - last_log > absl::Seconds(30);
    if (progress_due) last_log = absl::Now();
    Log(absl::StrFormat("round %d: loss %.4f, %.2f ms per task on average",
                        task->round(), r.loss, compute_ms / rounds_done),
        {{"event", "task_done"},
         {"round", task->round()},
         {"loss", r.loss},
         {"compute_ms", r.compute_ms},
         {"mean_compute_ms", compute_ms / rounds_done}},
        progress_due ? LogLevel::kInfo : LogLevel::kDebug);
  }
  return absl::OkStatus();
}

absl::Status ClientDaemon::StartPeerService() {
  if (options_.peer_listen.empty()) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> creds,
                   MakeServerCredentials(options_.peer_tls));
  peer_service_ = std::make_unique<PeerService>(&mailbox_);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(options_.peer_listen, creds, &port);
  builder.RegisterService(peer_service_.get());
  builder.SetMaxReceiveMessageSize(4 << 20);
  peer_server_ = builder.BuildAndStart();
  if (!peer_server_ || port == 0) {
    return absl::UnavailableError(absl::StrCat(
        "cannot serve the peer service on ", options_.peer_listen));
  }
  // Without --peer-advertise peers dial the listening host, or this
  // machine's host name when it listens on every address (0.0.0.0, [::]):
  // the name a container has on its compose network.
  std::string listen_host =
      options_.peer_listen.substr(0, options_.peer_listen.rfind(':'));
  if (listen_host.empty() || listen_host == "0.0.0.0" ||
      listen_host == "[::]" || listen_host == "::") {
    listen_host = HostName();
  }
  peer_address_ = options_.peer_advertise.empty()
                      ? absl::StrCat(listen_host, ":", port)
                      : options_.peer_advertise;
  peer_sender_ = std::make_unique<PeerSender>(options_.tls);
  Log(absl::StrCat(
          "peer service listening on ",
          options_.peer_listen.substr(0, options_.peer_listen.rfind(':')), ":",
          port, " (advertised as ", peer_address_, ")"),
      {{"event", "peer_listening"}, {"peer_address", peer_address_}});
  return absl::OkStatus();
}

absl::Status ClientDaemon::RunPeerTask(const v1::Task& task) {
  if (!peer_server_) {
    return absl::FailedPreconditionError(
        "the coordinator asks for a decentralized worker, but this daemon "
        "serves no peer service (--peer-listen)");
  }
  PeerWorkerEnv env;
  env.coordinator = coordinator_.get();
  env.sender = peer_sender_.get();
  env.mailbox = &mailbox_;
  env.trainer = trainer_.get();
  env.client_id = client_id_;
  {
    std::lock_guard<std::mutex> lock(session_mu_);
    env.session = session_;
  }
  env.run_id = run_id_;
  env.seed = run_seed_;
  env.stop = &stop_;
  env.relayed_pending = &relayed_pending_;
  env.log = [this](const std::string& line, LogFields fields, LogLevel level) {
    Log(line, std::move(fields), level);
  };
  const absl::Time start = absl::Now();
  absl::Status s = RunPeerWorker(task, env);
  if (absl::IsCancelled(s) && stop_) return absl::OkStatus();
  if (!s.ok()) return s;
  Log(absl::StrFormat("decentralized worker finished %d local steps in %.1f s",
                      task.peer().steps(),
                      absl::ToDoubleSeconds(absl::Now() - start)),
      {{"event", "peer_done"}, {"steps", task.peer().steps()}});
  return absl::OkStatus();
}

}  // namespace fedfwd
