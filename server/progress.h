// The coordinator's progress lines, as pure functions of the numbers (so a
// unit test pins their text). The plain line is what fedfwd-run streams and
// what scripts parse: its beginning ("round R/N  loss L  test_acc A ...")
// stays as it has always been; newer fields go at its end. The live line is
// the shorter one a terminal shows rewritten in place.
#ifndef FEDFWD_SERVER_PROGRESS_H_
#define FEDFWD_SERVER_PROGRESS_H_

#include <cstdint>
#include <optional>
#include <string>

namespace fedfwd {

struct RoundProgress {
  int64_t round = 0;
  int64_t rounds = 0;
  double loss = 0;                 // this round's mean training loss
  std::optional<double> test_acc;  // this round's, when evaluated
  bool regression = false;         // test_acc is R^2: shown "test_r2"
  double last_test_acc = -1;       // latest evaluation (-1: none yet)
  int64_t last_test_round = -1;    // its round (-1: unknown)
  int clients = 0;                 // results merged this round
  double wall_s = 0;               // since the first round started
  double rounds_per_s = 0;
  double eta_s = -1;     // -1 (or not finite): unknown
  int64_t bytes_up = 0;  // all rounds so far
  int64_t bytes_down = 0;
};

// "H:MM:SS", or "?" for a negative or non-finite duration.
std::string FormatDuration(double seconds);

// "round 20/50  loss 0.4123  test_acc 0.8512  clients 3  12.3 rounds/s
// elapsed 0:00:01  eta 0:00:02  up 1.55 kB  down 40.2 kB" (one line).
std::string FormatProgressLine(const RoundProgress& p);

// "round 20/50  loss 0.4123  acc 0.8512 @20  eta 0:00:02  12.3 rounds/s
// up 1.55 kB  down 40.2 kB" (one line, for the terminal).
std::string FormatLiveProgress(const RoundProgress& p);

}  // namespace fedfwd

#endif  // FEDFWD_SERVER_PROGRESS_H_
