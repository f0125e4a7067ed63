// The centralized baseline: the same models, data, estimators (client side)
// and strategies (coordinator side) as a federated run, in one process with
// no network: one logical client holding the whole training set, one
// optimizer step per "round". estimator backprop/fedsgd is minibatch SGD,
// jvp is forward-gradient descent; fedavg is refused (it is local SGD).
//
// Writes to `out_dir`: metrics.jsonl (one row per evaluation, keyed "step"),
// summary.json, final_model.bin and best_model.bin (model_file.h format).
// Not thread-safe; `stop` may be set from a signal handler to end early
// (outputs are still written, the summary says interrupted).
#ifndef FEDFWD_TOOLS_CENTRAL_TRAINER_H_
#define FEDFWD_TOOLS_CENTRAL_TRAINER_H_

#include <atomic>
#include <string>

#include "absl/status/status.h"
#include "common/config.h"

namespace fedfwd {

struct CentralOptions {
  std::string out_dir = ".";
  std::string device = "cpu";  // cpu | cuda
  int threads = 1;             // for the strategy's tangent regeneration
  bool quiet = false;          // no progress lines on stdout
};

// Runs config.rounds optimizer steps. Returns Cancelled when stopped early.
absl::Status RunCentral(const Config& config, const CentralOptions& options,
                        const std::atomic<bool>* stop);

}  // namespace fedfwd

#endif  // FEDFWD_TOOLS_CENTRAL_TRAINER_H_
