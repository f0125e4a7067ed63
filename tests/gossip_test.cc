#include "common/gossip.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fedfwd {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// The tests' own randomness (the simulated network: delivery order, delays,
// failures), apart from the generator under test. mt19937_64's sequence is
// fixed by the standard; the conversions below are ours, so runs repeat on
// every platform.
class TestRng {
 public:
  explicit TestRng(uint64_t seed) : gen_(seed) {}
  double Uniform() { return static_cast<double>(gen_() >> 11) * 0x1.0p-53; }
  size_t Below(size_t n) { return static_cast<size_t>(gen_() % n); }
  bool Chance(double p) { return Uniform() < p; }
  std::vector<float> Vector(size_t n, double lo, double hi) {
    std::vector<float> v(n);
    for (float& x : v) x = static_cast<float>(lo + (hi - lo) * Uniform());
    return v;
  }
  template <typename T>
  void Shuffle(std::vector<T>* v) {
    for (size_t i = v->size(); i > 1; --i)
      std::swap((*v)[i - 1], (*v)[Below(i)]);
  }

 private:
  std::mt19937_64 gen_;
};

uint32_t Bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
}

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return false;
  for (size_t k = 0; k < a.size(); ++k) {
    if (Bits(a[k]) != Bits(b[k])) return false;
  }
  return true;
}

PeerMessage Message(uint32_t from, double weight, std::vector<float> values) {
  PeerMessage m;
  m.from = from;
  m.weight = weight;
  m.values = std::move(values);
  return m;
}

// Takes a random subset of *queue, in random order, and hands each taken
// message to `absorb`; the rest stay queued (delivered late or never).
template <typename Absorb>
void DeliverSome(TestRng* rng, std::vector<PeerMessage>* queue, double p,
                 Absorb absorb) {
  rng->Shuffle(queue);
  std::vector<PeerMessage> left;
  for (PeerMessage& m : *queue) {
    if (rng->Chance(p)) {
      absorb(m);
    } else {
      left.push_back(std::move(m));
    }
  }
  *queue = std::move(left);
}

// ---------------------------------------------------------------------------
// CheckPeerMessage and bad messages.

TEST(CheckPeerMessage, AcceptsAWellFormedMessage) {
  EXPECT_TRUE(CheckPeerMessage(Message(0, 0.5, {1, 2, 3}), 3).ok());
  EXPECT_TRUE(CheckPeerMessage(Message(0, 1e-300, {}), 0).ok());
}

TEST(CheckPeerMessage, NamesWhatIsWrong) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();

  absl::Status s = CheckPeerMessage(Message(0, 1, std::vector<float>(10)), 12);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(),
              HasSubstr("peer message has 10 values, expected 12"));

  s = CheckPeerMessage(Message(0, 1, {0, 1, 2, nan}), 4);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("peer message value 3 is not finite"));

  s = CheckPeerMessage(Message(0, 1, {0, static_cast<float>(-inf)}), 2);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("value 1 is not finite"));

  s = CheckPeerMessage(Message(0, -1, {0, 1}), 2);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(),
              HasSubstr("peer message weight -1 is not a positive finite "
                        "number"));

  for (double w : {0.0, -0.0, inf, -inf, std::nan("")}) {
    s = CheckPeerMessage(Message(0, w, {0, 1}), 2);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << w;
    EXPECT_THAT(s.message(), HasSubstr("weight")) << w;
  }
}

// Messages that must be refused by both Absorb implementations.
std::vector<PeerMessage> BadMessages() {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  return {
      Message(1, 0.25, {1, 2}),                           // too few values
      Message(1, 0.25, {1, 2, 3, 4}),                     // too many
      Message(1, 0.25, {1, nan, 3}),                      // NaN value
      Message(1, 0.25, {1, 2, static_cast<float>(inf)}),  // infinite value
      Message(1, 0, {1, 2, 3}),                           // zero weight
      Message(1, -0.25, {1, 2, 3}),                       // negative weight
      Message(1, inf, {1, 2, 3}),                         // infinite weight
      Message(1, std::nan(""), {1, 2, 3}),                // NaN weight
  };
}

