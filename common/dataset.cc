#include "common/dataset.h"

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/array_data.h"
#include "common/rng.h"
#include "common/status_macros.h"

namespace fedfwd {
namespace {

namespace fs = std::filesystem;

// Largest payload accepted (elements of one byte): bigger dims are treated
// as a corrupt header rather than an allocation request.
constexpr int64_t kMaxIdxElements = int64_t{1} << 31;
// Header bytes at most: magic + 255 dims of 4 bytes.
constexpr int64_t kMaxIdxHeader = 4 + 4 * 255;

uint32_t ReadBigEndian32(const std::string& bytes, size_t offset) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data()) + offset;
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) |
         (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

bool IsGzip(const std::string& bytes) {
  return bytes.size() >= 2 && static_cast<unsigned char>(bytes[0]) == 0x1f &&
         static_cast<unsigned char>(bytes[1]) == 0x8b;
}

// Inflates all gzip members of `in`, refusing output beyond what any valid
// IDX file can hold.
absl::StatusOr<std::string> Gunzip(const std::string& in,
                                   const std::string& name) {
  const size_t max_out =
      static_cast<size_t>(kMaxIdxElements + kMaxIdxHeader) + 1;
  z_stream zs;
  std::memset(&zs, 0, sizeof(zs));
  if (inflateInit2(&zs, 15 + 16) != Z_OK) {
    return absl::InternalError("inflateInit2 failed");
  }
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  std::string out;
  char buf[1 << 16];
  int ret = Z_OK;
  while (true) {
    zs.next_out = reinterpret_cast<Bytef*>(buf);
    zs.avail_out = sizeof(buf);
    ret = inflate(&zs, Z_NO_FLUSH);
    out.append(buf, sizeof(buf) - zs.avail_out);
    if (out.size() > max_out) {
      inflateEnd(&zs);
      return absl::InvalidArgumentError(absl::StrCat(
          "gzip data in ", name, " inflates beyond any valid IDX size"));
    }
    if (ret == Z_STREAM_END) {
      // Concatenated members: continue with the next one, if any.
      if (zs.avail_in == 0) break;
      if (inflateReset(&zs) != Z_OK) break;
      continue;
    }
    if (ret == Z_OK) continue;
    if (ret == Z_BUF_ERROR && zs.avail_in == 0) {
      inflateEnd(&zs);
      return absl::InvalidArgumentError(
          absl::StrCat("truncated gzip data in ", name));
    }
    std::string msg = zs.msg != nullptr ? zs.msg : absl::StrCat("code ", ret);
    inflateEnd(&zs);
    return absl::InvalidArgumentError(
        absl::StrCat("corrupt gzip data in ", name, ": ", msg));
  }
  inflateEnd(&zs);
  return out;
}

// The first existing path among `base` and `base`.gz.
absl::StatusOr<std::string> FindIdx(const std::string& dir,
                                    const std::string& base) {
  for (const std::string& name : {base, base + ".gz"}) {
    std::string path = (fs::path(dir) / name).string();
    std::error_code ec;
    if (fs::is_regular_file(path, ec)) return path;
  }
  return absl::NotFoundError(absl::StrCat("dataset file not found in '", dir,
                                          "': tried ", base, " and ", base,
                                          ".gz"));
}

constexpr char kCifarSubdir[] = "cifar-10-batches-bin";
constexpr char kCifarUrl[] =
    "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";

std::vector<std::string> CifarFileNames(Split split) {
  if (split == Split::kTest) return {"test_batch.bin"};
  std::vector<std::string> names;
  for (int i = 1; i <= 5; ++i) {
    names.push_back(absl::StrCat("data_batch_", i, ".bin"));
  }
  return names;
}

// Full paths of the split's batch files: all in `root` or all in
// `root`/cifar-10-batches-bin. NotFound names the missing files, where they
// were looked for, and where to get them.
absl::StatusOr<std::vector<std::string>> FindCifarFiles(const std::string& root,
                                                        Split split) {
  const std::vector<std::string> names = CifarFileNames(split);
  const std::vector<fs::path> folders = {fs::path(root),
                                         fs::path(root) / kCifarSubdir};
  // The folder to blame in the error: the first one holding any batch file.
  const fs::path* report = &folders[0];
  std::vector<std::string> report_missing;
  for (const fs::path& folder : folders) {
    std::vector<std::string> missing, found;
    for (const std::string& name : names) {
      std::error_code ec;
      const std::string path = (folder / name).string();
      if (fs::is_regular_file(path, ec)) {
        found.push_back(path);
      } else {
        missing.push_back(name);
      }
    }
    if (missing.empty()) return found;
    if (found.size() > 0 && report_missing.empty()) {
      report = &folder;
      report_missing = missing;
    }
  }
  if (report_missing.empty()) report_missing = names;
  const std::string expected = split == Split::kTrain
                                   ? "data_batch_1.bin .. data_batch_5.bin"
                                   : "test_batch.bin";
  std::string hint;
  std::error_code ec;
  if (fs::is_regular_file(fs::path(root) / "cifar-10-binary.tar.gz", ec)) {
    hint = " (found cifar-10-binary.tar.gz there: extract it first)";
  }
  return absl::NotFoundError(absl::StrCat(
      "CIFAR-10 ", split == Split::kTrain ? "train" : "test",
      " split not found: missing ", absl::StrJoin(report_missing, ", "),
      " in '", report->string(), "'", hint, ". Expected ", expected, " in '",
      root, "' or in '", (fs::path(root) / kCifarSubdir).string(),
      "'. Download ", kCifarUrl,
      ", extract it and point dataset.data_dir at the extracted folder"));
}

absl::StatusOr<ImageSet> LoadCifar(const std::string& dir, Split split,
                                   int64_t limit) {
  const std::string root = dir.empty() ? DefaultDataDir("cifar10") : dir;
  ASSIGN_OR_RETURN(std::vector<std::string> paths, FindCifarFiles(root, split));
  ImageSet set;
  set.channels = 3;
  set.rows = 32;
  set.cols = 32;
  for (const std::string& path : paths) {
    if (limit > 0 && set.size >= limit) break;
    ASSIGN_OR_RETURN(std::string bytes, ReadWholeFile(path));
    ASSIGN_OR_RETURN(
        ImageSet batch,
        ParseCifarBatch(bytes, path, limit > 0 ? limit - set.size : 0));
    set.size += batch.size;
    set.pixels.insert(set.pixels.end(), batch.pixels.begin(),
                      batch.pixels.end());
    set.labels.insert(set.labels.end(), batch.labels.begin(),
                      batch.labels.end());
  }
  return set;
}

}  // namespace

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    return absl::NotFoundError(absl::StrCat("file not found: ", path));
  }
  if (fs::is_directory(path, ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected a file, found a directory: ", path));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) {
    return absl::InvalidArgumentError(absl::StrCat("error reading ", path));
  }
  return std::move(buf).str();
}

