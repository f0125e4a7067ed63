#include "common/jvp_rules.h"

#include <ATen/ATen.h>
#include <ATen/ExpandUtils.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/torch_model.h"

namespace fedfwd {
namespace {

// The K keys' tangents of one parameter tensor, stacked over keys: either
// factors U [K, rows] and A [K, cols] (every key rank-one there), or dense
// D [K, shape...]; a key that leaves the tensor out has zeros. Undefined
// when no key perturbs it.
struct StackedTangent {
  at::Tensor u, a;  // rank-one
  at::Tensor dense;
  bool defined() const { return u.defined() || dense.defined(); }
};

StackedTangent Stack(const std::vector<TangentKey>& keys,
                     const std::vector<float>& scales,
                     const TangentLayout& layout, const ParamSpec& param,
                     uint32_t p, const at::TensorOptions& target) {
  StackedTangent st;
  const int64_t k = static_cast<int64_t>(keys.size());
  const int64_t n = layout.sizes[p];
  bool any = false, all_factored = true;
  for (const TangentKey& key : keys) {
    if (!Perturbs(key, p)) continue;
    any = true;
    if (layout.FactorRows(key, p) == 0) all_factored = false;
  }
  if (!any) return st;
  const auto cpu = at::TensorOptions().dtype(at::kFloat);
  if (all_factored) {
    const int64_t rows = param.shape[0];
    const int64_t cols = n / rows;
    at::Tensor u = at::zeros({k, rows}, cpu), a = at::zeros({k, cols}, cpu);
    for (int64_t i = 0; i < k; ++i) {
      if (!Perturbs(keys[i], p)) continue;
      float* up = u.data_ptr<float>() + i * rows;
      RankOneFactors(keys[i], p, rows, cols, up,
                     a.data_ptr<float>() + i * cols);
      for (int64_t r = 0; r < rows; ++r) up[r] *= scales[i];
    }
    st.u = u.to(target);
    st.a = a.to(target);
    return st;
  }
  std::vector<int64_t> shape = {k};
  shape.insert(shape.end(), param.shape.begin(), param.shape.end());
  at::Tensor d = at::empty(shape, cpu);
  for (int64_t i = 0; i < k; ++i) {
    float* dp = d.data_ptr<float>() + i * n;
    GenerateTangentSlice(keys[i], layout, p, 0, dp, n);
    for (int64_t j = 0; j < n; ++j) dp[j] *= scales[i];
  }
  st.dense = d.to(target);
  return st;
}

// True when broadcasting `t` against `into` leaves into's shape, so that an
// in-place op on `into` can take t.
bool FitsInPlace(const at::Tensor& into, at::IntArrayRef t) {
  return at::IntArrayRef(at::infer_size(into.sizes(), t)) == into.sizes();
}

// Adds t to *sum (which may be undefined: nothing yet), in place where the
// shapes allow. Every sum here is a tensor this pass made (or a view of
// one), so writing into it is safe, and it saves a whole activation-sized
// temporary per term at the memory peak.
void Accumulate(at::Tensor* sum, const at::Tensor& t) {
  if (!sum->defined()) {
    *sum = t;
  } else if (FitsInPlace(*sum, t.sizes())) {
    sum->add_(t);
  } else {
    *sum = *sum + t;
  }
}

// Accumulate(sum, x * y) without the product's temporary where possible.
void AccumulateProduct(at::Tensor* sum, const at::Tensor& x,
                       const at::Tensor& y) {
  if (sum->defined() &&
      FitsInPlace(*sum, at::infer_size(x.sizes(), y.sizes()))) {
    sum->addcmul_(x, y);
  } else {
    Accumulate(sum, x * y);
  }
}

// conv2d(h, filters) with stride 1 and padding `pad` for a few filters
// [K, C, kh, kw]. oneDNN spends nearly as long on a one-filter convolution
// as on a much wider one (it is bound by reading the input), so for
// K * kh * kw <= 27 this takes the K*kh*kw channel-weighted sums of the
// input (one per filter tap) in one pass and adds their shifted windows:
// the same products, the input read once. In a one-off probe on `cnn`'s
// 64-channel layers it was several times faster for one filter and about
// even at four. Rounding differs from conv2d's order of additions.
at::Tensor FewFilterConv(const at::Tensor& h, const at::Tensor& filters,
                         int64_t pad) {
  const int64_t k = filters.size(0), c = filters.size(1);
  const int64_t kh = filters.size(2), kw = filters.size(3);
  if (k * kh * kw > 27 || (kh == 1 && kw == 1)) {
    return at::conv2d(h, filters, {}, {1, 1}, {pad, pad});
  }
  const int64_t b = h.size(0), height = h.size(2), width = h.size(3);
  const int64_t ho = height + 2 * pad - kh + 1, wo = width + 2 * pad - kw + 1;
  const at::Tensor taps =
      filters.permute({0, 2, 3, 1}).reshape({k * kh * kw, c});
  at::Tensor r;
  if (h.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    // h is [B, H, W, C] in memory: the taps are one matrix product that
    // reads it in place (oneDNN's 1x1 convolution reordered all of h).
    r = at::matmul(h.permute({0, 2, 3, 1}).reshape({-1, c}), taps.t())
            .reshape({b, height, width, k * kh * kw})
            .permute({0, 3, 1, 2});
  } else {
    r = at::conv2d(h, taps.reshape({k * kh * kw, c, 1, 1}));
  }
  r = r.reshape({b, k, kh, kw, height, width});
  if (pad > 0) r = at::constant_pad_nd(r, {pad, pad, pad, pad});
  at::Tensor out = at::zeros({b, k, ho, wo}, h.options());
  for (int64_t dy = 0; dy < kh; ++dy) {
    for (int64_t dx = 0; dx < kw; ++dx) {
      out.add_(
          r.select(2, dy).select(2, dx).narrow(2, dy, ho).narrow(3, dx, wo));
    }
  }
  return out;
}

// [K, B, C, H, W] stored as [K, B, H, W, C], so that merging K and B gives
// a channels-last [K*B, C, H, W] view (no copy); a copy only when t is laid
// out otherwise.
at::Tensor KbChannelsLast(const at::Tensor& t) {
  const int64_t c = t.size(2), h = t.size(3), w = t.size(4);
  if (t.stride(2) == 1 && t.stride(4) == c && t.stride(3) == w * c &&
      t.stride(1) == h * w * c && t.stride(0) == t.size(1) * h * w * c) {
    return t;
  }
  return t.permute({0, 1, 3, 4, 2}).contiguous().permute({0, 1, 4, 2, 3});
}

// Keys that differ only in the index, all shared-u.
bool OneSharedGroup(const std::vector<TangentKey>& keys) {
  if (keys.empty()) return false;
  const TangentKey& f = keys[0];
  for (const TangentKey& k : keys) {
    if (!k.shared_u || !k.rank_one || k.run_seed != f.run_seed ||
        k.round != f.round || k.client != f.client || k.type != f.type ||
        k.param_mask != f.param_mask || k.normalized != f.normalized ||
        k.u_group_size != f.u_group_size) {
      return false;
    }
  }
  return true;
}

// The shared-u route (see the header). Memory stays small whatever K and
// the batch (the client's peak training memory is a target): the batch goes
// through in passes of kPassRows samples, the u blocks are pushed forward one
// at a time, and the keys' factors a_k are made and used kChunkKeys at a
// time, so neither [K, in] nor [blocks, B, out] nor the whole batch's
// activations are ever held. The values are sums over the batch, so the
// passes change only the order of the float additions.
absl::StatusOr<JvpResult> SharedRankOneJvps(
    const ModelSpec& spec, const std::vector<at::Tensor>& params,
    const std::vector<TangentKey>& keys, const at::Tensor& x,
    const at::Tensor& y) {
  constexpr int64_t kPassRows = 64;
  constexpr int64_t kChunkKeys = 64;
  const TangentLayout layout = spec.Layout();
  const int64_t k = static_cast<int64_t>(keys.size());
  const int64_t b = x.size(0);
  const auto cpu = at::TensorOptions().dtype(at::kFloat);
  const at::TensorOptions target =
      at::TensorOptions().dtype(x.scalar_type()).device(x.device());
  std::vector<float> scales;
  for (const TangentKey& key : keys) {
    scales.push_back(TangentScale(key, layout));
  }
  const at::Tensor scale = at::from_blob(scales.data(), {k}, cpu).to(target);
  // The u blocks: block_of[i] is key i's block; first[j] a key of block j
  // (whose factors give u_j).
  std::vector<int64_t> block_of(static_cast<size_t>(k));
  std::vector<size_t> first;
  {
    std::vector<int64_t> seen;
    for (size_t i = 0; i < keys.size(); ++i) {
      const int64_t g = SharedUGroup(keys[i]);
      auto it = std::find(seen.begin(), seen.end(), g);
      if (it == seen.end()) {
        seen.push_back(g);
        first.push_back(i);
        it = seen.end() - 1;
      }
      block_of[i] = it - seen.begin();
    }
  }
  const int64_t nb = static_cast<int64_t>(first.size());
  const at::Tensor block_index =
      at::from_blob(block_of.data(), {k}, at::TensorOptions().dtype(at::kLong))
          .to(x.device());
  const size_t nl = spec.layers.size();
  at::Tensor d = at::zeros({k}, target.dtype(at::kDouble));
  double loss_sum = 0;
  std::vector<float> scratch;
  for (int64_t b0 = 0; b0 < b; b0 += kPassRows) {
    const int64_t bn = std::min(kPassRows, b - b0);
    // Primal pass: each dense layer's input, each ReLU's mask.
    std::vector<at::Tensor> input(nl), mask(nl);
    at::Tensor h = x.narrow(0, b0, bn).reshape({bn, -1});
    const at::Tensor yb = y.narrow(0, b0, bn);
    bool h_is_input = true;  // h is (a view of) x: never write into it
    size_t p = 0;
    for (size_t l = 0; l < nl; ++l) {
      const LayerSpec& layer = spec.layers[l];
      if (layer.kind == LayerSpec::Kind::kDense) {
        input[l] = h;
        h = at::linear(h, params[p], params[p + 1]);
        h_is_input = false;
        p += 2;
      } else if (layer.kind == LayerSpec::Kind::kRelu) {
        mask[l] = h > 0;
        h = h_is_input ? at::relu(h) : at::relu_(h);
      }
    }
    loss_sum += at::isFloatingType(yb.scalar_type())
                    ? at::mse_loss(h, yb, at::Reduction::Sum).item<double>() /
                          static_cast<double>(h.size(1))
                    : at::cross_entropy_loss(h, yb, {}, at::Reduction::Sum)
                          .item<double>();
    // The loss's forward rule: dL = sum_b e_b . dz_b (the mean over the
    // whole batch; cross-entropy or squared error, TaskLossGrad).
    const at::Tensor e = TaskLossGrad(h, yb, b);
    h.reset();
    p = 0;
    for (size_t l = 0; l < nl; ++l) {
      if (spec.layers[l].kind != LayerSpec::Kind::kDense) continue;
      const uint32_t pw = static_cast<uint32_t>(p), pb = pw + 1;
      p += 2;
      const int64_t rows = params[pw].size(0), cols = params[pw].size(1);
      bool any = false;
      for (const TangentKey& key : keys) {
        any |= Perturbs(key, pw) || Perturbs(key, pb);
      }
      if (!any) continue;
      scratch.resize(static_cast<size_t>(std::max(rows, cols)));
      // c [nb, bn]: e_b . (J_b u_j), each u_j pushed forward through the
      // rest of the network.
      at::Tensor c = at::empty({nb, bn}, e.options());
      at::Tensor u = at::empty({rows}, cpu);
      for (int64_t j = 0; j < nb; ++j) {
        RankOneFactors(keys[first[static_cast<size_t>(j)]], pw, rows, cols,
                       u.data_ptr<float>(), scratch.data());
        at::Tensor z = u.to(target).unsqueeze(0).expand({bn, rows});
        bool owned = false;  // z has storage of its own (not the expand)
        size_t q = p;
        for (size_t m = l + 1; m < nl; ++m) {
          const LayerSpec& layer = spec.layers[m];
          if (layer.kind == LayerSpec::Kind::kRelu) {
            if (owned) {
              z.mul_(mask[m]);
            } else {
              z = z * mask[m];
              owned = true;
            }
          } else if (layer.kind == LayerSpec::Kind::kDense) {
            z = at::matmul(z, params[q].t());
            owned = true;
            q += 2;
          }
        }
        c[j].copy_((e * z).sum(1));
      }
      // s [bn, chunk] = h a_k + beta_k, times each key's normalization;
      // d_i += sum_b c[block(i), b] s[b, i].
      for (int64_t k0 = 0; k0 < k; k0 += kChunkKeys) {
        const int64_t n = std::min(kChunkKeys, k - k0);
        at::Tensor a = at::zeros({n, cols}, cpu);
        at::Tensor beta = at::zeros({n}, cpu);
        for (int64_t i = 0; i < n; ++i) {
          const TangentKey& key = keys[static_cast<size_t>(k0 + i)];
          if (Perturbs(key, pw)) {
            SharedRankOneA(key, pw, cols, a.data_ptr<float>() + i * cols);
          }
          if (Perturbs(key, pb)) {
            beta.data_ptr<float>()[i] = SharedBiasBeta(key, pb);
          }
        }
        const at::Tensor s =
            (at::matmul(input[l], a.to(target).t()) + beta.to(target)) *
            scale.narrow(0, k0, n);
        const at::Tensor cb = c.index_select(0, block_index.narrow(0, k0, n));
        d.narrow(0, k0, n) += (cb * s.t()).sum(1).to(at::kDouble);
      }
    }
  }
  JvpResult result;
  result.loss = loss_sum / static_cast<double>(b);
  const at::Tensor dc = d.cpu();
  result.jvps.assign(dc.data_ptr<double>(), dc.data_ptr<double>() + k);
  return result;
}

}  // namespace

bool SharedRankOneJvpApplies(const ModelSpec& spec,
                             const std::vector<TangentKey>& keys) {
  if (!OneSharedGroup(keys)) return false;
  const TangentLayout layout = spec.Layout();
  size_t p = 0;
  for (const LayerSpec& layer : spec.layers) {
    switch (layer.kind) {
      case LayerSpec::Kind::kDense:
        // The weight must be factored and its bias the shared u * beta.
        if (layout.FactorRows(keys[0], p) == 0 ||
            layout.SharedBiasOf(keys[0], p + 1) != static_cast<int64_t>(p)) {
          return false;
        }
        p += 2;
        break;
      case LayerSpec::Kind::kRelu:
      case LayerSpec::Kind::kFlatten:
        break;
      default:
        return false;
    }
  }
  return true;
}

bool SupportsJvpRules(const ModelSpec& spec) {
  if (spec.is_scripted()) return false;  // libtorch's forward AD runs it
  for (const LayerSpec& layer : spec.layers) {
    if (layer.kind == LayerSpec::Kind::kBatchNorm) return false;
  }
  return true;
}

absl::StatusOr<JvpResult> ComputeJvpRules(const ModelSpec& spec,
                                          const std::vector<at::Tensor>& params,
                                          const std::vector<TangentKey>& keys,
                                          const at::Tensor& x,
                                          const at::Tensor& y) {
  if (keys.empty()) {
    return absl::InvalidArgumentError(
        "ComputeJvpRules needs at least one tangent");
  }
  if (!SupportsJvpRules(spec)) {
    return absl::UnimplementedError(absl::StrCat(
        "model ", spec.name,
        spec.is_scripted() ? " is a TorchScript module, which has no JVP rules"
                           : " has batch norm, which has no JVP rule"));
  }
  if (params.size() != spec.params.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model ", spec.name, " has ", spec.params.size(),
                     " parameter tensors, got ", params.size()));
  }
  // Keys of several parameter masks (tangent.layer_counts): one pass per
  // mask, so keys that perturb only late layers carry no tangent through
  // the layers before them (and each group may take the shared-u route).
  std::vector<uint64_t> masks;
  for (const TangentKey& key : keys) {
    if (std::find(masks.begin(), masks.end(), key.param_mask) == masks.end()) {
      masks.push_back(key.param_mask);
    }
  }
  if (masks.size() > 1) {
    JvpResult out;
    out.jvps.assign(keys.size(), 0.0);
    for (size_t m = 0; m < masks.size(); ++m) {
      std::vector<TangentKey> group;
      std::vector<size_t> at;
      for (size_t i = 0; i < keys.size(); ++i) {
        if (keys[i].param_mask != masks[m]) continue;
        group.push_back(keys[i]);
        at.push_back(i);
      }
      ASSIGN_OR_RETURN(JvpResult r, ComputeJvpRules(spec, params, group, x, y));
      for (size_t i = 0; i < at.size(); ++i) out.jvps[at[i]] = r.jvps[i];
      if (m == 0) out.loss = r.loss;
    }
    return out;
  }
  try {
    at::NoGradGuard no_grad;
    const TangentLayout layout = spec.Layout();
    const int64_t k = static_cast<int64_t>(keys.size());
    std::vector<float> scales;
    for (const TangentKey& key : keys) {
      scales.push_back(TangentScale(key, layout));
    }
    if (SharedRankOneJvpApplies(spec, keys)) {
      return SharedRankOneJvps(spec, params, keys, x, y);
    }
    // Tangents in the parameters' dtype, on their device.
    const at::TensorOptions device =
        at::TensorOptions().dtype(x.scalar_type()).device(x.device());
    const int64_t b = x.size(0);
    // Convolutions run channels-last on the CPU: oneDNN then reads and
    // writes the tensors as they are, where with NCHW it keeps a reordered
    // copy of each convolution's output beside it (see the memory line of
    // bench/run.sh). Only the memory layout changes, not the values.
    bool any_conv = false;
    for (const LayerSpec& layer : spec.layers) {
      any_conv |= layer.kind == LayerSpec::Kind::kConv;
    }
    const bool nhwc = any_conv && x.dim() == 4 && x.device().is_cpu();
    const auto cl = at::MemoryFormat::ChannelsLast;
    // Tangents [K, B, C, H, W] of a channels-last h, laid out to match.
    auto kb_layout = [&](at::Tensor t) {
      return nhwc && t.defined() && t.dim() == 5 && t.size(1) == b
                 ? KbChannelsLast(t)
                 : t;
    };
    at::Tensor h = nhwc ? x.contiguous(cl) : x;  // primal [B, ...]
    bool h_is_input = true;  // h is x or a view of it: never write into it
    at::Tensor ht;           // tangents [K, B, ...]; undefined = zero
    size_t p = 0;
    auto merge_kb = [k, b](const at::Tensor& t) {  // [K, B, ...] -> [K*B, ...]
      std::vector<int64_t> s = {k * b};
      for (int64_t d = 2; d < t.dim(); ++d) s.push_back(t.size(d));
      return t.reshape(s);
    };
    auto split_kb = [k, b](const at::Tensor& t) {  // [K*B, ...] -> [K, B, ...]
      std::vector<int64_t> s = {k, b};
      for (int64_t d = 1; d < t.dim(); ++d) s.push_back(t.size(d));
      return t.reshape(s);
    };
    auto stack = [&](size_t q) {  // the keys' tangents of parameter q
      return Stack(keys, scales, layout, spec.params[q],
                   static_cast<uint32_t>(q), device);
    };
    for (const LayerSpec& layer : spec.layers) {
      switch (layer.kind) {
        case LayerSpec::Kind::kDense: {
          const at::Tensor& w = params[p];
          const at::Tensor& bias = params[p + 1];
          const StackedTangent wt = stack(p);
          const StackedTangent bt = stack(p + 1);
          at::Tensor out_t;
          if (ht.defined()) Accumulate(&out_t, at::matmul(ht, w.t()));
          if (wt.u.defined()) {
            // V_k h = u_k (a_k . h): [B, K] then scaled rows of u.
            const at::Tensor c = at::matmul(h, wt.a.t());
            AccumulateProduct(&out_t, c.t().unsqueeze(2), wt.u.unsqueeze(1));
          } else if (wt.dense.defined()) {
            Accumulate(&out_t,
                       at::matmul(h.unsqueeze(0), wt.dense.transpose(1, 2)));
          }
          if (bt.dense.defined()) Accumulate(&out_t, bt.dense.unsqueeze(1));
          ht = std::move(out_t);  // the old tangents go before h's successor
          h = at::linear(h, w, bias);
          h_is_input = false;
          p += 2;
          break;
        }
        case LayerSpec::Kind::kConv: {
          const at::Tensor& w = params[p];
          const at::Tensor& bias = params[p + 1];
          const StackedTangent wt = stack(p);
          const StackedTangent bt = stack(p + 1);
          auto conv_weight = [&](const at::Tensor& f) {
            return nhwc ? f.contiguous(cl) : f;
          };
          const at::Tensor wc = conv_weight(w);
          const int64_t o = w.size(0);
          const std::vector<int64_t> stride = {1, 1};
          const std::vector<int64_t> pad = {layer.pad, layer.pad};
          at::Tensor out_t;
          if (ht.defined()) {
            Accumulate(&out_t,
                       split_kb(at::conv2d(merge_kb(ht), wc, {}, stride, pad)));
          }
          if (wt.u.defined()) {
            // One filter a_k per key, its output scaled by u_k per channel.
            const at::Tensor filters =
                wt.a.reshape({k, w.size(1), w.size(2), w.size(3)});
            const at::Tensor c = FewFilterConv(h, filters, layer.pad);
            AccumulateProduct(&out_t, c.transpose(0, 1).unsqueeze(2),
                              wt.u.reshape({k, 1, o, 1, 1}));
          } else if (wt.dense.defined()) {
            const at::Tensor c = at::conv2d(
                h,
                conv_weight(
                    wt.dense.reshape({k * o, w.size(1), w.size(2), w.size(3)})),
                {}, stride, pad);
            Accumulate(
                &out_t,
                c.reshape({b, k, o, c.size(2), c.size(3)}).transpose(0, 1));
          }
          if (bt.dense.defined()) {
            Accumulate(&out_t, bt.dense.reshape({k, 1, o, 1, 1}));
          }
          ht.reset();  // the old tangents go before h's successor
          ht = kb_layout(std::move(out_t));
          h = at::conv2d(h, wc, bias, stride, pad);
          // A one-channel input (the first layer) can give an NCHW output.
          if (nhwc) h = h.contiguous(cl);
          h_is_input = false;
          p += 2;
          break;
        }
        case LayerSpec::Kind::kRelu: {
          if (ht.defined()) {
            const at::Tensor live = (h > 0).unsqueeze(0);
            if (FitsInPlace(ht, live.sizes())) {
              ht.mul_(live);
            } else {
              ht = ht * live;
            }
          }
          // In place unless h is still the caller's input.
          h = h_is_input ? at::relu(h) : at::relu_(h);
          h_is_input = false;
          break;
        }
        case LayerSpec::Kind::kMaxPool: {
          auto pooled =
              at::max_pool2d_with_indices(h, {layer.size, layer.size});
          const at::Tensor& idx = std::get<1>(pooled);  // into H*W per (B, C)
          if (ht.defined()) {
            const at::Tensor flat = ht.reshape({k, b, h.size(1), -1});
            const at::Tensor gi =
                idx.reshape({1, b, h.size(1), -1})
                    .expand({k, b, h.size(1), idx.size(2) * idx.size(3)});
            ht = kb_layout(flat.gather(3, gi).reshape(
                {k, b, h.size(1), idx.size(2), idx.size(3)}));
          }
          h = std::get<0>(pooled);
          h_is_input = false;
          break;
        }
        case LayerSpec::Kind::kAvgPool: {
          if (ht.defined()) {
            ht = split_kb(
                at::avg_pool2d(merge_kb(ht), {layer.size, layer.size}));
          }
          h = at::avg_pool2d(h, {layer.size, layer.size});
          h_is_input = false;
          break;
        }
        case LayerSpec::Kind::kFlatten: {
          if (ht.defined()) ht = ht.reshape({k, b, -1});
          h = h.reshape({b, -1});
          break;
        }
        case LayerSpec::Kind::kBatchNorm:
          return absl::UnimplementedError("batch norm has no JVP rule");
      }
    }
    JvpResult result;
    result.loss = TaskLoss(h, y).item<double>();
    if (!ht.defined()) {
      result.jvps.assign(keys.size(), 0.0);
      return result;
    }
    at::Tensor d;
    if (at::isFloatingType(y.scalar_type())) {
      // Squared error: d/dt L = sum_b e_b . zt_b, e = dL/dz (TaskLossGrad).
      const at::Tensor e = TaskLossGrad(h, y, b);
      d = (ht * e.unsqueeze(0)).sum(2).sum(1).to(at::kDouble).cpu();
    } else {
      // d/dt mean_b (logsumexp(z_b) - z_b[y_b]) = mean_b (softmax(z_b) .
      // zt_b - zt_b[y_b]).
      const at::Tensor prob = at::softmax(h, 1);
      const at::Tensor picked =
          ht.gather(2, y.reshape({1, b, 1}).expand({k, b, 1})).squeeze(2);
      d = ((ht * prob.unsqueeze(0)).sum(2) - picked)
              .mean(1)
              .to(at::kDouble)
              .cpu();
    }
    result.jvps.assign(d.data_ptr<double>(), d.data_ptr<double>() + k);
    return result;
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("hand-written JVP failed: ", e.what_without_backtrace()));
  }
}

