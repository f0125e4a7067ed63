// fedfwd-client: a client daemon. Joins the coordinator, trains on its own
// shard until the coordinator ends the run, then exits 0 (with --stay it
// waits for the next run instead, until SIGINT/SIGTERM).
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/daemon.h"
#include "client/tls_flags.h"
#include "common/log.h"
#include "common/log_flags.h"
#include "common/metrics.h"
#include "common/signals.h"
#include "common/torch_model.h"

namespace {

// A line of the program itself: stderr, "fedfwd-client: " in front in the
// human format.
void Say(fedfwd::LogLevel level, const std::string& human_tag,
         const std::string& msg, fedfwd::LogFields fields = {}) {
  fedfwd::LogRecord r;
  r.level = level;
  r.component = "client";
  r.msg = msg;
  r.fields = std::move(fields);
  r.human_prefix = "fedfwd-client: " + human_tag;
  r.stream = fedfwd::LogStream::kStderr;
  fedfwd::Logger::Global().Write(r);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "fedfwd client daemon: joins a coordinator, loads its own data shard, "
      "and answers the coordinator's tasks: forward-gradient JVPs (a few "
      "scalars back), FedSGD minibatch gradients or FedAvg local epochs "
      "(a model delta back, streamed, optionally fp16/int8)."};
  fedfwd::DaemonOptions o;
  app.add_option("--server", o.server, "coordinator HOST:PORT")->required();
  app.add_option("--data", o.data_dir, "folder holding the dataset files")
      ->required()
      ->check(CLI::ExistingDirectory);
  auto* shard = app.add_option("--shard", o.shard,
                               "shard to train on (default: the coordinator "
                               "assigns a free one)");
  auto* shards = app.add_option("--num-shards", o.num_shards,
                                "number of shards in the run (with --shard)");
  shard->needs(shards);
  shards->needs(shard);
  app.add_option("--device", o.device, "cpu or cuda")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  app.add_option("--threads", o.threads,
                 "libtorch threads (0: the library default)")
      ->capture_default_str();
  app.add_option("--name", o.name, "name shown in the coordinator's logs");
  app.add_option("--unreachable-timeout", o.unreachable_s,
                 "give up after the coordinator is unreachable this long (s; "
                 "ignored with --stay)")
      ->capture_default_str();
  app.add_flag("--stay", o.stay,
               "keep running across runs: when a run ends (or the "
               "coordinator goes away), wait for the coordinator's next run "
               "and join it, retrying with backoff for as long as it takes "
               "(--unreachable-timeout does not apply); SIGINT/SIGTERM end "
               "it with exit 0");
  app.add_option("--health-file", o.health_file,
                 "after every successful exchange with the coordinator, "
                 "replace this file atomically with the unix time (s), for "
                 "health checks: test $(( $(date +%s) - $(cat FILE) )) -lt 60");
  app.add_flag("--allow-torchscript", o.allow_torchscript,
               "accept runs whose model is a TorchScript file the "
               "coordinator sends (config model: {torchscript: FILE}); "
               "libtorch runs that code on this machine. Without it such a "
               "run is refused at join");
  std::string token_file;
  fedfwd::AddClientTlsFlags(&app, &o.tls, &token_file);
  app.add_option("--peer-listen", o.peer_listen,
                 "serve the peer service of decentralized runs (easgd, "
                 "gosgd, sgp) on HOST:PORT (port 0: any free one); peers "
                 "must be able to reach it")
      ->group("Decentralized runs");
  app.add_option("--peer-advertise", o.peer_advertise,
                 "HOST:PORT peers dial to reach this daemon (default: "
                 "--peer-listen's host with the bound port, or this "
                 "machine's host name when it listens on 0.0.0.0 or [::]; "
                 "set it behind a port mapping or when peers know this "
                 "machine by another name)")
      ->group("Decentralized runs");
  app.add_option("--peer-tls-cert", o.peer_tls.cert_file,
                 "PEM certificate the peer service presents (valid for the "
                 "advertised host, signed by the --tls-ca that peers trust); "
                 "required unless --insecure")
      ->group("Decentralized runs");
  app.add_option("--peer-tls-key", o.peer_tls.key_file,
                 "PEM key of --peer-tls-cert")
      ->group("Decentralized runs");
  app.add_option("--adversary-scale", o.adversary_scale,
                 "FOR ROBUSTNESS EXPERIMENTS ONLY: multiply every JVP value "
                 "and model update sent by this factor (an adversarial "
                 "client; see bench/robust.py)")
      ->capture_default_str();
  app.add_option("--drop-update-version", o.drop_update_version,
                 "FOR TESTS ONLY: when a seed replay reaches this model "
                 "version, leave out its last term, as if lost; the replayed "
                 "model fails its checksum and the client fetches a snapshot")
      ->group("");
  fedfwd::LogFlags log_flags;
  fedfwd::AddLogFlags(&app, &log_flags);
  CLI11_PARSE(app, argc, argv);
  using fedfwd::LogLevel;
  if (absl::Status s = fedfwd::ApplyLogFlags(log_flags); !s.ok()) {
    Say(LogLevel::kError, "", std::string(s.message()));
    return 2;
  }
  if (!std::isfinite(o.adversary_scale)) {
    Say(LogLevel::kError, "", "--adversary-scale must be finite");
    return 2;
  }
  if (o.adversary_scale != 1.0) {
    Say(LogLevel::kWarn, "warning: ",
        absl::StrFormat("--adversary-scale %g: this client sends manipulated "
                        "results (experiments only)",
                        o.adversary_scale),
        {{"event", "adversary"}, {"adversary_scale", o.adversary_scale}});
  }
  if (!token_file.empty()) {
    auto token = fedfwd::ReadTokenFile(token_file);
    if (!token.ok()) {
      Say(LogLevel::kError, "",
          absl::StrCat("--token-file: ", token.status().message()));
      return 2;
    }
    o.token = *token;
  }
  if (o.tls.insecure) {
    Say(LogLevel::kWarn, "warning: ",
        absl::StrCat("--insecure: plaintext; anyone on the path can read and "
                     "alter this client's traffic",
                     o.token.empty() ? "" : ", token included"),
        {{"event", "insecure"}});
  }
  if (!o.peer_listen.empty()) {
    // Peers are authenticated like the coordinator's clients: TLS with the
    // same CA (client certificates required when --tls-ca is given) plus
    // the run's peer token on every push.
    o.peer_tls.insecure = o.tls.insecure;
    if (!o.tls.insecure) {
      o.peer_tls.ca_file = o.tls.ca_file;
      if (o.peer_tls.cert_file.empty() || o.peer_tls.key_file.empty()) {
        Say(LogLevel::kError, "",
            "--peer-listen needs --peer-tls-cert and --peer-tls-key (or "
            "--insecure)");
        return 2;
      }
    }
  }
  if (o.name.empty()) {
    o.name = absl::StrCat(fedfwd::HostName(), ":", getpid());
  }

  fedfwd::SetTorchThreads(o.threads);

  fedfwd::ClientDaemon daemon(o);
  fedfwd::InstallStopHandler([&daemon](int) { daemon.RequestStop(); });

  absl::Status s = daemon.Run();
  // A --stay daemon has no last run: a signal is its ordinary end.
  if (absl::IsCancelled(s) && daemon.stop_requested()) return o.stay ? 0 : 130;
  if (!s.ok()) {
    const int code = absl::IsInvalidArgument(s) ? 2 : 1;
    Say(LogLevel::kError, "", std::string(s.message()),
        {{"event", "fatal"},
         {"error", std::string(s.message())},
         {"exit_code", code}});
    return code;
  }
  return 0;
}
