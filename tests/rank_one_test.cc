// Rank-one tangents (TangentKey::rank_one): entries, factors, scale, dots,
// merges and their agreement with the dense code paths.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <vector>

#include "common/codec.h"
#include "common/model.h"
#include "common/rng.h"
#include "gtest/gtest.h"
#include "server/merge.h"

namespace fedfwd {
namespace {

// A 5 x 7 matrix, its bias, a 3 x 5 matrix (as a [3, 5, 1, 1] filter bank
// would be), its bias.
const TangentLayout kLayout({35, 5, 15, 3}, {5, 0, 3, 0});

int64_t Total(const TangentLayout& l) {
  return std::accumulate(l.sizes.begin(), l.sizes.end(), int64_t{0});
}

TangentKey RankOne(TangentDistribution type, uint32_t index = 0,
                   bool normalized = false, uint64_t mask = 0) {
  TangentKey k;
  k.run_seed = 11;
  k.round = 4;
  k.client = 2;
  k.index = index;
  k.type = type;
  k.rank_one = true;
  k.normalized = normalized;
  k.param_mask = mask;
  return k;
}

std::vector<float> Flat(const TangentKey& key, const TangentLayout& layout) {
  std::vector<float> v(static_cast<size_t>(Total(layout)));
  GenerateTangentFlat(key, layout, v.data());
  return v;
}

uint32_t Bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
}

TEST(RankOneTangent, MatricesAreOuterProductsOfTheirFactors) {
  for (auto type :
       {TangentDistribution::kNormal, TangentDistribution::kRademacher}) {
    const TangentKey key = RankOne(type);
    const std::vector<float> v = Flat(key, kLayout);
    std::vector<float> u(5), a(7);
    RankOneFactors(key, 0, 5, 7, u.data(), a.data());
    for (int i = 0; i < 5; ++i) {
      for (int j = 0; j < 7; ++j) {
        ASSERT_EQ(Bits(v[i * 7 + j]), Bits(u[i] * a[j])) << i << "," << j;
      }
    }
    std::vector<float> u2(3), a2(5);
    RankOneFactors(key, 2, 3, 5, u2.data(), a2.data());
    for (int i = 0; i < 3; ++i) {
      for (int j = 0; j < 5; ++j) {
        ASSERT_EQ(Bits(v[40 + i * 5 + j]), Bits(u2[i] * a2[j]));
      }
    }
    if (type == TangentDistribution::kRademacher) {
      for (float x : v) ASSERT_TRUE(x == 1.0f || x == -1.0f) << x;
    }
  }
}

TEST(RankOneTangent, IsNotTheDenseTangentAndBiasesStayDense) {
  TangentKey key = RankOne(TangentDistribution::kNormal);
  const std::vector<float> r1 = Flat(key, kLayout);
  key.rank_one = false;
  const std::vector<float> dense = Flat(key, kLayout);
  EXPECT_NE(r1, dense);
  // A bias is a dense vector of its own stream: its entries are not a
  // product structure; check they are distinct normal draws.
  EXPECT_NE(r1[35], r1[36]);
  EXPECT_NE(Bits(r1[35]), Bits(dense[35]));
}

TEST(RankOneTangent, PerTensorAndSliceAgreeWithTheFlatTangent) {
  const TangentKey key = RankOne(TangentDistribution::kNormal, 3);
  const std::vector<float> v = Flat(key, kLayout);
  std::vector<float> p0(35);
  GenerateTangent(key, 0, p0.data(), 35, 5);
  EXPECT_EQ(0, std::memcmp(p0.data(), v.data(), sizeof(float) * 35));
  std::vector<float> bias(5);
  GenerateTangent(key, 1, bias.data(), 5);
  EXPECT_EQ(0, std::memcmp(bias.data(), v.data() + 35, sizeof(float) * 5));
  std::vector<float> slice(9);
  GenerateTangentSlice(key, 0, 13, slice.data(), 9, 5, 7);
  EXPECT_EQ(0, std::memcmp(slice.data(), v.data() + 13, sizeof(float) * 9));
}

TEST(RankOneTangent, NormalizedHasNormSqrtOfItsEntries) {
  const TangentKey key =
      RankOne(TangentDistribution::kNormal, 1, /*normalized=*/true);
  const std::vector<float> v = Flat(key, kLayout);
  double sq = 0;
  for (float x : v) sq += static_cast<double>(x) * x;
  EXPECT_NEAR(sq, 58.0, 1e-3);
  // Masked to the second matrix and its bias: m = 18.
  const TangentKey masked =
      RankOne(TangentDistribution::kNormal, 1, true, 0b1100);
  const std::vector<float> w = Flat(masked, kLayout);
  sq = 0;
  for (size_t i = 0; i < 40; ++i) EXPECT_EQ(w[i], 0.0f);
  for (float x : w) sq += static_cast<double>(x) * x;
  EXPECT_NEAR(sq, 18.0, 1e-4);
}

TEST(RankOneTangent, DotsEqualTheDotWithTheMaterializedTangent) {
  std::vector<float> g(static_cast<size_t>(Total(kLayout)));
  for (size_t i = 0; i < g.size(); ++i) {
    g[i] = std::sin(0.37f * static_cast<float>(i)) + 0.1f;
  }
  std::vector<TangentKey> keys = {
      RankOne(TangentDistribution::kNormal, 0),
      RankOne(TangentDistribution::kRademacher, 1),
      RankOne(TangentDistribution::kNormal, 2, /*normalized=*/true),
      RankOne(TangentDistribution::kNormal, 3, false, 0b0101)};
  TangentKey dense = keys[0];
  dense.rank_one = false;
  keys.push_back(dense);
  const std::vector<double> d = TangentDots(keys, kLayout, g.data(), 2);
  ASSERT_EQ(d.size(), keys.size());
  for (size_t k = 0; k < keys.size(); ++k) {
    const std::vector<float> v = Flat(keys[k], kLayout);
    double ref = 0;
    for (size_t i = 0; i < v.size(); ++i)
      ref += static_cast<double>(g[i]) * v[i];
    EXPECT_NEAR(d[k], ref, 1e-4 * (1 + std::abs(ref))) << k;
  }
  EXPECT_EQ(d, TangentDots(keys, kLayout, g.data(), 1));
}

TEST(RankOneTangent,
     SeedTermsAddTheScaledTangentInOneOrderAsOneTermAfterAnother) {
  std::vector<SeedTerm> terms;
  for (uint32_t k = 0; k < 19; ++k) {  // runs of 8, 4 and 1 terms
    terms.push_back({RankOne(k % 2 ? TangentDistribution::kRademacher
                                   : TangentDistribution::kNormal,
                             k, /*normalized=*/k == 2),
                     0.01f * static_cast<float>(k + 1),
                     k == 4 ? uint64_t{0b0011} : uint64_t{0}});
    if (k == 15) terms.back().key.rank_one = false;  // a dense term between
  }
  std::vector<float> start(static_cast<size_t>(Total(kLayout)));
  for (size_t i = 0; i < start.size(); ++i) start[i] = 0.001f * i;
  std::vector<float> batch = start, one_by_one = start, dense_sum = start;
  ApplySeedTerms(terms, kLayout, batch.data(), 2);
  for (const SeedTerm& t : terms) {
    AddScaledTangentFlat(t.key, kLayout, t.alpha, one_by_one.data(), 1,
                         t.restrict_mask);
  }
  EXPECT_EQ(0, std::memcmp(batch.data(), one_by_one.data(),
                           sizeof(float) * batch.size()));
  // And it is the materialized sum to float rounding.
  for (const SeedTerm& t : terms) {
    const std::vector<float> v = Flat(t.key, kLayout);
    int64_t base = 0;
    for (size_t p = 0; p < kLayout.sizes.size(); ++p) {
      const bool on =
          t.restrict_mask == 0 || ((t.restrict_mask >> p) & 1u) != 0;
      for (int64_t i = 0; i < kLayout.sizes[p] && on; ++i) {
        dense_sum[base + i] += t.alpha * v[base + i];
      }
      base += kLayout.sizes[p];
    }
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    EXPECT_NEAR(batch[i], dense_sum[i], 1e-5) << i;
  }
}

// E[v v^T] = I makes (g . v) v an unbiased estimate of g: the mean over
// many rank-one tangents approaches g (a fixed seed; the bound is several
// standard errors wide).
TEST(RankOneTangent, ForwardGradientIsUnbiased) {
  const TangentLayout layout({12, 3}, {3, 0});
  std::vector<float> g = {0.5f,   -1.0f, 0.25f, 2.0f,  0.0f, -0.5f, 1.0f, 0.75f,
                          -0.25f, 0.1f,  1.5f,  -2.0f, 0.3f, -0.7f, 0.9f};
  const int n = 20000;
  std::vector<double> mean(g.size(), 0.0);
  for (uint32_t k = 0; k < n; ++k) {
    TangentKey key = RankOne(TangentDistribution::kNormal, k % 60000);
    key.round = static_cast<int64_t>(k / 60000) + 1;
    const std::vector<float> v = Flat(key, layout);
    const double d = TangentDots({key}, layout, g.data())[0];
    for (size_t i = 0; i < g.size(); ++i) mean[i] += d * v[i] / n;
  }
  double err = 0, norm = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    err += (mean[i] - g[i]) * (mean[i] - g[i]);
    norm += static_cast<double>(g[i]) * g[i];
  }
  // Relative error of the mean ~ sqrt(n_entries * kurtosis / n) ~ 0.08.
  EXPECT_LT(std::sqrt(err / norm), 0.2);
}

