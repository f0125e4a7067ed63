#include "tools/central_trainer.h"

#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/dataset.h"
#include "common/metrics.h"
#include "common/model_file.h"
#include "common/scripted_model.h"
#include "common/status_macros.h"
#include "common/trainer.h"
#include "server/evaluator.h"
#include "server/run_summary.h"
#include "server/strategy.h"

namespace fedfwd {
namespace {

struct TargetHit {
  double target = 0;
  int64_t step = -1;
  double wall_s = 0;
};

absl::Status WriteModel(MetricsWriter& metrics, const Config& config,
                        const std::vector<float>& params,
                        const std::string& kind, int64_t step,
                        double test_acc) {
  return metrics.WriteFileAtomically(
      kind + "_model.bin",
      EncodeModelFile(RunModelHeader(config, kind, step, test_acc), params));
}

}  // namespace

absl::Status RunCentral(const Config& config_in, const CentralOptions& options,
                        const std::atomic<bool>* stop) {
  if (config_in.estimator == "fedavg") {
    return absl::InvalidArgumentError(
        "fedfwd-train runs estimator backprop (= fedsgd) or jvp; fedavg is a "
        "federated algorithm (with one client it is plain SGD: use backprop)");
  }
  // One logical client with all the data, every step.
  Config config = config_in;
  config.clients = 1;
  config.min_clients = 1;
  config.sampling = SamplingConfig();
  config.partition = PartitionOptions();

  ASSIGN_OR_RETURN(DatasetInfo info,
                   DatasetInfoFor(config.dataset.name, config.dataset.file,
                                  config.dataset.data_dir));
  ASSIGN_OR_RETURN(
      ModelSpec spec,
      ResolveModelSpec(config.model, config.torchscript,
                       {info.channels, info.rows, info.cols}, info.num_classes,
                       EstimatorNeedsForwardAd(config.estimator)));
  ASSIGN_OR_RETURN(std::unique_ptr<Strategy> strategy,
                   MakeStrategy(config, spec, options.threads));
  ASSIGN_OR_RETURN(std::unique_ptr<Evaluator> evaluator,
                   Evaluator::Create(config, spec));
  TrainerOptions t;
  t.model = config.model;
  if (spec.script != nullptr) {
    t.torchscript = *spec.script;
    t.torchscript_name = config.torchscript;
  }
  t.dataset = config.dataset.name;
  t.file = config.dataset.file;
  t.input_shape = {info.channels, info.rows, info.cols};
  t.num_classes = info.num_classes;
  t.class_names = info.class_names;
  t.data_dir = config.dataset.data_dir.empty()
                   ? DefaultDataDir(config.dataset.name)
                   : config.dataset.data_dir;
  t.seed = config.seed;
  t.shard = 0;
  t.num_shards = 1;
  t.train_limit = config.dataset.train_limit;
  t.device = options.device;
  ASSIGN_OR_RETURN(std::unique_ptr<Trainer> trainer, Trainer::Create(t));
  RETURN_IF_ERROR(trainer->SetModel(InitialParams(spec, config.seed), 1));
  ASSIGN_OR_RETURN(std::unique_ptr<MetricsWriter> metrics,
                   MetricsWriter::Open(options.out_dir, "step"));
  metrics->set_regression(config.dataset.file.regression);

  auto log = [&](const std::string& line) {
    if (options.quiet) return;
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  };
  log(absl::StrFormat(
      "fedfwd-train: %s (%d parameters) on %s (%d training examples, %s), "
      "estimator %s, %d steps, batch %d, lr %g",
      spec.name, spec.NumParams(), config.dataset.name, trainer->shard_size(),
      trainer->device_name(), config.estimator, config.rounds,
      config.batch_size, config.lr));

  std::vector<TargetHit> targets;
  for (double x : config.targets) targets.push_back({x});
  std::vector<float>& params = *trainer->mutable_params();
  ASSIGN_OR_RETURN(EvalResult initial, evaluator->Evaluate(params));
  RoundRow row0;
  row0.round = 0;
  row0.test_acc = initial.accuracy;
  if (initial.regression) row0.test_rmse = initial.rmse;
  RETURN_IF_ERROR(metrics->Append(row0));
  log(absl::StrCat("step 0: ", ScoreText(initial)));

  const absl::Time start = absl::Now();
  absl::Time last_log = start;
  // R^2 has no floor: with regression the first evaluation is the best.
  double loss_sum = 0, final_acc = initial.accuracy,
         best_acc = initial.regression
                        ? -std::numeric_limits<double>::infinity()
                        : -1.0,
         final_rmse = initial.rmse;
  int64_t loss_count = 0, steps_done = 0;
  bool interrupted = false, stopped_at_target = false;
  for (int64_t step = 1; step <= config.rounds; ++step) {
    if (stop != nullptr && stop->load()) {
      interrupted = true;
      break;
    }
    std::vector<TaskSpec> tasks = strategy->ConfigureRound(step, {1});
    LocalTask task;
    task.round = step;
    task.estimator = tasks[0].estimator;
    task.tangents = tasks[0].tangents;
    task.batch_size = tasks[0].batch_size;
    task.fd_epsilon = tasks[0].fd_epsilon;
    task.fd_fixed_point = tasks[0].fd_fixed_point;
    ASSIGN_OR_RETURN(LocalResult local, trainer->Run(task));
    ClientResult r;
    r.client_id = 1;
    r.round = step;
    r.jvps = std::move(local.jvps);
    r.update = std::move(local.update);
    r.num_samples = local.num_samples;
    r.loss = local.loss;
    absl::Status valid = strategy->ValidateResult(tasks[0], r);
    if (!valid.ok()) {
      return absl::InternalError(absl::StrFormat(
          "step %d: %s (training diverged? lower lr)", step, valid.message()));
    }
    ASSIGN_OR_RETURN(MergeReport report,
                     strategy->Aggregate(step, tasks, {r}, &params));
    trainer->ParamsChanged(static_cast<uint64_t>(step) + 1);
    steps_done = step;
    loss_sum += r.loss;
    ++loss_count;

    const bool eval = step % config.eval_every == 0 || step == config.rounds;
    const absl::Time now = absl::Now();
    if (eval) {
      ASSIGN_OR_RETURN(EvalResult score, evaluator->Evaluate(params));
      if (!std::isfinite(score.loss)) {
        return absl::InternalError(absl::StrFormat(
            "training diverged at step %d (test loss %g); lower lr", step,
            score.loss));
      }
      RoundRow row;
      row.round = step;
      row.wall_s = absl::ToDoubleSeconds(absl::Now() - start);
      row.train_loss = loss_sum / std::max<int64_t>(1, loss_count);
      row.test_acc = score.accuracy;
      if (score.regression) row.test_rmse = score.rmse;
      row.clients = 1;
      row.lr = report.lr;
      RETURN_IF_ERROR(metrics->Append(row));
      loss_sum = 0;
      loss_count = 0;
      final_acc = score.accuracy;
      final_rmse = score.rmse;
      if (score.accuracy > best_acc) {
        best_acc = score.accuracy;
        RETURN_IF_ERROR(WriteModel(*metrics, config_in, params, "best", step,
                                   score.accuracy));
      }
      for (auto& hit : targets) {
        if (hit.step < 0 && score.accuracy >= hit.target) {
          hit.step = step;
          hit.wall_s = row.wall_s;
        }
      }
      log(absl::StrFormat("step %d/%d  loss %.4f  %s  %.1f s", step,
                          config.rounds, *row.train_loss, ScoreText(score),
                          row.wall_s));
      last_log = now;
      if (config.stop_at_target && !targets.empty() &&
          targets.back().step >= 0) {
        stopped_at_target = true;
        log(absl::StrFormat("step %d: target %.4f reached; stopping", step,
                            targets.back().target));
        break;
      }
    } else if (now - last_log > absl::Seconds(10)) {
      last_log = now;
      log(absl::StrFormat("step %d/%d  loss %.4f  %.1f s", step, config.rounds,
                          r.loss, absl::ToDoubleSeconds(now - start)));
    }
  }
  const double wall_s = absl::ToDoubleSeconds(absl::Now() - start);
  if (interrupted && steps_done > 0) {
    ASSIGN_OR_RETURN(EvalResult score, evaluator->Evaluate(params));
    final_acc = score.accuracy;
    final_rmse = score.rmse;
  }
  RETURN_IF_ERROR(
      WriteModel(*metrics, config_in, params, "final", steps_done, final_acc));
  nlohmann::json j;
  RunSummary core;
  core.mode = "central";
  core.unit = "step";
  core.final_test_acc = final_acc;
  core.best_test_acc = best_acc;
  if (config.dataset.file.regression) {
    core.task = "regression";
    core.final_test_rmse = final_rmse;
  }
  core.rounds = steps_done;
  core.planned = config.rounds;
  core.wall_s = wall_s;
  core.interrupted = interrupted;
  core.stopped_at_target = stopped_at_target;
  WriteSummaryCore(core, &j);
  j["steps"] = steps_done;  // the older keys (run_summary.h)
  j["steps_planned"] = config.rounds;
  nlohmann::json tj = nlohmann::json::array();
  for (const auto& hit : targets) {
    nlohmann::json h;
    h["target"] = hit.target;
    h["reached"] = hit.step >= 0;
    if (hit.step >= 0) {
      h["step"] = hit.step;
      h["wall_s"] = hit.wall_s;
    }
    tj.push_back(h);
  }
  j["targets"] = tj;
  j["model"] = spec.name;
  j["num_params"] = spec.NumParams();
  j["device"] = trainer->device_name();
  j["git_commit"] = GitCommit();
  j["libtorch_version"] = TorchVersion();
  j["host"] = HostName();
  j["config"] = nlohmann::json::parse(ConfigToJson(config_in), nullptr, false);
  RETURN_IF_ERROR(metrics->WriteSummary(j.dump(2)));
  const bool regression = config.dataset.file.regression;
  log(absl::StrFormat(
      "%s after %d steps: %s %.4f  best %.4f%s  wall %.1f s",
      interrupted ? "stopped" : "finished", steps_done,
      regression ? "final_test_r2" : "final_test_acc", final_acc, best_acc,
      regression ? absl::StrFormat("  final_test_rmse %.4g", final_rmse) : "",
      wall_s));
  return interrupted ? absl::CancelledError("stopped before the last step")
                     : absl::OkStatus();
}

}  // namespace fedfwd
