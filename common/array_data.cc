#include "common/array_data.h"

#include <zip.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/dataset.h"
#include "common/status_macros.h"

namespace fedfwd {
namespace {

namespace fs = std::filesystem;

absl::StatusOr<NpyArray> ParseOwnedNpy(std::string bytes,
                                       const std::string& name);

// A header longer than this is a corrupt file, not a data set (numpy's own
// reader refuses headers over 10000 bytes by default).
constexpr int64_t kMaxNpyHeaderBytes = int64_t{1} << 20;
// numpy 2's NPY_MAXDIMS.
constexpr size_t kMaxNpyDims = 64;
// Longest string item (|S<n>, <U<n>) accepted, in bytes.
constexpr int64_t kMaxNpyStringItem = int64_t{1} << 20;
// Deflate cannot expand data by more than about 1032:1; a member declaring
// more than this over its compressed size lies about one of the two.
constexpr uint64_t kDeflateMaxRatio = 1032;
// Labels and whole-number floats must stay exact in a double.
constexpr double kMaxExactInteger = 9007199254740992.0;  // 2^53

// A value for an error message: quoted, escaped, at most 40 characters.
std::string Quote(std::string_view s) {
  constexpr size_t kMax = 40;
  const std::string_view head = s.substr(0, kMax);
  std::string out =
      absl::CHexEscape(absl::string_view(head.data(), head.size()));
  if (s.size() > kMax) out += "...";
  return absl::StrCat("'", out, "'");
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  if (shape.size() == 1) return absl::StrCat("(", shape[0], ",)");
  return absl::StrCat("(", absl::StrJoin(shape, ", "), ")");
}

uint64_t LoadLittleEndian(const char* p, int64_t n) {
  uint64_t v = 0;
  for (int64_t i = n - 1; i >= 0; --i) {
    v = (v << 8) | static_cast<unsigned char>(p[i]);
  }
  return v;
}

double HalfToDouble(uint16_t h) {
  const int sign = (h >> 15) & 1;
  const int exponent = (h >> 10) & 0x1f;
  const int mantissa = h & 0x3ff;
  double v;
  if (exponent == 0) {
    v = std::ldexp(mantissa, -24);
  } else if (exponent == 31) {
    v = mantissa == 0 ? std::numeric_limits<double>::infinity()
                      : std::numeric_limits<double>::quiet_NaN();
  } else {
    v = std::ldexp(mantissa | 0x400, exponent - 25);
  }
  return sign ? -v : v;
}

bool IsNumericKind(char kind) {
  return kind == 'b' || kind == 'i' || kind == 'u' || kind == 'f';
}

// Element i of a numeric array as a double (int64 beyond 2^53 rounds).
double NumberAt(const NpyArray& a, int64_t i) {
  const char* p = a.data.data() + i * a.item_size;
  const uint64_t bits = LoadLittleEndian(p, a.item_size);
  switch (a.kind) {
    case 'b':
      return bits != 0 ? 1.0 : 0.0;
    case 'u':
      return static_cast<double>(bits);
    case 'i': {
      const int shift = static_cast<int>(64 - 8 * a.item_size);
      // Sign-extend through the top bits.
      const int64_t v = static_cast<int64_t>(bits << shift) >> shift;
      return static_cast<double>(v);
    }
    case 'f':
      if (a.item_size == 2) return HalfToDouble(static_cast<uint16_t>(bits));
      if (a.item_size == 4) {
        const uint32_t b32 = static_cast<uint32_t>(bits);
        float f;
        std::memcpy(&f, &b32, sizeof(f));
        return f;
      } else {
        double d;
        std::memcpy(&d, &bits, sizeof(d));
        return d;
      }
    default:
      return 0.0;
  }
}

// Element i of an integer or bool array as int64; false for a uint64 beyond
// int64's range.
bool IntegerAt(const NpyArray& a, int64_t i, int64_t* out) {
  const uint64_t bits =
      LoadLittleEndian(a.data.data() + i * a.item_size, a.item_size);
  if (a.kind == 'b') {
    *out = bits != 0 ? 1 : 0;
    return true;
  }
  if (a.kind == 'u') {
    if (bits > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return false;
    }
    *out = static_cast<int64_t>(bits);
    return true;
  }
  const int shift = static_cast<int>(64 - 8 * a.item_size);
  *out = static_cast<int64_t>(bits << shift) >> shift;
  return true;
}

// Element i of a string array (trailing NULs stripped, as numpy does);
// UCS-4 becomes UTF-8. False for a code point that is not a scalar value.
bool StringAt(const NpyArray& a, int64_t i, std::string* out) {
  const char* p = a.data.data() + i * a.item_size;
  out->clear();
  if (a.kind == 'S') {
    int64_t n = a.item_size;
    while (n > 0 && p[n - 1] == '\0') --n;
    out->assign(p, static_cast<size_t>(n));
    return true;
  }
  int64_t n = a.item_size / 4;
  while (n > 0 && LoadLittleEndian(p + 4 * (n - 1), 4) == 0) --n;
  for (int64_t k = 0; k < n; ++k) {
    const uint32_t c = static_cast<uint32_t>(LoadLittleEndian(p + 4 * k, 4));
    if (c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return false;
    if (c < 0x80) {
      out->push_back(static_cast<char>(c));
    } else if (c < 0x800) {
      out->push_back(static_cast<char>(0xc0 | (c >> 6)));
      out->push_back(static_cast<char>(0x80 | (c & 0x3f)));
    } else if (c < 0x10000) {
      out->push_back(static_cast<char>(0xe0 | (c >> 12)));
      out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3f)));
      out->push_back(static_cast<char>(0x80 | (c & 0x3f)));
    } else {
      out->push_back(static_cast<char>(0xf0 | (c >> 18)));
      out->push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3f)));
      out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3f)));
      out->push_back(static_cast<char>(0x80 | (c & 0x3f)));
    }
  }
  return true;
}

// ---- the .npy header: a Python dict literal with exactly the keys descr,
// fortran_order and shape ----

class NpyHeaderParser {
 public:
  NpyHeaderParser(std::string_view text, const std::string& name)
      : text_(text), name_(name) {}

