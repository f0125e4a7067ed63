#include "common/partition.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/array_data.h"
#include "common/dataset.h"
#include "common/rng.h"
#include "common/status_macros.h"

namespace fedfwd {
namespace {

// Stream numbers within RngDomain::kPartition. Stream 0 is the iid
// permutation of IidShardIndices (dataset.cc); changing any of these changes
// every experiment's data split.
constexpr uint32_t kIidStream = 0;
constexpr uint32_t kShardsStream = 1;
constexpr uint32_t kDirichletOrderStream = 0x100;  // + class: example order
constexpr uint32_t kDirichletGammaStream = 0x200;  // + class: proportions

// Labels are bytes, so at most 256 classes can hold examples.
constexpr int kMaxClasses = 256;
constexpr int kMaxShardsPerClient = 1000;

// --- Deterministic double arithmetic -------------------------------------
// Partitions must be bit-identical on every machine, so the sampler below
// uses only IEEE +, -, *, /, sqrt and exact operations (frexp, ldexp,
// floor) — no libm log/exp/cos, whose last bits differ between versions.
// Mul keeps a product from being fused with a following add into an FMA
// (which only some targets and compiler modes do), for the same reason.
inline double Mul(double a, double b) {
  volatile double p = a * b;
  return p;
}

constexpr double kLn2Hi = 6.93147180369123816490e-01;  // high bits of ln 2
constexpr double kLn2Lo = 1.90821492927058770002e-10;  // ln 2 - kLn2Hi
constexpr double kPi = 3.14159265358979323846;

// Natural log for finite x > 0; relative error ~1e-16.
double DetLog(double x) {
  int e = 0;
  double m = std::frexp(x, &e);  // x = m * 2^e, m in [0.5, 1)
  if (m < 0.70710678118654752440) {
    m = Mul(m, 2.0);
    --e;
  }
  // log m = 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + ...), |s| <= 0.172.
  const double s = (m - 1.0) / (m + 1.0);
  const double s2 = Mul(s, s);
  double series = 1.0 / 23.0;
  for (int k = 21; k >= 1; k -= 2) {
    series = Mul(series, s2) + 1.0 / static_cast<double>(k);
  }
  const double log_m = Mul(Mul(2.0, s), series);
  const double de = static_cast<double>(e);
  return Mul(de, kLn2Hi) + (Mul(de, kLn2Lo) + log_m);
}

// e^y for y <= 0 (0 below the double range); relative error ~1e-16.
double DetExpNonPositive(double y) {
  if (y < -745.0) return 0.0;
  const double k = std::floor(Mul(y, 1.0 / kLn2Hi) + 0.5);
  const double r = (y - Mul(k, kLn2Hi)) - Mul(k, kLn2Lo);  // |r| <= 0.35
  double p = 1.0;
  for (int i = 17; i >= 1; --i) {
    p = Mul(Mul(p, r), 1.0 / static_cast<double>(i)) + 1.0;
  }
  return std::ldexp(p, static_cast<int>(k));
}

// sin x and cos x for |x| <= pi/4 by their Taylor series.
double SinSmall(double x) {
  const double x2 = Mul(x, x);
  double p = 1.0;
  for (int i = 17; i >= 3; i -= 2) {
    p = 1.0 - Mul(Mul(p, x2), 1.0 / static_cast<double>(i * (i - 1)));
  }
  return Mul(x, p);
}
double CosSmall(double x) {
  const double x2 = Mul(x, x);
  double p = 1.0;
  for (int i = 18; i >= 2; i -= 2) {
    p = 1.0 - Mul(Mul(p, x2), 1.0 / static_cast<double>(i * (i - 1)));
  }
  return p;
}

// cos(2 pi u) for u in [0, 1). The quadrant is split off exactly (u * 4 and
// the integer part are exact), so only |x| <= pi/4 reaches a polynomial.
double DetCos2Pi(double u) {
  const double t = Mul(u, 4.0);
  const double q = std::floor(t + 0.5);
  const double x = Mul(t - q, kPi / 2.0);
  switch (static_cast<int>(q) & 3) {
    case 0:
      return CosSmall(x);
    case 1:
      return -SinSmall(x);
    case 2:
      return -CosSmall(x);
    default:
      return SinSmall(x);
  }
}

// Draws uniforms and normals from one (seed, stream) of kPartition,
// consuming counters 0, 1, 2, ... in order.
class Draws {
 public:
  Draws(uint64_t seed, uint32_t stream) : seed_(seed), stream_(stream) {}

  // Uniform in (0, 1): 52 random bits plus a half, exact in a double.
  double Uniform() {
    const uint64_t r = RandomU64(seed_, RngDomain::kPartition, stream_, i_++);
    return Mul(static_cast<double>(r >> 12) + 0.5, 0x1p-52);
  }

