// The model registry: names, layer lists, parameter shapes and
// initialization, without libtorch (the coordinator's merge path and the codec
// only need shapes). The forward pass lives in torch_model.h; it interprets
// ModelSpec::layers in order.
//
// Parameters are ordered by registration (layer order; weight before bias); a
// model's flat vector is the parameters back to back in that order (float32).
// Tangent parameter indices and snapshot bytes follow the same order, so the
// names, order, shapes and fan_in of a registered model are part of the
// wire and checkpoint format: never change them for an existing name.
//
// Batch norm: models hold no running statistics (the flat parameter vector is
// the whole model state, which seed-replay sync and snapshots rely on), so a
// batch-norm layer always normalizes with the statistics of the batch it is
// given, in training and in evaluation alike (at::batch_norm with
// training=true, no running buffers, eps 1e-5). Evaluate() runs in chunks of
// 1000 examples, so the statistics are well estimated there; a prediction
// does depend on the other examples of its chunk, and a batch-norm model
// needs more than one value per channel in every batch.
#ifndef FEDFWD_COMMON_MODEL_H_
#define FEDFWD_COMMON_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/rng.h"

namespace fedfwd {

struct ParamSpec {
  // How InitialParams fills the tensor.
  enum class Init {
    kUniform,  // U(-b, b), b = 1/sqrt(fan_in) (PyTorch's Linear/Conv2d)
    kOnes,     // batch-norm scale (gamma)
    kZeros,    // batch-norm shift (beta)
  };
  std::string name;  // e.g. "fc1.weight"
  std::vector<int64_t> shape;
  int64_t fan_in = 1;  // init bound 1/sqrt(fan_in) for kUniform
  Init init = Init::kUniform;
  int64_t numel() const;
};

// One step of the forward pass. Layers with parameters (conv, dense,
// batchnorm) own two consecutive ParamSpecs, "<name>.weight" and
// "<name>.bias"; for batch norm these are gamma and beta.
struct LayerSpec {
  enum class Kind {
    kConv,       // size output channels, kernel x kernel, stride 1, pad
    kDense,      // size output features; input must be flattened
    kBatchNorm,  // per channel (4-D) or per feature (2-D), batch statistics
    kRelu,
    kMaxPool,  // size x size window, stride size (floor)
    kAvgPool,  // size x size window, stride size (floor)
    kFlatten,  // [B, C, H, W] -> [B, C*H*W]
  };
  Kind kind = Kind::kRelu;
  std::string name;    // parameter prefix; conv, dense and batchnorm only
  int64_t size = 0;    // conv/dense: outputs; pools: window
  int64_t kernel = 0;  // conv only
  int64_t pad = 0;     // conv only: zeros on each side

  static LayerSpec Conv(std::string name, int64_t out, int64_t kernel,
                        int64_t pad);
  static LayerSpec Dense(std::string name, int64_t out);
  static LayerSpec BatchNorm(std::string name);
  static LayerSpec Relu();
  static LayerSpec MaxPool(int64_t window);
  static LayerSpec AvgPool(int64_t window);
  static LayerSpec Flatten();
};

// A TorchScript module loaded by common/scripted_model.h (libtorch side).
struct ScriptedModule;

struct ModelSpec {
  std::string name;
  std::vector<int64_t> input_shape;  // C, H, W
  int64_t num_classes = 10;
  std::vector<LayerSpec> layers;  // what Forward runs, in order
  std::vector<ParamSpec> params;  // derived from layers and input_shape

  // A model from a TorchScript file (config `model: {torchscript: FILE}`):
  // `layers` is empty, Forward runs `scripted`, `params` are the module's
  // parameters in registration order (named_parameters), `initial` their
  // values in the file (InitialParams returns them whatever the seed) and
  // `script` the file's bytes, which the coordinator sends to clients.
  std::shared_ptr<const ScriptedModule> scripted;
  std::shared_ptr<const std::vector<float>> initial;
  std::shared_ptr<const std::string> script;
  bool is_scripted() const { return scripted != nullptr; }

  int64_t NumParams() const;
  std::vector<int64_t> ParamSizes() const;
  // Sizes plus each tensor's rows (shape[0] for two or more dimensions, 0
  // for a vector): what rank-one tangents factor.
  TangentLayout Layout() const;
};

// Derives the parameters of `layers` applied to inputs of `input_shape`
// (C,H,W): checks that every layer fits the shape it receives (spatial sizes
// stay >= 1, dense only after flatten, convolutions and pools only before)
// that the model ends in a dense layer of `outputs` outputs, and that it has at
// most kMaxParamIndex parameter tensors (tangent counters hold the index in 12
// bits). Errors are InvalidArgument naming the model (and the layer).
absl::StatusOr<ModelSpec> MakeModelSpec(const std::string& name,
                                        const std::vector<int64_t>& input_shape,
                                        std::vector<LayerSpec> layers,
                                        int64_t outputs = 10);

// Registered names (see ModelNames): mlp, cnn, mlp_small, cnn_small, logreg,
// tiny, cifar_cnn, lenet5. `input_shape` is the dataset's C,H,W; every model
// adapts its first and its dense layers to it (MNIST 1x28x28, CIFAR 3x32x32).
// `outputs`: the last dense layer's width (classes; 10 for the image data
// sets, whose models the registry's comments describe).
absl::StatusOr<ModelSpec> GetModelSpec(const std::string& name,
                                       const std::vector<int64_t>& input_shape,
                                       int64_t outputs = 10);
std::vector<std::string> ModelNames();

// Test-set score of a model.
struct EvalResult {
  // The score that runs track (best model, targets, final): the accuracy,
  // or for regression R^2 (below).
  double accuracy = 0;
  double loss = 0;  // mean cross-entropy; regression: mean squared error
  int64_t count = 0;
  // Regression (float targets): the root mean squared error and R^2 = 1 -
  // SSE / SST (SST about the evaluated targets' own mean, summed over
  // target dimensions; 0 when the targets are constant).
  bool regression = false;
  double rmse = 0;
  double r2 = 0;
};

// "test_acc 0.9123", or for regression "test_r2 0.4512  test_rmse 55.31":
// the score as progress lines print it.
std::string ScoreText(const EvalResult& r);

// Deterministic initial weights from the run seed (a TorchScript model:
// the values in its file, see ModelSpec::initial). kUniform parameters get
// U(-b, b), b = 1/sqrt(fan_in) (PyTorch's default for Linear/Conv2d), drawn
// from the generator stream of their parameter index; kOnes / kZeros are
// constant.
std::vector<float> InitialParams(const ModelSpec& spec, uint64_t seed);

}  // namespace fedfwd

#endif  // FEDFWD_COMMON_MODEL_H_
