#include "common/rng.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fedfwd {
namespace {

using ::testing::ElementsAre;

// The full `mlp` model (784-1024-1024-10): 1,863,690 parameters.
const std::vector<int64_t> kMlpSizes = {802816, 1024, 1048576, 1024, 10240, 10};

int64_t Total(const std::vector<int64_t>& sizes) {
  return std::accumulate(sizes.begin(), sizes.end(), int64_t{0});
}

// FNV-1a 64 over the raw bytes of a float array.
uint64_t Fnv1a64(const float* data, int64_t n) {
  const auto* bytes = reinterpret_cast<const unsigned char*>(data);
  uint64_t h = 0xcbf29ce484222325ull;
  for (int64_t i = 0; i < n * static_cast<int64_t>(sizeof(float)); ++i) {
    h ^= bytes[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

uint32_t Bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
}

TangentKey Key(TangentDistribution type, uint64_t run_seed = 1,
               int64_t round = 5, uint32_t client = 3, uint32_t index = 0) {
  TangentKey k;
  k.run_seed = run_seed;
  k.round = round;
  k.client = client;
  k.index = index;
  k.type = type;
  return k;
}

std::vector<float> Flat(const TangentKey& key,
                        const std::vector<int64_t>& sizes, int threads = 1) {
  std::vector<float> v(static_cast<size_t>(Total(sizes)));
  GenerateTangentFlat(key, sizes, v.data(), threads);
  return v;
}

std::vector<float> OneParam(const TangentKey& key, uint32_t param, int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  GenerateTangent(key, param, v.data(), n);
  return v;
}

// --- Philox known answers (Random123's kat_vectors for philox4x32_10). ---

TEST(Philox4x32, KnownAnswerZeros) {
  EXPECT_THAT(Philox4x32({0, 0, 0, 0}, {0, 0}),
              ElementsAre(0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u));
}

TEST(Philox4x32, KnownAnswerAllOnes) {
  const uint32_t f = 0xffffffffu;
  EXPECT_THAT(Philox4x32({f, f, f, f}, {f, f}),
              ElementsAre(0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu));
}

TEST(Philox4x32, KnownAnswerPiDigits) {
  EXPECT_THAT(Philox4x32({0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
                         {0xa4093822u, 0x299f31d0u}),
              ElementsAre(0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u));
}

// --- Golden tangents. ---
// These constants were computed once with this generator (x86-64, GCC,
// Release) and pin cross-machine bit-identity: the coordinator and every
// client must regenerate exactly these bits on any machine, thread count,
// compiler or library version. If one changes, the wire format of tangents
// changed: old clients and new coordinators would silently disagree.

TEST(TangentGolden, MlpNormal) {
  const std::vector<float> v =
      Flat(Key(TangentDistribution::kNormal), kMlpSizes);
  EXPECT_EQ(Fnv1a64(v.data(), Total(kMlpSizes)), 0x962332f751b4956cull);
  EXPECT_THAT(
      std::vector<uint32_t>({Bits(v[0]), Bits(v[1]), Bits(v[2]), Bits(v[3])}),
      ElementsAre(0xbf7cc359u, 0xbf0fc302u, 0xbe9c74d3u, 0xbe2beb05u));
}

TEST(TangentGolden, MlpRademacher) {
  const std::vector<float> v =
      Flat(Key(TangentDistribution::kRademacher), kMlpSizes);
  EXPECT_EQ(Fnv1a64(v.data(), Total(kMlpSizes)), 0xc852ad2b450b7e35ull);
  EXPECT_THAT(
      std::vector<uint32_t>({Bits(v[0]), Bits(v[1]), Bits(v[2]), Bits(v[3])}),
      ElementsAre(0xbf800000u, 0xbf800000u, 0x3f800000u, 0x3f800000u));
}

TEST(TangentGolden, SameBitsWithTwoThreads) {
  EXPECT_EQ(
      Fnv1a64(Flat(Key(TangentDistribution::kNormal), kMlpSizes, 2).data(),
              Total(kMlpSizes)),
      0x962332f751b4956cull);
  EXPECT_EQ(
      Fnv1a64(Flat(Key(TangentDistribution::kRademacher), kMlpSizes, 2).data(),
              Total(kMlpSizes)),
      0xc852ad2b450b7e35ull);
}

TEST(TangentGolden, SameBitsWithManyThreads) {
  // More threads than chunks of the small parameters, and an odd count.
  const std::vector<float> one =
      Flat(Key(TangentDistribution::kNormal), kMlpSizes);
  for (int threads : {3, 7, 64}) {
    const std::vector<float> many =
        Flat(Key(TangentDistribution::kNormal), kMlpSizes, threads);
    EXPECT_EQ(std::memcmp(one.data(), many.data(), one.size() * sizeof(float)),
              0)
        << threads << " threads";
  }
}

// --- Consistency between the entry points. ---

TEST(Tangent, FlatIsParametersBackToBack) {
  const std::vector<int64_t> sizes = {5, 40000, 1, 129, 8192};
  for (auto type :
       {TangentDistribution::kNormal, TangentDistribution::kRademacher}) {
    const TangentKey key = Key(type, 9, 2, 1, 4);
    const std::vector<float> flat = Flat(key, sizes);
    int64_t base = 0;
    for (size_t p = 0; p < sizes.size(); ++p) {
      const std::vector<float> one =
          OneParam(key, static_cast<uint32_t>(p), sizes[p]);
      EXPECT_EQ(std::memcmp(flat.data() + base, one.data(),
                            one.size() * sizeof(float)),
                0)
          << "param " << p;
      base += sizes[p];
    }
  }
}

TEST(Tangent, PrefixDoesNotDependOnLength) {
  // Entry i depends only on (key, param, i), not on how many are requested.
  for (auto type :
       {TangentDistribution::kNormal, TangentDistribution::kRademacher}) {
    const TangentKey key = Key(type);
    const std::vector<float> longer = OneParam(key, 2, 100003);
    for (int64_t n : {1, 3, 4, 127, 129, 8191, 8193, 65537}) {
      const std::vector<float> shorter = OneParam(key, 2, n);
      EXPECT_EQ(std::memcmp(shorter.data(), longer.data(), n * sizeof(float)),
                0)
          << "n = " << n;
    }
  }
}

TEST(Tangent, AddScaledEqualsParamsPlusAlphaTimesTangent) {
  // Each element is one float multiply and one float add (rng.cc is built
  // with -ffp-contract=off), so the result is bitwise equal to doing the
  // same two roundings here.
  const std::vector<int64_t> sizes = {1000, 17, 70000};
  const int64_t n = Total(sizes);
  std::vector<float> params(static_cast<size_t>(n));
  FillUniform(42, 0, -1.0f, 1.0f, params.data(), n);
  for (auto type :
       {TangentDistribution::kNormal, TangentDistribution::kRademacher}) {
    const TangentKey key = Key(type, 7, 11, 2, 1);
    const std::vector<float> v = Flat(key, sizes);
    for (int threads : {1, 2}) {
      const float alpha = -0.3141f;
      std::vector<float> got = params;
      AddScaledTangentFlat(key, sizes, alpha, got.data(), threads);
      int64_t mismatches = 0;
      for (int64_t i = 0; i < n; ++i) {
        const float prod = alpha * v[i];
        const float want = params[i] + prod;
        if (Bits(got[i]) != Bits(want)) ++mismatches;
      }
      EXPECT_EQ(mismatches, 0) << "threads " << threads;
    }
  }
}

// Seed-replay sync applies a round's terms chunk by chunk on both sides:
// the result must be the bits of adding them one after another, for any
// thread count, with parameter masks, restrict masks and normalization.
TEST(Tangent, ApplySeedTermsEqualsTheTermsOneAfterAnother) {
  const std::vector<int64_t> sizes = {1000, 17, 70000, 300};
  const int64_t n = Total(sizes);
  std::vector<float> start(static_cast<size_t>(n));
  FillUniform(43, 0, -1.0f, 1.0f, start.data(), n);
  std::vector<SeedTerm> terms;
  for (uint32_t k = 0; k < 7; ++k) {
    SeedTerm t;
    t.key = Key(
        k % 2 ? TangentDistribution::kNormal : TangentDistribution::kRademacher,
        9, 3, k + 1, 0);
    t.key.normalized = k == 3;
    t.key.param_mask = k == 4 ? 0x5 : 0;
    t.restrict_mask = k == 5 ? 0x4 : 0;
    t.alpha = 0.01f * static_cast<float>(k) - 0.03f;
    terms.push_back(t);
  }
  std::vector<float> want = start;
  for (const auto& t : terms) {
    AddScaledTangentFlat(t.key, sizes, t.alpha, want.data(), 1,
                         t.restrict_mask);
  }
  for (int threads : {1, 3}) {
    std::vector<float> got = start;
    ApplySeedTerms(terms, sizes, got.data(), threads);
    int64_t mismatches = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (Bits(got[i]) != Bits(want[i])) ++mismatches;
    }
    EXPECT_EQ(mismatches, 0) << "threads " << threads;
  }
  EXPECT_NE(want, start);
}

// --- Distributions. ---

TEST(Tangent, NormalMoments) {
  const std::vector<float> v =
      Flat(Key(TangentDistribution::kNormal), kMlpSizes);
  const double n = static_cast<double>(v.size());
  double sum = 0, sum2 = 0, sum4 = 0;
  int64_t within_one = 0;
  float max_abs = 0;
  for (float x : v) {
    ASSERT_TRUE(std::isfinite(x));
    sum += x;
    sum2 += static_cast<double>(x) * x;
    sum4 += static_cast<double>(x) * x * x * x;
    if (std::fabs(x) < 1.0f) ++within_one;
    max_abs = std::max(max_abs, std::fabs(x));
  }
  const double mean = sum / n;
  const double var = sum2 / n - mean * mean;
  // Standard errors for n = 1.86e6: mean 7.3e-4, variance 1.04e-3,
  // fourth moment 7.2e-3; the bounds are about 6 standard errors.
  EXPECT_NEAR(mean, 0.0, 0.0045);
  EXPECT_NEAR(var, 1.0, 0.0065);
  EXPECT_NEAR(sum4 / n, 3.0, 0.05);
  // P(|z| < 1) = 0.682689; standard error 3.4e-4.
  EXPECT_NEAR(within_one / n, 0.682689, 0.002);
  // Box-Muller from 24-bit uniforms cannot exceed sqrt(2 ln 2^24) = 5.77.
  EXPECT_LE(max_abs, 5.78f);
  EXPECT_GT(max_abs, 4.0f);
}

TEST(Tangent, RademacherIsExactlyPlusMinusOne) {
  const std::vector<float> v =
      Flat(Key(TangentDistribution::kRademacher), kMlpSizes);
  int64_t plus = 0, other = 0;
  for (float x : v) {
    if (Bits(x) == Bits(1.0f)) {
      ++plus;
    } else if (Bits(x) != Bits(-1.0f)) {
      ++other;
    }
  }
  EXPECT_EQ(other, 0);
  const double mean = (2.0 * plus - static_cast<double>(v.size())) / v.size();
  EXPECT_NEAR(mean, 0.0, 0.0045);  // about 6 standard errors
}

// --- Stream separation. ---

TEST(Tangent, EveryKeyFieldSelectsADifferentStream) {
  for (auto type :
       {TangentDistribution::kNormal, TangentDistribution::kRademacher}) {
    const int64_t n = 4096;
    const TangentKey base = Key(type);
    const std::vector<float> ref = OneParam(base, 0, n);
    std::vector<TangentKey> variants;
    for (int f = 0; f < 5; ++f) variants.push_back(base);
    variants[0].run_seed = 2;
    variants[1].run_seed = base.run_seed + (uint64_t{1} << 32);  // high word
    variants[2].round = 6;
    variants[3].client = 4;
    variants[4].index = 1;
    for (size_t k = 0; k < variants.size(); ++k) {
      const std::vector<float> other = OneParam(variants[k], 0, n);
      int64_t same = 0;
      for (int64_t i = 0; i < n; ++i) same += Bits(ref[i]) == Bits(other[i]);
      // Rademacher agrees on about half the entries by chance.
      EXPECT_LT(same, type == TangentDistribution::kNormal ? 8 : n * 3 / 5)
          << "variant " << k;
    }
    // Another parameter index.
    const std::vector<float> param1 = OneParam(base, 1, n);
    EXPECT_NE(std::memcmp(ref.data(), param1.data(), n * sizeof(float)), 0);
  }
}

TEST(Tangent, NormalAndRademacherStreamsAreIndependent) {
  // The Rademacher signs must not be the signs of the normal entries.
  const int64_t n = 1 << 16;
  const std::vector<float> z =
      OneParam(Key(TangentDistribution::kNormal), 0, n);
  const std::vector<float> r =
      OneParam(Key(TangentDistribution::kRademacher), 0, n);
  int64_t same_sign = 0;
  for (int64_t i = 0; i < n; ++i) same_sign += (z[i] < 0) == (r[i] < 0);
  EXPECT_NEAR(static_cast<double>(same_sign) / n, 0.5, 0.02);
}

TEST(Tangent, ValidTangentKeyLimits) {
  TangentKey k = Key(TangentDistribution::kNormal);
  EXPECT_TRUE(ValidTangentKey(k));

  k.round = 0;
  EXPECT_TRUE(ValidTangentKey(k));
  k.round = -1;
  EXPECT_FALSE(ValidTangentKey(k));
  k.round = (int64_t{1} << 32) - 1;
  EXPECT_TRUE(ValidTangentKey(k));
  k.round = int64_t{1} << 32;
  EXPECT_FALSE(ValidTangentKey(k));
  k.round = 5;

  k.client = 0x7fffffffu;
  EXPECT_TRUE(ValidTangentKey(k));
  k.client = 0x80000000u;  // would collide with the other RNG domains
  EXPECT_FALSE(ValidTangentKey(k));
  k.client = 3;

  k.index = kMaxTangentIndex - 1;
  EXPECT_TRUE(ValidTangentKey(k));
  k.index = kMaxTangentIndex;
  EXPECT_FALSE(ValidTangentKey(k));
  k.index = 0;

  k.type = static_cast<TangentDistribution>(0);
  EXPECT_FALSE(ValidTangentKey(k));
  k.type = static_cast<TangentDistribution>(3);
  EXPECT_FALSE(ValidTangentKey(k));
  k.type = TangentDistribution::kRademacher;
  EXPECT_TRUE(ValidTangentKey(k));

  k.run_seed = ~uint64_t{0};  // any seed is valid
  EXPECT_TRUE(ValidTangentKey(k));
}

// --- Other domains. ---

TEST(RandomPermutation, IsAPermutationAndDeterministic) {
  const int64_t n = 1000;
  const std::vector<int64_t> p =
      RandomPermutation(n, 7, RngDomain::kPartition, 0);
  ASSERT_EQ(p.size(), static_cast<size_t>(n));
  std::vector<int64_t> sorted = p;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(sorted[i], i);
  // Not the identity, and the same again for the same arguments.
  std::vector<int64_t> identity(n);
  std::iota(identity.begin(), identity.end(), 0);
  EXPECT_NE(p, identity);
  EXPECT_EQ(p, RandomPermutation(n, 7, RngDomain::kPartition, 0));
  // Seed, domain and stream each change it.
  EXPECT_NE(p, RandomPermutation(n, 8, RngDomain::kPartition, 0));
  EXPECT_NE(p, RandomPermutation(n, 7, RngDomain::kBatch, 0));
  EXPECT_NE(p, RandomPermutation(n, 7, RngDomain::kPartition, 1));
}

TEST(RandomPermutation, SmallSizes) {
  EXPECT_TRUE(RandomPermutation(0, 1, RngDomain::kBatch, 0).empty());
  EXPECT_TRUE(RandomPermutation(-3, 1, RngDomain::kBatch, 0).empty());
  EXPECT_THAT(RandomPermutation(1, 1, RngDomain::kBatch, 0), ElementsAre(0));
}

TEST(RandomPermutation, PositionsAreRoughlyUniform) {
  // Element 0 should land in each of 4 positions about equally often.
  std::array<int, 4> counts{};
  for (uint32_t stream = 0; stream < 4000; ++stream) {
    const auto p = RandomPermutation(4, 3, RngDomain::kBatch, stream);
    ++counts[std::find(p.begin(), p.end(), 0) - p.begin()];
  }
  for (int c : counts) EXPECT_NEAR(c, 1000, 150);
}

TEST(RandomBelow, StaysBelowN) {
  for (uint64_t n : {uint64_t{1}, uint64_t{2}, uint64_t{7}, uint64_t{1000},
                     (uint64_t{1} << 40) + 3, ~uint64_t{0}}) {
    for (uint64_t i = 0; i < 5000; ++i) {
      ASSERT_LT(RandomBelow(5, RngDomain::kBatch, 1, i, n), n) << "n = " << n;
    }
  }
  for (uint64_t i = 0; i < 100; ++i) {
    EXPECT_EQ(RandomBelow(5, RngDomain::kBatch, 1, i, 1), 0u);
  }
}

TEST(RandomBelow, IsRoughlyUniform) {
  std::array<int, 10> counts{};
  for (uint64_t i = 0; i < 20000; ++i) {
    ++counts[RandomBelow(11, RngDomain::kPartition, 0, i, 10)];
  }
  for (int c : counts) EXPECT_NEAR(c, 2000, 200);  // ~4.7 standard errors
}

TEST(RandomU64, DomainsAndStreamsDiffer) {
  const uint64_t a = RandomU64(1, RngDomain::kPartition, 0, 0);
  EXPECT_EQ(a, RandomU64(1, RngDomain::kPartition, 0, 0));
  EXPECT_NE(a, RandomU64(1, RngDomain::kBatch, 0, 0));
  EXPECT_NE(a, RandomU64(1, RngDomain::kInit, 0, 0));
  EXPECT_NE(a, RandomU64(1, RngDomain::kPartition, 1, 0));
  EXPECT_NE(a, RandomU64(1, RngDomain::kPartition, 0, 1));
  EXPECT_NE(a, RandomU64(2, RngDomain::kPartition, 0, 0));
  EXPECT_NE(a, RandomU64(1, RngDomain::kPartition, 0, uint64_t{1} << 32));
}

TEST(FillUniform, StaysInRangeAndIsDeterministic) {
  const int64_t n = 100000;
  std::vector<float> a(n), b(n);
  FillUniform(3, 2, -0.5f, 0.25f, a.data(), n);
  FillUniform(3, 2, -0.5f, 0.25f, b.data(), n);
  EXPECT_EQ(a, b);
  double sum = 0;
  for (float x : a) {
    ASSERT_GE(x, -0.5f);
    ASSERT_LT(x, 0.25f);
    sum += x;
  }
  EXPECT_NEAR(sum / n, -0.125, 0.003);
  FillUniform(3, 3, -0.5f, 0.25f, b.data(), n);
  EXPECT_NE(a, b);
}

}  // namespace
}  // namespace fedfwd
