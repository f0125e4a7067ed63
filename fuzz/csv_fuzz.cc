// ParseCsv on arbitrary text, with four column choices (a label "y", with
// an id "id"; targets "y" and "z" dropping "d"; one target "t"): a status, or
// data that CheckArrayData accepts, one row per example.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/array_data.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::vector<fedfwd::CsvOptions> choices(4);
  choices[0].label_column = "y";
  choices[1].label_column = "y";
  choices[1].id_column = "id";
  choices[2].target_columns = {"y", "z"};
  choices[2].drop_columns = {"d"};
  choices[3].target_columns = {"t"};
  for (const auto& options : choices) {
    auto d = fedfwd::ParseCsv(text, "fuzz", options);
    if (!d.ok()) continue;
    if (!fedfwd::CheckArrayData(*d).ok() || d->size < 1 ||
        d->feature_shape.size() != 1 ||
        (!options.id_column.empty() &&
         static_cast<int64_t>(d->ids.size()) != d->size)) {
      std::abort();
    }
  }
  return 0;
}
