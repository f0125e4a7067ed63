#include "tools/model_eval.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/config.h"
#include "common/dataset.h"
#include "common/model_file.h"
#include "common/partition.h"
#include "common/scripted_model.h"
#include "common/status_macros.h"
#include "common/torch_model.h"

namespace fedfwd {

absl::StatusOr<ModelEvalReport> EvaluateModelFile(
    const std::string& path, const ModelEvalOptions& options) {
  ASSIGN_OR_RETURN(ModelFile file, ReadModelFile(path));
  ASSIGN_OR_RETURN(Config config,
                   ParseConfig(file.header.config_yaml, "/", options.overrides,
                               path + " (embedded run config)"));
  ModelEvalReport report;
  report.model = file.header.model;
  report.kind = file.header.kind;
  report.round = file.header.round;
  report.dataset =
      options.dataset.empty() ? file.header.dataset : options.dataset;
  std::string dir = options.data_dir;
  if (dir.empty() && report.dataset == config.dataset.name) {
    dir = config.dataset.data_dir;
  }
  if (dir.empty()) dir = DefaultDataDir(report.dataset);

  ASSIGN_OR_RETURN(DatasetInfo info,
                   DatasetInfoFor(report.dataset, config.dataset.file, dir));
  // A TorchScript model is the file the run's config names (--set
  // model.torchscript=FILE when it has moved).
  ASSIGN_OR_RETURN(
      ModelSpec spec,
      ResolveModelSpec(file.header.model,
                       file.header.model == kTorchScriptModel
                           ? config.torchscript
                           : std::string(),
                       {info.channels, info.rows, info.cols}, info.num_classes,
                       /*forward_ad=*/false));
  if (spec.NumParams() != static_cast<int64_t>(file.params.size())) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": model ", spec.name, " on ", report.dataset, " has ",
        spec.NumParams(), " parameters, the file has ", file.params.size(),
        " (was it trained on images of another shape?)"));
  }
  report.params = static_cast<int64_t>(file.params.size());
  for (float v : file.params) report.nonzero += v != 0;
  const std::vector<at::Tensor> params = ParamViews(spec, file.params.data());
  ASSIGN_OR_RETURN(
      ImageSet test,
      LoadDataSplit(report.dataset, config.dataset.file, dir, Split::kTest));
  ASSIGN_OR_RETURN(report.test,
                   Evaluate(spec, params, MakeFullBatch(test, info)));
  if (!options.per_client) return report;

  report.clients = config.clients;
  report.partition = config.partition.type;
  ASSIGN_OR_RETURN(ImageSet train,
                   LoadDataSplit(report.dataset, config.dataset.file, dir,
                                 Split::kTrain, config.dataset.train_limit));
  const std::vector<uint8_t> labels = PartitionLabels(train);
  const int classes = PartitionClasses(train, info);
  ASSIGN_OR_RETURN(std::vector<std::vector<int64_t>> parts,
                   PartitionIndices(labels, classes, config.clients,
                                    config.partition, config.seed, train.ids));
  const auto counts = LabelHistogram(labels, classes, parts);
  for (size_t c = 0; c < parts.size(); ++c) {
    ShardScore s;
    s.client = static_cast<int>(c);
    s.label_counts = counts[c];
    if (!parts[c].empty()) {
      ASSIGN_OR_RETURN(
          s.score, Evaluate(spec, params, MakeBatch(train, info, parts[c])));
    }
    report.shards.push_back(std::move(s));
  }
  return report;
}

std::string FormatModelEvalReport(const ModelEvalReport& r) {
  std::string out =
      r.test.regression
          ? absl::StrFormat(
                "%s model %s (round %d) on %s test split: R2 %.4f  RMSE %.4g  "
                "MSE %.4g  (%d examples)\n",
                r.kind, r.model, r.round, r.dataset, r.test.r2, r.test.rmse,
                r.test.loss, r.test.count)
          : absl::StrFormat(
                "%s model %s (round %d) on %s test split: accuracy %.4f  loss "
                "%.4f  (%d images)\n",
                r.kind, r.model, r.round, r.dataset, r.test.accuracy,
                r.test.loss, r.test.count);
  absl::StrAppendFormat(
      &out, "parameters: %d, non-zero: %d (%.4f)\n", r.params, r.nonzero,
      r.params ? static_cast<double>(r.nonzero) / static_cast<double>(r.params)
               : 0.0);
  if (r.shards.empty()) return out;
  absl::StrAppendFormat(&out,
                        "per client training shard (%d clients, partition "
                        "%s):\n%6s %7s %9s %8s  %s\n",
                        r.clients, r.partition, "client", "size", "accuracy",
                        "loss", "labels (count per class)");
  double lo = 1, hi = 0;
  for (const auto& s : r.shards) {
    std::string labels;
    for (int64_t n : s.label_counts) absl::StrAppend(&labels, " ", n);
    absl::StrAppendFormat(&out, "%6d %7d %9.4f %8.4f %s\n", s.client,
                          s.score.count, s.score.accuracy, s.score.loss,
                          labels);
    if (s.score.count > 0) {
      lo = std::min(lo, s.score.accuracy);
      hi = std::max(hi, s.score.accuracy);
    }
  }
  absl::StrAppendFormat(&out, "client accuracy range: %.4f .. %.4f\n", lo, hi);
  return out;
}

std::string ModelEvalReportJson(const ModelEvalReport& r) {
  nlohmann::json j;
  j["model"] = r.model;
  j["kind"] = r.kind;
  j["round"] = r.round;
  j["dataset"] = r.dataset;
  if (r.test.regression) {
    j["test_r2"] = r.test.r2;
    j["test_rmse"] = r.test.rmse;
  } else {
    j["test_acc"] = r.test.accuracy;
  }
  j["test_loss"] = r.test.loss;
  j["params"] = r.params;
  j["nonzero_params"] = r.nonzero;
  j["test_count"] = r.test.count;
  if (!r.shards.empty()) {
    j["clients"] = r.clients;
    j["partition"] = r.partition;
    nlohmann::json shards = nlohmann::json::array();
    for (const auto& s : r.shards) {
      shards.push_back({{"client", s.client},
                        {"size", s.score.count},
                        {"accuracy", s.score.accuracy},
                        {"loss", s.score.loss},
                        {"label_counts", s.label_counts}});
    }
    j["shards"] = shards;
  }
  return j.dump(2);
}

}  // namespace fedfwd
