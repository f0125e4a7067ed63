// Test-set evaluation on the coordinator: loads the full test split once
// (or config.dataset.test_limit examples) and scores flat parameter vectors.
// Not thread-safe; used by the engine thread.
#ifndef FEDFWD_SERVER_EVALUATOR_H_
#define FEDFWD_SERVER_EVALUATOR_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/config.h"
#include "common/model.h"

namespace fedfwd {

class Evaluator {
 public:
  static absl::StatusOr<std::unique_ptr<Evaluator>> Create(
      const Config& config, const ModelSpec& spec);
  ~Evaluator();
  absl::StatusOr<EvalResult> Evaluate(std::vector<float>& params);
  int64_t size() const;

 private:
  struct Impl;
  explicit Evaluator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// libtorch's version string, e.g. "1.13.1".
std::string TorchVersion();

}  // namespace fedfwd

#endif  // FEDFWD_SERVER_EVALUATOR_H_
