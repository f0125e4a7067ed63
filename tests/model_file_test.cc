#include "common/model_file.h"

#include <xxhash.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/rng.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testutil/synthetic_data.h"

namespace fedfwd {
namespace {

using ::testing::HasSubstr;

constexpr char kName[] = "runs/x/final_model.bin";

std::vector<float> Params(int64_t n) {
  std::vector<float> p(static_cast<size_t>(n));
  FillUniform(21, 0, -1.0f, 1.0f, p.data(), n);
  return p;
}

ModelFileHeader Header() {
  ModelFileHeader h;
  h.model = "mlp";
  h.dataset = "mnist";
  h.kind = "best";
  h.config_yaml =
      "model: mlp\nrounds: 300\nlr: 1.6e-4  # \"quoted\" \xc3\xa9\n";
  h.round = 4242;
  h.test_acc = 0.8775;
  return h;
}

// A model file with this exact header text and payload.
std::string Assemble(const std::string& header, const std::string& payload) {
  std::string out = "FFWDMDL1";
  const uint32_t len = static_cast<uint32_t>(header.size());
  for (int s = 0; s < 32; s += 8) out.push_back(static_cast<char>(len >> s));
  return out + header + payload;
}

std::string PayloadOf(const std::vector<float>& p) {
  return std::string(reinterpret_cast<const char*>(p.data()), p.size() * 4);
}

nlohmann::json HeaderJson(const std::vector<float>& p) {
  const std::string payload = PayloadOf(p);
  return {
      {"model", "mlp"},
      {"dataset", "mnist"},
      {"num_params", p.size()},
      {"checksum", std::to_string(XXH64(payload.data(), payload.size(), 0))},
      {"round", 7},
      {"test_acc", 0.5},
      {"config_yaml", "model: mlp\n"},
      {"kind", "final"}};
}

void ExpectError(const absl::StatusOr<ModelFile>& r, absl::StatusCode code,
                 const std::string& text) {
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), code) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr(kName));
  EXPECT_THAT(r.status().message(), HasSubstr(text));
}

TEST(ModelFile, RoundTrip) {
  const std::vector<float> p = Params(12345);
  ModelFileHeader h = Header();
  h.num_params = 99;  // ignored: the writer counts
  const std::string bytes = EncodeModelFile(h, p);
  auto f = ParseModelFile(bytes, kName);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->header.model, "mlp");
  EXPECT_EQ(f->header.dataset, "mnist");
  EXPECT_EQ(f->header.kind, "best");
  EXPECT_EQ(f->header.config_yaml, h.config_yaml);
  EXPECT_EQ(f->header.num_params, 12345);
  EXPECT_EQ(f->header.round, 4242);
  EXPECT_EQ(f->header.test_acc, 0.8775);
  ASSERT_EQ(f->params.size(), p.size());
  EXPECT_EQ(std::memcmp(f->params.data(), p.data(), p.size() * 4), 0);
}

TEST(ModelFile, LayoutIsAsDocumented) {
  const std::vector<float> p = {1.0f, -2.5f, 0.0f};
  ModelFileHeader h = Header();
  h.round = int64_t{1} << 40;
  const std::string bytes = EncodeModelFile(h, p);
  ASSERT_GE(bytes.size(), 12u);
  EXPECT_EQ(bytes.substr(0, 8), "FFWDMDL1");
  const auto* u = reinterpret_cast<const unsigned char*>(bytes.data());
  const uint32_t len = u[8] | u[9] << 8 | u[10] << 16 | uint32_t{u[11]} << 24;
  ASSERT_EQ(bytes.size(), 12 + len + 12);
  const auto j = nlohmann::json::parse(bytes.substr(12, len));
  const std::string payload = bytes.substr(12 + len);
  EXPECT_EQ(payload, PayloadOf(p));  // float32 little endian
  EXPECT_EQ(j.at("num_params"), 3);
  EXPECT_EQ(j.at("round"), int64_t{1} << 40);
  EXPECT_EQ(j.at("kind"), "best");
  EXPECT_EQ(j.at("test_acc"), 0.8775);
  ASSERT_TRUE(j.at("checksum").is_string());
  EXPECT_EQ(j.at("checksum").get<std::string>(),
            std::to_string(XXH64(payload.data(), payload.size(), 0)));
}

