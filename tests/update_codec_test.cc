#include "common/update_codec.h"

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

constexpr UpdateEncoding kAll[] = {
    UpdateEncoding::kFloat32, UpdateEncoding::kFloat16, UpdateEncoding::kInt8};

std::vector<float> Uniform(int64_t n, uint32_t stream, float lo, float hi) {
  std::vector<float> v(static_cast<size_t>(n));
  FillUniform(7, stream, lo, hi, v.data(), n);
  return v;
}

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

std::vector<float> RoundTrip(const std::vector<float>& x,
                             const std::vector<int64_t>& sizes,
                             UpdateEncoding e) {
  auto enc = EncodeUpdate(x.data(), sizes, e);
  EXPECT_TRUE(enc.ok()) << enc.status();
  if (!enc.ok()) return {};
  auto dec = DecodeUpdate(*enc, sizes, e);
  EXPECT_TRUE(dec.ok()) << dec.status();
  if (!dec.ok()) return {};
  return *dec;
}

TEST(UpdateCodec, ParsesNamesAndListsThemInErrors) {
  for (UpdateEncoding e : kAll) {
    auto parsed = ParseUpdateEncoding(UpdateEncodingName(e));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, e);
  }
  EXPECT_EQ(*ParseUpdateEncoding("none"), UpdateEncoding::kFloat32);
  auto bad = ParseUpdateEncoding("float16");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("float16"));
  EXPECT_THAT(bad.status().message(), HasSubstr("none, fp16, int8"));
}

TEST(UpdateCodec, Float32RoundTripIsBitExact) {
  std::vector<float> x = Uniform(1000, 1, -3.0f, 3.0f);
  x.push_back(0.0f);
  x.push_back(-0.0f);
  x.push_back(std::numeric_limits<float>::max());
  x.push_back(-std::numeric_limits<float>::max());
  x.push_back(std::numeric_limits<float>::denorm_min());
  x.push_back(std::numeric_limits<float>::min());
  const std::vector<int64_t> sizes = {500, 0, 506};
  auto enc = EncodeUpdate(x.data(), sizes, UpdateEncoding::kFloat32);
  ASSERT_TRUE(enc.ok());
  // Little-endian raw floats.
  ASSERT_EQ(enc->size(), x.size() * 4);
  const auto* b = reinterpret_cast<const unsigned char*>(enc->data());
  EXPECT_EQ(uint32_t{b[0]} | uint32_t{b[1]} << 8 | uint32_t{b[2]} << 16 |
                uint32_t{b[3]} << 24,
            Bits(x[0]));
  const std::vector<float> y = RoundTrip(x, sizes, UpdateEncoding::kFloat32);
  ASSERT_EQ(y.size(), x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_EQ(Bits(y[i]), Bits(x[i])) << i;
  }
}

TEST(UpdateCodec, Fp16ExactForEveryRepresentableValue) {
  std::vector<float> x;
  std::vector<uint16_t> halves;
  for (uint32_t h = 0; h < 0x10000u; ++h) {
    if (((h >> 10) & 0x1fu) == 0x1fu) continue;  // inf / NaN
    halves.push_back(static_cast<uint16_t>(h));
    x.push_back(HalfToFloat(static_cast<uint16_t>(h)));
  }
  ASSERT_EQ(x.size(), 63488u);
  EXPECT_EQ(x[1], std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(HalfToFloat(0x3c00), 1.0f);
  EXPECT_EQ(HalfToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(HalfToFloat(0xc000), -2.0f);
  const std::vector<int64_t> sizes = {static_cast<int64_t>(x.size())};
  auto enc = EncodeUpdate(x.data(), sizes, UpdateEncoding::kFloat16);
  ASSERT_TRUE(enc.ok());
  ASSERT_EQ(enc->size(), 2 * x.size());
  const auto* b = reinterpret_cast<const unsigned char*>(enc->data());
  for (size_t i = 0; i < halves.size(); ++i) {
    ASSERT_EQ(b[2 * i] | b[2 * i + 1] << 8, halves[i]) << i;  // LE bits
  }
  const std::vector<float> y = RoundTrip(x, sizes, UpdateEncoding::kFloat16);
  ASSERT_EQ(y.size(), x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    ASSERT_EQ(Bits(y[i]), Bits(x[i])) << i;
  }
}

TEST(UpdateCodec, Fp16RelativeErrorWithinHalfUlpInNormalRange) {
  // Log-uniform magnitudes across the whole normal range, random signs.
  const int64_t n = 200000;
  const std::vector<float> e = Uniform(n, 2, -14.0f, 15.99f);
  const std::vector<float> s = Uniform(n, 3, -1.0f, 1.0f);
  std::vector<float> x(n);
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::copysign(std::exp2(e[i]), s[i]);
    if (std::fabs(x[i]) > 65504.0f) x[i] = std::copysign(65504.0f, x[i]);
    if (std::fabs(x[i]) < std::ldexp(1.0f, -14)) {
      x[i] = std::copysign(std::ldexp(1.0f, -14), x[i]);
    }
  }
  const std::vector<float> y = RoundTrip(x, {n}, UpdateEncoding::kFloat16);
  ASSERT_EQ(y.size(), x.size());
  const double bound = std::ldexp(1.0, -11);
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_LE(std::fabs(double{y[i]} - x[i]), bound * std::fabs(x[i]))
        << x[i] << " -> " << y[i];
  }
}