  absl::Status Parse(std::string* descr, bool* fortran_order,
                     std::vector<int64_t>* shape) {
    SkipSpace();
    if (!Consume('{')) return Error("does not start with '{'");
    bool have_descr = false, have_fortran = false, have_shape = false;
    while (true) {
      SkipSpace();
      if (Consume('}')) break;
      std::string key;
      RETURN_IF_ERROR(ParseString(&key));
      SkipSpace();
      if (!Consume(':'))
        return Error(absl::StrCat("no ':' after ", Quote(key)));
      SkipSpace();
      if (key == "descr") {
        if (have_descr) return Error("key 'descr' appears twice");
        have_descr = true;
        if (Peek() == '[') {
          return Error(
              "structured dtypes (a list in 'descr') are not supported; save "
              "one plain array per name");
        }
        RETURN_IF_ERROR(ParseString(descr));
      } else if (key == "fortran_order") {
        if (have_fortran) return Error("key 'fortran_order' appears twice");
        have_fortran = true;
        if (ConsumeWord("True")) {
          *fortran_order = true;
        } else if (ConsumeWord("False")) {
          *fortran_order = false;
        } else {
          return Error("'fortran_order' is neither True nor False");
        }
      } else if (key == "shape") {
        if (have_shape) return Error("key 'shape' appears twice");
        have_shape = true;
        RETURN_IF_ERROR(ParseShape(shape));
      } else {
        return Error(absl::StrCat("unexpected key ", Quote(key),
                                  " (expected descr, fortran_order, shape)"));
      }
      SkipSpace();
      if (Consume(',')) continue;
      if (Consume('}')) break;
      return Error("expected ',' or '}' after a value");
    }
    for (char c : text_.substr(pos_)) {
      if (c != ' ' && c != '\n' && c != '\t' && c != '\r') {
        return Error("unexpected text after the closing '}'");
      }
    }
    if (!have_descr) return Error("no 'descr'");
    if (!have_fortran) return Error("no 'fortran_order'");
    if (!have_shape) return Error("no 'shape'");
    return absl::OkStatus();
  }

 private:
  absl::Status Error(const std::string& what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(name_, ": bad .npy header (", what, ")"));
  }
  char Peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }
  bool Consume(char c) {
    if (Peek() != c) return false;
    ++pos_;
    return true;
  }
  bool ConsumeWord(std::string_view w) {
    if (text_.substr(pos_, w.size()) != w) return false;
    pos_ += w.size();
    return true;
  }
  void SkipSpace() {
    while (pos_ < text_.size() &&
           (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' ||
            text_[pos_] == '\r')) {
      ++pos_;
    }
  }
  absl::Status ParseString(std::string* out) {
    const char quote = Peek();
    if (quote != '\'' && quote != '"') return Error("expected a quoted string");
    ++pos_;
    const size_t end = text_.find(quote, pos_);
    if (end == std::string_view::npos) return Error("unterminated string");
    std::string_view s = text_.substr(pos_, end - pos_);
    if (s.find('\\') != std::string_view::npos) {
      return Error("escapes in strings are not supported");
    }
    out->assign(s.data(), s.size());
    pos_ = end + 1;
    return absl::OkStatus();
  }
  absl::Status ParseShape(std::vector<int64_t>* shape) {
    shape->clear();
    if (!Consume('(')) return Error("'shape' is not a tuple");
    SkipSpace();
    if (Consume(')')) return absl::OkStatus();
    while (true) {
      SkipSpace();
      const size_t start = pos_;
      while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') {
        ++pos_;
      }
      if (pos_ == start) return Error("'shape' holds a non-integer");
      if (pos_ - start > 18)
        return Error("a dimension in 'shape' is too large");
      int64_t d = 0;
      std::from_chars(text_.data() + start, text_.data() + pos_, d);
      Consume('L');  // Python 2 longs in files numpy wrote long ago
      if (shape->size() == kMaxNpyDims) {
        return Error(absl::StrCat("more than ", kMaxNpyDims, " dimensions"));
      }
      shape->push_back(d);
      SkipSpace();
      if (Consume(')')) {
        // (3) is an int in Python, not a tuple.
        if (shape->size() == 1) return Error("'shape' (n) lacks the comma");
        return absl::OkStatus();
      }
      if (!Consume(',')) return Error("expected ',' or ')' in 'shape'");
      SkipSpace();
      if (Consume(')')) return absl::OkStatus();
    }
  }

  std::string_view text_;
  const std::string& name_;
  size_t pos_ = 0;
};

// Fills kind, item_size from a descr string; `big_endian` is set for '>'
// on a multi-byte type.
absl::Status ParseDescr(const std::string& descr, const std::string& name,
                        NpyArray* a, bool* big_endian) {
  auto unsupported = [&] {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": unsupported dtype ", Quote(descr),
        " (supported: |b1, integers <i1..<i8 and <u1..<u8, floats <f2 <f4 "
        "<f8, little- or big-endian; strings |S<n> and <U<n> for ids)"));
  };
  if (descr.find('O') != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": object arrays (dtype ", Quote(descr),
        ", pickled Python objects) are refused: they are never unpickled; "
        "save a numeric or string array"));
  }
  if (descr.size() < 3 || descr.size() > 10) return unsupported();
  const char order = descr[0];
  const char kind = descr[1];
  if (order != '<' && order != '>' && order != '|') return unsupported();
  int64_t n = 0;
  const char* begin = descr.data() + 2;
  const char* end = descr.data() + descr.size();
  auto [p, ec] = std::from_chars(begin, end, n);
  if (ec != std::errc() || p != end || n <= 0) return unsupported();
  int64_t unit = n;  // bytes swapped as one
  switch (kind) {
    case 'b':
      if (n != 1) return unsupported();
      break;
    case 'i':
    case 'u':
      if (n != 1 && n != 2 && n != 4 && n != 8) return unsupported();
      break;
    case 'f':
      if (n != 2 && n != 4 && n != 8) return unsupported();
      break;
    case 'S':
      unit = 1;
      break;
    case 'U':
      if (n > kMaxNpyStringItem / 4) return unsupported();
      n *= 4;
      unit = 4;
      break;
    default:
      return unsupported();
  }
  if (n > kMaxNpyStringItem) return unsupported();
  // '|' (no byte order) only where order cannot matter.
  if (order == '|' && unit != 1) return unsupported();
  a->kind = kind;
  a->item_size = n;
  *big_endian = order == '>' && unit > 1;
  return absl::OkStatus();
}

// ---- building ArrayData ----

absl::Status NeedNumeric(const NpyArray& a, const std::string& name,
                         const char* role) {
  if (IsNumericKind(a.kind)) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(name, ": ", role, " must be numbers, found strings (dtype ",
                   Quote(a.descr), ")"));
}

// The error for a non-finite or out-of-range value at flat index i.
absl::Status BadValue(const std::string& name, int64_t i, int64_t per_example,
                      double v) {
  const std::string what =
      std::isnan(v)   ? "is NaN"
      : std::isinf(v) ? "is Inf"
                      : absl::StrCat("is ", v, ", beyond float32's range");
  return absl::InvalidArgumentError(absl::StrCat(
      name, ": element ", i, " (example ", i / per_example, ") ", what));
}

