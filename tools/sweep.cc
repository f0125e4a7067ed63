#include "tools/sweep.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "yaml-cpp/yaml.h"

namespace fedfwd {
namespace {

namespace fs = std::filesystem;

constexpr char kPrefix[] = "[fedfwd-run] ";
constexpr int kMaxSeedCount = 1000;
constexpr size_t kMaxCells = 10000;
constexpr size_t kMaxNameBytes = 200;

void WriteLine(FILE* stream, absl::string_view text) {
  std::fwrite(text.data(), 1, text.size(), stream);
  std::fputc('\n', stream);
  std::fflush(stream);
}
void Info(absl::string_view text) {
  WriteLine(stdout, absl::StrCat(kPrefix, text));
}
void Error(absl::string_view text) {
  WriteLine(stderr, absl::StrCat(kPrefix, text));
}

// The node as one line of YAML: flow style, quoted where plain text would
// read back as something else.
std::string FlowYaml(const YAML::Node& node) {
  YAML::Emitter out;
  out << YAML::Flow << node;
  return out.c_str();
}

absl::Status SweepError(const std::string& origin, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(origin, ": ", what));
}

absl::Status ParseSeeds(const YAML::Node& node, const std::string& origin,
                        SweepSpec* spec) {
  if (node.IsScalar()) {
    int count = 0;
    if (!absl::SimpleAtoi(node.Scalar(), &count) || count < 1 ||
        count > kMaxSeedCount) {
      return SweepError(
          origin,
          absl::StrCat("sweep.seeds: expected a count in [1, ", kMaxSeedCount,
                       "] or a list of seeds, got '", node.Scalar(), "'"));
    }
    spec->seed_count = count;
    return absl::OkStatus();
  }
  if (!node.IsSequence() || node.size() == 0) {
    return SweepError(origin,
                      "sweep.seeds: expected a count (seeds: 3) or a non-empty "
                      "list of seeds (seeds: [1, 2, 3])");
  }
  std::set<uint64_t> seen;
  for (const YAML::Node& item : node) {
    uint64_t seed = 0;
    const std::string text = item.IsScalar() ? item.Scalar() : FlowYaml(item);
    if (!item.IsScalar() || text.empty() || text[0] == '-' ||
        !absl::SimpleAtoi(text, &seed)) {
      return SweepError(
          origin, absl::StrCat("sweep.seeds: '", text,
                               "' is not a seed (a non-negative integer)"));
    }
    if (!seen.insert(seed).second) {
      return SweepError(origin, absl::StrCat("sweep.seeds: seed ", seed,
                                             " is listed "
                                             "twice"));
    }
    spec->seed_list.push_back(seed);
  }
  return absl::OkStatus();
}

absl::Status ParseAxis(const std::string& key, const YAML::Node& node,
                       const std::string& origin, SweepAxis* axis) {
  const std::string where = absl::StrCat("sweep.", key);
  if (key == "seed") {
    return SweepError(origin,
                      "sweep.seed: list seeds as `seeds: [1, 2, 3]` or give "
                      "their number, `seeds: 3`");
  }
  if (node.IsMap()) {
    return SweepError(
        origin,
        absl::StrCat(where,
                     " is a map; name each swept key in full with dots, e.g. "
                     "tangent.distribution: [normal, rademacher]"));
  }
  if (!node.IsSequence() || node.size() == 0) {
    return SweepError(
        origin, absl::StrCat(
                    where, ": expected a non-empty list of values, e.g. ", key,
                    ": [a, b]", node.IsScalar() ? ", got a single value" : ""));
  }
  axis->key = key;
  std::set<std::string> seen;
  for (const YAML::Node& item : node) {
    if (item.IsMap() || item.IsNull() || !item.IsDefined()) {
      return SweepError(
          origin, absl::StrCat(where,
                               ": each value must be a scalar or a list, "
                               "got ",
                               item.IsMap() ? "a map" : "an empty value"));
    }
    std::string shown = item.IsScalar() ? item.Scalar() : FlowYaml(item);
    if (!seen.insert(shown).second) {
      return SweepError(
          origin, absl::StrCat(where, ": value '", shown, "' is listed twice"));
    }
    axis->values.push_back(std::move(shown));
    axis->yaml_values.push_back(FlowYaml(item));
  }
  return absl::OkStatus();
}

// `yaml_text` without the top-level entry `key`. Its lines are blanked
// rather than removed, so the config parser's line numbers still match the
// file. A document where that cannot be done by lines (a flow-style map) is
// emitted again without the entry instead.
std::string BlankSection(const std::string& yaml_text, const YAML::Node& root,
                         const std::string& key) {
  int first = -1;  // 0-based lines [first, end) hold the entry
  int end = -1;
  for (auto it = root.begin(); it != root.end(); ++it) {
    const int line = it->first.Mark().line;
    if (it->first.Scalar() == key) {
      if (it->first.Mark().column == 0) first = line;
    } else if (first >= 0 && line > first && (end < 0 || line < end)) {
      end = line;
    }
  }
  if (first >= 0) {
    std::vector<std::string> lines = absl::StrSplit(yaml_text, '\n');
    if (end < 0) end = static_cast<int>(lines.size());
    for (int i = first; i < end && i < static_cast<int>(lines.size()); ++i) {
      lines[i].clear();
    }
    std::string blanked = absl::StrJoin(lines, "\n");
    // Keys after the entry start at column 0, so nothing else was blanked;
    // checked anyway.
    const YAML::Node check = YAML::Load(blanked);
    if (check.IsMap() && !check[key].IsDefined() &&
        check.size() + 1 == root.size()) {
      return blanked;
    }
  }
  YAML::Node copy = YAML::Clone(root);
  copy.remove(key);
  YAML::Emitter out;
  out << copy;
  return std::string(out.c_str()) + "\n";
}

absl::StatusOr<SplitConfigText> SplitSweepOrThrow(const std::string& yaml_text,
                                                  const std::string& origin) {
  SplitConfigText split;
  split.base_yaml = yaml_text;
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::ParserException&) {
    // Not ours to report: the config parser names the line and column.
    return split;
  }
  if (!root.IsMap() || !root["sweep"].IsDefined()) return split;
  const YAML::Node sweep = root["sweep"];
  // Errors name the file and the line of the entry.
  auto at = [&origin](const YAML::Node& key) {
    return key.Mark().is_null()
               ? origin
               : absl::StrCat(origin, " (line ", key.Mark().line + 1, ")");
  };
  if (!sweep.IsMap() || sweep.size() == 0) {
    return SweepError(at(sweep),
                      "sweep: expected a map of config keys to lists of "
                      "values, e.g. sweep: {lr: [1e-4, 3e-4], seeds: 3}");
  }
  SweepSpec spec;
  std::set<std::string> keys;
  for (auto it = sweep.begin(); it != sweep.end(); ++it) {
    if (!it->first.IsScalar() || it->first.Scalar().empty()) {
      return SweepError(at(it->first),
                        "sweep: every key must be a config key name");
    }
    const std::string key = it->first.Scalar();
    if (!keys.insert(key).second) {
      return SweepError(at(it->first),
                        absl::StrCat("sweep.", key, " is given twice"));
    }
    if (key == "seeds") {
      RETURN_IF_ERROR(ParseSeeds(it->second, at(it->first), &spec));
      continue;
    }
    SweepAxis axis;
    RETURN_IF_ERROR(ParseAxis(key, it->second, at(it->first), &axis));
    spec.axes.push_back(std::move(axis));
  }
  split.base_yaml = BlankSection(yaml_text, root, "sweep");
  split.sweep = std::move(spec);
  return split;
}

