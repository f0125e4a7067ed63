// fedfwd-train: the centralized baseline (no network). Same config format,
// models, data and estimators as a federated run; see central_trainer.h.
#include <atomic>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "common/config.h"
#include "common/signals.h"
#include "common/torch_model.h"
#include "tools/central_trainer.h"

int main(int argc, char** argv) {
  CLI::App app{
      "Centralized training on one machine, the baseline of every federated "
      "run: backprop SGD (estimator backprop or fedsgd) or forward gradients "
      "(estimator jvp) on the whole training set, one optimizer step per "
      "config round. Writes metrics.jsonl (one row per evaluation, keyed "
      "'step'), summary.json, final_model.bin and best_model.bin.\n"
      "Exit code: 0 done, 1 failed, 2 bad flags or config, 130 interrupted.",
      "fedfwd-train"};
  std::string config_path, out_dir, device = "cpu";
  std::vector<std::string> overrides;
  int threads = 1;
  app.add_option("config", config_path, "Experiment config (YAML)")->required();
  app.add_option("--out", out_dir,
                 "Output folder (default: runs/<config stem>-central-"
                 "<YYYYmmdd-HHMMSS>)");
  app.add_option("--set", overrides,
                 "Override a config key, e.g. --set rounds=200 (repeatable)")
      ->allow_extra_args(false)
      ->type_name("KEY=VALUE");
  app.add_option("--threads", threads, "libtorch compute threads")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  app.add_option("--device", device, "cpu or cuda (falls back to cpu)")
      ->capture_default_str()
      ->check(CLI::IsMember({"cpu", "cuda"}));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }

  using namespace fedfwd;
  auto config = LoadConfigFile(config_path, overrides);
  if (!config.ok()) {
    std::fprintf(stderr, "fedfwd-train: bad config: %s\n",
                 std::string(config.status().message()).c_str());
    return 2;
  }
  if (out_dir.empty()) {
    char stamp[32];
    const std::time_t now = std::time(nullptr);
    std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::localtime(&now));
    out_dir = "runs/" + std::filesystem::path(config_path).stem().string() +
              "-central-" + stamp;
  }
  SetTorchThreads(threads);
  static std::atomic<bool> stop{false};
  InstallStopHandler([](int sig) {
    std::fprintf(stderr,
                 "fedfwd-train: signal %d: stopping after this step (again "
                 "to quit now)\n",
                 sig);
    stop = true;
  });
  CentralOptions options;
  options.out_dir = out_dir;
  options.device = device;
  options.threads = threads;
  absl::Status status = RunCentral(*config, options, &stop);
  if (absl::IsCancelled(status)) return 130;
  if (!status.ok()) {
    std::fprintf(stderr, "fedfwd-train: %s\n",
                 std::string(status.message()).c_str());
    return absl::IsInvalidArgument(status) ? 2 : 1;
  }
  std::printf("outputs in %s\n", out_dir.c_str());
  return 0;
}
