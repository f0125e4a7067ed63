#include "common/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/estimators.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace fedfwd {
namespace {

namespace fs = std::filesystem;

// Every key the schema knows, dotted. A key with children is a map.
const std::vector<std::string>& KnownKeys() {
  static const auto* keys = new std::vector<std::string>{
      "model",
      "model.torchscript",
      "task",
      "dataset",
      "dataset.name",
      "dataset.data_dir",
      "dataset.train_limit",
      "dataset.test_limit",
      "dataset.label",
      "dataset.features",
      "dataset.id",
      "dataset.classes",
      "partition",
      "partition.type",
      "partition.shards_per_client",
      "partition.alpha",
      "clients",
      "min_clients",
      "rounds",
      "seed",
      "estimator",
      "algorithm",
      "peer",
      "peer.steps",
      "peer.tau",
      "peer.alpha",
      "peer.beta",
      "peer.synchronous",
      "peer.push_probability",
      "peer.topology",
      "peer.degree",
      "peer.noise_std",
      "peer.nesterov",
      "weight_decay",
      "merge",
      "tangent",
      "tangent.distribution",
      "tangent.shared_seed",
      "tangent.count",
      "tangent.combine",
      "tangent.u_groups",
      "tangent.normalize",
      "tangent.structure",
      "tangent.split",
      "tangent.blocks_per_client",
      "tangent.layer_counts",
      "fd",
      "fd.epsilon",
      "fd.precision",
      "lr",
      "lr_schedule",
      "lr_schedule.type",
      "lr_schedule.decay_rounds",
      "lr_schedule.min_lr",
      "momentum",
      "clip_jvp",
      "jvp_bits",
      "clip_step",
      "batch_size",
      "local_epochs",
      "sampling",
      "sampling.fraction",
      "sampling.minimum",
      "server_optimizer",
      "server_optimizer.type",
      "server_optimizer.lr",
      "server_optimizer.momentum",
      "server_optimizer.beta1",
      "server_optimizer.beta2",
      "server_optimizer.eps",
      "server_optimizer.radius",
      "server_optimizer.k",
      "server_optimizer.start",
      "compression",
      "sync",
      "sync_max_terms",
      "eval_every",
      "targets",
      "stop_at_target",
      "timeouts",
      "timeouts.round_s",
      "timeouts.client_s",
      "timeouts.join_s",
      "robust",
      "robust.rule",
      "robust.trim",
      "robust.quantile",
      "robust.multiplier",
      "robust.window",
      "robust.dense",
      "robust.norm",
      "privacy",
      "privacy.clip",
      "privacy.noise_multiplier",
      "privacy.delta",
  };
  return *keys;
}

bool IsKnownKey(const std::string& dotted) {
  const auto& keys = KnownKeys();
  return std::find(keys.begin(), keys.end(), dotted) != keys.end();
}

// Direct children of `prefix` ("" for top level), for error hints.
std::vector<std::string> ChildKeys(const std::string& prefix) {
  std::vector<std::string> out;
  const std::string lead = prefix.empty() ? "" : prefix + ".";
  for (const std::string& key : KnownKeys()) {
    if (key.compare(0, lead.size(), lead) != 0) continue;
    std::string rest = key.substr(lead.size());
    if (!rest.empty() && rest.find('.') == std::string::npos) {
      out.push_back(rest);
    }
  }
  return out;
}

std::string Join(const std::string& prefix, const std::string& key) {
  return prefix.empty() ? key : prefix + "." + key;
}

// How a node looks in an error message.
std::string Describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Scalar:
      return "'" + node.Scalar() + "'";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Null:
      return "null";
    default:
      return "nothing";
  }
}

// The shortest %g form that reads back to the same double (17 digits always
// do), so ConfigToYaml round-trips exactly and stays readable.
std::string FormatDouble(double v) {
  char buf[40];
  for (int digits = 15; digits <= 17; ++digits) {
    std::snprintf(buf, sizeof(buf), "%.*g", digits, v);
    double back = 0;
    if (absl::SimpleAtod(buf, &back) && back == v) break;
  }
  return buf;
}

// Reads typed values out of a YAML tree, producing errors that name the
// dotted key, the bad value, the origin and (for file nodes) the line.
class Reader {
 public:
  explicit Reader(std::string origin) : origin_(std::move(origin)) {}

