#include "client/peer_worker.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/codec.h"
#include "common/gossip.h"
#include "common/status_macros.h"

namespace fedfwd {
namespace {

constexpr absl::Duration kPushDeadline = absl::Seconds(10);
// How long a synchronous EASGD worker keeps asking for the center of its
// exchange (each ask waits up to the coordinator's round timeout).
constexpr absl::Duration kCenterPatience = absl::Minutes(30);
// Tries of a report that failed for a transient reason.
constexpr int kReportTries = 5;

class Worker {
 public:
  Worker(const v1::Task& task, const PeerWorkerEnv& env)
      : task_(task),
        p_(task.peer()),
        env_(env),
        rng_(env.seed ^
             (0x9E3779B97F4A7C15ull * static_cast<uint64_t>(p_.index() + 1))) {
    sgd_.lr = task.lr();
    sgd_.momentum = task.momentum();
    sgd_.nesterov = p_.nesterov();
    sgd_.weight_decay = p_.weight_decay();
    for (const v1::PeerInfo& peer : p_.peers()) peers_[peer.client_id()] = peer;
  }

  absl::Status Run();

 private:
  void Log(const std::string& line, LogFields fields = {},
           LogLevel level = LogLevel::kInfo) const {
    if (env_.log) env_.log(line, std::move(fields), level);
  }
  absl::Status Validate() const;
  // Everything queued for this worker: relayed messages (when the
  // coordinator says some wait, and always before the last step, so that
  // what waits is absorbed before the final report) and the mailbox.
  std::vector<PeerMessage> Incoming(bool last_step);
  void Absorb(std::vector<PeerMessage> messages);
  // Sends `m` to worker `to`: directly, else through the relay. False when
  // neither took it (the caller absorbs it back).
  bool Send(const PeerMessage& m, uint32_t to);
  absl::Status Exchange(int64_t step);
  absl::Status Report(int64_t step, double loss);
  // The coordinator ended the run before this worker's last step.
  absl::Status RunOver(int64_t step) const {
    Log(absl::StrFormat("the coordinator ended the run at local step %d of %d",
                        step, p_.steps()),
        {{"event", "peer_run_over"}, {"step", step}}, LogLevel::kWarn);
    return absl::OkStatus();
  }
  // The parameters to evaluate: x, or z = x / w for sgp.
  std::vector<float> Model() const;

  const v1::Task& task_;
  const v1::PeerTask& p_;
  const PeerWorkerEnv& env_;
  SgdOptions sgd_;
  std::mt19937_64 rng_;
  std::map<uint32_t, v1::PeerInfo> peers_;  // still training, self included
  std::vector<float> x_;                    // easgd
  std::unique_ptr<GoSgdState> gosgd_;
  std::unique_ptr<PushSumState> sgp_;
  int64_t peer_bytes_ = 0;
  uint64_t noise_counter_ = 0;
  int64_t sent_ = 0, relayed_ = 0, reclaimed_ = 0, absorbed_ = 0;
};

absl::Status Worker::Validate() const {
  const std::string& a = p_.algorithm();
  if (a != "easgd" && a != "gosgd" && a != "sgp") {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown decentralized algorithm '", a, "'"));
  }
  if (p_.steps() < 1 || p_.report_every() < 1 || p_.workers() < 1 ||
      p_.index() < 0 || p_.index() >= p_.workers() || task_.batch_size() < 1 ||
      !(task_.lr() > 0) || !std::isfinite(task_.lr()) ||
      !(task_.momentum() >= 0 && task_.momentum() < 1) ||
      !(p_.weight_decay() >= 0) || !std::isfinite(p_.weight_decay()) ||
      !(p_.noise_std() >= 0) || !std::isfinite(p_.noise_std())) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "bad peer task: steps %d, report_every %d, worker %d of %d, batch %d, "
        "lr %g, momentum %g, weight_decay %g, noise_std %g",
        p_.steps(), p_.report_every(), p_.index(), p_.workers(),
        task_.batch_size(), task_.lr(), task_.momentum(), p_.weight_decay(),
        p_.noise_std()));
  }
  if (a == "easgd" && (p_.tau() < 1 || !(p_.alpha() > 0 && p_.alpha() < 1))) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "bad easgd task: tau %d, alpha %g", p_.tau(), p_.alpha()));
  }
  if (a == "gosgd" &&
      !(p_.push_probability() >= 0 && p_.push_probability() <= 1)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "bad gosgd task: push probability %g", p_.push_probability()));
  }
  if (a == "sgp") RETURN_IF_ERROR(ParseSgpTopology(p_.topology()).status());
  return absl::OkStatus();
}