absl::StatusOr<std::vector<double>> RankOneDots(
    const ModelSpec& spec, const std::vector<at::Tensor>& grads,
    const std::vector<TangentKey>& keys) {
  if (grads.size() != spec.params.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model ", spec.name, " has ", spec.params.size(),
                     " parameter tensors, got ", grads.size(), " gradients"));
  }
  for (const TangentKey& key : keys) {
    if (!key.rank_one) {
      return absl::InvalidArgumentError("RankOneDots takes rank-one keys only");
    }
  }
  if (keys.empty()) return std::vector<double>{};
  try {
    at::NoGradGuard no_grad;
    const TangentLayout layout = spec.Layout();
    const int64_t k = static_cast<int64_t>(keys.size());
    std::vector<float> scales;
    for (const TangentKey& key : keys) {
      scales.push_back(TangentScale(key, layout));
    }
    const at::TensorOptions target = at::TensorOptions()
                                         .dtype(grads[0].scalar_type())
                                         .device(grads[0].device());
    at::Tensor d = at::zeros({k}, target.dtype(at::kDouble));
    for (size_t p = 0; p < grads.size(); ++p) {
      const StackedTangent st = Stack(keys, scales, layout, spec.params[p],
                                      static_cast<uint32_t>(p), target);
      if (!st.defined()) continue;
      const at::Tensor g = grads[p].reshape({grads[p].size(0), -1});
      if (st.u.defined()) {
        // sum_i u_k[i] (G a_k)[i]: [rows, K] then weighted by U^T.
        const at::Tensor ga = at::matmul(g, st.a.t());
        d += (ga * st.u.t()).sum(0).to(at::kDouble);
      } else {
        d += at::matmul(st.dense.reshape({k, -1}), grads[p].reshape({-1}))
                 .to(at::kDouble);
      }
    }
    const at::Tensor c = d.cpu();
    return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + k);
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("rank-one dots failed: ", e.what_without_backtrace()));
  }
}

}  // namespace fedfwd