// Numeric array to finite float32 values.
// Fast path of ToFloats for a little-endian host: elements read as T.
template <typename T>
absl::Status ConvertAs(const NpyArray& a, const std::string& name,
                       int64_t per_example, float* out) {
  constexpr double kMaxFloat = std::numeric_limits<float>::max();
  const char* p = a.data.data();
  for (int64_t i = 0; i < a.num_elements; ++i) {
    T v;
    std::memcpy(&v, p + i * sizeof(T), sizeof(T));
    if constexpr (std::is_floating_point_v<T>) {
      // Also refuses NaN; checked before the cast, which is undefined for
      // doubles beyond float's range.
      if (!(std::fabs(v) <= kMaxFloat)) {
        return BadValue(name, i, per_example, static_cast<double>(v));
      }
    }
    out[i] = static_cast<float>(v);
  }
  return absl::OkStatus();
}

// Numeric array to finite float32 values.
absl::Status ToFloats(const NpyArray& a, const std::string& name,
                      int64_t per_example, std::vector<float>* out) {
  out->resize(static_cast<size_t>(a.num_elements));
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  float* dst = out->data();
  switch (a.kind == 'b' ? 0 : a.kind * 16 + static_cast<int>(a.item_size)) {
    case 'f' * 16 + 4:
      return ConvertAs<float>(a, name, per_example, dst);
    case 'f' * 16 + 8:
      return ConvertAs<double>(a, name, per_example, dst);
    case 'u' * 16 + 1:
      return ConvertAs<uint8_t>(a, name, per_example, dst);
    case 'i' * 16 + 1:
      return ConvertAs<int8_t>(a, name, per_example, dst);
    case 'i' * 16 + 4:
      return ConvertAs<int32_t>(a, name, per_example, dst);
    case 'i' * 16 + 8:
      return ConvertAs<int64_t>(a, name, per_example, dst);
    default:
      break;
  }
#endif
  constexpr double kMaxFloat = std::numeric_limits<float>::max();
  for (int64_t i = 0; i < a.num_elements; ++i) {
    const double v = NumberAt(a, i);
    if (!(std::fabs(v) <= kMaxFloat)) {
      return BadValue(name, i, per_example, v);
    }
    (*out)[static_cast<size_t>(i)] = static_cast<float>(v);
  }
  return absl::OkStatus();
}

// Distinct names sorted byte-wise; labels[i] = rank of names[i].
void NamesToLabels(const std::vector<std::string>& names,
                   std::vector<int64_t>* labels,
                   std::vector<std::string>* class_names) {
  *class_names = names;
  std::sort(class_names->begin(), class_names->end());
  class_names->erase(std::unique(class_names->begin(), class_names->end()),
                     class_names->end());
  labels->resize(names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    (*labels)[i] =
        std::lower_bound(class_names->begin(), class_names->end(), names[i]) -
        class_names->begin();
  }
}

absl::Status FillLabels(const NpyArray& y, const std::string& name,
                        ArrayData* out) {
  const int64_t n = out->size;
  if (!(y.shape.size() == 1 || (y.shape.size() == 2 && y.shape[1] == 1))) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": class labels need shape (n,) or (n, 1), found ",
                     ShapeString(y.shape),
                     " (for several float targets use task regression)"));
  }
  if (y.kind == 'S' || y.kind == 'U') {
    std::vector<std::string> names(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      if (!StringAt(y, i, &names[static_cast<size_t>(i)])) {
        return absl::InvalidArgumentError(absl::StrCat(
            name, ": label ", i, " holds an invalid unicode code point"));
      }
      if (names[static_cast<size_t>(i)].empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(name, ": label ", i, " is an empty string"));
      }
    }
    NamesToLabels(names, &out->labels, &out->class_names);
    return absl::OkStatus();
  }
  out->labels.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    int64_t label;
    if (y.kind == 'f') {
      const double v = NumberAt(y, i);
      if (!std::isfinite(v) || v != std::floor(v) ||
          std::fabs(v) > kMaxExactInteger) {
        return absl::InvalidArgumentError(absl::StrCat(
            name, ": label ", i, " is ", v,
            ", not a whole number (class labels are integers; for float "
            "targets use task regression)"));
      }
      label = static_cast<int64_t>(v);
    } else if (!IntegerAt(y, i, &label)) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": label ", i, " is beyond int64's range"));
    }
    if (label < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ": label ", i, " is ", label, "; labels must be >= 0"));
    }
    out->labels[static_cast<size_t>(i)] = label;
  }
  return absl::OkStatus();
}

absl::Status FillIds(const NpyArray& ids, const std::string& name,
                     ArrayData* out) {
  if (ids.shape.size() != 1 || ids.shape[0] != out->size) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": ids need shape (",
                                                   out->size, ",), found ",
                                                   ShapeString(ids.shape)));
  }
  if (ids.kind == 'f' || ids.kind == 'b') {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": ids must be integers or strings, found dtype ",
                     Quote(ids.descr)));
  }
  out->ids.resize(static_cast<size_t>(out->size));
  for (int64_t i = 0; i < out->size; ++i) {
    std::string& id = out->ids[static_cast<size_t>(i)];
    if (ids.kind == 'i' || ids.kind == 'u') {
      if (ids.kind == 'u') {
        id = absl::StrCat(LoadLittleEndian(ids.data.data() + i * ids.item_size,
                                           ids.item_size));
      } else {
        int64_t v;
        IntegerAt(ids, i, &v);
        id = absl::StrCat(v);
      }
      continue;
    }
    if (!StringAt(ids, i, &id)) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ": id ", i, " holds an invalid unicode code point"));
    }
    if (id.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": id ", i, " is an empty string"));
    }
  }
  return absl::OkStatus();
}

// ---- .npz through libzip ----

struct ZipDiscard {
  void operator()(zip_t* z) const { zip_discard(z); }
};
struct ZipFileClose {
  void operator()(zip_file_t* f) const { zip_fclose(f); }
};
using ZipPtr = std::unique_ptr<zip_t, ZipDiscard>;

std::string ZipErrorString(int code) {
  zip_error_t error;
  zip_error_init_with_code(&error, code);
  std::string msg = zip_error_strerror(&error);
  zip_error_fini(&error);
  return msg;
}

// "x.npy, y.npy" for an error message.
std::string MemberList(zip_t* za) {
  std::vector<std::string> names;
  const zip_int64_t n = zip_get_num_entries(za, 0);
  for (zip_int64_t i = 0; i < n && i < 50; ++i) {
    const char* member = zip_get_name(za, static_cast<zip_uint64_t>(i), 0);
    if (member != nullptr) names.push_back(Quote(member));
  }
  if (n > 50) names.push_back("...");
  return names.empty() ? "none" : absl::StrJoin(names, ", ");
}

