#include "common/rng.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace fedfwd {
namespace {

constexpr uint32_t kM0 = 0xD2511F53u;
constexpr uint32_t kM1 = 0xCD9E8D57u;
constexpr uint32_t kW0 = 0x9E3779B9u;
constexpr uint32_t kW1 = 0xBB67AE85u;
// Bit 31 of counter word 3 separates tangent streams (client < 2^31) from
// the other domains.
constexpr uint32_t kDomainBit = 0x80000000u;

inline void PhiloxRound(uint32_t& c0, uint32_t& c1, uint32_t& c2, uint32_t& c3,
                        uint32_t k0, uint32_t k1) {
  const uint64_t p0 = static_cast<uint64_t>(kM0) * c0;
  const uint64_t p1 = static_cast<uint64_t>(kM1) * c2;
  const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
  const uint32_t n1 = static_cast<uint32_t>(p1);
  const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
  const uint32_t n3 = static_cast<uint32_t>(p0);
  c0 = n0;
  c1 = n1;
  c2 = n2;
  c3 = n3;
}

inline void Philox10(uint32_t& c0, uint32_t& c1, uint32_t& c2, uint32_t& c3,
                     uint32_t k0, uint32_t k1) {
  for (int r = 0; r < 10; ++r) {
    PhiloxRound(c0, c1, c2, c3, k0, k1);
    k0 += kW0;
    k1 += kW1;
  }
}

inline float BitsToFloat(uint32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}
inline uint32_t FloatToBits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
}

// Natural log for x in (0, 1], from IEEE add/mul/div only (no libm), so the
// result is the same on every platform. Relative error ~1e-7.
inline float DetLog(float x) {
  const uint32_t bits = FloatToBits(x);
  // x = m * 2^e with m in [sqrt(1/2), sqrt(2)); branch-free so it vectorizes.
  const uint32_t mant = bits & 0x007fffffu;
  const uint32_t big = mant > 0x003504f3u ? 1u : 0u;  // m >= sqrt(2)
  const int32_t e = static_cast<int32_t>((bits >> 23) & 0xffu) - 127 +
                    static_cast<int32_t>(big);
  const float m = BitsToFloat((mant | 0x3f800000u) - (big << 23));
  const float s = (m - 1.0f) / (m + 1.0f);
  const float s2 = s * s;
  const float poly =
      1.0f + s2 * (0.333333333f +
                   s2 * (0.2f + s2 * (0.142857143f + s2 * 0.111111111f)));
  const float fe = static_cast<float>(e);
  return fe * 0.693145752f + (fe * 1.42860677e-06f + 2.0f * s * poly);
}

// sin and cos of 2*pi*u for u in [0, 1), polynomials on a quarter turn.
inline void DetSinCos2Pi(float u, float* s_out, float* c_out) {
  const float a = u * 4.0f;
  const int32_t q = static_cast<int32_t>(a);  // 0..3
  const float f = a - static_cast<float>(q);  // [0, 1)
  const float p = f * 1.57079637f;            // [0, pi/2)
  const float p2 = p * p;
  const float s =
      p * (1.0f + p2 * (-1.66666672e-01f +
                        p2 * (8.33333377e-03f +
                              p2 * (-1.98412701e-04f +
                                    p2 * (2.75573188e-06f +
                                          p2 * (-2.50521083e-08f +
                                                p2 * 1.60590438e-10f))))));
  const float c =
      1.0f +
      p2 * (-0.5f + p2 * (4.16666679e-02f +
                          p2 * (-1.38888892e-03f +
                                p2 * (2.48015876e-05f +
                                      p2 * (-2.75573188e-07f +
                                            p2 * (2.08767570e-09f +
                                                  p2 * -1.14707456e-11f))))));
  // Quadrant q: odd q swaps sin and cos; sin < 0 for q = 2, 3 and
  // cos < 0 for q = 1, 2. Done with bit operations so it vectorizes.
  const uint32_t uq = static_cast<uint32_t>(q);
  const uint32_t swap = 0u - (uq & 1u);
  const uint32_t sb = FloatToBits(s), cb = FloatToBits(c);
  const uint32_t sv = (cb & swap) | (sb & ~swap);
  const uint32_t cv = (sb & swap) | (cb & ~swap);
  *s_out = BitsToFloat(sv ^ ((uq >> 1) << 31));
  *c_out = BitsToFloat(cv ^ (((uq ^ (uq >> 1)) & 1u) << 31));
}

inline void BoxMuller(uint32_t a, uint32_t b, float* z0, float* z1) {
  const float u1 =
      static_cast<float>(static_cast<int32_t>((a >> 8) + 1u)) * 5.96046448e-08f;
  const float u2 =
      static_cast<float>(static_cast<int32_t>(b >> 8)) * 5.96046448e-08f;
  const float r = __builtin_sqrtf(-2.0f * DetLog(u1));
  float s, c;
  DetSinCos2Pi(u2, &s, &c);
  *z0 = r * c;
  *z1 = r * s;
}

struct TangentCounter {
  uint32_t c1, c2, c3, k0, k1;
};

TangentCounter MakeCounter(const TangentKey& key, uint32_t param_index) {
  TangentCounter t;
  // Rank-one keys set bit 30 (types are 1 and 2): streams of their own.
  // Shared-u keys set bit 31 as well: streams of their own again.
  const uint32_t code = static_cast<uint32_t>(key.type) |
                        (key.rank_one ? 4u : 0u) | (key.shared_u ? 8u : 0u);
  t.c1 = (code << 28) | ((param_index & 0xfffu) << 16) | (key.index & 0xffffu);
  t.c2 = static_cast<uint32_t>(key.round);
  t.c3 = key.client & ~kDomainBit;
  t.k0 = static_cast<uint32_t>(key.run_seed);
  t.k1 = static_cast<uint32_t>(key.run_seed >> 32);
  return t;
}

