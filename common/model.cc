#include "common/model.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/rng.h"

namespace fedfwd {

int64_t ParamSpec::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
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

namespace {

ModelSpec Mlp(const std::string& name, std::vector<int64_t> input_shape,
              std::vector<int64_t> hidden, int input_pool = 1) {
  ModelSpec spec;
  spec.name = name;
  spec.arch = "mlp";
  spec.input_shape = input_shape;
  spec.widths = hidden;
  spec.input_pool = input_pool;
  int64_t in = input_shape[0] * (input_shape[1] / input_pool) *
               (input_shape[2] / input_pool);
  std::vector<int64_t> outs = hidden;
  outs.push_back(spec.num_classes);
  for (size_t i = 0; i < outs.size(); ++i) {
    const std::string layer = absl::StrCat("fc", i + 1);
    spec.params.push_back({layer + ".weight", {outs[i], in}, in});
    spec.params.push_back({layer + ".bias", {outs[i]}, in});
    in = outs[i];
  }
  return spec;
}

ModelSpec Cnn(const std::string& name, std::vector<int64_t> input_shape,
              std::vector<int64_t> channels, int pool_every) {
  ModelSpec spec;
  spec.name = name;
  spec.arch = "cnn";
  spec.input_shape = input_shape;
  spec.widths = channels;
  spec.pool_every = pool_every;
  int64_t c = input_shape[0], h = input_shape[1], w = input_shape[2];
  for (size_t i = 0; i < channels.size(); ++i) {
    const std::string layer = absl::StrCat("conv", i + 1);
    const int64_t fan_in = c * 9;
    spec.params.push_back({layer + ".weight", {channels[i], c, 3, 3}, fan_in});
    spec.params.push_back({layer + ".bias", {channels[i]}, fan_in});
    c = channels[i];
    if ((i + 1) % pool_every == 0) {
      h /= 2;
      w /= 2;
    }
  }
  const int64_t flat = c * h * w;
  spec.params.push_back({"fc.weight", {spec.num_classes, flat}, flat});
  spec.params.push_back({"fc.bias", {spec.num_classes}, flat});
  return spec;
}

}  // namespace

static absl::StatusOr<ModelSpec> BuildModelSpec(
    const std::string& name, const std::vector<int64_t>& input_shape);

std::vector<std::string> ModelNames() {
  return {"mlp", "cnn", "mlp_small", "cnn_small", "logreg", "tiny"};
}

absl::StatusOr<ModelSpec> GetModelSpec(
    const std::string& name, const std::vector<int64_t>& input_shape) {
  auto spec = BuildModelSpec(name, input_shape);
  // Tangent counters hold the parameter index in 12 bits.
  if (spec.ok() && spec->params.size() > kMaxParamIndex) {
    return absl::InvalidArgumentError(
        absl::StrCat("model ", name, " has more than ", kMaxParamIndex,
                     " parameter tensors"));
  }
  return spec;
}

static absl::StatusOr<ModelSpec> BuildModelSpec(
    const std::string& name, const std::vector<int64_t>& input_shape) {
  if (input_shape.size() != 3) {
    return absl::InvalidArgumentError("model input shape must be C,H,W");
  }
  // The forward-gradient report's MNN: 784-1024-1024-10.
  if (name == "mlp") return Mlp(name, input_shape, {1024, 1024});
  if (name == "mlp_small") return Mlp(name, input_shape, {32});
  // Multinomial logistic regression: small enough for forward gradients to
  // learn in a few rounds (integration tests).
  if (name == "logreg") return Mlp(name, input_shape, {});
  // Logistic regression on 4x4-average-pooled images (7x7 for MNIST, 500
  // parameters): learns within a few forward-gradient rounds (tests, smoke).
  if (name == "tiny") return Mlp(name, input_shape, {}, 4);
  // The report's CNN: four 3x3 convolutions of 64 channels, a 2x2 max-pool
  // after the second and the fourth, one dense layer.
  if (name == "cnn") return Cnn(name, input_shape, {64, 64, 64, 64}, 2);
  if (name == "cnn_small") return Cnn(name, input_shape, {8, 8}, 1);
  return absl::InvalidArgumentError(
      absl::StrCat("unknown model '", name,
                   "'; known models: ", absl::StrJoin(ModelNames(), ", ")));
}

std::vector<float> InitialParams(const ModelSpec& spec, uint64_t seed) {
  std::vector<float> flat(static_cast<size_t>(spec.NumParams()));
  int64_t off = 0;
  for (size_t p = 0; p < spec.params.size(); ++p) {
    const float bound =
        1.0f / std::sqrt(static_cast<float>(spec.params[p].fan_in));
    FillUniform(seed, static_cast<uint32_t>(p), -bound, bound,
                flat.data() + off, spec.params[p].numel());
    off += spec.params[p].numel();
  }
  return flat;
}

}  // namespace fedfwd
