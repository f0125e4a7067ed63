#include "tools/status_report.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/log.h"

namespace fedfwd {
namespace {

std::string Duration(double s) {
  if (!(s >= 0)) return "?";
  const int64_t t = static_cast<int64_t>(s);
  return absl::StrFormat("%d:%02d:%02d", t / 3600, (t / 60) % 60, t % 60);
}

}  // namespace

std::string FormatStatusReport(const v1::StatusReply& r) {
  std::string out;
  auto line = [&out](const char* key, const std::string& value) {
    absl::StrAppendFormat(&out, "%-10s%s\n", key, value);
  };
  line("run", r.run_id().empty() ? "?" : r.run_id());
  line("state", r.state());
  line("round", absl::StrFormat("%d/%d (model version %d)", r.round(),
                                r.rounds(), r.model_version()));
  if (r.last_test_acc() < 0) {
    line("test acc", "-");
  } else if (r.last_test_round() >= 0) {
    line("test acc", absl::StrFormat("%.4f after round %d", r.last_test_acc(),
                                     r.last_test_round()));
  } else {
    line("test acc", absl::StrFormat("%.4f", r.last_test_acc()));
  }
  if (r.accuracy_history_size() > 1) {
    std::vector<std::string> points;
    for (const auto& a : r.accuracy_history()) {
      points.push_back(absl::StrFormat("%d: %.4f", a.round(), a.test_acc()));
    }
    line("history", absl::StrJoin(points, ", "));
  }
  if (!r.model().empty()) {
    line("model", absl::StrCat(r.model(), " on ", r.dataset(), ", estimator ",
                               r.estimator()));
  }
  int alive = 0;
  for (const auto& c : r.clients()) alive += c.alive() ? 1 : 0;
  line("clients",
       absl::StrFormat("%d alive of %d registered (the run wants %d, at "
                       "least %d)",
                       alive, r.clients_size(), r.clients_expected(),
                       r.min_clients()));
  std::string wall = Duration(r.wall_s());
  if (r.state() == "training" && r.eta_s() >= 0) {
    absl::StrAppend(&wall, "  eta ", Duration(r.eta_s()));
  }
  line("wall", wall);
  line("bytes", absl::StrCat("up ", HumanBytes(r.bytes_up()), "  down ",
                             HumanBytes(r.bytes_down())));
  if (r.clients_size() == 0) return out;

  struct Row {
    std::string id, name, shard, alive, seen;
  };
  std::vector<Row> rows = {{"id", "name", "shard", "alive", "last seen"}};
  for (const auto& c : r.clients()) {
    rows.push_back({absl::StrCat(c.client_id()), c.name(),
                    absl::StrCat(c.shard()), c.alive() ? "yes" : "no",
                    absl::StrFormat("%.1f s ago", c.last_seen_s())});
  }
  int w[4] = {0, 0, 0, 0};
  for (const Row& row : rows) {
    w[0] = std::max(w[0], static_cast<int>(row.id.size()));
    w[1] = std::max(w[1], static_cast<int>(row.name.size()));
    w[2] = std::max(w[2], static_cast<int>(row.shard.size()));
    w[3] = std::max(w[3], static_cast<int>(row.alive.size()));
  }
  out += "\n";
  for (const Row& row : rows) {
    absl::StrAppendFormat(&out, "%*s  %-*s  %*s  %-*s  %s\n", w[0], row.id,
                          w[1], row.name, w[2], row.shard, w[3], row.alive,
                          row.seen);
  }
  return out;
}

std::string StatusReplyToJson(const v1::StatusReply& r) {
  nlohmann::ordered_json j;
  j["run_id"] = r.run_id();
  j["state"] = r.state();
  j["round"] = r.round();
  j["rounds"] = r.rounds();
  j["model_version"] = r.model_version();
  j["last_test_acc"] = r.last_test_acc();
  j["last_test_round"] = r.last_test_round();
  nlohmann::ordered_json history = nlohmann::ordered_json::array();
  for (const auto& a : r.accuracy_history()) {
    history.push_back({{"round", a.round()}, {"test_acc", a.test_acc()}});
  }
  j["accuracy_history"] = history;
  j["wall_s"] = r.wall_s();
  j["eta_s"] = r.eta_s();
  j["bytes_up"] = r.bytes_up();
  j["bytes_down"] = r.bytes_down();
  j["clients_expected"] = r.clients_expected();
  j["min_clients"] = r.min_clients();
  j["model"] = r.model();
  j["dataset"] = r.dataset();
  j["estimator"] = r.estimator();
  nlohmann::ordered_json clients = nlohmann::ordered_json::array();
  for (const auto& c : r.clients()) {
    clients.push_back({{"client_id", c.client_id()},
                       {"name", c.name()},
                       {"shard", c.shard()},
                       {"alive", c.alive()},
                       {"last_seen_s", c.last_seen_s()}});
  }
  j["clients"] = clients;
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string DescribeStatusError(const absl::Status& s,
                                const std::string& address, double timeout_s) {
  const std::string detail(s.message());
  switch (s.code()) {
    case absl::StatusCode::kUnavailable:
      return absl::StrCat("unavailable: cannot reach the coordinator at ",
                          address, " (", detail, ")");
    case absl::StatusCode::kUnauthenticated:
      return absl::StrCat("unauthenticated: the coordinator at ", address,
                          " refused the credentials (", detail, ")");
    case absl::StatusCode::kPermissionDenied:
      return absl::StrCat("permission denied: the coordinator at ", address,
                          " refused the call (", detail, ")");
    case absl::StatusCode::kDeadlineExceeded:
      return absl::StrFormat(
          "deadline: no reply from the coordinator at %s within %g s", address,
          timeout_s);
    default:
      return absl::StrCat(absl::StatusCodeToString(s.code()),
                          ": the coordinator at ", address,
                          " answered: ", detail);
  }
}

}  // namespace fedfwd
