// Transport security and authentication: the credentials file, tokens, and a
// coordinator served in-process over real TLS (throwaway certificates from
// common/pki) that refuses strangers with the right status codes.
#include "common/security.h"

#include <grpcpp/grpcpp.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "client/coordinator_client.h"
#include "common/pki.h"
#include "gtest/gtest.h"
#include "server/evaluator.h"
#include "server/round_engine.h"
#include "server/service.h"
#include "server/strategy.h"
#include "tests/testutil/synthetic_data.h"
#include "tools/launcher.h"

namespace fedfwd {
namespace {

void Write(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::trunc) << text;
}

TEST(Sha256Hex, MatchesTheStandardVectors) {
  EXPECT_EQ(Sha256Hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(NewToken, IsFreshHex) {
  const std::string a = NewToken(), b = NewToken();
  EXPECT_EQ(a.size(), 64u);
  EXPECT_NE(a, b);
  EXPECT_EQ(a.find_first_not_of("0123456789abcdef"), std::string::npos);
}

TEST(ParseCredentials, ReadsRolesNamesAndHashes) {
  const std::string h1 = Sha256Hex("one"), h2 = Sha256Hex("two");
  auto c =
      ParseCredentials(absl::StrCat("# who may call\n\nclient  alice ", h1,
                                    "  # laptop\nstatus\tops\t", h2, "\r\n"));
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->size(), 2u);
  EXPECT_EQ((*c)[0].first, h1);
  EXPECT_EQ((*c)[0].second.name, "alice");
  EXPECT_EQ((*c)[0].second.role, Role::kClient);
  EXPECT_EQ((*c)[1].second.role, Role::kStatus);
}

TEST(ParseCredentials, RejectsBadLinesNamingThem) {
  const std::string h = Sha256Hex("x");
  for (const std::string& bad :
       {absl::StrCat("admin bob ", h), std::string("client bob 1234"),
        absl::StrCat("client bob ", h, " extra"),
        absl::StrCat("client a ", h, "\nclient b ", h),
        absl::StrCat("client a ", h, "\nclient a ", Sha256Hex("y"))}) {
    auto c = ParseCredentials(absl::StrCat("# header\n", bad));
    ASSERT_FALSE(c.ok()) << bad;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    // The error names the offending line: the last one of each case.
    const auto line = 2 + std::count(bad.begin(), bad.end(), '\n');
    EXPECT_NE(c.status().message().find(absl::StrCat("line ", line, ":")),
              std::string::npos)
        << c.status();
  }
}

TEST(ReadTokenFile, TakesTheFirstLineTrimmed) {
  const std::string dir = testing::MakeTempDir("fedfwd_token_");
  Write(dir + "/t", "  s3cret-token \nignored\n");
  auto t = ReadTokenFile(dir + "/t");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(*t, "s3cret-token");
  Write(dir + "/empty", "\n");
  EXPECT_FALSE(ReadTokenFile(dir + "/empty").ok());
  Write(dir + "/space", "two words\n");
  EXPECT_FALSE(ReadTokenFile(dir + "/space").ok());
  EXPECT_EQ(ReadTokenFile(dir + "/missing").status().code(),
            absl::StatusCode::kNotFound);
  std::filesystem::remove_all(dir);
}

TEST(CredentialStore, AuthorizesByRoleAndForgetsRevokedTokens) {
  const std::string dir = testing::MakeTempDir("fedfwd_creds_");
  const std::string path = dir + "/credentials";
  Write(path, absl::StrCat("client alice ", Sha256Hex("tok-a"), "\nclient bob ",
                           Sha256Hex("tok-b"), "\nstatus ops ",
                           Sha256Hex("tok-s"), "\n"));
  auto store = CredentialStore::Load(path);
  ASSERT_TRUE(store.ok()) << store.status();
  CredentialStore& s = **store;
  auto alice = s.AuthorizeHeader("Bearer tok-a", Role::kClient);
  ASSERT_TRUE(alice.ok());
  EXPECT_EQ(alice->name, "alice");
  EXPECT_TRUE(s.AuthorizeHeader("Bearer tok-s", Role::kStatus).ok());
  EXPECT_TRUE(s.AuthorizeHeader("Bearer tok-a", Role::kStatus).ok());
  EXPECT_EQ(s.AuthorizeHeader("Bearer tok-s", Role::kClient).status().code(),
            absl::StatusCode::kPermissionDenied);
  for (const char* bad : {"Bearer nope", "tok-a", "Bearer ", "Basic tok-a"}) {
    EXPECT_EQ(s.AuthorizeHeader(bad, Role::kClient).status().code(),
              absl::StatusCode::kUnauthenticated)
        << bad;
  }
  // Revoke alice by removing her line; the store notices within a second.
  absl::SleepFor(absl::Milliseconds(1100));
  Write(path, absl::StrCat("client bob ", Sha256Hex("tok-b"), "\n"));
  absl::SleepFor(absl::Milliseconds(1100));
  EXPECT_EQ(s.AuthorizeHeader("Bearer tok-a", Role::kClient).status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(s.AuthorizeHeader("Bearer tok-b", Role::kClient).ok());
  // A broken file keeps the last good entries.
  absl::SleepFor(absl::Milliseconds(1100));
  Write(path, "garbage line here\n");
  absl::SleepFor(absl::Milliseconds(1100));
  EXPECT_TRUE(s.AuthorizeHeader("Bearer tok-b", Role::kClient).ok());
  EXPECT_EQ(s.size(), 1);
  std::filesystem::remove_all(dir);
}

TEST(CredentialStore, LoadErrorsNameTheFile) {
  auto missing = CredentialStore::Load("/nonexistent/credentials");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("/nonexistent/credentials"),
            std::string::npos);
}

TEST(TlsOptions, FlagCombinationsAreChecked) {
  TlsOptions none;
  auto s = MakeServerCredentials(none);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("--insecure"), std::string::npos);
  TlsOptions mixed;
  mixed.insecure = true;
  mixed.cert_file = "x.pem";
  EXPECT_FALSE(MakeServerCredentials(mixed).ok());
  EXPECT_FALSE(MakeChannel("h:1", mixed, grpc::ChannelArguments()).ok());
  TlsOptions missing;
  missing.cert_file = "/nonexistent.pem";
  missing.key_file = "/nonexistent.key";
  s = MakeServerCredentials(missing);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("--tls-cert"), std::string::npos);
  TlsOptions half;
  half.cert_file = "c.pem";
  EXPECT_FALSE(MakeChannel("h:1", half, grpc::ChannelArguments()).ok());
}