  // Standard normal by Box-Muller (cosine branch only).
  double Normal() {
    const double u1 = Uniform();
    const double u2 = Uniform();
    return Mul(std::sqrt(Mul(-2.0, DetLog(u1))), DetCos2Pi(u2));
  }

  // log of a Gamma(alpha, 1) draw, alpha > 0: Marsaglia & Tsang (2000), with
  // Gamma(alpha) = Gamma(alpha + 1) * U^(1/alpha) for alpha < 1. Returned as
  // a log because for small alpha the draw itself underflows to 0.
  double LogGamma(double alpha) {
    double boost = 0.0;
    if (alpha < 1.0) {
      boost = DetLog(Uniform()) / alpha;
      alpha += 1.0;
    }
    const double d = alpha - 1.0 / 3.0;
    const double c = 1.0 / std::sqrt(Mul(9.0, d));
    // Each try is accepted with probability > 0.95; the bound only keeps the
    // loop finite, it is never reached in practice.
    for (int attempt = 0; attempt < 10000; ++attempt) {
      const double x = Normal();
      const double v1 = 1.0 + Mul(c, x);
      if (v1 <= 0.0) continue;
      const double v = Mul(Mul(v1, v1), v1);
      const double u = Uniform();
      const double x2 = Mul(x, x);
      if (u < 1.0 - Mul(0.0331, Mul(x2, x2)) ||
          DetLog(u) < Mul(0.5, x2) + Mul(d, (1.0 - v) + DetLog(v))) {
        return DetLog(Mul(d, v)) + boost;
      }
    }
    return DetLog(d) + boost;
  }

 private:
  uint64_t seed_;
  uint32_t stream_;
  uint64_t i_ = 0;
};

// Splits `total` into num_clients counts proportional to exp(log_weights)
// by largest remainder (ties to the lower client), summing exactly to total.
std::vector<int64_t> ProportionalCounts(const std::vector<double>& log_weights,
                                        int64_t total) {
  const size_t k = log_weights.size();
  const double max_log =
      *std::max_element(log_weights.begin(), log_weights.end());
  std::vector<double> w(k);
  double sum = 0.0;
  for (size_t c = 0; c < k; ++c) {
    w[c] = DetExpNonPositive(log_weights[c] - max_log);  // the largest is 1
    sum += w[c];
  }
  std::vector<int64_t> counts(k);
  std::vector<double> remainder(k);
  int64_t assigned = 0;
  for (size_t c = 0; c < k; ++c) {
    const double q = Mul(w[c] / sum, static_cast<double>(total));
    const double whole = std::min(std::floor(q), static_cast<double>(total));
    counts[c] = static_cast<int64_t>(whole);
    remainder[c] = q - whole;
    assigned += counts[c];
  }
  std::vector<size_t> order(k);
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return remainder[a] > remainder[b];
  });
  // Rounding can leave the floors a little over or under; fix either way.
  for (size_t j = 0; assigned < total; j = (j + 1) % k) {
    ++counts[order[j]];
    ++assigned;
  }
  for (size_t j = k; assigned > total;) {
    j = (j == 0 ? k : j) - 1;
    if (counts[order[j]] > 0) {
      --counts[order[j]];
      --assigned;
    }
  }
  return counts;
}

// --- The partitions ---------------------------------------------------------

absl::Status Validate(const std::vector<uint8_t>& labels, int num_classes,
                      int num_clients, const PartitionOptions& options) {
  const std::vector<std::string> types = PartitionTypes();
  if (std::find(types.begin(), types.end(), options.type) == types.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown partition type '", options.type,
                     "' (valid: ", absl::StrJoin(types, ", "), ")"));
  }
  if (num_clients < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("a partition needs at least 1 client, got ", num_clients));
  }
  if (num_classes < 1 || num_classes > kMaxClasses) {
    return absl::InvalidArgumentError(absl::StrCat(
        "num_classes must be in [1, ", kMaxClasses, "], got ", num_classes));
  }
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] >= num_classes) {
      return absl::InvalidArgumentError(
          absl::StrCat("label ", static_cast<int>(labels[i]), " of example ", i,
                       " is out of range for ", num_classes, " classes"));
    }
  }
  if (options.type == "shards") {
    if (options.shards_per_client < 1 ||
        options.shards_per_client > kMaxShardsPerClient) {
      return absl::InvalidArgumentError(absl::StrCat(
          "partition.shards_per_client must be in [1, ", kMaxShardsPerClient,
          "], got ", options.shards_per_client));
    }
    const int64_t shards =
        static_cast<int64_t>(num_clients) * options.shards_per_client;
    if (static_cast<int64_t>(labels.size()) < shards) {
      return absl::InvalidArgumentError(
          absl::StrCat("shards partition: ", labels.size(),
                       " examples cannot fill ", num_clients, " clients x ",
                       options.shards_per_client, " = ", shards, " shards"));
    }
  }
  if (options.type == "dirichlet" &&
      !(options.alpha > 0.0 && std::isfinite(options.alpha))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "partition.alpha must be finite and > 0, got ", options.alpha));
  }
  return absl::OkStatus();
}

