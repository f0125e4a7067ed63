// ParseCifarBatch on arbitrary bytes: a status, or images and labels that
// agree with each other and with the record count.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "common/dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  auto s = fedfwd::ParseCifarBatch(bytes, "fuzz");
  if (!s.ok()) return 0;
  if (static_cast<int64_t>(s->labels.size()) != s->size ||
      static_cast<int64_t>(s->pixels.size()) != s->size * 3 * 32 * 32) {
    std::abort();
  }
  for (uint8_t l : s->labels) {
    if (l > 9) std::abort();
  }
  return 0;
}
