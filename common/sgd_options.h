// Options of a minibatch SGD step, apart from libtorch so that headers
// without tensors (common/trainer.h) can take them. The step itself is
// ApplySgdUpdate in backprop.h.
#ifndef FEDFWD_COMMON_SGD_OPTIONS_H_
#define FEDFWD_COMMON_SGD_OPTIONS_H_

namespace fedfwd {

// PyTorch's SGD: g' = g + weight_decay p; with momentum m > 0, b = m b + g'
// (b = g' at the first step) and the step is b, or g' + m b with nesterov;
// p -= lr step.
struct SgdOptions {
  double lr = 0;
  double momentum = 0;
  bool nesterov = false;
  double weight_decay = 0;
};

}  // namespace fedfwd

#endif  // FEDFWD_COMMON_SGD_OPTIONS_H_