constexpr int kBatchBlocks = 64;

// Philox over a batch of consecutive block counters b0..b0+nb-1, written
// round by round across the batch so the compiler vectorizes it (SSE2
// pmuludq); each lane computes exactly Philox10.
inline void PhiloxBatch(const TangentCounter& t, uint32_t b0, int nb,
                        uint32_t* w0, uint32_t* w1, uint32_t* w2,
                        uint32_t* w3) {
  // Only the lanes asked for, rounded up to 8 so the loops still vectorize:
  // a 784-entry row needs 7 blocks, not 64 (lanes are independent, so the
  // bits of the lanes computed do not change).
  const int lanes = std::min(kBatchBlocks, (nb + 7) / 8 * 8);
  for (int i = 0; i < lanes; ++i) {
    w0[i] = b0 + static_cast<uint32_t>(i);
    w1[i] = t.c1;
    w2[i] = t.c2;
    w3[i] = t.c3;
  }
  uint32_t k0 = t.k0, k1 = t.k1;
  for (int r = 0; r < 10; ++r) {
    for (int i = 0; i < lanes; ++i) {
      const uint64_t p0 = static_cast<uint64_t>(kM0) * w0[i];
      const uint64_t p1 = static_cast<uint64_t>(kM1) * w2[i];
      const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ w1[i] ^ k0;
      const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ w3[i] ^ k1;
      w1[i] = static_cast<uint32_t>(p1);
      w3[i] = static_cast<uint32_t>(p0);
      w0[i] = n0;
      w2[i] = n2;
    }
    k0 += kW0;
    k1 += kW1;
  }
}

// Normal entries [4*b0, 4*(b0+nb)) of one parameter's tangent into out.
void NormalBlocks(const TangentCounter& t, uint32_t b0, int nb, float* out) {
  alignas(64) uint32_t w0[kBatchBlocks], w1[kBatchBlocks], w2[kBatchBlocks],
      w3[kBatchBlocks];
  PhiloxBatch(t, b0, nb, w0, w1, w2, w3);
  alignas(64) float z[4][kBatchBlocks];
  for (int i = 0; i < nb; ++i) {
    BoxMuller(w0[i], w1[i], &z[0][i], &z[1][i]);
    BoxMuller(w2[i], w3[i], &z[2][i], &z[3][i]);
  }
  for (int i = 0; i < nb; ++i) {
    out[4 * i] = z[0][i];
    out[4 * i + 1] = z[1][i];
    out[4 * i + 2] = z[2][i];
    out[4 * i + 3] = z[3][i];
  }
}

// kSignBits[b][j] = bit j of byte b moved to a float's sign bit: eight
// entries at a time from one table row, so the sign flips below vectorize
// on baseline x86-64 (no per-lane variable shifts there).
struct SignTable {
  alignas(32) uint32_t bits[256][8];
  SignTable() {
    for (int b = 0; b < 256; ++b) {
      for (int j = 0; j < 8; ++j) {
        bits[b][j] = static_cast<uint32_t>((b >> j) & 1) << 31;
      }
    }
  }
};
const SignTable& SignBits() {
  static const SignTable* table = new SignTable;
  return *table;
}

// o[0..8) = base with its sign flipped where the byte's bits are set.
// GCC left the plain loops scalar (one addss per entry in the merge), so
// x86-64 gets them in SSE2, which every x86-64 has: the same xor and the
// same IEEE single-precision add per entry, so the same bits.
inline void SignEight(const uint32_t* mask, uint32_t base, float* o) {
#if defined(__SSE2__)
  const __m128i b = _mm_set1_epi32(static_cast<int>(base));
  const __m128i* m = reinterpret_cast<const __m128i*>(mask);
  _mm_storeu_ps(o, _mm_castsi128_ps(_mm_xor_si128(b, _mm_loadu_si128(m))));
  _mm_storeu_ps(o + 4,
                _mm_castsi128_ps(_mm_xor_si128(b, _mm_loadu_si128(m + 1))));
#else
  for (int l = 0; l < 8; ++l) o[l] = BitsToFloat(base ^ mask[l]);
#endif
}
// o[0..8) += base with its sign flipped where the byte's bits are set.
inline void AddSignEight(const uint32_t* mask, uint32_t base, float* o) {
#if defined(__SSE2__)
  const __m128i b = _mm_set1_epi32(static_cast<int>(base));
  const __m128i* m = reinterpret_cast<const __m128i*>(mask);
  const __m128 lo = _mm_castsi128_ps(_mm_xor_si128(b, _mm_loadu_si128(m)));
  const __m128 hi = _mm_castsi128_ps(_mm_xor_si128(b, _mm_loadu_si128(m + 1)));
  _mm_storeu_ps(o, _mm_add_ps(_mm_loadu_ps(o), lo));
  _mm_storeu_ps(o + 4, _mm_add_ps(_mm_loadu_ps(o + 4), hi));
#else
  for (int l = 0; l < 8; ++l) o[l] += BitsToFloat(base ^ mask[l]);
#endif
}

// Rademacher entries [128*b0, 128*(b0+nb)) into out: entry 32k + j of a
// block is -1 where bit j of the block's word k is set, else +1.
void RademacherBlocks(const TangentCounter& t, uint32_t b0, int nb,
                      float* out) {
  alignas(64) uint32_t w[4][kBatchBlocks];
  PhiloxBatch(t, b0, nb, w[0], w[1], w[2], w[3]);
  const SignTable& table = SignBits();
  for (int i = 0; i < nb; ++i) {
    float* o = out + 128 * i;
    for (int k = 0; k < 4; ++k) {
      const uint32_t bits = w[k][i];
      for (int q = 0; q < 4; ++q) {
        SignEight(table.bits[(bits >> (8 * q)) & 0xffu], 0x3f800000u,
                  o + 32 * k + 8 * q);
      }
    }
  }
}

