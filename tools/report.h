// fedfwd-report: loads run folders (metrics.jsonl, summary.json,
// config.yaml), draws them as one self-contained HTML page with inline SVG
// charts, and exports them as TensorBoard event files. Pure functions over
// value types, except LoadRun and ExportTensorBoard (file system); all
// thread-compatible.
//
// What a chart's series holds (the render test checks exactly this):
//   accuracy vs round / step, vs wall time, vs bytes: one point per
//     metrics.jsonl row whose test_acc is a number (rows of rounds that were
//     not evaluated have test_acc null and give no point);
//   training loss vs round / step: one point per row whose train_loss is a
//     number.
// Each series is one <polyline> with data-run (the run's name) and
// data-points (its number of points) unless --max-points thins it.
#ifndef FEDFWD_TOOLS_REPORT_H_
#define FEDFWD_TOOLS_REPORT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fedfwd {

// One metrics.jsonl row.
struct MetricsRow {
  int64_t index = 0;  // "round", or "step" for a central run
  double wall_s = 0;
  std::optional<double> train_loss;
  std::optional<double> test_acc;   // regression rows: their test_r2
  std::optional<double> test_rmse;  // regression rows only
  int64_t bytes_up = 0;             // this row's traffic (not cumulative)
  int64_t bytes_down = 0;
  // Every numeric field of the row except the index, in file order
  // (exported to TensorBoard under the field's name).
  std::vector<std::pair<std::string, double>> scalars;
};

// The rows of one metrics.jsonl.
struct ParsedMetrics {
  std::string index_key;  // "round" or "step"
  std::vector<MetricsRow> rows;
  // "FILE:LINE: reason" for each complete line that was skipped.
  std::vector<std::string> skipped;
  // The last line had no newline and did not parse: a run still writing.
  bool truncated_tail = false;
};

// Parses metrics.jsonl text; `origin` names the file in messages. A
// complete line that is not a row (not JSON, no integer "round"/"step", no
// numeric "wall_s", a test_acc / train_loss / bytes field of the wrong type,
// or the other index key than the first row's) is skipped and listed in
// `skipped`; with `strict` it is an InvalidArgumentError naming FILE:LINE
// instead. An unparsable last line without a newline is dropped silently
// (truncated_tail). Blank lines are ignored.
absl::StatusOr<ParsedMetrics> ParseMetricsJsonl(absl::string_view text,
                                                const std::string& origin,
                                                bool strict);

struct TargetResult {
  double target = 0;
  bool reached = false;
  int64_t index = 0;  // round / step where it was reached
  double wall_s = 0;
  std::optional<int64_t> bytes;  // up + down so far (federated runs)
};

// The run's summary.json (absent while a run is still going or if it
// crashed) and config highlights (from summary.json's "config", else from
// config.yaml). Absent fields stay empty.
struct RunInfo {
  bool has_summary = false;
  std::string status;  // finished | interrupted | stopped at target |
                       // failed: ... | no summary.json (running or crashed)
  std::optional<double> final_test_acc;  // regression: R^2
  std::optional<double> best_test_acc;
  bool regression = false;  // summary.json's task
  std::optional<double> final_test_rmse;
  std::optional<double> wall_s;
  std::optional<int64_t> bytes_up_total;
  std::optional<int64_t> bytes_down_total;
  std::optional<int64_t> done;  // rounds / steps run
  std::vector<TargetResult> targets;
  std::string model, dataset, estimator, clients, rounds, lr;
  // summary.json's `link` (fedfwd-run --link: the emulated link, or
  // "mixed"); empty for a run on loopback.
  std::string link;
};

struct RunData {
  std::string name;  // unique among the report's runs
  std::string dir;
  ParsedMetrics metrics;
  RunInfo info;
  // Seconds since the Unix epoch at the run's start, estimated as
  // metrics.jsonl's modification time minus its last row's wall_s.
  double start_unix = 0;
};

