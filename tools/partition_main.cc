// fedfwd-partition: shows how a config splits its training set over the
// clients: one row per client with its shard size and per-class counts, the
// same partition every client daemon computes from the run seed.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/config.h"
#include "common/dataset.h"
#include "common/partition.h"

namespace {

int Fail(const std::string& what, const absl::Status& s, int code) {
  std::fprintf(stderr, "fedfwd-partition: %s: %s\n", what.c_str(),
               std::string(s.message()).c_str());
  return code;
}

std::string Describe(const fedfwd::PartitionOptions& p) {
  if (p.type == "shards") {
    return absl::StrFormat("shards (%d per client)", p.shards_per_client);
  }
  if (p.type == "dirichlet")
    return absl::StrFormat("dirichlet (alpha %g)", p.alpha);
  return p.type;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Prints how a config partitions its training set over the clients: "
      "each client's shard size and examples per class, as every client "
      "daemon computes them from the run seed.\n"
      "Exit code: 0, 1 (cannot load the data or partition it), 2 (bad flags "
      "or config).",
      "fedfwd-partition"};
  std::string config_path, data_dir;
  std::vector<std::string> overrides;
  app.add_option("config", config_path, "Experiment config (YAML)")->required();
  app.add_option("--set", overrides,
                 "Override a config key, e.g. --set partition.alpha=0.1 "
                 "(repeatable)")
      ->allow_extra_args(false)
      ->type_name("KEY=VALUE");
  app.add_option("--data-dir", data_dir,
                 "Folder holding the dataset (default: the config's "
                 "dataset.data_dir, else the dataset's default location)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }

  using namespace fedfwd;
  absl::StatusOr<Config> config = LoadConfigFile(config_path, overrides);
  if (!config.ok()) return Fail("bad config", config.status(), 2);
  if (data_dir.empty()) data_dir = config->dataset.data_dir;
  absl::StatusOr<DatasetInfo> info =
      DatasetInfoFor(config->dataset.name, config->dataset.file, data_dir);
  if (!info.ok()) return Fail("bad dataset", info.status(), 2);
  absl::StatusOr<ImageSet> train =
      LoadDataSplit(config->dataset.name, config->dataset.file, data_dir,
                    Split::kTrain, config->dataset.train_limit);
  if (!train.ok()) {
    return Fail("cannot load training data", train.status(), 1);
  }
  const int num_classes = PartitionClasses(*train, *info);
  const std::vector<uint8_t> labels = PartitionLabels(*train);
  absl::StatusOr<std::vector<std::vector<int64_t>>> parts =
      PartitionIndices(labels, num_classes, config->clients, config->partition,
                       config->seed, train->ids);
  if (!parts.ok()) return Fail("cannot partition", parts.status(), 1);

  std::printf(
      "dataset %s (%lld training examples), partition %s, %d "
      "clients, seed %llu\n",
      config->dataset.name.c_str(), static_cast<long long>(train->size),
      Describe(config->partition).c_str(), config->clients,
      static_cast<unsigned long long>(config->seed));
  std::fputs(
      FormatLabelHistogram(LabelHistogram(labels, num_classes, *parts)).c_str(),
      stdout);
  int empty = 0;
  for (const auto& p : *parts) empty += p.empty() ? 1 : 0;
  if (empty > 0) {
    std::printf(
        "warning: %d client(s) hold no examples; fedfwd-client refuses an "
        "empty shard\n",
        empty);
  }
  return 0;
}
