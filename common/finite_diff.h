// Forward gradients without forward-mode AD: central finite differences
// from two forward passes per tangent,
//   d_k = (f(θ + ε v_k) - f(θ - ε v_k)) / 2ε,
// where f is the mean cross-entropy of the batch. The error against the exact
// JVP comes from the step ε v (|v| = sqrt(P) for our tangents): O(ε²) terms
// and, mostly, the ReLU kinks it crosses; plus float rounding of the two
// losses, about |f| * 2^-24 / ε. In our measurement (tests/
// forward_family_test.cc) ε = 1e-4 balanced them in float32.
//
// Fixed point: the passes can run as an integer accelerator would, with
// every parameter tensor quantized to int16 and the input of every conv and
// dense layer to int8, each with a symmetric per-tensor scale
// (max |x| / (2^(bits-1) - 1)), products accumulated exactly (in float32
// here, which is exact for these ranges up to the accumulation order). This
// is simulated quantization (values rounded to the integer grid and scaled
// back), which gives the integer kernel's results; it does not measure an
// NPU's speed.
//
// No autograd, no dual numbers: only inference. Thread-compatible.
#ifndef FEDFWD_COMMON_FINITE_DIFF_H_
#define FEDFWD_COMMON_FINITE_DIFF_H_

#include <ATen/core/Tensor.h>

#include <vector>

#include "absl/status/statusor.h"
#include "common/forward_ad.h"
#include "common/model.h"

namespace fedfwd {

struct FixedPointSpec {
  int weight_bits = 16;
  int activation_bits = 8;
};

// Logits with quantized weights and layer inputs (see above).
absl::StatusOr<at::Tensor> ForwardFixedPoint(
    const ModelSpec& spec, const std::vector<at::Tensor>& params,
    const at::Tensor& x, const FixedPointSpec& fixed);

// `x` rounded to a symmetric `bits`-bit grid with scale max|x| / (2^(bits-1)
// - 1) and scaled back (all zeros stay zeros).
at::Tensor FakeQuantize(const at::Tensor& x, int bits);

// d_k for every tangent (same layout as ComputeJvp's); `fixed` null: float32
// passes. JvpResult::loss is f(θ) (one more pass, in the same precision).
absl::StatusOr<JvpResult> ComputeFiniteDifference(
    const ModelSpec& spec, const std::vector<at::Tensor>& params,
    const std::vector<std::vector<at::Tensor>>& tangents, const at::Tensor& x,
    const at::Tensor& y, double epsilon, const FixedPointSpec* fixed);

}  // namespace fedfwd

#endif  // FEDFWD_COMMON_FINITE_DIFF_H_