// A value as part of a file name: [A-Za-z0-9._+-] kept, list separators
// become '_', brackets, quotes and spaces go, anything else becomes '_'.
std::string SafeValue(absl::string_view value) {
  std::string out;
  for (char c : value) {
    if (absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' ||
        c == '_' || c == '+' || c == '-') {
      out.push_back(c);
    } else if (c == ',') {
      out.push_back('_');
    } else if (c == '[' || c == ']' || c == '"' || c == '\'' ||
               absl::ascii_isspace(static_cast<unsigned char>(c))) {
      continue;
    } else {
      out.push_back('_');
    }
  }
  if (out.empty()) out = "_";
  return out;
}

uint64_t Fnv1a64(absl::string_view text) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

std::string OverrideKey(const std::string& override_text) {
  return override_text.substr(0, override_text.find('='));
}

// %g with up to 6 significant digits: 0.9158, 635.25, 1e-05.
std::string Num(double v) { return absl::StrFormat("%.6g", v); }

std::string MarkdownCell(absl::string_view text) {
  return absl::StrReplaceAll(text, {{"|", "\\|"}, {"\n", " "}});
}

// `decimals` digits after the point; "mean ± std", the mean alone for one
// run, a dash for none.
std::string MeanStdText(const MeanStd& m, int decimals) {
  if (m.n == 0) return "–";
  std::string out = absl::StrFormat("%.*f", decimals, m.mean);
  if (m.n >= 2) {
    absl::StrAppend(&out, " ± ", absl::StrFormat("%.*f", decimals, m.stddev));
  }
  return out;
}

