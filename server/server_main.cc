// fedfwd-server: the coordinator. Loads the config, listens, waits for the
// configured clients, runs the rounds, writes metrics and exits 0.
#include <grpcpp/grpcpp.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/config.h"
#include "common/dataset.h"
#include "common/log.h"
#include "common/log_flags.h"
#include "common/scripted_model.h"
#include "common/security.h"
#include "common/signals.h"
#include "common/torch_model.h"
#include "server/checkpoint.h"
#include "server/peer_engine.h"
#include "server/round_engine.h"
#include "server/service.h"

namespace {

// A line of the program itself (not of the round engine): on stderr, unless
// `stream` says otherwise, with "fedfwd-server: " in front in the human
// format.
void Say(fedfwd::LogLevel level, const std::string& human_tag,
         const std::string& msg, fedfwd::LogFields fields = {},
         fedfwd::LogStream stream = fedfwd::LogStream::kStderr) {
  fedfwd::LogRecord r;
  r.level = level;
  r.component = "server";
  r.msg = msg;
  r.fields = std::move(fields);
  r.human_prefix = "fedfwd-server: " + human_tag;
  r.stream = stream;
  fedfwd::Logger::Global().Write(r);
}

int Fail(const std::string& what, const absl::Status& s, int code = 1) {
  Say(fedfwd::LogLevel::kError, "", absl::StrCat(what, ": ", s.message()),
      {{"event", "fatal"},
       {"error", std::string(s.message())},
       {"exit_code", code}});
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  // Debian's Abseil is built with absl::Mutex deadlock detection on, and
  // gRPC locks through absl::Mutex: every lock and unlock updated a lock
  // graph (GraphCycles in a profile of a 10-client round). A release
  // service does not pay for that; the tests keep the default.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  CLI::App app{
      "fedfwd coordinator: distributes models and seeds to client daemons, "
      "merges their results (forward-gradient JVPs, FedSGD gradients or "
      "FedAvg deltas) and evaluates the model."};
  std::string config_path, listen, out_dir = ".";
  int threads = 1;
  app.add_option("--config", config_path, "experiment YAML")->required();
  app.add_option("--listen", listen,
                 "HOST:PORT to serve on (port 0 picks a free one)")
      ->required();
  app.add_option("--out", out_dir,
                 "folder for metrics.jsonl, summary.json, final_model.bin")
      ->capture_default_str();
  app.add_option("--threads", threads, "libtorch threads for evaluation")
      ->capture_default_str();
  fedfwd::TlsOptions tls;
  std::string credentials_path;
  app.add_option("--tls-cert", tls.cert_file,
                 "PEM certificate (chain) the coordinator presents");
  app.add_option("--tls-key", tls.key_file, "PEM key of --tls-cert");
  app.add_option("--tls-ca", tls.ca_file,
                 "PEM CA: require client certificates signed by it (mutual "
                 "TLS)");
  app.add_option("--credentials", credentials_path,
                 "who may call: lines 'client|status NAME SHA256-OF-TOKEN' "
                 "(re-read when it changes; see docs/security.md)");
  app.add_flag("--insecure", tls.insecure,
               "plaintext instead of TLS (trusted networks only)");
  int checkpoint_every = 1;
  bool resume = false;
  app.add_option("--checkpoint-every", checkpoint_every,
                 "write OUT/checkpoint.bin (atomically) every N rounds and "
                 "when stopped; 0: never")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  double checkpoint_min_interval = 10;
  app.add_option("--checkpoint-min-interval", checkpoint_min_interval,
                 "seconds: skip a due checkpoint until this long after the "
                 "previous one (a large model written every fast round "
                 "costs more than the round); 0: strictly every N rounds")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  std::vector<std::string> overrides;
  app.add_option("--set", overrides,
                 "override a config key after loading --config, e.g. --set "
                 "clients=4 (repeatable; --resume needs the same ones)")
      ->allow_extra_args(false)
      ->type_name("KEY=VALUE");
  fedfwd::LogFlags log_flags;
  fedfwd::AddLogFlags(&app, &log_flags);
  std::string summary_extra_path;
  app.add_option("--summary-extra", summary_extra_path,
                 "JSON file of one object whose keys summary.json carries "
                 "besides its own (fedfwd-run --link records the links this "
                 "way)");
  app.add_flag("--resume", resume,
               "continue the run whose checkpoint is in --out (same config): "
               "model, optimizer state, round counter, metrics and client "
               "registry; clients that outlived the coordinator carry on");
  CLI11_PARSE(app, argc, argv);

