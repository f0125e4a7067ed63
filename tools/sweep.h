// Experiment sweeps for fedfwd-run: a `sweep:` section in the config lists
// values for config keys (and seeds); every combination runs as its own
// federation in its own folder, one after another, and the results are
// gathered into results.csv (one row per run) and results.md (mean and
// sample standard deviation across seeds).
//
//   sweep:
//     lr: [1e-4, 3e-4]                        # dotted keys, as --set takes
//     tangent.distribution: [normal, rademacher]
//     targets: [[0.5], [0.5, 0.8]]            # a list value for a list key
//     seeds: 3          # or a list, [1, 7, 9]
//
// Rules (the contract fedfwd-run documents):
//   * Cells are the cartesian product of the keys in the order written, the
//     first key varying slowest, seeds innermost.
//   * `seeds: N` means the config's `seed` (after --set) and the N-1 seeds
//     after it; `seeds: [..]` lists them; without `seeds` every cell uses
//     the config's seed. `seed` itself is not a sweep key (use `seeds`).
//   * Each cell's config is the base config (the file without `sweep:`), then
//     the cell's values, then every --set, then the cell's seed. A --set of a
//     swept key (or of `seed` next to a `seeds` list) is refused, since it
//     would make cells identical.
//   * A cell's folder is <out>/<key>=<value>,...,seed=<S> with characters
//     outside [A-Za-z0-9._+-] dropped or replaced by '_' (lists become
//     values joined by '_'); names that collide are an error.
//   * A cell is finished when its folder holds summary.json without an error
//     and without "interrupted": true. A rerun into the same --out skips
//     finished cells and reruns the others from an emptied folder; a folder
//     whose config.yaml differs from the cell's is refused.
//
// Everything here but RunFedfwdRun is a pure function or a plain file read,
// and is tested directly. Thread-safety: no shared state.
#ifndef FEDFWD_TOOLS_SWEEP_H_
#define FEDFWD_TOOLS_SWEEP_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/config.h"
#include "server/run_summary.h"
#include "tools/launcher.h"

