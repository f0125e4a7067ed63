// The saved-model file format: final_model.bin and best_model.bin, written
// by every run and read by fedfwd-eval.
//
// Layout:
//   8 bytes   magic "FFWDMDL1"
//   4 bytes   uint32 little endian: H, the header length
//   H bytes   JSON object (UTF-8): the header
//   rest      num_params float32 little endian: the parameters, in the
//             model's registration order
//
// JSON header fields (all required; unknown fields are ignored so later
// writers may add some):
//   model       string  model name (config `model`)
//   dataset     string  dataset name
//   num_params  int     number of float32 parameters that follow
//   checksum    string  XXH64 (seed 0) of the parameter bytes, as the
//                       decimal text of the uint64 (JSON numbers lose
//                       precision above 2^53)
//   round       int     round (or optimizer step) of the snapshot
//   test_acc    number  test accuracy of the snapshot, -1 if unknown
//   config_yaml string  the effective config of the run
//   kind        string  "final" or "best"
//
// Files without the magic (including headerless raw float32 dumps) are
// rejected, never guessed at. Writing atomically is the caller's job
// (MetricsWriter::WriteFileAtomically). No libtorch here. All functions are
// pure (ReadModelFile only reads its file) and thread-safe.
#ifndef FEDFWD_COMMON_MODEL_FILE_H_
#define FEDFWD_COMMON_MODEL_FILE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/config.h"

namespace fedfwd {

inline constexpr char kModelFileMagic[] = "FFWDMDL1";  // 8 bytes, no NUL

struct ModelFileHeader {
  std::string model, dataset, kind, config_yaml;
  int64_t num_params = 0;
  int64_t round = 0;
  double test_acc = -1;
};

// The header of a model saved by a run of `config` (model and dataset names,
// the effective config as YAML).
ModelFileHeader RunModelHeader(const Config& config, const std::string& kind,
                               int64_t round, double test_acc);

// Serializes `params` with header `h`. num_params and the checksum are
// computed from `params` (h.num_params is ignored); a non-finite test_acc is
// written as -1 (unknown).
std::string EncodeModelFile(const ModelFileHeader& h,
                            const std::vector<float>& params);

struct ModelFile {
  ModelFileHeader header;  // num_params == params.size()
  std::vector<float> params;
};

// Parses a whole model file held in `bytes`; `name` (usually the path) is
// named in every error. Errors: InvalidArgument when it is not a fedfwd
// model file (bad magic); DataLoss when it is one but is truncated, has a
// bad or incomplete JSON header, a payload of the wrong size or a checksum
// mismatch.
absl::StatusOr<ModelFile> ParseModelFile(const std::string& bytes,
                                         const std::string& name);

// Reads and parses the file at `path`. Opening errors map from errno
// (NotFound when it does not exist, PermissionDenied, ...); a read error is
// DataLoss; the rest is as ParseModelFile. Every message names `path`.
absl::StatusOr<ModelFile> ReadModelFile(const std::string& path);

}  // namespace fedfwd

#endif  // FEDFWD_COMMON_MODEL_FILE_H_