// Nearest-even against a reference: the encoded value must be the closer
// of the two binary16 neighbours of x, the even one on a tie.
TEST(UpdateCodec, Fp16RoundsToNearestEven) {
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie, even
  EXPECT_EQ(FloatToHalf(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);  // tie up
  EXPECT_EQ(FloatToHalf(std::nextafter(1.0f + std::ldexp(1.0f, -11), 2.0f)),
            0x3c01);
  EXPECT_EQ(FloatToHalf(2047.0f / 1024.0f + std::ldexp(1.0f, -11)),
            0x4000);  // mantissa carry into the exponent
  const int64_t n = 100000;
  const std::vector<float> x = Uniform(n, 4, -60000.0f, 60000.0f);
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t h = FloatToHalf(x[i]);
    const double got = HalfToFloat(h);
    const double err = std::fabs(got - x[i]);
    // Neighbours of h in the direction of magnitude (same sign).
    for (int d : {-1, 1}) {
      const int other = (h & 0x7fff) + d;
      if (other < 0 || other > 0x7bff) continue;
      const double alt =
          HalfToFloat(static_cast<uint16_t>((h & 0x8000) | other));
      const double alt_err = std::fabs(alt - x[i]);
      ASSERT_TRUE(err < alt_err || (err == alt_err && (h & 1) == 0))
          << x[i] << " -> " << got << " but " << alt << " is as close";
    }
  }
}

TEST(UpdateCodec, Fp16SaturatesInsteadOfInfinity) {
  const float max = std::numeric_limits<float>::max();
  const std::vector<float> x = {65504.0f, 65519.0f, 65520.0f,  70000.0f,
                                1e30f,    max,      -65520.0f, -max};
  for (float v : x) {
    EXPECT_EQ(FloatToHalf(v), v > 0 ? 0x7bff : 0xfbff) << v;
  }
  EXPECT_EQ(FloatToHalf(65503.0f), 0x7bff);  // ordinary rounding below
  EXPECT_EQ(FloatToHalf(65488.0f), 0x7bfe);  // tie to even, not the max
  const std::vector<float> y =
      RoundTrip(x, {static_cast<int64_t>(x.size())}, UpdateEncoding::kFloat16);
  ASSERT_EQ(y.size(), x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_TRUE(std::isfinite(y[i]));
    EXPECT_EQ(y[i], std::copysign(65504.0f, x[i])) << x[i];
  }
}

