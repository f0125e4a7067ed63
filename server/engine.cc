#include "server/engine.h"

#include <algorithm>
#include <random>

#include "absl/strings/str_format.h"

namespace fedfwd {

std::string NewSession() {
  std::random_device rd;
  return absl::StrFormat("%08x%08x%08x%08x", rd(), rd(), rd(), rd());
}

std::string NewRunId(const Config& config) {
  std::random_device rd;
  return absl::StrFormat("%s-%s-s%d-%d-%04x", config.model, config.dataset.name,
                         config.seed, absl::ToUnixSeconds(absl::Now()),
                         rd() & 0xffff);
}

absl::Status CheckJoinRequest(const JoinParams& p, int clients) {
  if (p.protocol_version != kProtocolVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "protocol version mismatch: client speaks ", p.protocol_version,
        ", coordinator speaks ", kProtocolVersion));
  }
  if (p.shard >= 0 && p.num_shards != clients) {
    return absl::InvalidArgumentError(
        absl::StrCat("client asks for shard ", p.shard, " of ", p.num_shards,
                     " but this run has ", clients, " shards"));
  }
  if (p.shard >= clients || p.shard < -1) {
    return absl::InvalidArgumentError(
        absl::StrCat("shard ", p.shard, " out of range [0, ", clients, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<int> AssignShard(const std::vector<bool>& taken, int requested) {
  if (requested >= 0) {
    if (taken[static_cast<size_t>(requested)]) {
      return absl::AlreadyExistsError(absl::StrCat(
          "shard ", requested, " is already held by a live client"));
    }
    return requested;
  }
  auto it = std::find(taken.begin(), taken.end(), false);
  if (it == taken.end()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "all ", taken.size(), " shards are taken by live clients"));
  }
  return static_cast<int>(it - taken.begin());
}

void LogRepeatedJoin(const char* kind, uint32_t id, const std::string& name,
                     int shard) {
  LogCoordinatorEvent(
      absl::StrFormat("%s %u joined again (%s), shard %d: the reply to its "
                      "first join was lost",
                      kind, id, name, shard),
      {{"event", "join_repeat"},
       {"client_id", id},
       {"name", name},
       {"shard", shard}},
      LogLevel::kInfo);
}

void LogCoordinatorEvent(const std::string& line, LogFields fields,
                         LogLevel level) {
  Logger& logger = Logger::Global();
  if (!logger.Enabled(level)) return;
  LogRecord r;
  r.level = level;
  r.component = "coordinator";
  r.msg = line;
  r.fields = std::move(fields);
  r.stream = LogStream::kStdout;
  logger.Write(r);
}

namespace {

absl::Status NotDecentralized() {
  return absl::FailedPreconditionError(
      "this run is federated; peer calls belong to decentralized runs "
      "(algorithm: easgd, gosgd or sgp)");
}

}  // namespace

absl::StatusOr<std::vector<v1::PeerInfo>> CoordinatorEngine::ReportModel(
    const std::string&, const ClientResult&, int64_t) {
  return NotDecentralized();
}

absl::Status CoordinatorEngine::Relay(uint32_t, const std::string&, uint32_t,
                                      PeerMessage) {
  return NotDecentralized();
}

absl::StatusOr<std::vector<PeerMessage>> CoordinatorEngine::TakeRelayed(
    uint32_t, const std::string&) {
  return NotDecentralized();
}

}  // namespace fedfwd
