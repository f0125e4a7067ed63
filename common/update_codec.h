// Wire encodings of model updates (FedAvg deltas, FedSGD gradients).
//
// An update is a flat float32 vector laid out as the model's parameter
// tensors back to back, in registration order; `sizes` gives numel per
// tensor in that order (so it must sum to the update's length). Encodings:
//
//   kFloat32 ("none"): numel float32 values, little endian. Lossless.
//   kFloat16 ("fp16"): numel IEEE binary16 values, little endian, rounded to
//       nearest even. Magnitudes beyond the binary16 range saturate to
//       +-65504 (never inf); values below 2^-14 become binary16 subnormals
//       (or zero below 2^-25). Relative error <= 2^-11 in the normal range.
//   kInt8 ("int8"): per tensor, a float32 LE scale = max|x| / 127 (0 for an
//       all-zero tensor) followed by numel int8 values
//       q = round-half-away-from-zero(x / scale) clamped to [-127, 127];
//       decoding gives q * scale, within scale / 2 of x.
//
// The conversions are hand-written (no F16C or other intrinsics) so every
// host encodes and decodes the same bits. No libtorch here.
// All functions are pure and thread-safe.
#ifndef FEDFWD_COMMON_UPDATE_CODEC_H_
#define FEDFWD_COMMON_UPDATE_CODEC_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace fedfwd {

enum class UpdateEncoding { kFloat32, kFloat16, kInt8 };

// "none" (float32), "fp16" or "int8". The error lists the accepted names.
absl::StatusOr<UpdateEncoding> ParseUpdateEncoding(const std::string& name);
// "none", "fp16" or "int8": the names ParseUpdateEncoding accepts.
const char* UpdateEncodingName(UpdateEncoding e);

// Size in bytes of an encoded update with these tensor sizes. `sizes` must
// be non-negative (EncodeUpdate and DecodeUpdate check; this does not).
int64_t EncodedUpdateBytes(UpdateEncoding e, const std::vector<int64_t>& sizes);

// Encodes sum(sizes) floats from `values`. Every value must be finite:
// otherwise InvalidArgument naming the first bad index. Negative sizes are
// InvalidArgument too.
absl::StatusOr<std::string> EncodeUpdate(const float* values,
                                         const std::vector<int64_t>& sizes,
                                         UpdateEncoding e);

// Decodes an update produced by EncodeUpdate with the same sizes and
// encoding. `bytes` must be exactly EncodedUpdateBytes(e, sizes) long
// (InvalidArgument saying expected vs got). Non-finite decoded values, and
// int8 scales that are negative or not finite, are InvalidArgument: a bad
// update must never reach the global model.
absl::StatusOr<std::vector<float>> DecodeUpdate(
    const std::string& bytes, const std::vector<int64_t>& sizes,
    UpdateEncoding e);

// The binary16 conversions used by kFloat16, exposed for tests and for
// callers that convert single values. FloatToHalf saturates to +-65504 and
// maps NaN to a quiet NaN; HalfToFloat is exact.
uint16_t FloatToHalf(float f);
float HalfToFloat(uint16_t h);

}  // namespace fedfwd

#endif  // FEDFWD_COMMON_UPDATE_CODEC_H_
