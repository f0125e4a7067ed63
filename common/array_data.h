// Users' own data sets: NumPy files (.npy pairs, .npz archives) and CSV
// tables, read in C++ (no Python at run time) into ArrayData, and the
// partition of such data by a natural id (one hospital, one device).
//
// Readers return InvalidArgument (NotFound for a missing file) with a message
// that names the file and the array, row or column at fault. They never
// unpickle (object arrays are refused) and bound every allocation by the
// input's size. No libtorch here: tensors are built by the caller.
//
// .npy (format versions 1.0, 2.0 and 3.0): dtypes bool (|b1), signed and
// unsigned integers of 1, 2, 4 and 8 bytes, float16/32/64, and for ids
// bytes (|S<n>) and unicode (<U<n>) strings. Little- and big-endian ('<',
// '>', '|' for one-byte types) are read; big-endian data is byte-swapped on
// load. C order only: fortran_order True is refused (save with
// np.ascontiguousarray). The payload must be exactly the shape's size: a
// truncated file or trailing bytes are errors.
//
// .npz: a zip archive (read with libzip) whose members are "<name>.npy",
// stored or deflated (what np.savez / np.savez_compressed write). A member
// whose declared size exceeds kMaxNpzMemberBytes, or more than deflate's
// largest ratio over its compressed size, is refused before it is inflated.
//
// Thread-safety: free functions over values; safe to call concurrently.
#ifndef FEDFWD_COMMON_ARRAY_DATA_H_
#define FEDFWD_COMMON_ARRAY_DATA_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fedfwd {

// A data set of examples with features of any shape and either class labels
// (classification) or float targets (regression).
struct ArrayData {
  std::vector<int64_t> feature_shape;  // per example, e.g. {10} or {1,28,28}
  int64_t size = 0;                    // examples
  std::vector<float> features;         // size * prod(feature_shape), row-major
  std::vector<int64_t> labels;   // classification: size entries (>= 0), or
                                 // empty
  std::vector<float> targets;    // regression: size * target_dim, or empty
  int64_t target_dim = 0;        // regression only
  std::vector<std::string> ids;  // natural id per example (CSV id column /
                                 // npz "ids" array), or empty
  // CSV labels given as class names: class_names[k] is the name of label k
  // (sorted byte-wise). Empty for numeric labels and for regression.
  std::vector<std::string> class_names;
};

// Ok when the fields agree: exactly one of labels (size entries, each >= 0)
// and targets (size * target_dim, target_dim >= 1, finite) is set, features
// has size * prod(feature_shape) finite values (every dim >= 1), ids is empty
// or has size entries, class_names is empty or every label indexes it.
absl::Status CheckArrayData(const ArrayData& data);

// Keeps only the examples at `indices` (in that order; each in [0, size)).
ArrayData Subset(const ArrayData& data, const std::vector<int64_t>& indices);

// ---- NumPy ----

// One decoded .npy array. `data` holds the elements in C order,
// little-endian whatever the file's byte order.
struct NpyArray {
  std::vector<int64_t> shape;  // empty for a 0-d array (one element)
  std::string descr;           // as in the header, e.g. "<f4", "|u1", ">i8"
  char kind = 0;  // 'b' bool, 'i' signed, 'u' unsigned, 'f' float, 'S' bytes,
                  // 'U' unicode (UCS-4)
  int64_t item_size = 0;     // bytes per element
  int64_t num_elements = 0;  // product of shape
  std::string data;          // num_elements * item_size bytes
};

// Parses the bytes of one .npy file; `name` (the file, or "a.npz:x.npy")
// appears in every error.
absl::StatusOr<NpyArray> ParseNpy(const std::string& bytes,
                                  const std::string& name);
// Reads and parses a .npy file.
absl::StatusOr<NpyArray> LoadNpy(const std::string& path);

// What y means. kAuto: integer, bool or string y gives labels (classification),
// float y gives targets (regression). kClassification also accepts float y
// whose values are all whole numbers; kRegression also accepts integer y
// (converted to float targets).
enum class ArrayTask { kAuto, kClassification, kRegression };
// "auto", "classification" or "regression".
absl::StatusOr<ArrayTask> ParseArrayTask(std::string_view name);

