#include "common/security.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/log.h"

namespace fedfwd {
namespace {

std::string Hex(const unsigned char* p, size_t n) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out(2 * n, '0');
  for (size_t i = 0; i < n; ++i) {
    out[2 * i] = kDigits[p[i] >> 4];
    out[2 * i + 1] = kDigits[p[i] & 15];
  }
  return out;
}

bool IsHex64(absl::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

absl::Status ReadPem(const std::string& flag, const std::string& path,
                     const char* marker, std::string* out) {
  auto text = ReadFileToString(path);
  if (!text.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": ", text.status().message()));
  }
  if (!absl::StrContains(*text, marker)) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, ": ", path, " is not PEM (no \"", marker, "\" line)"));
  }
  *out = std::move(*text);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot read ", path));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad())
    return absl::DataLossError(absl::StrCat("error reading ", path));
  return ss.str();
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  auto text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  absl::string_view line = *text;
  line = line.substr(0, line.find('\n'));
  line = absl::StripAsciiWhitespace(line);
  if (line.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("token file ", path, " is empty"));
  }
  for (char c : line) {
    if (c < 0x21 || c > 0x7e) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token file ", path,
          ": the token may hold printable ASCII without spaces only"));
    }
  }
  return std::string(line);
}

std::string NewToken() {
  unsigned char buf[32];
  if (RAND_bytes(buf, sizeof buf) != 1) {
    std::fprintf(stderr, "fedfwd: the OS random generator failed\n");
    std::abort();
  }
  return Hex(buf, sizeof buf);
}

std::string Sha256Hex(absl::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  return Hex(md, len);
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsOptions& tls) {
  if (tls.insecure) {
    if (!tls.cert_file.empty() || !tls.key_file.empty() ||
        !tls.ca_file.empty()) {
      return absl::InvalidArgumentError(
          "--insecure cannot be combined with --tls-cert/--tls-key/--tls-ca");
    }
    return grpc::InsecureServerCredentials();
  }
  if (tls.cert_file.empty() || tls.key_file.empty()) {
    return absl::InvalidArgumentError(
        "TLS is the default: give --tls-cert and --tls-key (see "
        "scripts/make-certs.sh), or --insecure for plaintext on a trusted "
        "network");
  }
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  absl::Status s = ReadPem("--tls-cert", tls.cert_file,
                           "-----BEGIN CERTIFICATE", &pair.cert_chain);
  if (!s.ok()) return s;
  s = ReadPem("--tls-key", tls.key_file, "PRIVATE KEY-----", &pair.private_key);
  if (!s.ok()) return s;
  grpc::SslServerCredentialsOptions opts;
  opts.pem_key_cert_pairs.push_back(std::move(pair));
  if (!tls.ca_file.empty()) {
    s = ReadPem("--tls-ca", tls.ca_file, "-----BEGIN CERTIFICATE",
                &opts.pem_root_certs);
    if (!s.ok()) return s;
    opts.client_certificate_request =
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  } else {
    opts.client_certificate_request = GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE;
  }
  return grpc::SslServerCredentials(opts);
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(
    const std::string& address, const TlsOptions& tls,
    grpc::ChannelArguments args) {
  if (tls.insecure) {
    if (!tls.cert_file.empty() || !tls.key_file.empty() ||
        !tls.ca_file.empty() || !tls.server_name.empty()) {
      return absl::InvalidArgumentError(
          "--insecure cannot be combined with the --tls-* flags");
    }
    return grpc::CreateCustomChannel(address,
                                     grpc::InsecureChannelCredentials(), args);
  }
  if (tls.cert_file.empty() != tls.key_file.empty()) {
    return absl::InvalidArgumentError(
        "a client certificate needs both --tls-cert and --tls-key");
  }
  grpc::SslCredentialsOptions opts;
  absl::Status s;
  if (!tls.ca_file.empty()) {
    s = ReadPem("--tls-ca", tls.ca_file, "-----BEGIN CERTIFICATE",
                &opts.pem_root_certs);
    if (!s.ok()) return s;
  }
  if (!tls.cert_file.empty()) {
    s = ReadPem("--tls-cert", tls.cert_file, "-----BEGIN CERTIFICATE",
                &opts.pem_cert_chain);
    if (!s.ok()) return s;
    s = ReadPem("--tls-key", tls.key_file, "PRIVATE KEY-----",
                &opts.pem_private_key);
    if (!s.ok()) return s;
  }
  if (!tls.server_name.empty()) {
    args.SetSslTargetNameOverride(tls.server_name);
  }
  return grpc::CreateCustomChannel(address, grpc::SslCredentials(opts), args);
}

absl::StatusOr<std::vector<std::pair<std::string, Identity>>> ParseCredentials(
    absl::string_view text) {
  std::vector<std::pair<std::string, Identity>> out;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    line = line.substr(0, line.find('#'));
    std::vector<absl::string_view> f =
        absl::StrSplit(line, absl::ByAnyChar(" \t\r"), absl::SkipEmpty());
    if (f.empty()) continue;
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(
          absl::StrCat("credentials line ", line_no, ": ", why,
                       " (expected: client|status NAME SHA256-HEX)"));
    };
    if (f.size() != 3) return bad("need 3 fields");
    Identity id;
    if (f[0] == "client") {
      id.role = Role::kClient;
    } else if (f[0] == "status") {
      id.role = Role::kStatus;
    } else {
      return bad(absl::StrCat("unknown role '", f[0], "'"));
    }
    id.name = std::string(f[1]);
    if (!IsHex64(f[2])) return bad("the hash is not 64 hex digits");
    std::string hash = absl::AsciiStrToLower(f[2]);
    for (const auto& [h, other] : out) {
      if (h == hash) return bad("the same token appears twice");
      if (other.name == id.name) {
        return bad(absl::StrCat("name '", id.name, "' appears twice"));
      }
    }
    out.emplace_back(std::move(hash), std::move(id));
  }
  return out;
}

