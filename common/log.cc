#include "common/log.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace fedfwd {
namespace {

constexpr char kEraseLine[] = "\r\033[K";

nlohmann::ordered_json ToJson(const LogField::Value& v) {
  return std::visit(
      [](const auto& x) -> nlohmann::ordered_json {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::monostate>) {
          return nullptr;
        } else {
          return x;
        }
      },
      v);
}

int TerminalWidth(FILE* out) {
  struct winsize ws;
  if (ioctl(fileno(out), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) {
    return ws.ws_col;
  }
  return 80;
}

}  // namespace

absl::StatusOr<LogLevel> ParseLogLevel(absl::string_view name) {
  if (name == "debug") return LogLevel::kDebug;
  if (name == "info") return LogLevel::kInfo;
  if (name == "warn") return LogLevel::kWarn;
  if (name == "error") return LogLevel::kError;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown log level '", name, "' (debug, info, warn or error)"));
}

absl::StatusOr<LogFormat> ParseLogFormat(absl::string_view name) {
  if (name == "human") return LogFormat::kHuman;
  if (name == "json") return LogFormat::kJson;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown log format '", name, "' (human or json)"));
}

const char* LogLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kError:
      return "error";
  }
  return "info";
}

std::string FormatHumanLine(const LogRecord& record) {
  return absl::StrCat(record.human_prefix, record.msg);
}

std::string FormatJsonLine(const LogRecord& record, absl::Time ts) {
  nlohmann::ordered_json j;
  j["ts"] = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", ts, absl::UTCTimeZone());
  j["level"] = LogLevelName(record.level);
  j["component"] = record.component;
  j["msg"] = record.msg;
  for (const LogField& f : record.fields) {
    if (j.contains(f.key)) continue;  // the four keys above stay as they are
    j[f.key] = ToJson(f.value);
  }
  // Client names and peer messages are free text: invalid UTF-8 becomes
  // U+FFFD instead of an exception.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

Logger& Logger::Global() {
  static Logger* logger = new Logger();  // never destroyed: used at exit
  return *logger;
}

Logger::Logger() : out_(stdout), err_(stderr) {}

void Logger::Configure(LogFormat format, LogLevel level) {
  std::lock_guard<std::mutex> lock(mu_);
  if (format != LogFormat::kHuman) EraseStatusLocked();
  format_ = format;
  level_ = level;
}

void Logger::SetOutputsForTest(FILE* out, FILE* err, bool out_is_tty,
                               int width) {
  std::lock_guard<std::mutex> lock(mu_);
  out_ = out;
  err_ = err;
  out_is_tty_ = out_is_tty;
  width_ = width;
  status_shown_ = false;
  status_.clear();
}

bool Logger::LiveStatusAvailable() const {
  if (format_.load() != LogFormat::kHuman) return false;
  // out_ / out_is_tty_ change only in tests, before any logging.
  if (out_is_tty_.has_value()) return *out_is_tty_;
  return isatty(fileno(out_)) == 1;
}

void Logger::EraseStatusLocked() {
  if (!status_shown_) return;
  std::fputs(kEraseLine, out_);
  std::fflush(out_);
  status_shown_ = false;
}

void Logger::DrawStatusLocked() {
  if (status_.empty()) return;
  const int width = width_ > 0 ? width_ : TerminalWidth(out_);
  // One column short of the width: a full line would wrap on some
  // terminals, and a wrapped line cannot be rewritten with "\r".
  std::string line = status_;
  if (width > 1 && static_cast<int>(line.size()) >= width) {
    line.resize(static_cast<size_t>(width - 1));
  }
  std::fputs(kEraseLine, out_);
  std::fputs(line.c_str(), out_);
  std::fflush(out_);
  status_shown_ = true;
}

void Logger::Write(const LogRecord& record) {
  if (!record.always && !Enabled(record.level)) return;
  const bool json = format_.load() == LogFormat::kJson;
  const std::string line =
      json ? FormatJsonLine(record, absl::Now()) : FormatHumanLine(record);
  std::lock_guard<std::mutex> lock(mu_);
  const bool to_err =
      record.stream == LogStream::kStderr ||
      (record.stream == LogStream::kByLevel && record.level >= LogLevel::kWarn);
  FILE* stream = to_err ? err_ : out_;
  const bool redraw = status_shown_;
  EraseStatusLocked();
  std::fputs(line.c_str(), stream);
  std::fputc('\n', stream);
  std::fflush(stream);
  if (redraw) DrawStatusLocked();
}

void Logger::SetStatusLine(const std::string& line) {
  if (!LiveStatusAvailable()) return;
  std::lock_guard<std::mutex> lock(mu_);
  status_ = line;
  DrawStatusLocked();
}

void Logger::ClearStatusLine() {
  std::lock_guard<std::mutex> lock(mu_);
  EraseStatusLocked();
  status_.clear();
}

void Log(LogLevel level, absl::string_view component, absl::string_view msg,
         LogFields fields, LogStream stream) {
  Logger& logger = Logger::Global();
  if (!logger.Enabled(level)) return;
  LogRecord r;
  r.level = level;
  r.component = std::string(component);
  r.msg = std::string(msg);
  r.fields = std::move(fields);
  r.stream = stream;
  logger.Write(r);
}

std::string HumanBytes(int64_t bytes) {
  if (bytes < 0) return absl::StrCat(bytes, " B");
  if (bytes < 1000) return absl::StrCat(bytes, " B");
  static const char* const kUnits[] = {"kB", "MB", "GB", "TB", "PB"};
  double v = static_cast<double>(bytes) / 1000;
  size_t u = 0;
  // Round first, so 999.96 kB reads "1.00 MB" and not "1000 kB".
  while (u + 1 < sizeof(kUnits) / sizeof(kUnits[0]) && v >= 999.5) {
    v /= 1000;
    ++u;
  }
  if (v < 9.995) return absl::StrFormat("%.2f %s", v, kUnits[u]);
  if (v < 99.95) return absl::StrFormat("%.1f %s", v, kUnits[u]);
  return absl::StrFormat("%.0f %s", v, kUnits[u]);
}

}  // namespace fedfwd