std::vector<PeerMessage> Worker::Incoming(bool last_step) {
  std::vector<PeerMessage> in;
  if (last_step ||
      (env_.relayed_pending != nullptr && env_.relayed_pending->load() > 0)) {
    if (env_.relayed_pending != nullptr) env_.relayed_pending->store(0);
    auto relayed = env_.coordinator->FetchRelayed(env_.client_id, env_.session,
                                                  env_.trainer->num_params());
    if (relayed.ok()) {
      for (PeerMessage& m : *relayed) in.push_back(std::move(m));
    } else {
      Log(absl::StrCat("fetching relayed messages failed: ",
                       relayed.status().message()),
          {{"event", "relay_fetch_failed"}}, LogLevel::kWarn);
    }
  }
  for (PeerMessage& m : env_.mailbox->Drain()) in.push_back(std::move(m));
  return in;
}

void Worker::Absorb(std::vector<PeerMessage> messages) {
  for (PeerMessage& m : messages) {
    absl::Status s = gosgd_ ? gosgd_->Absorb(m) : sgp_->Absorb(m);
    if (!s.ok()) {
      Log(absl::StrCat("dropped a message from worker ", m.from, ": ",
                       s.message()),
          {{"event", "bad_peer_message"}, {"from", m.from}}, LogLevel::kWarn);
      continue;
    }
    ++absorbed_;
  }
}

bool Worker::Send(const PeerMessage& m, uint32_t to) {
  auto peer = peers_.find(to);
  if (peer == peers_.end()) return false;
  const PeerMessage* wire = &m;
  PeerMessage noisy;
  if (p_.noise_std() > 0) {
    noisy = m;
    AddGaussianNoise(&noisy.values, p_.noise_std(), env_.seed,
                     static_cast<uint32_t>(p_.index()), noise_counter_++);
    wire = &noisy;
  }
  std::vector<v1::PeerChunk> chunks =
      PeerMessageChunks(*wire, env_.run_id, env_.client_id, to);
  int64_t bytes = 0;
  absl::Status direct = env_.sender->Push(peer->second.address(), p_.token(),
                                          chunks, kPushDeadline, &bytes);
  peer_bytes_ += bytes;
  if (direct.ok()) {
    ++sent_;
    return true;
  }
  chunks.front().set_session(env_.session);
  absl::Status relay = env_.coordinator->RelayPush(chunks);
  for (const auto& c : chunks) {
    peer_bytes_ += static_cast<int64_t>(c.ByteSizeLong());
  }
  if (relay.ok()) {
    ++relayed_;
    return true;
  }
  if (absl::IsFailedPrecondition(relay)) {
    Log(absl::StrFormat("worker %u is gone (%s); no more pushes to it", to,
                        relay.message()),
        {{"event", "peer_gone"}, {"peer", to}});
    peers_.erase(to);
  } else {
    Log(absl::StrFormat("push to worker %u failed (%s), relay too (%s); "
                        "keeping its share",
                        to, direct.message(), relay.message()),
        {{"event", "push_failed"}, {"peer", to}}, LogLevel::kDebug);
  }
  ++reclaimed_;
  return false;
}

