#include "server/checkpoint.h"

#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/codec.h"
#include "common/metrics.h"

namespace fedfwd {
namespace {

constexpr char kMagic[8] = {'F', 'F', 'W', 'D', 'C', 'K', 'P', 'T'};
constexpr size_t kHeader = 8 + 8 + 8;

void PutU64(uint64_t v, std::string* out) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}

uint64_t GetU64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

}  // namespace

std::string EncodeCheckpoint(const ckpt::Checkpoint& checkpoint) {
  std::string payload;
  checkpoint.SerializeToString(&payload);
  std::string out(kMagic, sizeof(kMagic));
  PutU64(payload.size(), &out);
  PutU64(Checksum(payload.data(), payload.size()), &out);
  out += payload;
  return out;
}

absl::StatusOr<ckpt::Checkpoint> DecodeCheckpoint(const std::string& bytes) {
  if (bytes.size() < kHeader ||
      std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) {
    return absl::DataLossError(
        "not a fedfwd checkpoint (bad magic or shorter than its header)");
  }
  const uint64_t length = GetU64(bytes.data() + 8);
  const uint64_t checksum = GetU64(bytes.data() + 16);
  if (length != bytes.size() - kHeader) {
    return absl::DataLossError(
        absl::StrCat("checkpoint is truncated or padded: header says ", length,
                     " payload bytes, file has ", bytes.size() - kHeader));
  }
  const char* payload = bytes.data() + kHeader;
  if (Checksum(payload, length) != checksum) {
    return absl::DataLossError("checkpoint checksum mismatch (file damaged)");
  }
  ckpt::Checkpoint c;
  if (!c.ParseFromArray(payload, static_cast<int>(length))) {
    return absl::DataLossError("checkpoint payload does not parse");
  }
  if (c.format() != kCheckpointFormat) {
    return absl::FailedPreconditionError(absl::StrCat(
        "checkpoint format ", c.format(), " is not ", kCheckpointFormat,
        " (written by another fedfwd version)"));
  }
  if (c.params().size() % sizeof(float) != 0) {
    return absl::DataLossError("checkpoint parameters are not float32");
  }
  return c;
}

absl::Status WriteCheckpoint(const std::string& path,
                             const ckpt::Checkpoint& checkpoint) {
  return WriteFileDurably(path, EncodeCheckpoint(checkpoint), 0600);
}

absl::StatusOr<ckpt::Checkpoint> ReadCheckpoint(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("no checkpoint at ", path));
  std::ostringstream ss;
  ss << in.rdbuf();
  auto c = DecodeCheckpoint(ss.str());
  if (!c.ok()) {
    return absl::Status(c.status().code(),
                        absl::StrCat(path, ": ", c.status().message()));
  }
  return c;
}

}  // namespace fedfwd