std::string BytesMeanStdText(const MeanStd& m) {
  if (m.n == 0) return "–";
  std::string out = FormatBytes(m.mean);
  if (m.n >= 2) absl::StrAppend(&out, " ± ", FormatBytes(m.stddev));
  return out;
}

bool ReadWholeFile(const std::string& path, std::string* text) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::stringstream buffer;
  buffer << in.rdbuf();
  *text = buffer.str();
  return !in.bad();
}

// Writes to a temporary file beside `path` and renames it over `path`, so a
// reader (or a killed sweep) never sees half a file.
absl::Status WriteFileAtomically(const std::string& path,
                                 const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.close();
    if (!out) return absl::UnavailableError(absl::StrCat("cannot write ", tmp));
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot rename ", tmp, " to ", path, ": ", ec.message()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SplitConfigText> SplitSweep(const std::string& yaml_text,
                                           const std::string& origin) {
  try {
    return SplitSweepOrThrow(yaml_text, origin);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid sweep in ", origin, ": ", e.what()));
  }
}

std::string CellName(const std::vector<std::string>& keys,
                     const std::vector<std::string>& values, uint64_t seed) {
  std::vector<std::string> parts;
  for (size_t i = 0; i < keys.size() && i < values.size(); ++i) {
    parts.push_back(absl::StrCat(keys[i], "=", SafeValue(values[i])));
  }
  parts.push_back(absl::StrCat("seed=", seed));
  std::string name = absl::StrJoin(parts, ",");
  if (name.size() > kMaxNameBytes) {
    const std::string hash = absl::StrFormat("%016x", Fnv1a64(name));
    name = absl::StrCat(name.substr(0, kMaxNameBytes - hash.size() - 1), "-",
                        hash);
  }
  return name;
}

absl::StatusOr<std::vector<SweepCell>> ExpandSweep(const SweepSpec& sweep,
                                                   uint64_t base_seed) {
  std::vector<uint64_t> seeds = sweep.seed_list;
  const bool sweeps_seeds = !seeds.empty() || sweep.seed_count > 0;
  if (seeds.empty()) {
    for (int i = 0; i < sweep.seed_count; ++i) {
      seeds.push_back(base_seed + static_cast<uint64_t>(i));
    }
  }
  if (seeds.empty()) seeds.push_back(base_seed);

  std::vector<std::string> keys;
  size_t combos = 1;
  for (const SweepAxis& axis : sweep.axes) {
    if (axis.values.empty() || axis.values.size() != axis.yaml_values.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("sweep.", axis.key, " has no values"));
    }
    keys.push_back(axis.key);
    combos *= axis.values.size();
    if (combos * seeds.size() > kMaxCells) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the sweep has more than ", kMaxCells, " cells; split it up"));
    }
  }

  std::vector<SweepCell> cells;
  std::map<std::string, std::string> names;  // folder name -> first cell
  std::vector<size_t> pos(sweep.axes.size(), 0);
  for (size_t c = 0; c < combos; ++c) {
    for (uint64_t seed : seeds) {
      SweepCell cell;
      cell.index = static_cast<int>(cells.size());
      cell.seed = seed;
      for (size_t a = 0; a < sweep.axes.size(); ++a) {
        cell.values.push_back(sweep.axes[a].values[pos[a]]);
        cell.overrides.push_back(absl::StrCat(
            sweep.axes[a].key, "=", sweep.axes[a].yaml_values[pos[a]]));
      }
      if (sweeps_seeds) cell.overrides.push_back(absl::StrCat("seed=", seed));
      cell.name = CellName(keys, cell.values, seed);
      const std::string shown = absl::StrJoin(cell.overrides, " ");
      auto [it, fresh] = names.emplace(cell.name, shown);
      if (!fresh) {
        return absl::InvalidArgumentError(
            absl::StrCat("sweep values '", it->second, "' and '", shown,
                         "' give the same folder name ", cell.name,
                         "; make the values differ in letters or digits"));
      }
      cells.push_back(std::move(cell));
    }
    // Odometer: the last key turns fastest.
    for (size_t a = sweep.axes.size(); a-- > 0;) {
      if (++pos[a] < sweep.axes[a].values.size()) break;
      pos[a] = 0;
    }
  }
  return cells;
}