TEST(GoSgdState, RejectsBadMessagesAndStaysUnchanged) {
  GoSgdState state({0.5f, -1.25f, 3.0f}, 0.125);
  for (const PeerMessage& m : BadMessages()) {
    const absl::Status s = state.Absorb(m);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_THAT(state.x(), ElementsAre(0.5f, -1.25f, 3.0f));
    EXPECT_EQ(state.alpha(), 0.125);
  }
}

TEST(PushSumState, RejectsBadMessagesAndStaysUnchanged) {
  PushSumState state({0.5f, -1.25f, 3.0f}, 0.75);
  for (const PeerMessage& m : BadMessages()) {
    const absl::Status s = state.Absorb(m);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_THAT(state.x(), ElementsAre(0.5f, -1.25f, 3.0f));
    EXPECT_EQ(state.weight(), 0.75);
  }
}

TEST(PushSumState, SplitRejectsBadFractionsAndStaysUnchanged) {
  const std::vector<std::vector<std::pair<uint32_t, double>>> bad = {
      {{1, 0.0}},
      {{1, 1.0}},
      {{1, -0.1}},
      {{1, 1.5}},
      {{1, std::nan("")}},
      {{1, std::numeric_limits<double>::infinity()}},
      {{1, 0.5}, {2, 0.5}},            // sum == 1
      {{1, 0.3}, {2, 0.4}, {3, 0.4}},  // sum > 1
      {{1, 0.25}, {2, 0.0}},           // a good share before a bad one
  };
  PushSumState state({2.0f, 4.0f}, 1.5);
  for (const auto& shares : bad) {
    auto out = state.Split(shares, 0, 7);
    EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument)
        << out.status();
    EXPECT_THAT(state.x(), ElementsAre(2.0f, 4.0f));
    EXPECT_EQ(state.weight(), 1.5);
  }
}

// ---------------------------------------------------------------------------
// GoSGD.

TEST(GoSgdState, AbsorbIsTheWeightedAverage) {
  GoSgdState state({1.0f, 2.0f}, 0.25);
  ASSERT_TRUE(state.Absorb(Message(3, 0.75, {3.0f, 6.0f})).ok());
  // (0.25 * 1 + 0.75 * 3) / 1 = 2.5; (0.25 * 2 + 0.75 * 6) / 1 = 5.
  EXPECT_THAT(state.x(), ElementsAre(2.5f, 5.0f));
  EXPECT_EQ(state.alpha(), 1.0);
}

TEST(GoSgdState, PushHalvesTheWeightAndCarriesTheParameters) {
  GoSgdState state({1.0f, -2.0f}, 0.25);
  const PeerMessage m = state.MakePush(5, 42);
  EXPECT_EQ(m.from, 5u);
  EXPECT_EQ(m.step, 42);
  EXPECT_EQ(m.weight, 0.125);
  EXPECT_THAT(m.values, ElementsAre(1.0f, -2.0f));
  EXPECT_EQ(state.alpha(), 0.125);
  EXPECT_THAT(state.x(), ElementsAre(1.0f, -2.0f));
  // Taking back an undelivered push restores the state.
  ASSERT_TRUE(state.Absorb(m).ok());
  EXPECT_EQ(state.alpha(), 0.25);
  EXPECT_THAT(state.x(), ElementsAre(1.0f, -2.0f));
}

