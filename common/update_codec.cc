#include "common/update_codec.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace fedfwd {
namespace {

static_assert(sizeof(float) == 4 && std::numeric_limits<float>::is_iec559,
              "updates are IEEE float32");

// More than any model we could hold; keeps byte counts far from overflow.
constexpr int64_t kMaxUpdateValues = int64_t{1} << 40;

// Byte-wise little-endian access: correct on any host, and compilers turn
// it into plain loads and stores on little-endian ones.
inline void StoreLe16(uint16_t v, unsigned char* p) {
  p[0] = static_cast<unsigned char>(v);
  p[1] = static_cast<unsigned char>(v >> 8);
}
inline uint16_t LoadLe16(const unsigned char* p) {
  return static_cast<uint16_t>(p[0] | (p[1] << 8));
}
inline void StoreLeFloat(float f, unsigned char* p) {
  uint32_t v;
  std::memcpy(&v, &f, 4);
  p[0] = static_cast<unsigned char>(v);
  p[1] = static_cast<unsigned char>(v >> 8);
  p[2] = static_cast<unsigned char>(v >> 16);
  p[3] = static_cast<unsigned char>(v >> 24);
}
inline float LoadLeFloat(const unsigned char* p) {
  const uint32_t v = uint32_t{p[0]} | (uint32_t{p[1]} << 8) |
                     (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
  float f;
  std::memcpy(&f, &v, 4);
  return f;
}

// Total number of values, or InvalidArgument for a negative or absurd size.
absl::StatusOr<int64_t> TotalValues(const std::vector<int64_t>& sizes) {
  int64_t total = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    if (sizes[i] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("update tensor ", i, " has negative size ", sizes[i]));
    }
    if (sizes[i] > kMaxUpdateValues - total) {
      return absl::InvalidArgumentError(absl::StrCat(
          "update sizes sum to more than ", kMaxUpdateValues, " values"));
    }
    total += sizes[i];
  }
  return total;
}

}  // namespace

uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00u;  // NaN stays NaN (quiet)
  // 65520 is the midpoint between 65504 (the largest binary16) and 65536;
  // round-to-nearest-even would give inf from there on: saturate instead.
  if (abs >= 0x477ff000u) return sign | 0x7bffu;
  if (abs >= 0x38800000u) {  // >= 2^-14: normal binary16
    // Rebias the exponent (127 -> 15) and keep the top 10 mantissa bits; a
    // carry out of the mantissa correctly bumps the exponent.
    uint32_t h = ((abs - 0x38000000u) >> 13);
    const uint32_t rest = abs & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
    return static_cast<uint16_t>(sign | h);
  }
  // Subnormal binary16: h * 2^-24. 2^-25 itself is a tie and rounds to 0.
  if (abs <= 0x33000000u) return sign;
  const uint32_t exp = abs >> 23;  // 102..112 here
  const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
  // value = mant * 2^(exp-150) = (mant >> shift) * 2^-24
  const uint32_t shift = 126u - exp;  // 14..24
  uint32_t h = mant >> shift;
  const uint32_t rest = mant & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1u);
  if (rest > half || (rest == half && (h & 1u))) ++h;  // may reach 2^-14
  return static_cast<uint16_t>(sign | h);
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = uint32_t{h & 0x8000u} << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  uint32_t x;
  if (exp == 0x1f) {
    x = sign | 0x7f800000u | (mant << 13);  // inf or NaN
  } else if (exp != 0) {
    x = sign | ((exp + 112u) << 23) | (mant << 13);
  } else {
    // Zero or subnormal: mant * 2^-24, exact in float32.
    const float v = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -v : v;
  }
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

absl::StatusOr<UpdateEncoding> ParseUpdateEncoding(const std::string& name) {
  if (name == "none") return UpdateEncoding::kFloat32;
  if (name == "fp16") return UpdateEncoding::kFloat16;
  if (name == "int8") return UpdateEncoding::kInt8;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown update encoding \"", name,
                   "\"; expected one of: none, fp16, int8"));
}

const char* UpdateEncodingName(UpdateEncoding e) {
  switch (e) {
    case UpdateEncoding::kFloat32:
      return "none";
    case UpdateEncoding::kFloat16:
      return "fp16";
    case UpdateEncoding::kInt8:
      return "int8";
  }
  return "unknown";
}

int64_t EncodedUpdateBytes(UpdateEncoding e,
                           const std::vector<int64_t>& sizes) {
  int64_t total = 0;
  for (int64_t s : sizes) total += s;
  switch (e) {
    case UpdateEncoding::kFloat32:
      return total * 4;
    case UpdateEncoding::kFloat16:
      return total * 2;
    case UpdateEncoding::kInt8:
      return total + 4 * static_cast<int64_t>(sizes.size());
  }
  return 0;
}