absl::StatusOr<IdxArray> ParseIdx(const std::string& bytes,
                                  const std::string& name) {
  if (IsGzip(bytes)) {
    ASSIGN_OR_RETURN(std::string raw, Gunzip(bytes, name));
    if (IsGzip(raw)) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad IDX magic in ", name, ": gzip inside gzip"));
    }
    return ParseIdx(raw, name);
  }
  if (bytes.size() < 4) {
    return absl::InvalidArgumentError(absl::StrCat("truncated IDX header in ",
                                                   name, ": ", bytes.size(),
                                                   " bytes, need at least 4"));
  }
  const uint32_t magic = ReadBigEndian32(bytes, 0);
  if ((magic >> 16) != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "bad IDX magic in %s: 0x%08x (expected 0x0000TTDD)", name, magic));
  }
  const uint32_t type = (magic >> 8) & 0xff;
  const uint32_t ndims = magic & 0xff;
  if (type != 0x08) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "unsupported IDX element type 0x%02x in %s (only 0x08, unsigned byte, "
        "is supported)",
        type, name));
  }
  if (ndims == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad IDX header in ", name, ": 0 dimensions"));
  }
  const size_t header = 4 + 4 * size_t{ndims};
  if (bytes.size() < header) {
    return absl::InvalidArgumentError(
        absl::StrCat("truncated IDX header in ", name, ": ", bytes.size(),
                     " bytes, need ", header, " for ", ndims, " dimensions"));
  }
  IdxArray out;
  int64_t elements = 1;
  for (uint32_t i = 0; i < ndims; ++i) {
    const int64_t dim = ReadBigEndian32(bytes, 4 + 4 * i);
    out.dims.push_back(dim);
    // dim < 2^32 and elements <= 2^31 before the product: no overflow.
    elements *= dim;
    if (elements > kMaxIdxElements) {
      return absl::InvalidArgumentError(absl::StrCat(
          "absurd IDX dimensions in ", name, ": more than 2^31 elements"));
    }
  }
  const int64_t got = static_cast<int64_t>(bytes.size() - header);
  if (got < elements) {
    return absl::InvalidArgumentError(
        absl::StrCat("truncated IDX payload in ", name, ": expected ", elements,
                     " bytes, got ", got));
  }
  if (got > elements) {
    return absl::InvalidArgumentError(
        absl::StrCat("trailing bytes in ", name, ": payload should be ",
                     elements, " bytes, got ", got));
  }
  out.data.assign(bytes.begin() + header, bytes.end());
  return out;
}