// Must equal IidShardIndices(n, num_clients, c, seed) for every c; it draws
// the permutation once instead of once per client.
std::vector<std::vector<int64_t>> Iid(int64_t n, int num_clients,
                                      uint64_t seed) {
  std::vector<std::vector<int64_t>> parts(num_clients);
  if (n <= 0) return parts;
  const std::vector<int64_t> perm =
      RandomPermutation(n, seed, RngDomain::kPartition, kIidStream);
  for (int c = 0; c < num_clients; ++c) {
    const int64_t begin = c * n / num_clients;
    const int64_t end = (c + 1) * n / num_clients;
    parts[c].assign(perm.begin() + begin, perm.begin() + end);
  }
  return parts;
}

// Example indices of each class, ascending.
std::vector<std::vector<int64_t>> ByClass(const std::vector<uint8_t>& labels,
                                          int num_classes) {
  std::vector<std::vector<int64_t>> by_class(num_classes);
  for (size_t i = 0; i < labels.size(); ++i) {
    by_class[labels[i]].push_back(static_cast<int64_t>(i));
  }
  return by_class;
}

std::vector<std::vector<int64_t>> Shards(const std::vector<uint8_t>& labels,
                                         int num_classes, int num_clients,
                                         int per_client, uint64_t seed) {
  std::vector<int64_t> sorted;  // by (label, index)
  sorted.reserve(labels.size());
  for (const auto& cls : ByClass(labels, num_classes)) {
    sorted.insert(sorted.end(), cls.begin(), cls.end());
  }
  const int64_t n = static_cast<int64_t>(sorted.size());
  const int64_t num_shards = static_cast<int64_t>(num_clients) * per_client;
  const std::vector<int64_t> perm =
      RandomPermutation(num_shards, seed, RngDomain::kPartition, kShardsStream);
  std::vector<std::vector<int64_t>> parts(num_clients);
  for (int c = 0; c < num_clients; ++c) {
    for (int j = 0; j < per_client; ++j) {
      const int64_t s = perm[static_cast<int64_t>(c) * per_client + j];
      parts[c].insert(parts[c].end(), sorted.begin() + s * n / num_shards,
                      sorted.begin() + (s + 1) * n / num_shards);
    }
    std::sort(parts[c].begin(), parts[c].end());
  }
  return parts;
}

std::vector<std::vector<int64_t>> Dirichlet(const std::vector<uint8_t>& labels,
                                            int num_classes, int num_clients,
                                            double alpha, uint64_t seed) {
  std::vector<std::vector<int64_t>> parts(num_clients);
  const std::vector<std::vector<int64_t>> by_class =
      ByClass(labels, num_classes);
  for (int k = 0; k < num_classes; ++k) {
    const std::vector<int64_t>& members = by_class[k];
    const int64_t size = static_cast<int64_t>(members.size());
    // Proportions are drawn even for an empty class, so a class's draws do
    // not depend on which other classes are present.
    Draws draws(seed, kDirichletGammaStream + static_cast<uint32_t>(k));
    std::vector<double> log_gamma(num_clients);
    for (int c = 0; c < num_clients; ++c) log_gamma[c] = draws.LogGamma(alpha);
    if (size == 0) continue;
    const std::vector<int64_t> counts = ProportionalCounts(log_gamma, size);
    const std::vector<int64_t> order =
        RandomPermutation(size, seed, RngDomain::kPartition,
                          kDirichletOrderStream + static_cast<uint32_t>(k));
    int64_t next = 0;
    for (int c = 0; c < num_clients; ++c) {
      for (int64_t j = 0; j < counts[c]; ++j) {
        parts[c].push_back(members[order[next++]]);
      }
    }
  }
  for (auto& part : parts) std::sort(part.begin(), part.end());
  return parts;
}