// d[0..len) += a * (Rademacher entries [off, off + len)) without a buffer:
// a times +-1 is +-a exactly, so flipping a's sign bit gives the same bits
// as the multiply. off is a multiple of 128.
void RademacherAddChunk(const TangentCounter& t, int64_t off, int64_t len,
                        float a, float* d) {
  const uint32_t abits = FloatToBits(a);
  const int64_t full = len / 128;
  const uint32_t b0 = static_cast<uint32_t>(off / 128);
  alignas(64) uint32_t w[4][kBatchBlocks];
  for (int64_t b = 0; b < full; b += kBatchBlocks) {
    const int nb = static_cast<int>(std::min<int64_t>(kBatchBlocks, full - b));
    PhiloxBatch(t, b0 + static_cast<uint32_t>(b), nb, w[0], w[1], w[2], w[3]);
    const SignTable& table = SignBits();
    for (int i = 0; i < nb; ++i) {
      float* o = d + 128 * (b + i);
      for (int k = 0; k < 4; ++k) {
        const uint32_t bits = w[k][i];
        for (int q = 0; q < 4; ++q) {
          AddSignEight(table.bits[(bits >> (8 * q)) & 0xffu], abits,
                       o + 32 * k + 8 * q);
        }
      }
    }
  }
  const int64_t rest = len - full * 128;
  if (rest > 0) {
    alignas(64) float tail[128];
    RademacherBlocks(t, b0 + static_cast<uint32_t>(full), 1, tail);
    float* o = d + full * 128;
    for (int64_t j = 0; j < rest; ++j) o[j] += a * tail[j];
  }
}

// Fills buf[0..len) with entries [off, off + len) of one parameter's
// tangent; off is a multiple of kChunk.
constexpr int64_t kChunk = 4 * kBatchBlocks * 32;  // multiple of 4 and 128
void FillChunk(const TangentCounter& t, TangentDistribution type, int64_t off,
               int64_t len, float* buf) {
  const int per_block = type == TangentDistribution::kRademacher ? 128 : 4;
  const int64_t blocks = (len + per_block - 1) / per_block;
  const uint32_t b0 = static_cast<uint32_t>(off / per_block);
  for (int64_t b = 0; b < blocks; b += kBatchBlocks) {
    const int nb =
        static_cast<int>(std::min<int64_t>(kBatchBlocks, blocks - b));
    float* dst = buf + b * per_block;
    if (per_block == 4) {
      NormalBlocks(t, b0 + static_cast<uint32_t>(b), nb, dst);
    } else {
      RademacherBlocks(t, b0 + static_cast<uint32_t>(b), nb, dst);
    }
  }
}

// One chunk of work: entries [off, off + len) of parameter `param`, which
// starts at `base` in the flat vector.
struct ChunkItem {
  uint32_t param;
  int64_t base, off, len;
};

std::vector<ChunkItem> ChunkItems(const std::vector<int64_t>& sizes) {
  std::vector<ChunkItem> items;
  int64_t base = 0;
  for (size_t p = 0; p < sizes.size(); ++p) {
    for (int64_t off = 0; off < sizes[p]; off += kChunk) {
      items.push_back({static_cast<uint32_t>(p), base, off,
                       std::min<int64_t>(kChunk, sizes[p] - off)});
    }
    base += sizes[p];
  }
  return items;
}

// Runs work(begin, end) over [0, n) split into `threads` contiguous
// ranges (one on the calling thread).
template <typename Work>
void RunInRanges(size_t n, int threads, Work&& work) {
  const size_t t = static_cast<size_t>(std::max(1, threads));
  if (t == 1 || n < 2 * t) {
    work(size_t{0}, n);
    return;
  }
  std::vector<std::thread> pool;
  for (size_t k = 1; k < t; ++k) {
    pool.emplace_back(work, n * k / t, n * (k + 1) / t);
  }
  work(size_t{0}, n / t);
  for (auto& th : pool) th.join();
}

// Entries [0, n) of one stream (any n), in kChunk pieces.
void FillStream(const TangentCounter& t, TangentDistribution type, float* out,
                int64_t n) {
  alignas(64) float buf[kChunk];
  for (int64_t off = 0; off < n; off += kChunk) {
    const int64_t len = std::min<int64_t>(kChunk, n - off);
    FillChunk(t, type, off, len, buf);
    std::memcpy(out + off, buf, sizeof(float) * len);
  }
}

[[noreturn]] void LayoutMissingRows() {
  std::fprintf(stderr,
               "fedfwd: internal error: a rank-one tangent key was used with "
               "a layout that has no matrix rows (TangentLayout::rows)\n");
  std::abort();
}

void CheckLayout(const TangentKey& key, const TangentLayout& layout) {
  if (key.rank_one && layout.rows.size() != layout.sizes.size()) {
    LayoutMissingRows();
  }
}

// The shared row factor u of a shared_u key's tensor p (rows entries).
void SharedU(const TangentKey& key, uint32_t p, int64_t rows, float* u) {
  TangentKey s = key;
  s.index = kSharedUIndex - SharedUGroup(key);
  FillStream(MakeCounter(s, p), key.type, u, rows);
}

// Entries [off, off + len) of the raw tangent of a tensor the key does not
// factor: the key's own stream, or, for a shared_u key's bias, u * beta.
void FillDense(const TangentKey& key, const TangentLayout& layout, uint32_t p,
               int64_t off, int64_t len, float* buf) {
  const int64_t m = key.shared_u ? layout.SharedBiasOf(key, p) : -1;
  if (m < 0) {
    FillChunk(MakeCounter(key, p), key.type, off, len, buf);
    return;
  }
  std::vector<float> u(static_cast<size_t>(layout.sizes[p]));
  SharedU(key, static_cast<uint32_t>(m), layout.sizes[p], u.data());
  const float beta = SharedBiasBeta(key, p);
  for (int64_t j = 0; j < len; ++j) {
    buf[j] = u[static_cast<size_t>(off + j)] * beta;
  }
}