absl::StatusOr<IdxArray> ReadIdxFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string bytes, ReadWholeFile(path));
  return ParseIdx(bytes, path);
}

absl::StatusOr<ImageSet> ParseCifarBatch(const std::string& bytes,
                                         const std::string& name,
                                         int64_t limit) {
  const int64_t total = static_cast<int64_t>(bytes.size());
  if (total == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("CIFAR-10 batch file ", name, " is empty"));
  }
  if (total % kCifarRecordBytes != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CIFAR-10 batch file ", name, " has ", total,
        " bytes, not a multiple of the ", kCifarRecordBytes,
        "-byte record (1 label + 3072 pixels): truncated or not a CIFAR-10 "
        "binary batch"));
  }
  int64_t n = total / kCifarRecordBytes;
  if (limit > 0 && limit < n) n = limit;
  constexpr int64_t kPixels = kCifarRecordBytes - 1;
  ImageSet set;
  set.size = n;
  set.channels = 3;
  set.rows = 32;
  set.cols = 32;
  set.pixels.resize(static_cast<size_t>(n * kPixels));
  set.labels.resize(static_cast<size_t>(n));
  const auto* src = reinterpret_cast<const uint8_t*>(bytes.data());
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* record = src + i * kCifarRecordBytes;
    if (record[0] > 9) {
      return absl::InvalidArgumentError(
          absl::StrCat("label ", static_cast<int>(record[0]), " of record ", i,
                       " in ", name, " is out of range [0, 10)"));
    }
    set.labels[i] = record[0];
    std::memcpy(set.pixels.data() + i * kPixels, record + 1, kPixels);
  }
  return set;
}