  absl::Status Error(const std::string& key, const YAML::Node& node,
                     const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat(
        "config key '", key, "' in ", origin_, Where(node), ": ", what));
  }

  // Requires `node` (at `prefix`) to be a map of known, unique string keys.
  // Null counts as an empty map.
  absl::Status CheckMap(const YAML::Node& node,
                        const std::string& prefix) const {
    if (node.IsNull()) return absl::OkStatus();
    if (!node.IsMap()) {
      if (prefix.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("config in ", origin_, " must be a YAML map, got ",
                         Describe(node)));
      }
      return Error(prefix, node, "expected a map, got " + Describe(node));
    }
    std::set<std::string> seen;
    for (auto it = node.begin(); it != node.end(); ++it) {
      if (!it->first.IsScalar()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "config keys must be strings; got ", Describe(it->first),
            " under '", prefix.empty() ? "<top>" : prefix, "' in ", origin_,
            Where(it->first)));
      }
      const std::string dotted = Join(prefix, it->first.Scalar());
      if (!IsKnownKey(dotted)) {
        if (dotted == "sweep") {
          return absl::InvalidArgumentError(absl::StrCat(
              "'sweep' in ", origin_, Where(it->first),
              " is read by fedfwd-run only (one federation per cell); to run "
              "one cell here, drop the sweep section and --set its values"));
        }
        return absl::InvalidArgumentError(absl::StrCat(
            "unknown config key '", dotted, "' in ", origin_, Where(it->first),
            "; known keys", prefix.empty() ? "" : " under '" + prefix + "'",
            ": ", absl::StrJoin(ChildKeys(prefix), ", ")));
      }
      if (!seen.insert(dotted).second) {
        return absl::InvalidArgumentError(absl::StrCat("duplicate config key '",
                                                       dotted, "' in ", origin_,
                                                       Where(it->first)));
      }
    }
    return absl::OkStatus();
  }

  absl::Status String(const YAML::Node& map, const std::string& prefix,
                      const std::string& key, std::string* out) const {
    YAML::Node node = Get(map, key);
    if (!node.IsDefined()) return absl::OkStatus();
    if (!node.IsScalar()) {
      return Error(Join(prefix, key), node,
                   "expected a string, got " + Describe(node));
    }
    *out = node.Scalar();
    return absl::OkStatus();
  }

  // One of `allowed`.
  absl::Status Choice(const YAML::Node& map, const std::string& prefix,
                      const std::string& key,
                      const std::vector<std::string>& allowed,
                      std::string* out) const {
    std::string value = *out;
    RETURN_IF_ERROR(String(map, prefix, key, &value));
    if (std::find(allowed.begin(), allowed.end(), value) == allowed.end()) {
      return Error(Join(prefix, key), Get(map, key),
                   absl::StrCat("got '", value, "', expected one of: ",
                                absl::StrJoin(allowed, ", ")));
    }
    *out = value;
    return absl::OkStatus();
  }

  // Decimal integer literals only: "1e3" and "1.0" are rejected.
  absl::Status Int(const YAML::Node& map, const std::string& prefix,
                   const std::string& key, int64_t lo, int64_t hi,
                   int64_t* out) const {
    YAML::Node node = Get(map, key);
    if (!node.IsDefined()) return absl::OkStatus();
    const std::string dotted = Join(prefix, key);
    int64_t value = 0;
    if (!node.IsScalar() || !absl::SimpleAtoi(node.Scalar(), &value)) {
      return Error(dotted, node, "expected an integer, got " + Describe(node));
    }
    if (value < lo || value > hi) {
      return Error(
          dotted, node,
          absl::StrCat("must be in [", lo, ", ", hi, "], got ", value));
    }
    *out = value;
    return absl::OkStatus();
  }

  absl::Status Int(const YAML::Node& map, const std::string& prefix,
                   const std::string& key, int64_t lo, int64_t hi,
                   int* out) const {
    int64_t value = *out;
    RETURN_IF_ERROR(Int(map, prefix, key, lo, hi, &value));
    *out = static_cast<int>(value);
    return absl::OkStatus();
  }

  // A map of layer name -> key count (tangent.layer_counts); the names are
  // checked against the model where it is known (MakeStrategy).
  absl::Status LayerCounts(const YAML::Node& map, const std::string& prefix,
                           const std::string& key,
                           std::map<std::string, int>* out) const {
    YAML::Node node = Get(map, key);
    if (!node.IsDefined() || node.IsNull()) return absl::OkStatus();
    const std::string dotted = Join(prefix, key);
    if (!node.IsMap()) {
      return Error(dotted, node,
                   "expected a map of layer name to tangent count (e.g. "
                   "{fc: 512}), got " +
                       Describe(node));
    }
    out->clear();
    for (auto it = node.begin(); it != node.end(); ++it) {
      if (!it->first.IsScalar() || it->first.Scalar().empty()) {
        return Error(dotted, it->first, "layer names must be strings");
      }
      const std::string layer = it->first.Scalar();
      int count = 0;
      RETURN_IF_ERROR(Int(node, dotted, layer, 1, kMaxLayerTangents, &count));
      if (!out->emplace(layer, count).second) {
        return Error(dotted, it->first, "layer '" + layer + "' named twice");
      }
    }
    return absl::OkStatus();
  }

  absl::Status Uint64(const YAML::Node& map, const std::string& prefix,
                      const std::string& key, uint64_t* out) const {
    YAML::Node node = Get(map, key);
    if (!node.IsDefined()) return absl::OkStatus();
    uint64_t value = 0;
    if (!node.IsScalar() || !absl::SimpleAtoi(node.Scalar(), &value)) {
      return Error(
          Join(prefix, key), node,
          "expected an unsigned 64-bit integer, got " + Describe(node));
    }
    *out = value;
    return absl::OkStatus();
  }

  // A finite number. `lo_open`: lo itself is excluded.
  absl::Status Double(const YAML::Node& map, const std::string& prefix,
                      const std::string& key, double lo, bool lo_open,
                      double hi, bool hi_open, double* out) const {
    YAML::Node node = Get(map, key);
    if (!node.IsDefined()) return absl::OkStatus();
    double value = 0;
    RETURN_IF_ERROR(ParseDouble(Join(prefix, key), node, &value));
    RETURN_IF_ERROR(
        CheckRange(Join(prefix, key), node, value, lo, lo_open, hi, hi_open));
    *out = value;
    return absl::OkStatus();
  }

  absl::Status Bool(const YAML::Node& map, const std::string& prefix,
                    const std::string& key, bool* out) const {
    YAML::Node node = Get(map, key);
    if (!node.IsDefined()) return absl::OkStatus();
    bool value = false;
    if (!node.IsScalar() || !YAML::convert<bool>::decode(node, value)) {
      return Error(Join(prefix, key), node,
                   "expected true or false, got " + Describe(node));
    }
    *out = value;
    return absl::OkStatus();
  }

  // A list of numbers, each in (lo, hi]. Null is an empty list.
  absl::Status DoubleList(const YAML::Node& map, const std::string& prefix,
                          const std::string& key, double lo, double hi,
                          std::vector<double>* out) const {
    YAML::Node node = Get(map, key);
    if (!node.IsDefined()) return absl::OkStatus();
    const std::string dotted = Join(prefix, key);
    std::vector<double> values;
    if (node.IsNull()) {
      *out = values;
      return absl::OkStatus();
    }
    if (!node.IsSequence()) {
      return Error(dotted, node,
                   "expected a list of numbers, got " + Describe(node));
    }
    for (size_t i = 0; i < node.size(); ++i) {
      const std::string item_key = absl::StrCat(dotted, "[", i, "]");
      double value = 0;
      RETURN_IF_ERROR(ParseDouble(item_key, node[i], &value));
      RETURN_IF_ERROR(CheckRange(item_key, node[i], value, lo,
                                 /*lo_open=*/true, hi, /*hi_open=*/false));
      values.push_back(value);
    }
    *out = std::move(values);
    return absl::OkStatus();
  }

 private:
  static YAML::Node Get(const YAML::Node& map, const std::string& key) {
    if (!map.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
    return map[key];
  }

  static std::string Where(const YAML::Node& node) {
    const YAML::Mark mark = node.Mark();
    if (mark.is_null()) return "";
    return absl::StrCat(" (line ", mark.line + 1, ")");
  }

  absl::Status ParseDouble(const std::string& dotted, const YAML::Node& node,
                           double* out) const {
    if (!node.IsScalar() || !absl::SimpleAtod(node.Scalar(), out)) {
      return Error(dotted, node, "expected a number, got " + Describe(node));
    }
    if (!std::isfinite(*out)) {
      return Error(dotted, node,
                   "expected a finite number, got " + Describe(node));
    }
    return absl::OkStatus();
  }

  absl::Status CheckRange(const std::string& dotted, const YAML::Node& node,
                          double value, double lo, bool lo_open, double hi,
                          bool hi_open) const {
    const bool ok = (lo_open ? value > lo : value >= lo) &&
                    (hi_open ? value < hi : value <= hi);
    if (ok) return absl::OkStatus();
    std::string range;
    if (std::isinf(hi)) {
      range = absl::StrCat(lo_open ? "> " : ">= ", FormatDouble(lo));
    } else {
      range = absl::StrCat("in ", lo_open ? "(" : "[", FormatDouble(lo), ", ",
                           FormatDouble(hi), hi_open ? ")" : "]");
    }
    return Error(
        dotted, node,
        absl::StrCat("must be ", range, ", got ", FormatDouble(value)));
  }

  std::string origin_;
};