  using namespace fedfwd;
  if (absl::Status s = ApplyLogFlags(log_flags); !s.ok()) {
    return Fail("bad flags", s, 2);
  }
  auto server_creds = MakeServerCredentials(tls);
  if (!server_creds.ok()) return Fail("bad flags", server_creds.status(), 2);
  std::unique_ptr<CredentialStore> auth;
  if (!credentials_path.empty()) {
    auto store = CredentialStore::Load(credentials_path);
    if (!store.ok()) return Fail("bad flags", store.status(), 2);
    auth = std::move(*store);
  }
  if (tls.insecure) {
    Say(LogLevel::kWarn, "warning: ",
        "--insecure: plaintext; anyone on the path can read and alter the "
        "traffic",
        {{"event", "insecure"}});
  }
  if (!auth) {
    Say(LogLevel::kWarn, "warning: ",
        "no --credentials: any client that reaches the port may join and "
        "submit",
        {{"event", "no_credentials"}});
  }
  auto config = LoadConfigFile(config_path, overrides);
  if (!config.ok()) return Fail("bad config", config.status(), 2);
  SetTorchThreads(threads);
  auto info = DatasetInfoFor(config->dataset.name, config->dataset.file,
                             config->dataset.data_dir);
  if (!info.ok()) return Fail("bad dataset", info.status(), 2);
  config->dataset.class_names = info->class_names;
  auto spec = ResolveModelSpec(config->model, config->torchscript,
                               {info->channels, info->rows, info->cols},
                               info->num_classes,
                               EstimatorNeedsForwardAd(config->estimator));
  if (!spec.ok()) return Fail("bad model", spec.status(), 2);
  auto strategy = MakeStrategy(*config, *spec, threads);
  if (!strategy.ok()) return Fail("bad config", strategy.status(), 2);
  auto evaluator = Evaluator::Create(*config, *spec);
  if (!evaluator.ok()) return Fail("cannot load test data", evaluator.status());
  if (config->algorithm != "federated" && resume) {
    return Fail("cannot resume",
                absl::InvalidArgumentError(absl::StrCat(
                    "decentralized runs (algorithm ", config->algorithm,
                    ") keep no checkpoint; start the run again")),
                2);
  }
  if (config->algorithm != "federated") checkpoint_every = 0;
  const std::string checkpoint_path =
      out_dir + "/" + std::string(kCheckpointFileName);
  std::optional<ckpt::Checkpoint> checkpoint;
  if (resume) {
    auto c = ReadCheckpoint(checkpoint_path);
    if (absl::IsNotFound(c.status())) {
      return Fail("cannot resume",
                  absl::NotFoundError(absl::StrCat(
                      "no checkpoint in ", out_dir,
                      " (was the run started with --checkpoint-every 0?)")),
                  2);
    }
    if (!c.ok()) return Fail("cannot resume", c.status(), 2);
    // Before metrics.jsonl is cut back: a refused resume changes nothing.
    absl::Status fits = CheckResumable(*c, *config, *spec);
    if (!fits.ok()) return Fail("cannot resume", fits, 2);
    checkpoint = std::move(*c);
  } else if (std::filesystem::exists(checkpoint_path)) {
    Say(LogLevel::kInfo, "note: ",
        absl::StrCat(checkpoint_path,
                     " holds the checkpoint of an earlier run; this fresh run "
                     "replaces it (--resume continues it)"),
        {{"event", "checkpoint_replaced"}, {"path", checkpoint_path}});
  }
  auto metrics =
      checkpoint
          ? MetricsWriter::OpenForResume(out_dir, checkpoint->rounds_done())
          : MetricsWriter::Open(
                out_dir, config->algorithm == "federated" ? "round" : "step");
  if (!metrics.ok()) return Fail("cannot write outputs", metrics.status());
  (*metrics)->set_regression(config->dataset.file.regression);

  std::unique_ptr<CoordinatorEngine> engine_holder;
  if (config->algorithm == "federated") {
    auto round_engine = std::make_unique<RoundEngine>(
        *config, *spec, std::move(*strategy), std::move(*evaluator),
        std::move(*metrics), threads);
    if (checkpoint_every > 0) {
      round_engine->EnableCheckpoints(checkpoint_path, checkpoint_every,
                                      checkpoint_min_interval);
    }
    if (checkpoint) {
      absl::Status resumed = round_engine->Resume(*checkpoint);
      if (!resumed.ok()) return Fail("cannot resume", resumed, 2);
    }
    engine_holder = std::move(round_engine);
  } else {
    engine_holder = std::make_unique<PeerEngine>(
        *config, *spec, std::move(*evaluator), std::move(*metrics), threads);
  }
  CoordinatorEngine& engine = *engine_holder;
  if (!summary_extra_path.empty()) {
    std::ifstream in(summary_extra_path);
    if (!in) {
      return Fail("cannot read --summary-extra",
                  absl::NotFoundError(summary_extra_path), 2);
    }
    std::stringstream text;
    text << in.rdbuf();
    absl::Status set = engine.SetSummaryExtra(text.str());
    if (!set.ok()) {
      return Fail(absl::StrCat("--summary-extra ", summary_extra_path), set, 2);
    }
  }
  CoordinatorService service(&engine, auth.get());
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, *server_creds, &port);
  builder.RegisterService(&service);
  builder.SetMaxReceiveMessageSize(4 << 20);
  // gRPC's synchronous server keeps at most MAX_POLLERS idle threads and
  // ends the rest; every client's long-polled GetTask holds a thread, so
  // with the default (2) each round ended ~clients threads and started as
  // many again. Keep one per client (and a few spare) instead.
  builder.SetSyncServerOption(
      grpc::ServerBuilder::SyncServerOption::MAX_POLLERS,
      std::min(config->clients + 4, 256));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    Say(LogLevel::kError, "", absl::StrCat("cannot listen on ", listen),
        {{"event", "fatal"}, {"listen", listen}, {"exit_code", 1}});
    return 1;
  }
  // fedfwd-run, the tests and deploy scripts read this line (human: its
  // exact text; json: the "listen" field of the "listening" event).
  const std::string address =
      absl::StrCat(listen.substr(0, listen.rfind(':')), ":", port);
  {
    LogRecord r;
    r.component = "server";
    r.msg = absl::StrCat("fedfwd-server listening on ", address);
    r.fields = {{"event", "listening"}, {"listen", address}};
    r.stream = LogStream::kStdout;
    r.always = true;
    Logger::Global().Write(r);
  }

  InstallStopHandler([&engine](int sig) {
    Say(LogLevel::kWarn, "",
        absl::StrCat("signal ", sig,
                     ": stopping after this round (again to quit now)"),
        {{"event", "signal"}, {"signal", sig}});
    engine.RequestStop();
  });

  absl::Status status = engine.Run();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  if (absl::IsCancelled(status)) return 130;
  if (!status.ok()) return Fail("run failed", status);
  return 0;
}
