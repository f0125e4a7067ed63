#include "common/codec.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/rng.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fedfwd {
namespace {

using ::testing::HasSubstr;

// 1.2 M floats = 4.8 MB: more than gRPC's 4 MiB message limit, five chunks
// of kSnapshotChunkBytes (the last one partial).
constexpr int64_t kParams = 1200000;

std::vector<float> Params(int64_t n = kParams) {
  std::vector<float> p(static_cast<size_t>(n));
  FillUniform(11, 0, -2.0f, 2.0f, p.data(), n);
  return p;
}

// Splits a snapshot into chunks the way CoordinatorService::FetchModel does.
std::vector<v1::ModelChunk> Chunks(const Snapshot& snap) {
  std::vector<v1::ModelChunk> out;
  size_t off = 0;
  do {
    const size_t len = std::min(kSnapshotChunkBytes, snap.bytes.size() - off);
    v1::ModelChunk c;
    c.set_model_version(snap.version);
    c.set_total_bytes(snap.bytes.size());
    c.set_offset(off);
    c.set_data(snap.bytes.data() + off, len);
    c.set_checksum(snap.checksum);
    c.set_model("test");
    out.push_back(std::move(c));
    off += len;
  } while (off < snap.bytes.size());
  return out;
}

absl::Status AddAll(SnapshotAssembler& a,
                    const std::vector<v1::ModelChunk>& chunks) {
  for (const auto& c : chunks) {
    absl::Status s = a.Add(c);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

TEST(Snapshot, BytesAreLittleEndianFloatsWithXxh64) {
  const std::vector<float> p = {1.0f, -2.5f, 0.0f};
  const Snapshot s = MakeSnapshot(p, 7);
  EXPECT_EQ(s.version, 7u);
  ASSERT_EQ(s.bytes.size(), 12u);
  // 1.0f = 0x3f800000, little endian.
  EXPECT_EQ(static_cast<uint8_t>(s.bytes[0]), 0x00);
  EXPECT_EQ(static_cast<uint8_t>(s.bytes[2]), 0x80);
  EXPECT_EQ(static_cast<uint8_t>(s.bytes[3]), 0x3f);
  EXPECT_EQ(s.checksum, Checksum(s.bytes.data(), s.bytes.size()));
  // XXH64 of the empty input with seed 0 (the reference test vector).
  EXPECT_EQ(Checksum("", 0), 0xef46db3751d8e999ull);
}

TEST(SnapshotAssembler, RoundTripOfAModelOverFourMiB) {
  const std::vector<float> p = Params();
  const Snapshot snap = MakeSnapshot(p, 3);
  ASSERT_GT(snap.bytes.size(), size_t{4} << 20);
  const auto chunks = Chunks(snap);
  ASSERT_EQ(chunks.size(), 5u);
  for (const auto& c : chunks) EXPECT_LE(c.data().size(), kSnapshotChunkBytes);

  SnapshotAssembler a(kParams, 3);
  ASSERT_TRUE(AddAll(a, chunks).ok());
  std::vector<float> out;
  ASSERT_TRUE(a.Finish(&out).ok());
  ASSERT_EQ(out.size(), p.size());
  EXPECT_EQ(std::memcmp(out.data(), p.data(), p.size() * sizeof(float)), 0);
}

TEST(SnapshotAssembler, VersionZeroAcceptsAnyVersion) {
  const std::vector<float> p = Params(1000);
  const Snapshot snap = MakeSnapshot(p, 42);
  SnapshotAssembler a(1000, 0);
  ASSERT_TRUE(AddAll(a, Chunks(snap)).ok());
  std::vector<float> out;
  ASSERT_TRUE(a.Finish(&out).ok());
  EXPECT_EQ(out, p);
}

TEST(SnapshotAssembler, MissingLastChunkIsTruncated) {
  const Snapshot snap = MakeSnapshot(Params(), 1);
  auto chunks = Chunks(snap);
  chunks.pop_back();
  SnapshotAssembler a(kParams, 1);
  ASSERT_TRUE(AddAll(a, chunks).ok());
  std::vector<float> out;
  const absl::Status s = a.Finish(&out);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("truncated"));
  EXPECT_TRUE(out.empty());
}

TEST(SnapshotAssembler, NoChunksIsTruncated) {
  SnapshotAssembler a(10, 1);
  std::vector<float> out;
  const absl::Status s = a.Finish(&out);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("truncated"));
}

TEST(SnapshotAssembler, WrongOffsetIsRejected) {
  const Snapshot snap = MakeSnapshot(Params(), 1);
  auto chunks = Chunks(snap);
  SnapshotAssembler a(kParams, 1);
  ASSERT_TRUE(a.Add(chunks[0]).ok());
  // Skipping chunk 1 puts chunk 2 at the wrong offset.
  const absl::Status s = a.Add(chunks[2]);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("offset"));
  // A repeated chunk is rejected too.
  SnapshotAssembler b(kParams, 1);
  ASSERT_TRUE(b.Add(chunks[0]).ok());
  EXPECT_EQ(b.Add(chunks[0]).code(), absl::StatusCode::kDataLoss);
}