absl::StatusOr<SweepPlan> PlanSweep(
    const std::string& base_yaml, const SweepSpec& sweep,
    const std::string& base_dir, const std::vector<std::string>& user_overrides,
    const std::string& origin) {
  SweepPlan plan;
  plan.sweeps_seeds = !sweep.seed_list.empty() || sweep.seed_count > 0;
  for (const SweepAxis& axis : sweep.axes) plan.keys.push_back(axis.key);
  for (const std::string& o : user_overrides) {
    const std::string key = OverrideKey(o);
    if (std::find(plan.keys.begin(), plan.keys.end(), key) != plan.keys.end()) {
      return absl::InvalidArgumentError(absl::StrCat("--set ", o, ": ", key,
                                                     " is swept by the sweep "
                                                     "section of ",
                                                     origin,
                                                     "; drop one of the two"));
    }
    if (key == "seed" && !sweep.seed_list.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--set ", o, ": the sweep section of ", origin,
          " lists its seeds; drop one of the two (with `seeds: N` a --set "
          "seed=S makes the seeds S..S+N-1)"));
    }
  }
  ASSIGN_OR_RETURN(Config base,
                   ParseConfig(base_yaml, base_dir, user_overrides, origin));

  // Each value on its own first, so the error names the key and value that
  // is wrong rather than a whole cell.
  for (const SweepAxis& axis : sweep.axes) {
    for (size_t v = 0; v < axis.values.size(); ++v) {
      std::vector<std::string> overrides = {
          absl::StrCat(axis.key, "=", axis.yaml_values[v])};
      overrides.insert(overrides.end(), user_overrides.begin(),
                       user_overrides.end());
      absl::StatusOr<Config> c =
          ParseConfig(base_yaml, base_dir, overrides, origin);
      if (!c.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(origin, ": sweep ", axis.key, ": value '",
                         axis.values[v], "': ", c.status().message()));
      }
    }
  }

  ASSIGN_OR_RETURN(std::vector<SweepCell> cells, ExpandSweep(sweep, base.seed));
  std::map<std::string, std::string> by_config;  // config YAML -> cell name
  for (SweepCell& cell : cells) {
    // Sweep values, then --set, then the seed (which --set may shift).
    std::vector<std::string> overrides;
    for (const std::string& o : cell.overrides) {
      if (OverrideKey(o) != "seed") overrides.push_back(o);
    }
    overrides.insert(overrides.end(), user_overrides.begin(),
                     user_overrides.end());
    if (plan.sweeps_seeds)
      overrides.push_back(absl::StrCat("seed=", cell.seed));
    absl::StatusOr<Config> config =
        ParseConfig(base_yaml, base_dir, overrides, origin);
    if (!config.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          origin, ": sweep cell ", cell.name, ": ", config.status().message()));
    }
    config->source_path = origin;
    auto [it, fresh] = by_config.emplace(ConfigToYaml(*config), cell.name);
    if (!fresh) {
      return absl::InvalidArgumentError(absl::StrCat(
          origin, ": sweep cells ", it->second, " and ", cell.name,
          " have the same config (two ways of writing one value?)"));
    }
    plan.cells.push_back({std::move(cell), *std::move(config)});
  }
  return plan;
}

absl::StatusOr<CellState> InspectCellDir(const std::string& dir,
                                         const std::string& config_yaml) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) return CellState::kNew;
  if (!fs::is_directory(dir, ec)) {
    return absl::FailedPreconditionError(
        absl::StrCat(dir,
                     " exists and is not a folder; remove it or use "
                     "another --out"));
  }
  std::string existing;
  if (!ReadWholeFile(dir + "/config.yaml", &existing)) {
    if (fs::is_empty(dir, ec) && !ec) return CellState::kNew;
    return absl::FailedPreconditionError(
        absl::StrCat("folder ", dir,
                     " is not empty and has no config.yaml, so it is not "
                     "a cell of this sweep; remove it or use another --out"));
  }
  if (existing != config_yaml) {
    return absl::FailedPreconditionError(absl::StrCat(
        dir,
        "/config.yaml differs from the config this cell would run (the "
        "config file, its sweep or --set changed since it ran); remove the "
        "folder or use another --out"));
  }
  std::string summary_text;
  if (!ReadWholeFile(dir + "/summary.json", &summary_text)) {
    return CellState::kUnfinished;
  }
  absl::StatusOr<RunSummary> summary = ParseRunSummary(summary_text);
  if (!summary.ok() || summary->interrupted || !summary->error.empty()) {
    return CellState::kUnfinished;
  }
  return CellState::kFinished;
}

std::vector<double> TargetsOf(const std::vector<SweepRow>& rows) {
  std::set<double> targets;
  for (const SweepRow& row : rows) {
    if (!row.summary) continue;
    for (const TargetOutcome& t : row.summary->targets)
      targets.insert(t.target);
  }
  return {targets.begin(), targets.end()};
}

std::string CsvField(absl::string_view text) {
  if (text.find_first_of(",\"\r\n") == absl::string_view::npos) {
    return std::string(text);
  }
  return absl::StrCat("\"", absl::StrReplaceAll(text, {{"\"", "\"\""}}), "\"");
}