bool Applies(const TangentKey& key, uint64_t restrict_mask, uint32_t p) {
  return Perturbs(key, p) &&
         (restrict_mask == 0 || (p < 64 && ((restrict_mask >> p) & 1u)));
}

// A rank-one tensor's factors, u scaled by `factor` (so entry (i, j) of
// factor * V is added as (factor * u_i) * a_j, the canonical rounding).
struct Factors {
  std::vector<float> u, a;
};
Factors MakeFactors(const TangentKey& key, uint32_t p, int64_t rows,
                    int64_t cols, float factor) {
  Factors f;
  f.u.resize(static_cast<size_t>(rows));
  f.a.resize(static_cast<size_t>(cols));
  RankOneFactors(key, p, rows, cols, f.u.data(), f.a.data());
  if (factor != 1.0f) {
    for (float& x : f.u) x *= factor;
  }
  return f;
}

// d[0..len) += entries [off, off + len) of sum_g (u_g a_g^T) for a run of
// rank-one terms, each entry getting the terms' products one after another
// in the run's order (exactly the additions of one term after another:
// entry (i, j) += (factor u_i) * a_j), but with the entry kept in a register
// across up to 8 terms.
template <int G>
void AddRankOneGroupRow(const float* const* a, const float* s, int64_t j0,
                        int64_t j1, float* __restrict o) {
  for (int64_t j = j0; j < j1; ++j) {
    float acc = o[j];
    for (int g = 0; g < G; ++g) acc += s[g] * a[g][j];
    o[j] = acc;
  }
}

void AddRankOneRun(const std::vector<const Factors*>& run, int64_t cols,
                   int64_t off, int64_t len, float* d) {
  const size_t n = run.size();
  std::vector<const float*> a(n);
  std::vector<float> s(n);
  for (size_t g = 0; g < n; ++g) a[g] = run[g]->a.data();
  int64_t x = off;
  const int64_t end = off + len;
  while (x < end) {
    const int64_t i = x / cols;
    const int64_t j0 = x - i * cols;
    const int64_t j1 = std::min<int64_t>(cols, j0 + (end - x));
    for (size_t g = 0; g < n; ++g) s[g] = run[g]->u[static_cast<size_t>(i)];
    float* o = d + (x - off) - j0;
    size_t g = 0;
    for (; g + 8 <= n; g += 8) {
      AddRankOneGroupRow<8>(a.data() + g, s.data() + g, j0, j1, o);
    }
    for (; g + 4 <= n; g += 4) {
      AddRankOneGroupRow<4>(a.data() + g, s.data() + g, j0, j1, o);
    }
    for (; g < n; ++g) {
      AddRankOneGroupRow<1>(a.data() + g, s.data() + g, j0, j1, o);
    }
    x += j1 - j0;
  }
}

// Fills buf with entries [it.off, it.off + it.len) of the raw tangent of
// it.param, caching a rank-one tensor's factors across its chunks.
class ChunkFiller {
 public:
  ChunkFiller(const TangentKey& key, const TangentLayout& layout)
      : key_(key), layout_(layout) {}
  void Fill(const ChunkItem& it, float* buf) {
    const int64_t rows = layout_.FactorRows(key_, it.param);
    if (rows == 0) {
      FillDense(key_, layout_, it.param, it.off, it.len, buf);
      return;
    }
    const int64_t cols = layout_.sizes[it.param] / rows;
    if (cached_ != static_cast<int64_t>(it.param)) {
      f_ = MakeFactors(key_, it.param, rows, cols, 1.0f);
      cached_ = it.param;
    }
    for (int64_t x = it.off; x < it.off + it.len; ++x) {
      const int64_t i = x / cols;
      buf[x - it.off] = f_.u[static_cast<size_t>(i)] *
                        f_.a[static_cast<size_t>(x - i * cols)];
    }
  }

 private:
  const TangentKey& key_;
  const TangentLayout& layout_;
  int64_t cached_ = -1;
  Factors f_;
};

// Calls fn(i, item, chunk) for every chunk i of the raw tangent over the
// parameters the key perturbs, split into `threads` contiguous ranges. Each
// chunk's values depend only on (key, param, offset), so the result is the same
// for any thread count.
template <typename Fn>
void ForEachChunkFlat(const TangentKey& key, const TangentLayout& layout,
                      int threads, Fn&& fn, uint64_t restrict_mask = 0) {
  CheckLayout(key, layout);
  std::vector<ChunkItem> items = ChunkItems(layout.sizes);
  items.erase(std::remove_if(items.begin(), items.end(),
                             [&key, restrict_mask](const ChunkItem& it) {
                               return !Applies(key, restrict_mask, it.param);
                             }),
              items.end());
  auto work = [&](size_t begin, size_t end) {
    alignas(64) float buf[kChunk];
    ChunkFiller filler(key, layout);
    for (size_t i = begin; i < end; ++i) {
      filler.Fill(items[i], buf);
      fn(i, items[i], buf);
    }
  };
  RunInRanges(items.size(), threads, work);
}

// out[q] = row . a[q][0..cols) for G vectors, the row read once: eight
// float lanes per vector, then the lanes and the tail in double.
template <int G>
void RowDotsT(const float* row, const float* const* a, int64_t cols,
              double* out) {
  float lane[G][8] = {};
  int64_t j = 0;
  for (; j + 8 <= cols; j += 8) {
    for (int q = 0; q < G; ++q) {
      for (int l = 0; l < 8; ++l) lane[q][l] += row[j + l] * a[q][j + l];
    }
  }
  for (int q = 0; q < G; ++q) {
    double s = 0;
    for (int l = 0; l < 8; ++l) s += lane[q][l];
    for (int64_t t = j; t < cols; ++t)
      s += static_cast<double>(row[t]) * a[q][t];
    out[q] = s;
  }
}

