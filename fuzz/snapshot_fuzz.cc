// A model download as a client receives it: a sequence of ModelChunk
// messages (length-prefixed here) fed to SnapshotAssembler. Any sequence
// ends in a status; an accepted one has exactly the expected parameters.
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "common/codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const int64_t expected = data[0] % 200;
  fedfwd::SnapshotAssembler assembler(expected, /*version=*/1);
  size_t pos = 1;
  while (pos < size) {
    const size_t len = data[pos++];
    if (pos + len > size) break;
    fedfwd::v1::ModelChunk chunk;
    if (chunk.ParseFromArray(data + pos, static_cast<int>(len))) {
      if (!assembler.Add(chunk).ok()) return 0;
    }
    pos += len;
  }
  std::vector<float> out;
  if (assembler.Finish(&out).ok() &&
      static_cast<int64_t>(out.size()) != expected) {
    std::abort();
  }
  return 0;
}
