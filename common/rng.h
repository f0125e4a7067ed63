// Counter-based random numbers: the single source of truth for tangents,
// partitions, minibatch order and initial weights.
//
// Everything here is a pure function of its arguments (Philox4x32-10,
// Salmon et al. 2011, the generator cuRAND also ships), so the coordinator and
// every client regenerate bit-identical values regardless of thread count,
// library version or device. The normal transform is Box-Muller with our own
// float polynomials for log/sin/cos (no libm), compiled without FMA
// contraction, so results do not depend on the platform's math library.
// No libtorch here: this header is used by the codec, data readers and tests.
#ifndef FEDFWD_COMMON_RNG_H_
#define FEDFWD_COMMON_RNG_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace fedfwd {

// One Philox4x32-10 block: 4 x 32 random bits for (counter, key).
std::array<uint32_t, 4> Philox4x32(std::array<uint32_t, 4> counter,
                                   std::array<uint32_t, 2> key);

// Independent streams of 64-bit values, addressed by (seed, domain, stream, i).
// `domain` separates uses (partition, batches, init) so they never overlap.
enum class RngDomain : uint32_t {
  kTangent = 0,  // reserved: tangents use their own counter layout
  kPartition = 1,
  kBatch = 2,
  kInit = 3,
  kSampling = 4,  // which clients take part in a round
  kGossip = 5,    // gossip: SGP's random graph and noisy links
  kQuantize = 6,  // stochastic rounding of int8 JVP values (codec.h)
};
uint64_t RandomU64(uint64_t seed, RngDomain domain, uint32_t stream,
                   uint64_t i);
// Uniform in [0, n) by Lemire's multiply-shift (bias < n / 2^64).
uint64_t RandomBelow(uint64_t seed, RngDomain domain, uint32_t stream,
                     uint64_t i, uint64_t n);
// Fisher-Yates permutation of 0..n-1 from (seed, domain, stream).
std::vector<int64_t> RandomPermutation(int64_t n, uint64_t seed,
                                       RngDomain domain, uint32_t stream);
// Fills out[0..n) with floats uniform in [lo, hi) from (seed, kInit, stream).
void FillUniform(uint64_t seed, uint32_t stream, float lo, float hi, float* out,
                 int64_t n);

enum class TangentDistribution : uint32_t {
  kNormal = 1,      // i.i.d. N(0, 1)
  kRademacher = 2,  // i.i.d. +-1
};

// The full identity of one tangent. Matches proto TangentKey.
struct TangentKey {
  uint64_t run_seed = 0;
  int64_t round = 0;    // 0 <= round < 2^32
  uint32_t client = 0;  // key slot; shared-seed mode uses 0
  uint32_t index = 0;   // tangent index within a task, < 2^16
  TangentDistribution type = TangentDistribution::kNormal;
  // Weight splitting: bit p set = parameter tensor p is perturbed; the
  // others' entries are 0. 0 means every parameter (no splitting). The
  // values of a perturbed parameter do not depend on the mask.
  uint64_t param_mask = 0;
  // Normalized: the whole tangent (the perturbed parameters) is scaled to
  // norm sqrt(m), m its number of perturbed entries, so |v|^2 = m exactly
  // and still E[v v^T] = I on those entries (TangentScale gives the factor).
  bool normalized = false;
  // Rank-one: every parameter tensor the layout factors (a weight matrix
  // [out, in], or a bank of conv filters [out, in*kh*kw]) is drawn as
  // V = u a^T, u (rows) and a (columns) independent vectors of the
  // distribution, so E[vec(V) vec(V)^T] = I still holds and the estimate
  // stays unbiased, while the tensor costs rows + columns random numbers
  // instead of rows * columns. Vectors (biases) stay dense. A rank-one key
  // has its own streams: its dense entries differ from the dense key's.
  bool rank_one = false;
  // Shared row factor (needs rank_one): all keys with the same run seed,
  // round, client, type, mask and normalization draw the same u for each
  // factored tensor (only a differs with the index), and a vector right
  // after a factored matrix, of the matrix's rows (its bias), is u * beta,
  // beta one number of the key's own: the bias is the matrix's extra
  // column. Still E[v v^T] = I (entries of u and beta independent, zero
  // mean). Forward mode then carries a layer's tangent for all of a task's
  // keys as one propagated vector (jvp_rules.h), and a round's terms of one
  // client add to a matrix as one outer product u (sum_k c_k a_k)^T
  // (ApplySeedTerms): the cost no longer grows with K times the layer.
  bool shared_u = false;
  // shared_u only: 0, one u for all the keys above; G > 0, keys share u
  // only within index blocks [jG, (j+1)G) (u of block j from the stream of
  // index kSharedUIndex - j), so a client's K keys carry ceil(K/G) u's.
  uint32_t u_group_size = 0;
};