TEST(UpdateCodec, Fp16Subnormals) {
  const float tiny = std::ldexp(1.0f, -24);  // smallest binary16 subnormal
  EXPECT_EQ(FloatToHalf(tiny), 0x0001);
  EXPECT_EQ(FloatToHalf(-tiny), 0x8001);
  EXPECT_EQ(FloatToHalf(1023 * tiny), 0x03ff);            // largest subnormal
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -14)), 0x0400);  // smallest normal
  EXPECT_EQ(FloatToHalf(1023.5f * tiny), 0x0400);  // tie rounds up to normal
  EXPECT_EQ(FloatToHalf(1022.5f * tiny), 0x03fe);  // tie to even
  EXPECT_EQ(FloatToHalf(2.5f * tiny), 0x0002);     // tie to even
  EXPECT_EQ(FloatToHalf(3.5f * tiny), 0x0004);     // tie to even
  EXPECT_EQ(FloatToHalf(0.5f * tiny), 0x0000);     // tie to even (zero)
  EXPECT_EQ(FloatToHalf(std::nextafter(0.5f * tiny, 1.0f)), 0x0001);
  EXPECT_EQ(FloatToHalf(0.49f * tiny), 0x0000);
  EXPECT_EQ(FloatToHalf(-0.49f * tiny), 0x8000);  // signed zero
  EXPECT_EQ(FloatToHalf(std::numeric_limits<float>::denorm_min()), 0x0000);
  EXPECT_EQ(FloatToHalf(-0.0f), 0x8000);
  EXPECT_EQ(FloatToHalf(std::numeric_limits<float>::quiet_NaN()) & 0x7c00,
            0x7c00);

  // Subnormal inputs round trip to the nearest multiple of 2^-24.
  const std::vector<float> x =
      Uniform(10000, 5, -std::ldexp(1.0f, -14), std::ldexp(1.0f, -14));
  const std::vector<float> y =
      RoundTrip(x, {static_cast<int64_t>(x.size())}, UpdateEncoding::kFloat16);
  ASSERT_EQ(y.size(), x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    ASSERT_LE(std::fabs(y[i] - x[i]), 0.5f * tiny) << x[i];
  }
}

TEST(UpdateCodec, Int8ErrorWithinHalfScale) {
  const std::vector<int64_t> sizes = {1000, 7, 1, 3000};
  std::vector<float> x;
  const float ranges[] = {0.01f, 5.0f, 1e-3f, 1e6f};
  for (size_t t = 0; t < sizes.size(); ++t) {
    const std::vector<float> part =
        Uniform(sizes[t], 10 + static_cast<uint32_t>(t), -ranges[t], ranges[t]);
    x.insert(x.end(), part.begin(), part.end());
  }
  auto enc = EncodeUpdate(x.data(), sizes, UpdateEncoding::kInt8);
  ASSERT_TRUE(enc.ok()) << enc.status();
  const std::vector<float> y = RoundTrip(x, sizes, UpdateEncoding::kInt8);
  ASSERT_EQ(y.size(), x.size());
  size_t base = 0;
  size_t off = 0;
  for (size_t t = 0; t < sizes.size(); ++t) {
    float max_abs = 0;
    for (int64_t i = 0; i < sizes[t]; ++i) {
      max_abs = std::max(max_abs, std::fabs(x[base + i]));
    }
    const float scale = max_abs / 127.0f;
    float stored;
    std::memcpy(&stored, enc->data() + off, 4);
    EXPECT_EQ(stored, scale) << "tensor " << t;
    for (int64_t i = 0; i < sizes[t]; ++i) {
      const size_t k = base + static_cast<size_t>(i);
      ASSERT_LE(std::fabs(double{y[k]} - x[k]), scale * (0.5 + 1e-5))
          << "tensor " << t << " index " << i << ": " << x[k] << " -> " << y[k];
    }
    base += static_cast<size_t>(sizes[t]);
    off += 4 + static_cast<size_t>(sizes[t]);
  }
}

TEST(UpdateCodec, Int8RoundsHalfAwayFromZero) {
  // max 127 -> scale exactly 1.
  const std::vector<float> x = {127.0f, 0.5f,    -0.5f, 1.5f,
                                -2.5f,  -127.0f, 0.49f};
  auto enc = EncodeUpdate(x.data(), {7}, UpdateEncoding::kInt8);
  ASSERT_TRUE(enc.ok());
  ASSERT_EQ(enc->size(), 4u + 7u);
  float scale;
  std::memcpy(&scale, enc->data(), 4);
  EXPECT_EQ(scale, 1.0f);
  const std::vector<int> want = {127, 1, -1, 2, -3, -127, 0};
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(static_cast<int8_t>((*enc)[4 + i]), want[i]) << x[i];
  }
}