std::string ResultsCsv(const std::vector<std::string>& keys,
                       const std::vector<SweepRow>& rows) {
  const std::vector<double> targets = TargetsOf(rows);
  std::vector<std::string> header = keys;
  for (const char* column : {"seed", "final_test_acc", "rounds_done", "wall_s",
                             "bytes_up", "bytes_down"}) {
    header.emplace_back(column);
  }
  for (double t : targets) {
    for (const char* what : {"round", "wall_s", "bytes_up", "bytes_down"}) {
      header.push_back(absl::StrCat("target_", Num(t), "_", what));
    }
  }
  header.emplace_back("status");
  header.emplace_back("folder");

  std::string out;
  auto append_row = [&out](const std::vector<std::string>& fields) {
    for (size_t i = 0; i < fields.size(); ++i) {
      if (i > 0) out.push_back(',');
      absl::StrAppend(&out, CsvField(fields[i]));
    }
    out.append("\r\n");
  };
  append_row(header);
  for (const SweepRow& row : rows) {
    std::vector<std::string> fields;
    for (size_t i = 0; i < keys.size(); ++i) {
      fields.push_back(i < row.values.size() ? row.values[i] : "");
    }
    fields.push_back(absl::StrCat(row.seed));
    const RunSummary* s = row.summary ? &*row.summary : nullptr;
    fields.push_back(s ? Num(s->final_test_acc) : "");
    fields.push_back(s ? absl::StrCat(s->rounds) : "");
    fields.push_back(s ? Num(s->wall_s) : "");
    fields.push_back(s ? absl::StrCat(s->bytes_up) : "");
    fields.push_back(s ? absl::StrCat(s->bytes_down) : "");
    for (double t : targets) {
      const TargetOutcome* hit = nullptr;
      if (s != nullptr) {
        for (const TargetOutcome& o : s->targets) {
          if (o.target == t && o.reached) hit = &o;
        }
      }
      if (hit == nullptr) {
        fields.insert(fields.end(), 4, "");
        continue;
      }
      fields.push_back(absl::StrCat(hit->round));
      fields.push_back(Num(hit->wall_s));
      fields.push_back(absl::StrCat(hit->bytes_up));
      fields.push_back(absl::StrCat(hit->bytes_down));
    }
    fields.push_back(row.status);
    fields.push_back(row.folder);
    append_row(fields);
  }
  return out;
}

std::string ShellQuote(absl::string_view word) {
  bool plain = !word.empty();
  for (char c : word) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) &&
        std::string_view("_./=:,+@%-").find(c) == std::string_view::npos) {
      plain = false;
    }
  }
  if (plain) return std::string(word);
  return absl::StrCat("'", absl::StrReplaceAll(word, {{"'", "'\\''"}}), "'");
}

MeanStd ComputeMeanStd(const std::vector<double>& xs) {
  MeanStd m;
  m.n = static_cast<int>(xs.size());
  if (xs.empty()) return m;
  double sum = 0;
  for (double x : xs) sum += x;
  m.mean = sum / xs.size();
  if (xs.size() < 2) return m;
  double squares = 0;
  for (double x : xs) squares += (x - m.mean) * (x - m.mean);
  m.stddev = std::sqrt(squares / (xs.size() - 1));
  return m;
}

std::string FormatBytes(double bytes) {
  if (!(bytes >= 1000)) {
    return absl::StrFormat("%.0f B", std::max(0.0, bytes));
  }
  static constexpr const char* kUnits[] = {"kB", "MB", "GB", "TB", "PB"};
  int unit = 0;
  bytes /= 1000;
  while (bytes >= 999.5 && unit + 1 < 5) {
    bytes /= 1000;
    ++unit;
  }
  // Three significant digits, keeping trailing zeros: 1.00, 15.0, 155.
  const char* format = bytes >= 99.95   ? "%.0f %s"
                       : bytes >= 9.995 ? "%.1f %s"
                                        : "%.2f %s";
  char text[32];
  std::snprintf(text, sizeof(text), format, bytes, kUnits[unit]);
  return text;
}

