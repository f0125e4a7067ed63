#include "tools/report.h"

#include <sys/stat.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "common/metrics.h"
#include "common/status_macros.h"
#include "common/tensorboard.h"
#include "server/run_summary.h"

namespace fedfwd {
namespace {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

// Tableau 10: distinguishable, and readable on white.
constexpr const char* kPalette[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2",
                                    "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
                                    "#9c755f", "#bab0ac"};
constexpr int kPaletteSize = sizeof(kPalette) / sizeof(kPalette[0]);
// After ten runs the colours repeat with these dash patterns.
constexpr const char* kDashes[] = {"", "7 4", "2 3", "9 3 2 3"};
constexpr int kDashCount = sizeof(kDashes) / sizeof(kDashes[0]);
// Series with at most this many drawn points get a dot on every point.
constexpr int64_t kMarkerLimit = 60;

// Fills `row` from one JSON line; false with `reason` if it is not a row.
// `index_key` is fixed by the first row and enforced on the rest.
bool ParseRow(absl::string_view line, std::string* index_key, MetricsRow* row,
              std::string* reason) {
  const ojson j = ojson::parse(line.begin(), line.end(), nullptr, false);
  if (j.is_discarded()) {
    *reason = "not valid JSON";
    return false;
  }
  if (!j.is_object()) {
    *reason = "not a JSON object";
    return false;
  }
  std::string key = *index_key;
  if (key.empty()) {
    if (j.contains("round")) {
      key = "round";
    } else if (j.contains("step")) {
      key = "step";
    } else {
      *reason = "no \"round\" or \"step\" field";
      return false;
    }
  }
  auto it = j.find(key);
  if (it == j.end()) {
    const char* other = key == "round" ? "step" : "round";
    *reason = j.contains(other)
                  ? absl::StrCat("has \"", other, "\" but earlier rows have \"",
                                 key, "\"")
                  : absl::StrCat("no \"", key, "\" field");
    return false;
  }
  if (!it->is_number_integer()) {
    *reason = absl::StrCat("\"", key, "\" is not an integer");
    return false;
  }
  row->index = it->get<int64_t>();
  it = j.find("wall_s");
  if (it == j.end() || !it->is_number()) {
    *reason = "\"wall_s\" is missing or not a number";
    return false;
  }
  row->wall_s = it->get<double>();
  // A regression's rows carry test_r2 (its score) and test_rmse.
  const std::pair<const char*, std::optional<double>*> optional_fields[] = {
      {"test_acc", &row->test_acc},
      {"test_r2", &row->test_acc},
      {"test_rmse", &row->test_rmse},
      {"train_loss", &row->train_loss}};
  for (const auto& [name, field] : optional_fields) {
    it = j.find(name);
    if (it == j.end() || it->is_null()) continue;
    if (!it->is_number()) {
      *reason = absl::StrCat("\"", name, "\" is neither a number nor null");
      return false;
    }
    *field = it->get<double>();
  }
  const std::pair<const char*, int64_t*> byte_fields[] = {
      {"bytes_up", &row->bytes_up}, {"bytes_down", &row->bytes_down}};
  for (const auto& [name, field] : byte_fields) {
    it = j.find(name);
    if (it == j.end()) continue;
    if (!it->is_number_integer() || it->get<int64_t>() < 0) {
      *reason = absl::StrCat("\"", name, "\" is not a count of bytes");
      return false;
    }
    *field = it->get<int64_t>();
  }
  for (const auto& [k, v] : j.items()) {
    if (k != key && v.is_number())
      row->scalars.emplace_back(k, v.get<double>());
  }
  *index_key = key;
  return true;
}

std::string ReadWholeFile(const std::string& path, bool* ok) {
  std::ifstream in(path, std::ios::binary);
  *ok = static_cast<bool>(in);
  std::ostringstream buf;
  if (*ok) buf << in.rdbuf();
  return buf.str();
}

// A config value as text: strings as they are, numbers as JSON prints them.
std::string JsonText(const nlohmann::json& j, const char* key) {
  if (!j.is_object() || !j.contains(key)) return "";
  const nlohmann::json& v = j[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number()) return v.dump();
  return "";
}

template <typename T>
std::optional<T> JsonNumber(const nlohmann::json& j, const char* key) {
  if (!j.contains(key) || !j[key].is_number()) return std::nullopt;
  return j[key].get<T>();
}

void ConfigFromYaml(const std::string& path, RunInfo* info) {
  try {
    const YAML::Node root = YAML::LoadFile(path);
    auto text = [&](const YAML::Node& n) {
      return n && n.IsScalar() ? n.as<std::string>() : std::string();
    };
    info->model = text(root["model"]);
    info->estimator = text(root["estimator"]);
    info->clients = text(root["clients"]);
    info->rounds = text(root["rounds"]);
    info->lr = text(root["lr"]);
    const YAML::Node dataset = root["dataset"];
    if (dataset && dataset.IsMap()) info->dataset = text(dataset["name"]);
  } catch (const YAML::Exception&) {
    // Highlights are optional: an unreadable config.yaml leaves them empty.
  }
}

absl::Status ReadSummary(const std::string& dir, RunInfo* info) {
  const std::string path = dir + "/summary.json";
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    info->status = "no summary.json (running or crashed)";
    if (fs::exists(dir + "/config.yaml", ec)) {
      ConfigFromYaml(dir + "/config.yaml", info);
    }
    return absl::OkStatus();
  }
  bool ok = false;
  const std::string text = ReadWholeFile(path, &ok);
  if (!ok)
    return absl::PermissionDeniedError(absl::StrCat("cannot read ", path));
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        path,
        " is not a JSON object (it is written atomically, so something "
        "else wrote or damaged it)"));
  }
  // The shared reader of summary.json (run_summary.h): federated,
  // decentralized and central runs alike.
  absl::StatusOr<RunSummary> core = ParseRunSummary(text);
  if (!core.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", core.status().message()));
  }
  info->has_summary = true;
  info->link = JsonText(j, "link");
  info->final_test_acc = core->final_test_acc;
  info->best_test_acc = core->best_test_acc;
  info->regression = core->task == "regression";
  info->final_test_rmse = core->final_test_rmse;
  info->wall_s = core->wall_s;
  info->bytes_up_total = core->bytes_up;
  info->bytes_down_total = core->bytes_down;
  info->done = core->rounds;
  if (!core->error.empty()) {
    info->status = "failed: " + core->error;
  } else if (core->interrupted) {
    info->status = "interrupted";
  } else if (core->stopped_at_target) {
    info->status = "stopped at target";
  } else {
    info->status = "finished";
  }
  for (const TargetOutcome& t : core->targets) {
    TargetResult r;
    r.target = t.target;
    r.reached = t.reached;
    r.index = t.round;
    r.wall_s = t.wall_s;
    if (t.reached && (t.bytes_up > 0 || t.bytes_down > 0)) {
      r.bytes = t.bytes_up + t.bytes_down;
    }
    info->targets.push_back(r);
  }
  const nlohmann::json config = j.value("config", nlohmann::json());
  if (config.is_object()) {
    info->model = JsonText(config, "model");
    info->estimator = JsonText(config, "estimator");
    info->clients = JsonText(config, "clients");
    info->rounds = JsonText(config, "rounds");
    info->lr = JsonText(config, "lr");
    info->dataset = JsonText(config.value("dataset", nlohmann::json()), "name");
  } else if (fs::exists(dir + "/config.yaml", ec)) {
    ConfigFromYaml(dir + "/config.yaml", info);
  }
  // A central run's summary names its mode; its config says nothing of
  // clients.
  if (core->mode == "central") info->clients = "central";
  return absl::OkStatus();
}