constexpr double kInf = HUGE_VAL;

// Sets `value` at `path` under the map `node`, creating maps on the way.
absl::Status SetPath(YAML::Node node, const std::vector<std::string>& path,
                     size_t i, const YAML::Node& value,
                     const std::string& override_text) {
  if (i + 1 == path.size()) {
    node[path[i]] = value;
    return absl::OkStatus();
  }
  YAML::Node child = node[path[i]];
  if (!child.IsDefined() || child.IsNull()) {
    node[path[i]] = YAML::Node(YAML::NodeType::Map);
  } else if (!child.IsMap()) {
    return absl::InvalidArgumentError(
        absl::StrCat("override '", override_text, "': config key '",
                     absl::StrJoin(path.begin(), path.begin() + i + 1, "."),
                     "' is not a map but ", Describe(child)));
  }
  return SetPath(node[path[i]], path, i + 1, value, override_text);
}

absl::Status ApplyOverride(YAML::Node root, const std::string& text) {
  const size_t eq = text.find('=');
  if (eq == std::string::npos || eq == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "malformed override '", text, "' (expected dotted.key=value)"));
  }
  const std::string key = text.substr(0, eq);
  const std::string value_text = text.substr(eq + 1);
  if (!IsKnownKey(key)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown config key '", key, "' in override '", text, "'"));
  }
  YAML::Node value;
  if (value_text.empty()) {
    value = YAML::Node(std::string());
  } else {
    try {
      value = YAML::Load(value_text);
    } catch (const YAML::Exception& e) {
      return absl::InvalidArgumentError(absl::StrCat(
          "override '", text, "': value is not valid YAML: ", e.msg));
    }
  }
  std::vector<std::string> path = absl::StrSplit(key, '.');
  return SetPath(root, path, 0, value, text);
}

