// A peer message as a worker's peer service (or the coordinator's relay)
// receives it: a sequence of PeerChunk messages (length-prefixed here) fed
// to PeerMessageAssembler. Any sequence ends in a status; an accepted
// message has exactly the expected values, all finite, and a positive
// finite weight.
#include <cmath>
#include <cstdint>
#include <cstdlib>

#include "common/codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const int64_t expected = data[0] % 200;
  fedfwd::PeerMessageAssembler assembler(expected);
  size_t pos = 1;
  while (pos < size) {
    const size_t len = data[pos++];
    if (pos + len > size) break;
    fedfwd::v1::PeerChunk chunk;
    if (chunk.ParseFromArray(data + pos, static_cast<int>(len))) {
      if (!assembler.Add(chunk).ok()) return 0;
    }
    pos += len;
  }
  auto m = assembler.Finish();
  if (!m.ok()) return 0;
  if (static_cast<int64_t>(m->values.size()) != expected || !(m->weight > 0) ||
      !std::isfinite(m->weight)) {
    std::abort();
  }
  for (float v : m->values) {
    if (!std::isfinite(v)) std::abort();
  }
  return 0;
}
