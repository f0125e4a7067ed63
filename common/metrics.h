// Run outputs: metrics.jsonl (one JSON object per round, flushed as written,
// so a crash loses at most the row being written) and summary.json (written
// to a temporary file and renamed, so it is never half-written).
// Not thread-safe: one writer per run, used by the round engine's thread.
#ifndef FEDFWD_COMMON_METRICS_H_
#define FEDFWD_COMMON_METRICS_H_

#include <cstdint>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace fedfwd {

struct RoundRow {
  int64_t round = 0;
  double wall_s = 0;
  std::optional<double> train_loss;
  // The score: test accuracy, or R^2 for regression (written "test_r2",
  // MetricsWriter::set_regression), then RMSE for regression.
  std::optional<double> test_acc;
  std::optional<double> test_rmse;
  int64_t bytes_up = 0;
  int64_t bytes_down = 0;
  int clients = 0;
  double lr = 0;
  // With privacy on: the (epsilon, privacy.delta) spent so far per client.
  std::optional<double> epsilon;
  // Further numbers of the row, written after the fixed ones in this order
  // (decentralized runs: worker_step, spread, center_test_acc, ...).
  std::vector<std::pair<std::string, double>> extra;
};

class MetricsWriter {
 public:
  // Creates `dir` if needed and truncates dir/metrics.jsonl. `index_key`
  // names RoundRow::round in the rows ("round"; "step" for the centralized
  // trainer).
  static absl::StatusOr<std::unique_ptr<MetricsWriter>> Open(
      const std::string& dir, const std::string& index_key = "round");
  // For a resumed run: keeps the rows of dir/metrics.jsonl up to and
  // including `keep_through` (the checkpoint's round; the rest will run
  // again), drops a torn last line, and appends from there.
  static absl::StatusOr<std::unique_ptr<MetricsWriter>> OpenForResume(
      const std::string& dir, int64_t keep_through,
      const std::string& index_key = "round");
  absl::Status Append(const RoundRow& row);
  // Regression runs: rows name their score "test_r2", not "test_acc".
  void set_regression(bool regression) { regression_ = regression; }
  // Writes dir/summary.json from a JSON object text.
  absl::Status WriteSummary(const std::string& json_text);
  // Writes `bytes` to dir/name atomically and durably (WriteFileDurably).
  absl::Status WriteFileAtomically(const std::string& name,
                                   const std::string& bytes);
  const std::string& dir() const { return dir_; }

 private:
  MetricsWriter(std::string dir, std::string index_key)
      : dir_(std::move(dir)), index_key_(std::move(index_key)) {}
  std::string dir_;
  std::string index_key_;
  bool regression_ = false;
  std::ofstream rows_;
};

// Writes `bytes` to `path` so that a crash at any moment leaves either the
// old file or the new one, complete: a temporary file beside it is written,
// fsync'ed and renamed over `path`, then the folder is fsync'ed.
absl::Status WriteFileDurably(const std::string& path, const std::string& bytes,
                              int mode = 0644);

// Facts about this build and machine for summary.json. GitCommit: the
// checkout's commit when the programs were built (12 hex digits, "-dirty"
// when tracked files differed from it; "unknown" outside git).
std::string GitCommit();
std::string HostName();

}  // namespace fedfwd

#endif  // FEDFWD_COMMON_METRICS_H_