TEST(ModelFile, EmptyModelAndUnknownAccuracy) {
  ModelFileHeader h = Header();
  h.kind = "final";
  h.test_acc = std::numeric_limits<double>::quiet_NaN();
  auto f = ParseModelFile(EncodeModelFile(h, {}), kName);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE(f->params.empty());
  EXPECT_EQ(f->header.num_params, 0);
  EXPECT_EQ(f->header.test_acc, -1);
  EXPECT_EQ(f->header.kind, "final");
}

TEST(ModelFile, IgnoresUnknownHeaderFields) {
  const std::vector<float> p = Params(10);
  nlohmann::json j = HeaderJson(p);
  j["added_later"] = {1, 2, 3};
  auto f = ParseModelFile(Assemble(j.dump(), PayloadOf(p)), kName);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->header.round, 7);
}

TEST(ModelFile, ReadsFromDisk) {
  const std::string dir = testing::MakeTempDir("model_file_test_");
  ASSERT_FALSE(dir.empty());
  const std::string path = dir + "/best_model.bin";
  const std::vector<float> p = Params(1000);
  {
    std::ofstream out(path, std::ios::binary);
    out << EncodeModelFile(Header(), p);
  }
  auto f = ReadModelFile(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->params, p);

  auto missing = ReadModelFile(dir + "/nope.bin");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr(dir + "/nope.bin"));

  auto folder = ReadModelFile(dir);
  ASSERT_FALSE(folder.ok());
  EXPECT_THAT(folder.status().message(), HasSubstr(dir));

  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << "junk";
  }
  auto junk = ReadModelFile(path);
  ASSERT_FALSE(junk.ok());
  EXPECT_THAT(junk.status().message(), HasSubstr(path));
  EXPECT_THAT(junk.status().message(), HasSubstr("not a fedfwd model file"));
  std::filesystem::remove_all(dir);
}

TEST(ModelFile, RejectsBadMagicAndHeaderlessFiles) {
  ExpectError(ParseModelFile("", kName), absl::StatusCode::kInvalidArgument,
              "not a fedfwd model file");
  ExpectError(ParseModelFile("FFWDMDL", kName),
              absl::StatusCode::kInvalidArgument, "not a fedfwd model file");
  std::string other_version = EncodeModelFile(Header(), Params(4));
  other_version[7] = '2';
  ExpectError(ParseModelFile(other_version, kName),
              absl::StatusCode::kInvalidArgument, "not a fedfwd model file");
  // The legacy format: raw float32 parameters with no header.
  const std::string legacy = PayloadOf(Params(1000));
  ExpectError(ParseModelFile(legacy, kName), absl::StatusCode::kInvalidArgument,
              "headerless");
}

TEST(ModelFile, RejectsHeaderLengthBeyondFile) {
  std::string bytes = EncodeModelFile(Header(), Params(4));
  bytes[11] = static_cast<char>(0xff);  // ~4 GiB header
  ExpectError(ParseModelFile(bytes, kName), absl::StatusCode::kDataLoss,
              "truncated");
  ExpectError(ParseModelFile("FFWDMDL1\x01", kName),
              absl::StatusCode::kDataLoss, "truncated");
}

TEST(ModelFile, RejectsBadJson) {
  const std::vector<float> p = Params(4);
  const std::string payload = PayloadOf(p);
  std::string text = HeaderJson(p).dump();
  text.back() = ' ';  // unterminated object
  ExpectError(ParseModelFile(Assemble(text, payload), kName),
              absl::StatusCode::kDataLoss, "not valid JSON");
  ExpectError(ParseModelFile(Assemble("", payload), kName),
              absl::StatusCode::kDataLoss, "not valid JSON");
  ExpectError(ParseModelFile(Assemble("[1, 2]", payload), kName),
              absl::StatusCode::kDataLoss, "not a JSON object");
  ExpectError(ParseModelFile(Assemble(std::string(20000, '['), payload), kName),
              absl::StatusCode::kDataLoss, "not valid JSON");
}

