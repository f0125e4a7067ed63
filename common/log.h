// Structured logs for the fedfwd programs. One process-wide Logger writes
// whole lines in one of two formats:
//
//   human  exactly the text each program printed before this module existed
//          (tools and tests parse some of it: "fedfwd-server listening on
//          HOST:PORT", "round N/M  loss ...", "client N joined (...)"), with
//          an optional per-record prefix such as "[client 3] ".
//   json   one object per line, built with nlohmann-json so quotes, control
//          characters and invalid UTF-8 (replaced by U+FFFD) come out right:
//          {"ts":"2026-11-23T10:00:00.123Z","level":"info",
//           "component":"coordinator","msg":"...", <fields>...}
//          Fields never overwrite the four keys above.
//
// Records below the configured level are dropped. Both formats write a record
// to the stream it would have gone to before (see LogStream), so a program's
// stdout keeps carrying its events and stderr its diagnostics.
//
// Live status line: when the format is human and stdout is a terminal, a
// program may keep one line at the bottom of stdout that it rewrites in place
// ("\r\033[K" + text, truncated to the terminal width so it never wraps).
// Every other record first clears it and then draws it again after itself.
//
// Thread-safe: one mutex around every write; lines never interleave.
#ifndef FEDFWD_COMMON_LOG_H_
#define FEDFWD_COMMON_LOG_H_

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace fedfwd {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };
enum class LogFormat { kHuman, kJson };

// "debug" | "info" | "warn" | "error"; anything else is INVALID_ARGUMENT.
absl::StatusOr<LogLevel> ParseLogLevel(absl::string_view name);
// "human" | "json"; anything else is INVALID_ARGUMENT.
absl::StatusOr<LogFormat> ParseLogFormat(absl::string_view name);
const char* LogLevelName(LogLevel level);

// One structured field: a key and a JSON scalar. Integers, floating point,
// bool and strings convert implicitly; an empty std::optional or nullptr is
// JSON null (e.g. "test_acc" of a round that was not evaluated).
struct LogField {
  using Value = std::variant<std::monostate, bool, int64_t, uint64_t, double,
                             std::string>;

  template <typename T>
  LogField(std::string k, T v) : key(std::move(k)), value(ToValue(v)) {}

  std::string key;
  Value value;

 private:
  template <typename T>
  static Value ToValue(const T& v) {
    if constexpr (std::is_same_v<T, bool>) {
      return v;
    } else if constexpr (std::is_integral_v<T> && std::is_signed_v<T>) {
      return static_cast<int64_t>(v);
    } else if constexpr (std::is_integral_v<T>) {
      return static_cast<uint64_t>(v);
    } else if constexpr (std::is_floating_point_v<T>) {
      return static_cast<double>(v);
    } else if constexpr (std::is_same_v<T, std::nullptr_t> ||
                         std::is_same_v<T, std::nullopt_t>) {
      return std::monostate{};
    } else if constexpr (std::is_convertible_v<T, absl::string_view>) {
      return std::string(absl::string_view(v));
    } else {
      // std::optional<U>
      if (!v.has_value()) return std::monostate{};
      return ToValue(*v);
    }
  }
};
using LogFields = std::vector<LogField>;

// Where a record goes (in both formats).
enum class LogStream {
  kByLevel,  // stdout for debug/info, stderr for warn/error
  kStdout,
  kStderr,
};

struct LogRecord {
  LogLevel level = LogLevel::kInfo;
  std::string component;  // "coordinator", "client", "server", "auth", ...
  std::string msg;        // the human text, without the prefix
  LogFields fields;
  std::string human_prefix;  // human format only: printed before msg
  LogStream stream = LogStream::kByLevel;
  // Written whatever the level: lines other programs wait for (the
  // coordinator's "listening" line).
  bool always = false;
};

// The human line of `record` (no newline): prefix + msg.
std::string FormatHumanLine(const LogRecord& record);
// The JSON line of `record` stamped `ts` (no newline). Never throws.
std::string FormatJsonLine(const LogRecord& record, absl::Time ts);

class Logger {
 public:
  // The process-wide logger: human format, level info, stdout/stderr.
  static Logger& Global();

  Logger();
  Logger(const Logger&) = delete;
  Logger& operator=(const Logger&) = delete;

  void Configure(LogFormat format, LogLevel level);
  LogFormat format() const { return format_.load(); }
  LogLevel level() const { return level_.load(); }
  bool Enabled(LogLevel level) const { return level >= level_.load(); }

  // Writes the record as one line (or drops it below the level) and
  // flushes.
  void Write(const LogRecord& record);

  // Whether SetStatusLine draws anything: human format and stdout is a
  // terminal. Callers that get false log plain lines instead.
  bool LiveStatusAvailable() const;
  // Shows `line` in place of the previous status line. No-op when
  // LiveStatusAvailable() is false.
  void SetStatusLine(const std::string& line);
  // Removes the status line (before the program's last words).
  void ClearStatusLine();

  // Tests: write to `out` / `err` instead of stdout / stderr; `out_is_tty`
  // and `width` stand in for the terminal check and its width.
  void SetOutputsForTest(FILE* out, FILE* err, bool out_is_tty, int width);

 private:
  void EraseStatusLocked();
  void DrawStatusLocked();

  std::atomic<LogFormat> format_{LogFormat::kHuman};
  std::atomic<LogLevel> level_{LogLevel::kInfo};
  std::mutex mu_;
  FILE* out_;
  FILE* err_;
  std::optional<bool> out_is_tty_;  // nullopt: ask isatty(stdout)
  int width_ = 0;                   // 0: ask the terminal
  std::string status_;              // the status line's text
  bool status_shown_ = false;       // drawn on out_ right now
};

// Logger::Global().Write of a record with these parts.
void Log(LogLevel level, absl::string_view component, absl::string_view msg,
         LogFields fields = {}, LogStream stream = LogStream::kByLevel);

// "512 B", "1.50 kB", "12.3 MB", "456 GB": decimal units, 3 significant
// digits from 1 kB on.
std::string HumanBytes(int64_t bytes);

}  // namespace fedfwd

#endif  // FEDFWD_COMMON_LOG_H_