// Absolute and lexically normal, without a trailing separator.
std::string ResolvePath(const std::string& path, const std::string& base_dir) {
  if (path.empty()) return path;
  fs::path p(path);
  if (p.is_relative()) p = fs::path(base_dir) / p;
  std::error_code ec;
  fs::path abs = fs::absolute(p, ec);
  if (ec) abs = p;
  std::string out = abs.lexically_normal().string();
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

absl::Status FillConfig(const YAML::Node& root, const Reader& r,
                        const std::string& base_dir, Config* c) {
  RETURN_IF_ERROR(r.CheckMap(root, ""));

  if (root.IsMap() && root["model"].IsDefined() && root["model"].IsMap()) {
    // A model written in PyTorch: {torchscript: FILE}.
    const YAML::Node m = root["model"];
    RETURN_IF_ERROR(r.CheckMap(m, "model"));
    RETURN_IF_ERROR(r.String(m, "model", "torchscript", &c->torchscript));
    if (c->torchscript.empty()) {
      return r.Error("model", m,
                     "a map names a TorchScript file: {torchscript: FILE}");
    }
    c->torchscript = ResolvePath(c->torchscript, base_dir);
    c->model = kTorchScriptModel;
  } else {
    RETURN_IF_ERROR(r.String(root, "", "model", &c->model));
    if (c->model.empty()) {
      return r.Error("model", root["model"], "must not be empty");
    }
    if (c->model == kTorchScriptModel) {
      return r.Error("model", root["model"],
                     "a TorchScript model is written {torchscript: FILE}");
    }
  }

  if (root.IsMap() && root["dataset"].IsDefined()) {
    const YAML::Node ds = root["dataset"];
    RETURN_IF_ERROR(r.CheckMap(ds, "dataset"));
    DatasetConfig& d = c->dataset;
    RETURN_IF_ERROR(r.Choice(
        ds, "dataset", "name",
        {"mnist", "fashion-mnist", "cifar10", "npz", "npy", "csv"}, &d.name));
    RETURN_IF_ERROR(r.String(ds, "dataset", "label", &d.file.label));
    RETURN_IF_ERROR(r.String(ds, "dataset", "features", &d.file.features));
    RETURN_IF_ERROR(r.String(ds, "dataset", "id", &d.file.id));
    RETURN_IF_ERROR(r.Int(ds, "dataset", "classes", 0, 256, &d.file.classes));
    if (!IsFileDataset(d.name) &&
        (!d.file.label.empty() || !d.file.features.empty() ||
         !d.file.id.empty() || d.file.classes != 0)) {
      return r.Error("dataset", ds,
                     "label, features, id and classes apply to dataset npz, "
                     "npy and csv (users' own data)");
    }
    RETURN_IF_ERROR(r.String(ds, "dataset", "data_dir", &d.data_dir));
    RETURN_IF_ERROR(
        r.Int(ds, "dataset", "train_limit", 0, INT64_MAX, &d.train_limit));
    RETURN_IF_ERROR(
        r.Int(ds, "dataset", "test_limit", 0, INT64_MAX, &d.test_limit));
  }
  c->dataset.data_dir = ResolvePath(c->dataset.data_dir, base_dir);
  if (IsFileDataset(c->dataset.name) && c->dataset.data_dir.empty()) {
    return r.Error(
        "dataset.data_dir", root["dataset"],
        absl::StrCat("dataset ", c->dataset.name,
                     " needs data_dir: the folder with its train and test "
                     "files"));
  }

  RETURN_IF_ERROR(
      r.Choice(root, "", "task", {"classification", "regression"}, &c->task));
  c->dataset.file.regression = c->task == "regression";
  if (c->dataset.file.regression) {
    if (!IsFileDataset(c->dataset.name)) {
      return r.Error("task", root["task"],
                     absl::StrCat("regression needs float targets: users' own "
                                  "data (dataset npz, npy or csv), not ",
                                  c->dataset.name));
    }
    if (c->dataset.file.classes != 0) {
      return r.Error("dataset.classes", root["dataset"],
                     "does not apply to 'task: regression' (the targets "
                     "give the model's outputs)");
    }
  }

  if (root.IsMap() && root["partition"].IsDefined()) {
    const YAML::Node p = root["partition"];
    RETURN_IF_ERROR(r.CheckMap(p, "partition"));
    RETURN_IF_ERROR(r.Choice(p, "partition", "type",
                             {"iid", "shards", "dirichlet", "id"},
                             &c->partition.type));
    RETURN_IF_ERROR(r.Int(p, "partition", "shards_per_client", 1, 1000,
                          &c->partition.shards_per_client));
    RETURN_IF_ERROR(r.Double(p, "partition", "alpha", 0, true, kInf, false,
                             &c->partition.alpha));
    if (c->dataset.file.regression && c->partition.type != "iid" &&
        c->partition.type != "id") {
      return r.Error("partition.type", p,
                     absl::StrCat("'", c->partition.type,
                                  "' splits by class; 'task: regression' "
                                  "takes iid or id"));
    }
    if (c->partition.type == "id" && c->dataset.file.id.empty()) {
      return r.Error("partition.type", p,
                     "'id' needs dataset.id: the npz array, npy file or csv "
                     "column of natural ids (dataset npz, npy or csv)");
    }
  }
  RETURN_IF_ERROR(r.Int(root, "", "clients", 1, 1024, &c->clients));
  RETURN_IF_ERROR(r.Int(root, "", "min_clients", 1, 1024, &c->min_clients));
  if (c->min_clients > c->clients) {
    return r.Error("min_clients", root["min_clients"],
                   absl::StrCat("must be <= clients (", c->clients, "), got ",
                                c->min_clients));
  }
  // Round numbers are 32-bit in the tangent key.
  RETURN_IF_ERROR(r.Int(root, "", "rounds", 1, int64_t{1} << 32, &c->rounds));
  RETURN_IF_ERROR(r.Uint64(root, "", "seed", &c->seed));
  RETURN_IF_ERROR(
      r.Choice(root, "", "estimator", ConfigEstimators(), &c->estimator));

  std::string merge = MergeRuleName(c->merge);
  RETURN_IF_ERROR(
      r.Choice(root, "", "merge", {"naive", "average", "weighted"}, &merge));
  c->merge = merge == "naive"     ? MergeRule::kNaive
             : merge == "average" ? MergeRule::kAverage
                                  : MergeRule::kWeighted;

  if (root.IsMap() && root["tangent"].IsDefined()) {
    const YAML::Node t = root["tangent"];
    RETURN_IF_ERROR(r.CheckMap(t, "tangent"));
    RETURN_IF_ERROR(r.Choice(t, "tangent", "distribution",
                             {"normal", "rademacher"},
                             &c->tangent.distribution));
    RETURN_IF_ERROR(
        r.Bool(t, "tangent", "shared_seed", &c->tangent.shared_seed));
    RETURN_IF_ERROR(r.Int(t, "tangent", "count", 1, 1024, &c->tangent.count));
    RETURN_IF_ERROR(r.Choice(t, "tangent", "combine",
                             {"mean", "projection", "projection_round"},
                             &c->tangent.combine));
    RETURN_IF_ERROR(r.Bool(t, "tangent", "normalize", &c->tangent.normalize));
    RETURN_IF_ERROR(r.Choice(t, "tangent", "structure",
                             {"dense", "rank1", "rank1_shared"},
                             &c->tangent.structure));
    RETURN_IF_ERROR(
        r.Int(t, "tangent", "u_groups", 1, 1024, &c->tangent.u_groups));
    RETURN_IF_ERROR(
        r.Choice(t, "tangent", "split", {"none", "layers"}, &c->tangent.split));
    RETURN_IF_ERROR(r.Int(t, "tangent", "blocks_per_client", 1, 64,
                          &c->tangent.blocks_per_client));
    RETURN_IF_ERROR(
        r.LayerCounts(t, "tangent", "layer_counts", &c->tangent.layer_counts));
  }

  RETURN_IF_ERROR(r.Double(root, "", "lr", 0, true, kInf, false, &c->lr));

  if (root.IsMap() && root["lr_schedule"].IsDefined()) {
    const YAML::Node s = root["lr_schedule"];
    RETURN_IF_ERROR(r.CheckMap(s, "lr_schedule"));
    RETURN_IF_ERROR(r.Choice(s, "lr_schedule", "type",
                             {"constant", "inverse", "cosine"},
                             &c->lr_schedule.type));
    RETURN_IF_ERROR(r.Double(s, "lr_schedule", "decay_rounds", 0, true, kInf,
                             false, &c->lr_schedule.decay_rounds));
    RETURN_IF_ERROR(r.Double(s, "lr_schedule", "min_lr", 0, false, kInf, false,
                             &c->lr_schedule.min_lr));
  }

  RETURN_IF_ERROR(
      r.Double(root, "", "momentum", 0, false, 1, true, &c->momentum));
  RETURN_IF_ERROR(r.Double(root, "", "weight_decay", 0, false, kInf, false,
                           &c->weight_decay));
  RETURN_IF_ERROR(r.Choice(root, "", "algorithm",
                           {"federated", "easgd", "gosgd", "sgp"},
                           &c->algorithm));
  if (root.IsMap() && root["peer"].IsDefined()) {
    const YAML::Node p = root["peer"];
    PeerConfig& o = c->peer;
    RETURN_IF_ERROR(r.CheckMap(p, "peer"));
    RETURN_IF_ERROR(r.Int(p, "peer", "steps", 1, INT64_MAX / 4, &o.steps));
    RETURN_IF_ERROR(r.Int(p, "peer", "tau", 1, 1000000, &o.tau));
    RETURN_IF_ERROR(r.Double(p, "peer", "alpha", 0, false, 1, true, &o.alpha));
    RETURN_IF_ERROR(r.Double(p, "peer", "beta", 0, true, 1, true, &o.beta));
    RETURN_IF_ERROR(r.Bool(p, "peer", "synchronous", &o.synchronous));
    RETURN_IF_ERROR(r.Double(p, "peer", "push_probability", 0, false, 1, false,
                             &o.push_probability));
    RETURN_IF_ERROR(r.Choice(p, "peer", "topology",
                             {"exponential", "random", "complete"},
                             &o.topology));
    RETURN_IF_ERROR(r.Int(p, "peer", "degree", 1, 1024, &o.degree));
    RETURN_IF_ERROR(
        r.Double(p, "peer", "noise_std", 0, false, kInf, false, &o.noise_std));
    RETURN_IF_ERROR(r.Bool(p, "peer", "nesterov", &o.nesterov));
  }
  RETURN_IF_ERROR(
      r.Double(root, "", "clip_jvp", 0, false, kInf, false, &c->clip_jvp));
  RETURN_IF_ERROR(r.Int(root, "", "jvp_bits", 8, 32, &c->jvp_bits));
  if (c->jvp_bits != 8 && c->jvp_bits != 32) {
    return r.Error("jvp_bits", root["jvp_bits"],
                   absl::StrCat("must be 8 or 32, got ", c->jvp_bits));
  }
  if (c->jvp_bits == 8 && !(c->clip_jvp > 0)) {
    return absl::InvalidArgumentError(
        "'jvp_bits: 8' needs 'clip_jvp' > 0 (the int8 grid spans the clip)");
  }
  RETURN_IF_ERROR(
      r.Double(root, "", "clip_step", 0, false, kInf, false, &c->clip_step));
  if (root.IsMap() && root["fd"].IsDefined()) {
    const YAML::Node f = root["fd"];
    RETURN_IF_ERROR(r.CheckMap(f, "fd"));
    RETURN_IF_ERROR(
        r.Double(f, "fd", "epsilon", 0, true, kInf, false, &c->fd.epsilon));
    RETURN_IF_ERROR(
        r.Choice(f, "fd", "precision", {"fp32", "fixed"}, &c->fd.precision));
  }
  RETURN_IF_ERROR(r.Int(root, "", "batch_size", 1, 65536, &c->batch_size));
  RETURN_IF_ERROR(r.Int(root, "", "local_epochs", 1, 10000, &c->local_epochs));
  if (root.IsMap() && root["sampling"].IsDefined()) {
    const YAML::Node s = root["sampling"];
    RETURN_IF_ERROR(r.CheckMap(s, "sampling"));
    RETURN_IF_ERROR(r.Double(s, "sampling", "fraction", 0, true, 1, false,
                             &c->sampling.fraction));
    RETURN_IF_ERROR(
        r.Int(s, "sampling", "minimum", 1, 1024, &c->sampling.minimum));
  }
  if (root.IsMap() && root["server_optimizer"].IsDefined()) {
    const YAML::Node s = root["server_optimizer"];
    ServerOptimizerConfig& o = c->server_optimizer;
    RETURN_IF_ERROR(r.CheckMap(s, "server_optimizer"));
    RETURN_IF_ERROR(r.Choice(s, "server_optimizer", "type",
                             {"sgd", "adam", "frank_wolfe"}, &o.type));
    RETURN_IF_ERROR(
        r.Double(s, "server_optimizer", "lr", 0, true, kInf, false, &o.lr));
    RETURN_IF_ERROR(r.Double(s, "server_optimizer", "momentum", 0, false, 1,
                             true, &o.momentum));
    RETURN_IF_ERROR(
        r.Double(s, "server_optimizer", "beta1", 0, false, 1, true, &o.beta1));
    RETURN_IF_ERROR(
        r.Double(s, "server_optimizer", "beta2", 0, false, 1, true, &o.beta2));
    RETURN_IF_ERROR(
        r.Double(s, "server_optimizer", "eps", 0, true, kInf, false, &o.eps));
    RETURN_IF_ERROR(r.Double(s, "server_optimizer", "radius", 0, false, kInf,
                             false, &o.radius));
    RETURN_IF_ERROR(
        r.Int(s, "server_optimizer", "k", 1, int64_t{1} << 40, &o.k));
    RETURN_IF_ERROR(r.Choice(s, "server_optimizer", "start",
                             {"prune", "project"}, &o.start));
  }
  if (c->server_optimizer.type == "frank_wolfe") {
    // The step is a convex combination with a vertex of the ball: lr is
    // its weight, so it must lie in (0, 1]; the estimate is the projected
    // forward gradient (d v) v of forward-only clients.
    if (c->estimator != "jvp" && c->estimator != "fd") {
      return absl::InvalidArgumentError(absl::StrCat(
          "'server_optimizer.type: frank_wolfe' takes forward gradients from "
          "forward-only clients (estimator: jvp or fd), not ",
          c->estimator));
    }
    if (!(c->server_optimizer.radius > 0)) {
      return absl::InvalidArgumentError(
          "'server_optimizer.type: frank_wolfe' needs "
          "'server_optimizer.radius' "
          "> 0 (the l1 ball's radius)");
    }
    if (c->lr > 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "'server_optimizer.type: frank_wolfe' takes 'lr' as the Frank-Wolfe "
          "step size, in (0, 1]; got ",
          FormatDouble(c->lr)));
    }
    if (c->momentum != 0 || c->algorithm != "federated") {
      return absl::InvalidArgumentError(
          "'server_optimizer.type: frank_wolfe' averages past estimates "
          "itself: it takes no 'momentum' and runs with 'algorithm: "
          "federated'");
    }
  } else if (c->server_optimizer.radius != 0 || c->server_optimizer.k != 1 ||
             c->server_optimizer.start != "prune") {
    return absl::InvalidArgumentError(
        "'server_optimizer.radius', 'server_optimizer.k' and "
        "'server_optimizer.start' apply to 'server_optimizer.type: "
        "frank_wolfe'");
  }
  RETURN_IF_ERROR(r.Choice(root, "", "compression", {"none", "fp16", "int8"},
                           &c->compression));
  RETURN_IF_ERROR(r.Choice(root, "", "sync", {"auto", "snapshot"}, &c->sync));
  RETURN_IF_ERROR(
      r.Int(root, "", "sync_max_terms", 1, 1000000, &c->sync_max_terms));
  RETURN_IF_ERROR(r.Int(root, "", "eval_every", 1, INT64_MAX, &c->eval_every));
  RETURN_IF_ERROR(r.DoubleList(root, "", "targets", 0, 1, &c->targets));
  std::sort(c->targets.begin(), c->targets.end());
  RETURN_IF_ERROR(r.Bool(root, "", "stop_at_target", &c->stop_at_target));

  if (root.IsMap() && root["timeouts"].IsDefined()) {
    const YAML::Node t = root["timeouts"];
    RETURN_IF_ERROR(r.CheckMap(t, "timeouts"));
    RETURN_IF_ERROR(r.Double(t, "timeouts", "round_s", 0, true, kInf, false,
                             &c->timeouts.round_s));
    RETURN_IF_ERROR(r.Double(t, "timeouts", "client_s", 0, true, kInf, false,
                             &c->timeouts.client_s));
    RETURN_IF_ERROR(r.Double(t, "timeouts", "join_s", 0, true, kInf, false,
                             &c->timeouts.join_s));
  }

  if (root.IsMap() && root["robust"].IsDefined()) {
    const YAML::Node b = root["robust"];
    RobustConfig& o = c->robust;
    RETURN_IF_ERROR(r.CheckMap(b, "robust"));
    RETURN_IF_ERROR(r.Choice(
        b, "robust", "rule",
        {"none", "median", "trimmed_mean", "quantile_clip", "quantile_skip"},
        &o.rule));
    RETURN_IF_ERROR(
        r.Double(b, "robust", "trim", 0, false, 0.5, true, &o.trim));
    RETURN_IF_ERROR(
        r.Double(b, "robust", "quantile", 0, true, 1, false, &o.quantile));
    RETURN_IF_ERROR(r.Double(b, "robust", "multiplier", 0, true, kInf, false,
                             &o.multiplier));
    RETURN_IF_ERROR(r.Int(b, "robust", "window", 1, 1000000, &o.window));
    RETURN_IF_ERROR(r.Choice(b, "robust", "dense",
                             {"none", "median", "trimmed_mean", "norm_clip"},
                             &o.dense));
    RETURN_IF_ERROR(
        r.Double(b, "robust", "norm", 0, false, kInf, false, &o.norm));
  }

  if (root.IsMap() && root["privacy"].IsDefined()) {
    const YAML::Node b = root["privacy"];
    PrivacyConfig& o = c->privacy;
    RETURN_IF_ERROR(r.CheckMap(b, "privacy"));
    RETURN_IF_ERROR(
        r.Double(b, "privacy", "clip", 0, false, kInf, false, &o.clip));
    RETURN_IF_ERROR(r.Double(b, "privacy", "noise_multiplier", 0, false, kInf,
                             false, &o.noise_multiplier));
    RETURN_IF_ERROR(
        r.Double(b, "privacy", "delta", 0, true, 1, true, &o.delta));
    if (o.noise_multiplier > 0 && !(o.clip > 0)) {
      return absl::InvalidArgumentError(
          "'privacy.noise_multiplier' needs 'privacy.clip' > 0 (the noise is "
          "relative to the clip)");
    }
    if (o.clip > 0 && !IsForwardGradientEstimator(c->estimator)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "'privacy' applies to forward gradients (estimator: jvp, fd or "
          "projected), not to ",
          c->estimator));
    }
  }
  const bool forward = IsForwardGradientEstimator(c->estimator);
  if (!forward && (c->tangent.count != 1 || c->tangent.combine != "mean" ||
                   c->tangent.split != "none" || c->tangent.normalize ||
                   c->tangent.structure != "dense")) {
    return absl::InvalidArgumentError(
        absl::StrCat("'tangent.count', 'tangent.combine', 'tangent.split', "
                     "'tangent.normalize' and 'tangent.structure' apply to "
                     "forward gradients (estimator: jvp, fd "
                     "or projected), not to ",
                     c->estimator));
  }
  if (c->algorithm != "federated" && c->clients < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'algorithm: ", c->algorithm, "' needs 'clients' >= 2 workers"));
  }
  if (c->tangent.u_groups > 1 && (c->tangent.structure != "rank1_shared" ||
                                  c->tangent.u_groups > c->tangent.count)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'tangent.u_groups' > 1 needs 'tangent.structure: rank1_shared' and "
        "at most 'tangent.count' (",
        c->tangent.count, ") groups, got ", c->tangent.u_groups,
        " with structure ", c->tangent.structure));
  }
  if (!c->tangent.layer_counts.empty()) {
    if (!forward) {
      return absl::InvalidArgumentError(absl::StrCat(
          "'tangent.layer_counts' applies to forward gradients (estimator: "
          "jvp, fd or projected), not to ",
          c->estimator));
    }
    if (c->tangent.split != "none" || c->tangent.combine != "mean") {
      return absl::InvalidArgumentError(absl::StrCat(
          "'tangent.layer_counts' needs 'tangent.split: none' and "
          "'tangent.combine: mean' (each layer group is averaged over its own "
          "keys), got split ",
          c->tangent.split, " and combine ", c->tangent.combine));
    }
    const int64_t total = TangentsPerClient(c->tangent);
    if (total > kMaxLayerTangents) {
      return absl::InvalidArgumentError(absl::StrCat(
          "'tangent.count' plus 'tangent.layer_counts' make ", total,
          " tangents per client per round; at most ", kMaxLayerTangents));
    }
  }
  if (c->tangent.shared_seed && c->tangent.combine == "projection_round") {
    // Shared tangents are one set for the whole round: the round projection
    // is then the per-client projection of the averaged values.
    return absl::InvalidArgumentError(
        "'tangent.combine: projection_round' needs one tangent set per client "
        "('tangent.shared_seed: false'); with shared tangents use "
        "'projection'");
  }
  return absl::OkStatus();
}