// A federation of M GoSGD workers over an unreliable network: messages wait
// in queues and are absorbed late and out of order; some pushes fail and are
// taken back by their sender some steps later. With `gradients`, every worker
// also moves its x (the weighted sum then changes, the weights must not).
void RunGoSgdFederation(bool gradients) {
  constexpr int kWorkers = 8;
  constexpr size_t kSize = 50;
  constexpr int kSteps = 2000;
  TestRng rng(gradients ? 11 : 12);
  std::vector<GoSgdState> workers;
  for (int i = 0; i < kWorkers; ++i) {
    workers.emplace_back(rng.Vector(kSize, 0.5, 1.5), 1.0 / kWorkers);
  }
  std::vector<std::vector<PeerMessage>> queue(kWorkers);
  std::vector<std::vector<PeerMessage>> undelivered(kWorkers);

  auto weighted_sum = [&] {
    std::vector<double> sum(kSize, 0.0);
    auto add = [&](double a, const std::vector<float>& x) {
      for (size_t k = 0; k < kSize; ++k) sum[k] += a * x[k];
    };
    for (const GoSgdState& w : workers) add(w.alpha(), w.x());
    for (const auto* qs : {&queue, &undelivered}) {
      for (const auto& q : *qs) {
        for (const PeerMessage& m : q) add(m.weight, m.values);
      }
    }
    return sum;
  };
  auto total_weight = [&] {
    double sum = 0;
    for (const GoSgdState& w : workers) sum += w.alpha();
    for (const auto* qs : {&queue, &undelivered}) {
      for (const auto& q : *qs) {
        for (const PeerMessage& m : q) sum += m.weight;
      }
    }
    return sum;
  };

  const std::vector<double> initial = weighted_sum();
  int absorbed = 0, pushed = 0, failed = 0, reclaimed = 0;
  size_t max_in_flight = 0;
  double worst_relative = 0;
  for (int step = 0; step < kSteps; ++step) {
    for (int i = 0; i < kWorkers; ++i) {
      GoSgdState& w = workers[i];
      DeliverSome(&rng, &queue[i], 0.5, [&](const PeerMessage& m) {
        ASSERT_TRUE(w.Absorb(m).ok());
        ++absorbed;
      });
      DeliverSome(&rng, &undelivered[i], 0.3, [&](const PeerMessage& m) {
        ASSERT_TRUE(w.Absorb(m).ok());
        ++reclaimed;
      });
      if (gradients) {
        for (float& v : *w.mutable_x()) {
          v -= static_cast<float>(0.01 * (rng.Uniform() - 0.5));
        }
      }
      if (rng.Chance(0.5)) {
        PeerMessage m = w.MakePush(static_cast<uint32_t>(i), step);
        ++pushed;
        size_t peer = rng.Below(kWorkers - 1);
        if (peer >= static_cast<size_t>(i)) ++peer;
        if (rng.Chance(0.1)) {
          undelivered[i].push_back(std::move(m));
          ++failed;
        } else {
          queue[peer].push_back(std::move(m));
        }
      }
    }
    size_t in_flight = 0;
    for (int i = 0; i < kWorkers; ++i) {
      in_flight += queue[i].size() + undelivered[i].size();
    }
    max_in_flight = std::max(max_in_flight, in_flight);

    ASSERT_NEAR(total_weight(), 1.0, 1e-12) << "step " << step;
    if (!gradients) {
      const std::vector<double> now = weighted_sum();
      for (size_t k = 0; k < kSize; ++k) {
        const double rel = std::abs(now[k] - initial[k]) / std::abs(initial[k]);
        worst_relative = std::max(worst_relative, rel);
        ASSERT_LT(rel, 1e-5) << "step " << step << " element " << k;
      }
    }
  }
  // The run exercised what it claims to.
  EXPECT_GT(absorbed, 1000);
  EXPECT_GT(pushed, 1000);
  EXPECT_GT(failed, 50);
  EXPECT_GT(reclaimed, 50);
  EXPECT_GT(max_in_flight, 5u);
  for (const GoSgdState& w : workers) {
    EXPECT_GT(w.alpha(), 0);
    for (float v : w.x()) EXPECT_TRUE(std::isfinite(v));
  }
  if (!gradients) {
    ::testing::Test::RecordProperty("worst_relative_drift",
                                    absl::StrCat(worst_relative));
  }
}

TEST(GoSgdState, FederationConservesTotalWeight) {
  RunGoSgdFederation(/*gradients=*/true);
}

TEST(GoSgdState, FederationConservesWeightedSumWithoutGradients) {
  RunGoSgdFederation(/*gradients=*/false);
}

// ---------------------------------------------------------------------------
// Push-sum and SGP.