// The bytes of one member, after checking its declared sizes.
absl::StatusOr<std::string> ReadMember(zip_t* za, zip_uint64_t index,
                                       const std::string& where) {
  zip_stat_t st;
  zip_stat_init(&st);
  if (zip_stat_index(za, index, 0, &st) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": ", zip_strerror(za)));
  }
  constexpr zip_uint64_t kNeed = ZIP_STAT_SIZE | ZIP_STAT_COMP_SIZE |
                                 ZIP_STAT_COMP_METHOD |
                                 ZIP_STAT_ENCRYPTION_METHOD;
  if ((st.valid & kNeed) != kNeed) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": the zip entry lacks its sizes or method"));
  }
  if (st.encryption_method != ZIP_EM_NONE) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": encrypted members are not supported"));
  }
  if (st.comp_method != ZIP_CM_STORE && st.comp_method != ZIP_CM_DEFLATE) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": compression method ", st.comp_method,
        " is not supported (only stored and deflated members, what "
        "np.savez and np.savez_compressed write)"));
  }
  if (st.size > kMaxNpzMemberBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": declares ", st.size,
        " uncompressed bytes, more than the limit of ", kMaxNpzMemberBytes));
  }
  if (st.comp_method == ZIP_CM_STORE && st.size != st.comp_size) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": stored member declares ", st.size, " bytes but ",
                     st.comp_size, " compressed bytes"));
  }
  if (st.comp_method == ZIP_CM_DEFLATE &&
      st.size > st.comp_size * kDeflateMaxRatio + 1024) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": declares ", st.size, " bytes from ", st.comp_size,
        " compressed bytes, more than deflate can produce (a zip bomb?)"));
  }
  std::unique_ptr<zip_file_t, ZipFileClose> file(zip_fopen_index(za, index, 0));
  if (file == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": ", zip_strerror(za)));
  }
  std::string out;
  // Grown as data arrives, so a header that lies about the size costs no
  // more memory than the data that is really there.
  constexpr zip_uint64_t kChunk = 1 << 20;
  out.reserve(
      static_cast<size_t>(std::min<zip_uint64_t>(st.size, 64 * kChunk)));
  zip_uint64_t got = 0;
  while (got < st.size) {
    const zip_uint64_t want = std::min<zip_uint64_t>(st.size - got, kChunk);
    out.resize(static_cast<size_t>(got + want));
    const zip_int64_t n = zip_fread(file.get(), out.data() + got, want);
    if (n < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": ", zip_file_strerror(file.get())));
    }
    if (n == 0) break;
    got += static_cast<zip_uint64_t>(n);
  }
  out.resize(static_cast<size_t>(got));
  if (got != st.size) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": holds ", got, " bytes, declares ", st.size));
  }
  // Reading past the end checks the CRC and that nothing follows.
  char extra;
  const zip_int64_t n = zip_fread(file.get(), &extra, 1);
  if (n < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": ", zip_file_strerror(file.get())));
  }
  if (n > 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": inflates to more than the declared ", st.size, " bytes"));
  }
  return out;
}

// Array `array` ("<array>.npy") of the archive; `found` false (and no
// error) when it is absent and `optional`.
absl::StatusOr<NpyArray> ReadNpzArray(zip_t* za, const std::string& archive,
                                      const std::string& array, bool optional,
                                      bool* found) {
  const std::string member = array + ".npy";
  const zip_int64_t index = zip_name_locate(za, member.c_str(), 0);
  *found = index >= 0;
  if (index < 0) {
    if (optional) return NpyArray();
    return absl::InvalidArgumentError(
        absl::StrCat(archive, " has no array ", Quote(array), " (member ",
                     Quote(member), "); its members are: ", MemberList(za)));
  }
  const std::string where = absl::StrCat(archive, ":", member);
  ASSIGN_OR_RETURN(std::string bytes,
                   ReadMember(za, static_cast<zip_uint64_t>(index), where));
  return ParseOwnedNpy(std::move(bytes), where);
}

absl::StatusOr<ArrayData> ReadNpzArchive(zip_t* za, const std::string& archive,
                                         const NpzNames& names,
                                         ArrayTask task) {
  if (names.features.empty() || names.labels.empty()) {
    return absl::InvalidArgumentError(
        "NpzNames: the features and labels arrays need names");
  }
  bool found;
  ASSIGN_OR_RETURN(NpyArray x,
                   ReadNpzArray(za, archive, names.features, false, &found));
  ASSIGN_OR_RETURN(NpyArray y,
                   ReadNpzArray(za, archive, names.labels, false, &found));
  NpyArray ids;
  bool have_ids = false;
  if (!names.ids.empty()) {
    ASSIGN_OR_RETURN(ids, ReadNpzArray(za, archive, names.ids, true, &found));
    have_ids = found;
  }
  return ArrayDataFromNpy(x, absl::StrCat(archive, ":", names.features, ".npy"),
                          y, absl::StrCat(archive, ":", names.labels, ".npy"),
                          have_ids ? &ids : nullptr,
                          absl::StrCat(archive, ":", names.ids, ".npy"), task);
}

// ---- CSV ----

