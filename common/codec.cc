#include "common/codec.h"

#include <xxhash.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace fedfwd {

static_assert(sizeof(float) == 4, "snapshots are float32");

uint64_t Checksum(const void* data, size_t size) {
  return XXH64(data, size, 0);
}

Snapshot MakeSnapshot(const std::vector<float>& params, uint64_t version) {
  Snapshot s;
  s.version = version;
  s.bytes.resize(params.size() * sizeof(float));
  // x86-64 and aarch64 are little endian, which is the wire order.
  std::memcpy(s.bytes.data(), params.data(), s.bytes.size());
  s.checksum = Checksum(s.bytes.data(), s.bytes.size());
  return s;
}

SnapshotAssembler::SnapshotAssembler(int64_t expected_params, uint64_t version)
    : expected_params_(expected_params), version_(version) {
  params_.resize(static_cast<size_t>(expected_params));
}

absl::Status SnapshotAssembler::Add(const v1::ModelChunk& chunk) {
  const uint64_t expected_total =
      static_cast<uint64_t>(expected_params_) * sizeof(float);
  if (chunk.total_bytes() != expected_total) {
    return absl::DataLossError(
        absl::StrCat("snapshot has ", chunk.total_bytes(),
                     " bytes, the model needs ", expected_total));
  }
  if (chunk.offset() != filled_) {
    return absl::DataLossError(absl::StrCat(
        "snapshot chunk at offset ", chunk.offset(), ", expected ", filled_));
  }
  if (version_ != 0 && chunk.model_version() != version_) {
    return absl::DataLossError(absl::StrCat("snapshot chunk of version ",
                                            chunk.model_version(),
                                            ", expected ", version_));
  }
  if (filled_ + chunk.data().size() > expected_total) {
    return absl::DataLossError("snapshot chunks exceed the model size");
  }
  // Straight into the float buffer: no intermediate copy of the model.
  // (An empty chunk copies nothing: memcpy from or to null is undefined even
  // for 0 bytes, and an empty model has no buffer; found by the fuzzer.)
  if (!chunk.data().empty()) {
    std::memcpy(reinterpret_cast<char*>(params_.data()) + filled_,
                chunk.data().data(), chunk.data().size());
  }
  filled_ += chunk.data().size();
  checksum_ = chunk.checksum();
  have_checksum_ = true;
  return absl::OkStatus();
}

absl::Status SnapshotAssembler::Finish(std::vector<float>* out) {
  const size_t expected = static_cast<size_t>(expected_params_) * sizeof(float);
  if (filled_ != expected) {
    return absl::DataLossError(absl::StrCat("snapshot truncated: got ", filled_,
                                            " of ", expected, " bytes"));
  }
  if (!have_checksum_ || Checksum(params_.data(), filled_) != checksum_) {
    return absl::DataLossError("snapshot checksum mismatch");
  }
  *out = std::move(params_);
  return absl::OkStatus();
}

std::vector<v1::PeerChunk> PeerMessageChunks(const PeerMessage& m,
                                             const std::string& run_id,
                                             uint32_t from, uint32_t to) {
  const char* data = reinterpret_cast<const char*>(m.values.data());
  const size_t total = m.values.size() * sizeof(float);
  std::vector<v1::PeerChunk> out;
  size_t off = 0;
  do {
    const size_t len = std::min(kSnapshotChunkBytes, total - off);
    v1::PeerChunk c;
    if (out.empty()) {
      c.set_run_id(run_id);
      c.set_from(from);
      c.set_to(to);
      c.set_step(m.step);
      c.set_weight(m.weight);
      c.set_num_values(m.values.size());
      c.set_checksum(total == 0 ? Checksum("", 0) : Checksum(data, total));
    }
    c.set_offset(off);
    if (len > 0) c.set_data(data + off, len);
    out.push_back(std::move(c));
    off += len;
  } while (off < total);
  return out;
}

PeerMessageAssembler::PeerMessageAssembler(int64_t expected_values)
    : expected_values_(expected_values) {}