TEST(SnapshotAssembler, WrongTotalSizeIsRejected) {
  const Snapshot snap = MakeSnapshot(Params(1000), 1);
  SnapshotAssembler a(1001, 1);
  const absl::Status s = a.Add(Chunks(snap)[0]);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("4000"));
  EXPECT_THAT(s.message(), HasSubstr("4004"));
}

TEST(SnapshotAssembler, ChunksBeyondTheModelSizeAreRejected) {
  const Snapshot snap = MakeSnapshot(Params(1000), 1);
  v1::ModelChunk c = Chunks(snap)[0];
  c.mutable_data()->append("xxxx");
  SnapshotAssembler a(1000, 1);
  EXPECT_EQ(a.Add(c).code(), absl::StatusCode::kDataLoss);
}

TEST(SnapshotAssembler, WrongVersionIsRejected) {
  const Snapshot snap = MakeSnapshot(Params(1000), 5);
  SnapshotAssembler a(1000, 4);
  const absl::Status s = a.Add(Chunks(snap)[0]);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("version"));
}

TEST(SnapshotAssembler, FlippedByteFailsTheChecksum) {
  const Snapshot snap = MakeSnapshot(Params(), 2);
  auto chunks = Chunks(snap);
  std::string* data = chunks[3].mutable_data();
  (*data)[12345] = static_cast<char>((*data)[12345] ^ 0x01);
  SnapshotAssembler a(kParams, 2);
  ASSERT_TRUE(AddAll(a, chunks).ok());
  std::vector<float> out;
  const absl::Status s = a.Finish(&out);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("checksum"));
}

TEST(SnapshotAssembler, WrongChecksumFieldFails) {
  const Snapshot snap = MakeSnapshot(Params(1000), 2);
  auto chunks = Chunks(snap);
  chunks.back().set_checksum(snap.checksum + 1);
  SnapshotAssembler a(1000, 2);
  ASSERT_TRUE(AddAll(a, chunks).ok());
  std::vector<float> out;
  EXPECT_EQ(a.Finish(&out).code(), absl::StatusCode::kDataLoss);
}

TEST(TangentKeyCodec, RoundTrip) {
  for (auto type :
       {TangentDistribution::kNormal, TangentDistribution::kRademacher}) {
    TangentKey k;
    k.run_seed = 0xfedcba9876543210ull;
    k.round = (int64_t{1} << 32) - 1;
    k.client = 0x7fffffffu;
    k.index = kMaxTangentIndex - 1;
    k.type = type;
    const v1::TangentKey p = ToProto(k);
    EXPECT_EQ(p.run_seed(), k.run_seed);
    EXPECT_EQ(p.round(), k.round);
    EXPECT_EQ(p.type(), type == TangentDistribution::kNormal
                            ? v1::TANGENT_NORMAL
                            : v1::TANGENT_RADEMACHER);
    // Through the wire bytes too.
    v1::TangentKey parsed;
    ASSERT_TRUE(parsed.ParseFromString(p.SerializeAsString()));
    auto back = FromProto(parsed);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->run_seed, k.run_seed);
    EXPECT_EQ(back->round, k.round);
    EXPECT_EQ(back->client, k.client);
    EXPECT_EQ(back->index, k.index);
    EXPECT_EQ(back->type, k.type);
  }
}

v1::TangentKey ValidProto() {
  v1::TangentKey p;
  p.set_run_seed(1);
  p.set_round(3);
  p.set_client(2);
  p.set_index(0);
  p.set_type(v1::TANGENT_NORMAL);
  return p;
}

