// Experiment configuration: the YAML schema, its defaults and its checks.
//
// A config is loaded from a YAML file, then `overrides` ("dotted.key=value",
// as given to --set) are applied, then every key is checked: unknown keys,
// wrong types and out-of-range values are errors that name the key (and the
// file). Relative paths (dataset.data_dir) resolve against the directory of
// the config file, so a config runs from any working directory.
// Thread-safety: plain values; no shared state.
#ifndef FEDFWD_COMMON_CONFIG_H_
#define FEDFWD_COMMON_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace fedfwd {

enum class MergeRule { kNaive, kAverage, kWeighted };

struct DatasetConfig {
  std::string name = "mnist";  // mnist | fashion-mnist | cifar10
  // Folder holding the dataset files. Empty: the dataset's default location
  // (see DefaultDataDir in dataset.h).
  std::string data_dir;
  int64_t train_limit = 0;  // use only the first N training examples (0: all)
  int64_t test_limit = 0;   // evaluate on the first N test examples (0: all)
};

struct TangentConfig {
  std::string distribution = "normal";  // normal | rademacher
  // false: each client gets its own tangent seed per round (default);
  // true: all clients of a round share one tangent.
  bool shared_seed = false;
};

struct LrScheduleConfig {
  // constant: lr; inverse: lr / (1 + t / decay_rounds);
  // cosine: min_lr + (lr - min_lr) * (1 + cos(pi * t / rounds)) / 2.
  std::string type = "constant";
  double decay_rounds = 1000;
  double min_lr = 0;
};

struct TimeoutsConfig {
  double round_s = 60;   // a round closes at this deadline with what it has
  double client_s = 10;  // a client unheard of this long is dropped
  double join_s = 600;   // how long to wait for `clients` to join
};

struct Config {
  std::string model = "mlp";
  DatasetConfig dataset;
  std::string partition = "iid";
  int clients = 4;      // client daemons that take part (and shards)
  int min_clients = 1;  // quorum: fewest results that make a round count
  int64_t rounds = 100;
  uint64_t seed = 1;
  std::string estimator = "jvp";
  MergeRule merge = MergeRule::kWeighted;
  TangentConfig tangent;
  double lr = 1e-4;
  LrScheduleConfig lr_schedule;
  double momentum = 0;
  double clip_jvp = 0;  // clip each client's JVP scalar to [-c, c]; 0: off
  int batch_size = 64;
  int64_t eval_every = 100;     // evaluate test accuracy every N rounds
  std::vector<double> targets;  // accuracy thresholds to time
  TimeoutsConfig timeouts;

  std::string source_path;  // file it was loaded from (not a YAML key)
};

// Parses YAML text. `base_dir` resolves relative paths; `origin` names the
// source in error messages.
absl::StatusOr<Config> ParseConfig(const std::string& yaml_text,
                                   const std::string& base_dir,
                                   const std::vector<std::string>& overrides,
                                   const std::string& origin = "<config>");
// Reads and parses a file; errors name the file.
absl::StatusOr<Config> LoadConfigFile(
    const std::string& path, const std::vector<std::string>& overrides = {});

// The config as YAML that ParseConfig reads back to an equal Config (paths
// already absolute). Used to hand the effective config to child processes.
std::string ConfigToYaml(const Config& config);
// The config as a JSON object text (for summary.json).
std::string ConfigToJson(const Config& config);

const char* MergeRuleName(MergeRule rule);

}  // namespace fedfwd

#endif  // FEDFWD_COMMON_CONFIG_H_
