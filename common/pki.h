// Throwaway certificates for loopback federations and tests: a CA, a server
// certificate for given host names and addresses, and a client certificate,
// all with fresh P-256 keys (OpenSSL's libcrypto). For real deployments
// scripts/make-certs.sh makes the same set with the openssl tool.
#ifndef FEDFWD_COMMON_PKI_H_
#define FEDFWD_COMMON_PKI_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace fedfwd {

struct PkiFiles {
  std::string ca_cert;      // ca.pem
  std::string server_cert;  // server.pem
  std::string server_key;   // server.key (mode 0600)
  std::string client_cert;  // client.pem
  std::string client_key;   // client.key (mode 0600)
};

// Writes the five files into `dir` (created if missing). `hosts` become the
// server certificate's subject alternative names: entries that parse as IPv4
// or IPv6 addresses are IP names, the rest DNS names. The CA's key is not
// kept: nothing more can be signed with it.
absl::StatusOr<PkiFiles> MakeTestPki(const std::string& dir,
                                     const std::vector<std::string>& hosts,
                                     int days = 30);

}  // namespace fedfwd

#endif  // FEDFWD_COMMON_PKI_H_
