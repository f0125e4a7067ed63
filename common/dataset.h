// Image datasets: IDX files (MNIST, Fashion-MNIST; raw or gzip), CIFAR-10
// binary batches, and the iid partition of a training set into client shards.
//
// Readers return clear errors naming the file for missing, truncated or
// malformed input. No libtorch here: images stay uint8 in NCHW order and are
// normalized where tensors are built (see DatasetInfo::mean/stddev).
#ifndef FEDFWD_COMMON_DATASET_H_
#define FEDFWD_COMMON_DATASET_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace fedfwd {

// A decoded IDX file: dimensions and raw uint8 payload.
struct IdxArray {
  std::vector<int64_t> dims;
  std::vector<uint8_t> data;
};
// Reads an IDX file of unsigned bytes (type 0x08). Gzip input is detected by
// its magic bytes, not by the name.
absl::StatusOr<IdxArray> ReadIdxFile(const std::string& path);
// Same for an in-memory buffer (fuzzing, tests); `name` appears in errors.
absl::StatusOr<IdxArray> ParseIdx(const std::string& bytes,
                                  const std::string& name);

struct ImageSet {
  int64_t size = 0;
  int64_t channels = 1, rows = 28, cols = 28;
  std::vector<uint8_t> pixels;  // size * channels * rows * cols, NCHW
  std::vector<uint8_t> labels;  // size, each < num_classes
};

struct DatasetInfo {
  std::string name;
  int64_t channels, rows, cols, num_classes;
  float mean, stddev;  // per-pixel normalization after scaling to [0, 1]
};
// Known datasets: "mnist", "fashion-mnist" (1x28x28), "cifar10" (3x32x32).
// Error for others. CIFAR-10 uses one mean/stddev for all three channels.
absl::StatusOr<DatasetInfo> GetDatasetInfo(const std::string& name);

// Where a dataset lives when the config names no data_dir:
// fashion-mnist: /usr/share/datasets/fashion-mnist (Debian package);
// mnist and cifar10: $FEDFWD_DATA/<name> if set, else <repo>/data/<name>
// found relative to the running executable (build/bin/../../data/<name>) if
// that folder exists, else data/<name> of the checkout the binary was built
// from if it exists, else ./data/<name>. "" for unknown names.
std::string DefaultDataDir(const std::string& dataset_name);

// CIFAR-10 binary format: records of 1 label byte (0..9) and 3072 pixel bytes
// (1024 red, 1024 green, 1024 blue, each 32x32 row-major), so every image is
// already CHW.
inline constexpr int64_t kCifarRecordBytes = 1 + 3 * 32 * 32;
// Parses one CIFAR-10 batch file's bytes into a 3x32x32 ImageSet. `name`
// (the file) appears in errors: empty input, a size that is not a multiple
// of kCifarRecordBytes, a label above 9. `limit` > 0 parses only the first
// `limit` records (the size check still covers the whole buffer).
absl::StatusOr<ImageSet> ParseCifarBatch(const std::string& bytes,
                                         const std::string& name,
                                         int64_t limit = 0);

enum class Split { kTrain, kTest };
// Loads a split from `dir` (empty: DefaultDataDir(dataset_name)).
// IDX datasets: the usual file names with or without .gz
// (train-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz], ...).
// cifar10: train = data_batch_1.bin .. data_batch_5.bin concatenated in that
// order, test = test_batch.bin, either directly in `dir` or in
// `dir`/cifar-10-batches-bin/ (how the official tarball extracts). A missing
// file is NotFound, and the message says where to get the data.
// `limit` > 0 keeps only the first `limit` examples (for cifar10 the batches
// after the one that reaches the limit are not read).
absl::StatusOr<ImageSet> LoadImageSet(const std::string& dataset_name,
                                      const std::string& dir, Split split,
                                      int64_t limit = 0);

// Indices of shard `shard` out of `num_shards` of an iid split of n examples:
// a permutation from (seed) cut into near-equal contiguous pieces. Every
// daemon computes the same split independently.
std::vector<int64_t> IidShardIndices(int64_t n, int num_shards, int shard,
                                     uint64_t seed);

// Keeps only the examples at `indices` (in that order).
ImageSet Subset(const ImageSet& set, const std::vector<int64_t>& indices);

}  // namespace fedfwd

#endif  // FEDFWD_COMMON_DATASET_H_
