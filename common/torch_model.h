// libtorch side of the models: the forward pass over parameter tensors,
// zero-copy views of a flat parameter buffer, input batches and test
// accuracy. Functions catch c10::Error and return absl::Status.
//
// Models are functional (parameters are passed in, not owned by an
// nn::Module), so the same code runs plain, with dual tensors for forward-mode
// AD, in float64 for checks, and on CUDA.
#ifndef FEDFWD_COMMON_TORCH_MODEL_H_
#define FEDFWD_COMMON_TORCH_MODEL_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "common/dataset.h"
#include "common/model.h"

namespace fedfwd {

// Logits [B, classes] for inputs x [B, C, H, W]. Throws c10::Error on shape
// mismatch: callers inside this module catch it. `layer_input`, when set, is
// applied to the input of every conv and dense layer (the fixed-point
// simulation of finite_diff.h quantizes activations there).
using LayerInputFn = std::function<at::Tensor(const at::Tensor&)>;
at::Tensor Forward(const ModelSpec& spec, const std::vector<at::Tensor>& params,
                   const at::Tensor& x,
                   const LayerInputFn& layer_input = nullptr);

// Tensors that view `flat` (CPU float32, at least spec.NumParams() floats),
// shaped per spec. The caller keeps `flat` alive while the views are used.
std::vector<at::Tensor> ParamViews(const ModelSpec& spec, float* flat);

// Copies parameters to `device` (e.g. CUDA) as contiguous tensors.
std::vector<at::Tensor> ParamsTo(const std::vector<at::Tensor>& params,
                                 const at::Device& device);

// The training loss of outputs [B, K] against y: y int64 [B] (class
// labels): mean cross-entropy; y float [B, T] (regression targets, T == K):
// mean squared error over every entry. Throws c10::Error.
at::Tensor TaskLoss(const at::Tensor& out, const at::Tensor& y);
// dL/dout of TaskLoss for the whole batch of `total` rows, on the rows of
// `out` (a slice of it when `total` is larger): (softmax - onehot(y)) /
// total, or 2 (out - y) / (total * T).
at::Tensor TaskLossGrad(const at::Tensor& out, const at::Tensor& y,
                        int64_t total);

// A normalized float batch [B, C, H, W] and int64 labels [B] (regression:
// float32 targets [B, T]) built from the examples at `indices` of `set`.
struct Batch {
  at::Tensor x, y;
};
Batch MakeBatch(const ImageSet& set, const DatasetInfo& info,
                const std::vector<int64_t>& indices);
// The whole set as one batch (for evaluation data kept in memory).
Batch MakeFullBatch(const ImageSet& set, const DatasetInfo& info);

// Accuracy and mean cross-entropy of the model on `data` (float targets:
// RMSE, R^2 and mean squared error), in chunks of `chunk` examples, without
// autograd.
absl::StatusOr<EvalResult> Evaluate(const ModelSpec& spec,
                                    const std::vector<at::Tensor>& params,
                                    const Batch& data, int64_t chunk = 1000);

// Sets libtorch's intra-op and inter-op thread counts and OpenBLAS's pool
// (when OpenBLAS is the BLAS behind libtorch) (n <= 0: leave the
// library default). Call once, before any tensor work.
void SetTorchThreads(int n);

}  // namespace fedfwd

#endif  // FEDFWD_COMMON_TORCH_MODEL_H_
