// The coordinator's optimizer step on a forward-gradient estimate, written
// once for both sides so that seed replay carries it: the coordinator and
// every replaying client run ApplySeedStep on the same terms, learning rate
// and optimizer state, and get the same bits (the model checksum and the
// state checksum both match; tests/step_rule_test.cc,
// tests/integration/federation_test.cc).
//
// A step's gradient is g = sum_k alpha_k v(key_k), added by ApplySeedTerms
// (fixed order, thread-count independent). Then, in this order:
//   clip_step > 0:  g *= min(1, clip_step / |g|)   (|g| summed in double)
//   adam:           m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
//                   params -= lr * m / (sqrt(v) + eps)   (no bias correction)
//   momentum > 0:   buf = mu buf + g;  params -= lr * buf
//   else:           params -= lr * g
// Plain SGD (no momentum, no Adam, no clip) needs none of this: its terms
// carry -lr * coefficient and ApplySeedTerms adds them straight into the
// model (StepRule::Stateful() is false).
//
// The dense kernels (ClipToNorm, MomentumStep, AdamStep) are also the
// coordinator's dense optimizers (server/optimizer.h). The file is compiled
// without FMA contraction, like the tangent generator.
#ifndef FEDFWD_COMMON_STEP_RULE_H_
#define FEDFWD_COMMON_STEP_RULE_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/config.h"
#include "common/rng.h"

namespace fedfwd {

struct StepRule {
  double momentum = 0;  // heavy ball; 0: none
  bool adam = false;
  double beta1 = 0.9, beta2 = 0.99, eps = 1e-3;
  double clip_step = 0;  // clip |g| before the step; 0: off

  // The terms are the raw gradient (alpha = coefficient) and the step needs
  // the learning rate and, for momentum or Adam, state.
  bool Stateful() const { return adam || momentum != 0 || clip_step > 0; }
  // Floats of optimizer state for a model of n parameters: Adam m then v
  // (2n), momentum's buffer (n), else none.
  int64_t StateSize(int64_t n) const {
    return adam ? 2 * n : (momentum != 0 ? n : 0);
  }
};

// The forward-gradient strategy's rule under `config` (momentum, clip_step,
// server_optimizer.type adam with beta1, beta2, eps).
StepRule StepRuleOf(const Config& config);

// One model version's change as seeds. Plain SGD: alpha = -lr * coefficient
// and `lr` is not used; a stateful rule: alpha = coefficient and `lr` is the
// round's learning rate.
struct SeedStep {
  std::vector<SeedTerm> terms;
  double lr = 0;
};

// Applies `step` under `rule` to params (the layout's size) and `state`
// (resized to the rule's StateSize with zeros when it has another size,
// which is how a run starts). `scratch` holds g when the rule needs it
// materialized (clip_step, Adam); momentum alone adds the terms straight
// into its buffer.
void ApplySeedStep(const SeedStep& step, const StepRule& rule,
                   const TangentLayout& layout, std::vector<float>* state,
                   float* params, std::vector<float>* scratch, int threads = 1);

// g *= clip / |g| when |g| > clip (|g| summed in double, in index order).
void ClipToNorm(float* g, size_t n, double clip);
// buf = mu * buf + g; params -= lr * buf (mu == 0: params -= lr * g, buf
// unused).
void MomentumStep(const float* g, size_t n, double lr, double mu, float* buf,
                  float* params);
// Adam as in the header comment, on m and v of n floats each.
void AdamStep(const float* g, size_t n, double lr, double beta1, double beta2,
              double eps, float* m, float* v, float* params);

}  // namespace fedfwd

#endif  // FEDFWD_COMMON_STEP_RULE_H_
