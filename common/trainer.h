// A client's local work: its data shard, its copy of the model, and the
// estimator that turns (model, minibatch, tangent keys) into results.
//
// Estimators sit behind one interface so multi-tangent, finite differences
// or local SGD are a new class plus a name in MakeEstimator. The trainer owns
// all client state (no globals), so many logical clients can share a process.
// Not thread-safe: one daemon loop drives it. Shared learning code: the
// client daemons and the coordinator's centralized trainer
// (tools/central_trainer.h) both run it, so it lives here and the server
// does not link the client library.
#ifndef FEDFWD_COMMON_TRAINER_H_
#define FEDFWD_COMMON_TRAINER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/dataset.h"
#include "common/model.h"
#include "common/partition.h"
#include "common/rng.h"
#include "common/sgd_options.h"

namespace fedfwd {

struct LocalTask {
  int64_t round = 0;
  std::string estimator;  // jvp | fd | fedsgd | fedavg
  std::vector<TangentKey> tangents;
  int batch_size = 0;
  // fedavg: passes over the shard, client SGD learning rate and momentum.
  int local_epochs = 1;
  double lr = 0;
  double momentum = 0;
  double weight_decay = 0;
  // fd: finite-difference step, and fixed-point (int16 / int8) passes.
  double fd_epsilon = 1e-4;
  bool fd_fixed_point = false;
};

struct LocalResult {
  std::vector<double> jvps;  // jvp: one per tangent
  // fedsgd: the minibatch gradient; fedavg: local model minus the model it
  // started from. Flat, registration order.
  std::vector<float> update;
  int64_t num_samples = 0;  // samples behind the result (fedavg: shard size)
  double loss = 0;          // mean training loss over those samples
  double compute_ms = 0;
};

struct TrainerOptions {
  std::string model;
  // The bytes of a TorchScript file (scripted_model.h), which then is the
  // model; "": `model` names a registered one. `torchscript_name` names it in
  // errors.
  std::string torchscript;
  std::string torchscript_name = "the run's TorchScript model";
  std::string dataset;
  std::string data_dir;
  // Users' own data (dataset npz or csv): what to read, and the shape
  // (C, H, W) and classes the run expects (the coordinator's).
  FileDataOptions file;
  std::vector<int64_t> input_shape;
  int64_t num_classes = 0;
  std::vector<std::string> class_names;  // CSV label names, if any
  uint64_t seed = 0;
  int shard = 0;
  int num_shards = 1;
  int64_t train_limit = 0;
  PartitionOptions partition;
  std::string device = "cpu";  // cpu | cuda
};

class Trainer {
 public:
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(
      const TrainerOptions& options);
  ~Trainer();

  int64_t num_params() const;
  std::vector<int64_t> param_sizes() const;
  // Sizes and matrix rows, for tangents (rank-one keys need the rows).
  TangentLayout tangent_layout() const;
  int64_t shard_size() const;
  uint64_t model_version() const { return version_; }
  const std::string& device_name() const;
  // The installed model (registration-order float32 parameters).
  const std::vector<float>& params() const;
  // In-process callers (the centralized trainer) may change the installed
  // model in place through mutable_params() and then call ParamsChanged.
  std::vector<float>* mutable_params();
  void ParamsChanged(uint64_t version);
  // Installs a new model (registration-order float32 parameters).
  absl::Status SetModel(std::vector<float> params, uint64_t version);
  // Runs the task's estimator on the shard (the next minibatch, or for
  // fedavg local_epochs passes). The installed model is never modified.
  absl::StatusOr<LocalResult> Run(const LocalTask& task);

  // Decentralized workers: one minibatch SGD step (`options`, batch
  // `batch_size` from the shard's walk, which goes on across calls) on
  // *params (registration-order floats, changed in place; the installed
  // model is not touched). Momentum buffers persist across calls until
  // ResetSgdState. Returns the minibatch loss; an error if it is not finite.
  absl::StatusOr<double> SgdStep(std::vector<float>* params,
                                 const SgdOptions& options, int batch_size);
  void ResetSgdState();
  // The run's initial model (InitialParams of this model and `seed`).
  std::vector<float> InitialModel(uint64_t seed) const;

 private:
  struct Impl;
  explicit Trainer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  uint64_t version_ = 0;
};

}  // namespace fedfwd

#endif  // FEDFWD_COMMON_TRAINER_H_
