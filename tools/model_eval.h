// Scores a saved model file (model_file.h) on a dataset's test split and,
// on the training shards of the run that produced it, per client (the
// partition is recomputed from the run's embedded config, so non-iid runs
// show which clients the model serves badly). Backs fedfwd-eval.
// Thread-compatible.
#ifndef FEDFWD_TOOLS_MODEL_EVAL_H_
#define FEDFWD_TOOLS_MODEL_EVAL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model.h"

namespace fedfwd {

struct ModelEvalOptions {
  std::string dataset;   // empty: the dataset the model was trained on
  std::string data_dir;  // empty: the run's, else the dataset's default
  bool per_client = true;
  // --set style overrides of the embedded run config (e.g. clients=20,
  // partition.type=dirichlet) for the per-client split.
  std::vector<std::string> overrides;
};

struct ShardScore {
  int client = 0;
  EvalResult score;
  std::vector<int64_t> label_counts;  // the shard's examples per class
};

struct ModelEvalReport {
  std::string model, dataset, kind, partition;
  int64_t round = 0;
  int clients = 0;
  // The model's parameters and how many of them are exactly zero
  // (sparsity, e.g. of server_optimizer frank_wolfe).
  int64_t params = 0, nonzero = 0;
  EvalResult test;
  std::vector<ShardScore> shards;  // empty unless per_client
};

absl::StatusOr<ModelEvalReport> EvaluateModelFile(
    const std::string& path, const ModelEvalOptions& options);

// Human-readable table of the report.
std::string FormatModelEvalReport(const ModelEvalReport& report);
// The report as a JSON object text.
std::string ModelEvalReportJson(const ModelEvalReport& report);

}  // namespace fedfwd

#endif  // FEDFWD_TOOLS_MODEL_EVAL_H_
