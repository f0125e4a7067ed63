#include "common/model_file.h"

#include <xxhash.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace fedfwd {
namespace {

static_assert(sizeof(float) == 4 && std::numeric_limits<float>::is_iec559,
              "model files hold IEEE float32");
static_assert(sizeof(kModelFileMagic) == 9, "the magic is 8 bytes");

constexpr size_t kMagicBytes = 8;
constexpr size_t kPrefixBytes = kMagicBytes + 4;  // magic + header length

uint64_t ParamChecksum(const std::string& bytes, size_t offset) {
  return XXH64(bytes.data() + offset, bytes.size() - offset, 0);
}

absl::Status Corrupt(const std::string& name, const std::string& what) {
  return absl::DataLossError(absl::StrCat("model file ", name, ": ", what));
}

// Header field accessors: DataLoss naming the field when it is missing or
// of the wrong type.
absl::Status GetString(const nlohmann::json& j, const char* key,
                       const std::string& name, std::string* out) {
  auto it = j.find(key);
  if (it == j.end()) {
    return Corrupt(name, absl::StrCat("header has no \"", key, "\" field"));
  }
  if (!it->is_string()) {
    return Corrupt(name,
                   absl::StrCat("header field \"", key, "\" is not a string"));
  }
  *out = it->get<std::string>();
  return absl::OkStatus();
}

absl::Status GetInt(const nlohmann::json& j, const char* key,
                    const std::string& name, int64_t* out) {
  auto it = j.find(key);
  if (it == j.end()) {
    return Corrupt(name, absl::StrCat("header has no \"", key, "\" field"));
  }
  if (it->is_number_unsigned()) {
    const uint64_t v = it->get<uint64_t>();
    if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return Corrupt(name, absl::StrCat("header field \"", key, "\" (", v,
                                        ") is out of range"));
    }
    *out = static_cast<int64_t>(v);
    return absl::OkStatus();
  }
  if (!it->is_number_integer()) {
    return Corrupt(
        name, absl::StrCat("header field \"", key, "\" is not an integer"));
  }
  *out = it->get<int64_t>();
  return absl::OkStatus();
}

absl::Status GetDouble(const nlohmann::json& j, const char* key,
                       const std::string& name, double* out) {
  auto it = j.find(key);
  if (it == j.end()) {
    return Corrupt(name, absl::StrCat("header has no \"", key, "\" field"));
  }
  if (!it->is_number()) {
    return Corrupt(name,
                   absl::StrCat("header field \"", key, "\" is not a number"));
  }
  *out = it->get<double>();
  return absl::OkStatus();
}

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

}  // namespace

std::string EncodeModelFile(const ModelFileHeader& h,
                            const std::vector<float>& params) {
  std::string payload(params.size() * sizeof(float), '\0');
  auto* p = reinterpret_cast<unsigned char*>(&payload[0]);
  for (size_t i = 0; i < params.size(); ++i) {
    uint32_t v;
    std::memcpy(&v, &params[i], 4);
    p[4 * i + 0] = static_cast<unsigned char>(v);
    p[4 * i + 1] = static_cast<unsigned char>(v >> 8);
    p[4 * i + 2] = static_cast<unsigned char>(v >> 16);
    p[4 * i + 3] = static_cast<unsigned char>(v >> 24);
  }
  nlohmann::json j;
  j["model"] = h.model;
  j["dataset"] = h.dataset;
  j["num_params"] = static_cast<int64_t>(params.size());
  j["checksum"] = std::to_string(XXH64(payload.data(), payload.size(), 0));
  j["round"] = h.round;
  j["test_acc"] = std::isfinite(h.test_acc) ? h.test_acc : -1.0;
  j["config_yaml"] = h.config_yaml;
  j["kind"] = h.kind;
  // Invalid UTF-8 in a string is replaced rather than thrown on.
  const std::string header =
      j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  const uint32_t len = static_cast<uint32_t>(header.size());

  std::string out;
  out.reserve(kPrefixBytes + header.size() + payload.size());
  out.append(kModelFileMagic, kMagicBytes);
  for (int shift = 0; shift < 32; shift += 8) {
    out.push_back(static_cast<char>((len >> shift) & 0xffu));
  }
  out += header;
  out += payload;
  return out;
}