TEST(PushSumState, SplitSharesTheCurrentNumeratorAndWeight) {
  PushSumState state({2.0f, 4.0f}, 1.0);
  auto out = state.Split({{1, 0.25}, {3, 0.5}}, 6, 9);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), 2u);
  EXPECT_EQ((*out)[0].first, 1u);
  EXPECT_EQ((*out)[0].second.from, 6u);
  EXPECT_EQ((*out)[0].second.step, 9);
  EXPECT_EQ((*out)[0].second.weight, 0.25);
  EXPECT_THAT((*out)[0].second.values, ElementsAre(0.5f, 1.0f));
  EXPECT_EQ((*out)[1].first, 3u);
  EXPECT_EQ((*out)[1].second.weight, 0.5);
  EXPECT_THAT((*out)[1].second.values, ElementsAre(1.0f, 2.0f));
  EXPECT_THAT(state.x(), ElementsAre(0.5f, 1.0f));
  EXPECT_EQ(state.weight(), 0.25);
  EXPECT_THAT(state.Debiased(), ElementsAre(2.0f, 4.0f));

  // Absorbing everything back restores the state.
  for (const auto& [to, m] : *out) ASSERT_TRUE(state.Absorb(m).ok());
  EXPECT_THAT(state.x(), ElementsAre(2.0f, 4.0f));
  EXPECT_EQ(state.weight(), 1.0);
}

TEST(PushSumState, SplitWithNoSharesKeepsEverything) {
  PushSumState state({2.0f, 4.0f}, 0.5);
  auto out = state.Split({}, 0, 0);
  ASSERT_TRUE(out.ok());
  EXPECT_TRUE(out->empty());
  EXPECT_THAT(state.x(), ElementsAre(2.0f, 4.0f));
  EXPECT_EQ(state.weight(), 0.5);
  std::vector<float> z = {9.0f};
  state.Debiased(&z);
  EXPECT_THAT(z, ElementsAre(4.0f, 8.0f));
}

// SGP over an unreliable network, as for GoSGD above: shares wait in queues,
// arrive late and out of order, and some are taken back by their sender.
TEST(PushSumState, FederationConservesWeightAndNumerator) {
  constexpr int kWorkers = 8;
  constexpr size_t kSize = 50;
  constexpr int kSteps = 2000;
  for (SgpTopology topology : {SgpTopology::kExponential, SgpTopology::kRandom,
                               SgpTopology::kComplete}) {
    SCOPED_TRACE(SgpTopologyName(topology));
    TestRng rng(21 + static_cast<int>(topology));
    std::vector<PushSumState> workers;
    for (int i = 0; i < kWorkers; ++i) {
      workers.emplace_back(rng.Vector(kSize, 0.5, 1.5));
    }
    std::vector<std::vector<PeerMessage>> queue(kWorkers);
    std::vector<std::vector<PeerMessage>> undelivered(kWorkers);
    auto totals = [&](std::vector<double>* x) {
      x->assign(kSize, 0.0);
      double w = 0;
      auto add = [&](double weight, const std::vector<float>& values) {
        w += weight;
        for (size_t k = 0; k < kSize; ++k) (*x)[k] += values[k];
      };
      for (const PushSumState& s : workers) add(s.weight(), s.x());
      for (const auto* qs : {&queue, &undelivered}) {
        for (const auto& q : *qs) {
          for (const PeerMessage& m : q) add(m.weight, m.values);
        }
      }
      return w;
    };
    std::vector<double> initial;
    ASSERT_DOUBLE_EQ(totals(&initial), kWorkers);

    int absorbed = 0, failed = 0, reclaimed = 0;
    for (int step = 0; step < kSteps; ++step) {
      for (int i = 0; i < kWorkers; ++i) {
        PushSumState& s = workers[i];
        DeliverSome(&rng, &queue[i], 0.5, [&](const PeerMessage& m) {
          ASSERT_TRUE(s.Absorb(m).ok());
          ++absorbed;
        });
        DeliverSome(&rng, &undelivered[i], 0.3, [&](const PeerMessage& m) {
          ASSERT_TRUE(s.Absorb(m).ok());
          ++reclaimed;
        });
        auto out = s.Split(
            SgpOutShares(topology, kWorkers, i, step, /*seed=*/7, /*degree=*/2),
            static_cast<uint32_t>(i), step);
        ASSERT_TRUE(out.ok()) << out.status();
        for (auto& [to, m] : *out) {
          if (rng.Chance(0.1)) {
            undelivered[i].push_back(std::move(m));
            ++failed;
          } else {
            queue[to].push_back(std::move(m));
          }
        }
      }
      std::vector<double> now;
      ASSERT_NEAR(totals(&now), kWorkers, 1e-9) << "step " << step;
      for (size_t k = 0; k < kSize; ++k) {
        ASSERT_NEAR(now[k], initial[k], 1e-4 * std::abs(initial[k]))
            << "step " << step << " element " << k;
      }
    }
    EXPECT_GT(absorbed, 5000);
    EXPECT_GT(failed, 500);
    EXPECT_GT(reclaimed, 500);
  }
}

