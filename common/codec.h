// The one place where wire messages turn into fedfwd values and back:
// tangent keys, model snapshots (float32 little-endian bytes + XXH64) and
// chunking. No libtorch here: snapshots are flat float vectors, and tensors
// are views over them (torch_model.h).
#ifndef FEDFWD_COMMON_CODEC_H_
#define FEDFWD_COMMON_CODEC_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/gossip.h"
#include "common/rng.h"
#include "common/step_rule.h"
#include "fedfwd.pb.h"

namespace fedfwd {

inline constexpr uint32_t kProtocolVersion = v1::PROTOCOL_VERSION_CURRENT;
// Snapshot chunk payload size: well under gRPC's 4 MiB message limit.
inline constexpr size_t kSnapshotChunkBytes = 1 << 20;

// Immutable serialized model of one version, shared by concurrent fetches.
struct Snapshot {
  uint64_t version = 0;
  uint64_t checksum = 0;  // XXH64 (seed 0) of bytes
  std::string bytes;      // float32 little endian, registration order
};
Snapshot MakeSnapshot(const std::vector<float>& params, uint64_t version);
uint64_t Checksum(const void* data, size_t size);

// Appends chunk payloads in order and checks the result: size equals
// `expected_params` floats and the checksum matches. Errors say which.
class SnapshotAssembler {
 public:
  SnapshotAssembler(int64_t expected_params, uint64_t version);
  absl::Status Add(const v1::ModelChunk& chunk);
  // Verifies and moves the parameters into `out`.
  absl::Status Finish(std::vector<float>* out);

 private:
  int64_t expected_params_;
  uint64_t version_;
  uint64_t checksum_ = 0;
  bool have_checksum_ = false;
  std::vector<float> params_;
  size_t filled_ = 0;  // bytes received
};

// A peer message (common/gossip.h) as PeerChunk pieces of at most
// kSnapshotChunkBytes of data; the first carries the header (run_id, from,
// to, step, weight, value count, XXH64 of all the data). At least one chunk,
// also for an empty message.
std::vector<v1::PeerChunk> PeerMessageChunks(const PeerMessage& m,
                                             const std::string& run_id,
                                             uint32_t from, uint32_t to);

// Reassembles one peer message, checking it against what the receiver
// expects: `expected_values` values, chunks in order, the checksum, then
// CheckPeerMessage (finite values, a positive finite weight). Errors are
// InvalidArgument (a malformed header) or DataLoss (broken data).
class PeerMessageAssembler {
 public:
  explicit PeerMessageAssembler(int64_t expected_values);
  absl::Status Add(const v1::PeerChunk& chunk);
  // The first chunk's header fields (valid after a successful first Add).
  const v1::PeerChunk& header() const { return header_; }
  absl::StatusOr<PeerMessage> Finish();

 private:
  int64_t expected_values_;
  v1::PeerChunk header_;  // data cleared
  bool have_header_ = false;
  std::vector<float> values_;
  size_t filled_ = 0;  // bytes received
};

v1::TangentKey ToProto(const TangentKey& key);
absl::StatusOr<TangentKey> FromProto(const v1::TangentKey& key);
// Seed-replay terms: `version` is the model version the term belongs to.
v1::SeedUpdate ToProto(const SeedTerm& term, uint64_t version);
// Checks the key and that the coefficient is a finite float32.
absl::StatusOr<SeedTerm> FromProto(const v1::SeedUpdate& update);
// The optimizer step that seed replay carries (join reply's RunSpec).
v1::StepRule ToProto(const StepRule& rule);
// Checks the ranges the config allows (momentum and betas in [0, 1), eps > 0
// and finite, clip_step >= 0 and finite); the error names every value.
absl::StatusOr<StepRule> FromProto(const v1::StepRule& rule);

// Seed-replay terms of one version as compact runs (v1::SeedRun), and back
// (appending (version, term) pairs in order; every key and coefficient is
// checked as FromProto does). Exact both ways: keys are rebuilt, the
// coefficients are the float32 values themselves.
void AppendSeedRuns(const std::vector<SeedTerm>& terms, uint64_t version,
                    google::protobuf::RepeatedPtrField<v1::SeedRun>* out);
absl::Status ExpandSeedRuns(
    const google::protobuf::RepeatedPtrField<v1::SeedRun>& runs,
    std::vector<std::pair<uint64_t, SeedTerm>>* out);
// Whether `keys` (two or more) differ only in an index that goes up by one
// from keys[0]: then a task sends keys[0] and the count.
bool IsKeyRun(const std::vector<TangentKey>& keys);
// `keys` as maximal runs (keys equal but for an index that goes up by one),
// each [begin, end), in order.
std::vector<std::pair<size_t, size_t>> KeyRuns(
    const std::vector<TangentKey>& keys);
// The keys of Task.tangent_runs in order (each run checked like FromProto,
// count >= 1, at most kMaxTangentIndex keys in all), or InvalidArgument.
absl::StatusOr<std::vector<TangentKey>> ExpandKeyRuns(
    const google::protobuf::RepeatedPtrField<v1::TangentRun>& runs);
// The `count` keys of a run from `first` (checked like FromProto), or
// InvalidArgument.
absl::StatusOr<std::vector<TangentKey>> ExpandKeyRun(
    const v1::TangentKey& first, uint32_t count);

// int8 JVP values (Task.jvp_bits 8): each d clamped to [-clip, clip] and
// rounded to a multiple of clip / 127, up or down with the probabilities
// that keep it unbiased, the coin from the counter-based generator keyed
// by (seed, client, round, index) (reproducible, independent of d). Returns
// the bytes; *scale = clip / 127.
std::string EncodeJvp8(const std::vector<double>& d, double clip, uint64_t seed,
                       uint32_t client, int64_t round, float* scale);
// The values of EncodeJvp8's bytes: int8 * scale. InvalidArgument for a
// scale that is not finite and positive, or the value -128.
absl::StatusOr<std::vector<double>> DecodeJvp8(const std::string& bytes,
                                               float scale);

// int8 seed-replay factors: splits `terms` into the runs AppendSeedRuns
// makes and rounds each run's factors to scale * q, q an integer in
// [-127, 127], scale = max |factor| / 127 (float32). A run then travels as
// one scale and one byte a term, and replays to the same bits.
void QuantizeSeedRuns(std::vector<SeedTerm>* terms);

// Wire bytes (about) of terms sent as runs.
size_t SeedRunsWireBytes(const std::vector<SeedTerm>& terms);

}  // namespace fedfwd

#endif  // FEDFWD_COMMON_CODEC_H_
