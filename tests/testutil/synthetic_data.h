// Test data on disk: a small, learnable MNIST-shaped dataset in raw IDX
// format, and temporary folders. For unit and integration tests only.
#ifndef FEDFWD_TESTS_TESTUTIL_SYNTHETIC_DATA_H_
#define FEDFWD_TESTS_TESTUTIL_SYNTHETIC_DATA_H_

#include <cstdint>
#include <string>

namespace fedfwd {
namespace testing {

// Writes train-images-idx3-ubyte, train-labels-idx1-ubyte,
// t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (uncompressed IDX) into
// `dir` (created if needed) and returns `dir`. The data has 10 balanced
// classes of 28x28 images: class k lights its own pair of 7x7 blocks on a
// 4x4 grid of blocks, plus uniform noise, so a small model learns it in a
// few hundred steps. Deterministic in `seed`; train and test differ.
// Returns an empty string if a file cannot be written.
std::string WriteSyntheticMnist(const std::string& dir, int64_t train,
                                int64_t test, uint64_t seed);

// Creates a fresh folder under $TMPDIR (or /tmp) whose name starts with
// `prefix` and returns its path. The caller removes it.
std::string MakeTempDir(const std::string& prefix);

}  // namespace testing
}  // namespace fedfwd

#endif  // FEDFWD_TESTS_TESTUTIL_SYNTHETIC_DATA_H_
