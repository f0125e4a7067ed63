#include "server/run_summary.h"

#include <cmath>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace fedfwd {

absl::StatusOr<RunSummary> ParseRunSummary(const std::string& json_text) {
  const nlohmann::json j = nlohmann::json::parse(json_text, /*cb=*/nullptr,
                                                 /*allow_exceptions=*/false);
  if (!j.is_object()) {
    return absl::InvalidArgumentError("summary.json is not a JSON object");
  }
  auto number = [&](const char* key, auto* out) -> absl::Status {
    auto it = j.find(key);
    if (it == j.end() || !it->is_number()) {
      return absl::InvalidArgumentError(
          absl::StrCat("summary.json has no number ", key));
    }
    *out = it->get<std::remove_pointer_t<decltype(out)>>();
    return absl::OkStatus();
  };
  auto has_number = [&](const char* key) {
    auto it = j.find(key);
    return it != j.end() && it->is_number();
  };
  RunSummary s;
  if (auto it = j.find("mode"); it != j.end() && it->is_string()) {
    s.mode = it->get<std::string>();
  }
  s.unit = s.mode == "federated" ? "round" : "step";
  if (auto it = j.find("unit"); it != j.end() && it->is_string()) {
    s.unit = it->get<std::string>();
  }
  if (has_number("final_test_r2")) {  // a regression
    s.task = "regression";
    s.final_test_acc = j["final_test_r2"].get<double>();
    if (has_number("best_test_r2")) {
      s.best_test_acc = j["best_test_r2"].get<double>();
    }
    if (has_number("final_test_rmse")) {
      s.final_test_rmse = j["final_test_rmse"].get<double>();
    }
  } else {
    RETURN_IF_ERROR(number("final_test_acc", &s.final_test_acc));
    if (has_number("best_test_acc")) {
      s.best_test_acc = j["best_test_acc"].get<double>();
    }
  }
  // How far it got: `done`, or the older key of each kind of run.
  const char* done_key = "done";
  for (const char* key : {"done", "rounds", "steps", "steps_per_worker"}) {
    if (has_number(key)) {
      done_key = key;
      break;
    }
  }
  RETURN_IF_ERROR(number(done_key, &s.rounds));
  for (const char* key : {"planned", "rounds_planned", "steps_planned"}) {
    if (has_number(key)) {
      s.planned = j[key].get<int64_t>();
      break;
    }
  }
  RETURN_IF_ERROR(number("wall_s", &s.wall_s));
  RETURN_IF_ERROR(number("bytes_up_total", &s.bytes_up));
  RETURN_IF_ERROR(number("bytes_down_total", &s.bytes_down));
  if (auto it = j.find("interrupted"); it != j.end() && it->is_boolean()) {
    s.interrupted = it->get<bool>();
  }
  if (auto it = j.find("stopped_at_target");
      it != j.end() && it->is_boolean()) {
    s.stopped_at_target = it->get<bool>();
  }
  if (auto it = j.find("error"); it != j.end()) {
    s.error = it->is_string() ? it->get<std::string>() : it->dump();
    if (s.error.empty()) s.error = "error";
  }
  if (auto it = j.find("targets"); it != j.end() && it->is_array()) {
    for (const nlohmann::json& t : *it) {
      if (!t.is_object() || !t.contains("target") || !t["target"].is_number()) {
        continue;
      }
      TargetOutcome outcome;
      outcome.target = t["target"].get<double>();
      const char* at = t.contains("round") ? "round" : "step";
      outcome.reached =
          t.value("reached", false) && t.contains(at) && t[at].is_number();
      if (outcome.reached) {
        outcome.round = t[at].get<int64_t>();
        outcome.wall_s = t.value("wall_s", 0.0);
        outcome.bytes_up = t.value("bytes_up", int64_t{0});
        outcome.bytes_down = t.value("bytes_down", int64_t{0});
      }
      s.targets.push_back(outcome);
    }
  }
  return s;
}

absl::Status CheckSummaryExtra(const std::string& json_object) {
  const nlohmann::json j = nlohmann::json::parse(json_object, nullptr, false);
  if (!j.is_object()) {
    return absl::InvalidArgumentError(
        "summary extras must be a JSON object (text of a {...})");
  }
  return absl::OkStatus();
}

void MergeSummaryExtra(const std::string& json_object, nlohmann::json* j) {
  if (json_object.empty()) return;
  const nlohmann::json extra =
      nlohmann::json::parse(json_object, nullptr, false);
  if (!extra.is_object()) return;
  for (auto it = extra.begin(); it != extra.end(); ++it) {
    if (!j->contains(it.key())) (*j)[it.key()] = it.value();
  }
}

void WriteSummaryCore(const RunSummary& s, nlohmann::json* j) {
  nlohmann::json& o = *j;
  o["mode"] = s.mode;
  o["unit"] = s.unit;
  o["done"] = s.rounds;
  if (s.planned) o["planned"] = *s.planned;
  if (s.task == "regression") {
    o["task"] = s.task;
    o["final_test_r2"] = s.final_test_acc;
    if (s.best_test_acc && std::isfinite(*s.best_test_acc)) {
      o["best_test_r2"] = *s.best_test_acc;
    }
    if (s.final_test_rmse) o["final_test_rmse"] = *s.final_test_rmse;
  } else {
    o["final_test_acc"] = s.final_test_acc;
    if (s.best_test_acc) o["best_test_acc"] = *s.best_test_acc;
  }
  o["wall_s"] = s.wall_s;
  o["bytes_up_total"] = s.bytes_up;
  o["bytes_down_total"] = s.bytes_down;
  o["interrupted"] = s.interrupted;
  o["stopped_at_target"] = s.stopped_at_target;
  if (!s.error.empty()) o["error"] = s.error;
}

}  // namespace fedfwd