absl::Status PeerMessageAssembler::Add(const v1::PeerChunk& chunk) {
  const size_t expected_total =
      static_cast<size_t>(expected_values_) * sizeof(float);
  if (!have_header_) {
    if (chunk.num_values() != static_cast<uint64_t>(expected_values_)) {
      return absl::InvalidArgumentError(
          absl::StrCat("peer message of ", chunk.num_values(),
                       " values; this model has ", expected_values_));
    }
    header_ = chunk;
    header_.clear_data();
    have_header_ = true;
    values_.resize(static_cast<size_t>(expected_values_));
  }
  if (chunk.offset() != filled_) {
    return absl::DataLossError(absl::StrCat(
        "peer chunk at offset ", chunk.offset(), ", expected ", filled_));
  }
  if (filled_ + chunk.data().size() > expected_total) {
    return absl::DataLossError("peer chunks exceed the announced size");
  }
  if (!chunk.data().empty()) {
    std::memcpy(reinterpret_cast<char*>(values_.data()) + filled_,
                chunk.data().data(), chunk.data().size());
  }
  filled_ += chunk.data().size();
  return absl::OkStatus();
}

absl::StatusOr<PeerMessage> PeerMessageAssembler::Finish() {
  if (!have_header_) return absl::InvalidArgumentError("empty peer message");
  const size_t expected = static_cast<size_t>(expected_values_) * sizeof(float);
  if (filled_ != expected) {
    return absl::DataLossError(absl::StrCat(
        "peer message truncated: got ", filled_, " of ", expected, " bytes"));
  }
  const uint64_t sum =
      filled_ == 0 ? Checksum("", 0) : Checksum(values_.data(), filled_);
  if (sum != header_.checksum()) {
    return absl::DataLossError("peer message checksum mismatch");
  }
  PeerMessage m;
  m.from = header_.from();
  m.step = header_.step();
  m.weight = header_.weight();
  m.values = std::move(values_);
  RETURN_IF_ERROR(CheckPeerMessage(m, static_cast<size_t>(expected_values_)));
  return m;
}

v1::TangentKey ToProto(const TangentKey& key) {
  v1::TangentKey p;
  p.set_run_seed(key.run_seed);
  p.set_round(key.round);
  p.set_client(key.client);
  p.set_index(key.index);
  p.set_type(key.type == TangentDistribution::kRademacher
                 ? v1::TANGENT_RADEMACHER
                 : v1::TANGENT_NORMAL);
  p.set_param_mask(key.param_mask);
  p.set_normalized(key.normalized);
  p.set_rank_one(key.rank_one);
  p.set_shared_u(key.shared_u);
  p.set_u_group_size(key.u_group_size);
  return p;
}

absl::StatusOr<TangentKey> FromProto(const v1::TangentKey& p) {
  TangentKey key;
  key.run_seed = p.run_seed();
  key.round = p.round();
  key.client = p.client();
  key.index = p.index();
  key.param_mask = p.param_mask();
  key.normalized = p.normalized();
  key.rank_one = p.rank_one();
  key.shared_u = p.shared_u();
  key.u_group_size = p.u_group_size();
  switch (p.type()) {
    case v1::TANGENT_NORMAL:
      key.type = TangentDistribution::kNormal;
      break;
    case v1::TANGENT_RADEMACHER:
      key.type = TangentDistribution::kRademacher;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("unknown tangent type ", static_cast<int>(p.type())));
  }
  if (!ValidTangentKey(key)) {
    return absl::InvalidArgumentError(
        absl::StrCat("tangent key out of range (round ", key.round, ", client ",
                     key.client, ", index ", key.index, ")"));
  }
  return key;
}

v1::SeedUpdate ToProto(const SeedTerm& term, uint64_t version) {
  v1::SeedUpdate u;
  *u.mutable_key() = ToProto(term.key);
  u.set_coefficient(term.alpha);
  u.set_restrict_mask(term.restrict_mask);
  u.set_version(version);
  return u;
}

