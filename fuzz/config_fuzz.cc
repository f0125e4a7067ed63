// ParseConfig on arbitrary YAML text: a status with a message, never a
// crash or an exception escaping yaml-cpp.
#include <cstdint>
#include <string>

#include "common/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto c = fedfwd::ParseConfig(text, "/nonexistent", {}, "fuzz");
  (void)c;
  return 0;
}