absl::StatusOr<DatasetInfo> GetDatasetInfo(const std::string& name) {
  if (name == "mnist") {
    return DatasetInfo{name, 1, 28, 28, 10, 0.1307f, 0.3081f};
  }
  if (name == "fashion-mnist") {
    return DatasetInfo{name, 1, 28, 28, 10, 0.2860f, 0.3530f};
  }
  if (name == "cifar10") {
    return DatasetInfo{name, 3, 32, 32, 10, 0.4734f, 0.2516f};
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown dataset '", name, "' (known: mnist, fashion-mnist, cifar10)"));
}

std::string DefaultDataDir(const std::string& dataset_name) {
  if (dataset_name == "fashion-mnist") {
    return "/usr/share/datasets/fashion-mnist";
  }
  if (dataset_name != "mnist" && dataset_name != "cifar10") return "";
  const char* env = std::getenv("FEDFWD_DATA");
  if (env != nullptr && env[0] != '\0') {
    return (fs::path(env) / dataset_name).string();
  }
  char exe[4096];
  const ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (len > 0) {
    exe[len] = '\0';
    const fs::path candidate =
        (fs::path(exe).parent_path() / ".." / ".." / "data" / dataset_name)
            .lexically_normal();
    std::error_code ec;
    if (fs::is_directory(candidate, ec)) return candidate.string();
  }
#ifdef FEDFWD_SOURCE_DIR
  // A build folder outside the checkout: the checkout it was built from.
  {
    const fs::path candidate =
        fs::path(FEDFWD_SOURCE_DIR) / "data" / dataset_name;
    std::error_code ec;
    if (fs::is_directory(candidate, ec)) return candidate.string();
  }
#endif
  return (fs::path(".") / "data" / dataset_name).string();
}

absl::StatusOr<ImageSet> LoadImageSet(const std::string& dataset_name,
                                      const std::string& dir, Split split,
                                      int64_t limit) {
  ASSIGN_OR_RETURN(DatasetInfo info, GetDatasetInfo(dataset_name));
  if (limit < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("dataset limit must be >= 0, got ", limit));
  }
  if (dataset_name == "cifar10") return LoadCifar(dir, split, limit);
  const std::string root = dir.empty() ? DefaultDataDir(dataset_name) : dir;
  const std::string prefix = split == Split::kTrain ? "train" : "t10k";
  ASSIGN_OR_RETURN(std::string images_path,
                   FindIdx(root, prefix + "-images-idx3-ubyte"));
  ASSIGN_OR_RETURN(std::string labels_path,
                   FindIdx(root, prefix + "-labels-idx1-ubyte"));
  ASSIGN_OR_RETURN(IdxArray images, ReadIdxFile(images_path));
  ASSIGN_OR_RETURN(IdxArray labels, ReadIdxFile(labels_path));

  if (images.dims.size() != 3 || images.dims[1] != info.rows ||
      images.dims[2] != info.cols) {
    std::string dims;
    for (int64_t d : images.dims) {
      absl::StrAppend(&dims, dims.empty() ? "" : ",", d);
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "images in ", images_path, " have dims [", dims, "], expected [N,",
        info.rows, ",", info.cols, "] for ", dataset_name));
  }
  const int64_t n = images.dims[0];
  if (labels.dims.size() != 1 || labels.dims[0] != n) {
    return absl::InvalidArgumentError(
        absl::StrCat("labels in ", labels_path, " do not match the ", n,
                     " images in ", images_path, " (expected dims [", n, "])"));
  }
  for (int64_t i = 0; i < n; ++i) {
    if (labels.data[i] >= info.num_classes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "label ", static_cast<int>(labels.data[i]), " at index ", i, " in ",
          labels_path, " is out of range [0, ", info.num_classes, ")"));
    }
  }

  ImageSet set;
  set.size = (limit > 0 && limit < n) ? limit : n;
  set.channels = info.channels;
  set.rows = info.rows;
  set.cols = info.cols;
  const int64_t per_image = info.channels * info.rows * info.cols;
  images.data.resize(set.size * per_image);
  labels.data.resize(set.size);
  set.pixels = std::move(images.data);
  set.labels = std::move(labels.data);
  return set;
}

std::vector<int64_t> IidShardIndices(int64_t n, int num_shards, int shard,
                                     uint64_t seed) {
  if (n <= 0 || num_shards <= 0 || shard < 0 || shard >= num_shards) {
    return {};
  }
  const std::vector<int64_t> perm =
      RandomPermutation(n, seed, RngDomain::kPartition, /*stream=*/0);
  // n < 2^63 / num_shards for any dataset we can hold, so no overflow.
  const int64_t begin = shard * n / num_shards;
  const int64_t end = (shard + 1) * n / num_shards;
  return std::vector<int64_t>(perm.begin() + begin, perm.begin() + end);
}

