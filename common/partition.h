// Partitions of a training set into client shards, computed identically by
// every daemon (and by tools) from the run seed, so each daemon loads only
// its own shard and no coordinator has to ship index lists.
//
//   iid:       a seeded permutation cut into near-equal contiguous pieces
//              (identical to IidShardIndices in dataset.h).
//   shards:    McMahan et al.'s pathological non-iid split: examples sorted
//              by label (ties by index), cut into num_clients *
//              shards_per_client equal shards, each client gets
//              shards_per_client of them drawn by a seeded permutation.
//   dirichlet: for every class, proportions p ~ Dirichlet(alpha) over the
//              clients (own Gamma sampler over the Philox stream), the
//              class's (seeded-permuted) examples cut by those proportions
//              (integer counts by largest remainder). A client may get no
//              example of a class, and with small alpha or many clients no
//              example at all: that is a valid partition here, but
//              fedfwd-client refuses to run on an empty shard.
//
// Every partition is disjoint and covers all n examples. No libtorch, no
// libm-dependent state across machines beyond double arithmetic.
#ifndef FEDFWD_COMMON_PARTITION_H_
#define FEDFWD_COMMON_PARTITION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace fedfwd {

struct PartitionOptions {
  // iid | shards | dirichlet | id (one client per natural id: the data's
  // ids, dealt round-robin in sorted order; array_data.h IdShardIndices)
  std::string type = "iid";
  int shards_per_client = 2;  // shards only
  double alpha = 0.5;         // dirichlet only; > 0
};

// Names accepted for PartitionOptions::type.
std::vector<std::string> PartitionTypes();

// All shards: result[c] holds client c's example indices, ascending for
// shards/dirichlet and in permutation order for iid. Errors
// (InvalidArgument): unknown type, num_clients < 1, num_classes outside
// [1, 256], a label >= num_classes, shards_per_client outside [1, 1000] or
// fewer examples than num_clients * shards_per_client (shards), alpha not
// finite and > 0 (dirichlet). Only the chosen type's parameter is checked.
// `ids`: the examples' natural ids (type id only; an error when empty).
absl::StatusOr<std::vector<std::vector<int64_t>>> PartitionIndices(
    const std::vector<uint8_t>& labels, int num_classes, int num_clients,
    const PartitionOptions& options, uint64_t seed,
    const std::vector<std::string>& ids = {});

// Client `shard`'s part of PartitionIndices (same errors, and shard outside
// [0, num_clients)). For iid it costs one permutation, not the whole split.
absl::StatusOr<std::vector<int64_t>> ShardIndices(
    const std::vector<uint8_t>& labels, int num_classes, int num_clients,
    int shard, const PartitionOptions& options, uint64_t seed,
    const std::vector<std::string>& ids = {});

// counts[c][k]: examples of class k held by client c. Indices outside
// labels and labels >= num_classes are not counted.
std::vector<std::vector<int64_t>> LabelHistogram(
    const std::vector<uint8_t>& labels, int num_classes,
    const std::vector<std::vector<int64_t>>& parts);

// A fixed-width table of LabelHistogram: one row per client with its size
// and per-class counts, and a totals row.
std::string FormatLabelHistogram(
    const std::vector<std::vector<int64_t>>& counts);

}  // namespace fedfwd

#endif  // FEDFWD_COMMON_PARTITION_H_
