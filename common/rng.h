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
#include <cstdint>
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
};

// Limits of the counter layout; keys outside them are rejected by
// ValidTangentKey (the counter would wrap and repeat another tangent).
inline constexpr uint32_t kMaxTangentIndex = 1u << 16;
inline constexpr uint32_t kMaxParamIndex = 1u << 12;
bool ValidTangentKey(const TangentKey& key);

// Writes the entries of tangent `key` for parameter number `param_index`
// (registration order) into out[0..n).
void GenerateTangent(const TangentKey& key, uint32_t param_index, float* out,
                     int64_t n);

// The tangent over a whole model: parameters of `sizes` (registration order)
// laid out back to back in out[0..sum(sizes)). `threads` > 1 splits the work
// over that many threads; the values do not depend on it.
void GenerateTangentFlat(const TangentKey& key,
                         const std::vector<int64_t>& sizes, float* out,
                         int threads = 1);

// params[i] += alpha * v[i] over the whole model without materializing v.
void AddScaledTangentFlat(const TangentKey& key,
                          const std::vector<int64_t>& sizes, float alpha,
                          float* params, int threads = 1);

}  // namespace fedfwd

#endif  // FEDFWD_COMMON_RNG_H_
