// Model registry and forward pass: the layouts, initial weights and outputs
// of the existing models are pinned (they are part of the checkpoint and
// tangent format), and the CIFAR baselines (cifar_cnn, lenet5) are checked
// for parameter counts, output shapes and batch-norm behaviour.
#include "common/model.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "common/rng.h"
#include "common/torch_model.h"

namespace fedfwd {
namespace {

using ::testing::HasSubstr;

const std::vector<int64_t> kMnist = {1, 28, 28};
const std::vector<int64_t> kCifar = {3, 32, 32};

// FNV-1a over the bytes of the float32 buffer.
uint64_t Fnv1a(const std::vector<float>& v) {
  uint64_t h = 1469598103934665603ull;
  const auto* p = reinterpret_cast<const unsigned char*>(v.data());
  for (size_t i = 0; i < v.size() * sizeof(float); ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

// "name:AxB:fan_in;" for every parameter, in order.
std::string Layout(const ModelSpec& spec) {
  std::string s;
  for (const ParamSpec& p : spec.params) {
    s += p.name + ":";
    for (size_t i = 0; i < p.shape.size(); ++i) {
      s += (i ? "x" : "") + std::to_string(p.shape[i]);
    }
    s += ":" + std::to_string(p.fan_in) + ";";
  }
  return s;
}

// A deterministic float64 input batch: sin(0.37 * k) over the flat index.
at::Tensor PinnedInput(int64_t batch, const std::vector<int64_t>& chw) {
  const int64_t n = batch * chw[0] * chw[1] * chw[2];
  return at::sin(at::arange(n, at::kDouble) * 0.37)
      .reshape({batch, chw[0], chw[1], chw[2]});
}

std::vector<at::Tensor> DoubleParams(const ModelSpec& spec,
                                     std::vector<float>& flat) {
  std::vector<at::Tensor> params;
  for (const at::Tensor& t : ParamViews(spec, flat.data())) {
    params.push_back(t.to(at::kDouble));
  }
  return params;
}

struct Pinned {
  std::string model;
  std::vector<int64_t> input;
  int64_t num_params;
  size_t num_tensors;
  uint64_t init_fnv;  // InitialParams(spec, 42)
  std::string layout;
  std::vector<double> logits;  // first row of PinnedInput(3) in float64
};

// Recorded from the code before the layer-list ModelSpec (arch/widths), so
// the generalization provably changed nothing for the existing models.
const std::vector<Pinned>& PinnedModels() {
  static const auto* pinned = new std::vector<Pinned>{
      {"mlp",
       {1, 28, 28},
       1863690,
       6,
       0xfad8e6bfdc9e0952ull,
       "fc1.weight:1024x784:784;fc1.bias:1024:784;fc2.weight:1024x1024:1024;"
       "fc2.bias:1024:1024;fc3.weight:10x1024:1024;fc3.bias:10:1024;",
       {-0.0565259320807, 0.106501821156, -0.0104166863404, -0.0227933088688,
        0.0890488621742, -0.0839850931205, -0.0559723371754, 0.0102650694819,
        0.0737939154621, -0.0614548875167}},
      {"cnn",
       {1, 28, 28},
       142794,
       10,
       0x263a96b4fa94a59full,
       "conv1.weight:64x1x3x3:9;conv1.bias:64:9;conv2.weight:64x64x3x3:576;"
       "conv2.bias:64:576;conv3.weight:64x64x3x3:576;conv3.bias:64:576;conv4."
       "weight:64x64x3x3:576;conv4.bias:64:576;fc.weight:10x3136:3136;fc.bias:"
       "10:3136;",
       {-0.0115430726715, -0.0421413308066, 0.0397438174897, 0.0188800238996,
        -0.0623413331595, 0.0213146935006, 0.0233576532728, -0.0405910939425,
        0.00286959911471, 0.0301853844506}},
      {"mlp_small",
       {1, 28, 28},
       25450,
       4,
       0x41e6bc7f6d31448bull,
       "fc1.weight:32x784:784;fc1.bias:32:784;fc2.weight:10x32:32;fc2.bias:10:"
       "32;",
       {0.168081553729, -0.0535748433437, 0.110888765391, -0.0228459519802,
        -0.186881530556, -0.0685316051463, -0.0565981950337, -0.16810217449,
        0.0742509036493, 0.0969096915544}},
      {"cnn_small",
       {1, 28, 28},
       4594,
       6,
       0xd00ae817d18ca08eull,
       "conv1.weight:8x1x3x3:9;conv1.bias:8:9;conv2.weight:8x8x3x3:72;conv2."
       "bias:8:72;fc.weight:10x392:392;fc.bias:10:392;",
       {0.204026912884, -0.160033284244, -0.0396717694682, 0.0904287788522,
        -0.0983388644816, -0.0909838349891, 0.221424052352, -0.110603633605,
        -0.0515707510188, 0.102181463207}},
      {"logreg",
       {1, 28, 28},
       7850,
       2,
       0xcbd99672b70e1eacull,
       "fc1.weight:10x784:784;fc1.bias:10:784;",
       {-0.327919940685, 0.0789502582894, -0.887372362537, -0.282030364788,
        -0.0955571409705, 0.0879966147495, 0.388320041114, -0.0728428807335,
        0.367666527443, 0.0857097052066}},
      {"tiny",
       {1, 28, 28},
       500,
       2,
       0xf8ed80c29f547f97ull,
       "fc1.weight:10x49:49;fc1.bias:10:49;",
       {-0.17357751145, -0.19847868004, -0.201458293848, -0.0588700579477,
        0.0163317448588, 0.0266941966103, 0.111335914899, 0.103938482954,
        0.234265430138, 0.0949230796855}},
      {"mlp",
       {3, 32, 32},
       4206602,
       6,
       0x4e0fd7ad46847706ull,
       "fc1.weight:1024x3072:3072;fc1.bias:1024:3072;fc2.weight:1024x1024:1024;"
       "fc2.bias:1024:1024;fc3.weight:10x1024:1024;fc3.bias:10:1024;",
       {-0.068074314615, -0.0248860340939, 0.12662350072, 0.0397152753446,
        0.0972134136045, -0.0244767593044, 0.0228105475709, 0.0253232010041,
        0.0192149919633, -0.0564972728812}},
      {"cnn",
       {3, 32, 32},
       153546,
       10,
       0xf4b15341bc3e02adull,
       "conv1.weight:64x3x3x3:27;conv1.bias:64:27;conv2.weight:64x64x3x3:576;"
       "conv2.bias:64:576;conv3.weight:64x64x3x3:576;conv3.bias:64:576;conv4."
       "weight:64x64x3x3:576;conv4.bias:64:576;fc.weight:10x4096:4096;fc.bias:"
       "10:4096;",
       {-0.00699970763623, -0.0146223326616, 0.0308342846168, -0.00862236645922,
        -0.0237387749646, 0.0201902015318, 0.00769442158161, 0.0181763155701,
        0.0382787963684, -0.0164984607305}},
      {"mlp_small",
       {3, 32, 32},
       98666,
       4,
       0x61721fd4add76b88ull,
       "fc1.weight:32x3072:3072;fc1.bias:32:3072;fc2.weight:10x32:32;fc2.bias:"
       "10:32;",
       {0.203985984321, 0.0176641063472, -0.0269481223074, -0.116484299149,
        -0.0700724725178, 0.253706519962, -0.456509895689, 0.0656999459828,
        0.421652030886, 0.0393943603592}},
      {"cnn_small",
       {3, 32, 32},
       5938,
       6,
       0x584ae3bab573c36bull,
       "conv1.weight:8x3x3x3:27;conv1.bias:8:27;conv2.weight:8x8x3x3:72;conv2."
       "bias:8:72;fc.weight:10x512:512;fc.bias:10:512;",
       {-0.0807053433554, 0.024802897458, -0.0627763566338, -0.0642848891242,
        0.00347863708876, -0.000889814407892, -0.101144879543, 0.0033866536221,
        0.126002716089, 0.0536529592275}},
      {"logreg",
       {3, 32, 32},
       30730,
       2,
       0x78e98cbb54155842ull,
       "fc1.weight:10x3072:3072;fc1.bias:10:3072;",
       {0.345300110033, 0.145680419504, -0.252708434605, 0.352893470458,
        -0.853944546368, 0.0337136791626, 0.00162735870971, 0.0228766078328,
        -0.0728072650106, -0.236733575977}},
      {"tiny",
       {3, 32, 32},
       1930,
       2,
       0x67f5b20d025fa853ull,
       "fc1.weight:10x192:192;fc1.bias:10:192;",
       {-0.168711738239, -0.0554320927724, 0.28210679584, -0.261239092162,
        0.290629303189, -0.291384476558, 0.0869533159342, -0.278321809378,
        0.321489201955, -0.116134984048}},
  };
  return *pinned;
}

TEST(Model, ExistingModelsKeepLayoutAndInitialParams) {
  for (const Pinned& p : PinnedModels()) {
    SCOPED_TRACE(p.model + " on " + std::to_string(p.input[0]) + " channels");
    auto spec = GetModelSpec(p.model, p.input);
    ASSERT_TRUE(spec.ok()) << spec.status();
    EXPECT_EQ(spec->NumParams(), p.num_params);
    EXPECT_EQ(spec->params.size(), p.num_tensors);
    EXPECT_EQ(Layout(*spec), p.layout);
    for (const ParamSpec& param : spec->params) {
      EXPECT_EQ(param.init, ParamSpec::Init::kUniform) << param.name;
    }
    EXPECT_EQ(Fnv1a(InitialParams(*spec, 42)), p.init_fnv);
  }
}

TEST(Model, ExistingModelsKeepForwardOutputs) {
  for (const Pinned& p : PinnedModels()) {
    SCOPED_TRACE(p.model + " on " + std::to_string(p.input[0]) + " channels");
    auto spec = GetModelSpec(p.model, p.input);
    ASSERT_TRUE(spec.ok()) << spec.status();
    std::vector<float> flat = InitialParams(*spec, 42);
    at::Tensor out =
        Forward(*spec, DoubleParams(*spec, flat), PinnedInput(3, p.input));
    ASSERT_EQ(out.sizes(), (std::vector<int64_t>{3, 10}));
    for (int64_t k = 0; k < 10; ++k) {
      EXPECT_NEAR(out[0][k].item<double>(), p.logits[k], 1e-9) << "class " << k;
    }
  }
}

TEST(Model, CifarCnnParameterCounts) {
  auto cifar = GetModelSpec("cifar_cnn", kCifar);
  ASSERT_TRUE(cifar.ok()) << cifar.status();
  // conv1 3->64 5x5: 64*3*25 + 64 = 4864; conv2 64->128 5x5: 128*64*25 + 128
  // = 204928; conv3 128->64 3x3: 64*128*9 + 64 = 73792; 32 -> 16 -> 8, so
  // dense 64*8*8 = 4096 -> 10: 40970. Sum 324554.
  EXPECT_EQ(cifar->NumParams(), 324554);
  EXPECT_EQ(Layout(*cifar),
            "conv1.weight:64x3x5x5:75;conv1.bias:64:75;"
            "conv2.weight:128x64x5x5:1600;conv2.bias:128:1600;"
            "conv3.weight:64x128x3x3:1152;conv3.bias:64:1152;"
            "fc.weight:10x4096:4096;fc.bias:10:4096;");
  auto mnist = GetModelSpec("cifar_cnn", kMnist);
  ASSERT_TRUE(mnist.ok()) << mnist.status();
  // conv1 1->64: 64*25 + 64 = 1664; conv2 204928; conv3 73792; 28 -> 14 ->
  // 7, dense 64*7*7 = 3136 -> 10: 31370. Sum 311754.
  EXPECT_EQ(mnist->NumParams(), 311754);
}

TEST(Model, Lenet5ParameterCounts) {
  auto cifar = GetModelSpec("lenet5", kCifar);
  ASSERT_TRUE(cifar.ok()) << cifar.status();
  // conv1 3->30 5x5: 30*3*25 + 30 = 2280 (32 -> 28, pool 14); conv2 30->40
  // 5x5: 40*30*25 + 40 = 30040 (14 -> 10, pool 5); bn2: 40 + 40 = 80;
  // fc1 40*5*5 = 1000 -> 700: 700700; fc2 700 -> 10: 7010. Sum 740110.
  EXPECT_EQ(cifar->NumParams(), 740110);
  EXPECT_EQ(Layout(*cifar),
            "conv1.weight:30x3x5x5:75;conv1.bias:30:75;"
            "conv2.weight:40x30x5x5:750;conv2.bias:40:750;"
            "bn2.weight:40:1;bn2.bias:40:1;"
            "fc1.weight:700x1000:1000;fc1.bias:700:1000;"
            "fc2.weight:10x700:700;fc2.bias:10:700;");
  auto mnist = GetModelSpec("lenet5", kMnist);
  ASSERT_TRUE(mnist.ok()) << mnist.status();
  // conv1 1->30: 30*25 + 30 = 780 (28 -> 24, pool 12); conv2 30040 (12 -> 8,
  // pool 4); bn2 80; fc1 40*4*4 = 640 -> 700: 448700; fc2 7010. Sum 486610.
  EXPECT_EQ(mnist->NumParams(), 486610);
}

TEST(Model, NewModelsGiveTenLogitsOnBothDatasets) {
  for (const std::string name : {"cifar_cnn", "lenet5"}) {
    for (const std::vector<int64_t>& shape : {kMnist, kCifar}) {
      SCOPED_TRACE(name + " on " + std::to_string(shape[0]) + " channels");
      auto spec = GetModelSpec(name, shape);
      ASSERT_TRUE(spec.ok()) << spec.status();
      std::vector<float> flat = InitialParams(*spec, 3);
      at::Tensor x = at::randn({5, shape[0], shape[1], shape[2]});
      at::Tensor out = Forward(*spec, ParamViews(*spec, flat.data()), x);
      EXPECT_EQ(out.sizes(), (std::vector<int64_t>{5, 10}));
      EXPECT_TRUE(out.isfinite().all().item<bool>());
    }
  }
}

TEST(Model, EveryRegisteredNameBuilds) {
  EXPECT_THAT(ModelNames(), ::testing::IsSupersetOf({"cifar_cnn", "lenet5"}));
  for (const std::string& name : ModelNames()) {
    EXPECT_TRUE(GetModelSpec(name, kMnist).ok()) << name;
    EXPECT_TRUE(GetModelSpec(name, kCifar).ok()) << name;
  }
  auto bad = GetModelSpec("resnet", kCifar);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("lenet5"));
}

TEST(Model, BatchNormStartsAsIdentityScaleAndZeroShift) {
  auto spec = GetModelSpec("lenet5", kCifar);
  ASSERT_TRUE(spec.ok());
  std::vector<float> flat = InitialParams(*spec, 9);
  int64_t off = 0;
  bool saw_bn = false;
  for (const ParamSpec& p : spec->params) {
    const std::vector<float> values(flat.begin() + off,
                                    flat.begin() + off + p.numel());
    off += p.numel();
    if (p.name == "bn2.weight") {
      saw_bn = true;
      EXPECT_EQ(p.init, ParamSpec::Init::kOnes);
      EXPECT_THAT(values, ::testing::Each(1.0f));
    } else if (p.name == "bn2.bias") {
      EXPECT_EQ(p.init, ParamSpec::Init::kZeros);
      EXPECT_THAT(values, ::testing::Each(0.0f));
    } else {
      // Uniform in (-b, b), and not constant.
      const float bound = 1.0f / std::sqrt(static_cast<float>(p.fan_in));
      EXPECT_EQ(p.init, ParamSpec::Init::kUniform);
      const auto [lo, hi] = std::minmax_element(values.begin(), values.end());
      EXPECT_GE(*lo, -bound) << p.name;
      EXPECT_LE(*hi, bound) << p.name;
      EXPECT_LT(*lo, *hi) << p.name;
    }
  }
  EXPECT_TRUE(saw_bn);
  // A uniform tensor is drawn from the stream of its parameter index, so
  // constant tensors before it do not shift it: fc2.weight is index 8.
  ASSERT_EQ(spec->params[8].name, "fc2.weight");
  const int64_t fc2_off = spec->NumParams() - 7010;
  std::vector<float> expected(7000);
  const float b = 1.0f / std::sqrt(700.0f);
  FillUniform(9, 8, -b, b, expected.data(), 7000);
  EXPECT_TRUE(
      std::equal(expected.begin(), expected.end(), flat.begin() + fc2_off));
}

TEST(Model, BatchNormUsesTheBatchStatistics) {
  auto spec = GetModelSpec("lenet5", kMnist);
  ASSERT_TRUE(spec.ok());
  std::vector<float> flat = InitialParams(*spec, 5);
  const std::vector<at::Tensor> params = DoubleParams(*spec, flat);
  at::Tensor x = PinnedInput(4, kMnist);
  at::Tensor out = Forward(*spec, params, x);
  // The batch twice over has the same mean and (biased) variance: the same
  // logits. No running statistics are updated between calls.
  at::Tensor twice = Forward(*spec, params, at::cat({x, x}));
  EXPECT_TRUE(at::allclose(twice.slice(0, 0, 4), out, 1e-12, 1e-12));
  EXPECT_TRUE(at::allclose(Forward(*spec, params, x), out, 0, 0));
  // Other examples in the batch change an example's logits.
  at::Tensor mixed = Forward(*spec, params, at::cat({x.slice(0, 0, 1), -x}));
  EXPECT_FALSE(at::allclose(mixed[0], out[0], 1e-6, 1e-6));
}

TEST(Model, ShapeErrorsNameTheModel) {
  // lenet5 needs 16x16 at least (16 -> 12 -> 6 -> 2 -> 1): 8x8 -> conv
  // 4x4 -> pool 2x2 -> the 5x5 conv2 does not fit.
  auto small = GetModelSpec("lenet5", {1, 8, 8});
  ASSERT_FALSE(small.ok());
  EXPECT_EQ(small.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(small.status().message()), HasSubstr("lenet5"));
  EXPECT_THAT(std::string(small.status().message()), HasSubstr("conv2"));
  EXPECT_TRUE(GetModelSpec("lenet5", {1, 16, 16}).ok());
  EXPECT_FALSE(GetModelSpec("lenet5", {1, 15, 15}).ok());
  EXPECT_FALSE(GetModelSpec("cnn", {1, 28}).ok());
  EXPECT_FALSE(GetModelSpec("cnn", {0, 28, 28}).ok());

  using L = LayerSpec;
  EXPECT_FALSE(MakeModelSpec("m", kMnist, {L::Dense("fc", 10)}).ok());
  EXPECT_FALSE(
      MakeModelSpec("m", kMnist, {L::Flatten(), L::Conv("c", 4, 3, 1)}).ok());
  EXPECT_FALSE(MakeModelSpec("m", kMnist, {L::Flatten(), L::Dense("fc", 7)})
                   .ok());  // not 10 classes
  EXPECT_FALSE(
      MakeModelSpec("m", kMnist, {L::Flatten(), L::Dense("fc", 10), L::Relu()})
          .ok());
  EXPECT_TRUE(
      MakeModelSpec("m", kMnist, {L::Flatten(), L::Dense("fc", 10)}).ok());
}

TEST(Model, ParameterTensorLimit) {
  // kMaxParamIndex = 4096 tensors: 2048 dense layers fit, 2049 do not.
  auto layers = [](int dense) {
    std::vector<LayerSpec> l = {LayerSpec::Flatten()};
    for (int i = 0; i < dense; ++i) {
      l.push_back(LayerSpec::Dense("fc" + std::to_string(i), 10));
    }
    return l;
  };
  EXPECT_TRUE(MakeModelSpec("deep", {1, 2, 2}, layers(2048)).ok());
  auto r = MakeModelSpec("deep", {1, 2, 2}, layers(2049));
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr("parameter tensors"));
}

TEST(Model, ForwardRejectsWrongParameterCount) {
  auto spec = GetModelSpec("lenet5", kMnist);
  ASSERT_TRUE(spec.ok());
  std::vector<float> flat = InitialParams(*spec, 1);
  std::vector<at::Tensor> params = ParamViews(*spec, flat.data());
  params.pop_back();
  EXPECT_THROW(Forward(*spec, params, at::zeros({2, 1, 28, 28})), c10::Error);
}

TEST(Model, EvaluateRunsBatchNormModelsInChunks) {
  auto spec = GetModelSpec("lenet5", kCifar);
  ASSERT_TRUE(spec.ok());
  std::vector<float> flat = InitialParams(*spec, 2);
  Batch data{at::randn({30, 3, 32, 32}), at::randint(0, 10, {30}, at::kLong)};
  auto r = Evaluate(*spec, ParamViews(*spec, flat.data()), data, /*chunk=*/16);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->count, 30);
  EXPECT_GT(r->loss, 0);
}

}  // namespace
}  // namespace fedfwd
