// Experiment configuration: the YAML schema, its defaults and its checks.
//
// A config is loaded from a YAML file, then `overrides` ("dotted.key=value",
// as given to --set) are applied, then every key is checked: unknown keys,
// wrong types and out-of-range values are errors that name the key (and the
// file). Relative paths (dataset.data_dir) resolve against the directory of
// the config file, so a config runs from any working directory.
// Thread-safety: plain values; no shared state.
#ifndef FEDFWD_COMMON_CONFIG_H_
#define FEDFWD_COMMON_CONFIG_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/dataset.h"
#include "common/partition.h"

namespace fedfwd {

enum class MergeRule { kNaive, kAverage, kWeighted };

struct DatasetConfig {
  // mnist | fashion-mnist | cifar10, or users' own data: npz | csv (files
  // train.<name> and test.<name> in data_dir; dataset.h FileDataOptions)
  std::string name = "mnist";
  FileDataOptions file;  // npz and csv only: label, features, id, classes
  // Not a config key: CSV label names of the coordinator's test split,
  // found at start (fedfwd-server), which clients' data must match.
  std::vector<std::string> class_names;
  // Folder holding the dataset files. Empty: the dataset's default location
  // (see DefaultDataDir in dataset.h).
  std::string data_dir;
  int64_t train_limit = 0;  // use only the first N training examples (0: all)
  int64_t test_limit = 0;   // evaluate on the first N test examples (0: all)
};

// The most tangents a client computes per round (tangent.count plus
// tangent.layer_counts).
inline constexpr int kMaxLayerTangents = 16384;

struct TangentConfig {
  std::string distribution = "normal";  // normal | rademacher
  // false: each client gets its own tangent seed per round (default);
  // true: all clients of a round share one tangent.
  bool shared_seed = false;
  // Multi-tangent forward gradients: K tangents per client per round, all on
  // the same minibatch.
  int count = 1;
  // How a client's K estimates d_k v_k become one gradient estimate:
  //   mean:       (1/K) sum_k d_k v_k;
  //   projection: (m/K) V (V^T V)^-1 d, the true gradient's orthogonal
  //               projection onto span(v_1..v_K) (V^T g = d), scaled by m/K
  //               (m: perturbed entries) so that it is unbiased like the mean;
  //   projection_round: the same over every tangent of the round (all
  //               clients' tangents in one Gram matrix; the merge rule and
  //               `robust` are then not used).
  std::string combine = "mean";
  // Scale each tangent to norm sqrt(m) (TangentKey::normalized).
  bool normalize = false;
  // dense: every entry drawn; rank1: each weight matrix / conv filter bank
  // is u a^T (TangentKey::rank_one), rows + columns random numbers instead
  // of rows * columns, still unbiased; biases stay dense.
  // rank1_shared: rank1 with u shared by a client's keys of the round
  // (TangentKey::shared_u).
  std::string structure = "dense";
  // rank1_shared: how many u's a client's K tangents carry per matrix
  // (blocks of ceil(K / u_groups) keys share one; 1: all share one). More
  // u's cost one forward propagation each and lower the estimate's variance.
  int u_groups = 1;
  // Weight splitting (Spry): none, or layers: each client perturbs only
  // blocks_per_client layers, assigned round-robin (rotating each round);
  // the coordinator merges each layer over the clients that perturbed it.
  std::string split = "none";
  int blocks_per_client = 1;
  // A tangent budget per layer: layer name (a parameter's name up to its
  // last dot, e.g. "fc") -> number of extra keys per client per round that
  // perturb only that layer's parameters. The `count` keys then perturb
  // only the layers not named here, and each group's values are averaged
  // over that group's keys (every parameter has one unbiased estimate). A
  // key that perturbs only late layers costs nothing in the layers before
  // them: hundreds of dense-layer keys cost less than one convolution key.
  // Empty: every key perturbs every layer.
  std::map<std::string, int> layer_counts;
};

// Scalars a forward-gradient client computes and releases per round:
// tangent.count plus every tangent.layer_counts entry (privacy accounting
// and limits count them all).
int TangentsPerClient(const TangentConfig& tangent);

// estimator fd: central finite differences from two forward passes,
// d = (f(θ+εv) - f(θ-εv)) / 2ε.
struct FdConfig {
  double epsilon = 1e-4;
  // fp32, or fixed: forward passes with int16 weights and int8 activations
  // (symmetric per-tensor scales), as an integer NPU would run them.
  std::string precision = "fp32";
};

struct LrScheduleConfig {
  // constant: lr; inverse: lr / (1 + t / decay_rounds);
  // cosine: min_lr + (lr - min_lr) * (1 + cos(pi * t / rounds)) / 2.
  std::string type = "constant";
  double decay_rounds = 1000;
  double min_lr = 0;
};

// Which registered clients take part in a round (FedAvg's C): the first
// max(minimum, ceil(fraction * live)) of a seeded permutation of the live
// clients, capped at the live count.
struct SamplingConfig {
  double fraction = 1.0;  // (0, 1]
  int minimum = 1;
};

// The coordinator's optimizer over FedAvg's averaged client delta (the
// "pseudo-gradient" -delta): sgd with lr 1 and no momentum is plain FedAvg;
// momentum > 0 is FedAvgM; adam is FedAdam (Reddi et al. 2021), where eps is
// their tau. Forward gradients (jvp, fd): type adam runs Adam on the
// estimated gradient with the scheduled `lr` (this `lr` and `momentum` are
// FedAvg's only).
struct ServerOptimizerConfig {
  // sgd | adam | frank_wolfe. frank_wolfe: forward gradients (estimator jvp
  // or fd) constrained to the l1 ball of `radius` (common/step_rule.h); the
  // round's learning rate (lr, lr_schedule) is the Frank-Wolfe step size.
  std::string type = "sgd";
  double lr = 1.0;
  double radius = 0;  // frank_wolfe: the l1 ball's radius (> 0)
  // frank_wolfe: K > 1 constrains to the K-sparse polytope {|x|_1 <= radius,
  // |x|_inf <= radius / K} instead (K = 1: the l1 ball); a step moves K
  // weights.
  int64_t k = 1;
  // frank_wolfe: how the initial model enters the ball at the first step:
  // prune (keep the largest weights that fit, unchanged) | project (the
  // Euclidean projection, soft thresholding: shrinks what it keeps too).
  std::string start = "prune";
  double momentum = 0;
  double beta1 = 0.9;
  double beta2 = 0.99;
  double eps = 1e-3;
};

// Robust aggregation against clients that send outliers (off by default).
// Forward gradients: statistics over the JVP scalars d_i, never coordinate-
// wise over tangents (see server/merge.h for the exact steps).
// Dense updates (fedsgd, fedavg): coordinate-wise over the clients' vectors,
// or a clip of each vector's L2 norm.
struct RobustConfig {
  // none | median | trimmed_mean | quantile_clip | quantile_skip
  // (quantile_skip: like quantile_clip, but a result beyond the bound is
  // dropped, as FedKSeed skips outlier steps).
  std::string rule = "none";
  double trim = 0.1;        // trimmed_mean: fraction cut at each end, [0, 0.5)
  double quantile = 0.5;    // quantile_clip: q of the running |d| window
  double multiplier = 2.0;  // quantile_clip: |d| <= multiplier * quantile
  int window = 1000;        // quantile_clip: past |d| values kept
  // none | median | trimmed_mean | norm_clip (uses `trim` for trimmed_mean)
  std::string dense = "none";
  double norm = 0;  // norm_clip: L2 bound; 0: the median of the round's norms
};

// Local differential privacy for forward gradients (common/privacy.h):
// each client clips its JVP values to [-clip, clip] and adds Gaussian noise
// of standard deviation noise_multiplier * clip before sending. Off when
// clip is 0. `delta` is the delta of the reported (epsilon, delta).
struct PrivacyConfig {
  double clip = 0;
  double noise_multiplier = 0;
  double delta = 1e-5;
};

// Decentralized runs (`algorithm` easgd | gosgd | sgp): each client daemon
// is a worker that runs `steps` local minibatch SGD steps (batch_size, lr,
// momentum, weight_decay) on its shard and mixes with the others; the
// coordinator only keeps membership (and EASGD's center variable) and
// evaluates the consensus model every eval_every local steps.
struct PeerConfig {
  int64_t steps = 1500;  // local steps per worker
  // EASGD: communication period tau and moving rate alpha (0: the paper's
  // beta / (p tau) for p = clients workers); synchronous: every worker's
  // exchange number k reads the center once all live workers' exchanges
  // k - 1 are in; asynchronous: each exchanges without waiting.
  int tau = 4;
  double alpha = 0;
  double beta = 0.9;
  bool synchronous = true;
  // GoSGD: probability of a push after each local step.
  double push_probability = 0.5;
  // SGP: exponential (time-varying, one peer per step) | random (fixed
  // random column-stochastic matrix, `degree` peers) | complete.
  std::string topology = "exponential";
  int degree = 2;
  // Noisy links: N(0, noise_std^2) added to every value of every parameter
  // message a worker sends (peer pushes and EASGD's elastic differences).
  double noise_std = 0;
  // momentum > 0: Nesterov momentum (EAMSGD for easgd) instead of heavy
  // ball.
  bool nesterov = true;
};

struct TimeoutsConfig {
  double round_s = 60;   // a round closes at this deadline with what it has
  double client_s = 10;  // a client unheard of this long is dropped
  double join_s = 600;   // how long to wait for `clients` to join
};

// Config::model of a run whose model is a TorchScript file.
inline constexpr char kTorchScriptModel[] = "torchscript";

struct Config {
  // A registered model (model.h), or kTorchScriptModel when `torchscript`
  // is set (YAML `model: {torchscript: FILE}`, FILE relative to the config).
  std::string model = "mlp";
  std::string torchscript;  // absolute path; "" for a registered model
  // classification: class labels, cross-entropy, test accuracy.
  // regression: float targets of users' own data (dataset npz, npy or csv),
  //   mean squared error, test RMSE and R^2 (R^2 is the score that targets,
  //   the best model and final_test_acc's place in the summary use).
  //   Also sets dataset.file.regression.
  std::string task = "classification";
  DatasetConfig dataset;
  // How the training set is split into `clients` shards. YAML: a map
  // {type, shards_per_client, alpha}, or just the type ("partition: iid").
  PartitionOptions partition;
  int clients = 4;      // client daemons that take part (and shards)
  int min_clients = 1;  // quorum: fewest results that make a round count
  int64_t rounds = 100;
  uint64_t seed = 1;
  // jvp: forward gradients (a scalar per tangent goes up).
  // fedsgd: each client returns one minibatch gradient; the coordinator takes
  //   their sample-weighted mean and steps with lr / momentum / lr_schedule.
  // fedavg: each client runs local_epochs of minibatch SGD (batch_size, lr,
  //   momentum, lr_schedule by round) and returns its model delta; the
  //   coordinator averages the deltas weighted by samples and applies them
  //   through server_optimizer.
  // backprop: fedsgd under its plain name (centralized SGD in fedfwd-train).
  // fd: forward gradients from finite differences (two forward passes per
  //   tangent, no forward-mode AD); merged like jvp.
  std::string estimator = "jvp";
  // federated: the coordinator runs rounds (everything above). easgd,
  // gosgd, sgp: decentralized training between the client daemons (see
  // PeerConfig; estimator, merge and rounds do not apply).
  std::string algorithm = "federated";
  PeerConfig peer;
  // L2 weight decay added to every backprop gradient (local SGD of fedavg
  // and of decentralized workers, fedsgd / centralized steps): g + wd * w.
  double weight_decay = 0;
  FdConfig fd;
  MergeRule merge = MergeRule::kWeighted;
  TangentConfig tangent;
  double lr = 1e-4;
  LrScheduleConfig lr_schedule;
  double momentum = 0;
  double clip_jvp = 0;  // clip each client's JVP scalar to [-c, c]; 0: off
  // 32: JVP values go up as float32 and replay factors down as float32;
  // 8: both as int8 with a scale (needs clip_jvp > 0): the client rounds
  // each clipped value stochastically to a multiple of clip_jvp / 127, the
  // coordinator rounds each client run of replay factors to 8 bits.
  int jvp_bits = 32;
  // Forward gradients: scale the merged step down to this L2 norm when it is
  // longer; 0: off.
  double clip_step = 0;
  int batch_size = 64;
  int local_epochs = 1;  // fedavg: E
  SamplingConfig sampling;
  ServerOptimizerConfig server_optimizer;
  // Encoding of uploaded deltas/gradients: none (float32) | fp16 | int8.
  std::string compression = "none";
  // How clients get the next model. auto: seed-replay sync when a round's
  // update is seed terms (forward gradients: the task carries the (seed,
  // coefficient) list and each client replays it; with server momentum,
  // Adam or clip_step the client also takes the coordinator's optimizer
  // step on its own copy of the state, common/step_rule.h), snapshots
  // otherwise; snapshot: always the full model.
  std::string sync = "auto";
  // sync auto: a replay of more terms than this (each costs the client a
  // tangent generation over the model) is replaced by a snapshot.
  int64_t sync_max_terms = 64;
  int64_t eval_every = 100;     // evaluate test accuracy every N rounds
  std::vector<double> targets;  // accuracy thresholds to time
  // End the run at the first evaluation that reaches the highest target.
  bool stop_at_target = false;
  TimeoutsConfig timeouts;
  RobustConfig robust;
  PrivacyConfig privacy;

  std::string source_path;  // file it was loaded from (not a YAML key)
};

// Parses YAML text. `base_dir` resolves relative paths; `origin` names the
// source in error messages.
absl::StatusOr<Config> ParseConfig(const std::string& yaml_text,
                                   const std::string& base_dir,
                                   const std::vector<std::string>& overrides,
                                   const std::string& origin = "<config>");
// Reads and parses a file; errors name the file.
absl::StatusOr<Config> LoadConfigFile(
    const std::string& path, const std::vector<std::string>& overrides = {});

// The config as YAML that ParseConfig reads back to an equal Config (paths
// already absolute). Used to hand the effective config to child processes.
std::string ConfigToYaml(const Config& config);
// The config as a JSON object text (for summary.json).
std::string ConfigToJson(const Config& config);

const char* MergeRuleName(MergeRule rule);

}  // namespace fedfwd

#endif  // FEDFWD_COMMON_CONFIG_H_