std::string ResultsMarkdown(const std::vector<std::string>& keys,
                            const std::vector<SweepRow>& rows,
                            const std::string& header) {
  const std::vector<double> targets = TargetsOf(rows);
  // Combinations in first-seen order.
  std::vector<std::vector<std::string>> combos;
  std::map<std::vector<std::string>, std::vector<const SweepRow*>> groups;
  for (const SweepRow& row : rows) {
    auto [it, fresh] = groups.try_emplace(row.values);
    if (fresh) combos.push_back(row.values);
    it->second.push_back(&row);
  }

  std::string out = header;
  if (!out.empty() && out.back() != '\n') out.push_back('\n');
  if (!out.empty()) out.push_back('\n');
  std::vector<std::string> head;
  for (const std::string& key : keys)
    head.push_back(absl::StrCat("`", key, "`"));
  for (const char* column :
       {"runs", "final_test_acc", "wall_s", "bytes up", "bytes down"}) {
    head.emplace_back(column);
  }
  for (double t : targets) head.push_back(absl::StrCat("round to ", Num(t)));
  absl::StrAppend(&out, "| ", absl::StrJoin(head, " | "), " |\n|");
  for (size_t i = 0; i < head.size(); ++i) {
    absl::StrAppend(&out, i < keys.size() ? "---|" : "---:|");
  }
  out.push_back('\n');

  for (const std::vector<std::string>& combo : combos) {
    std::vector<double> acc, wall, up, down;
    int failed = 0, interrupted = 0;
    std::vector<const RunSummary*> finished;
    for (const SweepRow* row : groups[combo]) {
      if (row->status == "finished" && row->summary) {
        finished.push_back(&*row->summary);
        acc.push_back(row->summary->final_test_acc);
        wall.push_back(row->summary->wall_s);
        up.push_back(static_cast<double>(row->summary->bytes_up));
        down.push_back(static_cast<double>(row->summary->bytes_down));
      } else if (row->status == "interrupted") {
        ++interrupted;
      } else {
        ++failed;
      }
    }
    std::vector<std::string> cells;
    for (size_t i = 0; i < keys.size(); ++i) {
      cells.push_back(MarkdownCell(i < combo.size() ? combo[i] : ""));
    }
    std::string runs = absl::StrCat(finished.size());
    if (failed > 0) absl::StrAppend(&runs, " (+", failed, " failed)");
    if (interrupted > 0) {
      absl::StrAppend(&runs, " (+", interrupted, " interrupted)");
    }
    cells.push_back(runs);
    cells.push_back(MeanStdText(ComputeMeanStd(acc), 4));
    cells.push_back(MeanStdText(ComputeMeanStd(wall), 1));
    cells.push_back(BytesMeanStdText(ComputeMeanStd(up)));
    cells.push_back(BytesMeanStdText(ComputeMeanStd(down)));
    for (double t : targets) {
      std::vector<double> reached_rounds;
      for (const RunSummary* s : finished) {
        for (const TargetOutcome& o : s->targets) {
          if (o.target == t && o.reached) {
            reached_rounds.push_back(static_cast<double>(o.round));
          }
        }
      }
      const MeanStd r = ComputeMeanStd(reached_rounds);
      cells.push_back(absl::StrCat(r.n > 0 ? Num(r.mean) : "–", " (", r.n, "/",
                                   finished.size(), ")"));
    }
    absl::StrAppend(&out, "| ", absl::StrJoin(cells, " | "), " |\n");
  }
  return out;
}

// ---- Running a sweep ----

namespace {

// Blocks the stop signals for the whole sweep (the Launcher reads them
// through its signalfd while a cell runs; between cells they stay pending
// until StopRequested consumes them) and ignores SIGPIPE. Restores both.
class SweepSignals {
 public:
  SweepSignals() {
    sigemptyset(&stop_set_);
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&stop_set_, sig);
    sigprocmask(SIG_BLOCK, &stop_set_, &saved_mask_);
    struct sigaction ignore = {};
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    sigaction(SIGPIPE, &ignore, &saved_sigpipe_);
  }
  ~SweepSignals() {
    while (StopRequested()) {
    }
    sigaction(SIGPIPE, &saved_sigpipe_, nullptr);
    sigprocmask(SIG_SETMASK, &saved_mask_, nullptr);
  }
  SweepSignals(const SweepSignals&) = delete;
  SweepSignals& operator=(const SweepSignals&) = delete;

  // Consumes one pending stop signal; true if there was one.
  bool StopRequested() {
    struct timespec zero = {0, 0};
    return sigtimedwait(&stop_set_, nullptr, &zero) > 0;
  }

 private:
  sigset_t stop_set_;
  sigset_t saved_mask_;
  struct sigaction saved_sigpipe_ = {};
};

std::string CellFolder(const std::string& out, const SweepCell& cell) {
  return absl::StrCat(out, "/", cell.name);
}

// The row of a cell that was run (`exit_code`) or found finished (nullopt).
SweepRow RowForCell(const SweepCell& cell, const std::string& folder,
                    std::optional<int> exit_code) {
  SweepRow row;
  row.values = cell.values;
  row.seed = cell.seed;
  row.folder = folder;
  std::string text;
  if (ReadWholeFile(folder + "/summary.json", &text)) {
    absl::StatusOr<RunSummary> summary = ParseRunSummary(text);
    if (summary.ok()) row.summary = *std::move(summary);
  }
  if (row.summary && row.summary->interrupted && row.summary->error.empty()) {
    row.status = "interrupted";
  } else if (row.summary && row.summary->error.empty() &&
             (!exit_code || *exit_code == 0)) {
    row.status = "finished";
  } else if (exit_code == kExitInterrupted) {
    row.status = "interrupted";
  } else {
    row.status = "failed";
  }
  return row;
}

