// ParseNpz (NumPy .npz archives through libzip) on arbitrary bytes: a status,
// or data that CheckArrayData accepts, with labels for integer y and
// targets for float y.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "common/array_data.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  auto d = fedfwd::ParseNpz(bytes, "fuzz");
  if (!d.ok()) return 0;
  if (!fedfwd::CheckArrayData(*d).ok() || d->size < 1) std::abort();
  return 0;
}
