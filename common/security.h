// Transport security and client authentication, shared by both daemons.
//
// TLS: the coordinator serves with a certificate and key; with a CA it also
// requires and verifies client certificates (mutual TLS). Clients trust the
// CA they are given (or the system roots) and present a certificate when
// asked to. Plaintext needs an explicit --insecure.
//
// Authentication: every call carries "authorization: Bearer <token>"
// metadata. The coordinator's credentials file lists who may call, one entry
// per line:
//
//   # role  name    sha256(token) in hex
//   client  alice
//   9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 status ops
//   60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752
//
// `client` entries may run training; `status` entries may only read the
// status. The file is read again when it changes, so removing a line revokes
// that credential without a restart. Tokens are never stored, only hashes.
//
// No libtorch here: this library is small and fast to build (and fuzz).
#ifndef FEDFWD_COMMON_SECURITY_H_
#define FEDFWD_COMMON_SECURITY_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace fedfwd {

// The metadata key of the bearer token (gRPC metadata keys are lower case).
inline constexpr char kAuthMetadataKey[] = "authorization";

struct TlsOptions {
  std::string cert_file;    // PEM certificate chain (server: required)
  std::string key_file;     // PEM private key of cert_file
  std::string ca_file;      // PEM roots: server verifies client certs with it
                            // (mutual TLS); client verifies the server with it
  std::string server_name;  // client: expected name in the server's
                            // certificate when it differs from the address
  bool insecure = false;    // plaintext; no other field may be set
};

// Credentials for grpc::ServerBuilder::AddListeningPort. Errors name the flag
// and file that is missing, unreadable or not PEM.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsOptions& tls);

// A channel to `address` with the given transport security.
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(
    const std::string& address, const TlsOptions& tls,
    grpc::ChannelArguments args);

// Reads a whole file (for certificates, keys, token files).
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

// Reads a token file: its first line, surrounding whitespace removed. An
// empty token or one with characters outside printable ASCII is an error.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

// 32 random bytes from the OS generator, as 64 hex characters.
std::string NewToken();

// SHA-256 of `data`, as 64 lower-case hex characters.
std::string Sha256Hex(absl::string_view data);

enum class Role { kClient, kStatus };

struct Identity {
  std::string name;
  Role role = Role::kClient;
};

// Parses credentials file text; errors name the line.
absl::StatusOr<std::vector<std::pair<std::string, Identity>>> ParseCredentials(
    absl::string_view text);

// The coordinator's view of the credentials file. Thread-safe.
class CredentialStore {
 public:
  // Loads `path`; an error if it cannot be read or parsed.
  static absl::StatusOr<std::unique_ptr<CredentialStore>> Load(
      const std::string& path);

  // Checks the call's bearer token. UNAUTHENTICATED when it is missing,
  // malformed or unknown (revoked tokens are unknown); PERMISSION_DENIED when
  // the identity's role may not make a call that needs `needed`.
  absl::StatusOr<Identity> Authorize(const grpc::ServerContext& ctx,
                                     Role needed);

  // Same, from the metadata value (for tests and non-gRPC callers).
  absl::StatusOr<Identity> AuthorizeHeader(absl::string_view header,
                                           Role needed);

  int size();

 private:
  explicit CredentialStore(std::string path) : path_(std::move(path)) {}
  // Re-reads the file when its modification time or size changed (checked
  // at most once a second). A file that became unreadable or invalid keeps
  // the last good entries and reports once on stderr.
  void MaybeReload() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status ReloadNow() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string path_;
  absl::Mutex mu_;
  std::vector<std::pair<std::string, Identity>> entries_ ABSL_GUARDED_BY(mu_);
  int64_t mtime_ns_ ABSL_GUARDED_BY(mu_) = -1;
  int64_t size_ ABSL_GUARDED_BY(mu_) = -1;
  int64_t last_check_ns_ ABSL_GUARDED_BY(mu_) = 0;
  bool reported_bad_ ABSL_GUARDED_BY(mu_) = false;
};

// The token of an "authorization" metadata value "Bearer <token>" (at most
// 4096 characters in all); UNAUTHENTICATED when it is malformed.
absl::StatusOr<absl::string_view> BearerToken(absl::string_view header);

// Adds "authorization: Bearer <token>" to a client call; no-op when empty.
void AttachToken(grpc::ClientContext* ctx, const std::string& token);

}  // namespace fedfwd

#endif  // FEDFWD_COMMON_SECURITY_H_
