// Models written in PyTorch: a TorchScript module (torch.jit.script or
// torch.jit.trace, then .save()) loaded with libtorch and run as a fedfwd
// model. Config: `model: {torchscript: FILE}`.
//
// The module's parameters, in registration order (named_parameters with
// recursion: the order PyTorch's state_dict lists them), are the model's flat
// parameter vector, so tangents, seed replay, checksums, merging and
// snapshots work as for the built-in models. Forward() swaps the caller's
// tensors (plain, dual for forward-mode AD, float64, CUDA) into the module's
// parameter slots and calls its forward method: the module is a function of
// its parameters, and libtorch's forward AD runs through the TorchScript
// interpreter for the jvp estimator (the hand-written JVP rules stay for the
// built-in models).
//
// What a module must satisfy (checked at load, with errors that name the
// file and the parameter, buffer or op at fault):
// - forward(x) takes one float batch [B, C, H, W] of the data set's input
//   shape and returns one tensor of logits [B, classes];
// - the module runs in eval mode (training = False) for training and
//   evaluation alike, so dropout is off and a prediction depends only on the
//   parameters: fedfwd's whole model state is the parameter vector, which
//   seed replay and snapshots move; a buffer that a forward pass in training
//   mode changes (BatchNorm's running statistics) is refused: export batch
//   norm with track_running_stats=False (it then normalizes with the batch's
//   statistics, as the built-in models do);
// - for the forward-gradient estimators that use forward-mode AD (`jvp`),
//   every op must have a forward derivative in this libtorch (1.13): an op
//   without one (cdist, logcumsumexp, renorm, ...) is refused at load with
//   its name; `fd`, `projected`, `fedsgd` and `fedavg` do not need one.
//
// The graph executor's optimizing passes are switched off process-wide when
// the first module is loaded: the profiling executor rewrites a graph after
// its first runs, and forward AD through the rewritten graph has lost the
// tangent in some libtorch versions (tests/scripted_model_test.cc checks the
// 1st, 2nd and 10th call).
#ifndef FEDFWD_COMMON_SCRIPTED_MODEL_H_
#define FEDFWD_COMMON_SCRIPTED_MODEL_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model.h"

namespace fedfwd {

// TorchScript files above this size are refused (the coordinator sends the
// file in its join reply, within gRPC's 8 MiB message limit on clients).
inline constexpr int64_t kMaxScriptBytes = 6 << 20;

struct ScriptOptions {
  std::vector<int64_t> input_shape;  // C, H, W of the data set
  int64_t num_classes = 10;
  // Check that libtorch's forward-mode AD runs through every op (estimator
  // jvp): an op without a forward derivative is refused with its name.
  bool forward_ad = false;
};

// Loads the module from the bytes of a TorchScript file; `name` (the file's
// path or a description) appears in every error. Errors: InvalidArgument for
// a file that is not a TorchScript module, has no forward method, no float32
// parameters, more than kMaxParamIndex parameter tensors, a buffer that
// training changes, an output that does not fit the data, or an op without a
// forward derivative (options.forward_ad).
absl::StatusOr<ModelSpec> LoadScriptedModel(const std::string& bytes,
                                            const std::string& name,
                                            const ScriptOptions& options);

// Reads `path` and loads it (NotFound for a missing file, InvalidArgument for
// one above kMaxScriptBytes).
absl::StatusOr<ModelSpec> LoadScriptedModelFile(const std::string& path,
                                                const ScriptOptions& options);

// The forward pass of a scripted model: logits for x with `params` in the
// module's parameter slots. Throws c10::Error like Forward (torch_model.h),
// which calls it for scripted specs. Serialized per module: concurrent calls
// on one module take turns.
at::Tensor ScriptedForward(const ScriptedModule& module,
                           const std::vector<at::Tensor>& params,
                           const at::Tensor& x);

// The model a run trains: the TorchScript file when `torchscript` is set,
// else the registered model `name`. `forward_ad` as in ScriptOptions.
absl::StatusOr<ModelSpec> ResolveModelSpec(
    const std::string& name, const std::string& torchscript,
    const std::vector<int64_t>& input_shape, int64_t num_classes,
    bool forward_ad);

// Whether a run with this estimator computes JVPs by libtorch's forward AD
// (and so needs every op of a scripted model to have a forward derivative).
bool EstimatorNeedsForwardAd(const std::string& estimator);

}  // namespace fedfwd

#endif  // FEDFWD_COMMON_SCRIPTED_MODEL_H_