// Shapes the tangent functions need: numel per parameter tensor
// (registration order) and, for rank-one keys, each tensor's rows.
struct TangentLayout {
  std::vector<int64_t> sizes;
  // rows[p] > 0: tensor p is a matrix of rows[p] x (sizes[p] / rows[p]) that
  // a rank-one key factors; 0: a vector, always dense. Empty: nothing is
  // factored, and a rank-one key is a programming error (the process
  // aborts with a message: the coordinator and the clients would otherwise
  // disagree on the tangent).
  std::vector<int64_t> rows;

  TangentLayout() = default;
  // A layout without factors: enough for dense keys.
  TangentLayout(std::vector<int64_t> s)  // NOLINT(runtime/explicit)
      : sizes(std::move(s)) {}
  TangentLayout(std::vector<int64_t> s, std::vector<int64_t> r)
      : sizes(std::move(s)), rows(std::move(r)) {}
  // Rows of tensor p when `key` factors it, else 0.
  int64_t FactorRows(const TangentKey& key, size_t p) const;
  // For a shared_u key: the factored matrix whose bias tensor p is (p - 1
  // when that matrix has as many rows as p has entries), else -1.
  int64_t SharedBiasOf(const TangentKey& key, size_t p) const;
};

bool operator==(const TangentKey& a, const TangentKey& b);
inline bool operator!=(const TangentKey& a, const TangentKey& b) {
  return !(a == b);
}

// Whether `key` perturbs parameter tensor p (the mask has room for 64).
inline bool Perturbs(const TangentKey& key, uint32_t p) {
  return key.param_mask == 0 || (p < 64 && ((key.param_mask >> p) & 1u));
}
// Entries the tangent perturbs (m above).
int64_t PerturbedEntries(const TangentKey& key, const TangentLayout& layout);

// Limits of the counter layout; keys outside them are rejected by
// ValidTangentKey (the counter would wrap and repeat another tangent).
inline constexpr uint32_t kMaxTangentIndex = 1u << 16;
// A shared_u key's row factors come from this index's stream, so its own
// index must be below it.
inline constexpr uint32_t kSharedUIndex = kMaxTangentIndex - 1;
// The u block of a shared_u key (0 when u_group_size is 0).
inline uint32_t SharedUGroup(const TangentKey& key) {
  return key.u_group_size > 0 ? key.index / key.u_group_size : 0;
}
inline constexpr uint32_t kMaxParamIndex = 1u << 12;
bool ValidTangentKey(const TangentKey& key);

// Writes the raw entries of tangent `key` for parameter number `param_index`
// (registration order) into out[0..n): zeros when the mask leaves it out, and
// without the normalization factor (which needs the whole model; the *Flat
// functions below apply it). `rows`: the tensor's rows when a rank-one key
// factors it (TangentLayout::FactorRows), else 0; entry (i, j) is then the
// float product u_i * a_j.
void GenerateTangent(const TangentKey& key, uint32_t param_index, float* out,
                     int64_t n, int64_t rows = 0);