ImageSet Subset(const ImageSet& set, const std::vector<int64_t>& indices) {
  ImageSet out;
  out.channels = set.channels;
  out.rows = set.rows;
  out.cols = set.cols;
  out.class_names = set.class_names;
  const int64_t per_image = set.channels * set.rows * set.cols;
  if (set.has_features()) {
    out.features.reserve(indices.size() * per_image);
  } else {
    out.pixels.reserve(indices.size() * per_image);
  }
  out.target_dim = set.target_dim;
  if (!set.regression()) out.labels.reserve(indices.size());
  out.size = 0;
  // Indices outside [0, size) are a caller bug; they are skipped rather than
  // read out of bounds.
  for (int64_t i : indices) {
    if (i < 0 || i >= set.size) continue;
    if (set.has_features()) {
      out.features.insert(out.features.end(),
                          set.features.begin() + i * per_image,
                          set.features.begin() + (i + 1) * per_image);
    } else {
      out.pixels.insert(out.pixels.end(), set.pixels.begin() + i * per_image,
                        set.pixels.begin() + (i + 1) * per_image);
    }
    if (set.regression()) {
      out.targets.insert(out.targets.end(),
                         set.targets.begin() + i * set.target_dim,
                         set.targets.begin() + (i + 1) * set.target_dim);
    } else {
      out.labels.push_back(set.labels[i]);
    }
    if (!set.ids.empty()) out.ids.push_back(set.ids[i]);
    ++out.size;
  }
  return out;
}

std::vector<uint8_t> PartitionLabels(const ImageSet& set) {
  if (!set.regression()) return set.labels;
  return std::vector<uint8_t>(static_cast<size_t>(set.size), 0);
}

int PartitionClasses(const ImageSet& set, const DatasetInfo& info) {
  return set.regression() ? 1 : static_cast<int>(info.num_classes);
}

bool IsFileDataset(const std::string& name) {
  return name == "npz" || name == "csv" || name == "npy";
}

std::string FileDataPath(const std::string& name, const std::string& dir,
                         bool train) {
  if (name == "npy") {  // a pair (or three) of files: train_x.npy, ...
    return absl::StrCat(dir, "/", train ? "train_*.npy" : "test_*.npy");
  }
  return absl::StrCat(dir, "/", train ? "train." : "test.", name);
}

absl::StatusOr<ImageSet> LoadDataSplit(const std::string& dataset_name,
                                       const FileDataOptions& file,
                                       const std::string& dir, Split split,
                                       int64_t limit) {
  if (!IsFileDataset(dataset_name)) {
    return LoadImageSet(dataset_name, dir, split, limit);
  }
  if (dir.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dataset ", dataset_name, " needs dataset.data_dir (the folder with ",
        FileDataPath(dataset_name, "", true).substr(1), " and ",
        FileDataPath(dataset_name, "", false).substr(1), ")"));
  }
  const std::string path =
      FileDataPath(dataset_name, dir, split == Split::kTrain);
  absl::StatusOr<ArrayData> data;
  const ArrayTask task =
      file.regression ? ArrayTask::kRegression : ArrayTask::kClassification;
  if (dataset_name == "npy") {
    const std::string prefix =
        absl::StrCat(dir, "/", split == Split::kTrain ? "train_" : "test_");
    data = LoadNpyPair(
        absl::StrCat(prefix, file.features.empty() ? "x" : file.features,
                     ".npy"),
        absl::StrCat(prefix, file.label.empty() ? "y" : file.label, ".npy"),
        task, file.id.empty() ? "" : absl::StrCat(prefix, file.id, ".npy"));
  } else if (dataset_name == "npz") {
    NpzNames names;
    if (!file.features.empty()) names.features = file.features;
    if (!file.label.empty()) names.labels = file.label;
    names.ids = file.id;
    data = LoadNpz(path, names, task);
  } else {
    CsvOptions o;
    if (file.regression) {
      o.target_columns = {file.label.empty() ? "target" : file.label};
    } else {
      o.label_column = file.label.empty() ? "label" : file.label;
    }
    o.id_column = file.id;
    data = LoadCsv(path, o);
  }
  if (!data.ok()) return data.status();
  if (!file.id.empty() && data->ids.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": no id array '", file.id, "'"));
  }
  if (file.regression && data->targets.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": task regression needs float targets"));
  }
  if (!file.regression && data->labels.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        path,
        ": labels must be integers (classification); float targets need "
        "'task: regression'"));
  }
  const std::vector<int64_t>& shape = data->feature_shape;
  ImageSet out;
  if (shape.size() == 1) {
    out.channels = 1;
    out.rows = 1;
    out.cols = shape[0];
  } else if (shape.size() == 2) {
    out.channels = 1;
    out.rows = shape[0];
    out.cols = shape[1];
  } else if (shape.size() == 3) {
    out.channels = shape[0];
    out.rows = shape[1];
    out.cols = shape[2];
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": features of ", shape.size(),
        " dimensions per example; fedfwd takes (d), (h, w) or (c, h, w)"));
  }
  const int64_t n =
      limit > 0 ? std::min<int64_t>(limit, data->size) : data->size;
  const int64_t per = out.channels * out.rows * out.cols;
  out.size = n;
  out.features.assign(data->features.begin(), data->features.begin() + n * per);
  if (file.regression) {
    out.target_dim = data->target_dim;
    out.targets.assign(data->targets.begin(),
                       data->targets.begin() + n * data->target_dim);
  } else {
    out.labels.resize(static_cast<size_t>(n));
  }
  for (int64_t i = 0; i < n && !file.regression; ++i) {
    if (data->labels[i] > 255) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": example ", i, " has label ", data->labels[i],
                       "; fedfwd takes at most 256 classes (0..255)"));
    }
    out.labels[i] = static_cast<uint8_t>(data->labels[i]);
  }
  if (!data->ids.empty()) {
    out.ids.assign(data->ids.begin(), data->ids.begin() + n);
  }
  out.class_names = data->class_names;
  return out;
}

