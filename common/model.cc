#include "common/model.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/rng.h"

namespace fedfwd {

int64_t ParamSpec::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

LayerSpec LayerSpec::Conv(std::string name, int64_t out, int64_t kernel,
                          int64_t pad) {
  LayerSpec l;
  l.kind = Kind::kConv;
  l.name = std::move(name);
  l.size = out;
  l.kernel = kernel;
  l.pad = pad;
  return l;
}

LayerSpec LayerSpec::Dense(std::string name, int64_t out) {
  LayerSpec l;
  l.kind = Kind::kDense;
  l.name = std::move(name);
  l.size = out;
  return l;
}

LayerSpec LayerSpec::BatchNorm(std::string name) {
  LayerSpec l;
  l.kind = Kind::kBatchNorm;
  l.name = std::move(name);
  return l;
}

LayerSpec LayerSpec::Relu() { return LayerSpec(); }

LayerSpec LayerSpec::MaxPool(int64_t window) {
  LayerSpec l;
  l.kind = Kind::kMaxPool;
  l.size = window;
  return l;
}

LayerSpec LayerSpec::AvgPool(int64_t window) {
  LayerSpec l;
  l.kind = Kind::kAvgPool;
  l.size = window;
  return l;
}

LayerSpec LayerSpec::Flatten() {
  LayerSpec l;
  l.kind = Kind::kFlatten;
  return l;
}

int64_t ModelSpec::NumParams() const {
  int64_t n = 0;
  for (const auto& p : params) n += p.numel();
  return n;
}

std::vector<int64_t> ModelSpec::ParamSizes() const {
  std::vector<int64_t> sizes;
  for (const auto& p : params) sizes.push_back(p.numel());
  return sizes;
}

TangentLayout ModelSpec::Layout() const {
  std::vector<int64_t> rows;
  for (const auto& p : params) {
    rows.push_back(p.shape.size() >= 2 ? p.shape[0] : 0);
  }
  return TangentLayout(ParamSizes(), std::move(rows));
}

absl::StatusOr<ModelSpec> MakeModelSpec(const std::string& name,
                                        const std::vector<int64_t>& input_shape,
                                        std::vector<LayerSpec> layers,
                                        int64_t outputs) {
  if (input_shape.size() != 3 || input_shape[0] < 1 || input_shape[1] < 1 ||
      input_shape[2] < 1) {
    return absl::InvalidArgumentError(
        "model input shape must be C,H,W with positive sizes");
  }
  ModelSpec spec;
  spec.num_classes = outputs;
  spec.name = name;
  spec.input_shape = input_shape;
  // Shape of the activation entering each layer: [c, h, w] until flattened,
  // then [features].
  int64_t c = input_shape[0], h = input_shape[1], w = input_shape[2];
  int64_t features = 0;
  bool flat = false;
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerSpec& l = layers[i];
    auto error = [&](const std::string& what) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model ", name, ", layer ", i, l.name.empty() ? "" : " (", l.name,
          l.name.empty() ? "" : ")", ": ", what, " (input ",
          absl::StrJoin(input_shape, "x"), ")"));
    };
    using Kind = LayerSpec::Kind;
    switch (l.kind) {
      case Kind::kConv: {
        if (flat) return error("convolution after flatten");
        if (l.size < 1 || l.kernel < 1 || l.pad < 0) {
          return error("bad convolution sizes");
        }
        const int64_t oh = h + 2 * l.pad - l.kernel + 1;
        const int64_t ow = w + 2 * l.pad - l.kernel + 1;
        if (oh < 1 || ow < 1) {
          return error(absl::StrCat("kernel ", l.kernel, " larger than the ", h,
                                    "x", w, " input (padded by ", l.pad, ")"));
        }
        const int64_t fan_in = c * l.kernel * l.kernel;
        spec.params.push_back(
            {l.name + ".weight", {l.size, c, l.kernel, l.kernel}, fan_in});
        spec.params.push_back({l.name + ".bias", {l.size}, fan_in});
        c = l.size;
        h = oh;
        w = ow;
        break;
      }
      case Kind::kDense:
        if (!flat) return error("dense layer before flatten");
        if (l.size < 1) return error("dense layer needs outputs >= 1");
        spec.params.push_back(
            {l.name + ".weight", {l.size, features}, features});
        spec.params.push_back({l.name + ".bias", {l.size}, features});
        features = l.size;
        break;
      case Kind::kBatchNorm: {
        const int64_t channels = flat ? features : c;
        spec.params.push_back(
            {l.name + ".weight", {channels}, 1, ParamSpec::Init::kOnes});
        spec.params.push_back(
            {l.name + ".bias", {channels}, 1, ParamSpec::Init::kZeros});
        break;
      }
      case Kind::kRelu:
        break;
      case Kind::kMaxPool:
      case Kind::kAvgPool:
        if (flat) return error("pooling after flatten");
        if (l.size < 1) return error("pool window must be >= 1");
        if (h / l.size < 1 || w / l.size < 1) {
          return error(absl::StrCat("pool window ", l.size, " larger than the ",
                                    h, "x", w, " input"));
        }
        h /= l.size;
        w /= l.size;
        break;
      case Kind::kFlatten:
        if (flat) return error("flatten twice");
        features = c * h * w;
        flat = true;
        break;
    }
  }
  if (layers.empty() || layers.back().kind != LayerSpec::Kind::kDense ||
      features != spec.num_classes) {
    return absl::InvalidArgumentError(
        absl::StrCat("model ", name, " must end in a dense layer of ",
                     spec.num_classes, " outputs"));
  }
  // Tangent counters hold the parameter index in 12 bits.
  if (spec.params.size() > kMaxParamIndex) {
    return absl::InvalidArgumentError(
        absl::StrCat("model ", name, " has more than ", kMaxParamIndex,
                     " parameter tensors"));
  }
  spec.layers = std::move(layers);
  return spec;
}

