// fedfwd-run: runs a whole federation (one coordinator, `clients` client
// daemons) on this machine from one config file, or one federation per cell
// of the config's `sweep:` section. See tools/launcher.h and tools/sweep.h.
#include <string>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_join.h"
#include "tools/launcher.h"
#include "tools/sweep.h"

int main(int argc, char** argv) {
  fedfwd::LauncherOptions options;
  CLI::App app{
      "Runs a federation on this machine: starts fedfwd-server and the "
      "config's `clients` fedfwd-client processes on loopback, shows the "
      "server's progress, and writes metrics.jsonl, summary.json, config.yaml "
      "and one log per process to the output folder.\n"
      "A config with a `sweep:` section (lists of values for config keys, "
      "and `seeds: N` or a list) runs every combination as its own "
      "federation in <out>/<key>=<value>,...,seed=<S>/ and writes "
      "results.csv and results.md (mean ± std over seeds) to --out; the "
      "same command with the same --out again skips finished runs.\n"
      "Exit code: the server's (a sweep: 0, or 1 when a run failed), or 1 "
      "(could not run), 2 (bad flags or config), 130 (interrupted).",
      "fedfwd-run"};
  app.add_option("config", options.config_path, "Experiment config (YAML)")
      ->required();
  app.add_option("--out", options.out_dir,
                 "Output folder (default: runs/<config stem>-<YYYYmmdd-"
                 "HHMMSS>); a sweep puts one subfolder per run in it, and "
                 "the same --out again goes on with the sweep");
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
  app.add_option("--link", options.link,
                 "Emulated link for every client, e.g. "
                 "up=1mbit,down=10mbit,delay=40ms (keys up, down, rate, "
                 "delay; delay is one way, added in each direction): each "
                 "process in its own network namespace, rates shaped by tbf, "
                 "delay by fedfwd-relay. Needs root; refused otherwise")
      ->type_name("LINK");
  app.add_option("--client-link", options.client_links,
                 "Link of one client or a range over --link, I=LINK or "
                 "I-J=LINK, e.g. --client-link 0-4=up=256kbit (repeatable)")
      ->allow_extra_args(false)
      ->type_name("I=LINK");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : fedfwd::kExitUsage;
  }
  std::vector<std::string> words;
  for (int i = 0; i < argc; ++i) words.push_back(fedfwd::ShellQuote(argv[i]));
  const std::string command_line = absl::StrJoin(words, " ");
  return fedfwd::RunFedfwdRun(std::move(options), command_line);
}