bool IsSpace(char c) { return c == ' ' || c == '\t'; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

enum class NumberParse { kOk, kNotANumber, kOutOfRange };

// A decimal or scientific number with optional surrounding spaces and an
// optional leading '+'; locale-independent. "nan" and "inf" parse (and are
// refused by the caller, with their own message).
NumberParse ParseNumber(std::string_view s, double* out) {
  s = Trim(s);
  if (s.size() > 1 && s[0] == '+' && s[1] != '-' && s[1] != '+') {
    s.remove_prefix(1);
  }
  if (s.empty()) return NumberParse::kNotANumber;
  const char* end = s.data() + s.size();
  auto [p, ec] = std::from_chars(s.data(), end, *out);
  if (p != end) return NumberParse::kNotANumber;
  if (ec == std::errc::result_out_of_range) {
    // Too small for a double (1e-400, 0.000...1) is zero, as strtod has it;
    // too large is an error.
    const bool negative = s[0] == '-';
    std::string_view digits = s.substr(negative ? 1 : 0);
    const size_t e = digits.find_first_of("eE");
    const bool underflow =
        e != std::string_view::npos
            ? e + 1 < digits.size() && digits[e + 1] == '-'
            : !digits.empty() && (digits[0] == '0' || digits[0] == '.');
    if (!underflow) return NumberParse::kOutOfRange;
    *out = negative ? -0.0 : 0.0;
    return NumberParse::kOk;
  }
  if (ec != std::errc()) return NumberParse::kNotANumber;
  return NumberParse::kOk;
}

// Splits CSV text into records (RFC 4180). Field views point into the text,
// or into storage owned by the reader (fields with doubled quotes) that
// lives until the next call.
class CsvReader {
 public:
  CsvReader(std::string_view text, const std::string& name)
      : text_(text), name_(name) {}

  // The next record into `fields`, its first line into `line` and whether it
  // was a blank line into `blank`. false at the end of the text.
  absl::StatusOr<bool> Next(std::vector<std::string_view>* fields,
                            int64_t* line, bool* blank) {
    if (pos_ >= text_.size()) return false;
    fields->clear();
    unescaped_.clear();
    *line = line_;
    *blank = false;
    bool quoted = false;
    while (true) {
      std::string_view field;
      quoted = false;
      if (text_[pos_] == '"') {
        quoted = true;
        const int64_t open_line = line_;
        size_t start = ++pos_;
        bool escaped = false;
        size_t end;
        while (true) {
          const size_t q = text_.find('"', pos_);
          if (q == std::string_view::npos) {
            return absl::InvalidArgumentError(absl::StrCat(
                name_, " line ", open_line, ", field ", fields->size() + 1,
                ": a quoted field is not closed"));
          }
          line_ += std::count(text_.begin() + pos_, text_.begin() + q, '\n');
          if (q + 1 < text_.size() && text_[q + 1] == '"') {
            escaped = true;
            pos_ = q + 2;
            continue;
          }
          end = q;
          pos_ = q + 1;
          break;
        }
        field = text_.substr(start, end - start);
        if (escaped) {
          std::string& s = unescaped_.emplace_back();
          s.reserve(field.size());
          for (size_t i = 0; i < field.size(); ++i) {
            s.push_back(field[i]);
            if (field[i] == '"') ++i;  // the second of a doubled quote
          }
          field = s;
        }
        // Only a separator or a line end may follow the closing quote.
        if (pos_ < text_.size() && text_[pos_] == '\r' &&
            pos_ + 1 < text_.size() && text_[pos_ + 1] == '\n') {
          ++pos_;
        } else if (pos_ + 1 == text_.size() && text_[pos_] == '\r') {
          ++pos_;
        }
        if (pos_ < text_.size() && text_[pos_] != ',' && text_[pos_] != '\n') {
          return absl::InvalidArgumentError(
              absl::StrCat(name_, " line ", line_, ", field ",
                           fields->size() + 1, ": text after a closing quote"));
        }
      } else {
        const size_t start = pos_;
        while (pos_ < text_.size() && text_[pos_] != ',' &&
               text_[pos_] != '\n') {
          if (text_[pos_] == '"') {
            return absl::InvalidArgumentError(absl::StrCat(
                name_, " line ", line_, ", field ", fields->size() + 1,
                ": a quote inside an unquoted field (quote the whole field "
                "and double the quote)"));
          }
          ++pos_;
        }
        field = text_.substr(start, pos_ - start);
        // The CR of a CRLF line end.
        if ((pos_ == text_.size() || text_[pos_] == '\n') && !field.empty() &&
            field.back() == '\r') {
          field.remove_suffix(1);
        }
      }
      fields->push_back(field);
      if (pos_ >= text_.size()) break;
      if (text_[pos_] == ',') {
        ++pos_;
        if (pos_ == text_.size()) {
          fields->push_back(std::string_view());  // "a,b," ends in an empty
          break;
        }
        continue;
      }
      // '\n'
      ++pos_;
      ++line_;
      break;
    }
    *blank = fields->size() == 1 && !quoted && fields->front().empty();
    return true;
  }

 private:
  std::string_view text_;
  const std::string& name_;
  size_t pos_ = 0;
  int64_t line_ = 1;
  std::deque<std::string> unescaped_;
};

enum class Role { kFeature, kLabel, kTarget, kId, kDrop };

}  // namespace

// ---- ArrayData ----

absl::Status CheckArrayData(const ArrayData& data) {
  auto bad = [](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("ArrayData: ", what));
  };
  if (data.size < 0) return bad("negative size");
  int64_t per = 1;
  for (int64_t d : data.feature_shape) {
    if (d < 1) return bad("a feature dimension below 1");
    if (per > std::numeric_limits<int64_t>::max() / d) {
      return bad("feature shape overflows");
    }
    per *= d;
  }
  if (data.size > 0 && per > std::numeric_limits<int64_t>::max() / data.size) {
    return bad("feature count overflows");
  }
  if (static_cast<int64_t>(data.features.size()) != data.size * per) {
    return bad(absl::StrCat(data.features.size(), " features for ", data.size,
                            " examples of ", per));
  }
  for (size_t i = 0; i < data.features.size(); ++i) {
    if (!std::isfinite(data.features[i])) {
      return bad(absl::StrCat("feature ", i, " is not finite"));
    }
  }
  const bool classification = !data.labels.empty();
  const bool regression = !data.targets.empty() || data.target_dim > 0;
  if (classification == regression && data.size > 0) {
    return bad("exactly one of labels and targets must be set");
  }
  if (classification) {
    if (static_cast<int64_t>(data.labels.size()) != data.size) {
      return bad(absl::StrCat(data.labels.size(), " labels for ", data.size,
                              " examples"));
    }
    for (size_t i = 0; i < data.labels.size(); ++i) {
      if (data.labels[i] < 0) return bad(absl::StrCat("label ", i, " < 0"));
      if (!data.class_names.empty() &&
          data.labels[i] >= static_cast<int64_t>(data.class_names.size())) {
        return bad(absl::StrCat("label ", i, " has no class name"));
      }
    }
  } else if (!data.class_names.empty()) {
    return bad("class names without labels");
  }
  if (regression) {
    if (data.target_dim < 1) return bad("target_dim below 1");
    if (data.target_dim > std::numeric_limits<int64_t>::max() /
                              std::max<int64_t>(data.size, 1) ||
        static_cast<int64_t>(data.targets.size()) !=
            data.size * data.target_dim) {
      return bad(absl::StrCat(data.targets.size(), " targets for ", data.size,
                              " examples of ", data.target_dim));
    }
    for (size_t i = 0; i < data.targets.size(); ++i) {
      if (!std::isfinite(data.targets[i])) {
        return bad(absl::StrCat("target ", i, " is not finite"));
      }
    }
  }
  if (!data.ids.empty() && static_cast<int64_t>(data.ids.size()) != data.size) {
    return bad(
        absl::StrCat(data.ids.size(), " ids for ", data.size, " examples"));
  }
  return absl::OkStatus();
}

ArrayData Subset(const ArrayData& data, const std::vector<int64_t>& indices) {
  ArrayData out;
  out.feature_shape = data.feature_shape;
  out.target_dim = data.target_dim;
  out.class_names = data.class_names;
  out.size = static_cast<int64_t>(indices.size());
  const size_t per = data.size > 0 ? data.features.size() / data.size : 0;
  out.features.reserve(indices.size() * per);
  for (int64_t i : indices) {
    const auto k = static_cast<size_t>(i);
    out.features.insert(out.features.end(), data.features.begin() + k * per,
                        data.features.begin() + (k + 1) * per);
    if (!data.labels.empty()) out.labels.push_back(data.labels[k]);
    if (!data.targets.empty()) {
      const auto t = static_cast<size_t>(data.target_dim);
      out.targets.insert(out.targets.end(), data.targets.begin() + k * t,
                         data.targets.begin() + (k + 1) * t);
    }
    if (!data.ids.empty()) out.ids.push_back(data.ids[k]);
  }
  return out;
}