absl::StatusOr<SeedTerm> FromProto(const v1::SeedUpdate& u) {
  SeedTerm t;
  ASSIGN_OR_RETURN(t.key, FromProto(u.key()));
  const double c = u.coefficient();
  if (!std::isfinite(c) || std::abs(c) > std::numeric_limits<float>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat("seed update coefficient is not a finite float: ", c));
  }
  t.alpha = static_cast<float>(c);
  t.restrict_mask = u.restrict_mask();
  return t;
}

namespace {
// The 8-bit scale of a run's factors (0 for an all-zero run).
float RunScale8(const SeedTerm* t, size_t n) {
  float m = 0;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::abs(t[i].alpha));
  return m / 127.0f;
}
// Whether every factor of the run is scale * q for an integer q in
// [-127, 127], and the q's.
bool RunAs8(const SeedTerm* t, size_t n, float* scale, std::string* q) {
  const float s = RunScale8(t, n);
  if (!(s > 0) || !std::isfinite(s)) return false;
  q->resize(n);
  for (size_t i = 0; i < n; ++i) {
    const float r = std::nearbyint(t[i].alpha / s);
    if (!(std::abs(r) <= 127.0f) || s * r != t[i].alpha) return false;
    (*q)[i] = static_cast<char>(static_cast<int8_t>(r));
  }
  *scale = s;
  return true;
}
// Whether `next` continues the run that ends with `prev`.
bool ContinuesRun(const SeedTerm& prev, const SeedTerm& next) {
  TangentKey k = prev.key;
  k.index = prev.key.index + 1;
  return k == next.key && prev.restrict_mask == next.restrict_mask &&
         prev.key.index + 1 < kMaxTangentIndex;
}
}  // namespace

// One past the end of the run that starts at terms[i].
size_t RunEnd(const std::vector<SeedTerm>& terms, size_t i) {
  size_t j = i + 1;
  while (j < terms.size() && ContinuesRun(terms[j - 1], terms[j])) ++j;
  return j;
}

void AppendSeedRuns(const std::vector<SeedTerm>& terms, uint64_t version,
                    google::protobuf::RepeatedPtrField<v1::SeedRun>* out) {
  for (size_t i = 0; i < terms.size();) {
    const size_t j = RunEnd(terms, i);
    v1::SeedRun* run = out->Add();
    *run->mutable_first() = ToProto(terms[i].key);
    run->set_restrict_mask(terms[i].restrict_mask);
    run->set_version(version);
    float scale = 0;
    std::string q;
    if (j - i >= 8 && RunAs8(terms.data() + i, j - i, &scale, &q)) {
      run->set_scale(scale);
      run->set_coefficients8(std::move(q));
    } else {
      for (size_t k = i; k < j; ++k) run->add_coefficients(terms[k].alpha);
    }
    i = j;
  }
}

void QuantizeSeedRuns(std::vector<SeedTerm>* terms) {
  for (size_t i = 0; i < terms->size();) {
    const size_t j = RunEnd(*terms, i);
    const float s = RunScale8(terms->data() + i, j - i);
    if (s > 0 && std::isfinite(s)) {
      for (size_t k = i; k < j; ++k) {
        SeedTerm& t = (*terms)[k];
        t.alpha = s * std::nearbyint(t.alpha / s);
      }
    }
    i = j;
  }
}

std::string EncodeJvp8(const std::vector<double>& d, double clip, uint64_t seed,
                       uint32_t client, int64_t round, float* scale) {
  const double step = clip / 127.0;
  std::string out(d.size(), '\0');
  for (size_t i = 0; i < d.size(); ++i) {
    const double x = std::clamp(std::isfinite(d[i]) ? d[i] : 0.0, -clip, clip);
    const double t = x / step;
    const double lo = std::floor(t);
    // Up with probability t - lo: E[q] = t.
    const uint64_t r = RandomU64(seed, RngDomain::kQuantize, client,
                                 (static_cast<uint64_t>(round) << 16) | i);
    const double u = static_cast<double>(r >> 11) * 0x1.0p-53;
    const double q = std::clamp(lo + (u < t - lo ? 1.0 : 0.0), -127.0, 127.0);
    out[i] = static_cast<char>(static_cast<int8_t>(q));
  }
  *scale = static_cast<float>(step);
  return out;
}

