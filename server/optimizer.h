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
  SgdOptimizer(TangentLayout layout, double momentum, int threads = 1);

  // params -= lr * (momentum-filtered) step.
  void Apply(const GradientStep& step, double lr, float* params);
  // The same rule for a dense gradient of the model's size.
  void ApplyDense(const std::vector<float>& grad, double lr, float* params);

  // The momentum buffer (empty until the first momentum step), for
  // checkpoints.
  const std::vector<float>& buffer() const { return buffer_; }
  void set_buffer(std::vector<float> buffer) { buffer_ = std::move(buffer); }

 private:
  TangentLayout layout_;
  double momentum_;
  int threads_;
  std::vector<float> buffer_;  // momentum buffer, empty when momentum == 0
};

// FedAdam's server step (Reddi et al. 2021, "Adaptive Federated
// Optimization", Algorithm 2) on a dense pseudo-gradient g:
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
//   params -= lr * m / (sqrt(v) + eps)
// without bias correction, as in the paper (eps is their tau).
class AdamOptimizer {
 public:
  AdamOptimizer(double beta1, double beta2, double eps)
      : beta1_(beta1), beta2_(beta2), eps_(eps) {}
  void ApplyDense(const std::vector<float>& grad, double lr, float* params);

  // The moments (empty until the first step), for checkpoints.
  const std::vector<float>& m() const { return m_; }
  const std::vector<float>& v() const { return v_; }
  void set_moments(std::vector<float> m, std::vector<float> v) {
    m_ = std::move(m);
    v_ = std::move(v);
  }

 private:
  double beta1_, beta2_, eps_;
  std::vector<float> m_, v_;
};

}  // namespace fedfwd

#endif  // FEDFWD_SERVER_OPTIMIZER_H_