absl::Status Worker::Exchange(int64_t step) {
  const int64_t exchange = step / p_.tau();
  const uint64_t want = p_.synchronous() ? static_cast<uint64_t>(exchange) : 0;
  std::vector<float> center;
  uint64_t checksum = 0;
  const absl::Time give_up = absl::Now() + kCenterPatience;
  while (true) {
    if (env_.stop->load()) return absl::CancelledError("stopped");
    absl::Status s = env_.coordinator->FetchModel(
        env_.client_id, env_.session, want, env_.trainer->num_params(), &center,
        &checksum);
    if (s.ok()) break;
    if (!IsRetryable(s) || absl::Now() > give_up) {
      return absl::Status(s.code(), absl::StrCat("reading the center for "
                                                 "exchange ",
                                                 exchange, ": ", s.message()));
    }
  }
  ASSIGN_OR_RETURN(std::vector<float> diff,
                   ElasticExchange(&x_, center, p_.alpha()));
  if (p_.noise_std() > 0) {
    AddGaussianNoise(&diff, p_.noise_std(), env_.seed,
                     static_cast<uint32_t>(p_.index()), noise_counter_++);
  }
  v1::TaskResult result;
  result.set_client_id(env_.client_id);
  result.set_session(env_.session);
  result.set_round(exchange);
  result.set_model_version(want);
  const std::string bytes(reinterpret_cast<const char*>(diff.data()),
                          diff.size() * sizeof(float));
  // (The coordinator counts these bytes: they are not peer traffic.)
  absl::Status sent = env_.coordinator->SubmitUpdate(result, "none", bytes);
  if (!sent.ok()) {
    return absl::Status(
        sent.code(), absl::StrCat("elastic difference of exchange ", exchange,
                                  " refused: ", sent.message()));
  }
  return absl::OkStatus();
}

std::vector<float> Worker::Model() const {
  if (sgp_) return sgp_->Debiased();
  if (gosgd_) return gosgd_->x();
  return x_;
}

absl::Status Worker::Report(int64_t step, double loss) {
  v1::TaskResult result;
  result.set_client_id(env_.client_id);
  result.set_session(env_.session);
  result.set_round(step);
  result.set_loss(loss);
  result.set_peer_bytes(peer_bytes_);
  const std::vector<float> model = Model();
  absl::Status last;
  for (int attempt = 0; attempt < kReportTries; ++attempt) {
    auto reply = env_.coordinator->ReportModel(result, model);
    if (reply.ok()) {
      std::map<uint32_t, v1::PeerInfo> live;
      for (const v1::PeerInfo& p : reply->peers()) live[p.client_id()] = p;
      for (const auto& [id, p] : peers_) {
        if (live.count(id) == 0 && id != env_.client_id) {
          Log(absl::StrFormat("worker %u no longer trains; no more pushes "
                              "to it",
                              id),
              {{"event", "peer_gone"}, {"peer", id}}, LogLevel::kDebug);
        }
      }
      peers_ = std::move(live);
      if (env_.relayed_pending != nullptr && reply->relayed() > 0) {
        env_.relayed_pending->store(reply->relayed());
      }
      return absl::OkStatus();
    }
    last = reply.status();
    if (!IsRetryable(last)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200 << attempt));
  }
  return absl::Status(last.code(), absl::StrCat("report of step ", step,
                                                " refused: ", last.message()));
}

