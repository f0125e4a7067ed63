// ParseIdx (MNIST / Fashion-MNIST files, gzip or raw) on arbitrary bytes:
// a status, or dims whose product is the data size.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "common/dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  auto a = fedfwd::ParseIdx(bytes, "fuzz");
  if (!a.ok()) return 0;
  int64_t n = 1;
  for (int64_t d : a->dims) n *= d;
  if (n != static_cast<int64_t>(a->data.size())) std::abort();
  return 0;
}