absl::StatusOr<ModelFile> ParseModelFile(const std::string& bytes,
                                         const std::string& name) {
  if (bytes.size() < kMagicBytes ||
      std::memcmp(bytes.data(), kModelFileMagic, kMagicBytes) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, " is not a fedfwd model file: it does not start with \"",
        kModelFileMagic,
        "\" (headerless raw float32 files are not accepted; re-save the "
        "model with this version)"));
  }
  if (bytes.size() < kPrefixBytes) {
    return Corrupt(name, absl::StrCat("truncated: ", bytes.size(),
                                      " bytes, too short for the header "
                                      "length"));
  }
  const auto* u = reinterpret_cast<const unsigned char*>(bytes.data());
  const uint64_t header_len = uint64_t{u[8]} | (uint64_t{u[9]} << 8) |
                              (uint64_t{u[10]} << 16) | (uint64_t{u[11]} << 24);
  if (header_len > bytes.size() - kPrefixBytes) {
    return Corrupt(name,
                   absl::StrCat("truncated: header of ", header_len,
                                " bytes but only ", bytes.size() - kPrefixBytes,
                                " bytes follow the header length"));
  }
  const char* header_begin = bytes.data() + kPrefixBytes;
  const nlohmann::json j = nlohmann::json::parse(
      header_begin, header_begin + header_len, /*cb=*/nullptr,
      /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return Corrupt(name, "header is not valid JSON");
  }
  if (!j.is_object()) {
    return Corrupt(name, "header is not a JSON object");
  }

  ModelFile f;
  ModelFileHeader& h = f.header;
  std::string checksum_text;
  RETURN_IF_ERROR(GetString(j, "model", name, &h.model));
  RETURN_IF_ERROR(GetString(j, "dataset", name, &h.dataset));
  RETURN_IF_ERROR(GetInt(j, "num_params", name, &h.num_params));
  RETURN_IF_ERROR(GetString(j, "checksum", name, &checksum_text));
  RETURN_IF_ERROR(GetInt(j, "round", name, &h.round));
  RETURN_IF_ERROR(GetDouble(j, "test_acc", name, &h.test_acc));
  RETURN_IF_ERROR(GetString(j, "config_yaml", name, &h.config_yaml));
  RETURN_IF_ERROR(GetString(j, "kind", name, &h.kind));
  uint64_t checksum = 0;
  if (!absl::SimpleAtoi(checksum_text, &checksum)) {
    return Corrupt(name, absl::StrCat("header checksum \"", checksum_text,
                                      "\" is not a decimal uint64"));
  }

  const size_t payload_offset = kPrefixBytes + static_cast<size_t>(header_len);
  const uint64_t payload_bytes = bytes.size() - payload_offset;
  if (h.num_params < 0 ||
      static_cast<uint64_t>(h.num_params) >
          std::numeric_limits<uint64_t>::max() / sizeof(float)) {
    return Corrupt(name, absl::StrCat("header num_params ", h.num_params,
                                      " is out of range"));
  }
  const uint64_t expected_bytes =
      static_cast<uint64_t>(h.num_params) * sizeof(float);
  if (payload_bytes != expected_bytes) {
    return Corrupt(
        name,
        absl::StrCat(payload_bytes < expected_bytes ? "truncated: " : "",
                     "parameters take ", payload_bytes, " bytes; expected ",
                     expected_bytes, " (", h.num_params, " float32 values)"));
  }
  const uint64_t actual = ParamChecksum(bytes, payload_offset);
  if (actual != checksum) {
    return Corrupt(name,
                   absl::StrCat("checksum mismatch: header says ", checksum,
                                ", parameters hash to ", actual));
  }

  f.params.resize(static_cast<size_t>(h.num_params));
  const unsigned char* p = u + payload_offset;
  for (size_t i = 0; i < f.params.size(); ++i, p += 4) {
    const uint32_t v = uint32_t{p[0]} | (uint32_t{p[1]} << 8) |
                       (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
    std::memcpy(&f.params[i], &v, 4);
  }
  return f;
}

absl::StatusOr<ModelFile> ReadModelFile(const std::string& path) {
  std::unique_ptr<std::FILE, FileCloser> file(std::fopen(path.c_str(), "rb"));
  if (!file) {
    const int err = errno;
    // ENOENT -> NotFound, EACCES -> PermissionDenied, ...
    return absl::Status(absl::ErrnoToStatusCode(err),
                        absl::StrCat("cannot open model file ", path, ": ",
                                     std::generic_category().message(err)));
  }
  std::string bytes;
  char buf[1 << 16];
  size_t got;
  errno = 0;
  while ((got = std::fread(buf, 1, sizeof buf, file.get())) > 0) {
    bytes.append(buf, got);
  }
  if (std::ferror(file.get())) {
    // Directories open fine on Linux and fail here with EISDIR.
    const int err = errno;
    return absl::DataLossError(
        absl::StrCat("cannot read model file ", path, ": ",
                     std::generic_category().message(err)));
  }
  return ParseModelFile(bytes, path);
}

ModelFileHeader RunModelHeader(const Config& config, const std::string& kind,
                               int64_t round, double test_acc) {
  ModelFileHeader h;
  h.model = config.model;
  h.dataset = config.dataset.name;
  h.kind = kind;
  h.round = round;
  h.test_acc = test_acc;
  h.config_yaml = ConfigToYaml(config);
  return h;
}

}  // namespace fedfwd