std::string Num(double v, int digits = 4) {
  return absl::StrFormat("%.*g", digits, v);
}

// Pixel coordinates: one decimal is finer than a screen pixel.
void AppendPoint(double x, double y, std::string* out) {
  char buf[64];
  const int n = std::snprintf(buf, sizeof buf, "%s%.1f,%.1f",
                              out->empty() ? "" : " ", x, y);
  out->append(buf, static_cast<size_t>(n));
}

struct AxisPlan {
  Scale scale;
  std::vector<double> ticks;
  bool has_zero_tick = false;  // log axis with values <= 0: "0" at the start
};

AxisPlan PlanAxis(const std::vector<double>& values, double log_ratio,
                  bool allow_nonpositive_log, double r0, double r1,
                  int tick_target) {
  AxisPlan plan;
  plan.scale.r0 = r0;
  plan.scale.r1 = r1;
  double lo = 0, hi = 1, pos_lo = 0, pos_hi = 0;
  bool any = false, any_pos = false, any_nonpos = false;
  for (double v : values) {
    if (!std::isfinite(v)) continue;
    lo = any ? std::min(lo, v) : v;
    hi = any ? std::max(hi, v) : v;
    any = true;
    if (v > 0) {
      pos_lo = any_pos ? std::min(pos_lo, v) : v;
      pos_hi = any_pos ? std::max(pos_hi, v) : v;
      any_pos = true;
    } else {
      any_nonpos = true;
    }
  }
  if (!any) lo = 0, hi = 1;
  const bool use_log = log_ratio > 0 && any_pos &&
                       pos_hi / pos_lo >= log_ratio &&
                       (allow_nonpositive_log || !any_nonpos);
  if (use_log) {
    plan.ticks = LogTicks(pos_lo, pos_hi);
    plan.scale.log = true;
    plan.scale.lo = plan.ticks.front();
    plan.scale.hi = plan.ticks.back();
    if (any_nonpos) {
      // Room for the "0" label beside the first decade's.
      plan.scale.zero_gap = std::max(48.0, 0.08 * std::abs(r1 - r0));
      plan.has_zero_tick = true;
    }
  } else {
    plan.ticks = NiceTicks(lo, hi, tick_target);
    plan.scale.lo = plan.ticks.front();
    plan.scale.hi = plan.ticks.back();
  }
  return plan;
}