absl::StatusOr<std::vector<double>> DecodeJvp8(const std::string& bytes,
                                               float scale) {
  if (!std::isfinite(scale) || !(scale > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("jvp8_scale must be finite and positive, got ", scale));
  }
  std::vector<double> d;
  d.reserve(bytes.size());
  for (char c : bytes) {
    const int8_t q = static_cast<int8_t>(c);
    if (q == -128) {
      return absl::InvalidArgumentError("jvp8 value -128 is outside the grid");
    }
    d.push_back(static_cast<double>(static_cast<float>(q) * scale));
  }
  return d;
}

absl::Status ExpandSeedRuns(
    const google::protobuf::RepeatedPtrField<v1::SeedRun>& runs,
    std::vector<std::pair<uint64_t, SeedTerm>>* out) {
  for (const v1::SeedRun& run : runs) {
    ASSIGN_OR_RETURN(TangentKey key, FromProto(run.first()));
    const bool q8 = !run.coefficients8().empty();
    if (q8 && run.coefficients_size() > 0) {
      return absl::InvalidArgumentError(
          "seed run carries float32 and int8 coefficients");
    }
    if (q8 && (!std::isfinite(run.scale()) || !(run.scale() > 0))) {
      return absl::InvalidArgumentError(absl::StrCat(
          "seed run scale must be finite and positive, got ", run.scale()));
    }
    const int n = q8 ? static_cast<int>(run.coefficients8().size())
                     : run.coefficients_size();
    if (n == 0 || static_cast<uint64_t>(key.index) + n > kMaxTangentIndex) {
      return absl::InvalidArgumentError(
          absl::StrCat("seed run of ", n, " terms from index ", key.index,
                       " is empty or runs past the tangent index limit"));
    }
    for (int i = 0; i < n; ++i) {
      SeedTerm t;
      t.key = key;
      t.key.index = key.index + static_cast<uint32_t>(i);
      if (!ValidTangentKey(t.key)) {
        return absl::InvalidArgumentError(
            absl::StrCat("seed run key index ", t.key.index, " out of range"));
      }
      const float c = q8 ? run.scale() * static_cast<float>(static_cast<int8_t>(
                                             run.coefficients8()[i]))
                         : run.coefficients(i);
      if (!std::isfinite(c)) {
        return absl::InvalidArgumentError(
            absl::StrCat("seed run coefficient is not finite: ", c));
      }
      t.alpha = c;
      t.restrict_mask = run.restrict_mask();
      out->emplace_back(run.version(), t);
    }
  }
  return absl::OkStatus();
}

std::vector<std::pair<size_t, size_t>> KeyRuns(
    const std::vector<TangentKey>& keys) {
  std::vector<std::pair<size_t, size_t>> runs;
  for (size_t i = 0; i < keys.size();) {
    size_t j = i + 1;
    while (j < keys.size()) {
      TangentKey k = keys[i];
      k.index = keys[i].index + static_cast<uint32_t>(j - i);
      if (!(k == keys[j])) break;
      ++j;
    }
    runs.push_back({i, j});
    i = j;
  }
  return runs;
}

bool IsKeyRun(const std::vector<TangentKey>& keys) {
  return keys.size() >= 2 && KeyRuns(keys).size() == 1;
}

