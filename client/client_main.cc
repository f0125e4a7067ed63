// fedfwd-client: a client daemon. Joins the coordinator, trains on its own
// shard until the coordinator ends the run, then exits 0.
#include <unistd.h>

#include <CLI/CLI.hpp>
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
  CLI11_PARSE(app, argc, argv);
  if (o.name.empty()) {
    o.name = absl::StrCat(fedfwd::HostName(), ":", getpid());
  }

  fedfwd::SetTorchThreads(o.threads);

  fedfwd::ClientDaemon daemon(o);
  fedfwd::InstallStopHandler([&daemon](int) { daemon.RequestStop(); });

  absl::Status s = daemon.Run();
  if (absl::IsCancelled(s)) return 130;
  if (!s.ok()) {
    std::fprintf(stderr, "fedfwd-client: %s\n",
                 std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}
