// --log-format and --log-level for the fedfwd programs' command lines
// (CLI11), so every program spells and documents them the same way.
// Header-only: only mains include it.
#ifndef FEDFWD_COMMON_LOG_FLAGS_H_
#define FEDFWD_COMMON_LOG_FLAGS_H_

#include <CLI/CLI.hpp>
#include <string>

#include "absl/status/status.h"
#include "common/log.h"

namespace fedfwd {

struct LogFlags {
  std::string format = "human";
  std::string level = "info";
};

inline void AddLogFlags(CLI::App* app, LogFlags* flags) {
  app->add_option("--log-format", flags->format,
                  "human (the plain lines; on a terminal the coordinator's "
                  "progress is one line rewritten in place) or json (one "
                  "JSON object per line: ts, level, component, msg and the "
                  "event's fields)")
      ->check(CLI::IsMember({"human", "json"}))
      ->capture_default_str();
  app->add_option("--log-level", flags->level,
                  "debug, info, warn or error: drop records below it "
                  "(debug adds e.g. a line per round)")
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}))
      ->capture_default_str();
}

// Configures Logger::Global() from the flags.
inline absl::Status ApplyLogFlags(const LogFlags& flags) {
  absl::StatusOr<LogFormat> format = ParseLogFormat(flags.format);
  if (!format.ok()) return format.status();
  absl::StatusOr<LogLevel> level = ParseLogLevel(flags.level);
  if (!level.ok()) return level.status();
  Logger::Global().Configure(*format, *level);
  return absl::OkStatus();
}

}  // namespace fedfwd

#endif  // FEDFWD_COMMON_LOG_FLAGS_H_
