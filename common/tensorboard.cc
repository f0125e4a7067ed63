#include "common/tensorboard.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/crc32c.h"

namespace fedfwd {
namespace {

constexpr size_t kHeaderBytes = 12;  // length + its CRC
constexpr size_t kFooterBytes = 4;   // CRC of the data

void PutLe32(uint32_t v, char* out) {
  for (int i = 0; i < 4; ++i) out[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
void PutLe64(uint64_t v, char* out) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
uint32_t GetLe32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}
uint64_t GetLe64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

}  // namespace

std::string FrameTfRecord(absl::string_view data) {
  std::string out(kHeaderBytes + data.size() + kFooterBytes, '\0');
  PutLe64(data.size(), &out[0]);
  PutLe32(crc32c::Mask(crc32c::Value(out.data(), 8)), &out[8]);
  if (!data.empty()) std::memcpy(&out[kHeaderBytes], data.data(), data.size());
  PutLe32(crc32c::Mask(crc32c::Value(data)), &out[kHeaderBytes + data.size()]);
  return out;
}

absl::StatusOr<TfRecords> ParseTfRecords(absl::string_view bytes) {
  TfRecords result;
  size_t pos = 0;
  while (pos < bytes.size()) {
    const size_t index = result.records.size();
    if (bytes.size() - pos < kHeaderBytes) {
      result.truncated_tail = true;
      break;
    }
    const char* header = bytes.data() + pos;
    const uint32_t want_len_crc = GetLe32(header + 8);
    const uint32_t got_len_crc = crc32c::Mask(crc32c::Value(header, 8));
    if (want_len_crc != got_len_crc) {
      return absl::DataLossError(absl::StrFormat(
          "record %d at byte %d: length CRC 0x%08x, expected 0x%08x", index,
          pos, got_len_crc, want_len_crc));
    }
    const uint64_t length = GetLe64(header);
    const size_t left = bytes.size() - pos - kHeaderBytes;
    if (length > left || left - length < kFooterBytes) {
      result.truncated_tail = true;
      break;
    }
    const absl::string_view data = bytes.substr(pos + kHeaderBytes, length);
    const uint32_t want_crc = GetLe32(data.data() + length);
    const uint32_t got_crc = crc32c::Mask(crc32c::Value(data));
    if (want_crc != got_crc) {
      return absl::DataLossError(absl::StrFormat(
          "record %d at byte %d: data CRC 0x%08x, expected 0x%08x", index, pos,
          got_crc, want_crc));
    }
    result.records.emplace_back(data);
    pos += kHeaderBytes + length + kFooterBytes;
  }
  return result;
}

std::string EventFileName(double wall_time, const std::string& host) {
  return absl::StrCat("events.out.tfevents.",
                      static_cast<int64_t>(std::floor(wall_time)), ".", host);
}

EventFileBuilder::EventFileBuilder(double wall_time,
                                   const std::string& writer) {
  tensorboard::Event first;
  first.set_wall_time(wall_time);
  first.set_file_version(kEventFileVersion);
  if (!writer.empty()) first.mutable_source_metadata()->set_writer(writer);
  Add(first);
}

void EventFileBuilder::AddScalars(
    int64_t step, double wall_time,
    const std::vector<std::pair<std::string, double>>& values) {
  if (values.empty()) return;
  tensorboard::Event event;
  event.set_wall_time(wall_time);
  event.set_step(step);
  tensorboard::Summary* summary = event.mutable_summary();
  for (const auto& [tag, value] : values) {
    tensorboard::Summary::Value* v = summary->add_value();
    v->set_tag(tag);
    v->set_simple_value(static_cast<float>(value));
  }
  Add(event);
}

void EventFileBuilder::Add(const tensorboard::Event& event) {
  bytes_ += FrameTfRecord(event.SerializeAsString());
  ++num_events_;
}

absl::StatusOr<std::vector<tensorboard::Event>> DecodeEventFile(
    absl::string_view bytes) {
  absl::StatusOr<TfRecords> records = ParseTfRecords(bytes);
  if (!records.ok()) return records.status();
  std::vector<tensorboard::Event> events(records->records.size());
  for (size_t i = 0; i < events.size(); ++i) {
    if (!events[i].ParseFromString(records->records[i])) {
      return absl::DataLossError(
          absl::StrCat("record ", i, " is not a tensorboard Event"));
    }
  }
  return events;
}

absl::StatusOr<std::vector<tensorboard::Event>> ReadEventFile(
    const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::ostringstream buf;
  buf << in.rdbuf();
  absl::StatusOr<std::vector<tensorboard::Event>> events =
      DecodeEventFile(buf.str());
  if (!events.ok()) {
    return absl::Status(events.status().code(),
                        absl::StrCat(path, ": ", events.status().message()));
  }
  return events;
}

}  // namespace fedfwd