DatasetInfo FileDataInfo(const std::string& name,
                         const std::vector<int64_t>& shape, int64_t classes,
                         bool regression) {
  DatasetInfo info{name,    shape.at(0), shape.at(1), shape.at(2),
                   classes, 0.0f,        1.0f};
  info.regression = regression;
  return info;
}

absl::StatusOr<DatasetInfo> DescribeFileData(const std::string& name,
                                             const FileDataOptions& options,
                                             const ImageSet& split) {
  if (split.size == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("dataset ", name, ": no examples"));
  }
  if (split.regression()) {
    DatasetInfo info = FileDataInfo(
        name, {split.channels, split.rows, split.cols}, split.target_dim, true);
    RETURN_IF_ERROR(CheckFileData(split, info, absl::StrCat("dataset ", name)));
    return info;
  }
  int64_t top = 0;
  for (uint8_t l : split.labels) top = std::max<int64_t>(top, l);
  DatasetInfo info =
      FileDataInfo(name, {split.channels, split.rows, split.cols},
                   options.classes > 0 ? options.classes : top + 1);
  if (!split.class_names.empty() && options.classes == 0) {
    info.num_classes = static_cast<int64_t>(split.class_names.size());
  }
  info.class_names = split.class_names;
  RETURN_IF_ERROR(CheckFileData(split, info, absl::StrCat("dataset ", name)));
  return info;
}

absl::StatusOr<DatasetInfo> DatasetInfoFor(const std::string& name,
                                           const FileDataOptions& file,
                                           const std::string& dir) {
  if (!IsFileDataset(name)) return GetDatasetInfo(name);
  ASSIGN_OR_RETURN(ImageSet test, LoadDataSplit(name, file, dir, Split::kTest));
  return DescribeFileData(name, file, test);
}

absl::Status CheckFileData(const ImageSet& split, const DatasetInfo& info,
                           const std::string& what) {
  if (split.channels != info.channels || split.rows != info.rows ||
      split.cols != info.cols) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": examples of shape ", split.channels, "x",
                     split.rows, "x", split.cols, ", the run's are ",
                     info.channels, "x", info.rows, "x", info.cols));
  }
  if (split.regression() != info.regression) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, split.regression() ? ": float targets" : ": class labels",
        ", the run is ",
        info.regression ? "a regression" : "a classification"));
  }
  if (split.regression()) {
    if (split.target_dim != info.num_classes) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": ", split.target_dim, " targets per example, the run's are ",
          info.num_classes));
    }
    return absl::OkStatus();
  }
  for (int64_t i = 0; i < split.size; ++i) {
    if (split.labels[i] >= info.num_classes) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": example ", i, " has label ",
                       int{split.labels[i]}, ", the run has ", info.num_classes,
                       " classes (set dataset.classes)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace fedfwd