// Builds ArrayData from decoded arrays. x: at least one dimension (the
// examples); a 1-d x gives feature_shape {1}; any numeric dtype, converted to
// float32 (NaN, Inf or a value beyond float32's range is an error naming the
// example and flat index). y: at least one dimension, the same first
// dimension as x; labels need y of shape (n) or (n, 1) with values >= 0, or
// strings (|S, <U: class names, mapped to labels 0..K-1 in sorted byte order,
// kept in class_names); targets are y flattened per example (target_dim =
// product of y's other dims). ids (optional, may be null): shape (n), integers
// or strings, no empty string. The names appear in errors.
absl::StatusOr<ArrayData> ArrayDataFromNpy(
    const NpyArray& x, const std::string& x_name, const NpyArray& y,
    const std::string& y_name, const NpyArray* ids, const std::string& ids_name,
    ArrayTask task = ArrayTask::kAuto);

// Loads features and labels (or targets) from two .npy files, and ids from a
// third when `ids_path` is not empty.
absl::StatusOr<ArrayData> LoadNpyPair(const std::string& features_path,
                                      const std::string& labels_path,
                                      ArrayTask task = ArrayTask::kAuto,
                                      const std::string& ids_path = "");

// Array names inside an .npz archive (members "<name>.npy").
struct NpzNames {
  std::string features = "x";
  std::string labels = "y";  // labels or targets, see ArrayTask
  // Loaded when the archive has it, skipped when it does not; "" never loads.
  std::string ids = "ids";
};

// Largest uncompressed .npz member read (8 GiB).
inline constexpr uint64_t kMaxNpzMemberBytes = uint64_t{8} << 30;

// Reads x, y and (optional) ids from an .npz archive. A missing array is an
// error listing the arrays the archive has.
absl::StatusOr<ArrayData> LoadNpz(const std::string& path,
                                  const NpzNames& names = NpzNames(),
                                  ArrayTask task = ArrayTask::kAuto);
// Same for the archive's bytes in memory (fuzzing, tests); `name` appears in
// errors.
absl::StatusOr<ArrayData> ParseNpz(const std::string& bytes,
                                   const std::string& name,
                                   const NpzNames& names = NpzNames(),
                                   ArrayTask task = ArrayTask::kAuto);

// ---- CSV ----

// Which columns are what. Exactly one of label_column and target_columns is
// set. Every column that is not the label, a target, the id or dropped is a
// numeric feature, in header order (feature_shape {number of features}).
//
// Labels: when the label column's first value is a number, every value must
// be a whole number >= 0 (1 and 1.0 both mean class 1). Otherwise the values
// are class names: every value must be a non-empty name that is not a
// number, and the distinct names, sorted byte-wise, become labels 0..K-1
// (ArrayData::class_names holds them).
struct CsvOptions {
  std::string label_column;                 // classification
  std::vector<std::string> target_columns;  // regression, in this order
  std::string id_column;                    // optional: ArrayData::ids
  std::vector<std::string> drop_columns;    // ignored columns (must exist)
};

// Parses CSV text (RFC 4180: comma-separated, a header row, fields in double
// quotes may hold commas, newlines and doubled quotes). CRLF or LF line ends,
// a final newline optional, blank lines at the end ignored, a UTF-8 byte
// order mark skipped. Header names are trimmed of spaces; numbers (features,
// targets, numeric labels) are decimal or scientific, locale-independent,
// surrounded by optional spaces. Errors name `name`, the 1-based line where
// the record starts and the column: a wrong field count, a value that is not
// a number, NaN or Inf, an empty value (missing data is not filled in), a
// bad label, an empty id; also an empty file, a header without data rows,
// duplicate or empty header names, and columns named in `options` that the
// header lacks (the message lists the header's columns).
absl::StatusOr<ArrayData> ParseCsv(const std::string& text,
                                   const std::string& name,
                                   const CsvOptions& options);
// Reads and parses a CSV file.
absl::StatusOr<ArrayData> LoadCsv(const std::string& path,
                                  const CsvOptions& options);

// ---- partition by id ----

// Examples of shard `shard` out of `num_shards` when clients are natural
// groups: the distinct ids, sorted byte-wise, are dealt round-robin (id k to
// shard k % num_shards), so with as many ids as shards each client holds
// exactly one id, and every example of an id lands in one shard. Indices are
// ascending. Errors: no ids, num_shards < 1, shard outside [0, num_shards),
// fewer distinct ids than shards (a client would hold nothing; both numbers
// are named).
absl::StatusOr<std::vector<int64_t>> IdShardIndices(
    const std::vector<std::string>& ids, int num_shards, int shard);

// The distinct ids of shard `shard` under IdShardIndices' rule, sorted (for
// logs and reports). Same errors.
absl::StatusOr<std::vector<std::string>> IdShardIds(
    const std::vector<std::string>& ids, int num_shards, int shard);

}  // namespace fedfwd

#endif  // FEDFWD_COMMON_ARRAY_DATA_H_
