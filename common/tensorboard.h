// TensorBoard event files: TFRecord framing and scalar-summary Events, so
// that `tensorboard --logdir DIR` shows fedfwd runs. Writer and reader; the
// reader exists to check what the writer wrote (tests, tools) and reads
// real TensorBoard files too (unknown Event fields are kept, not rejected).
//
// Record framing (TensorFlow's record_writer.cc):
//   uint64 length (little endian)
//   uint32 masked CRC-32C of the 8 length bytes
//   byte   data[length]            (a serialized tensorboard::Event)
//   uint32 masked CRC-32C of data
// The first record of a file is an Event with file_version "brain.Event:2".
// Pure functions and a value-type builder; thread-compatible.
#ifndef FEDFWD_COMMON_TENSORBOARD_H_
#define FEDFWD_COMMON_TENSORBOARD_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "tensorboard.pb.h"

namespace fedfwd {

inline constexpr char kEventFileVersion[] = "brain.Event:2";

// `data` framed as one TFRecord (16 bytes longer than `data`).
std::string FrameTfRecord(absl::string_view data);

struct TfRecords {
  std::vector<std::string> records;
  // The bytes ended inside a record (a writer still writing): the complete
  // records before it are returned and this is set.
  bool truncated_tail = false;
};
// Splits a file's bytes into its records, checking both CRCs of each.
// A CRC mismatch is DataLossError naming the record's index and offset.
absl::StatusOr<TfRecords> ParseTfRecords(absl::string_view bytes);

// "events.out.tfevents.<whole seconds of wall_time>.<host>": TensorBoard
// picks files up by the "tfevents" in the name.
std::string EventFileName(double wall_time, const std::string& host);

// Builds an event file in memory: the file_version Event first, then one
// Event per AddScalars call.
class EventFileBuilder {
 public:
  // `wall_time`: seconds since the Unix epoch of the file's start; `writer`
  // goes into source_metadata.writer (e.g. "fedfwd-report").
  EventFileBuilder(double wall_time, const std::string& writer);

  // One Event at `step` holding a simple_value per (tag, value); values
  // are stored as float32, as TensorBoard's scalars are. An empty `values`
  // adds nothing.
  void AddScalars(int64_t step, double wall_time,
                  const std::vector<std::pair<std::string, double>>& values);

  const std::string& bytes() const { return bytes_; }
  int64_t num_events() const { return num_events_; }

 private:
  void Add(const tensorboard::Event& event);
  std::string bytes_;
  int64_t num_events_ = 0;
};

// Decodes every record of an event file's bytes as an Event. A record that
// is not an Event is DataLossError; a truncated last record is dropped.
absl::StatusOr<std::vector<tensorboard::Event>> DecodeEventFile(
    absl::string_view bytes);
// Reads `path` and decodes it; errors name the file.
absl::StatusOr<std::vector<tensorboard::Event>> ReadEventFile(
    const std::string& path);

}  // namespace fedfwd

#endif  // FEDFWD_COMMON_TENSORBOARD_H_
