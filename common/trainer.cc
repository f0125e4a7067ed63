#include "common/trainer.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/backprop.h"
#include "common/finite_diff.h"
#include "common/forward_ad.h"
#include "common/jvp_rules.h"
#include "common/scripted_model.h"
#include "common/status_macros.h"
#include "common/torch_model.h"

namespace fedfwd {
namespace {

// Walks the shard in epochs; epoch e's order is a permutation drawn from
// (seed, shard, e). Each round starts at a position fixed by the round
// number, (round - 1) * samples per round, so its batches are a function of
// the round alone, not of which rounds this process happened to compute: a
// round recomputed after a restart (of the client or of the coordinator)
// sees the same data, and a resumed run matches an uninterrupted one. A
// client that takes part in every round walks its shard epoch by epoch.
class BatchSampler {
 public:
  BatchSampler(int64_t n, uint64_t seed, int shard)
      : n_(n), seed_(seed), shard_(shard) {}

  void StartRound(int64_t round, int64_t samples_per_round) {
    pos_ = std::max<int64_t>(0, round - 1) * samples_per_round;
  }

  std::vector<int64_t> Next(int64_t batch) {
    std::vector<int64_t> out;
    out.reserve(static_cast<size_t>(batch));
    while (static_cast<int64_t>(out.size()) < batch) {
      const uint64_t epoch = static_cast<uint64_t>(pos_ / n_);
      if (order_.empty() || epoch != epoch_) {
        epoch_ = epoch;
        order_ =
            RandomPermutation(n_, seed_ + epoch * 0x9E3779B97F4A7C15ull,
                              RngDomain::kBatch, static_cast<uint32_t>(shard_));
      }
      out.push_back(order_[static_cast<size_t>(pos_ % n_)]);
      ++pos_;
    }
    return out;
  }

 private:
  int64_t n_;
  uint64_t seed_;
  int shard_;
  int64_t pos_ = 0;
  uint64_t epoch_ = 0;
  std::vector<int64_t> order_;
};

// What every estimator sees: the model and the shard with its sampler.
struct EstimatorContext {
  const ModelSpec& spec;
  const std::vector<at::Tensor>& params;  // on the trainer's device
  const at::Device& device;
  const ImageSet& shard;
  const DatasetInfo& info;
  BatchSampler& sampler;

  // The shard's next minibatch of up to `size` examples, on the device.
  Batch NextBatch(int64_t size) const {
    Batch b = MakeBatch(shard, info, sampler.Next(std::min(size, shard.size)));
    if (!device.is_cpu()) {
      b.x = b.x.to(device);
      b.y = b.y.to(device);
    }
    return b;
  }
};

class Estimator {
 public:
  virtual ~Estimator() = default;
  virtual absl::StatusOr<LocalResult> Estimate(const EstimatorContext& ctx,
                                               const LocalTask& task) = 0;
  // How many examples one round of `task` draws from a shard of n: one
  // minibatch, unless the estimator says otherwise.
  virtual int64_t SamplesPerRound(const LocalTask& task, int64_t n) const {
    return std::min<int64_t>(task.batch_size, n);
  }
};

// Flattens device tensors into one CPU float vector (registration order).
std::vector<float> Flatten(const std::vector<at::Tensor>& tensors,
                           int64_t total) {
  std::vector<float> out(static_cast<size_t>(total));
  int64_t off = 0;
  for (const auto& t : tensors) {
    at::Tensor c = t.detach().to(at::kCPU, at::kFloat).contiguous();
    std::memcpy(out.data() + off, c.data_ptr<float>(),
                static_cast<size_t>(c.numel()) * sizeof(float));
    off += c.numel();
  }
  return out;
}

// Regenerates a task's tangents from their keys (on the CPU, the
// coordinator's exact bits) into reused buffers and hands out per-parameter
// tensors on the model's device.
class TangentBuffers {
 public:
  std::vector<std::vector<at::Tensor>> Make(const EstimatorContext& ctx,
                                            const LocalTask& task) {
    const int64_t n = ctx.spec.NumParams();
    if (buffers_.size() < task.tangents.size()) {
      buffers_.resize(task.tangents.size());
    }
    std::vector<std::vector<at::Tensor>> tangents;
    for (size_t k = 0; k < task.tangents.size(); ++k) {
      buffers_[k].resize(static_cast<size_t>(n));
      GenerateTangentFlat(task.tangents[k], ctx.spec.Layout(),
                          buffers_[k].data());
      auto views = ParamViews(ctx.spec, buffers_[k].data());
      tangents.push_back(ctx.device.is_cpu() ? views
                                             : ParamsTo(views, ctx.device));
    }
    return tangents;
  }