TEST(ModelFile, RejectsMissingOrMistypedFields) {
  const std::vector<float> p = Params(4);
  const std::string payload = PayloadOf(p);
  for (const char* key : {"model", "dataset", "num_params", "checksum", "round",
                          "test_acc", "config_yaml", "kind"}) {
    nlohmann::json j = HeaderJson(p);
    ASSERT_TRUE(ParseModelFile(Assemble(j.dump(), payload), kName).ok());
    j.erase(key);
    ExpectError(ParseModelFile(Assemble(j.dump(), payload), kName),
                absl::StatusCode::kDataLoss,
                std::string("no \"") + key + "\" field");
    j = HeaderJson(p);
    j[key] = nlohmann::json::array();
    ExpectError(ParseModelFile(Assemble(j.dump(), payload), kName),
                absl::StatusCode::kDataLoss, std::string("\"") + key + "\"");
  }
  nlohmann::json j = HeaderJson(p);
  j["checksum"] = "0x1234";
  ExpectError(ParseModelFile(Assemble(j.dump(), payload), kName),
              absl::StatusCode::kDataLoss, "checksum");
  j = HeaderJson(p);
  j["num_params"] = -4;
  ExpectError(ParseModelFile(Assemble(j.dump(), payload), kName),
              absl::StatusCode::kDataLoss, "num_params");
  j = HeaderJson(p);
  j["round"] = 1.5;
  ExpectError(ParseModelFile(Assemble(j.dump(), payload), kName),
              absl::StatusCode::kDataLoss, "\"round\" is not an integer");
}

TEST(ModelFile, RejectsPayloadOfWrongSize) {
  const std::string bytes = EncodeModelFile(Header(), Params(100));
  ExpectError(ParseModelFile(bytes.substr(0, bytes.size() - 4), kName),
              absl::StatusCode::kDataLoss, "truncated");
  ExpectError(ParseModelFile(bytes.substr(0, bytes.size() - 1), kName),
              absl::StatusCode::kDataLoss, "399 bytes; expected 400");
  ExpectError(ParseModelFile(bytes + "x", kName), absl::StatusCode::kDataLoss,
              "401 bytes; expected 400");
}

TEST(ModelFile, RejectsChecksumMismatch) {
  std::string bytes = EncodeModelFile(Header(), Params(100));
  bytes[bytes.size() - 3] ^= 0x01;
  ExpectError(ParseModelFile(bytes, kName), absl::StatusCode::kDataLoss,
              "checksum mismatch");
}

TEST(ModelFile, EveryTruncationFailsCleanly) {
  ModelFileHeader h = Header();
  h.config_yaml = "model: mlp\n";
  const std::string bytes = EncodeModelFile(h, Params(64));
  ASSERT_TRUE(ParseModelFile(bytes, kName).ok());
  for (size_t len = 0; len < bytes.size(); ++len) {
    auto r = ParseModelFile(bytes.substr(0, len), kName);
    ASSERT_FALSE(r.ok()) << "prefix of " << len << " bytes parsed";
    EXPECT_THAT(r.status().message(), HasSubstr(kName)) << len;
    if (len >= 8) {
      EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << len;
    }
  }
}

TEST(ModelFile, CorruptedBytesNeverCrashAndPayloadDamageIsCaught) {
  const std::string bytes = EncodeModelFile(Header(), Params(16));
  const size_t payload_start = bytes.size() - 16 * 4;
  for (size_t i = 0; i < bytes.size(); ++i) {
    for (unsigned char flip : {0x01, 0x80, 0xff}) {
      std::string c = bytes;
      c[i] = static_cast<char>(c[i] ^ flip);
      auto r = ParseModelFile(c, kName);
      if (i >= payload_start) {
        EXPECT_FALSE(r.ok()) << "payload byte " << i << " flipped";
      }
      if (r.ok()) EXPECT_EQ(r->params.size(), 16u);
    }
  }
}

}  // namespace
}  // namespace fedfwd
