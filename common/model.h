// The model registry: names, parameter shapes and initialization, without
// libtorch (the coordinator's merge path and the codec only need shapes).
// The forward pass lives in torch_model.h.
//
// Parameters are ordered by registration; a model's flat vector is the
// parameters back to back in that order (float32). Tangent parameter indices
// and snapshot bytes follow the same order.
#ifndef FEDFWD_COMMON_MODEL_H_
#define FEDFWD_COMMON_MODEL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace fedfwd {

struct ParamSpec {
  std::string name;  // e.g. "fc1.weight"
  std::vector<int64_t> shape;
  int64_t fan_in = 1;  // init bound 1/sqrt(fan_in), as PyTorch's default
  int64_t numel() const;
};

struct ModelSpec {
  std::string name;
  std::string arch;  // "mlp" or "cnn": which forward function runs it
  std::vector<int64_t> input_shape;  // C, H, W
  int64_t num_classes = 10;
  // mlp: hidden widths; cnn: conv channels (3x3, pad 1), with a 2x2 max-pool
  // after every `pool_every` convolutions, then one dense layer.
  std::vector<int64_t> widths;
  int pool_every = 2;
  // mlp only: average-pool the input by this factor first (1: off).
  int input_pool = 1;
  std::vector<ParamSpec> params;

  int64_t NumParams() const;
  std::vector<int64_t> ParamSizes() const;
};

// Registered names: mlp, cnn, mlp_small, cnn_small, logreg, tiny. `input_shape`
// is the dataset's C,H,W.
absl::StatusOr<ModelSpec> GetModelSpec(const std::string& name,
                                       const std::vector<int64_t>& input_shape);
std::vector<std::string> ModelNames();

// Test-set score of a model.
struct EvalResult {
  double accuracy = 0;
  double loss = 0;  // mean cross-entropy
  int64_t count = 0;
};

// Deterministic initial weights from the run seed: U(-b, b), b = 1/sqrt(fan_in)
// for weights and biases (PyTorch's default for Linear/Conv2d).
std::vector<float> InitialParams(const ModelSpec& spec, uint64_t seed);

}  // namespace fedfwd

#endif  // FEDFWD_COMMON_MODEL_H_