// Whether every worker reaches every other through the graph of `shares`.
bool StronglyConnected(
    const std::vector<std::vector<std::pair<uint32_t, double>>>& shares) {
  const size_t n = shares.size();
  for (size_t start = 0; start < n; ++start) {
    std::vector<bool> seen(n, false);
    std::vector<size_t> stack = {start};
    seen[start] = true;
    while (!stack.empty()) {
      const size_t at = stack.back();
      stack.pop_back();
      for (const auto& [to, f] : shares[at]) {
        if (!seen[to]) {
          seen[to] = true;
          stack.push_back(to);
        }
      }
    }
    for (bool s : seen) {
      if (!s) return false;
    }
  }
  return true;
}

// Synchronous SGP without gradients on a fixed or time-varying graph: every
// worker's de-biased model converges to the average of the initial ones.
TEST(PushSumState, DebiasedModelsConvergeToTheAverage) {
  constexpr int kWorkers = 8;
  constexpr size_t kSize = 16;
  constexpr uint64_t kSeed = 42;
  constexpr int kDegree = 2;

  std::vector<std::vector<std::pair<uint32_t, double>>> random_graph;
  for (int i = 0; i < kWorkers; ++i) {
    random_graph.push_back(
        SgpOutShares(SgpTopology::kRandom, kWorkers, i, 0, kSeed, kDegree));
  }
  // Push-sum cannot average over anything less.
  ASSERT_TRUE(StronglyConnected(random_graph));

  const std::vector<std::pair<SgpTopology, int>> cases = {
      {SgpTopology::kRandom, kDegree},
      {SgpTopology::kRandom, 1},  // just the random cycle
      {SgpTopology::kComplete, kDegree},
      {SgpTopology::kExponential, kDegree}};
  for (const auto& [topology, degree] : cases) {
    SCOPED_TRACE(testing::Message()
                 << SgpTopologyName(topology) << " degree " << degree);
    TestRng rng(99);
    std::vector<PushSumState> workers;
    std::vector<double> average(kSize, 0.0);
    for (int i = 0; i < kWorkers; ++i) {
      workers.emplace_back(rng.Vector(kSize, -1.0, 1.0));
      for (size_t k = 0; k < kSize; ++k) {
        average[k] += workers.back().x()[k] / kWorkers;
      }
    }
    for (int step = 0; step < 200; ++step) {
      std::vector<std::pair<uint32_t, PeerMessage>> sent;
      for (int i = 0; i < kWorkers; ++i) {
        auto out = workers[i].Split(
            SgpOutShares(topology, kWorkers, i, step, kSeed, degree),
            static_cast<uint32_t>(i), step);
        ASSERT_TRUE(out.ok()) << out.status();
        for (auto& s : *out) sent.push_back(std::move(s));
      }
      for (const auto& [to, m] : sent) {
        ASSERT_TRUE(workers[to].Absorb(m).ok());
      }
      // The one-peer exponential graph over 2^3 workers averages exactly in
      // three steps: each worker's weight stays 1.
      if (topology == SgpTopology::kExponential && step == 2) {
        for (const PushSumState& w : workers) {
          EXPECT_DOUBLE_EQ(w.weight(), 1.0);
          for (size_t k = 0; k < kSize; ++k) {
            EXPECT_NEAR(w.Debiased()[k], average[k], 1e-6);
          }
        }
      }
    }
    for (int i = 0; i < kWorkers; ++i) {
      const std::vector<float> z = workers[i].Debiased();
      ASSERT_EQ(z.size(), kSize);
      for (size_t k = 0; k < kSize; ++k) {
        EXPECT_NEAR(z[k], average[k], 1e-4) << "worker " << i << " k " << k;
      }
    }
  }
}