absl::StatusOr<Config> ParseConfigOrThrow(
    const std::string& yaml_text, const std::string& base_dir,
    const std::vector<std::string>& overrides, const std::string& origin) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::ParserException& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        "YAML syntax error in ", origin, " at line ", e.mark.line + 1,
        ", column ", e.mark.column + 1, ": ", e.msg));
  }
  if (!root.IsDefined() || root.IsNull()) {
    root = YAML::Node(YAML::NodeType::Map);
  }
  if (!root.IsMap()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config in ", origin, " must be a YAML map, got ", Describe(root)));
  }
  // "partition: TYPE" is shorthand for "partition: {type: TYPE}"; expand it
  // first so that --set partition.alpha=... works on either form.
  if (root["partition"].IsDefined() && root["partition"].IsScalar()) {
    YAML::Node expanded(YAML::NodeType::Map);
    expanded["type"] = root["partition"].Scalar();
    root["partition"] = expanded;
  }
  for (const std::string& o : overrides) {
    RETURN_IF_ERROR(ApplyOverride(root, o));
  }
  Config config;
  RETURN_IF_ERROR(FillConfig(root, Reader(origin), base_dir, &config));
  return config;
}

// Both writers walk the same tree so YAML and JSON have one shape.
nlohmann::ordered_json ConfigTree(const Config& c) {
  nlohmann::ordered_json j;
  if (c.torchscript.empty()) {
    j["model"] = c.model;
  } else {
    j["model"] = {{"torchscript", c.torchscript}};
  }
  j["task"] = c.task;
  j["dataset"] = {{"name", c.dataset.name},
                  {"data_dir", c.dataset.data_dir},
                  {"train_limit", c.dataset.train_limit},
                  {"test_limit", c.dataset.test_limit},
                  {"label", c.dataset.file.label},
                  {"features", c.dataset.file.features},
                  {"id", c.dataset.file.id},
                  {"classes", c.dataset.file.classes}};
  j["partition"] = {{"type", c.partition.type},
                    {"shards_per_client", c.partition.shards_per_client},
                    {"alpha", c.partition.alpha}};
  j["clients"] = c.clients;
  j["min_clients"] = c.min_clients;
  j["rounds"] = c.rounds;
  j["seed"] = c.seed;
  j["estimator"] = c.estimator;
  j["algorithm"] = c.algorithm;
  j["peer"] = {{"steps", c.peer.steps},
               {"tau", c.peer.tau},
               {"alpha", c.peer.alpha},
               {"beta", c.peer.beta},
               {"synchronous", c.peer.synchronous},
               {"push_probability", c.peer.push_probability},
               {"topology", c.peer.topology},
               {"degree", c.peer.degree},
               {"noise_std", c.peer.noise_std},
               {"nesterov", c.peer.nesterov}};
  j["weight_decay"] = c.weight_decay;
  j["merge"] = MergeRuleName(c.merge);
  j["tangent"] = {{"distribution", c.tangent.distribution},
                  {"shared_seed", c.tangent.shared_seed},
                  {"count", c.tangent.count},
                  {"combine", c.tangent.combine},
                  {"u_groups", c.tangent.u_groups},
                  {"normalize", c.tangent.normalize},
                  {"structure", c.tangent.structure},
                  {"split", c.tangent.split},
                  {"blocks_per_client", c.tangent.blocks_per_client}};
  // Only when set, so that configs without it print as before.
  if (!c.tangent.layer_counts.empty()) {
    j["tangent"]["layer_counts"] = c.tangent.layer_counts;
  }
  j["fd"] = {{"epsilon", c.fd.epsilon}, {"precision", c.fd.precision}};
  j["lr"] = c.lr;
  j["lr_schedule"] = {{"type", c.lr_schedule.type},
                      {"decay_rounds", c.lr_schedule.decay_rounds},
                      {"min_lr", c.lr_schedule.min_lr}};
  j["momentum"] = c.momentum;
  j["clip_jvp"] = c.clip_jvp;
  j["jvp_bits"] = c.jvp_bits;
  j["clip_step"] = c.clip_step;
  j["batch_size"] = c.batch_size;
  j["local_epochs"] = c.local_epochs;
  j["sampling"] = {{"fraction", c.sampling.fraction},
                   {"minimum", c.sampling.minimum}};
  j["server_optimizer"] = {{"type", c.server_optimizer.type},
                           {"lr", c.server_optimizer.lr},
                           {"momentum", c.server_optimizer.momentum},
                           {"beta1", c.server_optimizer.beta1},
                           {"beta2", c.server_optimizer.beta2},
                           {"eps", c.server_optimizer.eps},
                           {"radius", c.server_optimizer.radius},
                           {"k", c.server_optimizer.k},
                           {"start", c.server_optimizer.start}};
  j["compression"] = c.compression;
  j["sync"] = c.sync;
  j["sync_max_terms"] = c.sync_max_terms;
  j["eval_every"] = c.eval_every;
  j["targets"] = c.targets;
  j["stop_at_target"] = c.stop_at_target;
  j["timeouts"] = {{"round_s", c.timeouts.round_s},
                   {"client_s", c.timeouts.client_s},
                   {"join_s", c.timeouts.join_s}};
  j["robust"] = {
      {"rule", c.robust.rule},         {"trim", c.robust.trim},
      {"quantile", c.robust.quantile}, {"multiplier", c.robust.multiplier},
      {"window", c.robust.window},     {"dense", c.robust.dense},
      {"norm", c.robust.norm}};
  j["privacy"] = {{"clip", c.privacy.clip},
                  {"noise_multiplier", c.privacy.noise_multiplier},
                  {"delta", c.privacy.delta}};
  return j;
}