TEST(UpdateCodec, Int8ZeroAndEmptyTensors) {
  const std::vector<int64_t> sizes = {3, 4, 0, 2};
  const std::vector<float> x = {1, -2, 3, 0, 0, -0.0f, 0, 0.25f, -0.5f};
  auto enc = EncodeUpdate(x.data(), sizes, UpdateEncoding::kInt8);
  ASSERT_TRUE(enc.ok());
  float zero_scale = -1;
  std::memcpy(&zero_scale, enc->data() + 4 + 3, 4);
  EXPECT_EQ(zero_scale, 0.0f);
  const std::vector<float> y = RoundTrip(x, sizes, UpdateEncoding::kInt8);
  ASSERT_EQ(y.size(), x.size());
  for (int i = 3; i < 7; ++i) EXPECT_EQ(y[i], 0.0f) << i;
  EXPECT_EQ(y[0], 42 * (3.0f / 127.0f));  // q = round(42.33) = 42
  EXPECT_NEAR(y[2], 3.0f, 1e-6);
  EXPECT_NEAR(y[8], -0.5f, 1e-7);

  const std::vector<float> zeros(5, 0.0f);
  const std::vector<float> z = RoundTrip(zeros, {5}, UpdateEncoding::kInt8);
  EXPECT_EQ(z, zeros);
}

TEST(UpdateCodec, SizesMismatchIsAClearError) {
  const std::vector<float> x = Uniform(7, 6, -1, 1);
  for (UpdateEncoding e : kAll) {
    auto enc = EncodeUpdate(x.data(), {3, 4}, e);
    ASSERT_TRUE(enc.ok());
    auto dec = DecodeUpdate(*enc, {3, 5}, e);
    ASSERT_FALSE(dec.ok()) << UpdateEncodingName(e);
    EXPECT_EQ(dec.status().code(), absl::StatusCode::kInvalidArgument);
    const std::string expected = std::to_string(EncodedUpdateBytes(e, {3, 5}));
    EXPECT_THAT(dec.status().message(),
                HasSubstr(std::to_string(enc->size()) + " bytes"));
    EXPECT_THAT(dec.status().message(), HasSubstr("expected " + expected));
    EXPECT_THAT(dec.status().message(), HasSubstr(UpdateEncodingName(e)));
  }
}

TEST(UpdateCodec, TruncatedOrPaddedBytesAreRejected) {
  const std::vector<int64_t> sizes = {5, 0, 3};
  const std::vector<float> x = Uniform(8, 7, -1, 1);
  for (UpdateEncoding e : kAll) {
    auto enc = EncodeUpdate(x.data(), sizes, e);
    ASSERT_TRUE(enc.ok());
    for (size_t len = 0; len < enc->size(); ++len) {
      auto dec = DecodeUpdate(enc->substr(0, len), sizes, e);
      ASSERT_FALSE(dec.ok()) << UpdateEncodingName(e) << " prefix " << len;
      EXPECT_EQ(dec.status().code(), absl::StatusCode::kInvalidArgument);
    }
    EXPECT_FALSE(DecodeUpdate(*enc + '\0', sizes, e).ok());
  }
}

