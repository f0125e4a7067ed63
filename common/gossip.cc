#include "common/gossip.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/rng.h"

namespace fedfwd {
namespace {

// Layout of the indices drawn from RngDomain::kGossip. The random graph's
// draws use indices with bit 63 set (kind in bits 32..39, draw number below),
// on stream i for worker i's own choices, so they stay apart from the noise
// keys, which use the caller's counter (a step, far below 2^63) as the index.
constexpr uint64_t kTopologyBit = uint64_t{1} << 63;
constexpr uint64_t kPickDraw = 0;   // choice of destinations
constexpr uint64_t kShareDraw = 1;  // the positive weights of the shares
constexpr uint64_t kCycleDraw = 2;  // the cycle through all workers
// The cycle is one draw for the whole federation, on a stream no worker
// index reaches (worker indices are ints, below 2^31).
constexpr uint32_t kCycleStream = 0xFFFFFFFFu;
constexpr double kTwoPow53 = 9007199254740992.0;

uint64_t TopologyIndex(uint64_t kind, uint64_t j) {
  return kTopologyBit | (kind << 32) | j;
}

// Uniform in [0, 1) from the top 53 bits.
double UniformClosedOpen(uint64_t r) {
  return static_cast<double>(r >> 11) / kTwoPow53;
}

// Uniform in (0, 1): the midpoint of each 53-bit cell, never 0, so log()
// stays finite.
double UniformOpen(uint64_t r) {
  return (static_cast<double>(r >> 11) + 0.5) / kTwoPow53;
}

// kExponential's period m: the number of powers of two strictly below n,
// i.e. the offsets 1, 2, ..., 2^(m-1).
int64_t ExponentialPeriod(int n) {
  int64_t m = 0;
  for (int64_t p = 1; p < n; p *= 2) ++m;
  return m;
}

// i's successor on a random cycle through all n workers (Fisher-Yates from
// the seed alone, so every worker computes the same cycle).
uint32_t CycleSuccessor(int n, int i, uint64_t seed) {
  std::vector<uint32_t> cycle(static_cast<size_t>(n));
  for (int j = 0; j < n; ++j) cycle[static_cast<size_t>(j)] = j;
  for (int j = n - 1; j > 0; --j) {
    const uint64_t pick =
        RandomBelow(seed, RngDomain::kGossip, kCycleStream,
                    TopologyIndex(kCycleDraw, static_cast<uint64_t>(j)),
                    static_cast<uint64_t>(j) + 1);
    std::swap(cycle[static_cast<size_t>(j)], cycle[pick]);
  }
  const size_t at = static_cast<size_t>(
      std::find(cycle.begin(), cycle.end(), static_cast<uint32_t>(i)) -
      cycle.begin());
  return cycle[(at + 1) % cycle.size()];
}

// Push-sum only averages over a strongly connected graph: a worker nobody
// sends to would keep its own model while its weight decays towards 0 (and
// then underflows). Independent random choices give such workers often
// (n = 8, degree 2, seed 7 leaves worker 0 with no in-edge), so one of the
// d destinations is i's successor on a random cycle through all workers;
// the other d - 1 are drawn uniformly among the rest from stream i.
std::vector<std::pair<uint32_t, double>> RandomShares(int n, int i,
                                                      uint64_t seed,
                                                      int degree) {
  const int d = std::min(degree, n - 1);
  if (d <= 0) return {};
  const auto stream = static_cast<uint32_t>(i);
  const uint32_t successor = CycleSuccessor(n, i, seed);
  std::vector<uint32_t> others;
  others.reserve(static_cast<size_t>(n - 2));
  for (int j = 0; j < n; ++j) {
    if (j != i && static_cast<uint32_t>(j) != successor) {
      others.push_back(static_cast<uint32_t>(j));
    }
  }
  // Partial Fisher-Yates: the first d - 1 slots end up a uniform random
  // subset of the others.
  for (int j = 0; j < d - 1; ++j) {
    const uint64_t left = others.size() - static_cast<size_t>(j);
    const uint64_t pick =
        RandomBelow(seed, RngDomain::kGossip, stream,
                    TopologyIndex(kPickDraw, static_cast<uint64_t>(j)), left);
    std::swap(others[static_cast<size_t>(j)],
              others[static_cast<size_t>(j) + pick]);
  }
  others.resize(static_cast<size_t>(d - 1));
  others.push_back(successor);
  std::sort(others.begin(), others.end());

  // Weight 0 is the share kept; 1..d go with `others` in sorted order, so
  // the result does not depend on how the subset was drawn.
  std::vector<double> weight(static_cast<size_t>(d) + 1);
  double total = 0;
  for (size_t j = 0; j < weight.size(); ++j) {
    weight[j] = 0.5 + UniformClosedOpen(RandomU64(
                          seed, RngDomain::kGossip, stream,
                          TopologyIndex(kShareDraw, static_cast<uint64_t>(j))));
    total += weight[j];
  }
  std::vector<std::pair<uint32_t, double>> shares;
  shares.reserve(static_cast<size_t>(d));
  for (int j = 0; j < d; ++j) {
    shares.emplace_back(others[static_cast<size_t>(j)],
                        weight[static_cast<size_t>(j) + 1] / total);
  }
  return shares;
}

}  // namespace

absl::Status CheckPeerMessage(const PeerMessage& m, size_t size) {
  if (m.values.size() != size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "peer message has ", m.values.size(), " values, expected ", size));
  }
  for (size_t k = 0; k < m.values.size(); ++k) {
    if (!std::isfinite(m.values[k])) {
      return absl::InvalidArgumentError(
          absl::StrCat("peer message value ", k, " is not finite"));
    }
  }
  if (!std::isfinite(m.weight) || !(m.weight > 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "peer message weight ", m.weight, " is not a positive finite number"));
  }
  return absl::OkStatus();
}