TEST(MakeTestPki, WritesCertificatesAndPrivateKeys) {
  const std::string dir = testing::MakeTempDir("fedfwd_pki_");
  auto pki = MakeTestPki(dir + "/tls", {"localhost", "127.0.0.1"});
  ASSERT_TRUE(pki.ok()) << pki.status();
  for (const std::string& f :
       {pki->ca_cert, pki->server_cert, pki->client_cert}) {
    auto text = ReadFileToString(f);
    ASSERT_TRUE(text.ok());
    EXPECT_EQ(text->rfind("-----BEGIN CERTIFICATE-----", 0), 0u) << f;
  }
  for (const std::string& f : {pki->server_key, pki->client_key}) {
    struct stat st;
    ASSERT_EQ(stat(f.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u) << f;
  }
  std::filesystem::remove_all(dir);
}

// A coordinator over mutual TLS with a credentials file: two clients, a
// status reader, and strangers of every kind.
class SecureServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::MakeTempDir("fedfwd_secure_service_");
    ASSERT_FALSE(
        testing::WriteSyntheticMnist(dir_ + "/data", 200, 50, 1).empty());
    config_.model = "tiny";
    config_.dataset.data_dir = dir_ + "/data";
    config_.clients = 2;
    config_.rounds = 1;
    auto spec = GetModelSpec("tiny", {1, 28, 28});
    ASSERT_TRUE(spec.ok());
    auto strategy = MakeStrategy(config_, *spec);
    ASSERT_TRUE(strategy.ok());
    auto evaluator = Evaluator::Create(config_, *spec);
    ASSERT_TRUE(evaluator.ok()) << evaluator.status();
    auto metrics = MetricsWriter::Open(dir_ + "/out");
    ASSERT_TRUE(metrics.ok());
    engine_ = std::make_unique<RoundEngine>(
        config_, *spec, std::move(*strategy), std::move(*evaluator),
        std::move(*metrics), 1);
    auto sec = MakeLocalSecurity(dir_ + "/secrets", 2);
    ASSERT_TRUE(sec.ok()) << sec.status();
    sec_ = *sec;
    auto store = CredentialStore::Load(sec_.dir + "/credentials");
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    service_ =
        std::make_unique<CoordinatorService>(engine_.get(), store_.get());
    TlsOptions server_tls;
    server_tls.cert_file = sec_.dir + "/server.pem";
    server_tls.key_file = sec_.dir + "/server.key";
    server_tls.ca_file = sec_.dir + "/ca.pem";
    auto creds = MakeServerCredentials(server_tls);
    ASSERT_TRUE(creds.ok()) << creds.status();
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", *creds, &port_);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(port_, 0);
  }
  void TearDown() override {
    server_->Shutdown();
    std::filesystem::remove_all(dir_);
  }

  TlsOptions GoodTls() const {
    TlsOptions t;
    t.ca_file = sec_.dir + "/ca.pem";
    t.cert_file = sec_.dir + "/client.pem";
    t.key_file = sec_.dir + "/client.key";
    t.server_name = "localhost";
    return t;
  }
  std::string Token(const std::string& file) const {
    auto t = ReadTokenFile(sec_.dir + "/" + file);
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? *t : "";
  }
  std::unique_ptr<CoordinatorClient> Client(const TlsOptions& tls,
                                            const std::string& token) {
    auto c = CoordinatorClient::Connect(absl::StrCat("127.0.0.1:", port_), tls,
                                        token);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? std::move(*c) : nullptr;
  }
  static v1::JoinRequest JoinReq() {
    v1::JoinRequest r;
    r.set_protocol_version(kProtocolVersion);
    r.set_shard(-1);
    return r;
  }

  std::string dir_;
  Config config_;
  LocalSecurity sec_;
  std::unique_ptr<CredentialStore> store_;
  std::unique_ptr<RoundEngine> engine_;
  std::unique_ptr<CoordinatorService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

