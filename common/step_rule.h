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
//   frank_wolfe:    the l1 ball of radius R (Rostami and Kia 2024, projected
//                   forward gradients in Frank-Wolfe with the average of
//                   past estimates for variance reduction), or with K > 1
//                   the K-sparse polytope {|x|_1 <= R, |x|_inf <= R / K}
//                   (its vertices: K entries of +-R/K; K = 1 is the ball):
//                   t = steps taken before this one;
//                   t == 0: a feasible start: params pruned to the
//                     largest magnitudes that fit in the l1 ball (start
//                     prune: the kept weights keep their values, so the
//                     network still carries a signal), or projected onto it
//                     (start project: Duchi et al. 2008, soft thresholding,
//                     which also shrinks what it keeps); no-op inside the
//                     ball; then clipped to [-R/K, R/K];
//                   rho = min(1, 4 / (t + 8)^(2/3));
//                   d = (1 - rho) d + rho g;
//                   S = the K indices of largest |d_i| (lower index first
//                     on ties, so the set is unique);
//                   params *= (1 - lr);  params[i] -= lr * R/K * sign(d_i)
//                     for i in S
//                   (the linear minimization oracle's vertex; lr in (0, 1]
//                   is the Frank-Wolfe step size, so the model stays in the
//                   set and gains at most K non-zeros a step)
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
  bool frank_wolfe = false;
  double radius = 0;        // frank_wolfe: the l1 radius R
  int64_t fw_k = 1;         // frank_wolfe: K of the K-sparse polytope
  bool fw_project = false;  // frank_wolfe: start by projection, not pruning

  // The terms are the raw gradient (alpha = coefficient) and the step needs
  // the learning rate and, for momentum, Adam or Frank-Wolfe, state.
  bool Stateful() const {
    return adam || frank_wolfe || momentum != 0 || clip_step > 0;
  }
  // Floats of optimizer state for a model of n parameters: Adam m then v
  // (2n), Frank-Wolfe's average d then its step count (n + 1), momentum's
  // buffer (n), else none.
  int64_t StateSize(int64_t n) const {
    if (adam) return 2 * n;
    if (frank_wolfe) return n + 1;
    return momentum != 0 ? n : 0;
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
// The Euclidean projection of x (n floats) onto the l1 ball of `radius`
// (Duchi, Shalev-Shwartz, Singer, Chandra 2008): x_i = sign(x_i)
// max(|x_i| - theta, 0) with the one theta that lands on the sphere; x
// unchanged when |x|_1 <= radius. Deterministic (sums in double over the
// sorted magnitudes).
void ProjectL1Ball(float* x, size_t n, double radius);
// Zeroes all but the largest magnitudes of x (n floats), taken in order
// (ties to the lower index) while their sum stays within `radius`, so that
// |x|_1 <= radius; the kept entries are unchanged. x unchanged when
// |x|_1 <= radius already.
void PruneToL1Ball(float* x, size_t n, double radius);
// One Frank-Wolfe step as in the header comment on d and the step count
// held in state (n + 1 floats).
void FrankWolfeStep(const float* g, size_t n, double lr, double radius,
                    int64_t k, bool project, float* state, float* params);
// Adam as in the header comment, on m and v of n floats each.
void AdamStep(const float* g, size_t n, double lr, double beta1, double beta2,
              double eps, float* m, float* v, float* params);

}  // namespace fedfwd

#endif  // FEDFWD_COMMON_STEP_RULE_H_
