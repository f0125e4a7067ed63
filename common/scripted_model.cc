#include "common/scripted_model.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/python/update_graph_executor_opt.h>
#include <torch/csrc/jit/serialization/import.h>

#include <fstream>
#include <mutex>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/forward_ad.h"
#include "common/rng.h"
#include "common/security.h"

namespace fedfwd {

struct ScriptedModule {
  std::string name;  // for errors
  mutable std::mutex mu;
  mutable torch::jit::Module module;
  // Where each parameter lives: the submodule that owns it and its
  // attribute name there, in named_parameters order.
  mutable std::vector<std::pair<torch::jit::Module, std::string>> slots;
  mutable c10::optional<at::Device> device;  // where buffers live now
  // The module's own parameters, put back in the slots after every call so
  // that the module never holds a caller's tensors (views of buffers that
  // may be freed, dual tensors with their tangents) between calls.
  mutable std::vector<at::Tensor> own;
};

namespace {

std::string ShapeText(at::IntArrayRef sizes) {
  return absl::StrCat("[", absl::StrJoin(sizes, ", "), "]");
}

// The gist of a libtorch message: the interpreter's "RuntimeError: ..."
// line when there is one (its first lines are a TorchScript traceback),
// else the first line (without the C++ backtrace).
std::string FirstLine(const std::string& what) {
  const std::string kError = "RuntimeError: ";
  const size_t at = what.rfind(kError);
  if (at != std::string::npos) {
    const size_t start = at + kError.size();
    return what.substr(start, what.find('\n', start) - start);
  }
  std::string s = what.substr(0, what.find('\n'));
  return s.empty() ? what : s;
}

void DisableGraphOptimization() {
  static std::once_flag once;
  std::call_once(once, [] { torch::jit::setGraphExecutorOptimize(false); });
}

// "Trying to use forward AD with <op> that does not support it ..."
std::string OpWithoutForwardAd(const std::string& message) {
  static const std::string kPrefix = "Trying to use forward AD with ";
  const size_t at = message.find(kPrefix);
  if (at == std::string::npos) return "";
  const size_t start = at + kPrefix.size();
  const size_t end = message.find(' ', start);
  return message.substr(
      start, end == std::string::npos ? std::string::npos : end - start);
}

// The submodule that owns the attribute at dotted path `name` ("conv1.weight"
// -> conv1), and the attribute's name there.
torch::jit::Module OwnerOf(const torch::jit::Module& root,
                           const std::string& name, std::string* leaf) {
  std::vector<std::string> path = absl::StrSplit(name, '.');
  torch::jit::Module owner = root;
  for (size_t i = 0; i + 1 < path.size(); ++i) {
    owner = owner.attr(path[i]).toModule();
  }
  *leaf = path.back();
  return owner;
}

std::string BaseName(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

at::Tensor ScriptedForward(const ScriptedModule& m,
                           const std::vector<at::Tensor>& params,
                           const at::Tensor& x) {
  TORCH_CHECK(params.size() == m.slots.size(), "TorchScript model ", m.name,
              " has ", m.slots.size(), " parameter tensors, got ",
              params.size());
  std::lock_guard<std::mutex> lock(m.mu);
  if (!m.device.has_value() || *m.device != x.device()) {
    m.module.to(x.device());  // buffers and constants follow the data
    m.device = x.device();
  }
  struct Restore {
    const ScriptedModule& m;
    ~Restore() {
      for (size_t i = 0; i < m.slots.size(); ++i) {
        m.slots[i].first.setattr(m.slots[i].second, m.own[i]);
      }
    }
  } restore{m};
  for (size_t i = 0; i < params.size(); ++i) {
    m.slots[i].first.setattr(m.slots[i].second, params[i]);
  }
  c10::IValue out;
  try {
    out = m.module.forward({x});
  } catch (const c10::Error&) {
    throw;
  } catch (const std::exception& e) {
    // The interpreter's own errors (torch::jit::JITException) become
    // c10::Error, which Forward's callers catch.
    TORCH_CHECK(false, "TorchScript model ", m.name, ": ", FirstLine(e.what()));
  }
  TORCH_CHECK(out.isTensor(), "TorchScript model ", m.name,
              ": forward must return one tensor of logits, it returned ",
              out.tagKind());
  return out.toTensor();
}

absl::StatusOr<ModelSpec> LoadScriptedModel(const std::string& bytes,
                                            const std::string& name,
                                            const ScriptOptions& options) {
  if (options.input_shape.size() != 3) {
    return absl::InvalidArgumentError("model input shape must be C,H,W");
  }
  if (static_cast<int64_t>(bytes.size()) > kMaxScriptBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("TorchScript model ", name, " is ", bytes.size(),
                     " bytes; at most ", kMaxScriptBytes, " are supported"));
  }
  DisableGraphOptimization();
  auto m = std::make_shared<ScriptedModule>();
  m->name = name;
  try {
    std::istringstream in(bytes);
    m->module = torch::jit::load(in, at::Device(at::kCPU));
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        name,
        " is not a TorchScript module (save one with torch.jit.script(model)"
        ".save(path) or torch.jit.trace): ",
        FirstLine(e.what_without_backtrace())));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " is not a TorchScript module: ", e.what()));
  }
  const std::string prefix = absl::StrCat("TorchScript model ", name, ": ");
  if (!m->module.find_method("forward").has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "the module has no forward method"));
  }
  m->module.eval();

  ModelSpec spec;
  spec.name = absl::StrCat("torchscript:", BaseName(name));
  spec.input_shape = options.input_shape;
  spec.num_classes = options.num_classes;
  auto initial = std::make_shared<std::vector<float>>();
  std::vector<at::Tensor> own;
  for (const auto& p : m->module.named_parameters(/*recurse=*/true)) {
    const at::Tensor& t = p.value;
    if (t.scalar_type() != at::kFloat) {
      return absl::InvalidArgumentError(
          absl::StrCat(prefix, "parameter '", p.name, "' is ",
                       c10::toString(t.scalar_type()),
                       "; fedfwd trains float32 parameters (call .float() "
                       "before exporting)"));
    }
    ParamSpec ps;
    ps.name = p.name;
    ps.shape.assign(t.sizes().begin(), t.sizes().end());
    ps.fan_in = 1;
    spec.params.push_back(ps);
    at::Tensor c = t.detach().contiguous().cpu();
    initial->insert(initial->end(), c.data_ptr<float>(),
                    c.data_ptr<float>() + c.numel());
    own.push_back(c);
    // The slot: the submodule that registered it and the attribute name.
    std::string leaf;
    torch::jit::Module owner = OwnerOf(m->module, p.name, &leaf);
    m->slots.emplace_back(owner, leaf);
    m->own.push_back(t);
  }
  if (spec.params.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "the module has no parameters to train"));
  }
  if (spec.params.size() > kMaxParamIndex) {
    return absl::InvalidArgumentError(absl::StrCat(
        prefix, "has ", spec.params.size(), " parameter tensors; at most ",
        kMaxParamIndex, " are supported"));
  }

  // One forward pass in training mode on a dummy batch: it must run on the
  // data's input shape, give [B, classes] logits and leave every buffer as
  // it was.
  const std::vector<int64_t> batch_shape = {2, options.input_shape[0],
                                            options.input_shape[1],
                                            options.input_shape[2]};
  try {
    std::vector<std::pair<std::string, at::Tensor>> buffers;
    for (const auto& b : m->module.named_buffers(/*recurse=*/true)) {
      buffers.emplace_back(b.name, b.value.clone());
    }
    at::NoGradGuard no_grad;
    at::Tensor x = at::randn(batch_shape, at::kFloat);
    m->module.train();
    at::Tensor out;
    try {
      out = ScriptedForward(*m, own, x);
    } catch (...) {
      m->module.eval();
      throw;
    }
    m->module.eval();
    for (const auto& [bname, before] : buffers) {
      std::string leaf;
      const c10::IValue value = OwnerOf(m->module, bname, &leaf).attr(leaf);
      const at::Tensor now = value.isTensor() ? value.toTensor() : at::Tensor();
      if (!now.defined() || now.sizes() != before.sizes() ||
          !at::equal(now, before)) {
        return absl::InvalidArgumentError(absl::StrCat(
            prefix, "buffer '", bname,
            "' changes in a training forward pass; fedfwd keeps a model's "
            "whole state in its parameters, so buffers must stay constant "
            "(export BatchNorm with track_running_stats=False)"));
      }
    }
    if (out.dim() != 2 || out.size(0) != batch_shape[0] ||
        out.size(1) != options.num_classes) {
      return absl::InvalidArgumentError(absl::StrCat(
          prefix, "output of shape ", ShapeText(out.sizes()), " for input ",
          ShapeText(batch_shape), " does not fit the data: expected [",
          batch_shape[0], ", ", options.num_classes, "] (logits of ",
          options.num_classes, " classes)"));
    }
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "forward on a batch of shape ",
                     ShapeText(batch_shape), " (the data set's input) failed: ",
                     FirstLine(e.what_without_backtrace())));
  }

  spec.scripted = m;
  spec.initial = std::move(initial);
  spec.script = std::make_shared<const std::string>(bytes);

  if (options.forward_ad) {
    std::vector<at::Tensor> tangent;
    for (const at::Tensor& p : own) tangent.push_back(at::randn_like(p));
    at::Tensor x = at::randn(batch_shape, at::kFloat);
    at::Tensor y = at::zeros({batch_shape[0]}, at::kLong);
    absl::StatusOr<JvpResult> r = ComputeJvp(spec, own, {tangent}, x, y);
    if (!r.ok()) {
      const std::string msg(r.status().message());
      const std::string op = OpWithoutForwardAd(msg);
      if (!op.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(
            prefix, "op '", op,
            "' has no forward-mode derivative in this libtorch, so the jvp "
            "estimator cannot run the module (estimators fd, projected, "
            "fedsgd and fedavg can; or replace the op)"));
      }
      return absl::InvalidArgumentError(absl::StrCat(
          prefix,
          "forward-mode AD through the module failed: ", FirstLine(msg)));
    }
  }
  return spec;
}