void RowDots(const float* row, const float* const* a, int n, int64_t cols,
             double* out) {
  int q = 0;
  for (; q + 4 <= n; q += 4) RowDotsT<4>(row, a + q, cols, out + q);
  for (; q < n; ++q) RowDotsT<1>(row, a + q, cols, out + q);
}

// Eight float lanes over blocks of 4096, blocks summed in double.
double DotBlocks(const float* a, const float* b, int64_t n) {
  constexpr int64_t kBlock = 4096;
  double total = 0;
  for (int64_t off = 0; off < n; off += kBlock) {
    const int64_t end = std::min(n, off + kBlock);
    float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = off;
    for (; i + 8 <= end; i += 8) {
      for (int l = 0; l < 8; ++l) lane[l] += a[i + l] * b[i + l];
    }
    double block = 0;
    for (; i < end; ++i) block += static_cast<double>(a[i]) * b[i];
    for (float l : lane) block += l;
    total += block;
  }
  return total;
}

}  // namespace

std::array<uint32_t, 4> Philox4x32(std::array<uint32_t, 4> counter,
                                   std::array<uint32_t, 2> key) {
  Philox10(counter[0], counter[1], counter[2], counter[3], key[0], key[1]);
  return counter;
}

uint64_t RandomU64(uint64_t seed, RngDomain domain, uint32_t stream,
                   uint64_t i) {
  uint32_t c0 = static_cast<uint32_t>(i), c1 = static_cast<uint32_t>(i >> 32),
           c2 = stream, c3 = kDomainBit | static_cast<uint32_t>(domain);
  Philox10(c0, c1, c2, c3, static_cast<uint32_t>(seed),
           static_cast<uint32_t>(seed >> 32));
  return (static_cast<uint64_t>(c1) << 32) | c0;
}

uint64_t RandomBelow(uint64_t seed, RngDomain domain, uint32_t stream,
                     uint64_t i, uint64_t n) {
  const unsigned __int128 p =
      static_cast<unsigned __int128>(RandomU64(seed, domain, stream, i)) * n;
  return static_cast<uint64_t>(p >> 64);
}

std::vector<int64_t> RandomPermutation(int64_t n, uint64_t seed,
                                       RngDomain domain, uint32_t stream) {
  std::vector<int64_t> perm(static_cast<size_t>(std::max<int64_t>(n, 0)));
  for (int64_t i = 0; i < n; ++i) perm[i] = i;
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = static_cast<int64_t>(
        RandomBelow(seed, domain, stream, static_cast<uint64_t>(i),
                    static_cast<uint64_t>(i + 1)));
    std::swap(perm[i], perm[j]);
  }
  return perm;
}

void FillUniform(uint64_t seed, uint32_t stream, float lo, float hi, float* out,
                 int64_t n) {
  const float scale = (hi - lo) * 5.96046448e-08f;
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t r =
        RandomU64(seed, RngDomain::kInit, stream, static_cast<uint64_t>(i));
    out[i] = lo + static_cast<float>(r >> 40) * scale;
  }
}

bool ValidTangentKey(const TangentKey& key) {
  if (key.shared_u && (!key.rank_one || key.index >= kSharedUIndex)) {
    return false;
  }
  // Block u streams count down from kSharedUIndex: keep them above every
  // index.
  if (key.u_group_size > 0 &&
      (!key.shared_u || key.index >= kSharedUIndex / 2)) {
    return false;
  }
  return key.round >= 0 && key.round < (int64_t{1} << 32) &&
         key.client < kDomainBit && key.index < kMaxTangentIndex &&
         (key.type == TangentDistribution::kNormal ||
          key.type == TangentDistribution::kRademacher);
}

bool operator==(const TangentKey& a, const TangentKey& b) {
  return a.run_seed == b.run_seed && a.round == b.round &&
         a.client == b.client && a.index == b.index && a.type == b.type &&
         a.param_mask == b.param_mask && a.normalized == b.normalized &&
         a.rank_one == b.rank_one && a.shared_u == b.shared_u &&
         a.u_group_size == b.u_group_size;
}

int64_t TangentLayout::FactorRows(const TangentKey& key, size_t p) const {
  if (!key.rank_one) return 0;
  if (rows.size() != sizes.size()) LayoutMissingRows();
  const int64_t r = rows[p];
  // A factorization needs at least two rows and two columns to differ from
  // a dense vector; anything else stays dense.
  if (r <= 1 || sizes[p] % r != 0 || sizes[p] / r <= 1) return 0;
  return r;
}

int64_t TangentLayout::SharedBiasOf(const TangentKey& key, size_t p) const {
  if (!key.shared_u || p == 0 || p >= sizes.size()) return -1;
  if (FactorRows(key, p) != 0) return -1;
  const int64_t r = FactorRows(key, p - 1);
  return r > 0 && r == sizes[p] ? static_cast<int64_t>(p - 1) : -1;
}

int64_t PerturbedEntries(const TangentKey& key, const TangentLayout& layout) {
  int64_t m = 0;
  for (size_t p = 0; p < layout.sizes.size(); ++p) {
    if (Perturbs(key, static_cast<uint32_t>(p))) m += layout.sizes[p];
  }
  return m;
}

void RankOneFactors(const TangentKey& key, uint32_t param_index, int64_t rows,
                    int64_t cols, float* u, float* a) {
  if (key.shared_u) {
    // u from the group's stream; a from the key's own, from entry 0.
    SharedU(key, param_index, rows, u);
    SharedRankOneA(key, param_index, cols, a);
    return;
  }
  // One stream: entries [0, rows) are u, [rows, rows + cols) are a.
  std::vector<float> all(static_cast<size_t>(rows + cols));
  FillStream(MakeCounter(key, param_index), key.type, all.data(), rows + cols);
  std::memcpy(u, all.data(), sizeof(float) * static_cast<size_t>(rows));
  std::memcpy(a, all.data() + rows, sizeof(float) * static_cast<size_t>(cols));
}