TEST(SgpOutShares, ExponentialCyclesThroughPowersOfTwo) {
  std::vector<uint32_t> to;
  for (int64_t step = 0; step < 4; ++step) {
    const auto shares =
        SgpOutShares(SgpTopology::kExponential, 8, 0, step, 0, 1);
    ASSERT_EQ(shares.size(), 1u);
    EXPECT_EQ(shares[0].second, 0.5);
    to.push_back(shares[0].first);
  }
  EXPECT_THAT(to, ElementsAre(1u, 2u, 4u, 1u));

  // Worker 6 of 8 wraps around; 5 workers use offsets 1, 2, 4.
  EXPECT_EQ(SgpOutShares(SgpTopology::kExponential, 8, 6, 2, 0, 1)[0].first,
            2u);
  to.clear();
  for (int64_t step = 0; step < 4; ++step) {
    to.push_back(
        SgpOutShares(SgpTopology::kExponential, 5, 3, step, 0, 1)[0].first);
  }
  EXPECT_THAT(to, ElementsAre(4u, 0u, 2u, 4u));
  // Two workers: always the other one.
  for (int64_t step = 0; step < 3; ++step) {
    EXPECT_EQ(
        SgpOutShares(SgpTopology::kExponential, 2, 1, step, 0, 1)[0].first, 0u);
  }
}

TEST(SgpOutShares, CompleteSendsOneNthToEveryOther) {
  const auto shares = SgpOutShares(SgpTopology::kComplete, 4, 2, 5, 0, 1);
  ASSERT_EQ(shares.size(), 3u);
  EXPECT_EQ(shares[0], std::make_pair(0u, 0.25));
  EXPECT_EQ(shares[1], std::make_pair(1u, 0.25));
  EXPECT_EQ(shares[2], std::make_pair(3u, 0.25));
}

TEST(SgpOutShares, SharesAreValidAndTheMixingMatrixColumnStochastic) {
  for (SgpTopology topology : {SgpTopology::kExponential, SgpTopology::kRandom,
                               SgpTopology::kComplete}) {
    for (int n : {1, 2, 3, 5, 8, 16}) {
      for (int degree : {1, 2, 3, 20}) {
        for (uint64_t seed : {0ull, 1ull, 0xdeadbeefcafef00dull}) {
          for (int64_t step : {0, 1, 2, 3, 17}) {
            SCOPED_TRACE(testing::Message()
                         << SgpTopologyName(topology) << " n=" << n
                         << " degree=" << degree << " seed=" << seed
                         << " step=" << step);
            // mixing[j][i]: the fraction of i's (x, w) that j gets.
            std::vector<std::vector<double>> mixing(
                n, std::vector<double>(n, 0.0));
            for (int i = 0; i < n; ++i) {
              const auto shares =
                  SgpOutShares(topology, n, i, step, seed, degree);
              if (n == 1) EXPECT_TRUE(shares.empty());
              if (topology == SgpTopology::kRandom) {
                EXPECT_EQ(shares.size(),
                          static_cast<size_t>(std::min(degree, n - 1)));
              }
              std::set<uint32_t> seen;
              double sum = 0;
              for (const auto& [to, f] : shares) {
                EXPECT_LT(to, static_cast<uint32_t>(n));
                EXPECT_NE(to, static_cast<uint32_t>(i));
                EXPECT_TRUE(seen.insert(to).second) << "repeated " << to;
                EXPECT_GT(f, 0);
                sum += f;
                if (to < static_cast<uint32_t>(n)) mixing[to][i] += f;
              }
              EXPECT_LT(sum, 1);
              mixing[i][i] = 1 - sum;
            }
            for (int i = 0; i < n; ++i) {
              double column = 0;
              for (int j = 0; j < n; ++j) {
                EXPECT_GE(mixing[j][i], 0);
                column += mixing[j][i];
              }
              EXPECT_NEAR(column, 1.0, 1e-12) << "column " << i;
            }
          }
        }
      }
    }
  }
}