absl::StatusOr<ModelSpec> LoadScriptedModelFile(const std::string& path,
                                                const ScriptOptions& options) {
  {
    std::ifstream probe(path, std::ios::binary | std::ios::ate);
    if (!probe) {
      return absl::NotFoundError(
          absl::StrCat("TorchScript model ", path, " cannot be opened"));
    }
    if (static_cast<int64_t>(probe.tellg()) > kMaxScriptBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("TorchScript model ", path, " is ",
                       static_cast<int64_t>(probe.tellg()), " bytes; at most ",
                       kMaxScriptBytes, " are supported"));
    }
  }
  absl::StatusOr<std::string> bytes = ReadFileToString(path);
  if (!bytes.ok()) return bytes.status();
  return LoadScriptedModel(*bytes, path, options);
}

absl::StatusOr<ModelSpec> ResolveModelSpec(
    const std::string& name, const std::string& torchscript,
    const std::vector<int64_t>& input_shape, int64_t num_classes,
    bool forward_ad) {
  if (torchscript.empty()) return GetModelSpec(name, input_shape, num_classes);
  ScriptOptions o;
  o.input_shape = input_shape;
  o.num_classes = num_classes;
  o.forward_ad = forward_ad;
  return LoadScriptedModelFile(torchscript, o);
}

bool EstimatorNeedsForwardAd(const std::string& estimator) {
  return estimator == "jvp";
}

}  // namespace fedfwd
