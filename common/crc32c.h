// CRC-32C (Castagnoli, polynomial 0x1EDC6F41, reflected 0x82F63B78), the
// checksum of TFRecord framing (TensorBoard event files), plus the masking
// TFRecord and LevelDB apply to stored CRCs. Debian ships no C/C++ library
// that exposes CRC-32C on its own and Abseil 20220623 has no absl/crc, hence
// this small table-driven one. Pure functions, thread-safe.
#ifndef FEDFWD_COMMON_CRC32C_H_
#define FEDFWD_COMMON_CRC32C_H_

#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"

namespace fedfwd::crc32c {

// The CRC-32C of `data` appended to a stream whose CRC-32C so far is
// `crc` (0 for an empty stream): Extend(Value(a), b) == Value(a + b).
uint32_t Extend(uint32_t crc, const void* data, size_t n);

inline uint32_t Value(const void* data, size_t n) { return Extend(0, data, n); }
inline uint32_t Value(absl::string_view data) {
  return Extend(0, data.data(), data.size());
}

// TFRecord's mask: ((crc >> 15) | (crc << 17)) + 0xa282ead8, so that the CRC
// of a text that embeds CRCs is not trivially related to them.
inline uint32_t Mask(uint32_t crc) {
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}
inline uint32_t Unmask(uint32_t masked) {
  const uint32_t rot = masked - 0xa282ead8u;
  return (rot >> 17) | (rot << 15);
}

}  // namespace fedfwd::crc32c

#endif  // FEDFWD_COMMON_CRC32C_H_