TEST(UpdateCodec, Int8BadScaleInPayloadIsRejected) {
  const std::vector<float> x = Uniform(6, 8, -1, 1);
  auto enc = EncodeUpdate(x.data(), {2, 4}, UpdateEncoding::kInt8);
  ASSERT_TRUE(enc.ok());
  ASSERT_TRUE(DecodeUpdate(*enc, {2, 4}, UpdateEncoding::kInt8).ok());
  const float bad[] = {std::numeric_limits<float>::quiet_NaN(),
                       std::numeric_limits<float>::infinity(), -1.0f};
  for (float b : bad) {
    std::string corrupt = *enc;
    std::memcpy(&corrupt[4 + 2], &b, 4);  // second tensor's scale
    auto dec = DecodeUpdate(corrupt, {2, 4}, UpdateEncoding::kInt8);
    ASSERT_FALSE(dec.ok()) << b;
    EXPECT_EQ(dec.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(dec.status().message(), HasSubstr("tensor 1"));
    EXPECT_THAT(dec.status().message(), HasSubstr("scale"));
  }
  // A finite scale whose products overflow float32.
  std::string huge = *enc;
  const float big = std::numeric_limits<float>::max();
  std::memcpy(&huge[0], &big, 4);
  huge[4] = 127;
  EXPECT_FALSE(DecodeUpdate(huge, {2, 4}, UpdateEncoding::kInt8).ok());
  // -128 is outside the encoding.
  std::string m128 = *enc;
  m128[4] = static_cast<char>(-128);
  auto dec = DecodeUpdate(m128, {2, 4}, UpdateEncoding::kInt8);
  ASSERT_FALSE(dec.ok());
  EXPECT_THAT(dec.status().message(), HasSubstr("index 0"));
}

TEST(UpdateCodec, NonFinitePayloadValuesAreRejected) {
  std::vector<float> x = {1, 2, 3};
  auto f32 = EncodeUpdate(x.data(), {3}, UpdateEncoding::kFloat32);
  ASSERT_TRUE(f32.ok());
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(&(*f32)[8], &nan, 4);
  auto d32 = DecodeUpdate(*f32, {3}, UpdateEncoding::kFloat32);
  ASSERT_FALSE(d32.ok());
  EXPECT_THAT(d32.status().message(), HasSubstr("index 2"));

  auto f16 = EncodeUpdate(x.data(), {3}, UpdateEncoding::kFloat16);
  ASSERT_TRUE(f16.ok());
  (*f16)[2] = 0x00;
  (*f16)[3] = static_cast<char>(0x7c);  // +inf
  auto d16 = DecodeUpdate(*f16, {3}, UpdateEncoding::kFloat16);
  ASSERT_FALSE(d16.ok());
  EXPECT_THAT(d16.status().message(), HasSubstr("index 1"));
}

TEST(UpdateCodec, NonFiniteInputIsRejected) {
  const float bad[] = {std::numeric_limits<float>::quiet_NaN(),
                       std::numeric_limits<float>::infinity(),
                       -std::numeric_limits<float>::infinity()};
  for (UpdateEncoding e : kAll) {
    for (float b : bad) {
      std::vector<float> x(10, 0.5f);
      x[5] = b;
      auto enc = EncodeUpdate(x.data(), {4, 6}, e);
      ASSERT_FALSE(enc.ok()) << UpdateEncodingName(e) << " " << b;
      EXPECT_EQ(enc.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(enc.status().message(), HasSubstr("index 5"));
    }
  }
}

TEST(UpdateCodec, NegativeSizesAreRejected) {
  const std::vector<float> x(4, 1.0f);
  for (UpdateEncoding e : kAll) {
    auto enc = EncodeUpdate(x.data(), {5, -1}, e);
    ASSERT_FALSE(enc.ok());
    EXPECT_THAT(enc.status().message(), HasSubstr("negative"));
    EXPECT_FALSE(DecodeUpdate(std::string(16, '\0'), {5, -1}, e).ok());
  }
}

TEST(UpdateCodec, EncodedUpdateBytesMatchesActual) {
  const std::vector<std::vector<int64_t>> cases = {
      {}, {0}, {1}, {3, 0, 5}, {784 * 128, 128, 128 * 10, 10}};
  for (const auto& sizes : cases) {
    int64_t n = 0;
    for (int64_t s : sizes) n += s;
    const std::vector<float> x = Uniform(n, 9, -1, 1);
    for (UpdateEncoding e : kAll) {
      auto enc = EncodeUpdate(x.data(), sizes, e);
      ASSERT_TRUE(enc.ok()) << enc.status();
      EXPECT_EQ(static_cast<int64_t>(enc->size()), EncodedUpdateBytes(e, sizes))
          << UpdateEncodingName(e) << " with " << sizes.size() << " tensors";
      auto dec = DecodeUpdate(*enc, sizes, e);
      ASSERT_TRUE(dec.ok()) << dec.status();
      EXPECT_EQ(static_cast<int64_t>(dec->size()), n);
    }
  }
  EXPECT_EQ(EncodedUpdateBytes(UpdateEncoding::kFloat32, {3, 5}), 32);
  EXPECT_EQ(EncodedUpdateBytes(UpdateEncoding::kFloat16, {3, 5}), 16);
  EXPECT_EQ(EncodedUpdateBytes(UpdateEncoding::kInt8, {3, 5}), 16);
}

}  // namespace
}  // namespace fedfwd
