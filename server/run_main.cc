// fedfwd-run: runs a whole federation (one coordinator, `clients` client
// daemons) on this machine from one config file. See server/launcher.h.
#include <string>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "server/launcher.h"

int main(int argc, char** argv) {
  fedfwd::LauncherOptions options;
  CLI::App app{
      "Runs a federation on this machine: starts fedfwd-server and the "
      "config's `clients` fedfwd-client processes on loopback, shows the "
      "server's progress, and writes metrics.jsonl, summary.json, config.yaml "
      "and one log per process to the output folder.\n"
      "Exit code: the server's, or 1 (could not run), 2 (bad flags or "
      "config), 130 (interrupted).",
      "fedfwd-run"};
  app.add_option("config", options.config_path, "Experiment config (YAML)")
      ->required();
  app.add_option("--out", options.out_dir,
                 "Output folder (default: runs/<config stem>-<YYYYmmdd-"
                 "HHMMSS>)");
  app.add_option("--set", options.overrides,
                 "Override a config key, e.g. --set rounds=200 (repeatable)")
      ->allow_extra_args(false)
      ->type_name("KEY=VALUE");
  app.add_option("--client-threads", options.client_threads,
                 "Compute threads per client process")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  app.add_option("--server-threads", options.server_threads,
                 "Compute threads of the server process")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  app.add_flag("--insecure", options.insecure,
               "Plaintext gRPC without tokens (default: TLS with throwaway "
               "certificates and per-client tokens in <out>/secrets)");
  app.add_option("--client-arg", options.client_arg_specs,
                 "Extra flag for one client, I=FLAG with I 0-based, e.g. "
                 "--client-arg 0=--adversary-scale=100 (repeatable)")
      ->allow_extra_args(false)
      ->type_name("I=FLAG");
  app.add_option("--server-arg", options.server_extra_args,
                 "Extra flag for the coordinator, e.g. "
                 "--server-arg=--checkpoint-every=10 (repeatable)")
      ->allow_extra_args(false)
      ->type_name("FLAG");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : fedfwd::kExitUsage;
  }
  fedfwd::Launcher launcher(std::move(options));
  return launcher.Run();
}