namespace fedfwd {

// One swept key and its values.
struct SweepAxis {
  std::string key;  // dotted config key, e.g. "tangent.distribution"
  // Each value as written in the YAML (a list in flow form, "[0.5, 0.8]"):
  // shown in names, tables and the CSV.
  std::vector<std::string> values;
  // Each value as YAML text for a "key=value" override (quoted as needed).
  std::vector<std::string> yaml_values;
};

struct SweepSpec {
  std::vector<SweepAxis> axes;      // in the order written
  std::vector<uint64_t> seed_list;  // `seeds: [..]`
  int seed_count = 0;               // `seeds: N` (0: not given this way)
};

// A config file's text split in two: the config without its `sweep:`
// section, and the sweep (nullopt when there is none).
struct SplitConfigText {
  std::string base_yaml;
  std::optional<SweepSpec> sweep;
};

// Strips and parses the top-level `sweep:` section. Errors (naming `origin`
// and the key): YAML syntax, a sweep that is not a map or has no keys, a
// value that is not a non-empty list of scalars or lists, a repeated value,
// the key `seed`, seeds that are not non-negative integers or a count in
// [1, 1000]. Keys are checked against the config schema by PlanSweep.
// Text without `sweep:` comes back unchanged as base_yaml.
absl::StatusOr<SplitConfigText> SplitSweep(const std::string& yaml_text,
                                           const std::string& origin);

struct SweepCell {
  int index = 0;                    // 0-based, in run order
  std::vector<std::string> values;  // one per axis, as written
  uint64_t seed = 0;
  std::string name;  // folder name and label: "lr=1e-4,seed=1"
  // "key=value" overrides of the cell itself (its values, then its seed
  // when the sweep sets seeds).
  std::vector<std::string> overrides;
};

// The cells of `sweep` in run order (see the rules above); `base_seed` is
// the config's seed. Errors: two cells with the same folder name.
absl::StatusOr<std::vector<SweepCell>> ExpandSweep(const SweepSpec& sweep,
                                                   uint64_t base_seed);

// "lr=1e-4,tangent.distribution=normal,seed=1", made safe for a file name
// (see the rules above); names over 200 bytes are cut and end in a hash of
// the whole name.
std::string CellName(const std::vector<std::string>& keys,
                     const std::vector<std::string>& values, uint64_t seed);

struct PlannedCell {
  SweepCell cell;
  Config config;  // the effective config of this cell
};

struct SweepPlan {
  std::vector<std::string> keys;  // swept keys, in order
  std::vector<PlannedCell> cells;
  bool sweeps_seeds = false;  // the sweep has a `seeds` entry
};

// Expands the sweep and parses every cell's config (base YAML, the cell's
// values, `user_overrides`, the cell's seed), so a bad key or value is
// reported before anything runs; the error names the key and the value.
// `base_dir` resolves relative paths as for the config file itself.
absl::StatusOr<SweepPlan> PlanSweep(
    const std::string& base_yaml, const SweepSpec& sweep,
    const std::string& base_dir, const std::vector<std::string>& user_overrides,
    const std::string& origin);

// What a cell's folder says about the cell.
enum class CellState {
  kNew,         // no folder, or an empty one
  kFinished,    // summary.json without error or interruption
  kUnfinished,  // ours (same config.yaml) but not finished: run it again
};

// Inspects `dir` against the config.yaml the cell would write. Errors: a
// config.yaml that differs (the sweep or --set changed since the folder
// was written), or a non-empty folder without config.yaml (not a cell).
absl::StatusOr<CellState> InspectCellDir(const std::string& dir,
                                         const std::string& config_yaml);

// One row of results.csv.
struct SweepRow {
  std::vector<std::string> values;  // one per swept key
  uint64_t seed = 0;
  std::string status;  // finished | failed | interrupted
  std::string folder;
  std::optional<RunSummary> summary;  // absent: no readable summary.json
};

// The targets named by any row, ascending, duplicates dropped.
std::vector<double> TargetsOf(const std::vector<SweepRow>& rows);
// A CSV field (RFC 4180): quoted when it holds a comma, quote, CR or LF,
// with quotes doubled.
std::string CsvField(absl::string_view text);
// results.csv: a header row, then one row per run. Columns: the swept keys,
// seed, final_test_acc, rounds_done, wall_s, bytes_up, bytes_down, then per
// target t: target_<t>_round, target_<t>_wall_s, target_<t>_bytes_up,
// target_<t>_bytes_down (empty when not reached), then status, folder.
std::string ResultsCsv(const std::vector<std::string>& keys,
                       const std::vector<SweepRow>& rows);

struct MeanStd {
  int n = 0;
  double mean = 0;
  double stddev = 0;  // sample standard deviation (n - 1); 0 when n < 2
};
MeanStd ComputeMeanStd(const std::vector<double>& xs);

// results.md: `header` (markdown lines, may be empty), then a table with one
// row per combination of swept values in first-seen order: the values, the
// number of finished runs, mean ± sample std of final_test_acc, wall_s,
// bytes up and down over finished runs, and per target the mean round over
// the runs that reached it with how many did.
std::string ResultsMarkdown(const std::vector<std::string>& keys,
                            const std::vector<SweepRow>& rows,
                            const std::string& header);

// `word` as a POSIX shell reads it back: unchanged when it holds only
// [A-Za-z0-9_./=:,+@%-], else in single quotes ('\'' for a quote).
std::string ShellQuote(absl::string_view word);

// "950 B", "1.55 kB", "7.46 GB" (decimal units, 3 significant digits).
std::string FormatBytes(double bytes);

// fedfwd-run's entry point: a config with a `sweep:` section runs the sweep
// into options.out_dir (default runs/<stem>-<timestamp>), anything else one
// federation through Launcher exactly as before. `command_line` is recorded
// in results.md. Returns the process exit code: for a sweep 0 when every
// cell finished, kExitFailure when one failed (the others still run),
// kExitUsage for a bad sweep, kExitInterrupted on SIGINT/SIGTERM/SIGHUP
// (after the current cell has stopped; results cover the cells so far).
// Must be called from the main thread of a single-threaded process.
int RunFedfwdRun(LauncherOptions options, const std::string& command_line);

}  // namespace fedfwd

#endif  // FEDFWD_TOOLS_SWEEP_H_
