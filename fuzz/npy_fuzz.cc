// ParseNpy (NumPy .npy files) on arbitrary bytes: a status, or an array whose
// shape's product is its element count and whose data is exactly that many
// items; then the array as features, labels (or targets) and ids of
// ArrayDataFromNpy: a status, or data that CheckArrayData accepts.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "common/array_data.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  auto a = fedfwd::ParseNpy(bytes, "fuzz");
  if (!a.ok()) return 0;
  // A zero dimension empties the array whatever the others (which may be
  // huge); otherwise the product is bounded by the input's size.
  int64_t n = 1;
  for (int64_t d : a->shape) {
    if (d == 0) n = 0;
  }
  for (int64_t d : a->shape) {
    if (n == 0) break;
    if (__builtin_mul_overflow(n, d, &n)) std::abort();
  }
  if (n != a->num_elements || a->item_size < 1 ||
      static_cast<int64_t>(a->data.size()) != n * a->item_size) {
    std::abort();
  }
  using fedfwd::ArrayTask;
  for (int k = 0; k < 3; ++k) {
    const ArrayTask task = k == 1 ? ArrayTask::kRegression : ArrayTask::kAuto;
    auto d = fedfwd::ArrayDataFromNpy(*a, "x", *a, "y", k == 2 ? &*a : nullptr,
                                      "ids", task);
    if (!d.ok()) continue;
    if (!fedfwd::CheckArrayData(*d).ok() || a->shape.empty() ||
        d->size != a->shape[0] ||
        (k == 2 && static_cast<int64_t>(d->ids.size()) != d->size)) {
      std::abort();
    }
  }
  return 0;
}