absl::Status Worker::Run() {
  RETURN_IF_ERROR(Validate());
  std::vector<float> initial = env_.trainer->InitialModel(env_.seed);
  if (task_.model_checksum() != 0 &&
      MakeSnapshot(initial, 1).checksum != task_.model_checksum()) {
    return absl::FailedPreconditionError(
        "this worker's initial model differs from the coordinator's (another "
        "fedfwd version?)");
  }
  const std::string& algo = p_.algorithm();
  if (algo == "gosgd") {
    gosgd_ =
        std::make_unique<GoSgdState>(std::move(initial), 1.0 / p_.workers());
  } else if (algo == "sgp") {
    sgp_ = std::make_unique<PushSumState>(std::move(initial), 1.0);
  } else {
    x_ = std::move(initial);
  }
  SgpTopology topology = SgpTopology::kExponential;
  if (sgp_) topology = *ParseSgpTopology(p_.topology());
  std::map<int, uint32_t> id_of_index;
  for (const auto& [id, p] : peers_) id_of_index[p.index()] = id;
  env_.trainer->ResetSgdState();
  Log(absl::StrFormat("decentralized worker %d of %d: %s, %d local steps, %d "
                      "peers",
                      p_.index(), p_.workers(), algo, p_.steps(),
                      static_cast<int>(peers_.size()) - 1),
      {{"event", "peer_start"},
       {"algorithm", algo},
       {"index", p_.index()},
       {"steps", p_.steps()}});
  std::uniform_real_distribution<double> coin(0.0, 1.0);
  double loss_sum = 0;
  int64_t loss_count = 0;
  std::vector<float> z, z0;
  for (int64_t step = 1; step <= p_.steps(); ++step) {
    if (env_.stop->load()) return absl::CancelledError("stopped");
    if (gosgd_ || sgp_) Absorb(Incoming(step == p_.steps()));
    double loss = 0;
    if (sgp_) {
      sgp_->Debiased(&z);
      z0 = z;
      ASSIGN_OR_RETURN(loss,
                       env_.trainer->SgdStep(&z, sgd_, task_.batch_size()));
      // x -= lr * w * g(z): the de-biased model z = x / w takes the step
      // lr * g whatever w is. (The paper's x -= lr * g(z) is the same for
      // w = 1, where synchronous SGP on a regular graph keeps w; here the
      // weights wander with the asynchrony, and a starved worker's small w
      // would otherwise multiply its step by 1 / w.)
      const double w = sgp_->weight();
      std::vector<float>& x = *sgp_->mutable_x();
      for (size_t i = 0; i < x.size(); ++i) {
        x[i] =
            static_cast<float>(x[i] + w * (static_cast<double>(z[i]) - z0[i]));
      }
    } else {
      std::vector<float>* x = gosgd_ ? gosgd_->mutable_x() : &x_;
      ASSIGN_OR_RETURN(loss,
                       env_.trainer->SgdStep(x, sgd_, task_.batch_size()));
    }
    loss_sum += loss;
    ++loss_count;

    if (!gosgd_ && !sgp_) {
      if (step % p_.tau() == 0) {
        absl::Status s = Exchange(step);
        if (IsRunOver(s)) return RunOver(step);
        RETURN_IF_ERROR(s);
      }
    } else if (gosgd_) {
      if (coin(rng_) < p_.push_probability()) {
        std::vector<uint32_t> others;
        for (const auto& [id, p] : peers_) {
          if (id != env_.client_id) others.push_back(id);
        }
        if (!others.empty()) {
          const uint32_t to = others[std::uniform_int_distribution<size_t>(
              0, others.size() - 1)(rng_)];
          PeerMessage m = gosgd_->MakePush(env_.client_id, step);
          if (!Send(m, to)) gosgd_->Absorb(m).IgnoreError();
        }
      }
    } else {
      std::vector<std::pair<uint32_t, double>> shares;
      for (const auto& [dest, frac] :
           SgpOutShares(topology, p_.workers(), p_.index(), step, env_.seed,
                        p_.degree())) {
        auto it = id_of_index.find(static_cast<int>(dest));
        if (it != id_of_index.end() && peers_.count(it->second) > 0) {
          shares.emplace_back(it->second, frac);
        }
      }
      if (!shares.empty()) {
        ASSIGN_OR_RETURN(auto messages,
                         sgp_->Split(shares, env_.client_id, step));
        for (auto& [to, m] : messages) {
          if (!Send(m, to)) sgp_->Absorb(m).IgnoreError();
        }
      }
    }

    if (step % p_.report_every() == 0 || step == p_.steps()) {
      const double mean_loss = loss_sum / std::max<int64_t>(1, loss_count);
      absl::Status reported = Report(step, mean_loss);
      if (IsRunOver(reported)) return RunOver(step);
      RETURN_IF_ERROR(reported);
      Log(absl::StrFormat("step %d/%d: loss %.4f, %d pushes (%d relayed, %d "
                          "kept back), %d absorbed",
                          step, p_.steps(), mean_loss, sent_ + relayed_,
                          relayed_, reclaimed_, absorbed_),
          {{"event", "peer_progress"},
           {"step", step},
           {"loss", mean_loss},
           {"sent", sent_},
           {"relayed", relayed_},
           {"reclaimed", reclaimed_},
           {"absorbed", absorbed_}},
          LogLevel::kDebug);
      loss_sum = 0;
      loss_count = 0;
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RunPeerWorker(const v1::Task& task, const PeerWorkerEnv& env) {
  env.mailbox->Open(env.run_id, task.peer().token(), env.trainer->num_params());
  Worker worker(task, env);
  absl::Status s = worker.Run();
  env.mailbox->Close();
  return s;
}

}  // namespace fedfwd