// ---- NumPy ----

namespace {

// ParseNpy on bytes it may keep: the payload stays where it is (a large
// array is not copied).
absl::StatusOr<NpyArray> ParseOwnedNpy(std::string bytes,
                                       const std::string& name) {
  static constexpr char kMagic[] = "\x93NUMPY";
  constexpr size_t kMagicLen = 6;
  if (bytes.size() < kMagicLen + 2 ||
      bytes.compare(0, kMagicLen, kMagic, kMagicLen) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": not a .npy file (no \\x93NUMPY magic at the start)"));
  }
  const int major = static_cast<unsigned char>(bytes[6]);
  const int minor = static_cast<unsigned char>(bytes[7]);
  if (major < 1 || major > 3 || minor != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": .npy format version ", major, ".", minor,
                     " is not supported (1.0, 2.0 and 3.0 are)"));
  }
  const size_t len_bytes = major == 1 ? 2 : 4;
  if (bytes.size() < kMagicLen + 2 + len_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": truncated .npy header"));
  }
  const uint64_t header_len =
      LoadLittleEndian(bytes.data() + kMagicLen + 2, len_bytes);
  const size_t header_start = kMagicLen + 2 + len_bytes;
  if (header_len > static_cast<uint64_t>(kMaxNpyHeaderBytes)) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": .npy header of ", header_len,
        " bytes is longer than the limit of ", kMaxNpyHeaderBytes));
  }
  if (bytes.size() - header_start < header_len) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": truncated .npy header (", header_len, " bytes declared, ",
        bytes.size() - header_start, " present)"));
  }
  const std::string_view header(bytes.data() + header_start,
                                static_cast<size_t>(header_len));
  NpyArray a;
  bool fortran_order = false;
  RETURN_IF_ERROR(
      NpyHeaderParser(header, name).Parse(&a.descr, &fortran_order, &a.shape));
  bool big_endian = false;
  RETURN_IF_ERROR(ParseDescr(a.descr, name, &a, &big_endian));
  if (fortran_order) {
    return absl::InvalidArgumentError(absl::StrCat(
        name,
        ": fortran_order True (column-major) is not supported; save "
        "np.ascontiguousarray(a) instead"));
  }
  // Elements and payload bytes, refusing products that overflow.
  const uint64_t kLimit = static_cast<uint64_t>(bytes.size());
  uint64_t count = 1;
  bool too_big = false;
  for (int64_t d : a.shape) {
    if (d == 0) {
      count = 0;
      too_big = false;
      break;
    }
    if (too_big) continue;
    if (count > kLimit / static_cast<uint64_t>(d)) {
      too_big = true;
      continue;
    }
    count *= static_cast<uint64_t>(d);
  }
  const size_t payload_start = header_start + static_cast<size_t>(header_len);
  const uint64_t actual = bytes.size() - payload_start;
  if (too_big || count > kLimit / static_cast<uint64_t>(a.item_size)) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": truncated: shape ", ShapeString(a.shape), " of ",
                     a.descr, " needs more bytes than the file's ",
                     bytes.size(), " (", actual, " bytes of data present)"));
  }
  const uint64_t expected = count * static_cast<uint64_t>(a.item_size);
  if (actual < expected) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": truncated: shape ", ShapeString(a.shape), " of ", a.descr,
        " needs ", expected, " bytes of data, found ", actual));
  }
  if (actual > expected) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": ", actual - expected, " bytes after the data (shape ",
        ShapeString(a.shape), " of ", a.descr, " needs ", expected, ")"));
  }
  a.num_elements = static_cast<int64_t>(count);
  bytes.erase(0, payload_start);
  a.data = std::move(bytes);
  if (big_endian) {
    const int64_t unit = a.kind == 'U' ? 4 : a.item_size;
    for (size_t i = 0; i + unit <= a.data.size(); i += unit) {
      std::reverse(a.data.begin() + i, a.data.begin() + i + unit);
    }
  }
  return a;
}

}  // namespace

absl::StatusOr<NpyArray> ParseNpy(const std::string& bytes,
                                  const std::string& name) {
  return ParseOwnedNpy(bytes, name);
}

absl::StatusOr<NpyArray> LoadNpy(const std::string& path) {
  ASSIGN_OR_RETURN(std::string bytes, ReadWholeFile(path));
  return ParseOwnedNpy(std::move(bytes), path);
}

absl::StatusOr<ArrayTask> ParseArrayTask(std::string_view name) {
  if (name == "auto") return ArrayTask::kAuto;
  if (name == "classification") return ArrayTask::kClassification;
  if (name == "regression") return ArrayTask::kRegression;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown task ", Quote(name),
                   " (expected auto, classification or regression)"));
}

absl::StatusOr<ArrayData> ArrayDataFromNpy(
    const NpyArray& x, const std::string& x_name, const NpyArray& y,
    const std::string& y_name, const NpyArray* ids, const std::string& ids_name,
    ArrayTask task) {
  if (x.shape.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(x_name,
                     ": features need at least one dimension (the examples), "
                     "found a 0-d array"));
  }
  if (y.shape.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(y_name,
                     ": labels or targets need at least one dimension (the "
                     "examples), found a 0-d array"));
  }
  if (x.shape[0] != y.shape[0]) {
    return absl::InvalidArgumentError(absl::StrCat(
        "features and labels disagree on the number of examples: ", x_name,
        " has ", x.shape[0], " (shape ", ShapeString(x.shape), "), ", y_name,
        " has ", y.shape[0], " (shape ", ShapeString(y.shape), ")"));
  }
  ArrayData out;
  out.size = x.shape[0];
  if (out.size == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        x_name, ": no examples (shape ", ShapeString(x.shape), ")"));
  }
  RETURN_IF_ERROR(NeedNumeric(x, x_name, "features"));
  out.feature_shape.assign(x.shape.begin() + 1, x.shape.end());
  if (out.feature_shape.empty()) out.feature_shape = {1};
  for (int64_t d : out.feature_shape) {
    if (d == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(x_name, ": an example has no features (shape ",
                       ShapeString(x.shape), ")"));
    }
  }
  const int64_t per_example = x.num_elements / out.size;
  RETURN_IF_ERROR(ToFloats(x, x_name, per_example, &out.features));

  bool classification;
  switch (task) {
    case ArrayTask::kClassification:
      classification = true;
      break;
    case ArrayTask::kRegression:
      classification = false;
      RETURN_IF_ERROR(NeedNumeric(y, y_name, "regression targets"));
      break;
    default:
      classification = y.kind != 'f';
  }
  if (classification) {
    RETURN_IF_ERROR(FillLabels(y, y_name, &out));
  } else {
    out.target_dim = y.num_elements / out.size;
    if (out.target_dim == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(y_name, ": an example has no targets (shape ",
                       ShapeString(y.shape), ")"));
    }
    RETURN_IF_ERROR(ToFloats(y, y_name, out.target_dim, &out.targets));
  }
  if (ids != nullptr) RETURN_IF_ERROR(FillIds(*ids, ids_name, &out));
  return out;
}