TEST_F(SecureServiceTest, AdmitsCredentialedClientsAndRefusesStrangers) {
  auto alice = Client(GoodTls(), Token("client-0.token"));
  auto join = alice->Join(JoinReq());
  ASSERT_TRUE(join.ok()) << join.status();
  const uint32_t id = join->client_id();
  EXPECT_TRUE(alice->Heartbeat(id, join->session()).ok());

  // The status credential reads the status and nothing else.
  auto ops = Client(GoodTls(), Token("status.token"));
  EXPECT_TRUE(ops->GetStatus().ok());
  EXPECT_EQ(ops->Join(JoinReq()).status().code(),
            absl::StatusCode::kPermissionDenied);
  // No token, or a made-up one.
  EXPECT_EQ(Client(GoodTls(), "")->Join(JoinReq()).status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(Client(GoodTls(), "")->GetStatus().status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(Client(GoodTls(), NewToken())->Join(JoinReq()).status().code(),
            absl::StatusCode::kUnauthenticated);
  // Bob's valid token does not let him act as alice's client id, even with
  // her session.
  auto bob = Client(GoodTls(), Token("client-1.token"));
  EXPECT_EQ(bob->Heartbeat(id, join->session()).code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(bob->Leave(id, join->session(), "hijack").code(),
            absl::StatusCode::kPermissionDenied);
  // Alice is still in.
  EXPECT_TRUE(alice->Heartbeat(id, join->session()).ok());
}

TEST_F(SecureServiceTest, TransportWithoutTheRightCertificatesFails) {
  const std::string token = Token("client-0.token");
  // Mutual TLS: no client certificate.
  TlsOptions no_cert = GoodTls();
  no_cert.cert_file.clear();
  no_cert.key_file.clear();
  EXPECT_EQ(Client(no_cert, token)->Join(JoinReq()).status().code(),
            absl::StatusCode::kUnavailable);
  // Plaintext to a TLS port.
  TlsOptions plain;
  plain.insecure = true;
  EXPECT_EQ(Client(plain, token)->Join(JoinReq()).status().code(),
            absl::StatusCode::kUnavailable);
  // A server certificate from another CA is not trusted.
  auto other = MakeTestPki(dir_ + "/other", {"localhost"});
  ASSERT_TRUE(other.ok());
  TlsOptions wrong_ca = GoodTls();
  wrong_ca.ca_file = other->ca_cert;
  EXPECT_EQ(Client(wrong_ca, token)->Join(JoinReq()).status().code(),
            absl::StatusCode::kUnavailable);
  // The expected name is checked.
  TlsOptions wrong_name = GoodTls();
  wrong_name.server_name = "coordinator.example";
  EXPECT_EQ(Client(wrong_name, token)->Join(JoinReq()).status().code(),
            absl::StatusCode::kUnavailable);
  // And the right setup works.
  EXPECT_TRUE(Client(GoodTls(), token)->Join(JoinReq()).ok());
}

TEST_F(SecureServiceTest, RevokedClientIsLockedOutMidRun) {
  auto alice = Client(GoodTls(), Token("client-0.token"));
  auto join = alice->Join(JoinReq());
  ASSERT_TRUE(join.ok()) << join.status();
  auto text = ReadFileToString(sec_.dir + "/credentials");
  ASSERT_TRUE(text.ok());
  // Drop client-0's line.
  std::string kept;
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    if (line.rfind("client client-0 ", 0) == 0) continue;
    absl::StrAppend(&kept, line, "\n");
  }
  absl::SleepFor(absl::Milliseconds(1100));
  Write(sec_.dir + "/credentials", kept);
  absl::SleepFor(absl::Milliseconds(1100));
  EXPECT_EQ(alice->Heartbeat(join->client_id(), join->session()).code(),
            absl::StatusCode::kUnauthenticated);
}

}  // namespace
}  // namespace fedfwd