namespace {

using L = LayerSpec;

// Flatten (after an optional average pool of the input), then dense layers
// fc1, fc2, ... of `hidden` widths with ReLU between, and one of 10 outputs.
absl::StatusOr<ModelSpec> Mlp(const std::string& name,
                              const std::vector<int64_t>& input_shape,
                              const std::vector<int64_t>& hidden,
                              int64_t outputs, int input_pool = 1) {
  std::vector<LayerSpec> layers;
  if (input_pool > 1) layers.push_back(L::AvgPool(input_pool));
  layers.push_back(L::Flatten());
  for (size_t i = 0; i < hidden.size(); ++i) {
    layers.push_back(L::Dense(absl::StrCat("fc", i + 1), hidden[i]));
    layers.push_back(L::Relu());
  }
  layers.push_back(L::Dense(absl::StrCat("fc", hidden.size() + 1), outputs));
  return MakeModelSpec(name, input_shape, std::move(layers), outputs);
}

// 3x3 convolutions conv1, conv2, ... (pad 1) each followed by ReLU, a 2x2
// max-pool after every `pool_every` convolutions, then flatten and one dense
// layer "fc".
absl::StatusOr<ModelSpec> Cnn(const std::string& name,
                              const std::vector<int64_t>& input_shape,
                              const std::vector<int64_t>& channels,
                              size_t pool_every, int64_t outputs) {
  std::vector<LayerSpec> layers;
  for (size_t i = 0; i < channels.size(); ++i) {
    layers.push_back(L::Conv(absl::StrCat("conv", i + 1), channels[i], 3, 1));
    layers.push_back(L::Relu());
    if ((i + 1) % pool_every == 0) layers.push_back(L::MaxPool(2));
  }
  layers.push_back(L::Flatten());
  layers.push_back(L::Dense("fc", outputs));
  return MakeModelSpec(name, input_shape, std::move(layers), outputs);
}

absl::StatusOr<ModelSpec> BuildModelSpec(
    const std::string& name, const std::vector<int64_t>& input_shape,
    int64_t outputs) {
  if (input_shape.size() != 3) {
    return absl::InvalidArgumentError("model input shape must be C,H,W");
  }
  // The forward-gradient report's MNN: 784-1024-1024-10.
  if (name == "mlp") return Mlp(name, input_shape, {1024, 1024}, outputs);
  if (name == "mlp_small") return Mlp(name, input_shape, {32}, outputs);
  // Multinomial logistic regression: small enough for forward gradients to
  // learn in a few rounds (integration tests).
  if (name == "logreg") return Mlp(name, input_shape, {}, outputs);
  // Logistic regression on 4x4-average-pooled images (7x7 for MNIST, 500
  // parameters): learns within a few forward-gradient rounds (tests, smoke).
  if (name == "tiny") return Mlp(name, input_shape, {}, outputs, 4);
  // The report's CNN: four 3x3 convolutions of 64 channels, a 2x2 max-pool
  // after the second and the fourth, one dense layer.
  if (name == "cnn") {
    return Cnn(name, input_shape, {64, 64, 64, 64}, 2, outputs);
  }
  if (name == "cnn_small") return Cnn(name, input_shape, {8, 8}, 1, outputs);
  // A CIFAR-10 backprop baseline: 5x5x64 and 5x5x128 convolutions (pad 2),
  // each followed by ReLU and a 2x2 max-pool, a 3x3x64 convolution (pad 1)
  // with ReLU, one dense layer.
  if (name == "cifar_cnn") {
    return MakeModelSpec(name, input_shape,
                         {L::Conv("conv1", 64, 5, 2), L::Relu(), L::MaxPool(2),
                          L::Conv("conv2", 128, 5, 2), L::Relu(), L::MaxPool(2),
                          L::Conv("conv3", 64, 3, 1), L::Relu(), L::Flatten(),
                          L::Dense("fc", outputs)},
                         outputs);
  }
  // LeNet-5 variant: 5x5x30 convolution, ReLU, max-pool; 5x5x40 convolution,
  // batch norm, ReLU, max-pool; dense 700 with ReLU; dense 10. No padding.
  if (name == "lenet5") {
    return MakeModelSpec(
        name, input_shape,
        {L::Conv("conv1", 30, 5, 0), L::Relu(), L::MaxPool(2),
         L::Conv("conv2", 40, 5, 0), L::BatchNorm("bn2"), L::Relu(),
         L::MaxPool(2), L::Flatten(), L::Dense("fc1", 700), L::Relu(),
         L::Dense("fc2", outputs)},
        outputs);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown model '", name,
                   "'; known models: ", absl::StrJoin(ModelNames(), ", ")));
}

}  // namespace