namespace {

// Appends the `count` (>= 1) keys of the run from `first`, each checked.
absl::Status AppendKeyRun(const v1::TangentKey& first, uint32_t count,
                          std::vector<TangentKey>* out) {
  ASSIGN_OR_RETURN(TangentKey key, FromProto(first));
  if (count < 1 ||
      static_cast<uint64_t>(key.index) + count > kMaxTangentIndex) {
    return absl::InvalidArgumentError(
        absl::StrCat("tangent run of ", count, " keys from index ", key.index,
                     " is empty or runs past the tangent index limit"));
  }
  for (uint32_t i = 0; i < count; ++i) {
    TangentKey k = key;
    k.index = key.index + i;
    if (!ValidTangentKey(k)) {
      return absl::InvalidArgumentError(
          absl::StrCat("tangent run key index ", k.index, " out of range"));
    }
    out->push_back(k);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<TangentKey>> ExpandKeyRuns(
    const google::protobuf::RepeatedPtrField<v1::TangentRun>& runs) {
  uint64_t total = 0;
  for (const v1::TangentRun& run : runs) total += run.count();
  if (total > kMaxTangentIndex) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tangent runs of ", total, " keys in all; at most ", kMaxTangentIndex));
  }
  std::vector<TangentKey> keys;
  keys.reserve(static_cast<size_t>(total));
  for (const v1::TangentRun& run : runs) {
    RETURN_IF_ERROR(AppendKeyRun(run.first(), run.count(), &keys));
  }
  return keys;
}

absl::StatusOr<std::vector<TangentKey>> ExpandKeyRun(
    const v1::TangentKey& first, uint32_t count) {
  if (count < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("tangent run of ", count,
                     " keys is shorter than 2 (one key goes as "
                     "itself)"));
  }
  std::vector<TangentKey> keys;
  keys.reserve(count);
  RETURN_IF_ERROR(AppendKeyRun(first, count, &keys));
  return keys;
}

size_t SeedRunsWireBytes(const std::vector<SeedTerm>& terms) {
  // A run's key, mask, version and framing ~48 bytes; 4 per coefficient,
  // or 1 when the run goes as int8.
  size_t bytes = 0;
  for (size_t i = 0; i < terms.size();) {
    const size_t j = RunEnd(terms, i);
    float scale = 0;
    std::string q;
    const bool q8 = j - i >= 8 && RunAs8(terms.data() + i, j - i, &scale, &q);
    bytes += 48 + (j - i) * (q8 ? 1 : 4);
    i = j;
  }
  return bytes;
}

v1::StepRule ToProto(const StepRule& rule) {
  v1::StepRule p;
  p.set_momentum(rule.momentum);
  p.set_adam(rule.adam);
  p.set_beta1(rule.beta1);
  p.set_beta2(rule.beta2);
  p.set_eps(rule.eps);
  p.set_clip_step(rule.clip_step);
  p.set_frank_wolfe(rule.frank_wolfe);
  p.set_radius(rule.radius);
  p.set_fw_k(rule.fw_k);
  p.set_fw_project(rule.fw_project);
  return p;
}

absl::StatusOr<StepRule> FromProto(const v1::StepRule& p) {
  StepRule r;
  r.momentum = p.momentum();
  r.adam = p.adam();
  r.beta1 = p.beta1();
  r.beta2 = p.beta2();
  r.eps = p.eps();
  r.clip_step = p.clip_step();
  r.frank_wolfe = p.frank_wolfe();
  r.radius = p.radius();
  r.fw_k = p.fw_k() == 0 ? 1 : p.fw_k();
  r.fw_project = p.fw_project();
  const bool ok =
      r.momentum >= 0 && r.momentum < 1 && r.clip_step >= 0 &&
      std::isfinite(r.clip_step) &&
      (!r.adam || (r.beta1 >= 0 && r.beta1 < 1 && r.beta2 >= 0 && r.beta2 < 1 &&
                   r.eps > 0 && std::isfinite(r.eps))) &&
      (!r.frank_wolfe || (!r.adam && r.momentum == 0 && r.radius > 0 &&
                          std::isfinite(r.radius) && r.fw_k >= 1)) &&
      (r.frank_wolfe || (r.radius == 0 && !r.fw_project));
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "step rule out of range: momentum ", r.momentum, ", adam ", r.adam,
        " (beta1 ", r.beta1, ", beta2 ", r.beta2, ", eps ", r.eps,
        "), clip_step ", r.clip_step, ", frank_wolfe ", r.frank_wolfe,
        " (radius ", r.radius, ", k ", r.fw_k, ")"));
  }
  return r;
}

}  // namespace fedfwd