 private:
  std::vector<std::vector<float>> buffers_;  // reused across rounds
};

// Forward gradients: d_k = grad f . v_k for the task's tangents, from one
// dual-number forward pass per tangent (jvp), or from two plain forward
// passes per tangent (fd: finite differences, finite_diff.h, in float32 or
// fixed point).
class ForwardGradientEstimator final : public Estimator {
 public:
  explicit ForwardGradientEstimator(bool finite_differences)
      : finite_differences_(finite_differences) {}

  absl::StatusOr<LocalResult> Estimate(const EstimatorContext& ctx,
                                       const LocalTask& task) override {
    const Batch batch = ctx.NextBatch(task.batch_size);
    if (!finite_differences_ && SupportsJvpRules(ctx.spec)) {
      return RulesJvp(ctx, task, batch);
    }
    const auto tangents = tangents_.Make(ctx, task);
    const FixedPointSpec fixed;
    ASSIGN_OR_RETURN(
        JvpResult r,
        finite_differences_
            ? ComputeFiniteDifference(ctx.spec, ctx.params, tangents, batch.x,
                                      batch.y, task.fd_epsilon,
                                      task.fd_fixed_point ? &fixed : nullptr)
            : ComputeJvp(ctx.spec, ctx.params, tangents, batch.x, batch.y));
    LocalResult out;
    out.jvps = std::move(r.jvps);
    out.loss = r.loss;
    out.num_samples = batch.x.size(0);
    return out;
  }

 private:
  // The hand-written rules (jvp_rules.h): the task's tangents share the
  // primal pass, in groups of at most max(1, 1024 / B) keys so that the
  // stacked tangent activations stay bounded. Dense tangents go at most 4 at
  // a time: each carries a whole model's worth of weight tangents, and on
  // `mlp` (bench/run.sh, k_tangents_shared_primal_mlp_dense) one pass with 4
  // beat 4 separate passes while one with 16 was slower than 16 separate
  // ones; rank-one tangents carry only their factors and keep the sharing.
  static absl::StatusOr<LocalResult> RulesJvp(const EstimatorContext& ctx,
                                              const LocalTask& task,
                                              const Batch& batch) {
    const size_t b = static_cast<size_t>(std::max<int64_t>(1, batch.x.size(0)));
    bool all_rank_one = true;
    for (const TangentKey& key : task.tangents) all_rank_one &= key.rank_one;
    // The shared-u route holds [B, K] numbers, not [K, B, features]
    // tangents: all keys in one pass.
    const size_t group = SharedRankOneJvpApplies(ctx.spec, task.tangents)
                             ? std::max<size_t>(1, task.tangents.size())
                         : all_rank_one ? std::max<size_t>(1, 1024 / b)
                                        : std::clamp<size_t>(1024 / b, 1, 4);
    LocalResult out;
    for (size_t k = 0; k < task.tangents.size(); k += group) {
      const std::vector<TangentKey> keys(
          task.tangents.begin() + k,
          task.tangents.begin() + std::min(task.tangents.size(), k + group));
      ASSIGN_OR_RETURN(JvpResult r, ComputeJvpRules(ctx.spec, ctx.params, keys,
                                                    batch.x, batch.y));
      out.jvps.insert(out.jvps.end(), r.jvps.begin(), r.jvps.end());
      out.loss = r.loss;
    }
    out.num_samples = batch.x.size(0);
    return out;
  }

