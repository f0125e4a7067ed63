// ParseModelFile on arbitrary bytes (fedfwd-eval reads files users hand
// it): a status, or a header whose parameter count matches the payload.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "common/model_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  auto f = fedfwd::ParseModelFile(bytes, "fuzz");
  if (f.ok() && static_cast<int64_t>(f->params.size()) !=
                    static_cast<int64_t>(f->header.num_params)) {
    std::abort();
  }
  return 0;
}