void EmitJson(const nlohmann::ordered_json& j, YAML::Emitter& out) {
  if (j.is_object()) {
    out << YAML::BeginMap;
    for (auto it = j.begin(); it != j.end(); ++it) {
      out << YAML::Key << it.key() << YAML::Value;
      EmitJson(it.value(), out);
    }
    out << YAML::EndMap;
  } else if (j.is_array()) {
    out << YAML::Flow << YAML::BeginSeq;
    for (const auto& item : j) EmitJson(item, out);
    out << YAML::EndSeq;
  } else if (j.is_string()) {
    // Quoted so that values like "1e3" or "yes" stay strings.
    out << YAML::DoubleQuoted << j.get<std::string>();
  } else if (j.is_boolean()) {
    out << (j.get<bool>() ? "true" : "false");
  } else if (j.is_number_float()) {
    out << FormatDouble(j.get<double>());
  } else if (j.is_number_unsigned()) {
    out << std::to_string(j.get<uint64_t>());
  } else if (j.is_number_integer()) {
    out << std::to_string(j.get<int64_t>());
  } else {
    out << YAML::Null;
  }
}

}  // namespace

int TangentsPerClient(const TangentConfig& tangent) {
  int total = tangent.count;
  for (const auto& [layer, n] : tangent.layer_counts) total += n;
  return total;
}

