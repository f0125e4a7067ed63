// fedfwd-report: compares run folders in one self-contained HTML page with
// SVG charts, and/or exports them as TensorBoard event files. See
// tools/report.h.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/metrics.h"
#include "tools/report.h"

namespace {

void Say(const std::string& line) {
  std::fprintf(stderr, "fedfwd-report: %s\n", line.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Compares fedfwd runs: writes one self-contained HTML page (no external "
      "resources) with SVG charts of test accuracy against round, wall time "
      "and bytes communicated, and of training loss, plus a summary table; "
      "and/or exports each run as a TensorBoard event file.\n"
      "A run folder holds metrics.jsonl (and, once finished, summary.json). "
      "Malformed metrics lines are skipped with a warning (--strict: an "
      "error); an incomplete last line (a run still writing) is ignored.\n"
      "Exit code: 0 done, 1 cannot write the output, 2 bad flags or input.",
      "fedfwd-report"};
  std::vector<std::string> dirs;
  std::string out = "report.html", tensorboard_dir;
  fedfwd::ReportOptions options;
  bool no_html = false, strict = false;
  app.add_option("run_dirs", dirs, "Run folders (metrics.jsonl inside)")
      ->required()
      ->type_name("RUN_DIR");
  app.add_option("--out", out, "HTML file to write")->capture_default_str();
  app.add_option("--title", options.title, "Page title")->capture_default_str();
  app.add_flag("--no-html", no_html,
               "Write no HTML (with --tensorboard: only the event files)");
  app.add_option("--tensorboard", tensorboard_dir,
                 "Also write DIR/<run>/events.out.tfevents.<time>.<host> per "
                 "run: every numeric metrics field as a scalar at step = "
                 "round (view with tensorboard --logdir DIR)")
      ->type_name("DIR");
  app.add_option("--max-points", options.max_points,
                 "Thin each chart series to at most N points (every k-th and "
                 "the last); default 0: draw every point")
      ->check(CLI::Range(int64_t{0}, int64_t{1000000000}))
      ->type_name("N");
  app.add_flag("--strict", strict,
               "A malformed metrics line is an error instead of a warning");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  if (options.max_points == 1) {
    Say("--max-points must be 0 (off) or at least 2");
    return 2;
  }
  if (no_html && tensorboard_dir.empty()) {
    Say("nothing to do: --no-html without --tensorboard");
    return 2;
  }

  const std::vector<std::string> names = fedfwd::UniqueRunNames(dirs);
  std::vector<fedfwd::RunData> runs;
  bool failed = false;
  for (size_t i = 0; i < dirs.size(); ++i) {
    absl::StatusOr<fedfwd::RunData> run = fedfwd::LoadRun(dirs[i], strict);
    if (!run.ok()) {
      Say(std::string(run.status().message()));
      failed = true;
      continue;
    }
    run->name = names[i];
    for (const std::string& s : run->metrics.skipped) {
      Say(absl::StrCat("warning: ", s, " (line skipped)"));
    }
    if (run->metrics.truncated_tail) {
      Say(absl::StrCat("note: ", dirs[i],
                       "/metrics.jsonl ends in an incomplete line (run still "
                       "writing?); it was ignored"));
    }
    runs.push_back(std::move(*run));
  }
  if (failed) return 2;

  if (!no_html) {
    const std::string html = fedfwd::RenderReportHtml(runs, options);
    const absl::Status s = fedfwd::WriteFileDurably(out, html);
    if (!s.ok()) {
      Say(std::string(s.message()));
      return 1;
    }
    std::printf("wrote %s (%zu runs)\n", out.c_str(), runs.size());
  }
  if (!tensorboard_dir.empty()) {
    const std::string host = fedfwd::HostName();
    for (const fedfwd::RunData& run : runs) {
      absl::StatusOr<std::string> path =
          fedfwd::ExportTensorBoard(run, tensorboard_dir, host);
      if (!path.ok()) {
        Say(std::string(path.status().message()));
        return absl::IsAlreadyExists(path.status()) ? 2 : 1;
      }
      std::printf("wrote %s (%zu rows)\n", path->c_str(),
                  run.metrics.rows.size());
    }
  }
  return 0;
}
