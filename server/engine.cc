#include "server/engine.h"

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