void SharedRankOneA(const TangentKey& key, uint32_t param_index, int64_t cols,
                    float* a) {
  FillStream(MakeCounter(key, param_index), key.type, a, cols);
}

float SharedBiasBeta(const TangentKey& key, uint32_t bias_param) {
  float beta = 0;
  FillStream(MakeCounter(key, bias_param), key.type, &beta, 1);
  return beta;
}

void GenerateTangent(const TangentKey& key, uint32_t param_index, float* out,
                     int64_t n, int64_t rows) {
  GenerateTangentSlice(key, param_index, 0, out, n, rows,
                       rows > 0 ? n / rows : 0);
}

float TangentScale(const TangentKey& key, const TangentLayout& layout,
                   int threads) {
  if (!key.normalized) return 1.0f;
  const int64_t m = PerturbedEntries(key, layout);
  if (m == 0) return 1.0f;
  if (key.type == TangentDistribution::kRademacher) return 1.0f;  // |v|^2 = m
  CheckLayout(key, layout);
  // Dense tensors: one partial sum per chunk, added in chunk order (the same
  // bits for any thread count); then each factored tensor's |u|^2 |a|^2 in
  // parameter order.
  TangentLayout dense = layout;
  double factored = 0;
  for (size_t p = 0; p < layout.sizes.size(); ++p) {
    const int64_t rows = layout.FactorRows(key, p);
    if (rows == 0) continue;
    dense.sizes[p] = 0;
    if (!Perturbs(key, static_cast<uint32_t>(p))) continue;
    const int64_t cols = layout.sizes[p] / rows;
    const Factors f = MakeFactors(key, static_cast<uint32_t>(p), rows, cols, 1);
    double su = 0, sa = 0;
    for (float x : f.u) su += static_cast<double>(x) * x;
    for (float x : f.a) sa += static_cast<double>(x) * x;
    factored += su * sa;
  }
  std::vector<double> partial(ChunkItems(dense.sizes).size(), 0.0);
  ForEachChunkFlat(key, dense, threads,
                   [&partial](size_t i, const ChunkItem& it, const float* c) {
                     double s = 0;
                     for (int64_t j = 0; j < it.len; ++j) {
                       s += static_cast<double>(c[j]) * c[j];
                     }
                     partial[i] = s;
                   });
  double sum = 0;
  for (double s : partial) sum += s;
  sum += factored;
  if (!(sum > 0)) return 1.0f;
  return static_cast<float>(std::sqrt(static_cast<double>(m) / sum));
}

void GenerateTangentFlat(const TangentKey& key, const TangentLayout& layout,
                         float* out, int threads) {
  int64_t total = 0;
  for (int64_t s : layout.sizes) total += s;
  if (key.param_mask != 0) std::fill(out, out + total, 0.0f);
  const float scale = TangentScale(key, layout, threads);
  ForEachChunkFlat(key, layout, threads,
                   [out, scale](size_t, const ChunkItem& it, const float* c) {
                     float* d = out + it.base + it.off;
                     if (scale == 1.0f) {
                       std::memcpy(d, c, sizeof(float) * it.len);
                     } else {
                       for (int64_t j = 0; j < it.len; ++j) d[j] = scale * c[j];
                     }
                   });
}

std::vector<double> TangentDots(const std::vector<TangentKey>& keys,
                                const TangentLayout& layout, const float* g,
                                int threads) {
  const size_t np = layout.sizes.size();
  std::vector<double> out(keys.size(), 0.0);
  std::vector<int64_t> base(np, 0);
  for (size_t p = 1; p < np; ++p) base[p] = base[p - 1] + layout.sizes[p - 1];
  for (const TangentKey& key : keys) CheckLayout(key, layout);
  // Keys in groups of up to 8: a factored tensor's rows are read once per
  // group (RowDots), not once per key. Each key's sums depend only on that
  // key, so grouping and threads do not change the values.
  auto work = [&](size_t begin, size_t end) {
    alignas(64) float buf[kChunk];
    for (size_t k0 = begin; k0 < end; k0 += 8) {
      const size_t k1 = std::min(end, k0 + 8);
      std::vector<double> part((k1 - k0) * np, 0.0);  // [key][param]
      for (size_t p = 0; p < np; ++p) {
        const uint32_t pi = static_cast<uint32_t>(p);
        const float* gp = g + base[p];
        const int64_t n = layout.sizes[p];
        std::vector<size_t> fk;  // keys of the group that factor tensor p
        std::vector<Factors> fs;
        int64_t rows = 0;
        for (size_t k = k0; k < k1; ++k) {
          const TangentKey& key = keys[k];
          if (!Perturbs(key, pi)) continue;
          const int64_t r = layout.FactorRows(key, p);
          if (r > 0) {
            rows = r;
            fk.push_back(k);
            fs.push_back(MakeFactors(key, pi, r, n / r, 1.0f));
            continue;
          }
          double sum = 0;
          for (int64_t off = 0; off < n; off += kChunk) {
            const int64_t len = std::min<int64_t>(kChunk, n - off);
            FillDense(key, layout, pi, off, len, buf);
            sum += DotBlocks(gp + off, buf, len);
          }
          part[(k - k0) * np + p] = sum;
        }
        if (fk.empty()) continue;
        // u^T (G a) for every factored key at once.
        const int64_t cols = n / rows;
        std::vector<const float*> a;
        for (const Factors& f : fs) a.push_back(f.a.data());
        double dots[8];
        std::vector<double> sums(fk.size(), 0.0);
        for (int64_t i = 0; i < rows; ++i) {
          RowDots(gp + i * cols, a.data(), static_cast<int>(a.size()), cols,
                  dots);
          for (size_t q = 0; q < fk.size(); ++q) {
            sums[q] +=
                static_cast<double>(fs[q].u[static_cast<size_t>(i)]) * dots[q];
          }
        }
        for (size_t q = 0; q < fk.size(); ++q) {
          part[(fk[q] - k0) * np + p] = sums[q];
        }
      }
      for (size_t k = k0; k < k1; ++k) {
        double total = 0;
        for (size_t p = 0; p < np; ++p) total += part[(k - k0) * np + p];
        out[k] = total * static_cast<double>(TangentScale(keys[k], layout));
      }
    }
  };
  RunInRanges(keys.size(), threads, work);
  return out;
}

