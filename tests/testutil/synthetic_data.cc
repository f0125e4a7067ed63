#include "tests/testutil/synthetic_data.h"

#include <stdlib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

namespace fedfwd {
namespace testing {
namespace {

constexpr int kSide = 28;
constexpr int kBlock = 7;
constexpr int kClasses = 10;

// SplitMix64: a small deterministic generator independent of the code under
// test.
class SplitMix {
 public:
  explicit SplitMix(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  uint64_t Below(uint64_t n) { return Next() % n; }

 private:
  uint64_t state_;
};

void PutU32(std::string* out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) {
    out->push_back(static_cast<char>((v >> shift) & 0xff));
  }
}

bool WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.flush();
  return static_cast<bool>(out);
}

// One split: balanced labels in a seeded order; class k lights block k of
// the 4x4 grid of 7x7 blocks brightly, the rest is dim noise.
bool WriteSplit(const std::string& dir, const std::string& prefix, int64_t n,
                uint64_t seed) {
  SplitMix rng(seed);
  std::vector<uint8_t> labels(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    labels[i] = static_cast<uint8_t>(i % kClasses);
  for (int64_t i = n - 1; i > 0; --i) {
    std::swap(labels[i], labels[rng.Below(static_cast<uint64_t>(i + 1))]);
  }

  std::string images;
  images.reserve(16 + static_cast<size_t>(n) * kSide * kSide);
  PutU32(&images, 0x00000803u);
  PutU32(&images, static_cast<uint32_t>(n));
  PutU32(&images, kSide);
  PutU32(&images, kSide);
  for (int64_t i = 0; i < n; ++i) {
    const int block = labels[i];
    const int br = block / 4, bc = block % 4;
    for (int r = 0; r < kSide; ++r) {
      for (int c = 0; c < kSide; ++c) {
        const bool lit = r / kBlock == br && c / kBlock == bc;
        const uint64_t noise = rng.Below(64);
        images.push_back(static_cast<char>(lit ? 192 + noise : noise));
      }
    }
  }

  std::string label_bytes;
  PutU32(&label_bytes, 0x00000801u);
  PutU32(&label_bytes, static_cast<uint32_t>(n));
  label_bytes.append(labels.begin(), labels.end());

  return WriteFile(dir + "/" + prefix + "-images-idx3-ubyte", images) &&
         WriteFile(dir + "/" + prefix + "-labels-idx1-ubyte", label_bytes);
}

}  // namespace

std::string WriteSyntheticMnist(const std::string& dir, int64_t train,
                                int64_t test, uint64_t seed) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return "";
  if (!WriteSplit(dir, "train", train, seed * 2 + 1)) return "";
  if (!WriteSplit(dir, "t10k", test, seed * 2 + 2)) return "";
  return dir;
}

std::string MakeTempDir(const std::string& prefix) {
  const char* env = getenv("TMPDIR");
  std::string base = env != nullptr && env[0] != '\0' ? env : "/tmp";
  std::string tmpl = base + "/" + prefix + "XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr) return "";
  return std::string(buf.data());
}

}  // namespace testing
}  // namespace fedfwd
