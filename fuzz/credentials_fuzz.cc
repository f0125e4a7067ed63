// ParseCredentials (the coordinator's --credentials file, re-read while it
// runs) on arbitrary text: a status naming the bad line, or entries.
#include <cstdint>
#include <string>

#include "common/security.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto c = fedfwd::ParseCredentials(text);
  (void)c;
  return 0;
}