void AddScaledTangentFlat(const TangentKey& key, const TangentLayout& layout,
                          float alpha, float* params, int threads,
                          uint64_t restrict_mask) {
  // The same additions as a one-term ApplySeedTerms (dense: a * c per entry,
  // with the Rademacher sign flip giving the same bits; rank-one: the
  // canonical (a * u_i) * a_j).
  ApplySeedTerms({SeedTerm{key, alpha, restrict_mask}}, layout, params,
                 threads);
}

void GenerateTangentSlice(const TangentKey& key, uint32_t param_index,
                          int64_t offset, float* out, int64_t n, int64_t rows,
                          int64_t cols) {
  if (!Perturbs(key, param_index)) {
    std::fill(out, out + n, 0.0f);
    return;
  }
  if (key.rank_one && rows > 0) {
    Factors f;
    f.u.resize(static_cast<size_t>(rows));
    f.a.resize(static_cast<size_t>(cols));
    RankOneFactors(key, param_index, rows, cols, f.u.data(), f.a.data());
    for (int64_t x = offset; x < offset + n; ++x) {
      const int64_t i = x / cols;
      out[x - offset] =
          f.u[static_cast<size_t>(i)] * f.a[static_cast<size_t>(x - i * cols)];
    }
    return;
  }
  if (key.shared_u) {
    std::fprintf(stderr,
                 "fedfwd: internal error: a shared-u key's dense tensor needs "
                 "the layout (GenerateTangentSlice with a TangentLayout)\n");
    std::abort();
  }
  const TangentCounter t = MakeCounter(key, param_index);
  alignas(64) float buf[kChunk];
  // FillChunk wants chunk-aligned offsets; start at the chunk holding
  // `offset` and copy the part asked for.
  int64_t pos = offset;
  const int64_t end = offset + n;
  while (pos < end) {
    const int64_t chunk_start = pos / kChunk * kChunk;
    const int64_t len = std::min<int64_t>(kChunk, end - chunk_start);
    FillChunk(t, key.type, chunk_start, len, buf);
    const int64_t take = std::min<int64_t>(end, chunk_start + len) - pos;
    std::memcpy(out + (pos - offset), buf + (pos - chunk_start),
                sizeof(float) * take);
    pos += take;
  }
}

void GenerateTangentSlice(const TangentKey& key, const TangentLayout& layout,
                          uint32_t param_index, int64_t offset, float* out,
                          int64_t n) {
  CheckLayout(key, layout);
  const int64_t rows = layout.FactorRows(key, param_index);
  if (rows > 0 || !key.shared_u || !Perturbs(key, param_index)) {
    GenerateTangentSlice(key, param_index, offset, out, n, rows,
                         rows > 0 ? layout.sizes[param_index] / rows : 0);
    return;
  }
  alignas(64) float buf[kChunk];
  int64_t pos = offset;
  const int64_t end = offset + n;
  while (pos < end) {
    const int64_t len = std::min<int64_t>(kChunk, end - pos);
    FillDense(key, layout, param_index, pos, len, buf);
    std::memcpy(out + (pos - offset), buf, sizeof(float) * len);
    pos += len;
  }
}

namespace {
// Consecutive terms whose shared-u keys differ only in the index.
bool SameSharedGroup(const SeedTerm& x, const SeedTerm& y) {
  return x.key.shared_u && y.key.shared_u && x.key.rank_one && y.key.rank_one &&
         x.key.run_seed == y.key.run_seed && x.key.round == y.key.round &&
         x.key.client == y.key.client && x.key.type == y.key.type &&
         x.key.param_mask == y.key.param_mask &&
         x.key.normalized == y.key.normalized &&
         x.key.u_group_size == y.key.u_group_size &&
         SharedUGroup(x.key) == SharedUGroup(y.key) &&
         x.restrict_mask == y.restrict_mask;
}
}  // namespace