  bool finite_differences_;
  TangentBuffers tangents_;
};

// The flat gradient of the next minibatch (in `update`), its loss and size.
absl::StatusOr<LocalResult> MinibatchGradient(const EstimatorContext& ctx,
                                              const LocalTask& task) {
  const Batch batch = ctx.NextBatch(task.batch_size);
  ASSIGN_OR_RETURN(GradientResult g,
                   ComputeGradient(ctx.spec, ctx.params, batch.x, batch.y));
  LocalResult out;
  out.update = Flatten(g.grads, ctx.spec.NumParams());
  out.loss = g.loss;
  out.num_samples = batch.x.size(0);
  return out;
}

// Random projections of the backprop gradient: d_k = g . v_k for the task's
// tangents, g the minibatch gradient from one backward pass, each tangent
// generated chunk by chunk into the dot product (TangentDots; a rank-one
// tensor costs u^T G a). The same scalars as jvp (to float rounding) for one
// backprop step plus K tangent generations and dot products instead of K
// dual-number passes, so large K stays affordable; unlike jvp, the client
// keeps activations for the backward pass.
class ProjectedGradientEstimator final : public Estimator {
 public:
  absl::StatusOr<LocalResult> Estimate(const EstimatorContext& ctx,
                                       const LocalTask& task) override {
    bool rank_one = !task.tangents.empty();
    for (const TangentKey& key : task.tangents) rank_one &= key.rank_one;
    if (rank_one) {  // matrix products against the factors (RankOneDots)
      const Batch batch = ctx.NextBatch(task.batch_size);
      ASSIGN_OR_RETURN(GradientResult g,
                       ComputeGradient(ctx.spec, ctx.params, batch.x, batch.y));
      LocalResult out;
      ASSIGN_OR_RETURN(out.jvps, RankOneDots(ctx.spec, g.grads, task.tangents));
      out.loss = g.loss;
      out.num_samples = batch.x.size(0);
      return out;
    }
    ASSIGN_OR_RETURN(LocalResult out, MinibatchGradient(ctx, task));
    const std::vector<float> grad = std::move(out.update);
    out.update.clear();
    out.jvps = TangentDots(task.tangents, ctx.spec.Layout(), grad.data());
    return out;
  }
};

// FedSGD: the gradient of one minibatch.
class GradientEstimator final : public Estimator {
 public:
  absl::StatusOr<LocalResult> Estimate(const EstimatorContext& ctx,
                                       const LocalTask& task) override {
    return MinibatchGradient(ctx, task);
  }
};

// FedAvg (McMahan et al. 2017): E passes over the shard in minibatches of B
// (ceil(E n / B) steps) of SGD from the installed model on a private copy;
// the result is the delta local - start and the shard size.
class LocalSgdEstimator final : public Estimator {
 public:
  // ceil(E n / B) minibatches of B.
  int64_t SamplesPerRound(const LocalTask& task, int64_t n) const override {
    const int64_t b = std::min<int64_t>(std::max(task.batch_size, 1), n);
    const int64_t e = std::max(task.local_epochs, 1);
    return (e * n + b - 1) / b * b;
  }

  absl::StatusOr<LocalResult> Estimate(const EstimatorContext& ctx,
                                       const LocalTask& task) override {
    if (task.local_epochs < 1 || !(task.lr > 0) || !std::isfinite(task.lr) ||
        task.momentum < 0 || task.momentum >= 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad fedavg task: local_epochs ", task.local_epochs,
                       ", lr ", task.lr, ", momentum ", task.momentum));
    }
    const int64_t b = std::min<int64_t>(task.batch_size, ctx.shard.size);
    const int64_t steps = SamplesPerRound(task, ctx.shard.size) / b;
    std::vector<at::Tensor> local;
    local.reserve(ctx.params.size());
    for (const auto& p : ctx.params) local.push_back(p.detach().clone());
    ASSIGN_OR_RETURN(double loss,
                     RunSgdSteps(ctx.spec, &local, steps,
                                 SgdOptions{task.lr, task.momentum, false,
                                            task.weight_decay},
                                 [&](at::Tensor* x, at::Tensor* y) {
                                   Batch batch = ctx.NextBatch(b);
                                   *x = batch.x;
                                   *y = batch.y;
                                 }));
    for (size_t i = 0; i < local.size(); ++i) local[i].sub_(ctx.params[i]);
    LocalResult out;
    out.update = Flatten(local, ctx.spec.NumParams());
    out.loss = loss;
    out.num_samples = ctx.shard.size;
    return out;
  }
};

