// The transport-security flags of the programs that dial the coordinator
// (fedfwd-client, fedfwd-ctl), so both spell and document them the same
// way. Header-only (CLI11): only mains include it.
#ifndef FEDFWD_CLIENT_TLS_FLAGS_H_
#define FEDFWD_CLIENT_TLS_FLAGS_H_

#include <CLI/CLI.hpp>
#include <string>

#include "common/security.h"

namespace fedfwd {

// --tls-ca, --tls-cert, --tls-key, --tls-server-name into `tls`,
// --token-file into `token_file` (read it with ReadTokenFile), --insecure.
inline void AddClientTlsFlags(CLI::App* app, TlsOptions* tls,
                              std::string* token_file) {
  app->add_option("--tls-ca", tls->ca_file,
                  "PEM CA that signed the coordinator's certificate "
                  "(default: the system's roots)");
  app->add_option("--tls-cert", tls->cert_file,
                  "PEM client certificate, for a coordinator that requires "
                  "mutual TLS");
  app->add_option("--tls-key", tls->key_file, "PEM key of --tls-cert");
  app->add_option("--tls-server-name", tls->server_name,
                  "name to expect in the coordinator's certificate when it "
                  "differs from the --server host");
  app->add_option("--token-file", *token_file,
                  "file whose first line is the token sent on every call");
  app->add_flag("--insecure", tls->insecure,
                "plaintext instead of TLS (trusted networks only)");
}

}  // namespace fedfwd

#endif  // FEDFWD_CLIENT_TLS_FLAGS_H_