absl::StatusOr<ArrayData> LoadNpyPair(const std::string& features_path,
                                      const std::string& labels_path,
                                      ArrayTask task,
                                      const std::string& ids_path) {
  ASSIGN_OR_RETURN(NpyArray x, LoadNpy(features_path));
  ASSIGN_OR_RETURN(NpyArray y, LoadNpy(labels_path));
  NpyArray ids;
  if (!ids_path.empty()) {
    ASSIGN_OR_RETURN(ids, LoadNpy(ids_path));
  }
  return ArrayDataFromNpy(x, features_path, y, labels_path,
                          ids_path.empty() ? nullptr : &ids, ids_path, task);
}

absl::StatusOr<ArrayData> LoadNpz(const std::string& path,
                                  const NpzNames& names, ArrayTask task) {
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    return absl::NotFoundError(absl::StrCat("file not found: ", path));
  }
  if (!fs::is_regular_file(path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat("expected a file: ", path));
  }
  int code = 0;
  ZipPtr za(zip_open(path.c_str(), ZIP_RDONLY | ZIP_CHECKCONS, &code));
  if (za == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": not a readable .npz (zip) archive: ", ZipErrorString(code)));
  }
  return ReadNpzArchive(za.get(), path, names, task);
}

absl::StatusOr<ArrayData> ParseNpz(const std::string& bytes,
                                   const std::string& name,
                                   const NpzNames& names, ArrayTask task) {
  zip_error_t error;
  zip_error_init(&error);
  zip_source_t* source =
      zip_source_buffer_create(bytes.data(), bytes.size(), 0, &error);
  if (source == nullptr) {
    std::string msg = zip_error_strerror(&error);
    zip_error_fini(&error);
    return absl::InternalError(absl::StrCat(name, ": ", msg));
  }
  ZipPtr za(zip_open_from_source(source, ZIP_RDONLY | ZIP_CHECKCONS, &error));
  if (za == nullptr) {
    zip_source_free(source);
    std::string msg = zip_error_strerror(&error);
    zip_error_fini(&error);
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": not a readable .npz (zip) archive: ", msg));
  }
  zip_error_fini(&error);
  return ReadNpzArchive(za.get(), name, names, task);
}

// ---- CSV ----

absl::StatusOr<ArrayData> ParseCsv(const std::string& text,
                                   const std::string& name,
                                   const CsvOptions& options) {
  const bool classification = !options.label_column.empty();
  if (classification == !options.target_columns.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name,
                     ": name either a label column (classification) or target "
                     "columns (regression), not ",
                     classification ? "both" : "neither"));
  }
  std::string_view body(text);
  if (body.substr(0, 3) == "\xEF\xBB\xBF") body.remove_prefix(3);
  CsvReader reader(body, name);
  std::vector<std::string_view> fields;
  int64_t line = 0;
  bool blank = false;

  // The header: the first record that is not a blank line.
  bool have_header = false;
  while (true) {
    ASSIGN_OR_RETURN(bool more, reader.Next(&fields, &line, &blank));
    if (!more) break;
    if (blank) continue;
    have_header = true;
    break;
  }
  if (!have_header) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " is empty (a header row is required)"));
  }
  const int64_t header_line = line;
  std::vector<std::string> columns;
  for (std::string_view f : fields) columns.emplace_back(Trim(f));
  const size_t num_columns = columns.size();
  auto column_list = [&] {
    std::vector<std::string> quoted;
    for (const auto& c : columns) quoted.push_back(Quote(c));
    return absl::StrJoin(quoted, ", ");
  };
  // Roles from the options, each column named once.
  std::vector<Role> roles(num_columns, Role::kFeature);
  std::vector<int64_t> target_slot(num_columns, -1);
  std::vector<bool> named(num_columns, false);
  auto find = [&](const std::string& column,
                  const char* what) -> absl::StatusOr<size_t> {
    const auto it = std::find(columns.begin(), columns.end(), column);
    if (it == columns.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": no ", what, " column ", Quote(column),
                       "; columns are: ", column_list()));
    }
    const size_t c = static_cast<size_t>(it - columns.begin());
    if (named[c]) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ": column ", Quote(column), " is named twice in the options"));
    }
    named[c] = true;
    return c;
  };
  for (size_t i = 0; i < num_columns; ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (columns[j] == columns[i]) {
        return absl::InvalidArgumentError(absl::StrCat(
            name, " line ", header_line, ": duplicate column name ",
            Quote(columns[i]), " (columns ", j + 1, " and ", i + 1, ")"));
      }
    }
  }
  if (classification) {
    ASSIGN_OR_RETURN(size_t c, find(options.label_column, "label"));
    roles[c] = Role::kLabel;
  }
  for (size_t t = 0; t < options.target_columns.size(); ++t) {
    ASSIGN_OR_RETURN(size_t c, find(options.target_columns[t], "target"));
    roles[c] = Role::kTarget;
    target_slot[c] = static_cast<int64_t>(t);
  }
  if (!options.id_column.empty()) {
    ASSIGN_OR_RETURN(size_t c, find(options.id_column, "id"));
    roles[c] = Role::kId;
  }
  for (const std::string& drop : options.drop_columns) {
    ASSIGN_OR_RETURN(size_t c, find(drop, "dropped"));
    roles[c] = Role::kDrop;
  }
  int64_t num_features = 0;
  for (size_t c = 0; c < num_columns; ++c) {
    if (roles[c] != Role::kFeature) continue;
    if (columns[c].empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, " line ", header_line, ": column ", c + 1,
                       " has no name (an index written by pandas? write with "
                       "index=False, or drop the column \"\")"));
    }
    ++num_features;
  }
  if (num_features == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        name,
        ": no feature columns (every column is the label, a target, "
        "the id or dropped); columns are: ",
        column_list()));
  }

  ArrayData out;
  out.feature_shape = {num_features};
  if (!classification) {
    out.target_dim = static_cast<int64_t>(options.target_columns.size());
  }
  // Labels: numbers or names, decided by the first row.
  enum class LabelMode { kUnknown, kNumbers, kNames };
  LabelMode mode = LabelMode::kUnknown;
  int64_t mode_line = 0;
  std::string first_label;
  std::vector<std::string> label_names;
  std::vector<double> targets_row(options.target_columns.size());
  int64_t blank_line = 0;  // a blank line seen, data may not follow

  auto at = [&](int64_t l, size_t c) {
    return absl::StrCat(name, " line ", l, ", column ", Quote(columns[c]),
                        ": ");
  };
  // A finite number in row `l`, column `c`.
  auto number = [&](std::string_view v, int64_t l, size_t c,
                    double* out_value) -> absl::Status {
    const NumberParse r = ParseNumber(v, out_value);
    if (r == NumberParse::kOk && std::isfinite(*out_value)) {
      return absl::OkStatus();
    }
    std::string what;
    if (Trim(v).empty()) {
      what =
          "empty value (missing data is not filled in; drop the row or "
          "the column)";
    } else if (r == NumberParse::kOutOfRange) {
      what = absl::StrCat(Quote(v), " is out of range");
    } else if (r == NumberParse::kOk) {
      what = absl::StrCat(Quote(Trim(v)),
                          " is not a finite number (NaN and "
                          "Inf are refused)");
    } else {
      what = absl::StrCat(Quote(v), " is not a number");
    }
    return absl::InvalidArgumentError(absl::StrCat(at(l, c), what));
  };

  while (true) {
    ASSIGN_OR_RETURN(bool more, reader.Next(&fields, &line, &blank));
    if (!more) break;
    if (blank) {
      if (blank_line == 0) blank_line = line;
      continue;
    }
    if (blank_line != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, " line ", blank_line,
                       " is empty (blank lines are allowed only at the end)"));
    }
    if (fields.size() != num_columns) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, " line ", line, ": ", fields.size(),
                       " fields, the header has ", num_columns));
    }
    for (size_t c = 0; c < num_columns; ++c) {
      const std::string_view v = fields[c];
      switch (roles[c]) {
        case Role::kFeature: {
          double d;
          RETURN_IF_ERROR(number(v, line, c, &d));
          if (std::fabs(d) > std::numeric_limits<float>::max()) {
            return absl::InvalidArgumentError(absl::StrCat(
                at(line, c), Quote(Trim(v)), " is beyond float32's range"));
          }
          out.features.push_back(static_cast<float>(d));
          break;
        }
        case Role::kTarget: {
          double d;
          RETURN_IF_ERROR(number(v, line, c, &d));
          if (std::fabs(d) > std::numeric_limits<float>::max()) {
            return absl::InvalidArgumentError(absl::StrCat(
                at(line, c), Quote(Trim(v)), " is beyond float32's range"));
          }
          targets_row[static_cast<size_t>(target_slot[c])] = d;
          break;
        }
        case Role::kId: {
          const std::string_view id = Trim(v);
          if (id.empty()) {
            return absl::InvalidArgumentError(
                absl::StrCat(at(line, c), "empty id"));
          }
          out.ids.emplace_back(id);
          break;
        }
        case Role::kLabel: {
          const std::string_view label = Trim(v);
          if (label.empty()) {
            return absl::InvalidArgumentError(
                absl::StrCat(at(line, c), "empty label"));
          }
          double d;
          const bool is_number =
              ParseNumber(label, &d) != NumberParse::kNotANumber;
          if (mode == LabelMode::kUnknown) {
            mode = is_number ? LabelMode::kNumbers : LabelMode::kNames;
            mode_line = line;
            first_label = std::string(label);
          }
          if (mode == LabelMode::kNames) {
            if (is_number) {
              return absl::InvalidArgumentError(absl::StrCat(
                  at(line, c), "label ", Quote(label),
                  " is a number, but the column holds class names (line ",
                  mode_line, " has ", Quote(first_label), ")"));
            }
            label_names.emplace_back(label);
            break;
          }
          if (!is_number) {
            return absl::InvalidArgumentError(absl::StrCat(
                at(line, c), "label ", Quote(label),
                " is not a number, but the column holds numeric labels (line ",
                mode_line, " has ", Quote(first_label), ")"));
          }
          if (!std::isfinite(d) || d != std::floor(d) ||
              std::fabs(d) > kMaxExactInteger) {
            return absl::InvalidArgumentError(absl::StrCat(
                at(line, c), "label ", Quote(label),
                " is not a whole number (class labels are integers; for float "
                "values name the column as a target)"));
          }
          if (d < 0) {
            return absl::InvalidArgumentError(absl::StrCat(
                at(line, c), "label ", Quote(label), " is negative"));
          }
          out.labels.push_back(static_cast<int64_t>(d));
          break;
        }
        case Role::kDrop:
          break;
      }
    }
    for (double t : targets_row) out.targets.push_back(static_cast<float>(t));
    ++out.size;
  }
  if (out.size == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " has a header but no data rows"));
  }
  if (mode == LabelMode::kNames) {
    NamesToLabels(label_names, &out.labels, &out.class_names);
  }
  return out;
}

