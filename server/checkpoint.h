// The coordinator's checkpoint file (OUT/checkpoint.bin): a ckpt::Checkpoint
// protobuf (proto/checkpoint.proto) framed as
//   "FFWDCKPT" | payload length (u64 LE) | XXH64 of payload (u64 LE) | payload
// and written durably (temporary file, fsync, rename, fsync of the folder),
// so a coordinator killed at any moment leaves the previous checkpoint or
// the new one, never a torn file. Readers check the frame before parsing:
// a truncated or altered file is DATA_LOSS with what is wrong, not a
// half-restored run.
#ifndef FEDFWD_SERVER_CHECKPOINT_H_
#define FEDFWD_SERVER_CHECKPOINT_H_

#include <string>

#include "absl/status/statusor.h"
#include "checkpoint.pb.h"

namespace fedfwd {

inline constexpr char kCheckpointFileName[] = "checkpoint.bin";
inline constexpr uint32_t kCheckpointFormat = 1;

std::string EncodeCheckpoint(const ckpt::Checkpoint& checkpoint);
absl::StatusOr<ckpt::Checkpoint> DecodeCheckpoint(const std::string& bytes);

// Written with mode 0600: it holds the client sessions.
absl::Status WriteCheckpoint(const std::string& path,
                             const ckpt::Checkpoint& checkpoint);
// NOT_FOUND when there is no file; DATA_LOSS when it is damaged.
absl::StatusOr<ckpt::Checkpoint> ReadCheckpoint(const std::string& path);

}  // namespace fedfwd

#endif  // FEDFWD_SERVER_CHECKPOINT_H_
