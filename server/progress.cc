#include "server/progress.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/log.h"

namespace fedfwd {

std::string FormatDuration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const int64_t t = static_cast<int64_t>(s);
  return absl::StrFormat("%d:%02d:%02d", t / 3600, (t / 60) % 60, t % 60);
}

std::string FormatProgressLine(const RoundProgress& p) {
  return absl::StrFormat(
      "round %d/%d  loss %.4f  %s %s  clients %d  %.1f rounds/s  "
      "elapsed %s  eta %s  up %s  down %s",
      p.round, p.rounds, p.loss, p.regression ? "test_r2" : "test_acc",
      p.test_acc ? absl::StrFormat("%.4f", *p.test_acc) : "-", p.clients,
      p.rounds_per_s, FormatDuration(p.wall_s), FormatDuration(p.eta_s),
      HumanBytes(p.bytes_up), HumanBytes(p.bytes_down));
}

std::string FormatLiveProgress(const RoundProgress& p) {
  const char* name = p.regression ? "r2" : "acc";
  std::string acc = absl::StrCat(name, " -");
  if (p.last_test_acc >= 0 || (p.regression && p.last_test_round >= 0)) {
    acc = p.last_test_round >= 0
              ? absl::StrFormat("%s %.4f @%d", name, p.last_test_acc,
                                p.last_test_round)
              : absl::StrFormat("%s %.4f", name, p.last_test_acc);
  }
  // The most wanted first: a narrow terminal cuts the end off.
  return absl::StrFormat(
      "round %d/%d  loss %.4f  %s  eta %s  %.1f rounds/s  up %s  down %s",
      p.round, p.rounds, p.loss, acc, FormatDuration(p.eta_s), p.rounds_per_s,
      HumanBytes(p.bytes_up), HumanBytes(p.bytes_down));
}

}  // namespace fedfwd