GoSgdState::GoSgdState(std::vector<float> x, double alpha)
    : x_(std::move(x)), alpha_(alpha) {}

absl::Status GoSgdState::Absorb(const PeerMessage& m) {
  absl::Status status = CheckPeerMessage(m, x_.size());
  if (!status.ok()) return status;
  const double a = alpha_;
  const double aj = m.weight;
  const double sum = a + aj;
  for (size_t k = 0; k < x_.size(); ++k) {
    x_[k] = static_cast<float>((a * static_cast<double>(x_[k]) +
                                aj * static_cast<double>(m.values[k])) /
                               sum);
  }
  alpha_ = sum;
  return absl::OkStatus();
}

PeerMessage GoSgdState::MakePush(uint32_t self, int64_t step) {
  alpha_ /= 2;
  PeerMessage m;
  m.from = self;
  m.step = step;
  m.weight = alpha_;
  m.values = x_;
  return m;
}

PushSumState::PushSumState(std::vector<float> x, double w)
    : x_(std::move(x)), w_(w) {}

absl::Status PushSumState::Absorb(const PeerMessage& m) {
  absl::Status status = CheckPeerMessage(m, x_.size());
  if (!status.ok()) return status;
  for (size_t k = 0; k < x_.size(); ++k) x_[k] += m.values[k];
  w_ += m.weight;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::pair<uint32_t, PeerMessage>>>
PushSumState::Split(const std::vector<std::pair<uint32_t, double>>& shares,
                    uint32_t self, int64_t step) {
  // Everything is checked before anything changes.
  double sum = 0;
  for (size_t s = 0; s < shares.size(); ++s) {
    const double f = shares[s].second;
    if (!(f > 0 && f < 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("push-sum share ", s, " (to worker ", shares[s].first,
                       ") has fraction ", f, ", expected a number in (0, 1)"));
    }
    sum += f;
  }
  if (!(sum < 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "push-sum shares sum to ", sum, ", expected a sum below 1"));
  }

  std::vector<std::pair<uint32_t, PeerMessage>> out;
  out.reserve(shares.size());
  for (const auto& [destination, f] : shares) {
    PeerMessage m;
    m.from = self;
    m.step = step;
    m.weight = f * w_;
    m.values.resize(x_.size());
    for (size_t k = 0; k < x_.size(); ++k) {
      m.values[k] = static_cast<float>(f * static_cast<double>(x_[k]));
    }
    out.emplace_back(destination, std::move(m));
  }
  const double keep = 1 - sum;
  for (float& v : x_) v = static_cast<float>(keep * static_cast<double>(v));
  w_ *= keep;
  return out;
}

void PushSumState::Debiased(std::vector<float>* out) const {
  out->resize(x_.size());
  for (size_t k = 0; k < x_.size(); ++k) {
    (*out)[k] = static_cast<float>(static_cast<double>(x_[k]) / w_);
  }
}

std::vector<float> PushSumState::Debiased() const {
  std::vector<float> out;
  Debiased(&out);
  return out;
}

