// fedfwd-eval: scores a saved model (final_model.bin / best_model.bin of any
// run) on a test split and per client shard. See tools/model_eval.h.
#include <cstdio>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "common/torch_model.h"
#include "tools/model_eval.h"

int main(int argc, char** argv) {
  CLI::App app{
      "Evaluates a saved fedfwd model (final_model.bin or best_model.bin of a "
      "run) on the test split of a dataset and, unless --no-per-client, on "
      "each client's training shard of the run that made it (the partition "
      "is recomputed from the run's config stored in the file).\n"
      "Exit code: 0 done, 1 failed, 2 bad flags or input.",
      "fedfwd-eval"};
  std::string path, json_path;
  fedfwd::ModelEvalOptions options;
  bool no_per_client = false;
  int threads = 1;
  app.add_option("model", path, "Model file")->required();
  app.add_option("--dataset", options.dataset,
                 "mnist | fashion-mnist | cifar10 (default: the run's)");
  app.add_option("--data-dir", options.data_dir,
                 "Dataset folder (default: the run's, else the dataset's "
                 "default location)");
  app.add_flag("--no-per-client", no_per_client,
               "Only the test split, no per-client shards");
  app.add_option("--set", options.overrides,
                 "Override a key of the run's config for the per-client "
                 "split, e.g. --set clients=20 (repeatable)")
      ->type_name("KEY=VALUE");
  app.add_option("--json", json_path, "Also write the report as JSON here");
  app.add_option("--threads", threads, "libtorch compute threads")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  options.per_client = !no_per_client;
  fedfwd::SetTorchThreads(threads);
  auto report = fedfwd::EvaluateModelFile(path, options);
  if (!report.ok()) {
    std::fprintf(stderr, "fedfwd-eval: %s\n",
                 std::string(report.status().message()).c_str());
    return absl::IsInternal(report.status()) ? 1 : 2;
  }
  std::fputs(fedfwd::FormatModelEvalReport(*report).c_str(), stdout);
  if (!json_path.empty()) {
    FILE* f = std::fopen(json_path.c_str(), "w");
    if (f == nullptr) {
      std::fprintf(stderr, "fedfwd-eval: cannot write %s\n", json_path.c_str());
      return 1;
    }
    const std::string text = fedfwd::ModelEvalReportJson(*report) + "\n";
    std::fwrite(text.data(), 1, text.size(), f);
    std::fclose(f);
  }
  return 0;
}
