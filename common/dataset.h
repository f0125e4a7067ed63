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

// The bytes of the file at `path`: NotFound for a missing file,
// InvalidArgument for a folder or a read error, each naming the path. The
// readers here and in array_data.h load their files with it.
absl::StatusOr<std::string> ReadWholeFile(const std::string& path);

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
  std::vector<uint8_t> labels;  // size, each < num_classes (classification)
  // Regression (task: regression, users' own data): size * target_dim float
  // targets, example-major; then `labels` is empty.
  std::vector<float> targets;
  int64_t target_dim = 0;
  // Users' own data (npz, csv): the features as float32, used as they are
  // (no scaling, no normalization), instead of `pixels` (then empty).
  std::vector<float> features;
  // Natural ids per example (partition type "id"), or empty.
  std::vector<std::string> ids;
  // CSV labels given as names: the name of each label (sorted), or empty.
  std::vector<std::string> class_names;
  bool has_features() const { return !features.empty(); }
  bool regression() const { return target_dim > 0; }
};

struct DatasetInfo {
  std::string name;
  // num_classes: the model's outputs (classes, or the regression targets).
  int64_t channels, rows, cols, num_classes;
  float mean, stddev;  // per-pixel normalization after scaling to [0, 1]
  // File data with labels given as names (CSV): the names, label order.
  std::vector<std::string> class_names = {};
  // task: regression: float targets, num_classes of them per example.
  bool regression = false;
};
// Known datasets: "mnist", "fashion-mnist" (1x28x28), "cifar10" (3x32x32).
// Error for others. CIFAR-10 uses one mean/stddev for all three channels.
// Users' own data ("npz", "csv") has no fixed shape: DescribeFileData.
absl::StatusOr<DatasetInfo> GetDatasetInfo(const std::string& name);

// ---- users' own data: NumPy .npz archives and CSV tables (array_data.h) ----
//
// dataset.name "npz": data_dir holds train.npz and test.npz, each with a
// features array (default "x"), an integer label array (default "y") and
// optionally an id array. "npy": the same arrays as one file each,
// train_x.npy, train_y.npy (train_<id>.npy), test_x.npy, ... "csv": train.csv
// and test.csv with a header, a label column (default "label"), optionally an
// id column, every other column a numeric feature. Features of shape (d) become
// C,H,W = 1,1,d; (h, w) become 1,h,w; (c, h, w) stay. At most 256 classes.
struct FileDataOptions {
  std::string features;  // npz: the features array ("": "x")
  std::string label;     // npz: the label array ("": "y"); csv: the label
                         // column ("": "label")
  std::string id;        // npz array or csv column of natural ids ("": none)
  int64_t classes = 0;   // 0: 1 + the largest label of the described split
  // task: regression: float targets instead of labels (npz/npy: the label
  // array, of shape (n) or (n, t); csv: the label column, default
  // "target"); `classes` does not apply.
  bool regression = false;
};
bool IsFileDataset(const std::string& name);  // "npz" or "csv"
// The file of `split` in `dir`: <dir>/train.npz, <dir>/test.csv, ...
std::string FileDataPath(const std::string& name, const std::string& dir,
                         bool train);
// Shape and classes of file data from one of its splits (the coordinator
// describes the test split, and sends the result to the clients); mean 0,
// stddev 1. Errors: no examples, a label >= options.classes.
absl::StatusOr<DatasetInfo> DescribeFileData(const std::string& name,
                                             const FileDataOptions& options,
                                             const ImageSet& split);
// The info of file data of shape C,H,W = `shape` and `classes` classes:
// features used as they are (mean 0, stddev 1).
DatasetInfo FileDataInfo(const std::string& name,
                         const std::vector<int64_t>& shape, int64_t classes,
                         bool regression = false);
// GetDatasetInfo for every data set: for "npz" and "csv", DescribeFileData
// of the test split in `dir`.
absl::StatusOr<DatasetInfo> DatasetInfoFor(const std::string& name,
                                           const FileDataOptions& file,
                                           const std::string& dir);
// Checks that a split of file data fits `info` (the coordinator's): the
// same C,H,W and every label < info.num_classes. `what` names the split.
absl::Status CheckFileData(const ImageSet& split, const DatasetInfo& info,
                           const std::string& what);

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
// LoadImageSet for every data set, users' own files included (`file` is
// used for "npz" and "csv" only). `dir` must be set for file data.
absl::StatusOr<ImageSet> LoadDataSplit(const std::string& dataset_name,
                                       const FileDataOptions& file,
                                       const std::string& dir, Split split,
                                       int64_t limit = 0);

// Indices of shard `shard` out of `num_shards` of an iid split of n examples:
// a permutation from (seed) cut into near-equal contiguous pieces. Every
// daemon computes the same split independently.
std::vector<int64_t> IidShardIndices(int64_t n, int num_shards, int shard,
                                     uint64_t seed);

// What a partition splits by: the labels, or for regression (no classes)
// one class of every example; and the number of those classes.
std::vector<uint8_t> PartitionLabels(const ImageSet& set);
int PartitionClasses(const ImageSet& set, const DatasetInfo& info);

// Keeps only the examples at `indices` (in that order).
ImageSet Subset(const ImageSet& set, const std::vector<int64_t>& indices);

}  // namespace fedfwd

#endif  // FEDFWD_COMMON_DATASET_H_