absl::StatusOr<SgpTopology> ParseSgpTopology(const std::string& name) {
  if (name == "exponential") return SgpTopology::kExponential;
  if (name == "random") return SgpTopology::kRandom;
  if (name == "complete") return SgpTopology::kComplete;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown SGP topology \"", name,
                   "\", expected exponential, random or complete"));
}

const char* SgpTopologyName(SgpTopology t) {
  switch (t) {
    case SgpTopology::kExponential:
      return "exponential";
    case SgpTopology::kRandom:
      return "random";
    case SgpTopology::kComplete:
      return "complete";
  }
  return "unknown";
}

std::vector<std::pair<uint32_t, double>> SgpOutShares(SgpTopology t, int n,
                                                      int i, int64_t step,
                                                      uint64_t seed,
                                                      int degree) {
  if (n <= 1 || i < 0 || i >= n) return {};
  switch (t) {
    case SgpTopology::kExponential: {
      const int64_t m = ExponentialPeriod(n);
      const int64_t r = ((step % m) + m) % m;  // steps below 0 wrap too
      const int64_t offset = int64_t{1} << r;
      return {{static_cast<uint32_t>((i + offset) % n), 0.5}};
    }
    case SgpTopology::kRandom:
      return RandomShares(n, i, seed, degree);
    case SgpTopology::kComplete: {
      std::vector<std::pair<uint32_t, double>> shares;
      shares.reserve(static_cast<size_t>(n - 1));
      const double f = 1.0 / n;
      for (int j = 0; j < n; ++j) {
        if (j != i) shares.emplace_back(static_cast<uint32_t>(j), f);
      }
      return shares;
    }
  }
  return {};
}

absl::StatusOr<std::vector<float>> ElasticExchange(
    std::vector<float>* x, const std::vector<float>& center, double alpha) {
  if (x == nullptr) {
    return absl::InvalidArgumentError("elastic exchange needs parameters");
  }
  if (x->size() != center.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("elastic exchange: worker has ", x->size(),
                     " values, center has ", center.size()));
  }
  if (!(alpha > 0 && alpha < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("elastic moving rate ", alpha, " is not in (0, 1)"));
  }
  std::vector<float> diff(x->size());
  for (size_t k = 0; k < diff.size(); ++k) {
    diff[k] = static_cast<float>(alpha * (static_cast<double>((*x)[k]) -
                                          static_cast<double>(center[k])));
  }
  for (size_t k = 0; k < diff.size(); ++k) (*x)[k] -= diff[k];
  return diff;
}

double DefaultElasticAlpha(double beta, int workers, int tau) {
  // No rate for an empty federation or period; 0 is then refused by
  // ElasticExchange with a clear error instead of dividing by zero.
  if (workers <= 0 || tau <= 0) return 0;
  return beta / (static_cast<double>(workers) * tau);
}

void AddGaussianNoise(std::vector<float>* values, double stddev, uint64_t seed,
                      uint32_t stream, uint64_t counter) {
  // A non-finite deviation would turn the whole model into NaN; this void
  // call leaves it alone instead (callers validate their configuration).
  if (values == nullptr || stddev == 0 || !std::isfinite(stddev)) return;
  // One 64-bit key per (seed, stream, counter), then two uniforms per pair
  // of values (Box-Muller gives two normals): element k's noise depends on
  // (seed, stream, counter, k) only, not on the vector's size.
  const uint64_t key = RandomU64(seed, RngDomain::kGossip, stream, counter);
  constexpr double kTwoPi = 6.283185307179586476925286766559;
  const size_t n = values->size();
  for (size_t p = 0; 2 * p < n; ++p) {
    const double u1 = UniformOpen(RandomU64(key, RngDomain::kGossip, stream,
                                            2 * static_cast<uint64_t>(p)));
    const double u2 = UniformClosedOpen(RandomU64(
        key, RngDomain::kGossip, stream, 2 * static_cast<uint64_t>(p) + 1));
    const double r = std::sqrt(-2.0 * std::log(u1));
    const double theta = kTwoPi * u2;
    float& first = (*values)[2 * p];
    first = static_cast<float>(static_cast<double>(first) +
                               stddev * r * std::cos(theta));
    if (2 * p + 1 < n) {
      float& second = (*values)[2 * p + 1];
      second = static_cast<float>(static_cast<double>(second) +
                                  stddev * r * std::sin(theta));
    }
  }
}

}  // namespace fedfwd