absl::StatusOr<std::unique_ptr<CredentialStore>> CredentialStore::Load(
    const std::string& path) {
  std::unique_ptr<CredentialStore> store(new CredentialStore(path));
  absl::MutexLock lock(&store->mu_);
  absl::Status s = store->ReloadNow();
  if (!s.ok()) {
    return absl::Status(
        s.code(), absl::StrCat("--credentials ", path, ": ", s.message()));
  }
  return store;
}

absl::Status CredentialStore::ReloadNow() {
  struct stat st;
  if (stat(path_.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat("cannot stat ", path_));
  }
  auto text = ReadFileToString(path_);
  if (!text.ok()) return text.status();
  auto parsed = ParseCredentials(*text);
  if (!parsed.ok()) return parsed.status();
  entries_ = std::move(*parsed);
  mtime_ns_ =
      static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  size_ = static_cast<int64_t>(st.st_size);
  return absl::OkStatus();
}

void CredentialStore::MaybeReload() {
  const int64_t now = absl::GetCurrentTimeNanos();
  if (now - last_check_ns_ < 1000000000) return;
  last_check_ns_ = now;
  struct stat st;
  if (stat(path_.c_str(), &st) == 0) {
    const int64_t mtime = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 +
                          st.st_mtim.tv_nsec;
    if (mtime == mtime_ns_ && static_cast<int64_t>(st.st_size) == size_) return;
  }
  absl::Status s = ReloadNow();
  LogRecord r;
  r.component = "auth";
  r.human_prefix = "fedfwd-server: ";
  r.fields = {{"event", "credentials_reload"}, {"path", path_}};
  if (s.ok()) {
    r.msg = absl::StrCat("reloaded ", path_, " (", entries_.size(),
                         " credentials)");
    r.fields.push_back({"credentials", entries_.size()});
    r.stream = LogStream::kStderr;
    Logger::Global().Write(r);
    reported_bad_ = false;
  } else if (!reported_bad_) {
    r.level = LogLevel::kWarn;
    r.msg = absl::StrCat("keeping the previous credentials: ", s.message());
    r.fields.push_back({"error", std::string(s.message())});
    Logger::Global().Write(r);
    reported_bad_ = true;
  }
}

absl::StatusOr<Identity> CredentialStore::Authorize(
    const grpc::ServerContext& ctx, Role needed) {
  const auto& md = ctx.client_metadata();
  auto it = md.find(kAuthMetadataKey);
  if (it == md.end()) {
    return absl::UnauthenticatedError(
        "no credentials: the coordinator requires a token (--token-file)");
  }
  if (md.count(kAuthMetadataKey) != 1) {
    return absl::UnauthenticatedError("more than one authorization header");
  }
  return AuthorizeHeader(
      absl::string_view(it->second.data(), it->second.size()), needed);
}

absl::StatusOr<absl::string_view> BearerToken(absl::string_view header) {
  constexpr absl::string_view kBearer = "Bearer ";
  if (header.size() <= kBearer.size() ||
      header.substr(0, kBearer.size()) != kBearer || header.size() > 4096) {
    return absl::UnauthenticatedError(
        "malformed authorization header (expected \"Bearer <token>\")");
  }
  return header.substr(kBearer.size());
}

absl::StatusOr<Identity> CredentialStore::AuthorizeHeader(
    absl::string_view header, Role needed) {
  absl::StatusOr<absl::string_view> token = BearerToken(header);
  if (!token.ok()) return token.status();
  const std::string hash = Sha256Hex(*token);
  absl::MutexLock lock(&mu_);
  MaybeReload();
  for (const auto& [h, id] : entries_) {
    if (CRYPTO_memcmp(h.data(), hash.data(), hash.size()) != 0) continue;
    if (needed == Role::kClient && id.role != Role::kClient) {
      return absl::PermissionDeniedError(
          absl::StrCat("credential '", id.name, "' may read the status only"));
    }
    return id;
  }
  return absl::UnauthenticatedError("unknown or revoked token");
}

int CredentialStore::size() {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(entries_.size());
}

void AttachToken(grpc::ClientContext* ctx, const std::string& token) {
  if (!token.empty()) ctx->AddMetadata(kAuthMetadataKey, "Bearer " + token);
}

}  // namespace fedfwd