absl::StatusOr<std::unique_ptr<Estimator>> MakeEstimator(
    const std::string& name) {
  if (name == "jvp" || name == "fd") {
    return std::unique_ptr<Estimator>(
        new ForwardGradientEstimator(name == "fd"));
  }
  if (name == "projected") {
    return std::unique_ptr<Estimator>(new ProjectedGradientEstimator());
  }
  if (name == "fedsgd" || name == "backprop") {
    return std::unique_ptr<Estimator>(new GradientEstimator());
  }
  if (name == "fedavg") {
    return std::unique_ptr<Estimator>(new LocalSgdEstimator());
  }
  return absl::UnimplementedError(
      absl::StrCat("this client does not implement estimator '", name, "'"));
}

}  // namespace

struct Trainer::Impl {
  ModelSpec spec;
  DatasetInfo info;
  ImageSet shard;
  std::unique_ptr<BatchSampler> sampler;
  at::Device device{at::kCPU};
  std::string device_name = "cpu";
  std::vector<float> flat;
  std::vector<at::Tensor> params;  // views of flat (CPU) or device copies
  std::string estimator_name;
  std::unique_ptr<Estimator> estimator;
  std::vector<at::Tensor> sgd_buffers;  // SgdStep's momentum
  bool sgd_started = false;
};

Trainer::Trainer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Trainer::~Trainer() = default;

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(
    const TrainerOptions& o) {
  auto impl = std::make_unique<Impl>();
  const bool file_data = IsFileDataset(o.dataset);
  if (file_data) {
    if (o.input_shape.size() != 3 || o.num_classes < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("dataset ", o.dataset,
                       ": the run names no input shape and classes (an older "
                       "coordinator?)"));
    }
    impl->info = FileDataInfo(o.dataset, o.input_shape, o.num_classes,
                              o.file.regression);
  } else {
    ASSIGN_OR_RETURN(impl->info, GetDatasetInfo(o.dataset));
  }
  const std::vector<int64_t> input_shape = {impl->info.channels,
                                            impl->info.rows, impl->info.cols};
  if (o.torchscript.empty()) {
    ASSIGN_OR_RETURN(
        impl->spec, GetModelSpec(o.model, input_shape, impl->info.num_classes));
  } else {
    ScriptOptions so;
    so.input_shape = input_shape;
    so.num_classes = impl->info.num_classes;
    ASSIGN_OR_RETURN(impl->spec,
                     LoadScriptedModel(o.torchscript, o.torchscript_name, so));
  }
  if (o.num_shards < 1 || o.shard < 0 || o.shard >= o.num_shards) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shard ", o.shard, " of ", o.num_shards, " is out of range"));
  }
  ASSIGN_OR_RETURN(ImageSet train, LoadDataSplit(o.dataset, o.file, o.data_dir,
                                                 Split::kTrain, o.train_limit));
  if (file_data) {
    const std::string what =
        FileDataPath(o.dataset, o.data_dir, /*train=*/true);
    RETURN_IF_ERROR(CheckFileData(train, impl->info, what));
    if (train.class_names != o.class_names) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": label names {", absl::StrJoin(train.class_names, ", "),
          "} differ from the coordinator's test split {",
          absl::StrJoin(o.class_names, ", "),
          "}: labels given as names are numbered in sorted order per file, "
          "so both files need the same classes (or use numeric labels)"));
    }
  }
  ASSIGN_OR_RETURN(
      std::vector<int64_t> indices,
      ShardIndices(PartitionLabels(train), PartitionClasses(train, impl->info),
                   o.num_shards, o.shard, o.partition, o.seed, train.ids));
  impl->shard = Subset(train, indices);
  if (impl->shard.size == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("shard ", o.shard, " of ", o.num_shards, " is empty (",
                     train.size, " training examples)"));
  }
  impl->sampler =
      std::make_unique<BatchSampler>(impl->shard.size, o.seed, o.shard);
  if (o.device == "cuda") {
    if (at::hasCUDA()) {
      impl->device = at::Device(at::kCUDA, 0);
      impl->device_name = "cuda:0";
    } else {
      std::fprintf(stderr,
                   "fedfwd-client: --device cuda asked for, but this libtorch "
                   "has no CUDA device available; using the CPU\n");
    }
  } else if (o.device != "cpu") {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown device '", o.device, "' (cpu | cuda)"));
  }
  return std::unique_ptr<Trainer>(new Trainer(std::move(impl)));
}

