// The coordinator's optimizer over a flat float32 parameter vector: SGD with
// optional momentum and a learning-rate schedule. A gradient step arrives as
// seed terms (merge.h); without momentum each tangent is regenerated and
// added straight into the parameters (no gradient buffer); with momentum the
// step is materialized into the momentum buffer.
// Not thread-safe: the round engine calls it from its own thread.
#ifndef FEDFWD_SERVER_OPTIMIZER_H_
#define FEDFWD_SERVER_OPTIMIZER_H_

#include <cstdint>
#include <vector>

#include "common/config.h"
#include "server/merge.h"

namespace fedfwd {

// Learning rate for round `round` (1-based) under the config's schedule.
double LearningRate(const Config& config, int64_t round);

class SgdOptimizer {
 public:
  // `threads` splits tangent regeneration; results do not depend on it.
  SgdOptimizer(std::vector<int64_t> param_sizes, double momentum,
               int threads = 1);

  // params -= lr * (momentum-filtered) step.
  void Apply(const GradientStep& step, double lr, float* params);

 private:
  std::vector<int64_t> sizes_;
  double momentum_;
  int threads_;
  std::vector<float> buffer_;  // momentum buffer, empty when momentum == 0
};

}  // namespace fedfwd

#endif  // FEDFWD_SERVER_OPTIMIZER_H_