class SweepRunner {
 public:
  SweepRunner(LauncherOptions options, std::string config_text,
              SplitConfigText split, std::string command_line)
      : options_(std::move(options)),
        config_text_(std::move(config_text)),
        split_(std::move(split)),
        command_line_(std::move(command_line)) {}

  int Run();

 private:
  absl::Status CheckCells();
  absl::Status PrepareOut();
  absl::Status WriteResults();

  LauncherOptions options_;
  std::string config_text_;
  SplitConfigText split_;
  std::string command_line_;
  SweepPlan plan_;
  std::string out_;
  std::vector<CellState> states_;
  std::vector<SweepRow> rows_;
};

absl::Status SweepRunner::CheckCells() {
  std::string bin_dir = options_.bin_dir;
  if (bin_dir.empty()) {
    ASSIGN_OR_RETURN(bin_dir, SelfExecutableDir());
  }
  for (const char* exe : {"fedfwd-server", "fedfwd-client"}) {
    RETURN_IF_ERROR(FindSiblingExecutable(bin_dir, exe).status());
  }
  for (const PlannedCell& p : plan_.cells) {
    if (p.config.clients < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("sweep cell ", p.cell.name,
                       ": clients must be at least 1, got ", p.config.clients));
    }
    absl::StatusOr<std::vector<std::vector<std::string>>> extra =
        ParseClientArgs(options_.client_arg_specs, p.config.clients);
    if (!extra.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sweep cell ", p.cell.name, ": ", extra.status().message()));
    }
    const std::string data_dir = ResolveDataDir(p.config);
    std::error_code ec;
    if (!fs::is_directory(data_dir, ec)) {
      return absl::NotFoundError(
          absl::StrCat("sweep cell ", p.cell.name, ": data folder ", data_dir,
                       " for dataset ", p.config.dataset.name,
                       " does not exist (set dataset.data_dir; for MNIST run "
                       "scripts/setup.sh, which downloads it to data/mnist)"));
    }
  }
  return absl::OkStatus();
}

absl::Status SweepRunner::PrepareOut() {
  ASSIGN_OR_RETURN(out_, CreateOutDir(options_.out_dir, options_.config_path));

  // Every folder is checked before anything runs, so a changed sweep is
  // refused without touching a cell.
  for (const PlannedCell& p : plan_.cells) {
    ASSIGN_OR_RETURN(CellState state, InspectCellDir(CellFolder(out_, p.cell),
                                                     ConfigToYaml(p.config)));
    states_.push_back(state);
  }

  nlohmann::ordered_json cells = nlohmann::ordered_json::array();
  for (const PlannedCell& p : plan_.cells) {
    nlohmann::ordered_json values = nlohmann::ordered_json::object();
    for (size_t i = 0; i < plan_.keys.size(); ++i) {
      values[plan_.keys[i]] = p.cell.values[i];
    }
    cells.push_back({{"index", p.cell.index + 1},
                     {"folder", p.cell.name},
                     {"values", values},
                     {"seed", p.cell.seed}});
  }
  nlohmann::ordered_json sweep = {{"config", options_.config_path},
                                  {"command", command_line_},
                                  {"keys", plan_.keys},
                                  {"cells", cells}};
  RETURN_IF_ERROR(
      WriteFileAtomically(out_ + "/sweep.json", sweep.dump(2) + "\n"));
  return WriteFileAtomically(out_ + "/sweep.yaml", config_text_);
}

absl::Status SweepRunner::WriteResults() {
  int finished = 0;
  for (const SweepRow& row : rows_) finished += row.status == "finished";
  const std::string header = absl::StrCat(
      "# Sweep ", fs::path(options_.config_path).filename().string(), "\n\n",
      "`", command_line_, "`\n\n", finished, " of ", plan_.cells.size(),
      " runs finished; mean ± sample standard deviation over the finished "
      "runs of each row; `round to T`: mean round at which test accuracy "
      "first reached T, over the runs that reached it (how many of the "
      "finished runs did). Per-run figures: results.csv.");
  RETURN_IF_ERROR(WriteFileAtomically(out_ + "/results.csv",
                                      ResultsCsv(plan_.keys, rows_)));
  return WriteFileAtomically(out_ + "/results.md",
                             ResultsMarkdown(plan_.keys, rows_, header));
}