int64_t Trainer::num_params() const { return impl_->spec.NumParams(); }
std::vector<int64_t> Trainer::param_sizes() const {
  return impl_->spec.ParamSizes();
}

TangentLayout Trainer::tangent_layout() const { return impl_->spec.Layout(); }
int64_t Trainer::shard_size() const { return impl_->shard.size; }
const std::vector<float>& Trainer::params() const { return impl_->flat; }
const std::string& Trainer::device_name() const { return impl_->device_name; }

absl::Status Trainer::SetModel(std::vector<float> params, uint64_t version) {
  if (static_cast<int64_t>(params.size()) != num_params()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model has ", params.size(), " parameters, expected ", num_params()));
  }
  impl_->flat = std::move(params);
  auto views = ParamViews(impl_->spec, impl_->flat.data());
  impl_->params =
      impl_->device.is_cpu() ? views : ParamsTo(views, impl_->device);
  version_ = version;
  return absl::OkStatus();
}

std::vector<float>* Trainer::mutable_params() { return &impl_->flat; }

void Trainer::ParamsChanged(uint64_t version) {
  // CPU tensors view `flat`; device copies must be refreshed.
  if (!impl_->device.is_cpu()) {
    impl_->params =
        ParamsTo(ParamViews(impl_->spec, impl_->flat.data()), impl_->device);
  }
  version_ = version;
}

std::vector<float> Trainer::InitialModel(uint64_t seed) const {
  return InitialParams(impl_->spec, seed);
}

void Trainer::ResetSgdState() {
  impl_->sgd_buffers.clear();
  impl_->sgd_started = false;
}

absl::StatusOr<double> Trainer::SgdStep(std::vector<float>* params,
                                        const SgdOptions& options,
                                        int batch_size) {
  if (static_cast<int64_t>(params->size()) != num_params()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model has ", params->size(), " parameters, expected ", num_params()));
  }
  if (batch_size <= 0) {
    return absl::InvalidArgumentError("batch size must be positive");
  }
  if (!impl_->sgd_started) {
    impl_->sampler->StartRound(1, 0);
    impl_->sgd_started = true;
  }
  std::vector<at::Tensor> views = ParamViews(impl_->spec, params->data());
  std::vector<at::Tensor> local =
      impl_->device.is_cpu() ? views : ParamsTo(views, impl_->device);
  EstimatorContext ctx{impl_->spec,  local,       impl_->device,
                       impl_->shard, impl_->info, *impl_->sampler};
  const Batch batch = ctx.NextBatch(batch_size);
  ASSIGN_OR_RETURN(GradientResult g,
                   ComputeGradient(impl_->spec, local, batch.x, batch.y));
  if (!std::isfinite(g.loss)) {
    return absl::InternalError(
        absl::StrCat("local training diverged (loss ", g.loss, "); lower lr"));
  }
  RETURN_IF_ERROR(
      ApplySgdUpdate(options, g.grads, &local, &impl_->sgd_buffers));
  if (!impl_->device.is_cpu()) {
    std::vector<float> back = Flatten(local, num_params());
    *params = std::move(back);
  }
  return g.loss;
}

absl::StatusOr<LocalResult> Trainer::Run(const LocalTask& task) {
  if (impl_->params.empty()) {
    return absl::FailedPreconditionError("no model installed");
  }
  if (task.batch_size <= 0) {
    return absl::InvalidArgumentError("batch size must be positive");
  }
  if (!impl_->estimator || impl_->estimator_name != task.estimator) {
    ASSIGN_OR_RETURN(impl_->estimator, MakeEstimator(task.estimator));
    impl_->estimator_name = task.estimator;
  }
  const auto start = std::chrono::steady_clock::now();
  impl_->sampler->StartRound(
      task.round, impl_->estimator->SamplesPerRound(task, impl_->shard.size));
  EstimatorContext ctx{impl_->spec,  impl_->params, impl_->device,
                       impl_->shard, impl_->info,   *impl_->sampler};
  ASSIGN_OR_RETURN(LocalResult r, impl_->estimator->Estimate(ctx, task));
  r.compute_ms = std::chrono::duration<double, std::milli>(
                     std::chrono::steady_clock::now() - start)
                     .count();
  return r;
}

}  // namespace fedfwd