// Independent random destinations would often leave a worker that nobody
// sends to (its weight then decays to 0); every graph here must average.
TEST(SgpOutShares, RandomGraphIsStronglyConnected) {
  for (int n = 2; n <= 16; ++n) {
    for (int degree : {1, 2, 3}) {
      for (uint64_t seed = 0; seed < 50; ++seed) {
        std::vector<std::vector<std::pair<uint32_t, double>>> graph;
        for (int i = 0; i < n; ++i) {
          graph.push_back(
              SgpOutShares(SgpTopology::kRandom, n, i, 0, seed, degree));
        }
        ASSERT_TRUE(StronglyConnected(graph))
            << "n=" << n << " degree=" << degree << " seed=" << seed;
      }
    }
  }
}

TEST(SgpOutShares, RandomGraphIsFixedPerSeed) {
  constexpr int kWorkers = 8;
  bool seeds_differ = false;
  for (int i = 0; i < kWorkers; ++i) {
    const auto first = SgpOutShares(SgpTopology::kRandom, kWorkers, i, 0, 1, 3);
    for (int64_t step : {1, 2, 1000}) {
      EXPECT_EQ(SgpOutShares(SgpTopology::kRandom, kWorkers, i, step, 1, 3),
                first);
    }
    if (SgpOutShares(SgpTopology::kRandom, kWorkers, i, 0, 2, 3) != first) {
      seeds_differ = true;
    }
  }
  EXPECT_TRUE(seeds_differ);
  EXPECT_TRUE(SgpOutShares(SgpTopology::kRandom, kWorkers, 0, 0, 1, 0).empty());
}

TEST(ParseSgpTopology, RoundTripsNamesAndRejectsOthers) {
  for (SgpTopology t : {SgpTopology::kExponential, SgpTopology::kRandom,
                        SgpTopology::kComplete}) {
    auto parsed = ParseSgpTopology(SgpTopologyName(t));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, t);
  }
  EXPECT_STREQ(SgpTopologyName(SgpTopology::kExponential), "exponential");
  EXPECT_STREQ(SgpTopologyName(SgpTopology::kRandom), "random");
  EXPECT_STREQ(SgpTopologyName(SgpTopology::kComplete), "complete");
  for (const char* bad : {"ring", "", "Random", "complete "}) {
    auto parsed = ParseSgpTopology(bad);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument)
        << bad;
  }
  EXPECT_THAT(ParseSgpTopology("ring").status().message(), HasSubstr("ring"));
}

// ---------------------------------------------------------------------------
// EASGD.

TEST(ElasticExchange, MatchesAHandComputedStep) {
  std::vector<float> x = {1.0f, 2.0f, 3.0f};
  std::vector<float> center = {0.0f, 4.0f, 3.0f};
  auto diff = ElasticExchange(&x, center, 0.25);
  ASSERT_TRUE(diff.ok()) << diff.status();
  EXPECT_THAT(*diff, ElementsAre(0.25f, -0.5f, 0.0f));
  EXPECT_THAT(x, ElementsAre(0.75f, 2.5f, 3.0f));
  for (size_t k = 0; k < center.size(); ++k) center[k] += (*diff)[k];
  EXPECT_THAT(center, ElementsAre(0.25f, 3.5f, 3.0f));
}