absl::StatusOr<Config> ParseConfig(const std::string& yaml_text,
                                   const std::string& base_dir,
                                   const std::vector<std::string>& overrides,
                                   const std::string& origin) {
  try {
    return ParseConfigOrThrow(yaml_text, base_dir, overrides, origin);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid config in ", origin, ": ", e.what()));
  }
}

absl::StatusOr<Config> LoadConfigFile(
    const std::string& path, const std::vector<std::string>& overrides) {
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    return absl::NotFoundError(
        absl::StrCat("config file not found: '", path, "'"));
  }
  if (fs::is_directory(path, ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat("config path is a directory: '", path, "'"));
  }
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  if (!in.good() && !in.eof()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read config file '", path, "'"));
  }
  std::string base_dir = fs::path(path).parent_path().string();
  if (base_dir.empty()) base_dir = ".";
  ASSIGN_OR_RETURN(Config config,
                   ParseConfig(text.str(), base_dir, overrides, path));
  config.source_path = path;
  return config;
}

std::string ConfigToYaml(const Config& config) {
  YAML::Emitter out;
  EmitJson(ConfigTree(config), out);
  return std::string(out.c_str()) + "\n";
}

std::string ConfigToJson(const Config& config) {
  return ConfigTree(config).dump(2);
}

const char* MergeRuleName(MergeRule rule) {
  switch (rule) {
    case MergeRule::kNaive:
      return "naive";
    case MergeRule::kAverage:
      return "average";
    case MergeRule::kWeighted:
      return "weighted";
  }
  return "weighted";
}

}  // namespace fedfwd
