#include "common/torch_model.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>
#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/scripted_model.h"

namespace fedfwd {

at::Tensor Forward(const ModelSpec& spec, const std::vector<at::Tensor>& params,
                   const at::Tensor& x, const LayerInputFn& layer_input) {
  if (spec.is_scripted()) {
    TORCH_CHECK(!layer_input, "model ", spec.name,
                " is a TorchScript module: the fixed-point simulation of "
                "layer inputs needs a built-in model");
    return ScriptedForward(*spec.scripted, params, x);
  }
  TORCH_CHECK(params.size() == spec.params.size(), "model ", spec.name, " has ",
              spec.params.size(), " parameter tensors, got ", params.size());
  at::Tensor h = x;
  size_t p = 0;  // next parameter; conv, dense and batchnorm take two
  for (const LayerSpec& layer : spec.layers) {
    switch (layer.kind) {
      case LayerSpec::Kind::kConv:
        if (layer_input) h = layer_input(h);
        h = at::conv2d(h, params[p], params[p + 1], /*stride=*/{1, 1},
                       /*padding=*/{layer.pad, layer.pad});
        p += 2;
        break;
      case LayerSpec::Kind::kDense:
        if (layer_input) h = layer_input(h);
        h = at::linear(h, params[p], params[p + 1]);
        p += 2;
        break;
      case LayerSpec::Kind::kBatchNorm:
        // Batch statistics always; no running buffers (see model.h).
        h = at::batch_norm(h, params[p], params[p + 1], /*running_mean=*/{},
                           /*running_var=*/{}, /*training=*/true,
                           /*momentum=*/0.1, /*eps=*/1e-5,
                           /*cudnn_enabled=*/true);
        p += 2;
        break;
      case LayerSpec::Kind::kRelu:
        h = at::relu(h);
        break;
      case LayerSpec::Kind::kMaxPool:
        h = at::max_pool2d(h, {layer.size, layer.size});
        break;
      case LayerSpec::Kind::kAvgPool:
        h = at::avg_pool2d(h, {layer.size, layer.size});
        break;
      case LayerSpec::Kind::kFlatten:
        h = h.reshape({h.size(0), -1});
        break;
    }
  }
  return h;
}

std::vector<at::Tensor> ParamViews(const ModelSpec& spec, float* flat) {
  std::vector<at::Tensor> views;
  views.reserve(spec.params.size());
  int64_t off = 0;
  for (const auto& p : spec.params) {
    views.push_back(at::from_blob(flat + off, p.shape, at::kFloat));
    off += p.numel();
  }
  return views;
}

std::vector<at::Tensor> ParamsTo(const std::vector<at::Tensor>& params,
                                 const at::Device& device) {
  std::vector<at::Tensor> out;
  out.reserve(params.size());
  for (const auto& p : params) out.push_back(p.to(device).contiguous());
  return out;
}

at::Tensor TaskLoss(const at::Tensor& out, const at::Tensor& y) {
  if (at::isFloatingType(y.scalar_type())) {
    return at::mse_loss(out, y.to(out.scalar_type()));
  }
  return at::cross_entropy_loss(out, y);
}

at::Tensor TaskLossGrad(const at::Tensor& out, const at::Tensor& y,
                        int64_t total) {
  if (at::isFloatingType(y.scalar_type())) {
    return (out - y.to(out.scalar_type())) *
           (2.0 / static_cast<double>(total * out.size(1)));
  }
  return (at::softmax(out, 1) -
          at::one_hot(y, out.size(1)).to(out.scalar_type())) /
         static_cast<double>(total);
}

Batch MakeBatch(const ImageSet& set, const DatasetInfo& info,
                const std::vector<int64_t>& indices) {
  const int64_t per = set.channels * set.rows * set.cols;
  const int64_t b = static_cast<int64_t>(indices.size());
  at::Tensor x = at::empty({b, set.channels, set.rows, set.cols}, at::kFloat);
  if (set.regression()) {  // users' own data, float targets
    const int64_t t = set.target_dim;
    at::Tensor y = at::empty({b, t}, at::kFloat);
    float* xp = x.data_ptr<float>();
    float* yp = y.data_ptr<float>();
    for (int64_t i = 0; i < b; ++i) {
      std::copy(set.features.begin() + indices[i] * per,
                set.features.begin() + (indices[i] + 1) * per, xp + i * per);
      std::copy(set.targets.begin() + indices[i] * t,
                set.targets.begin() + (indices[i] + 1) * t, yp + i * t);
    }
    return {x, y};
  }
  at::Tensor y = at::empty({b}, at::kLong);
  float* xp = x.data_ptr<float>();
  int64_t* yp = y.data_ptr<int64_t>();
  if (set.has_features()) {  // users' own data: as it is
    for (int64_t i = 0; i < b; ++i) {
      std::copy(set.features.begin() + indices[i] * per,
                set.features.begin() + (indices[i] + 1) * per, xp + i * per);
      yp[i] = set.labels[indices[i]];
    }
    return {x, y};
  }
  const float scale = 1.0f / (255.0f * info.stddev);
  const float shift = info.mean / info.stddev;
  for (int64_t i = 0; i < b; ++i) {
    const uint8_t* src = set.pixels.data() + indices[i] * per;
    float* dst = xp + i * per;
    for (int64_t j = 0; j < per; ++j) dst[j] = src[j] * scale - shift;
    yp[i] = set.labels[indices[i]];
  }
  return {x, y};
}

Batch MakeFullBatch(const ImageSet& set, const DatasetInfo& info) {
  std::vector<int64_t> all(static_cast<size_t>(set.size));
  for (int64_t i = 0; i < set.size; ++i) all[i] = i;
  return MakeBatch(set, info, all);
}

absl::StatusOr<EvalResult> Evaluate(const ModelSpec& spec,
                                    const std::vector<at::Tensor>& params,
                                    const Batch& data, int64_t chunk) {
  try {
    c10::InferenceMode guard;
    EvalResult r;
    const int64_t n = data.x.size(0);
    int64_t correct = 0;
    double loss_sum = 0;
    const at::Device device =
        params.empty() ? at::Device(at::kCPU) : params[0].device();
    if (at::isFloatingType(data.y.scalar_type())) {
      // Regression: SSE and SST (about the targets' mean) in double.
      const at::Tensor yd = data.y.to(at::kDouble);
      const double sst =
          n ? (yd - yd.mean(0, true)).pow(2).sum().item<double>() : 0;
      double sse = 0;
      for (int64_t s = 0; s < n; s += chunk) {
        const int64_t e = std::min(n, s + chunk);
        at::Tensor x = data.x.slice(0, s, e).to(device);
        at::Tensor out = Forward(spec, params, x).to(at::kDouble).cpu();
        sse += (out - yd.slice(0, s, e)).pow(2).sum().item<double>();
      }
      const double entries = static_cast<double>(n * data.y.size(1));
      r.regression = true;
      r.count = n;
      r.loss = n ? sse / entries : 0;
      r.rmse = std::sqrt(r.loss);
      r.r2 = sst > 0 ? 1.0 - sse / sst : 0;
      if (!std::isfinite(r.r2)) r.r2 = -std::numeric_limits<double>::infinity();
      r.accuracy = r.r2;
      return r;
    }
    for (int64_t s = 0; s < n; s += chunk) {
      const int64_t e = std::min(n, s + chunk);
      at::Tensor x = data.x.slice(0, s, e).to(device);
      at::Tensor y = data.y.slice(0, s, e).to(device);
      at::Tensor logits = Forward(spec, params, x);
      correct += logits.argmax(1).eq(y).sum().item<int64_t>();
      loss_sum += at::cross_entropy_loss(logits, y, {}, at::Reduction::Sum)
                      .item<double>();
    }
    r.count = n;
    r.accuracy = n ? static_cast<double>(correct) / n : 0;
    r.loss = n ? loss_sum / n : 0;
    return r;
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("evaluation failed: ", e.what_without_backtrace()));
  }
}

void SetTorchThreads(int n) {
  if (n <= 0) return;
  at::set_num_threads(n);
  // OpenBLAS, which Debian's libtorch multiplies through, keeps a pool of
  // its own (one thread per core) that at::set_num_threads does not reach.
  // Ten daemons on two cores each woke two BLAS threads per product and
  // their spinning took a third of the machine: the flagship ran 0.66
  // rounds/s, 0.95 with OPENBLAS_NUM_THREADS=1 (docs/results.md). Looked up
  // at run time, so another BLAS behind libblas.so.3 is left alone.
  using SetBlasThreads = void (*)(int);
  if (auto set_blas = reinterpret_cast<SetBlasThreads>(
          dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
    set_blas(n);
  }
  try {
    at::set_num_interop_threads(n);
  } catch (const c10::Error&) {
    // Already set (inter-op threads can be set only once per process).
  }
}

}  // namespace fedfwd
