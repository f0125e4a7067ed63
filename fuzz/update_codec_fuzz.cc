// DecodeUpdate on arbitrary bytes: the first byte picks the encoding, the
// next ones the tensor sizes; the rest is the payload a client streamed.
// Whatever it is, decoding returns a status or finite values of the right
// count, and a decoded update re-encodes.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/update_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 3) return 0;
  const fedfwd::UpdateEncoding encodings[] = {fedfwd::UpdateEncoding::kFloat32,
                                              fedfwd::UpdateEncoding::kFloat16,
                                              fedfwd::UpdateEncoding::kInt8};
  const auto e = encodings[data[0] % 3];
  std::vector<int64_t> sizes;
  const int tensors = 1 + data[1] % 4;
  size_t pos = 2;
  int64_t total = 0;
  for (int t = 0; t < tensors && pos < size; ++t, ++pos) {
    sizes.push_back(data[pos] % 64);
    total += sizes.back();
  }
  const std::string bytes(reinterpret_cast<const char*>(data) + pos,
                          size - pos);
  auto decoded = fedfwd::DecodeUpdate(bytes, sizes, e);
  if (!decoded.ok()) return 0;
  if (static_cast<int64_t>(decoded->size()) != total) std::abort();
  for (float v : *decoded) {
    if (!std::isfinite(v)) std::abort();
  }
  if (!fedfwd::EncodeUpdate(decoded->data(), sizes, e).ok()) std::abort();
  return 0;
}
