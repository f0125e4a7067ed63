// fedfwd-client: a client daemon. Joins the coordinator, trains on its own
// shard until the coordinator ends the run, then exits 0.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "client/daemon.h"
#include "common/metrics.h"
#include "common/signals.h"
#include "common/torch_model.h"

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
                 "give up after the coordinator is unreachable this long (s)")
      ->capture_default_str();
  std::string token_file;
  app.add_option("--tls-ca", o.tls.ca_file,
                 "PEM CA that signed the coordinator's certificate (default: "
                 "the system's roots)");
  app.add_option("--tls-cert", o.tls.cert_file,
                 "PEM client certificate, for a coordinator that requires "
                 "mutual TLS");
  app.add_option("--tls-key", o.tls.key_file, "PEM key of --tls-cert");
  app.add_option("--tls-server-name", o.tls.server_name,
                 "name to expect in the coordinator's certificate when it "
                 "differs from the --server host");
  app.add_option("--token-file", token_file,
                 "file whose first line is this client's token, sent on "
                 "every call");
  app.add_flag("--insecure", o.tls.insecure,
               "plaintext instead of TLS (trusted networks only)");
  app.add_option("--adversary-scale", o.adversary_scale,
                 "FOR ROBUSTNESS EXPERIMENTS ONLY: multiply every JVP value "
                 "and model update sent by this factor (an adversarial "
                 "client; see bench/robust.py)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (!std::isfinite(o.adversary_scale)) {
    std::fprintf(stderr, "fedfwd-client: --adversary-scale must be finite\n");
    return 2;
  }
  if (o.adversary_scale != 1.0) {
    std::fprintf(stderr,
                 "fedfwd-client: warning: --adversary-scale %g: this client "
                 "sends manipulated results (experiments only)\n",
                 o.adversary_scale);
  }
  if (!token_file.empty()) {
    auto token = fedfwd::ReadTokenFile(token_file);
    if (!token.ok()) {
      std::fprintf(stderr, "fedfwd-client: --token-file: %s\n",
                   std::string(token.status().message()).c_str());
      return 2;
    }
    o.token = *token;
  }
  if (o.tls.insecure) {
    std::fprintf(stderr,
                 "fedfwd-client: warning: --insecure: plaintext; anyone on "
                 "the path can read and alter this client's traffic%s\n",
                 o.token.empty() ? "" : ", token included");
  }
  if (o.name.empty()) {
    o.name = absl::StrCat(fedfwd::HostName(), ":", getpid());
  }

  fedfwd::SetTorchThreads(o.threads);

  fedfwd::ClientDaemon daemon(o);
  fedfwd::InstallStopHandler([&daemon](int) { daemon.RequestStop(); });

  absl::Status s = daemon.Run();
  if (absl::IsCancelled(s)) return 130;
  if (absl::IsInvalidArgument(s)) {
    std::fprintf(stderr, "fedfwd-client: %s\n",
                 std::string(s.message()).c_str());
    return 2;
  }
  if (!s.ok()) {
    std::fprintf(stderr, "fedfwd-client: %s\n",
                 std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}