TEST(RankOneTangent, ModelLayoutFactorsWeightsNotBiases) {
  auto spec = GetModelSpec("mlp", {1, 28, 28});
  ASSERT_TRUE(spec.ok()) << spec.status();
  const TangentLayout layout = spec->Layout();
  ASSERT_EQ(layout.sizes, spec->ParamSizes());
  TangentKey key = RankOne(TangentDistribution::kNormal);
  EXPECT_EQ(layout.FactorRows(key, 0), 1024);  // fc1.weight [1024, 784]
  EXPECT_EQ(layout.FactorRows(key, 1), 0);     // fc1.bias
  key.rank_one = false;
  EXPECT_EQ(layout.FactorRows(key, 0), 0);
}

TEST(RankOneTangentDeathTest, NeedsTheLayoutsRows) {
  const TangentLayout no_rows(std::vector<int64_t>{35, 5});
  const TangentKey key = RankOne(TangentDistribution::kNormal);
  std::vector<float> v(40);
  EXPECT_DEATH(GenerateTangentFlat(key, no_rows, v.data()), "rank-one");
}

TEST(RankOneTangent, KeyTravelsInTheProto) {
  const TangentKey key = RankOne(TangentDistribution::kRademacher, 9, true);
  auto back = FromProto(ToProto(key));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(back->rank_one);
  EXPECT_EQ(*back, key);
  TangentKey dense = key;
  dense.rank_one = false;
  EXPECT_NE(*back, dense);
}

// The projection recovers g exactly when rank-one tangents span it.
TEST(RankOneTangent, ProjectionRecoversAGradientInTheirSpan) {
  const TangentLayout layout({6, 2}, {2, 0});
  std::vector<TangentKey> keys;
  for (uint32_t k = 0; k < 3; ++k) {
    keys.push_back(RankOne(TangentDistribution::kNormal, k));
  }
  // g = 0.5 v0 - 2 v1 + v2.
  std::vector<float> g(8, 0.0f);
  const double c[3] = {0.5, -2.0, 1.0};
  for (int k = 0; k < 3; ++k) {
    const std::vector<float> v = Flat(keys[k], layout);
    for (size_t i = 0; i < g.size(); ++i)
      g[i] += static_cast<float>(c[k]) * v[i];
  }
  const std::vector<double> d = TangentDots(keys, layout, g.data());
  auto coef = ProjectionCoefficients(keys, d, layout);
  ASSERT_TRUE(coef.ok()) << coef.status();
  const double scale = 8.0 / 3.0;  // m / K
  for (int k = 0; k < 3; ++k) EXPECT_NEAR((*coef)[k] / scale, c[k], 1e-4);
}

}  // namespace
}  // namespace fedfwd
