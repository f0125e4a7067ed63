#include "server/evaluator.h"

#include <torch/version.h>

#include "common/dataset.h"
#include "common/status_macros.h"
#include "common/torch_model.h"

namespace fedfwd {

struct Evaluator::Impl {
  ModelSpec spec;
  Batch test;
};

Evaluator::Evaluator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Evaluator::~Evaluator() = default;

absl::StatusOr<std::unique_ptr<Evaluator>> Evaluator::Create(
    const Config& config, const ModelSpec& spec) {
  const std::string dir = config.dataset.data_dir.empty()
                              ? DefaultDataDir(config.dataset.name)
                              : config.dataset.data_dir;
  ASSIGN_OR_RETURN(ImageSet test,
                   LoadDataSplit(config.dataset.name, config.dataset.file, dir,
                                 Split::kTest, config.dataset.test_limit));
  DatasetInfo info;
  if (IsFileDataset(config.dataset.name)) {
    info = FileDataInfo(config.dataset.name, spec.input_shape, spec.num_classes,
                        config.dataset.file.regression);
    RETURN_IF_ERROR(CheckFileData(test, info, "the test split"));
  } else {
    ASSIGN_OR_RETURN(info, GetDatasetInfo(config.dataset.name));
  }
  auto impl = std::make_unique<Impl>();
  impl->spec = spec;
  impl->test = MakeFullBatch(test, info);
  return std::unique_ptr<Evaluator>(new Evaluator(std::move(impl)));
}

absl::StatusOr<EvalResult> Evaluator::Evaluate(std::vector<float>& params) {
  return fedfwd::Evaluate(impl_->spec, ParamViews(impl_->spec, params.data()),
                          impl_->test);
}

int64_t Evaluator::size() const { return impl_->test.x.size(0); }

std::string TorchVersion() { return TORCH_VERSION; }

}  // namespace fedfwd
