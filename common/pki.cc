#include "common/pki.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <unistd.h>

#include <filesystem>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace fedfwd {
namespace {

struct Free {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(X509* p) const { X509_free(p); }
  void operator()(BIO* p) const { BIO_free(p); }
};
using Key = std::unique_ptr<EVP_PKEY, Free>;
using Cert = std::unique_ptr<X509, Free>;

absl::Status OpenSslError(const std::string& what) {
  return absl::InternalError(absl::StrCat("OpenSSL: ", what, " failed"));
}

bool IsIp(const std::string& h) {
  unsigned char buf[16];
  return inet_pton(AF_INET, h.c_str(), buf) == 1 ||
         inet_pton(AF_INET6, h.c_str(), buf) == 1;
}

absl::Status AddExt(X509* cert, X509* issuer, int nid, const std::string& v) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, v.c_str());
  if (ext == nullptr) return OpenSslError(absl::StrCat("extension ", v));
  const int ok = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  return ok == 1 ? absl::OkStatus() : OpenSslError("X509_add_ext");
}

// A certificate for `key` named `cn`, signed by (issuer, issuer_key), or
// self-signed when issuer is null.
absl::StatusOr<Cert> MakeCert(EVP_PKEY* key, const std::string& cn,
                              X509* issuer, EVP_PKEY* issuer_key, bool is_ca,
                              const std::vector<std::string>& hosts,
                              bool server, int days) {
  Cert cert(X509_new());
  if (!cert) return OpenSslError("X509_new");
  X509_set_version(cert.get(), 2);
  unsigned char serial[16];
  if (RAND_bytes(serial, sizeof serial) != 1) return OpenSslError("RAND_bytes");
  serial[0] &= 0x7f;  // positive
  BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 86400L * days);
  X509_set_pubkey(cert.get(), key);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("fedfwd"),
                             -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn.c_str()),
                             -1, -1, 0);
  X509* signer = issuer ? issuer : cert.get();
  X509_set_issuer_name(cert.get(), X509_get_subject_name(signer));
  absl::Status s;
  if (is_ca) {
    s = AddExt(cert.get(), signer, NID_basic_constraints, "critical,CA:TRUE");
    if (s.ok()) {
      s = AddExt(cert.get(), signer, NID_key_usage,
                 "critical,keyCertSign,cRLSign");
    }
  } else {
    s = AddExt(cert.get(), signer, NID_basic_constraints, "critical,CA:FALSE");
    if (s.ok()) {
      s = AddExt(cert.get(), signer, NID_key_usage,
                 "critical,digitalSignature,keyEncipherment");
    }
    if (s.ok()) {
      s = AddExt(cert.get(), signer, NID_ext_key_usage,
                 server ? "serverAuth" : "clientAuth");
    }
    if (s.ok() && !hosts.empty()) {
      std::vector<std::string> names;
      for (const auto& h : hosts) {
        names.push_back(absl::StrCat(IsIp(h) ? "IP:" : "DNS:", h));
      }
      s = AddExt(cert.get(), signer, NID_subject_alt_name,
                 absl::StrJoin(names, ","));
    }
  }
  if (!s.ok()) return s;
  if (X509_sign(cert.get(), issuer_key ? issuer_key : key, EVP_sha256()) == 0) {
    return OpenSslError("X509_sign");
  }
  return cert;
}

absl::Status WriteFile(const std::string& path, const std::string& data,
                       mode_t mode) {
  ::unlink(path.c_str());
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return absl::PermissionDeniedError("cannot write " + path);
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n <= 0) {
      ::close(fd);
      return absl::DataLossError("cannot write " + path);
    }
    off += static_cast<size_t>(n);
  }
  if (::close(fd) != 0) return absl::DataLossError("cannot write " + path);
  return absl::OkStatus();
}

std::string BioString(BIO* bio) {
  char* p = nullptr;
  long n = BIO_get_mem_data(bio, &p);
  return std::string(p, static_cast<size_t>(n));
}

absl::Status WriteCert(const std::string& path, X509* cert) {
  std::unique_ptr<BIO, Free> bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) {
    return OpenSslError("PEM_write_bio_X509");
  }
  return WriteFile(path, BioString(bio.get()), 0644);
}

absl::Status WriteKey(const std::string& path, EVP_PKEY* key) {
  std::unique_ptr<BIO, Free> bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0,
                                       nullptr, nullptr) != 1) {
    return OpenSslError("PEM_write_bio_PrivateKey");
  }
  return WriteFile(path, BioString(bio.get()), 0600);
}

}  // namespace

absl::StatusOr<PkiFiles> MakeTestPki(const std::string& dir,
                                     const std::vector<std::string>& hosts,
                                     int days) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::PermissionDeniedError("cannot create " + dir);
  Key ca_key(EVP_EC_gen("P-256"));
  Key server_key(EVP_EC_gen("P-256"));
  Key client_key(EVP_EC_gen("P-256"));
  if (!ca_key || !server_key || !client_key) return OpenSslError("EC keygen");
  auto ca = MakeCert(ca_key.get(), "fedfwd throwaway CA", nullptr, nullptr,
                     /*is_ca=*/true, {}, false, days);
  if (!ca.ok()) return ca.status();
  auto server = MakeCert(server_key.get(),
                         hosts.empty() ? "fedfwd-server" : hosts.front(),
                         ca->get(), ca_key.get(), false, hosts, true, days);
  if (!server.ok()) return server.status();
  auto client = MakeCert(client_key.get(), "fedfwd-client", ca->get(),
                         ca_key.get(), false, {}, false, days);
  if (!client.ok()) return client.status();

  PkiFiles f;
  f.ca_cert = dir + "/ca.pem";
  f.server_cert = dir + "/server.pem";
  f.server_key = dir + "/server.key";
  f.client_cert = dir + "/client.pem";
  f.client_key = dir + "/client.key";
  for (auto s : {WriteCert(f.ca_cert, ca->get()),
                 WriteCert(f.server_cert, server->get()),
                 WriteKey(f.server_key, server_key.get()),
                 WriteCert(f.client_cert, client->get()),
                 WriteKey(f.client_key, client_key.get())}) {
    if (!s.ok()) return s;
  }
  return f;
}

}  // namespace fedfwd