absl::Status CheckIds(const std::vector<std::string>& ids, size_t examples) {
  if (ids.empty()) {
    return absl::InvalidArgumentError(
        "partition type 'id' needs the data's natural ids (dataset.id: the "
        "npz array or csv column that holds them)");
  }
  if (ids.size() != examples) {
    return absl::InvalidArgumentError(
        absl::StrCat("partition type 'id': ", ids.size(), " ids for ", examples,
                     " examples"));
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<std::string> PartitionTypes() {
  return {"iid", "shards", "dirichlet", "id"};
}

absl::StatusOr<std::vector<std::vector<int64_t>>> PartitionIndices(
    const std::vector<uint8_t>& labels, int num_classes, int num_clients,
    const PartitionOptions& options, uint64_t seed,
    const std::vector<std::string>& ids) {
  if (options.type == "id") {
    RETURN_IF_ERROR(CheckIds(ids, labels.size()));
    std::vector<std::vector<int64_t>> parts;
    for (int c = 0; c < num_clients; ++c) {
      absl::StatusOr<std::vector<int64_t>> part =
          IdShardIndices(ids, num_clients, c);
      if (!part.ok()) return part.status();
      parts.push_back(std::move(*part));
    }
    return parts;
  }
  absl::Status valid = Validate(labels, num_classes, num_clients, options);
  if (!valid.ok()) return valid;
  if (options.type == "shards") {
    return Shards(labels, num_classes, num_clients, options.shards_per_client,
                  seed);
  }
  if (options.type == "dirichlet") {
    return Dirichlet(labels, num_classes, num_clients, options.alpha, seed);
  }
  return Iid(static_cast<int64_t>(labels.size()), num_clients, seed);
}

absl::StatusOr<std::vector<int64_t>> ShardIndices(
    const std::vector<uint8_t>& labels, int num_classes, int num_clients,
    int shard, const PartitionOptions& options, uint64_t seed,
    const std::vector<std::string>& ids) {
  if (options.type == "id") {
    RETURN_IF_ERROR(CheckIds(ids, labels.size()));
    return IdShardIndices(ids, num_clients, shard);
  }
  absl::Status valid = Validate(labels, num_classes, num_clients, options);
  if (!valid.ok()) return valid;
  if (shard < 0 || shard >= num_clients) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shard ", shard, " is out of range for ", num_clients, " clients"));
  }
  if (options.type == "iid") {
    return IidShardIndices(static_cast<int64_t>(labels.size()), num_clients,
                           shard, seed);
  }
  absl::StatusOr<std::vector<std::vector<int64_t>>> parts =
      PartitionIndices(labels, num_classes, num_clients, options, seed);
  if (!parts.ok()) return parts.status();
  return std::move((*parts)[shard]);
}

std::vector<std::vector<int64_t>> LabelHistogram(
    const std::vector<uint8_t>& labels, int num_classes,
    const std::vector<std::vector<int64_t>>& parts) {
  std::vector<std::vector<int64_t>> counts(
      parts.size(), std::vector<int64_t>(std::max(num_classes, 0), 0));
  for (size_t c = 0; c < parts.size(); ++c) {
    for (int64_t i : parts[c]) {
      if (i < 0 || i >= static_cast<int64_t>(labels.size())) continue;
      if (labels[i] >= num_classes) continue;
      ++counts[c][labels[i]];
    }
  }
  return counts;
}

std::string FormatLabelHistogram(
    const std::vector<std::vector<int64_t>>& counts) {
  size_t num_classes = 0;
  for (const auto& row : counts)
    num_classes = std::max(num_classes, row.size());
  // cells[r][col]: header, one row per client, totals.
  std::vector<std::vector<std::string>> cells;
  std::vector<std::string> header = {"client", "size"};
  for (size_t k = 0; k < num_classes; ++k) header.push_back(absl::StrCat(k));
  cells.push_back(header);
  std::vector<int64_t> totals(num_classes + 1, 0);
  for (size_t c = 0; c < counts.size(); ++c) {
    const int64_t size =
        std::accumulate(counts[c].begin(), counts[c].end(), int64_t{0});
    std::vector<std::string> row = {absl::StrCat(c), absl::StrCat(size)};
    totals[0] += size;
    for (size_t k = 0; k < num_classes; ++k) {
      const int64_t v = k < counts[c].size() ? counts[c][k] : 0;
      row.push_back(absl::StrCat(v));
      totals[k + 1] += v;
    }
    cells.push_back(row);
  }
  std::vector<std::string> total_row = {"total"};
  for (int64_t v : totals) total_row.push_back(absl::StrCat(v));
  cells.push_back(total_row);

  std::vector<size_t> width(header.size(), 0);
  for (const auto& row : cells) {
    for (size_t j = 0; j < row.size(); ++j) {
      width[j] = std::max(width[j], row[j].size());
    }
  }
  std::string out;
  for (const auto& row : cells) {
    for (size_t j = 0; j < row.size(); ++j) {
      if (j > 0) out += "  ";
      out.append(width[j] - row[j].size(), ' ');
      out += row[j];
    }
    out += '\n';
  }
  return out;
}

}  // namespace fedfwd