// The factors of a rank-one key's tensor `param_index` (rows x cols):
// u[0..rows) and a[0..cols), before normalization. For a shared_u key u is
// the one its whole group shares.
void RankOneFactors(const TangentKey& key, uint32_t param_index, int64_t rows,
                    int64_t cols, float* u, float* a);
// A shared_u key's own column factor a[0..cols) of tensor `param_index`
// (what RankOneFactors gives as a, without making the group's u).
void SharedRankOneA(const TangentKey& key, uint32_t param_index, int64_t cols,
                    float* a);

// The tangent over a whole model: parameters of `sizes` (registration order)
// laid out back to back in out[0..sum(sizes)). `threads` > 1 splits the work
// over that many threads; the values do not depend on it.
void GenerateTangentFlat(const TangentKey& key, const TangentLayout& layout,
                         float* out, int threads = 1);

// The factor a normalized key's raw entries are multiplied by (1 for a key
// that is not normalized): sqrt(m) / |raw|, with |raw|^2 summed in double in
// a fixed chunk order, so every caller gets the same bits for any `threads`.
// A rank-one tensor adds |u|^2 |a|^2 (in double).
float TangentScale(const TangentKey& key, const TangentLayout& layout,
                   int threads = 1);

// g . v(key) for a flat vector g (normalization included), without
// materializing v: a rank-one tensor costs u^T G a. Partial sums in float
// lanes over blocks, blocks and tensors added in double in a fixed order.
// One value per key; `threads` splits the keys (values do not depend on it).
std::vector<double> TangentDots(const std::vector<TangentKey>& keys,
                                const TangentLayout& layout, const float* g,
                                int threads = 1);

// params[i] += alpha * v[i] over the whole model without materializing v.
// A nonzero `restrict_mask` adds only the parameter tensors whose bits it
// has (the tangent's values, normalization included, stay those of `key`).
// A rank-one tensor gets params[i][j] += (alpha * scale * u_i) * a_j.
void AddScaledTangentFlat(const TangentKey& key, const TangentLayout& layout,
                          float alpha, float* params, int threads = 1,
                          uint64_t restrict_mask = 0);

// One term of a model update expressed as seeds: params += alpha * v(key),
// over restrict_mask's parameter tensors when it is nonzero. The
// coordinator applies a plain SGD step of forward gradients as such terms
// and sends them to the clients (seed-replay sync); both sides apply them
// with ApplySeedTerms, in the same order, so their models agree bit for bit.
// Consecutive shared_u terms of one group (keys equal but for the index,
// same restrict_mask) are added to each factored matrix as one outer
// product u (sum_k (alpha_k scale_k) a_k)^T, the sum in float in term order:
// a thin product in a fixed order of our own (no BLAS), so every machine and
// thread count gets the same bits; it is not the same rounding as adding
// the terms one by one.
struct SeedTerm {
  TangentKey key;
  float alpha = 0;
  uint64_t restrict_mask = 0;
};
void ApplySeedTerms(const std::vector<SeedTerm>& terms,
                    const TangentLayout& layout, float* params,
                    int threads = 1);

// beta of a shared_u key's bias tensor `bias_param` (TangentLayout::
// SharedBiasOf): the bias tangent is u * beta, before normalization.
float SharedBiasBeta(const TangentKey& key, uint32_t bias_param);

// Raw entries [offset, offset + n) of parameter `param_index`'s tangent,
// equal to that range of what GenerateTangent writes. A rank-one key's
// factored tensor needs its `rows` and `cols` (FactorRows; 0 otherwise).
// A shared_u key's bias needs the layout: use the overload below for
// shared_u keys (this one aborts on their biases).
void GenerateTangentSlice(const TangentKey& key, uint32_t param_index,
                          int64_t offset, float* out, int64_t n,
                          int64_t rows = 0, int64_t cols = 0);
// The same for any key, rows and columns taken from `layout`.
void GenerateTangentSlice(const TangentKey& key, const TangentLayout& layout,
                          uint32_t param_index, int64_t offset, float* out,
                          int64_t n);

}  // namespace fedfwd

#endif  // FEDFWD_COMMON_RNG_H_