absl::StatusOr<ArrayData> LoadCsv(const std::string& path,
                                  const CsvOptions& options) {
  ASSIGN_OR_RETURN(std::string text, ReadWholeFile(path));
  return ParseCsv(text, path, options);
}

// ---- partition by id ----

namespace {

// Sorted distinct ids and each example's rank among them.
absl::Status RankIds(const std::vector<std::string>& ids, int num_shards,
                     int shard, std::vector<std::string_view>* distinct) {
  if (ids.empty()) {
    return absl::InvalidArgumentError(
        "partition by id: the data has no ids (name an id column, or save an "
        "ids array)");
  }
  if (num_shards < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("partition by id: num_shards ", num_shards, " < 1"));
  }
  if (shard < 0 || shard >= num_shards) {
    return absl::InvalidArgumentError(absl::StrCat(
        "partition by id: shard ", shard, " outside [0, ", num_shards, ")"));
  }
  distinct->assign(ids.begin(), ids.end());
  std::sort(distinct->begin(), distinct->end());
  distinct->erase(std::unique(distinct->begin(), distinct->end()),
                  distinct->end());
  if (distinct->size() < static_cast<size_t>(num_shards)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "partition by id: ", distinct->size(), " distinct ids for ", num_shards,
        " shards; every shard needs at least one id"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<int64_t>> IdShardIndices(
    const std::vector<std::string>& ids, int num_shards, int shard) {
  std::vector<std::string_view> distinct;
  RETURN_IF_ERROR(RankIds(ids, num_shards, shard, &distinct));
  std::vector<int64_t> out;
  for (size_t i = 0; i < ids.size(); ++i) {
    const size_t rank = std::lower_bound(distinct.begin(), distinct.end(),
                                         std::string_view(ids[i])) -
                        distinct.begin();
    if (rank % static_cast<size_t>(num_shards) == static_cast<size_t>(shard)) {
      out.push_back(static_cast<int64_t>(i));
    }
  }
  return out;
}

absl::StatusOr<std::vector<std::string>> IdShardIds(
    const std::vector<std::string>& ids, int num_shards, int shard) {
  std::vector<std::string_view> distinct;
  RETURN_IF_ERROR(RankIds(ids, num_shards, shard, &distinct));
  std::vector<std::string> out;
  for (size_t k = static_cast<size_t>(shard); k < distinct.size();
       k += static_cast<size_t>(num_shards)) {
    out.emplace_back(distinct[k]);
  }
  return out;
}

}  // namespace fedfwd
