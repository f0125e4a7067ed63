// summary.json: what every run writes when it ends (federated rounds,
// decentralized workers, the centralized trainer), and the one reader of it
// (sweeps, reports).
//
// The keys every writer sets, through WriteSummaryCore:
//   mode            "federated" | "decentralized" | "central"
//   done, planned   rounds (federated) or steps (decentralized: per worker;
//                   central) run and asked for; `unit` says which
//   unit            "round" | "step"
//   final_test_acc, best_test_acc (regression: task "regression",
//                   final_test_r2, best_test_r2, final_test_rmse instead),
//   wall_s, bytes_up_total,
//   bytes_down_total, interrupted, stopped_at_target, error (failed runs)
// and, written by each, targets: [{target, reached, round or step, and
// where known wall_s, bytes_up, bytes_down}].
// Writers keep their older keys beside these (federated: rounds,
// rounds_planned; decentralized: steps_per_worker, steps_planned; central:
// steps, steps_planned), and the reader accepts a summary that has only
// those.
#ifndef FEDFWD_SERVER_RUN_SUMMARY_H_
#define FEDFWD_SERVER_RUN_SUMMARY_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace fedfwd {

struct TargetOutcome {
  double target = 0;
  bool reached = false;
  int64_t round = 0;  // the round (or step) it was reached at
  double wall_s = 0;
  int64_t bytes_up = 0;
  int64_t bytes_down = 0;
};

struct RunSummary {
  std::string mode = "federated";
  std::string unit = "round";  // what `rounds` and targets' `round` count
  double final_test_acc = 0;   // the score: accuracy, or R^2 (regression)
  std::optional<double> best_test_acc;
  std::string task = "classification";    // or "regression"
  std::optional<double> final_test_rmse;  // regression
  int64_t rounds = 0;                     // rounds (or steps) done
  std::optional<int64_t> planned;
  double wall_s = 0;
  int64_t bytes_up = 0;
  int64_t bytes_down = 0;
  bool interrupted = false;
  bool stopped_at_target = false;
  std::string error;  // empty unless the run failed
  std::vector<TargetOutcome> targets;
};

// Parses summary.json text. Errors: not JSON, or a missing or mistyped
// final_test_acc / done (or rounds, steps, steps_per_worker) / wall_s /
// bytes_up_total / bytes_down_total.
absl::StatusOr<RunSummary> ParseRunSummary(const std::string& json_text);

// Sets the keys every writer shares (the header comment) from `s` on `j`.
void WriteSummaryCore(const RunSummary& s, nlohmann::json* j);

// Extra keys a run's summary.json carries besides its writer's own
// (fedfwd-server --summary-extra: fedfwd-run --link records the links this
// way). The text must be one JSON object.
absl::Status CheckSummaryExtra(const std::string& json_object);
// Adds the keys of `json_object` (checked) that `j` does not have: the
// writer's own keys win.
void MergeSummaryExtra(const std::string& json_object, nlohmann::json* j);

}  // namespace fedfwd

#endif  // FEDFWD_SERVER_RUN_SUMMARY_H_
