// DecodeCheckpoint on arbitrary bytes (fedfwd-server --resume): a status,
// or a checkpoint whose parameters are whole float32 values.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "server/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  auto c = fedfwd::DecodeCheckpoint(bytes);
  if (c.ok() && c->params().size() % sizeof(float) != 0) std::abort();
  return 0;
}