// Chunk-major: for each chunk of the model, every term in order, so a
// chunk of the parameters stays in cache across the terms instead of the
// whole model streaming through memory once per term. Each parameter gets
// the same additions in the same order as AddScaledTangentFlat term after
// term, so the bits are the same. Rank-one terms are added from their
// factors (made once per term and tensor, before the chunks).
void ApplySeedTerms(const std::vector<SeedTerm>& terms,
                    const TangentLayout& layout, float* params, int threads) {
  if (terms.empty()) return;
  const size_t np = layout.sizes.size();
  std::vector<float> factor(terms.size());
  for (size_t k = 0; k < terms.size(); ++k) {
    CheckLayout(terms[k].key, layout);
    factor[k] = terms[k].alpha * TangentScale(terms[k].key, layout, threads);
  }
  // lead[k]: the first term of k's shared-u group (k itself otherwise).
  std::vector<size_t> lead(terms.size());
  for (size_t k = 0; k < terms.size(); ++k) {
    lead[k] =
        k > 0 && SameSharedGroup(terms[k - 1], terms[k]) ? lead[k - 1] : k;
  }
  // factors[slot[k] * np + p]: term k's factors of tensor p when it is
  // rank-one there and the term applies to it; for a shared-u group, its
  // lead holds u and sum_k factor_k a_k (in term order) per matrix, and u
  // and sum_k factor_k beta_k per bias; the others have no slot.
  std::vector<Factors> factors;
  std::vector<size_t> slot(terms.size(), 0);
  size_t slots = 0;
  for (size_t k = 0; k < terms.size(); ++k) {
    const SeedTerm& t = terms[k];
    if ((t.key.rank_one || t.key.shared_u) && lead[k] == k) slot[k] = slots++;
  }
  if (slots > 0) {
    factors.resize(slots * np);
    RunInRanges(terms.size(), threads, [&](size_t begin, size_t end) {
      for (size_t k = begin; k < end; ++k) {
        const SeedTerm& t = terms[k];
        if (!(t.key.rank_one || t.key.shared_u) || lead[k] != k) continue;
        size_t last = k + 1;  // one past the group
        while (t.key.shared_u && last < terms.size() && lead[last] == k) {
          ++last;
        }
        for (size_t p = 0; p < np; ++p) {
          const uint32_t pi = static_cast<uint32_t>(p);
          if (!Applies(t.key, t.restrict_mask, pi)) continue;
          const int64_t m = t.key.shared_u ? layout.SharedBiasOf(t.key, p) : -1;
          if (m >= 0) {
            // A shared-u group's bias: u times sum_k factor_k beta_k (in
            // term order), one add per entry for the whole group.
            Factors& f = factors[slot[k] * np + p];
            f.u.resize(static_cast<size_t>(layout.sizes[p]));
            SharedU(t.key, static_cast<uint32_t>(m), layout.sizes[p],
                    f.u.data());
            float sum = 0.0f;
            for (size_t q = k; q < last; ++q) {
              sum += factor[q] * SharedBiasBeta(terms[q].key, pi);
            }
            f.a.assign(1, sum);
            continue;
          }
          const int64_t rows = layout.FactorRows(t.key, p);
          if (rows == 0) continue;
          const int64_t cols = layout.sizes[p] / rows;
          if (!t.key.shared_u) {
            factors[slot[k] * np + p] =
                MakeFactors(t.key, pi, rows, cols, factor[k]);
            continue;
          }
          Factors& f = factors[slot[k] * np + p];
          f.u.resize(static_cast<size_t>(rows));
          SharedU(t.key, pi, rows, f.u.data());
          f.a.assign(static_cast<size_t>(cols), 0.0f);
          if (t.key.type == TangentDistribution::kRademacher) {
            // c * (+-1) is +-c exactly: the sign flips of the adder give
            // the same bits as the multiply below, without a buffer.
            for (size_t q = k; q < last; ++q) {
              RademacherAddChunk(MakeCounter(terms[q].key, pi), 0, cols,
                                 factor[q], f.a.data());
            }
            continue;
          }
          std::vector<float> a(static_cast<size_t>(cols));
          for (size_t q = k; q < last; ++q) {
            FillStream(MakeCounter(terms[q].key, pi), t.key.type, a.data(),
                       cols);
            const float c = factor[q];
            for (int64_t j = 0; j < cols; ++j) f.a[j] += c * a[j];
          }
        }
      }
    });
  }
  // The terms the chunk pass visits: a shared-u group's other terms are in
  // its lead's factors wherever the tensor is a factored matrix or a shared
  // bias, so they need no visit unless they perturb some other tensor.
  std::vector<size_t> active;
  for (size_t k = 0; k < terms.size(); ++k) {
    const SeedTerm& t = terms[k];
    bool visit = !t.key.shared_u || lead[k] == k;
    for (size_t p = 0; p < np && !visit; ++p) {
      visit = Applies(t.key, t.restrict_mask, static_cast<uint32_t>(p)) &&
              layout.FactorRows(t.key, p) == 0 &&
              layout.SharedBiasOf(t.key, p) < 0;
    }
    if (visit) active.push_back(k);
  }
  const std::vector<ChunkItem> items = ChunkItems(layout.sizes);
  auto work = [&](size_t begin, size_t end) {
    alignas(64) float buf[kChunk];
    for (size_t i = begin; i < end; ++i) {
      const ChunkItem& it = items[i];
      float* d = params + it.base + it.off;
      // Consecutive rank-one terms go in one run (AddRankOneRun), flushed
      // before any dense term, so every entry sees the terms in order.
      std::vector<const Factors*> run;
      int64_t run_cols = 0;
      auto flush = [&] {
        if (!run.empty()) AddRankOneRun(run, run_cols, it.off, it.len, d);
        run.clear();
      };
      for (const size_t k : active) {
        const SeedTerm& t = terms[k];
        if (!Applies(t.key, t.restrict_mask, it.param)) continue;
        const float a = factor[k];
        const int64_t rows = layout.FactorRows(t.key, it.param);
        if (rows > 0) {
          if (t.key.shared_u && lead[k] != k) continue;  // in its lead
          run.push_back(&factors[slot[k] * np + it.param]);
          run_cols = layout.sizes[it.param] / rows;
          continue;
        }
        flush();
        if (t.key.shared_u && layout.SharedBiasOf(t.key, it.param) >= 0) {
          if (lead[k] != k) continue;  // in its lead's sum
          const Factors& f = factors[slot[k] * np + it.param];
          const float* u = f.u.data() + it.off;
          const float sum = f.a[0];
          for (int64_t j = 0; j < it.len; ++j) d[j] += u[j] * sum;
          continue;
        }
        if (t.key.type == TangentDistribution::kRademacher) {
          RademacherAddChunk(MakeCounter(t.key, it.param), it.off, it.len, a,
                             d);
          continue;
        }
        FillChunk(MakeCounter(t.key, it.param), t.key.type, it.off, it.len,
                  buf);
        for (int64_t j = 0; j < it.len; ++j) d[j] += a * buf[j];
      }
      flush();
    }
  };
  RunInRanges(items.size(), threads, work);
}

}  // namespace fedfwd
