// TorchScript models (common/scripted_model.h): modules exported by Debian's
// python3-torch (tests/torchscript/export_test_models.py, run once per test
// binary), loaded with libtorch, their JVPs by forward AD through the
// TorchScript interpreter against backprop, and the errors for modules
// fedfwd cannot train.
#include "common/scripted_model.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "common/config.h"
#include "common/forward_ad.h"
#include "common/jvp_rules.h"
#include "common/model.h"
#include "common/rng.h"
#include "common/torch_model.h"
#include "common/trainer.h"
#include "tests/testutil/synthetic_data.h"

namespace fedfwd {
namespace {

using ::testing::HasSubstr;

const std::vector<int64_t> kMnist = {1, 28, 28};

class ScriptedModel : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(testing::MakeTempDir("fedfwd-torchscript"));
    const std::string cmd =
        absl::StrCat("/usr/bin/python3 " FEDFWD_SOURCE_DIR
                     "/tests/torchscript/export_test_models.py ",
                     *dir_, " > ", *dir_, "/export.log 2>&1");
    export_status_ = std::system(cmd.c_str());
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }
  void SetUp() override {
    ASSERT_EQ(export_status_, 0)
        << "exporting the test modules failed (python3-torch missing? "
           "scripts/setup.sh --test-tools installs it):\n"
        << ReadLog();
  }
  static std::string ReadLog() {
    std::ifstream in(*dir_ + "/export.log");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  static std::string Path(const std::string& file) {
    return *dir_ + "/" + file;
  }
  static absl::StatusOr<ModelSpec> Load(const std::string& file,
                                        bool forward_ad = false,
                                        std::vector<int64_t> shape = kMnist) {
    ScriptOptions o;
    o.input_shape = shape;
    o.num_classes = 10;
    o.forward_ad = forward_ad;
    return LoadScriptedModelFile(Path(file), o);
  }

  static std::string* dir_;
  static int export_status_;
};
std::string* ScriptedModel::dir_ = nullptr;
int ScriptedModel::export_status_ = -1;

std::vector<at::Tensor> AsDouble(const ModelSpec& spec,
                                 std::vector<float>& flat) {
  std::vector<at::Tensor> out;
  for (auto& t : ParamViews(spec, flat.data()))
    out.push_back(t.to(at::kDouble));
  return out;
}

// grad f . v by backprop through the module.
double BackpropDot(const ModelSpec& spec, const std::vector<at::Tensor>& params,
                   const std::vector<at::Tensor>& tangent, const at::Tensor& x,
                   const at::Tensor& y) {
  std::vector<at::Tensor> leaves;
  for (const auto& p : params)
    leaves.push_back(p.detach().requires_grad_(true));
  at::Tensor loss =
      torch::nn::functional::cross_entropy(Forward(spec, leaves, x), y);
  loss.backward();
  double dot = 0;
  for (size_t i = 0; i < leaves.size(); ++i) {
    dot += (leaves[i].grad() * tangent[i]).sum().item<double>();
  }
  return dot;
}

TEST_F(ScriptedModel, ParametersInRegistrationOrderAndInitialValuesFromFile) {
  auto spec = Load("small_cnn.pt");
  ASSERT_TRUE(spec.ok()) << spec.status();
  std::vector<std::string> names;
  for (const auto& p : spec->params) names.push_back(p.name);
  EXPECT_THAT(names,
              ::testing::ElementsAre("conv.weight", "conv.bias", "bn.weight",
                                     "bn.bias", "fc.weight", "fc.bias"));
  EXPECT_EQ(spec->params[0].shape, (std::vector<int64_t>{4, 1, 3, 3}));
  EXPECT_EQ(spec->NumParams(), 4 * 9 + 4 + 4 + 4 + 4 * 14 * 14 * 10 + 10);
  EXPECT_TRUE(spec->layers.empty());
  EXPECT_FALSE(SupportsJvpRules(*spec));
  EXPECT_EQ(spec->name, "torchscript:small_cnn.pt");
  // The run seed does not change a scripted model's start: the file's
  // values are the initial model.
  const std::vector<float> a = InitialParams(*spec, 1);
  EXPECT_EQ(a, InitialParams(*spec, 99));
  ASSERT_EQ(static_cast<int64_t>(a.size()), spec->NumParams());
  EXPECT_NE(a[0], 0.0f);
  EXPECT_EQ(a[40], 1.0f);  // bn.weight starts at one
  ASSERT_NE(spec->script, nullptr);
  EXPECT_GT(spec->script->size(), 1000u);
}

// Forward-mode AD through the TorchScript interpreter equals grad f . v from
// backprop, on the 1st, 2nd and 10th call of one loaded module (a profiling
// executor that rewrites the graph after its first runs has lost the
// tangent on later calls), traced and scripted alike.
TEST_F(ScriptedModel, JvpEqualsBackpropOnFirstSecondAndTenthCall) {
  for (const std::string file : {"small_cnn.pt", "small_cnn_scripted.pt"}) {
    SCOPED_TRACE(file);
    auto jvp_spec = Load(file, /*forward_ad=*/true);
    ASSERT_TRUE(jvp_spec.ok()) << jvp_spec.status();
    auto ref_spec = Load(file);  // a second copy for the backprop reference
    ASSERT_TRUE(ref_spec.ok()) << ref_spec.status();
    std::vector<float> flat = InitialParams(*jvp_spec, 0);
    std::vector<float> vflat(flat.size());
    GenerateTangentFlat({3, 5, 1, 0, TangentDistribution::kNormal},
                        jvp_spec->ParamSizes(), vflat.data());
    const std::vector<at::Tensor> params = AsDouble(*jvp_spec, flat);
    const std::vector<at::Tensor> tangent = AsDouble(*jvp_spec, vflat);
    torch::manual_seed(0);
    for (int call = 1; call <= 10; ++call) {
      // A fresh batch each call, as training gives.
      at::Tensor x = torch::randn({8, 1, 28, 28}, torch::kDouble);
      at::Tensor y = torch::randint(0, 10, {8}, torch::kLong);
      auto jvp = ComputeJvp(*jvp_spec, params, {tangent}, x, y);
      ASSERT_TRUE(jvp.ok()) << "call " << call << ": " << jvp.status();
      const double dot = BackpropDot(*ref_spec, params, tangent, x, y);
      ASSERT_NE(dot, 0.0);
      EXPECT_LT(std::abs(jvp->jvps[0] - dot) / std::abs(dot), 1e-6)
          << "call " << call << ": jvp " << jvp->jvps[0] << " backprop " << dot;
    }
  }
}

// The exported copy of the built-in cnn is the same function: same
// parameter names and shapes, same logits for the same parameters, and the
// hand-written JVP rules of the built-in agree with forward AD through the
// module.
TEST_F(ScriptedModel, ExportedCnnMatchesTheBuiltIn) {
  auto scripted = Load("cnn.pt", /*forward_ad=*/true);
  ASSERT_TRUE(scripted.ok()) << scripted.status();
  auto builtin = GetModelSpec("cnn", kMnist);
  ASSERT_TRUE(builtin.ok()) << builtin.status();
  ASSERT_EQ(scripted->params.size(), builtin->params.size());
  for (size_t i = 0; i < builtin->params.size(); ++i) {
    EXPECT_EQ(scripted->params[i].name, builtin->params[i].name);
    EXPECT_EQ(scripted->params[i].shape, builtin->params[i].shape);
  }
  std::vector<float> flat = InitialParams(*builtin, 5);
  std::vector<float> vflat(flat.size());
  GenerateTangentFlat({5, 1, 1, 0, TangentDistribution::kNormal},
                      builtin->ParamSizes(), vflat.data());
  const std::vector<at::Tensor> params = AsDouble(*builtin, flat);
  const std::vector<at::Tensor> tangent = AsDouble(*builtin, vflat);
  torch::manual_seed(1);
  at::Tensor x = torch::randn({4, 1, 28, 28}, torch::kDouble);
  at::Tensor y = torch::randint(0, 10, {4}, torch::kLong);
  at::NoGradGuard no_grad;
  EXPECT_TRUE(at::allclose(Forward(*scripted, params, x),
                           Forward(*builtin, params, x), 1e-9, 1e-9));
  auto a = ComputeJvp(*scripted, params, {tangent}, x, y);
  auto b = ComputeJvp(*builtin, params, {tangent}, x, y);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_NEAR(a->jvps[0], b->jvps[0], 1e-9 * std::abs(b->jvps[0]));
}

// The clients' path: a Trainer on the exported cnn (forward AD through the
// module) gives the built-in cnn's JVP scalars (hand-written rules) for the
// same keys, minibatch and parameters, to float rounding.
TEST_F(ScriptedModel, TrainerJvpsOfExportedCnnEqualTheBuiltInRules) {
  const std::string data =
      testing::WriteSyntheticMnist(*dir_ + "/mnist", 256, 64, 3);
  ASSERT_FALSE(data.empty());
  auto exported = Load("cnn.pt");
  ASSERT_TRUE(exported.ok()) << exported.status();
  auto builtin = GetModelSpec("cnn", kMnist);
  ASSERT_TRUE(builtin.ok());
  const std::vector<float> start = InitialParams(*builtin, 4);
  LocalTask task;
  task.round = 2;
  task.batch_size = 16;
  task.estimator = "jvp";
  for (uint32_t k = 0; k < 3; ++k) {
    TangentKey key;
    key.run_seed = 4;
    key.round = 2;
    key.client = 1;
    key.index = k;
    key.type = k == 1 ? TangentDistribution::kNormal
                      : TangentDistribution::kRademacher;
    task.tangents.push_back(key);
  }
  std::vector<LocalResult> out;
  for (bool scripted : {false, true}) {
    TrainerOptions t;
    t.model = scripted ? std::string(kTorchScriptModel) : "cnn";
    if (scripted) t.torchscript = *exported->script;
    t.dataset = "mnist";
    t.data_dir = data;
    t.seed = 1;
    auto trainer = Trainer::Create(t);
    ASSERT_TRUE(trainer.ok()) << trainer.status();
    ASSERT_TRUE((*trainer)->SetModel(start, 1).ok());
    auto r = (*trainer)->Run(task);
    ASSERT_TRUE(r.ok()) << r.status();
    out.push_back(*r);
  }
  ASSERT_EQ(out[1].jvps.size(), 3u);
  EXPECT_NEAR(out[1].loss, out[0].loss, 1e-5);
  for (size_t k = 0; k < 3; ++k) {
    EXPECT_NE(out[0].jvps[k], 0.0);
    EXPECT_NEAR(out[1].jvps[k], out[0].jvps[k],
                1e-4 * std::abs(out[0].jvps[k]) + 1e-5)
        << k;
  }
}

TEST_F(ScriptedModel, OpWithoutForwardDerivativeIsNamed) {
  auto spec = Load("cdist.pt", /*forward_ad=*/true);
  ASSERT_FALSE(spec.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(spec.status()));
  EXPECT_THAT(spec.status().message(), HasSubstr("op '_cdist_forward'"));
  EXPECT_THAT(spec.status().message(), HasSubstr("cdist.pt"));
  // Backprop and finite differences need no forward derivative.
  EXPECT_TRUE(Load("cdist.pt", /*forward_ad=*/false).ok());
}

TEST_F(ScriptedModel, RefusesWhatItCannotTrainWithPreciseErrors) {
  struct Case {
    std::string file;
    std::string says;
  };
  for (const Case& c : std::vector<Case>{
           {"running_bn.pt", "buffer 'bn.running_mean' changes"},
           {"five_logits.pt", "output of shape [2, 5]"},
           {"tuple_out.pt", "forward must return one tensor of logits"},
       }) {
    SCOPED_TRACE(c.file);
    auto spec = Load(c.file);
    ASSERT_FALSE(spec.ok());
    EXPECT_TRUE(absl::IsInvalidArgument(spec.status())) << spec.status();
    EXPECT_THAT(spec.status().message(), HasSubstr(c.says));
    EXPECT_THAT(spec.status().message(), HasSubstr(c.file));
  }
  // A module for another input shape.
  auto cifar = Load("small_cnn.pt", false, {3, 32, 32});
  ASSERT_FALSE(cifar.ok());
  EXPECT_THAT(cifar.status().message(),
              HasSubstr("forward on a batch of shape [2, 3, 32, 32]"));
  // Missing file, a file that is not a module, an empty file.
  auto missing = Load("no-such-file.pt");
  EXPECT_TRUE(absl::IsNotFound(missing.status())) << missing.status();
  EXPECT_THAT(missing.status().message(), HasSubstr("no-such-file.pt"));
  std::ofstream(Path("garbage.pt")) << "not a zip archive at all";
  auto garbage = Load("garbage.pt");
  ASSERT_FALSE(garbage.ok());
  EXPECT_THAT(garbage.status().message(),
              HasSubstr("garbage.pt is not a TorchScript module"));
  ScriptOptions o;
  o.input_shape = kMnist;
  auto empty = LoadScriptedModel("", "empty input", o);
  ASSERT_FALSE(empty.ok());
  EXPECT_THAT(empty.status().message(),
              HasSubstr("empty input is not a TorchScript module"));
  // Truncated: the first half of a valid file.
  auto whole = Load("tiny.pt");
  ASSERT_TRUE(whole.ok()) << whole.status();
  auto truncated =
      LoadScriptedModel(whole->script->substr(0, whole->script->size() / 2),
                        "half of tiny.pt", o);
  ASSERT_FALSE(truncated.ok());
  EXPECT_THAT(truncated.status().message(),
              HasSubstr("half of tiny.pt is not a TorchScript module"));
}

TEST_F(ScriptedModel, ConfigNamesAFileRelativeToItself) {
  const std::string dir = *dir_;
  std::ofstream(dir + "/run.yaml") << "model: {torchscript: tiny.pt}\n"
                                      "dataset: {name: mnist}\n";
  auto config = LoadConfigFile(dir + "/run.yaml", {});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->model, kTorchScriptModel);
  EXPECT_EQ(config->torchscript, dir + "/tiny.pt");
  // Written back as the same map, which reads back the same.
  const std::string yaml = ConfigToYaml(*config);
  EXPECT_THAT(yaml, HasSubstr("torchscript: \"" + dir + "/tiny.pt\""));
  auto again = ParseConfig(yaml, "/", {}, "written back");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->torchscript, config->torchscript);
  auto spec = ResolveModelSpec(config->model, config->torchscript, kMnist, 10,
                               EstimatorNeedsForwardAd(config->estimator));
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->NumParams(), 49 * 10 + 10);

  std::ofstream(dir + "/bad.yaml") << "model: torchscript\n";
  auto bad = LoadConfigFile(dir + "/bad.yaml", {});
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("{torchscript: FILE}"));
  std::ofstream(dir + "/bad2.yaml") << "model: {onnx: m.onnx}\n";
  auto bad2 = LoadConfigFile(dir + "/bad2.yaml", {});
  ASSERT_FALSE(bad2.ok());
  EXPECT_THAT(bad2.status().message(), HasSubstr("model.onnx"));
}

}  // namespace
}  // namespace fedfwd