int SweepRunner::Run() {
  const std::string& origin = options_.config_path;
  std::string base_dir = fs::path(origin).parent_path().string();
  if (base_dir.empty()) base_dir = ".";
  absl::StatusOr<SweepPlan> plan = PlanSweep(
      split_.base_yaml, *split_.sweep, base_dir, options_.overrides, origin);
  if (!plan.ok()) {
    Error(plan.status().message());
    return kExitUsage;
  }
  plan_ = *std::move(plan);
  if (absl::Status s = CheckCells(); !s.ok()) {
    Error(s.message());
    return absl::IsInvalidArgument(s) ? kExitUsage : kExitFailure;
  }
  if (absl::Status s = PrepareOut(); !s.ok()) {
    Error(s.message());
    return kExitFailure;
  }

  const int total = static_cast<int>(plan_.cells.size());
  const int done_before = static_cast<int>(
      std::count(states_.begin(), states_.end(), CellState::kFinished));
  Info(absl::StrCat("sweep of ", total, " runs into ", out_,
                    done_before > 0
                        ? absl::StrCat(" (", done_before, " finished earlier)")
                        : ""));

  SweepSignals signals;
  bool interrupted = false;
  std::vector<std::string> failed;
  for (int i = 0; i < total && !interrupted; ++i) {
    const PlannedCell& p = plan_.cells[i];
    const std::string folder = CellFolder(out_, p.cell);
    const std::string label =
        absl::StrCat("cell ", i + 1, "/", total, " ", p.cell.name);
    if (signals.StopRequested()) {
      interrupted = true;
      break;
    }
    if (states_[i] == CellState::kFinished) {
      Info(absl::StrCat(label, ": finished earlier; skipped"));
      rows_.push_back(RowForCell(p.cell, folder, std::nullopt));
      continue;
    }
    std::error_code ec;
    if (states_[i] == CellState::kUnfinished) {
      // Unfinished runs start again from scratch.
      fs::remove_all(folder, ec);
      if (ec) {
        Error(absl::StrCat("cannot clear ", folder, ": ", ec.message()));
        rows_.push_back(RowForCell(p.cell, folder, kExitFailure));
        failed.push_back(p.cell.name);
        continue;
      }
    }
    Info(label);
    LauncherOptions cell_options = options_;
    cell_options.config = p.config;
    cell_options.out_dir = folder;
    cell_options.progress_label = label;
    const int code = Launcher(std::move(cell_options)).Run();
    rows_.push_back(RowForCell(p.cell, folder, code));
    if (code == kExitInterrupted) interrupted = true;
    if (rows_.back().status == "failed") {
      failed.push_back(p.cell.name);
      Error(absl::StrCat(label, " failed (exit code ", code, "); see ", folder,
                         "; going on with the next"));
    }
    if (absl::Status s = WriteResults(); !s.ok()) Error(s.message());
  }
  if (absl::Status s = WriteResults(); !s.ok()) {
    Error(s.message());
    return kExitFailure;
  }
  std::string table;
  if (ReadWholeFile(out_ + "/results.md", &table)) {
    // The table alone: the header is for the file.
    const size_t start = table.find("\n|");
    if (start != std::string::npos) {
      std::fwrite(table.data() + start + 1, 1, table.size() - start - 1,
                  stdout);
      std::fflush(stdout);
    }
  }
  if (interrupted) {
    Info(absl::StrCat("interrupted after ", rows_.size(), " of ", total,
                      " runs; run the same command again to go on. Results so "
                      "far: ",
                      out_, "/results.csv, results.md"));
    return kExitInterrupted;
  }
  Info(absl::StrCat("results: ", out_, "/results.csv, ", out_, "/results.md"));
  if (!failed.empty()) {
    Error(absl::StrCat(failed.size(), " of ", total,
                       " runs failed: ", absl::StrJoin(failed, " ")));
    return kExitFailure;
  }
  return 0;
}

}  // namespace

int RunFedfwdRun(LauncherOptions options, const std::string& command_line) {
  std::string text;
  std::error_code ec;
  if (options.config || fs::is_directory(options.config_path, ec) ||
      !ReadWholeFile(options.config_path, &text)) {
    // The launcher reports a missing or unreadable file as before.
    return Launcher(std::move(options)).Run();
  }
  absl::StatusOr<SplitConfigText> split = SplitSweep(text, options.config_path);
  if (!split.ok()) {
    Error(split.status().message());
    return kExitUsage;
  }
  if (!split->sweep) return Launcher(std::move(options)).Run();
  return SweepRunner(std::move(options), std::move(text), *std::move(split),
                     command_line)
      .Run();
}

}  // namespace fedfwd