TEST(TangentKeyCodec, RejectsUnspecifiedAndUnknownType) {
  v1::TangentKey p = ValidProto();
  p.set_type(v1::TANGENT_TYPE_UNSPECIFIED);
  EXPECT_EQ(FromProto(p).status().code(), absl::StatusCode::kInvalidArgument);
  p.set_type(static_cast<v1::TangentType>(99));  // open enum: unknown value
  EXPECT_EQ(FromProto(p).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TangentKeyCodec, RejectsOutOfRangeFields) {
  v1::TangentKey p = ValidProto();
  ASSERT_TRUE(FromProto(p).ok());
  p.set_index(kMaxTangentIndex);
  auto s = FromProto(p).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("index 65536"));

  p = ValidProto();
  p.set_round(-1);
  EXPECT_EQ(FromProto(p).status().code(), absl::StatusCode::kInvalidArgument);
  p.set_round(int64_t{1} << 32);
  EXPECT_EQ(FromProto(p).status().code(), absl::StatusCode::kInvalidArgument);

  p = ValidProto();
  p.set_client(0x80000000u);
  EXPECT_EQ(FromProto(p).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SeedUpdateCodec, RoundTripKeepsTheExactFloatFactor) {
  SeedTerm t;
  ASSERT_TRUE(FromProto(ValidProto()).ok());
  t.key = FromProto(ValidProto()).value();
  t.alpha = -0.1f * 3.0f;  // not a short decimal
  t.restrict_mask = 0x6;
  v1::SeedUpdate wire;
  ASSERT_TRUE(wire.ParseFromString(ToProto(t, 42).SerializeAsString()));
  EXPECT_EQ(wire.version(), 42u);
  auto back = FromProto(wire);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->alpha, t.alpha);
  EXPECT_EQ(back->restrict_mask, t.restrict_mask);
  EXPECT_EQ(back->key.round, t.key.round);
  EXPECT_EQ(back->key.client, t.key.client);
}

TEST(SeedUpdateCodec, RejectsNonFiniteOrOversizedCoefficientsAndBadKeys) {
  v1::SeedUpdate u;
  *u.mutable_key() = ValidProto();
  for (double c : {std::nan(""), HUGE_VAL, -HUGE_VAL, 1e39}) {
    u.set_coefficient(c);
    EXPECT_EQ(FromProto(u).status().code(), absl::StatusCode::kInvalidArgument)
        << c;
  }
  u.set_coefficient(0.5);
  u.mutable_key()->set_type(v1::TANGENT_TYPE_UNSPECIFIED);
  EXPECT_EQ(FromProto(u).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(StepRuleCodec, RoundTripsAndRejectsOutOfRangeValues) {
  StepRule adam;
  adam.adam = true;
  adam.beta1 = 0.8;
  adam.beta2 = 0.99;
  adam.eps = 1e-6;
  adam.clip_step = 2.5;
  absl::StatusOr<StepRule> back = FromProto(ToProto(adam));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(back->adam);
  EXPECT_EQ(back->beta1, 0.8);
  EXPECT_EQ(back->beta2, 0.99);
  EXPECT_EQ(back->eps, 1e-6);
  EXPECT_EQ(back->clip_step, 2.5);
  StepRule momentum;
  momentum.momentum = 0.9;
  back = FromProto(ToProto(momentum));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->momentum, 0.9);
  EXPECT_FALSE(back->adam);
  StepRule fw;
  fw.frank_wolfe = true;
  fw.radius = 30;
  fw.fw_k = 500;
  back = FromProto(ToProto(fw));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(back->frank_wolfe);
  EXPECT_EQ(back->radius, 30);
  EXPECT_EQ(back->fw_k, 500);

  auto bad = [](auto edit) {
    v1::StepRule p = ToProto(StepRule());
    edit(&p);
    return FromProto(p).status();
  };
  EXPECT_THAT(bad([](v1::StepRule* p) { p->set_momentum(1.0); }).message(),
              HasSubstr("momentum 1"));
  EXPECT_FALSE(bad([](v1::StepRule* p) { p->set_momentum(-0.1); }).ok());
  EXPECT_THAT(bad([](v1::StepRule* p) { p->set_frank_wolfe(true); }).message(),
              HasSubstr("radius 0"));
  EXPECT_FALSE(bad([](v1::StepRule* p) { p->set_radius(3); }).ok());
  EXPECT_FALSE(bad([](v1::StepRule* p) {
                 p->set_frank_wolfe(true);
                 p->set_radius(3);
                 p->set_momentum(0.5);
               }).ok());
  EXPECT_FALSE(bad([](v1::StepRule* p) {
                 p->set_clip_step(std::numeric_limits<double>::infinity());
               }).ok());
  EXPECT_FALSE(bad([](v1::StepRule* p) {
                 p->set_adam(true);
                 p->set_beta1(0.9);
                 p->set_beta2(0.999);
                 p->set_eps(0);
               }).ok());
  EXPECT_FALSE(bad([](v1::StepRule* p) {
                 p->set_adam(true);
                 p->set_beta1(std::nan(""));
                 p->set_beta2(0.999);
                 p->set_eps(1e-8);
               }).ok());
}

}  // namespace
}  // namespace fedfwd