TEST(ElasticExchange, RejectsBadInputAndLeavesXUnchanged) {
  std::vector<float> x = {1.0f, 2.0f, 3.0f};
  auto diff = ElasticExchange(&x, {0.0f, 4.0f}, 0.25);
  EXPECT_EQ(diff.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(x, ElementsAre(1.0f, 2.0f, 3.0f));
  for (double alpha : {0.0, 1.0, -0.25, 1.5, std::nan(""),
                       std::numeric_limits<double>::infinity()}) {
    diff = ElasticExchange(&x, {0.0f, 4.0f, 3.0f}, alpha);
    EXPECT_EQ(diff.status().code(), absl::StatusCode::kInvalidArgument)
        << alpha;
    EXPECT_THAT(x, ElementsAre(1.0f, 2.0f, 3.0f));
  }
  diff = ElasticExchange(nullptr, {0.0f}, 0.25);
  EXPECT_EQ(diff.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(DefaultElasticAlpha, IsBetaOverWorkersTimesPeriod) {
  EXPECT_EQ(DefaultElasticAlpha(0.9, 8, 4), 0.9 / 32);
  EXPECT_EQ(DefaultElasticAlpha(0.9, 1, 1), 0.9);
}

// ---------------------------------------------------------------------------
// Noisy links.

std::vector<float> Noise(size_t n, double stddev, uint64_t seed,
                         uint32_t stream, uint64_t counter) {
  std::vector<float> v(n, 0.0f);
  AddGaussianNoise(&v, stddev, seed, stream, counter);
  return v;
}

TEST(AddGaussianNoise, IsDeterministicPerKey) {
  const std::vector<float> a = Noise(1001, 1.0, 5, 3, 17);
  EXPECT_TRUE(SameBits(a, Noise(1001, 1.0, 5, 3, 17)));
  // Element k depends on the key and k only, not on the vector's size.
  const std::vector<float> prefix = Noise(7, 1.0, 5, 3, 17);
  EXPECT_TRUE(SameBits(prefix, std::vector<float>(a.begin(), a.begin() + 7)));

  // Another counter, stream or seed gives other noise.
  for (const std::vector<float>& other :
       {Noise(1001, 1.0, 5, 3, 18), Noise(1001, 1.0, 5, 4, 17),
        Noise(1001, 1.0, 6, 3, 17)}) {
    int same = 0;
    for (size_t k = 0; k < a.size(); ++k) same += Bits(a[k]) == Bits(other[k]);
    EXPECT_LT(same, 5);
  }
  // The noise is added to the values there.
  std::vector<float> base(1001, 10.0f);
  AddGaussianNoise(&base, 1.0, 5, 3, 17);
  for (size_t k = 0; k < base.size(); ++k) {
    EXPECT_NEAR(base[k] - 10.0f, a[k], 1e-5);
  }
}

TEST(AddGaussianNoise, ZeroStddevIsTheIdentity) {
  TestRng rng(3);
  const std::vector<float> v = rng.Vector(100, -5, 5);
  std::vector<float> w = v;
  AddGaussianNoise(&w, 0.0, 5, 3, 17);
  EXPECT_TRUE(SameBits(v, w));
}

TEST(AddGaussianNoise, HasTheRequestedMeanAndStddev) {
  constexpr size_t kN = 100000;
  constexpr double kStddev = 2.0;
  const std::vector<float> v = Noise(kN, kStddev, 123, 0, 1);
  double sum = 0, sum_sq = 0;
  size_t within_one_sigma = 0;
  for (float x : v) {
    ASSERT_TRUE(std::isfinite(x));
    sum += x;
    sum_sq += static_cast<double>(x) * x;
    within_one_sigma += std::abs(x) < kStddev;
  }
  const double mean = sum / kN;
  const double stddev = std::sqrt(sum_sq / kN - mean * mean);
  EXPECT_NEAR(mean, 0.0, 5 * kStddev / std::sqrt(kN));
  EXPECT_NEAR(stddev, kStddev, 0.05 * kStddev);
  // A normal has 68.3% of its mass within one sigma (a uniform of the same
  // variance 57.7%).
  EXPECT_NEAR(static_cast<double>(within_one_sigma) / kN, 0.6827, 0.01);
}

}  // namespace
}  // namespace fedfwd