std::string IndexLabel(const std::vector<RunData>& runs) {
  bool round = false, step = false;
  for (const RunData& r : runs) {
    (r.metrics.index_key == "step" ? step : round) = true;
  }
  if (round && step) return "round (step for central runs)";
  return step ? "step" : "round";
}

std::string Optional(const std::optional<double>& v, int digits = 4) {
  return v ? Num(*v, digits) : "—";
}

std::string TargetsText(const RunData& run) {
  if (run.info.targets.empty()) return "—";
  const char* unit = run.metrics.index_key == "step" ? "step" : "round";
  std::vector<std::string> parts;
  for (const TargetResult& t : run.info.targets) {
    if (!t.reached) {
      parts.push_back(absl::StrCat(Num(t.target), ": not reached"));
      continue;
    }
    std::string s = absl::StrCat(Num(t.target), ": ", unit, " ", t.index, ", ",
                                 absl::StrFormat("%.1f", t.wall_s), " s");
    if (t.bytes && *t.bytes > 0) {
      absl::StrAppend(
          &s, ", ",
          FormatTick(static_cast<double>(*t.bytes), TickFormat::kBytes));
    }
    parts.push_back(s);
  }
  return absl::StrJoin(parts, "; ");
}

std::string Cell(const std::string& text) {
  return absl::StrCat("<td>", EscapeHtml(text.empty() ? "—" : text), "</td>");
}