std::vector<std::string> ModelNames() {
  return {"mlp",    "cnn",  "mlp_small", "cnn_small",
          "logreg", "tiny", "cifar_cnn", "lenet5"};
}

absl::StatusOr<ModelSpec> GetModelSpec(const std::string& name,
                                       const std::vector<int64_t>& input_shape,
                                       int64_t outputs) {
  if (outputs < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("model ", name, ": ", outputs, " outputs"));
  }
  return BuildModelSpec(name, input_shape, outputs);
}

std::vector<float> InitialParams(const ModelSpec& spec, uint64_t seed) {
  if (spec.initial != nullptr) return *spec.initial;
  std::vector<float> flat(static_cast<size_t>(spec.NumParams()));
  int64_t off = 0;
  for (size_t p = 0; p < spec.params.size(); ++p) {
    const ParamSpec& param = spec.params[p];
    float* out = flat.data() + off;
    switch (param.init) {
      case ParamSpec::Init::kUniform: {
        const float bound = 1.0f / std::sqrt(static_cast<float>(param.fan_in));
        FillUniform(seed, static_cast<uint32_t>(p), -bound, bound, out,
                    param.numel());
        break;
      }
      case ParamSpec::Init::kOnes:
        std::fill(out, out + param.numel(), 1.0f);
        break;
      case ParamSpec::Init::kZeros:
        std::fill(out, out + param.numel(), 0.0f);
        break;
    }
    off += param.numel();
  }
  return flat;
}

std::string ScoreText(const EvalResult& r) {
  if (r.regression) {
    return absl::StrFormat("test_r2 %.4f  test_rmse %.4g", r.r2, r.rmse);
  }
  return absl::StrFormat("test_acc %.4f", r.accuracy);
}

}  // namespace fedfwd
