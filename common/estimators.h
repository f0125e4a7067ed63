// The estimator names, in one place: what a config may set
// (`estimator:`), what a task may carry to a client, and which side of the
// forward / backprop line each is on. Config validation, the coordinator's
// strategies, the client's trainer and its join capabilities all ask here.
#ifndef FEDFWD_COMMON_ESTIMATORS_H_
#define FEDFWD_COMMON_ESTIMATORS_H_

#include <string>
#include <string_view>
#include <vector>

namespace fedfwd {

// What a client computes for a task:
//   jvp        forward-mode JVPs along regenerated tangents (forward only)
//   fd         finite differences along them (forward only)
//   projected  the backprop gradient's projections onto them (backprop,
//              scalar upload)
//   fedsgd     one minibatch gradient (backprop, dense upload)
//   fedavg     local SGD epochs, the model delta (backprop, dense upload)
inline const std::vector<std::string>& TaskEstimators() {
  static const std::vector<std::string> names = {"jvp", "fd", "projected",
                                                 "fedsgd", "fedavg"};
  return names;
}

// What a config may set: the task estimators and `backprop`, fedsgd under
// its plain name (centralized SGD in fedfwd-train).
inline const std::vector<std::string>& ConfigEstimators() {
  static const std::vector<std::string> names = {
      "jvp", "fd", "projected", "fedsgd", "fedavg", "backprop"};
  return names;
}

// Results are scalars along tangents the coordinator regenerates (the
// forward-gradient strategy, seed replay, privacy of the scalars).
inline bool IsForwardGradientEstimator(std::string_view e) {
  return e == "jvp" || e == "fd" || e == "projected";
}

// Results are dense model-sized updates (the backprop strategy).
inline bool IsDenseUpdateEstimator(std::string_view e) {
  return e == "fedsgd" || e == "backprop" || e == "fedavg";
}

}  // namespace fedfwd

#endif  // FEDFWD_COMMON_ESTIMATORS_H_