absl::StatusOr<std::string> EncodeUpdate(const float* values,
                                         const std::vector<int64_t>& sizes,
                                         UpdateEncoding e) {
  auto total = TotalValues(sizes);
  if (!total.ok()) return total.status();
  const int64_t n = *total;
  if (n > 0 && values == nullptr) {
    return absl::InvalidArgumentError("update values are null");
  }
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(values[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("update value at index ", i, " is not finite (",
                       values[i], "); refusing to encode"));
    }
  }
  std::string out(static_cast<size_t>(EncodedUpdateBytes(e, sizes)), '\0');
  auto* p = reinterpret_cast<unsigned char*>(&out[0]);
  switch (e) {
    case UpdateEncoding::kFloat32:
      for (int64_t i = 0; i < n; ++i) StoreLeFloat(values[i], p + 4 * i);
      break;
    case UpdateEncoding::kFloat16:
      for (int64_t i = 0; i < n; ++i) {
        StoreLe16(FloatToHalf(values[i]), p + 2 * i);
      }
      break;
    case UpdateEncoding::kInt8: {
      const float* x = values;
      for (int64_t size : sizes) {
        float max_abs = 0;
        for (int64_t i = 0; i < size; ++i) {
          max_abs = std::max(max_abs, std::fabs(x[i]));
        }
        const float scale = max_abs / 127.0f;
        StoreLeFloat(scale, p);
        p += 4;
        for (int64_t i = 0; i < size; ++i) {
          int q = 0;
          if (scale > 0) {
            // The quotient in double, so float rounding of x / scale does
            // not move values across a .5 boundary.
            const double r =
                std::round(static_cast<double>(x[i]) / scale);  // half away
            q = static_cast<int>(std::max(-127.0, std::min(127.0, r)));
          }
          p[i] = static_cast<unsigned char>(static_cast<int8_t>(q));
        }
        p += size;
        x += size;
      }
      break;
    }
  }
  return out;
}

absl::StatusOr<std::vector<float>> DecodeUpdate(
    const std::string& bytes, const std::vector<int64_t>& sizes,
    UpdateEncoding e) {
  auto total = TotalValues(sizes);
  if (!total.ok()) return total.status();
  const int64_t n = *total;
  const int64_t expected = EncodedUpdateBytes(e, sizes);
  if (static_cast<int64_t>(bytes.size()) != expected) {
    return absl::InvalidArgumentError(
        absl::StrCat(UpdateEncodingName(e), " update has ", bytes.size(),
                     " bytes; expected ", expected, " for ", sizes.size(),
                     " tensors of ", n, " values"));
  }
  std::vector<float> out(static_cast<size_t>(n));
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  auto not_finite = [&](int64_t i) {
    return absl::InvalidArgumentError(
        absl::StrCat(UpdateEncodingName(e), " update value at index ", i,
                     " is not finite (", out[i], ")"));
  };
  switch (e) {
    case UpdateEncoding::kFloat32:
      for (int64_t i = 0; i < n; ++i) {
        out[i] = LoadLeFloat(p + 4 * i);
        if (!std::isfinite(out[i])) return not_finite(i);
      }
      break;
    case UpdateEncoding::kFloat16:
      for (int64_t i = 0; i < n; ++i) {
        out[i] = HalfToFloat(LoadLe16(p + 2 * i));
        if (!std::isfinite(out[i])) return not_finite(i);
      }
      break;
    case UpdateEncoding::kInt8: {
      int64_t base = 0;
      for (size_t t = 0; t < sizes.size(); ++t) {
        const float scale = LoadLeFloat(p);
        p += 4;
        if (!std::isfinite(scale) || !(scale >= 0)) {
          return absl::InvalidArgumentError(
              absl::StrCat("int8 update tensor ", t, " has invalid scale ",
                           scale, " (must be finite and >= 0)"));
        }
        for (int64_t i = 0; i < sizes[t]; ++i) {
          const int q = static_cast<int8_t>(p[i]);
          if (q == -128) {
            return absl::InvalidArgumentError(absl::StrCat(
                "int8 update value at index ", base + i,
                " is -128, outside the encoding's range [-127, 127]"));
          }
          out[base + i] = static_cast<float>(q) * scale;
          if (!std::isfinite(out[base + i])) return not_finite(base + i);
        }
        p += sizes[t];
        base += sizes[t];
      }
      break;
    }
  }
  return out;
}

}  // namespace fedfwd