// Loads a run folder. NotFoundError if the folder or its metrics.jsonl is
// missing; FailedPreconditionError if metrics.jsonl holds no rows;
// InvalidArgumentError for a malformed row with `strict`, or a malformed
// summary.json. Messages name the file. Sets every field but `name`.
absl::StatusOr<RunData> LoadRun(const std::string& dir, bool strict);

// The run names for `dirs`: each folder's basename ("." and trailing
// slashes resolved), made unique by appending -2, -3, ... in order.
std::vector<std::string> UniqueRunNames(const std::vector<std::string>& dirs);

// Escapes & < > " ' for HTML / SVG text and attribute values.
std::string EscapeHtml(absl::string_view text);

// Maps a data interval onto a pixel interval. Linear, or log10 on
// [lo, hi] (lo > 0) with `zero_gap` pixels reserved at the start for
// values <= 0, which all map to the start.
struct Scale {
  double lo = 0, hi = 1;  // data domain
  double r0 = 0, r1 = 1;  // pixel range (r1 < r0 for a y axis)
  bool log = false;
  double zero_gap = 0;
  double Map(double v) const;
};

// "Nice" ticks (1, 2 or 5 times a power of ten apart) covering [lo, hi]
// with about `target` ticks; the first tick <= lo and the last >= hi, so
// the ticks' ends make a good axis domain. lo == hi is widened.
std::vector<double> NiceTicks(double lo, double hi, int target);
// Powers of ten from the largest <= lo to the smallest >= hi (lo > 0);
// with fewer than three decades, 2x and 5x in between too.
std::vector<double> LogTicks(double lo, double hi);

enum class TickFormat { kNumber, kBytes };
// A tick label: kNumber gives integers plainly and others with up to four
// significant digits; kBytes uses decimal units (B, kB, MB, GB, TB).
std::string FormatTick(double v, TickFormat format);

struct Series {
  std::string run;
  std::vector<std::pair<double, double>> points;  // (x, y), in row order
};

struct ChartSpec {
  std::string id;  // data-chart attribute, unique in the page
  std::string title, x_label, y_label;
  TickFormat x_format = TickFormat::kNumber;
  TickFormat y_format = TickFormat::kNumber;
  // Log axes when the positive values span at least this ratio (and, for
  // y, none is <= 0); 0 keeps the axis linear.
  double log_x_ratio = 0;
  double log_y_ratio = 0;
  int width = 900, height = 420;
  // More points than this in a series: keep every k-th and the last one;
  // 0 draws all.
  int64_t max_points = 0;
};

// One chart as an inline <svg>: axes, ticks, grid, labels, a legend and one
// <polyline> per series (series i gets colour i of a 10-colour palette, and
// a dash pattern after the first ten) carrying data-run, data-points and
// data-rows (points before thinning) and a <title> for hover.
std::string RenderSvgChart(const ChartSpec& spec,
                           const std::vector<Series>& series);

// The points of each chart for one run, as described at the top.
std::vector<std::pair<double, double>> AccuracyByIndex(const RunData& run);
std::vector<std::pair<double, double>> AccuracyByWallTime(const RunData& run);
// x: bytes up + down of all rows up to and including the row.
std::vector<std::pair<double, double>> AccuracyByBytes(const RunData& run);
std::vector<std::pair<double, double>> LossByIndex(const RunData& run);

struct ReportOptions {
  std::string title = "fedfwd report";
  int64_t max_points = 0;  // see ChartSpec::max_points
};
// The whole page: summary table, four charts, skipped-line warnings. No
// external resources.
std::string RenderReportHtml(const std::vector<RunData>& runs,
                             const ReportOptions& options);

// Writes ROOT/<run name>/events.out.tfevents.<start>.<host>: one Event per
// row at step = round (or step), holding every numeric field of the row
// plus bytes_up_cumulative and bytes_down_cumulative. Refuses
// (AlreadyExistsError) a run folder that already holds an event file, since
// TensorBoard would merge the two. Returns the file's path.
absl::StatusOr<std::string> ExportTensorBoard(const RunData& run,
                                              const std::string& root,
                                              const std::string& host);

}  // namespace fedfwd

#endif  // FEDFWD_TOOLS_REPORT_H_