constexpr char kStyle[] = R"css(
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       margin: 24px; color: #222; background: #fff; }
h1 { font-size: 22px; margin: 0 0 8px 0; }
h2 { font-size: 17px; margin: 24px 0 8px 0; }
p.note { color: #555; font-size: 13px; max-width: 900px; }
table.summary { border-collapse: collapse; font-size: 13px; }
table.summary th, table.summary td { border: 1px solid #ccc; padding: 4px 8px;
       text-align: left; vertical-align: top; }
table.summary th { background: #f3f3f3; }
table.summary td.num { text-align: right; font-variant-numeric: tabular-nums; }
span.swatch { display: inline-block; width: 12px; height: 12px;
       margin-right: 6px; vertical-align: -1px; }
div.charts svg { display: block; margin: 12px 0; }
svg .title { font-size: 15px; font-weight: 600; }
svg .tick { font-size: 11px; fill: #444; }
svg .label { font-size: 12px; fill: #222; }
svg .legend { font-size: 12px; fill: #222; }
svg .grid { stroke: #e6e6e6; stroke-width: 1; }
svg .axis { stroke: #444; stroke-width: 1; }
ul.warnings { font-size: 13px; color: #8a4b00; }
)css";

}  // namespace

absl::StatusOr<ParsedMetrics> ParseMetricsJsonl(absl::string_view text,
                                                const std::string& origin,
                                                bool strict) {
  ParsedMetrics out;
  size_t pos = 0;
  int64_t line_no = 0;
  while (pos < text.size()) {
    const size_t nl = text.find('\n', pos);
    const bool complete = nl != absl::string_view::npos;
    absl::string_view line =
        text.substr(pos, complete ? nl - pos : absl::string_view::npos);
    pos = complete ? nl + 1 : text.size();
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    MetricsRow row;
    std::string reason;
    if (ParseRow(line, &out.index_key, &row, &reason)) {
      out.rows.push_back(std::move(row));
      continue;
    }
    if (!complete) {
      out.truncated_tail = true;
      break;
    }
    std::string message = absl::StrCat(origin, ":", line_no, ": ", reason);
    if (strict) return absl::InvalidArgumentError(message);
    out.skipped.push_back(std::move(message));
  }
  return out;
}

absl::StatusOr<RunData> LoadRun(const std::string& dir, bool strict) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) {
    return absl::NotFoundError(
        absl::StrCat("run folder ", dir, " does not exist"));
  }
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat(dir, " is not a folder"));
  }
  RunData run;
  run.dir = dir;
  const std::string path = dir + "/metrics.jsonl";
  if (!fs::exists(path, ec)) {
    return absl::NotFoundError(
        absl::StrCat(dir, " has no metrics.jsonl (not a fedfwd run folder?)"));
  }
  bool ok = false;
  const std::string text = ReadWholeFile(path, &ok);
  if (!ok)
    return absl::PermissionDeniedError(absl::StrCat("cannot read ", path));
  ASSIGN_OR_RETURN(run.metrics, ParseMetricsJsonl(text, path, strict));
  if (run.metrics.rows.empty()) {
    std::string why =
        run.metrics.skipped.empty()
            ? " (the run may have just started)"
            : absl::StrCat(" (", run.metrics.skipped.size(),
                           " malformed lines skipped, the first: ",
                           run.metrics.skipped.front(), ")");
    return absl::FailedPreconditionError(
        absl::StrCat(path, " holds no metrics rows", why));
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    const double mtime = static_cast<double>(st.st_mtim.tv_sec) +
                         1e-9 * static_cast<double>(st.st_mtim.tv_nsec);
    run.start_unix = mtime - run.metrics.rows.back().wall_s;
  }
  RETURN_IF_ERROR(ReadSummary(dir, &run.info));
  return run;
}

std::vector<std::string> UniqueRunNames(const std::vector<std::string>& dirs) {
  std::vector<std::string> names;
  std::set<std::string> used;
  for (const std::string& dir : dirs) {
    std::error_code ec;
    fs::path p = fs::absolute(dir.empty() ? "." : dir, ec);
    if (ec) p = dir;
    std::string s = p.lexically_normal().string();
    while (s.size() > 1 && s.back() == '/') s.pop_back();
    std::string base = fs::path(s).filename().string();
    if (base.empty()) base = s;
    std::string name = base;
    for (int k = 2; used.count(name) > 0; ++k)
      name = absl::StrCat(base, "-", k);
    used.insert(name);
    names.push_back(name);
  }
  return names;
}

std::string EscapeHtml(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

double Scale::Map(double v) const {
  if (!log) {
    const double t = hi == lo ? 0.5 : (v - lo) / (hi - lo);
    return r0 + t * (r1 - r0);
  }
  if (v <= 0) return r0;
  const double start = r0 + (r1 >= r0 ? zero_gap : -zero_gap);
  const double l0 = std::log10(lo), l1 = std::log10(hi);
  const double t = l1 == l0 ? 0.5 : (std::log10(v) - l0) / (l1 - l0);
  return start + t * (r1 - start);
}

std::vector<double> NiceTicks(double lo, double hi, int target) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) return {0, 1};
  if (lo > hi) std::swap(lo, hi);
  if (hi == lo) {
    const double pad = lo == 0 ? 1 : std::abs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  const double raw = (hi - lo) / std::max(1, target - 1);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / mag;
  const double step = (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
  const double first = std::floor(lo / step);
  const double last = std::ceil(hi / step);
  std::vector<double> ticks;
  for (double k = first; k <= last + 0.5; k += 1) {
    double t = k * step;
    if (std::abs(t) < step * 1e-9) t = 0;
    ticks.push_back(t);
  }
  return ticks;
}

std::vector<double> LogTicks(double lo, double hi) {
  if (!(lo > 0) || !std::isfinite(hi)) return {1, 10};
  if (hi < lo) std::swap(lo, hi);
  // The epsilon keeps an exact power of ten (1000 = 10^3) its own decade.
  const int e0 = static_cast<int>(std::floor(std::log10(lo) + 1e-9));
  int e1 = static_cast<int>(std::ceil(std::log10(hi) - 1e-9));
  if (e1 <= e0) e1 = e0 + 1;
  const int decades = e1 - e0;
  const int stride = std::max(1, (decades + 7) / 8);
  std::vector<double> ticks;
  for (int e = e0; e <= e1; ++e) {
    const double p = std::pow(10.0, e);
    if ((e - e0) % stride == 0 || e == e1) ticks.push_back(p);
    if (decades < 3 && e < e1) {
      ticks.push_back(2 * p);
      ticks.push_back(5 * p);
    }
  }
  return ticks;
}

std::string FormatTick(double v, TickFormat format) {
  if (format == TickFormat::kBytes) {
    static constexpr const char* kUnits[] = {"B", "kB", "MB", "GB", "TB", "PB"};
    int u = 0;
    double x = v;
    while (std::abs(x) >= 1000 && u < 5) {
      x /= 1000;
      ++u;
    }
    return absl::StrFormat("%.3g %s", x, kUnits[u]);
  }
  const double r = std::round(v);
  if (std::abs(v) < 1e6 &&
      std::abs(v - r) <= 1e-9 * std::max(1.0, std::abs(v))) {
    return absl::StrCat(static_cast<int64_t>(r));
  }
  return Num(v);
}

std::string RenderSvgChart(const ChartSpec& spec,
                           const std::vector<Series>& series) {
  const double ml = 78, mr = 220, mt = 40, mb = 54;
  const double width = spec.width;
  const double height =
      std::max<double>(spec.height, mt + mb + 22.0 * series.size() + 10);
  const double x0 = ml, x1 = width - mr, y0 = height - mb, y1 = mt;

  std::vector<double> xs, ys;
  for (const Series& s : series) {
    for (const auto& [x, y] : s.points) {
      xs.push_back(x);
      ys.push_back(y);
    }
  }
  const AxisPlan ax = PlanAxis(xs, spec.log_x_ratio, true, x0, x1, 7);
  const AxisPlan ay = PlanAxis(ys, spec.log_y_ratio, false, y0, y1, 6);
  const std::string id = EscapeHtml(spec.id);
  const std::string title = EscapeHtml(spec.title);

  std::string out;
  absl::StrAppendFormat(
      &out,
      "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" "
      "data-chart=\"%s\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
      "role=\"img\" aria-labelledby=\"%s-title\">\n"
      "<title id=\"%s-title\">%s</title>\n"
      "<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"#ffffff\"/>\n"
      "<text class=\"title\" x=\"%.1f\" y=\"24\">%s</text>\n",
      id, static_cast<int>(width), static_cast<int>(height),
      static_cast<int>(width), static_cast<int>(height), id, id, title,
      static_cast<int>(width), static_cast<int>(height), x0, title);

  // Grid lines and tick labels.
  out += "<g class=\"ticks\">\n";
  auto x_tick = [&](double px, const std::string& label) {
    absl::StrAppendFormat(
        &out,
        "<line class=\"grid\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>"
        "<text class=\"tick\" x=\"%.1f\" y=\"%.1f\" "
        "text-anchor=\"middle\">%s</text>\n",
        px, y1, px, y0 + 5, px, y0 + 18, EscapeHtml(label));
  };
  auto y_tick = [&](double py, const std::string& label) {
    absl::StrAppendFormat(
        &out,
        "<line class=\"grid\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>"
        "<text class=\"tick\" x=\"%.1f\" y=\"%.1f\" "
        "text-anchor=\"end\">%s</text>\n",
        x0 - 5, py, x1, py, x0 - 8, py + 4, EscapeHtml(label));
  };
  if (ax.has_zero_tick) x_tick(x0, FormatTick(0, spec.x_format));
  for (double t : ax.ticks)
    x_tick(ax.scale.Map(t), FormatTick(t, spec.x_format));
  if (ay.has_zero_tick) y_tick(y0, FormatTick(0, spec.y_format));
  for (double t : ay.ticks)
    y_tick(ay.scale.Map(t), FormatTick(t, spec.y_format));
  out += "</g>\n";

  // Axes and their labels.
  absl::StrAppendFormat(
      &out,
      "<line class=\"axis\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n"
      "<line class=\"axis\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n"
      "<text class=\"label\" x=\"%.1f\" y=\"%.1f\" "
      "text-anchor=\"middle\">%s</text>\n"
      "<text class=\"label\" transform=\"translate(18 %.1f) rotate(-90)\" "
      "text-anchor=\"middle\">%s</text>\n",
      x0, y0, x1, y0, x0, y0, x0, y1, (x0 + x1) / 2, height - 14,
      EscapeHtml(spec.x_label + (ax.scale.log ? " (log scale)" : "")),
      (y0 + y1) / 2,
      EscapeHtml(spec.y_label + (ay.scale.log ? " (log scale)" : "")));

  // Series, clipped to the plot area (with room for the line width).
  absl::StrAppendFormat(
      &out,
      "<defs><clipPath id=\"%s-clip\"><rect x=\"%.1f\" "
      "y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"/></clipPath>",
      id, x0 - 4, y1 - 4, x1 - x0 + 8, y0 - y1 + 8);
  std::vector<std::vector<std::pair<double, double>>> drawn(series.size());
  for (size_t i = 0; i < series.size(); ++i) {
    const auto& pts = series[i].points;
    const int64_t n = static_cast<int64_t>(pts.size());
    if (spec.max_points >= 2 && n > spec.max_points) {
      const int64_t k = (n - 1 + spec.max_points - 2) / (spec.max_points - 1);
      for (int64_t j = 0; j < n; j += k) drawn[i].push_back(pts[j]);
      if ((n - 1) % k != 0) drawn[i].push_back(pts.back());
    } else {
      drawn[i] = pts;
    }
    if (static_cast<int64_t>(drawn[i].size()) <= kMarkerLimit) {
      absl::StrAppendFormat(
          &out,
          "<marker id=\"%s-m%d\" viewBox=\"0 0 8 8\" refX=\"4\" refY=\"4\" "
          "markerWidth=\"7\" markerHeight=\"7\" markerUnits=\"userSpaceOnUse\">"
          "<circle cx=\"4\" cy=\"4\" r=\"3.5\" fill=\"%s\"/></marker>",
          id, i, kPalette[i % kPaletteSize]);
    }
  }
  out += "</defs>\n";
  absl::StrAppendFormat(
      &out, "<g class=\"series\" clip-path=\"url(#%s-clip)\">\n", id);
  for (size_t i = 0; i < series.size(); ++i) {
    const Series& s = series[i];
    const auto& pts = drawn[i];
    std::string coords;
    coords.reserve(pts.size() * 12);
    for (const auto& [x, y] : pts) {
      AppendPoint(ax.scale.Map(x), ay.scale.Map(y), &coords);
    }
    const char* dash = kDashes[(i / kPaletteSize) % kDashCount];
    std::string hover = absl::StrCat(s.run, ": ", pts.size(), " points");
    if (pts.size() != s.points.size()) {
      absl::StrAppend(&hover, " drawn of ", s.points.size());
    }
    if (!s.points.empty()) {
      absl::StrAppend(&hover, "; last ", spec.x_label, " ",
                      FormatTick(s.points.back().first, spec.x_format), ", ",
                      spec.y_label, " ", Num(s.points.back().second));
    }
    absl::StrAppendFormat(
        &out,
        "<polyline class=\"series\" data-run=\"%s\" data-points=\"%d\" "
        "data-rows=\"%d\" fill=\"none\" stroke=\"%s\" stroke-width=\"1.8\" "
        "stroke-linejoin=\"round\"%s%s points=\"%s\"><title>%s</title>"
        "</polyline>\n",
        EscapeHtml(s.run), pts.size(), s.points.size(),
        kPalette[i % kPaletteSize],
        *dash ? absl::StrCat(" stroke-dasharray=\"", dash, "\"") : "",
        static_cast<int64_t>(pts.size()) <= kMarkerLimit
            ? absl::StrFormat(" marker-start=\"url(#%s-m%d)\" "
                              "marker-mid=\"url(#%s-m%d)\" "
                              "marker-end=\"url(#%s-m%d)\"",
                              id, i, id, i, id, i)
            : "",
        coords, EscapeHtml(hover));
  }
  out += "</g>\n";

  // Legend, right of the plot; long names are cut, the full one hovers.
  out += "<g class=\"legend\">\n";
  for (size_t i = 0; i < series.size(); ++i) {
    const double ly = y1 + 8 + 22.0 * i;
    const double lx = x1 + 18;
    const char* dash = kDashes[(i / kPaletteSize) % kDashCount];
    std::string shown = series[i].run;
    if (shown.size() > 26) {
      size_t cut = 24;  // not inside a UTF-8 sequence
      while (cut > 0 &&
             (static_cast<unsigned char>(shown[cut]) & 0xC0) == 0x80) {
        --cut;
      }
      shown = shown.substr(0, cut) + "…";
    }
    absl::StrAppendFormat(
        &out,
        "<g><title>%s</title><line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" "
        "y2=\"%.1f\" stroke=\"%s\" stroke-width=\"3\"%s/>"
        "<text class=\"legend\" x=\"%.1f\" y=\"%.1f\">%s</text></g>\n",
        EscapeHtml(series[i].run), lx, ly, lx + 24, ly,
        kPalette[i % kPaletteSize],
        *dash ? absl::StrCat(" stroke-dasharray=\"", dash, "\"") : "", lx + 30,
        ly + 4, EscapeHtml(shown));
  }
  out += "</g>\n</svg>\n";
  return out;
}

std::vector<std::pair<double, double>> AccuracyByIndex(const RunData& run) {
  std::vector<std::pair<double, double>> pts;
  for (const MetricsRow& r : run.metrics.rows) {
    if (r.test_acc) pts.emplace_back(static_cast<double>(r.index), *r.test_acc);
  }
  return pts;
}

std::vector<std::pair<double, double>> AccuracyByWallTime(const RunData& run) {
  std::vector<std::pair<double, double>> pts;
  for (const MetricsRow& r : run.metrics.rows) {
    if (r.test_acc) pts.emplace_back(r.wall_s, *r.test_acc);
  }
  return pts;
}

std::vector<std::pair<double, double>> AccuracyByBytes(const RunData& run) {
  std::vector<std::pair<double, double>> pts;
  double total = 0;
  for (const MetricsRow& r : run.metrics.rows) {
    total +=
        static_cast<double>(r.bytes_up) + static_cast<double>(r.bytes_down);
    if (r.test_acc) pts.emplace_back(total, *r.test_acc);
  }
  return pts;
}

std::vector<std::pair<double, double>> LossByIndex(const RunData& run) {
  std::vector<std::pair<double, double>> pts;
  for (const MetricsRow& r : run.metrics.rows) {
    if (r.train_loss) {
      pts.emplace_back(static_cast<double>(r.index), *r.train_loss);
    }
  }
  return pts;
}

std::string RenderReportHtml(const std::vector<RunData>& runs,
                             const ReportOptions& options) {
  std::string out;
  const std::string title = EscapeHtml(options.title);
  absl::StrAppend(&out,
                  "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n"
                  "<meta charset=\"utf-8\">\n<title>",
                  title, "</title>\n<style>", kStyle,
                  "</style>\n</head>\n<body>\n<h1>", title, "</h1>\n");
  absl::StrAppend(
      &out, "<p class=\"note\">", runs.size(),
      " run(s). Accuracy charts: one point per metrics.jsonl row with a "
      "test_acc (rounds that were evaluated); bytes are those sent up and "
      "down, summed over all rows so far. Loss chart: one point per row with "
      "a train_loss. Hover a line for its run and point count.",
      options.max_points > 0
          ? absl::StrCat(" Series longer than ", options.max_points,
                         " points are thinned to at most that many "
                         "(every k-th point and the last).")
          : "",
      "</p>\n");

  // Summary table. Regressions score by R^2 (in the accuracy columns) and
  // add their RMSE.
  bool any_regression = false, all_regression = !runs.empty();
  for (const RunData& r : runs) {
    any_regression |= r.info.regression;
    all_regression &= r.info.regression;
  }
  const std::string score = all_regression   ? "test R²"
                            : any_regression ? "test acc (R²)"
                                             : "test acc";
  absl::StrAppend(
      &out,
      "<h2>Runs</h2>\n<table class=\"summary\">\n<tr><th>run</th><th>model"
      "</th><th>dataset</th><th>estimator</th><th>clients</th><th>rounds"
      "</th><th>lr</th><th>final ",
      score, "</th><th>best ", score, "</th>",
      any_regression ? "<th>final test RMSE</th>" : "",
      "<th>wall (s)</th><th>bytes up</th><th>bytes down</th>"
      "<th>targets reached</th><th>status</th></tr>\n");
  for (size_t i = 0; i < runs.size(); ++i) {
    const RunData& r = runs[i];
    const RunInfo& info = r.info;
    auto bytes = [](const std::optional<int64_t>& b) {
      return b ? FormatTick(static_cast<double>(*b), TickFormat::kBytes)
               : std::string("—");
    };
    std::string rounds = info.rounds;
    if (info.done && !info.rounds.empty() &&
        absl::StrCat(*info.done) != info.rounds) {
      rounds = absl::StrCat(*info.done, " of ", info.rounds);
    }
    const char* dash = kDashes[(i / kPaletteSize) % kDashCount];
    absl::StrAppend(
        &out, "<tr data-run=\"", EscapeHtml(r.name), "\"><td title=\"",
        EscapeHtml(r.dir), "\"><span class=\"swatch\" style=\"background:",
        kPalette[i % kPaletteSize], *dash ? ";outline:1px dashed #000" : "",
        "\"></span>", EscapeHtml(r.name), "</td>", Cell(info.model),
        Cell(info.dataset), Cell(info.estimator), Cell(info.clients),
        Cell(rounds), Cell(info.lr));
    absl::StrAppend(
        &out, "<td class=\"num\">", Optional(info.final_test_acc), "</td>",
        "<td class=\"num\">", Optional(info.best_test_acc), "</td>",
        any_regression ? absl::StrCat("<td class=\"num\">",
                                      Optional(info.final_test_rmse), "</td>")
                       : "",
        "<td class=\"num\">",
        info.wall_s ? absl::StrFormat("%.1f", *info.wall_s) : "—", "</td>",
        "<td class=\"num\">", bytes(info.bytes_up_total), "</td>",
        "<td class=\"num\">", bytes(info.bytes_down_total), "</td>",
        Cell(TargetsText(r)), Cell(info.status), "</tr>\n");
  }
  out += "</table>\n";

  // Charts.
  std::vector<Series> acc_index, acc_wall, acc_bytes, loss;
  for (const RunData& r : runs) {
    acc_index.push_back({r.name, AccuracyByIndex(r)});
    acc_wall.push_back({r.name, AccuracyByWallTime(r)});
    acc_bytes.push_back({r.name, AccuracyByBytes(r)});
    loss.push_back({r.name, LossByIndex(r)});
  }
  const std::string index_label = IndexLabel(runs);
  ChartSpec spec;
  spec.max_points = options.max_points;
  out += "<h2>Charts</h2>\n<div class=\"charts\">\n";
  spec.id = "acc_round";
  const std::string score_name = all_regression ? "Test R²" : "Test accuracy";
  spec.title = absl::StrCat(score_name, " vs ", index_label);
  spec.x_label = index_label;
  spec.y_label = all_regression ? "test R²" : "test accuracy";
  out += RenderSvgChart(spec, acc_index);
  spec.id = "acc_wall";
  spec.title = absl::StrCat(score_name, " vs wall time");
  spec.x_label = "wall time (s)";
  out += RenderSvgChart(spec, acc_wall);
  spec.id = "acc_bytes";
  spec.title = absl::StrCat(score_name, " vs bytes communicated");
  spec.x_label = "bytes up + down";
  spec.x_format = TickFormat::kBytes;
  // Logarithmic from a 10x spread on: a forward-gradient run's bytes are
  // mostly its join snapshot and would be one vertical line beside FedAvg.
  spec.log_x_ratio = 10;
  out += RenderSvgChart(spec, acc_bytes);
  spec.id = "loss_round";
  spec.title = absl::StrCat("Training loss vs ", index_label);
  spec.x_label = index_label;
  spec.y_label = "training loss";
  spec.x_format = TickFormat::kNumber;
  spec.log_x_ratio = 0;
  spec.log_y_ratio = 1000;
  out += RenderSvgChart(spec, loss);
  if (any_regression) {
    std::vector<Series> rmse;
    for (const RunData& r : runs) {
      std::vector<std::pair<double, double>> pts;
      for (const MetricsRow& row : r.metrics.rows) {
        if (row.test_rmse) {
          pts.emplace_back(static_cast<double>(row.index), *row.test_rmse);
        }
      }
      rmse.push_back({r.name, std::move(pts)});
    }
    spec.id = "rmse_round";
    spec.title = absl::StrCat("Test RMSE vs ", index_label);
    spec.y_label = "test RMSE";
    out += RenderSvgChart(spec, rmse);
  }
  out += "</div>\n";

  // Runs over emulated links (fedfwd-run --link): accuracy against wall
  // time, one chart per link, the runs of that link side by side, so that
  // the crossover of the algorithms on each link shows.
  std::vector<std::string> links;  // in the order first seen
  bool any_link = false;
  for (const RunData& r : runs) {
    const std::string link = r.info.link.empty() ? "loopback" : r.info.link;
    any_link |= !r.info.link.empty();
    if (std::find(links.begin(), links.end(), link) == links.end()) {
      links.push_back(link);
    }
  }
  if (any_link) {
    out += "<h2>Test accuracy vs wall time, per link</h2>\n";
    out += "<div class=\"charts\">\n";
    ChartSpec link_spec;
    link_spec.max_points = options.max_points;
    link_spec.x_label = "wall time (s)";
    link_spec.y_label = "test accuracy";
    for (size_t l = 0; l < links.size(); ++l) {
      std::vector<Series> on_link;
      for (const RunData& r : runs) {
        const std::string link = r.info.link.empty() ? "loopback" : r.info.link;
        if (link == links[l])
          on_link.push_back({r.name, AccuracyByWallTime(r)});
      }
      link_spec.id = absl::StrCat("acc_wall_link", l);
      link_spec.title = absl::StrCat("Link ", links[l]);
      out += RenderSvgChart(link_spec, on_link);
    }
    out += "</div>\n";
  }

  // What was skipped, so a chart never silently hides data.
  std::vector<std::string> warnings;
  for (const RunData& r : runs) {
    for (const std::string& s : r.metrics.skipped) {
      warnings.push_back(absl::StrCat(r.name, ": skipped ", s));
    }
    if (r.metrics.truncated_tail) {
      warnings.push_back(absl::StrCat(
          r.name, ": the last line of ", r.dir,
          "/metrics.jsonl is incomplete (run still writing?) and was ignored"));
    }
  }
  if (!warnings.empty()) {
    out += "<h2>Warnings</h2>\n<ul class=\"warnings\">\n";
    for (const std::string& w : warnings) {
      absl::StrAppend(&out, "<li>", EscapeHtml(w), "</li>\n");
    }
    out += "</ul>\n";
  }
  out += "</body>\n</html>\n";
  return out;
}

absl::StatusOr<std::string> ExportTensorBoard(const RunData& run,
                                              const std::string& root,
                                              const std::string& host) {
  const std::string dir = root + "/" + run.name;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create ", dir, ": ", ec.message()));
  }
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.find("tfevents") != std::string::npos) {
      return absl::AlreadyExistsError(absl::StrCat(
          dir, " already holds the event file ", name,
          "; TensorBoard would show both, so remove it or export elsewhere"));
    }
  }
  if (ec) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot list ", dir, ": ", ec.message()));
  }
  EventFileBuilder builder(run.start_unix, "fedfwd-report");
  double up = 0, down = 0;
  for (const MetricsRow& row : run.metrics.rows) {
    up += static_cast<double>(row.bytes_up);
    down += static_cast<double>(row.bytes_down);
    std::vector<std::pair<std::string, double>> values = row.scalars;
    values.emplace_back("bytes_up_cumulative", up);
    values.emplace_back("bytes_down_cumulative", down);
    builder.AddScalars(row.index, run.start_unix + row.wall_s, values);
  }
  const std::string path = dir + "/" + EventFileName(run.start_unix, host);
  RETURN_IF_ERROR(WriteFileDurably(path, builder.bytes()));
  return path;
}

}  // namespace fedfwd
