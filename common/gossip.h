// The arithmetic of the decentralized algorithms, apart from any transport:
// elastic averaging (EASGD, Zhang, Choromanska and LeCun 2015), GoSGD's
// weighted gossip (Blot et al. 2016) and push-sum for Stochastic Gradient
// Push (SGP, Assran et al. 2019), plus the communication graphs SGP mixes
// over and the Gaussian noise of the noisy-link experiments.
//
// Everything here is plain float vectors and doubles, no libtorch and no
// gRPC, so tests drive whole federations of these states in one process.
// The invariants the transport relies on:
//   - GoSGD conserves the total weight sum_i alpha_i and the weighted sum
//     sum_i alpha_i x_i over workers and messages in flight: a push halves
//     the sender's weight and carries the other half; absorbing a message
//     adds its weight. An undelivered push is taken back with Absorb.
//   - Push-sum conserves sum_i w_i and sum_i x_i (x is the numerator, the
//     model is x / w) over workers and messages in flight; shares that
//     cannot be delivered are absorbed back by their sender.
// Thread-compatible: no shared state.
#ifndef FEDFWD_COMMON_GOSSIP_H_
#define FEDFWD_COMMON_GOSSIP_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fedfwd {

// One parameter message between workers.
struct PeerMessage {
  uint32_t from = 0;  // sender's worker index
  int64_t step = 0;   // sender's local step when it sent the message
  // GoSGD: the share of the sender's weight alpha that travels; the values
  // are the sender's parameters x. SGP: the push-sum weight share; the
  // values are the same share of the sender's numerator x.
  double weight = 0;
  std::vector<float> values;
};

// A message fit to absorb into a state of `size` values: exactly `size`
// values, all finite, and a finite weight > 0. InvalidArgument naming what
// is wrong otherwise.
absl::Status CheckPeerMessage(const PeerMessage& m, size_t size);

// GoSGD worker: parameters x and weight alpha (1/M at the start for M
// workers, so that the weights of a federation sum to 1).
class GoSgdState {
 public:
  GoSgdState(std::vector<float> x, double alpha);

  // The paper's ProcessMessages for one message (x_j, alpha_j):
  // x <- (alpha x + alpha_j x_j) / (alpha + alpha_j), alpha <- alpha +
  // alpha_j. A message that fails CheckPeerMessage changes nothing.
  absl::Status Absorb(const PeerMessage& m);
  // A push: alpha <- alpha / 2, and a message carrying x and that half.
  PeerMessage MakePush(uint32_t self, int64_t step);

  const std::vector<float>& x() const { return x_; }
  std::vector<float>* mutable_x() { return &x_; }
  double alpha() const { return alpha_; }

 private:
  std::vector<float> x_;
  double alpha_;
};

// SGP worker: push-sum numerator x and weight w (1 at the start); the model
// is the de-biased z = x / w.
class PushSumState {
 public:
  explicit PushSumState(std::vector<float> x, double w = 1.0);

  // x <- x + m.values, w <- w + m.weight. A message that fails
  // CheckPeerMessage changes nothing.
  absl::Status Absorb(const PeerMessage& m);
  // Splits off, for each (destination, fraction) of `shares`, that fraction
  // of the current (x, w) as one message (its `from` is `self`); this worker
  // keeps 1 - sum of fractions. Fractions must be in (0, 1) and sum below 1
  // (InvalidArgument otherwise, nothing changed). Returns the messages in
  // the order of `shares`, each paired with its destination.
  absl::StatusOr<std::vector<std::pair<uint32_t, PeerMessage>>> Split(
      const std::vector<std::pair<uint32_t, double>>& shares, uint32_t self,
      int64_t step);
  // z = x / w into *out (resized).
  void Debiased(std::vector<float>* out) const;
  std::vector<float> Debiased() const;

  const std::vector<float>& x() const { return x_; }
  std::vector<float>* mutable_x() { return &x_; }
  double weight() const { return w_; }

 private:
  std::vector<float> x_;
  double w_;
};

// SGP's communication graphs over n workers (indices 0..n-1).
enum class SgpTopology {
  // Time-varying, one peer per step: at step k worker i sends half of its
  // (x, w) to (i + 2^(k mod m)) mod n, m = the number of powers of two
  // below n (offsets 1, 2, 4, ...), and keeps the other half.
  kExponential,
  // A fixed column-stochastic mixing matrix drawn once from the run seed:
  // worker i sends to `degree` distinct other workers with random positive
  // shares and keeps a random share of its own. One of the destinations is
  // i's successor on a random cycle through all workers, so the graph is
  // strongly connected (push-sum needs it); the others are random. The
  // same for every step.
  kRandom,
  // Fully connected, uniform: 1/n to every other worker, 1/n kept.
  kComplete,
};

// "exponential" | "random" | "complete"; InvalidArgument otherwise.
absl::StatusOr<SgpTopology> ParseSgpTopology(const std::string& name);
const char* SgpTopologyName(SgpTopology t);

// The out-shares of worker i at step k: (destination, fraction of i's
// (x, w) it receives), destinations distinct and != i, fractions > 0 with a
// sum below 1 (the rest stays with i). Deterministic in (t, n, i, step,
// seed, degree); kRandom ignores step. n == 1 gives no shares. degree is
// capped at n - 1 (kRandom only).
std::vector<std::pair<uint32_t, double>> SgpOutShares(SgpTopology t, int n,
                                                      int i, int64_t step,
                                                      uint64_t seed,
                                                      int degree);

// EASGD's exchange for one worker (Algorithm 1 of the paper): with x the
// worker's parameters before the exchange and `center` the center variable
// it read, diff = alpha (x - center); the worker moves to x - diff and the
// center moves by + diff. Applies the worker's half to *x and returns diff.
// InvalidArgument when the sizes differ or alpha is not in (0, 1).
absl::StatusOr<std::vector<float>> ElasticExchange(
    std::vector<float>* x, const std::vector<float>& center, double alpha);

// The paper's default moving rate alpha = beta / (p tau) for p workers and
// communication period tau (beta = 0.9 in the paper).
double DefaultElasticAlpha(double beta, int workers, int tau);

// Adds N(0, stddev^2) to every value, drawn from our counter-based
// generator keyed by (seed, stream, counter): the same call gives the same
// noise. stddev 0 leaves the values unchanged.
void AddGaussianNoise(std::vector<float>* values, double stddev, uint64_t seed,
                      uint32_t stream, uint64_t counter);

}  // namespace fedfwd

#endif  // FEDFWD_COMMON_GOSSIP_H_
