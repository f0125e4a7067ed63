// fedfwd-ctl: operator commands against a running coordinator.
//
//   fedfwd-ctl status --server HOST:PORT [TLS/token flags | --insecure]
//                     [--json] [--timeout S]
//
// Exit codes (docker-compose health checks rely on them): 0 the coordinator
// answered; 1 it is unreachable, refused the call or did not answer in time
// (the message says which); 2 bad flags.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "client/coordinator_client.h"
#include "client/tls_flags.h"
#include "common/security.h"
#include "tools/status_report.h"

namespace {

constexpr int kExitUnreachable = 1;
constexpr int kExitUsage = 2;

int Fail(const std::string& message, int code) {
  std::fprintf(stderr, "fedfwd-ctl: %s\n", message.c_str());
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "fedfwd-ctl: operator commands against a running fedfwd coordinator.\n"
      "Exit code: 0 answered, 1 unreachable / refused / no answer in time, "
      "2 bad flags.",
      "fedfwd-ctl"};
  app.require_subcommand(1);
  CLI::App* status = app.add_subcommand(
      "status",
      "print the run's id, state, round, model version, test accuracy, "
      "bytes and a table of the clients (a status-only credential is "
      "enough)");
  std::string server, token_file;
  fedfwd::TlsOptions tls;
  bool json = false;
  double timeout_s = 5;
  status->add_option("--server", server, "coordinator HOST:PORT")->required();
  fedfwd::AddClientTlsFlags(status, &tls, &token_file);
  status->add_flag("--json", json,
                   "print the reply as one JSON object (numbers as numbers)");
  status->add_option("--timeout", timeout_s, "seconds to wait for the reply")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : kExitUsage;
  }

  std::string token;
  if (!token_file.empty()) {
    auto t = fedfwd::ReadTokenFile(token_file);
    if (!t.ok()) {
      return Fail(absl::StrCat("--token-file: ", t.status().message()),
                  kExitUsage);
    }
    token = *t;
  }
  auto client = fedfwd::CoordinatorClient::Connect(server, tls, token);
  if (!client.ok()) {
    return Fail(absl::StrCat("bad flags: ", client.status().message()),
                kExitUsage);
  }
  auto reply = (*client)->GetStatus(absl::Seconds(timeout_s));
  if (!reply.ok()) {
    return Fail(fedfwd::DescribeStatusError(reply.status(), server, timeout_s),
                kExitUnreachable);
  }
  if (json) {
    std::printf("%s\n", fedfwd::StatusReplyToJson(*reply).c_str());
  } else {
    std::fputs(fedfwd::FormatStatusReport(*reply).c_str(), stdout);
  }
  return 0;
}
