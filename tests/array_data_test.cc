#include "common/array_data.h"

#include <unistd.h>
#include <zip.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fedfwd {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

// ---- fixtures built here, so the test needs no Python ----

// Element bytes of `values` (the host is little-endian, as numpy's '<').
template <typename T>
std::string Raw(const std::vector<T>& values) {
  std::string out(values.size() * sizeof(T), '\0');
  if (!values.empty()) std::memcpy(out.data(), values.data(), out.size());
  return out;
}

// Each `unit`-byte element reversed (little- to big-endian).
std::string Swap(std::string bytes, size_t unit) {
  for (size_t i = 0; i + unit <= bytes.size(); i += unit) {
    std::reverse(bytes.begin() + i, bytes.begin() + i + unit);
  }
  return bytes;
}

// A .npy file: magic, version, header length, the header dict padded with
// spaces to a multiple of 64 and ending in '\n', then the payload.
std::string NpyWithHeader(const std::string& dict, const std::string& payload,
                          int major = 1) {
  const size_t len_bytes = major == 1 ? 2 : 4;
  std::string header = dict;
  while ((6 + 2 + len_bytes + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string out = "\x93NUMPY";
  out.push_back(static_cast<char>(major));
  out.push_back(0);
  for (size_t i = 0; i < len_bytes; ++i) {
    out.push_back(static_cast<char>((header.size() >> (8 * i)) & 0xff));
  }
  return out + header + payload;
}

std::string Npy(const std::string& descr, const std::string& shape,
                const std::string& payload, int major = 1,
                const std::string& fortran = "False") {
  return NpyWithHeader("{'descr': '" + descr + "', 'fortran_order': " +
                           fortran + ", 'shape': " + shape + ", }",
                       payload, major);
}

NpyArray MustParse(const std::string& bytes) {
  auto a = ParseNpy(bytes, "t.npy");
  EXPECT_TRUE(a.ok()) << a.status();
  return a.ok() ? *std::move(a) : NpyArray();
}

// Features of a 1-d numeric array, through ArrayDataFromNpy.
std::vector<float> AsFeatures(const NpyArray& x) {
  NpyArray y;
  y.shape = {x.shape.empty() ? 0 : x.shape[0]};
  y.descr = "|u1";
  y.kind = 'u';
  y.item_size = 1;
  y.num_elements = y.shape[0];
  y.data.assign(static_cast<size_t>(y.shape[0]), '\0');
  auto d = ArrayDataFromNpy(x, "x", y, "y", nullptr, "", ArrayTask::kAuto);
  EXPECT_TRUE(d.ok()) << d.status();
  return d.ok() ? d->features : std::vector<float>();
}

std::string SourceFile(const std::string& rel) {
  std::ifstream in(std::string(FEDFWD_SOURCE_DIR) + "/" + rel,
                   std::ios::binary);
  std::ostringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

class TempDir : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fedfwd_array_data_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Write(const std::string& name, const std::string& bytes) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }
  std::string Read(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream buf;
    buf << in.rdbuf();
    return buf.str();
  }
  // An .npz archive written with libzip: members stored or deflated.
  std::string WriteNpz(
      const std::string& name,
      const std::vector<std::pair<std::string, std::string>>& members,
      bool deflate) {
    const std::string path = dir_ + "/" + name;
    int error = 0;
    zip_t* za = zip_open(path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &error);
    EXPECT_NE(za, nullptr) << "zip_open error " << error;
    if (za == nullptr) return path;
    for (const auto& [member, bytes] : members) {
      zip_source_t* src = zip_source_buffer(za, bytes.data(), bytes.size(), 0);
      const zip_int64_t index =
          zip_file_add(za, member.c_str(), src, ZIP_FL_ENC_UTF_8);
      EXPECT_GE(index, 0) << zip_strerror(za);
      EXPECT_EQ(
          zip_set_file_compression(za, static_cast<zip_uint64_t>(index),
                                   deflate ? ZIP_CM_DEFLATE : ZIP_CM_STORE, 0),
          0);
    }
    EXPECT_EQ(zip_close(za), 0);
    return path;
  }

  std::string dir_;
};

// x (3, 2) float32, y (3,) int64, ids <U2.
std::vector<std::pair<std::string, std::string>> ClassificationMembers() {
  std::string ids_payload;
  for (const char* id : {"h1", "h2", "h1"}) {
    for (int k = 0; k < 2; ++k) {
      const uint32_t c = static_cast<unsigned char>(id[k]);
      ids_payload += Raw(std::vector<uint32_t>{c});
    }
  }
  return {{"x.npy",
           Npy("<f4", "(3, 2)", Raw(std::vector<float>{1, 2, 3, 4, 5, 6}))},
          {"y.npy", Npy("<i8", "(3,)", Raw(std::vector<int64_t>{2, 0, 1}))},
          {"ids.npy", Npy("<U2", "(3,)", ids_payload)}};
}

// ---- .npy ----

TEST(ParseNpy, ReadsVersion1Header) {
  const NpyArray a = MustParse(
      Npy("<f4", "(2, 3)", Raw(std::vector<float>{0, 1, 2, 3, 4, 5})));
  EXPECT_THAT(a.shape, ElementsAre(2, 3));
  EXPECT_EQ(a.descr, "<f4");
  EXPECT_EQ(a.kind, 'f');
  EXPECT_EQ(a.item_size, 4);
  EXPECT_EQ(a.num_elements, 6);
  EXPECT_EQ(a.data.size(), 24u);
}

TEST(ParseNpy, ReadsVersion2And3Headers) {
  for (int major : {2, 3}) {
    const NpyArray a = MustParse(
        Npy("<i4", "(4,)", Raw(std::vector<int32_t>{1, -2, 3, -4}), major));
    EXPECT_THAT(a.shape, ElementsAre(4)) << "version " << major;
    EXPECT_THAT(AsFeatures(a), ElementsAre(1, -2, 3, -4));
  }
  // A version 1 header length is 2 bytes: read as version 2 the length is
  // garbage and the file is refused, not misread.
  std::string v1 = Npy("<i4", "(1,)", Raw(std::vector<int32_t>{1}));
  v1[6] = 2;
  EXPECT_FALSE(ParseNpy(v1, "t.npy").ok());
}

TEST(ParseNpy, ReadsEveryDtypeClass) {
  EXPECT_THAT(
      AsFeatures(MustParse(Npy("|b1", "(3,)", std::string("\1\0\1", 3)))),
      ElementsAre(1, 0, 1));
  EXPECT_THAT(AsFeatures(MustParse(
                  Npy("|i1", "(2,)", Raw(std::vector<int8_t>{-128, 127})))),
              ElementsAre(-128, 127));
  EXPECT_THAT(AsFeatures(MustParse(
                  Npy("<i2", "(2,)", Raw(std::vector<int16_t>{-300, 300})))),
              ElementsAre(-300, 300));
  EXPECT_THAT(AsFeatures(MustParse(
                  Npy("<i8", "(2,)", Raw(std::vector<int64_t>{-5, 1 << 20})))),
              ElementsAre(-5, 1 << 20));
  EXPECT_THAT(AsFeatures(MustParse(
                  Npy("|u1", "(2,)", Raw(std::vector<uint8_t>{0, 255})))),
              ElementsAre(0, 255));
  EXPECT_THAT(AsFeatures(MustParse(
                  Npy("<u2", "(2,)", Raw(std::vector<uint16_t>{1, 65535})))),
              ElementsAre(1, 65535));
  EXPECT_THAT(AsFeatures(MustParse(Npy(
                  "<u4", "(2,)", Raw(std::vector<uint32_t>{7, 4000000000u})))),
              ElementsAre(7, 4e9f));
  EXPECT_THAT(AsFeatures(MustParse(
                  Npy("<u8", "(1,)", Raw(std::vector<uint64_t>{1ull << 40})))),
              ElementsAre(static_cast<float>(1ull << 40)));
  // float16: 1.0 = 0x3c00, -2.0 = 0xc000, 0.5 = 0x3800, 65504 = 0x7bff.
  EXPECT_THAT(AsFeatures(MustParse(Npy(
                  "<f2", "(4,)",
                  Raw(std::vector<uint16_t>{0x3c00, 0xc000, 0x3800, 0x7bff})))),
              ElementsAre(1, -2, 0.5, 65504));
  EXPECT_THAT(AsFeatures(MustParse(
                  Npy("<f4", "(2,)", Raw(std::vector<float>{0.25f, -3})))),
              ElementsAre(0.25f, -3));
  EXPECT_THAT(AsFeatures(MustParse(
                  Npy("<f8", "(2,)", Raw(std::vector<double>{1e-3, 2.5})))),
              ElementsAre(1e-3f, 2.5f));
}

TEST(ParseNpy, ByteSwapsBigEndian) {
  EXPECT_THAT(AsFeatures(MustParse(Npy(
                  ">f8", "(2,)", Swap(Raw(std::vector<double>{1.5, -2}), 8)))),
              ElementsAre(1.5, -2));
  EXPECT_THAT(AsFeatures(MustParse(Npy(
                  ">i4", "(2,)", Swap(Raw(std::vector<int32_t>{-7, 9}), 4)))),
              ElementsAre(-7, 9));
  EXPECT_THAT(AsFeatures(MustParse(Npy(
                  ">u2", "(1,)", Swap(Raw(std::vector<uint16_t>{513}), 2)))),
              ElementsAre(513));
}

TEST(ParseNpy, RefusesTruncatedPayload) {
  auto a = ParseNpy(
      Npy("<f4", "(2, 3)", Raw(std::vector<float>{0, 1, 2, 3, 4})), "t.npy");
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(a.status().message(),
              AllOf(HasSubstr("t.npy"), HasSubstr("truncated"),
                    HasSubstr("needs 24 bytes"), HasSubstr("found 20")));
  // Extra bytes after the payload are refused too.
  auto b = ParseNpy(Npy("|u1", "(2,)", "abc"), "t.npy");
  ASSERT_FALSE(b.ok());
  EXPECT_THAT(b.status().message(), HasSubstr("1 bytes after the data"));
  // A header that promises more than the file holds.
  std::string short_header = Npy("|u1", "(2,)", "ab").substr(0, 40);
  auto c = ParseNpy(short_header, "t.npy");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("truncated .npy header"));
}

TEST(ParseNpy, RefusesFortranOrder) {
  auto a = ParseNpy(
      Npy("<f4", "(2, 2)", Raw(std::vector<float>{1, 2, 3, 4}), 1, "True"),
      "f.npy");
  ASSERT_FALSE(a.ok());
  EXPECT_THAT(a.status().message(),
              AllOf(HasSubstr("f.npy"), HasSubstr("fortran_order True"),
                    HasSubstr("ascontiguousarray")));
}

TEST(ParseNpy, RefusesObjectDtype) {
  auto a = ParseNpy(Npy("|O", "(1,)", "\x80\x04\x95"), "o.npy");
  ASSERT_FALSE(a.ok());
  EXPECT_THAT(a.status().message(),
              AllOf(HasSubstr("o.npy"), HasSubstr("object arrays"),
                    HasSubstr("never unpickled")));
}

TEST(ParseNpy, RefusesBadMagic) {
  for (const std::string& bytes : {std::string(), std::string("NUMPY"),
                                   std::string("\x93NUMPX\1\0\0\0", 10),
                                   std::string("PK\3\4 this is a zip")}) {
    auto a = ParseNpy(bytes, "m.npy");
    ASSERT_FALSE(a.ok());
    EXPECT_THAT(a.status().message(),
                AllOf(HasSubstr("m.npy"), HasSubstr("not a .npy file")));
  }
  std::string v4 = Npy("|u1", "(1,)", "a");
  v4[6] = 4;
  auto a = ParseNpy(v4, "m.npy");
  ASSERT_FALSE(a.ok());
  EXPECT_THAT(a.status().message(), HasSubstr("version 4.0"));
}

TEST(ParseNpy, ParsesTheHeaderStrictly) {
  const std::string payload = "ab";
  struct Case {
    std::string dict;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {"{'descr': '|u1', 'shape': (2,), }", "no 'fortran_order'"},
      {"{'descr': '|u1', 'fortran_order': False, }", "no 'shape'"},
      {"{'fortran_order': False, 'shape': (2,), }", "no 'descr'"},
      {"{'descr': '|u1', 'fortran_order': False, 'shape': (2,), 'x': 1}",
       "unexpected key 'x'"},
      {"{'descr': '|u1', 'descr': '|u1', 'fortran_order': False, 'shape': "
       "(2,)}",
       "'descr' appears twice"},
      {"{'descr': '|u1', 'fortran_order': False, 'shape': (2)}",
       "lacks the comma"},
      {"{'descr': '|u1', 'fortran_order': False, 'shape': (-2,)}",
       "non-integer"},
      {"{'descr': '|u1', 'fortran_order': 0, 'shape': (2,)}",
       "neither True nor False"},
      {"{'descr': '|u1', 'fortran_order': False, 'shape': (2,)} x",
       "after the closing"},
      {"{'descr': '|u1', 'fortran_order': False, 'shape': (2,)",
       "expected ',' or '}'"},
      {"['descr', '|u1']", "does not start with '{'"},
      {"{'descr': [('a', '<i4')], 'fortran_order': False, 'shape': (2,)}",
       "structured dtypes"},
      {"{'descr': '<c8', 'fortran_order': False, 'shape': (2,)}",
       "unsupported dtype '<c8'"},
      {"{'descr': '|f4', 'fortran_order': False, 'shape': (2,)}",
       "unsupported dtype '|f4'"},
      {"{'descr': '<i3', 'fortran_order': False, 'shape': (2,)}",
       "unsupported dtype '<i3'"},
      {"{'descr': '<M8[ns]', 'fortran_order': False, 'shape': (2,)}",
       "unsupported dtype"},
  };
  for (const Case& c : cases) {
    auto a = ParseNpy(NpyWithHeader(c.dict, payload), "h.npy");
    ASSERT_FALSE(a.ok()) << c.dict;
    EXPECT_THAT(a.status().message(),
                AllOf(HasSubstr("h.npy"), HasSubstr(c.expect)))
        << c.dict;
  }
  // Double quotes, no trailing comma, no spaces and Python 2 longs are fine.
  const NpyArray a = MustParse(NpyWithHeader(
      "{\"descr\":\"|u1\",\"fortran_order\":False,\"shape\":(1L,2L)}", "ab"));
  EXPECT_THAT(a.shape, ElementsAre(1, 2));
}

TEST(ParseNpy, GuardsShapeOverflow) {
  for (const std::string& shape :
       {std::string("(1099511627776, 1099511627776, 1099511627776)"),
        std::string("(999999999999999999, 999999999999999999)"),
        std::string("(4611686018427387904,)")}) {
    auto a = ParseNpy(Npy("<f8", shape, "12345678"), "big.npy");
    ASSERT_FALSE(a.ok()) << shape;
    EXPECT_THAT(a.status().message(), HasSubstr("big.npy")) << shape;
  }
  auto a = ParseNpy(Npy("<f8", "(1099511627776, 1099511627776)", "12345678"),
                    "big.npy");
  ASSERT_FALSE(a.ok());
  EXPECT_THAT(a.status().message(),
              AllOf(HasSubstr("truncated"), HasSubstr("8 bytes of data")));
  // A zero dimension makes an empty array whatever the others are.
  const NpyArray empty = MustParse(Npy("<f8", "(0, 1099511627776)", ""));
  EXPECT_EQ(empty.num_elements, 0);
}

TEST(ParseNpy, ReadsStringArraysForIds) {
  std::string ucs4;
  for (uint32_t c : {uint32_t{'a'}, uint32_t{0xe9}, uint32_t{'b'}, 0u}) {
    ucs4 += Raw(std::vector<uint32_t>{c});
  }
  NpyArray x = MustParse(Npy("<f4", "(2,)", Raw(std::vector<float>{1, 2})));
  NpyArray y = MustParse(Npy("|u1", "(2,)", std::string("\0\1", 2)));
  NpyArray u = MustParse(Npy("<U2", "(2,)", ucs4));
  auto d = ArrayDataFromNpy(x, "x", y, "y", &u, "ids", ArrayTask::kAuto);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT(d->ids, ElementsAre("a\xc3\xa9", "b"));
  NpyArray s = MustParse(Npy("|S3", "(2,)", std::string("id1x\0\0", 6)));
  d = ArrayDataFromNpy(x, "x", y, "y", &s, "ids", ArrayTask::kAuto);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT(d->ids, ElementsAre("id1", "x"));
  NpyArray big = MustParse(Npy(">U2", "(2,)", Swap(ucs4, 4)));
  d = ArrayDataFromNpy(x, "x", y, "y", &big, "ids", ArrayTask::kAuto);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT(d->ids, ElementsAre("a\xc3\xa9", "b"));
  // Integer ids become decimal strings; float ids are refused.
  NpyArray n = MustParse(Npy("<i4", "(2,)", Raw(std::vector<int32_t>{-3, 40})));
  d = ArrayDataFromNpy(x, "x", y, "y", &n, "ids", ArrayTask::kAuto);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT(d->ids, ElementsAre("-3", "40"));
  d = ArrayDataFromNpy(x, "x", y, "y", &x, "ids.npy", ArrayTask::kAuto);
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(d.status().message(),
              AllOf(HasSubstr("ids.npy"), HasSubstr("integers or strings")));
  // Strings are not features.
  d = ArrayDataFromNpy(u, "x.npy", y, "y", nullptr, "", ArrayTask::kAuto);
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(d.status().message(),
              AllOf(HasSubstr("x.npy"), HasSubstr("must be numbers")));
}

// The checked-in seeds of fuzz/corpus/npy and npz are numpy 1.24's own
// output (np.save, np.savez, np.savez_compressed, format versions 1-3).
TEST(ParseNpy, ReadsNumpysOwnFiles) {
  NpyArray a = MustParse(SourceFile("fuzz/corpus/npy/f4_2x3"));
  EXPECT_THAT(a.shape, ElementsAre(2, 3));
  EXPECT_THAT(AsFeatures(a), ElementsAre(0, 0.25, 0.5, 0.75, 1, 1.25));
  a = MustParse(SourceFile("fuzz/corpus/npy/i8_v2"));
  EXPECT_THAT(AsFeatures(a), ElementsAre(-1, 2, 3, -4));
  a = MustParse(SourceFile("fuzz/corpus/npy/f8_big_endian"));
  EXPECT_EQ(a.descr, ">f8");
  EXPECT_THAT(AsFeatures(a), ElementsAre(1.5, -2.25));
  a = MustParse(SourceFile("fuzz/corpus/npy/f2"));
  EXPECT_THAT(AsFeatures(a), ElementsAre(0.5, -1, 65504));
  a = MustParse(SourceFile("fuzz/corpus/npy/bool"));
  EXPECT_THAT(AsFeatures(a), ElementsAre(1, 0, 1));
  a = MustParse(SourceFile("fuzz/corpus/npy/scalar"));
  EXPECT_TRUE(a.shape.empty());
  EXPECT_EQ(a.num_elements, 1);
  const NpyArray u = MustParse(SourceFile("fuzz/corpus/npy/unicode_v3"));
  const NpyArray x =
      MustParse(Npy("<f4", "(3,)", Raw(std::vector<float>{1, 2, 3})));
  auto d = ArrayDataFromNpy(x, "x", u, "u", &u, "u", ArrayTask::kAuto);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT(d->ids, ElementsAre("a", "b\xc3\xa9", "c\xe2\x98\x83"));
}

// ---- ArrayData from arrays ----

TEST(ArrayDataFromNpy, IntegerYGivesLabelsFloatYGivesTargets) {
  const NpyArray x =
      MustParse(Npy("<f4", "(2, 1, 2, 2)", Raw(std::vector<float>(8, 0.5f))));
  auto d = ArrayDataFromNpy(
      x, "x", MustParse(Npy("<i8", "(2,)", Raw(std::vector<int64_t>{3, 0}))),
      "y", nullptr, "", ArrayTask::kAuto);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->size, 2);
  EXPECT_THAT(d->feature_shape, ElementsAre(1, 2, 2));
  EXPECT_THAT(d->labels, ElementsAre(3, 0));
  EXPECT_TRUE(d->targets.empty());
  EXPECT_TRUE(CheckArrayData(*d).ok());

  d = ArrayDataFromNpy(
      x, "x",
      MustParse(Npy("<f8", "(2, 2)", Raw(std::vector<double>{1, 2, 3, 4}))),
      "y", nullptr, "", ArrayTask::kAuto);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->labels.empty());
  EXPECT_EQ(d->target_dim, 2);
  EXPECT_THAT(d->targets, ElementsAre(1, 2, 3, 4));
  EXPECT_TRUE(CheckArrayData(*d).ok());

  // A 1-d x is one feature per example.
  d = ArrayDataFromNpy(
      MustParse(Npy("<f4", "(2,)", Raw(std::vector<float>{7, 8}))), "x",
      MustParse(Npy("<f4", "(2,)", Raw(std::vector<float>{1, 2}))), "y",
      nullptr, "", ArrayTask::kAuto);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT(d->feature_shape, ElementsAre(1));
  EXPECT_EQ(d->target_dim, 1);
}

TEST(ArrayDataFromNpy, TaskDecidesAndValidates) {
  const NpyArray x =
      MustParse(Npy("<f4", "(3,)", Raw(std::vector<float>{1, 2, 3})));
  const NpyArray whole =
      MustParse(Npy("<f8", "(3,)", Raw(std::vector<double>{2, 0, 1})));
  auto d = ArrayDataFromNpy(x, "x", whole, "y", nullptr, "",
                            ArrayTask::kClassification);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT(d->labels, ElementsAre(2, 0, 1));

  const NpyArray half =
      MustParse(Npy("<f8", "(3,)", Raw(std::vector<double>{2, 0.5, 1})));
  d = ArrayDataFromNpy(x, "x", half, "y.npy", nullptr, "",
                       ArrayTask::kClassification);
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(d.status().message(),
              AllOf(HasSubstr("y.npy"), HasSubstr("label 1"),
                    HasSubstr("not a whole number")));

  const NpyArray ints =
      MustParse(Npy("<i4", "(3,)", Raw(std::vector<int32_t>{5, -1, 2})));
  d = ArrayDataFromNpy(x, "x", ints, "y", nullptr, "", ArrayTask::kRegression);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT(d->targets, ElementsAre(5, -1, 2));
  EXPECT_TRUE(d->labels.empty());

  // Several columns cannot be class labels.
  const NpyArray wide =
      MustParse(Npy("<i4", "(3, 2)", Raw(std::vector<int32_t>(6, 1))));
  d = ArrayDataFromNpy(x, "x", wide, "y.npy", nullptr, "", ArrayTask::kAuto);
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(d.status().message(),
              AllOf(HasSubstr("y.npy"), HasSubstr("(3, 2)")));

  EXPECT_EQ(*ParseArrayTask("auto"), ArrayTask::kAuto);
  EXPECT_EQ(*ParseArrayTask("classification"), ArrayTask::kClassification);
  EXPECT_EQ(*ParseArrayTask("regression"), ArrayTask::kRegression);
  EXPECT_FALSE(ParseArrayTask("clustering").ok());
}

TEST(ArrayDataFromNpy, StringLabelsBecomeSortedClassIds) {
  const NpyArray x =
      MustParse(Npy("<f4", "(3,)", Raw(std::vector<float>{1, 2, 3})));
  const NpyArray y = MustParse(Npy("|S3", "(3,)", "dogcatdog"));
  auto d = ArrayDataFromNpy(x, "x", y, "y", nullptr, "", ArrayTask::kAuto);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT(d->labels, ElementsAre(1, 0, 1));
  EXPECT_THAT(d->class_names, ElementsAre("cat", "dog"));
  EXPECT_FALSE(
      ArrayDataFromNpy(x, "x", y, "y", nullptr, "", ArrayTask::kRegression)
          .ok());
}

TEST(ArrayDataFromNpy, RefusesLengthMismatch) {
  const NpyArray x =
      MustParse(Npy("<f4", "(3, 2)", Raw(std::vector<float>(6, 1))));
  const NpyArray y = MustParse(Npy("|u1", "(2,)", "ab"));
  auto d = ArrayDataFromNpy(x, "a.npz:x.npy", y, "a.npz:y.npy", nullptr, "",
                            ArrayTask::kAuto);
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(d.status().message(),
              AllOf(HasSubstr("a.npz:x.npy has 3 (shape (3, 2))"),
                    HasSubstr("a.npz:y.npy has 2 (shape (2,))")));
  // ids of the wrong length.
  const NpyArray y3 = MustParse(Npy("|u1", "(3,)", "abc"));
  d = ArrayDataFromNpy(x, "x", y3, "y", &y, "ids.npy", ArrayTask::kAuto);
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(d.status().message(),
              AllOf(HasSubstr("ids.npy"), HasSubstr("(3,)")));
  // No examples.
  const NpyArray x0 = MustParse(Npy("<f4", "(0, 2)", ""));
  const NpyArray y0 = MustParse(Npy("|u1", "(0,)", ""));
  d = ArrayDataFromNpy(x0, "x.npy", y0, "y", nullptr, "", ArrayTask::kAuto);
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(d.status().message(), HasSubstr("no examples"));
}

TEST(ArrayDataFromNpy, RefusesNegativeLabels) {
  const NpyArray x =
      MustParse(Npy("<f4", "(4,)", Raw(std::vector<float>{1, 2, 3, 4})));
  const NpyArray y =
      MustParse(Npy("<i2", "(4,)", Raw(std::vector<int16_t>{0, 1, -1, -2})));
  auto d =
      ArrayDataFromNpy(x, "x", y, "labels.npy", nullptr, "", ArrayTask::kAuto);
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(d.status().message(),
              AllOf(HasSubstr("labels.npy"), HasSubstr("label 2 is -1"),
                    HasSubstr(">= 0")));
  const NpyArray huge =
      MustParse(Npy("<u8", "(4,)", Raw(std::vector<uint64_t>{0, ~0ull, 0, 0})));
  d = ArrayDataFromNpy(x, "x", huge, "labels.npy", nullptr, "",
                       ArrayTask::kAuto);
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(d.status().message(), HasSubstr("label 1 is beyond int64"));
}

TEST(ArrayDataFromNpy, RefusesNaNAndInf) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const NpyArray y = MustParse(Npy("|u1", "(2,)", std::string("\0\1", 2)));
  auto d = ArrayDataFromNpy(
      MustParse(
          Npy("<f4", "(2, 3)", Raw(std::vector<float>{0, 1, 2, 3, nan, 5}))),
      "x.npy", y, "y", nullptr, "", ArrayTask::kAuto);
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(d.status().message(),
              AllOf(HasSubstr("x.npy"), HasSubstr("element 4 (example 1)"),
                    HasSubstr("NaN")));
  d = ArrayDataFromNpy(
      MustParse(Npy("<f4", "(2,)", Raw(std::vector<float>{0, 1}))), "x", y, "y",
      nullptr, "", ArrayTask::kAuto);
  ASSERT_TRUE(d.ok());
  d = ArrayDataFromNpy(
      MustParse(Npy("<f4", "(2,)", Raw(std::vector<float>{0, 1}))), "x",
      MustParse(Npy("<f4", "(2,)", Raw(std::vector<float>{-inf, 1}))), "t.npy",
      nullptr, "", ArrayTask::kAuto);
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(d.status().message(),
              AllOf(HasSubstr("t.npy"), HasSubstr("element 0 (example 0)"),
                    HasSubstr("Inf")));
  // float64 beyond float32's range.
  d = ArrayDataFromNpy(
      MustParse(Npy("<f8", "(2,)", Raw(std::vector<double>{1, 1e300}))),
      "x.npy", y, "y", nullptr, "", ArrayTask::kAuto);
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(d.status().message(),
              AllOf(HasSubstr("element 1"), HasSubstr("float32's range")));
}

// ---- .npy pairs and .npz ----

class NpyFiles : public TempDir {};

TEST_F(NpyFiles, LoadsAPair) {
  const std::string x =
      Write("x.npy", Npy("<f4", "(2, 2)", Raw(std::vector<float>{1, 2, 3, 4})));
  const std::string y =
      Write("y.npy", Npy("|u1", "(2,)", std::string("\1\0", 2)));
  auto d = LoadNpyPair(x, y);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT(d->features, ElementsAre(1, 2, 3, 4));
  EXPECT_THAT(d->labels, ElementsAre(1, 0));
  EXPECT_TRUE(d->ids.empty());
  const std::string ids =
      Write("ids.npy", Npy("<i8", "(2,)", Raw(std::vector<int64_t>{7, 9})));
  d = LoadNpyPair(x, y, ArrayTask::kRegression, ids);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT(d->targets, ElementsAre(1, 0));
  EXPECT_THAT(d->ids, ElementsAre("7", "9"));

  auto missing = LoadNpyPair(x, dir_ + "/nope.npy");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("nope.npy"));
  // The error names the file at fault.
  const std::string bad = Write("bad.npy", Npy("|u1", "(3,)", "\1\0"));
  auto truncated = LoadNpyPair(x, bad);
  ASSERT_FALSE(truncated.ok());
  EXPECT_THAT(truncated.status().message(), HasSubstr(bad));
}

TEST_F(NpyFiles, LoadsNpzStoredAndDeflated) {
  for (bool deflate : {false, true}) {
    const std::string path =
        WriteNpz(deflate ? "d.npz" : "s.npz", ClassificationMembers(), deflate);
    for (int from_memory : {0, 1}) {
      auto d = from_memory ? ParseNpz(Read(path), path) : LoadNpz(path);
      ASSERT_TRUE(d.ok()) << d.status();
      EXPECT_EQ(d->size, 3);
      EXPECT_THAT(d->feature_shape, ElementsAre(2));
      EXPECT_THAT(d->features, ElementsAre(1, 2, 3, 4, 5, 6));
      EXPECT_THAT(d->labels, ElementsAre(2, 0, 1));
      EXPECT_THAT(d->ids, ElementsAre("h1", "h2", "h1"));
      EXPECT_TRUE(CheckArrayData(*d).ok());
    }
  }
}

TEST_F(NpyFiles, NpzNamesAndMissingArrays) {
  auto members = ClassificationMembers();
  members[0].first = "images.npy";
  members.pop_back();  // no ids: fine, they are optional
  const std::string path = WriteNpz("n.npz", members, true);
  auto d = LoadNpz(path);
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(d.status().message(),
              AllOf(HasSubstr(path), HasSubstr("no array 'x'"),
                    HasSubstr("'images.npy'"), HasSubstr("'y.npy'")));
  NpzNames names;
  names.features = "images";
  d = LoadNpz(path, names);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->ids.empty());
  EXPECT_THAT(d->labels, ElementsAre(2, 0, 1));
  // A bad member is named with its archive.
  members.push_back({"y2.npy", Npy("<f4", "(3,)", "xx")});
  const std::string bad = WriteNpz("b.npz", members, false);
  names.labels = "y2";
  d = LoadNpz(bad, names);
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(d.status().message(),
              AllOf(HasSubstr(bad + ":y2.npy"), HasSubstr("truncated")));
}

TEST_F(NpyFiles, ReadsNumpysOwnNpz) {
  auto d =
      ParseNpz(SourceFile("fuzz/corpus/npz/stored_classification"), "stored");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->size, 4);
  EXPECT_THAT(d->feature_shape, ElementsAre(3));
  EXPECT_EQ(d->features[11], 11);
  EXPECT_THAT(d->labels, ElementsAre(0, 1, 1, 2));
  EXPECT_THAT(d->ids, ElementsAre("h1", "h2", "h1", "h3"));
  d = ParseNpz(SourceFile("fuzz/corpus/npz/deflated_regression"), "deflated");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT(d->feature_shape, ElementsAre(2, 2));
  EXPECT_FLOAT_EQ(d->features.front(), -1);
  EXPECT_FLOAT_EQ(d->features.back(), 1);
  EXPECT_EQ(d->target_dim, 2);
  EXPECT_THAT(d->targets, ElementsAre(0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4));
}

// Rewrites the uncompressed size of every entry (local and central headers)
// of a zip without zip64 records.
std::string SetDeclaredSize(std::string zip, uint32_t size) {
  auto put32 = [&](size_t at) {
    for (int i = 0; i < 4; ++i)
      zip[at + i] = static_cast<char>(size >> (8 * i));
  };
  for (size_t at = zip.find("PK\3\4"); at != std::string::npos;
       at = zip.find("PK\3\4", at + 4)) {
    put32(at + 22);
  }
  for (size_t at = zip.find("PK\1\2"); at != std::string::npos;
       at = zip.find("PK\1\2", at + 4)) {
    put32(at + 24);
  }
  return zip;
}

TEST_F(NpyFiles, RefusesZipBombsAndBadArchives) {
  // 64 KiB of zeros deflate to well under 1 KiB; the archive then claims
  // 2 GiB for every member.
  const std::string zeros = Npy("|u1", "(65536,)", std::string(65536, '\0'));
  const std::string path =
      WriteNpz("z.npz", {{"x.npy", zeros}, {"y.npy", zeros}}, true);
  const std::string bytes = Read(path);
  ASSERT_LT(bytes.size(), 2000u);
  auto d = ParseNpz(SetDeclaredSize(bytes, 0x7fffffff), "bomb.npz");
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(d.status().message(),
              AllOf(HasSubstr("bomb.npz:x.npy"), HasSubstr("2147483647"),
                    HasSubstr("zip bomb")));
  // Declared smaller than the data inflates to.
  d = ParseNpz(SetDeclaredSize(bytes, 1000), "short.npz");
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(d.status().message(), HasSubstr("short.npz:x.npy"));
  // Not a zip at all, and an empty buffer.
  for (const std::string& junk :
       {std::string(), std::string("not a zip archive at all"), zeros}) {
    d = ParseNpz(junk, "junk.npz");
    ASSERT_FALSE(d.ok());
    EXPECT_THAT(d.status().message(), HasSubstr("junk.npz"));
  }
  d = LoadNpz(Write("j.npz", "PK\3\4 truncated"));
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(d.status().message(), HasSubstr("j.npz"));
  EXPECT_EQ(LoadNpz(dir_ + "/absent.npz").status().code(),
            absl::StatusCode::kNotFound);
}

// ---- CSV ----

CsvOptions Label(const std::string& column) {
  CsvOptions o;
  o.label_column = column;
  return o;
}

TEST(ParseCsv, ReadsFeaturesLabelsIdsAndDrops) {
  CsvOptions o = Label("y");
  o.id_column = "site";
  o.drop_columns = {"note"};
  auto d = ParseCsv(
      "site,age,note,y,bmi\n"
      "h1,34,x,0,22.5\n"
      "h2, 51 ,y,2,-1e1\n"
      "h1,+7,,1,1e-400\n",
      "p.csv", o);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->size, 3);
  EXPECT_THAT(d->feature_shape, ElementsAre(2));
  EXPECT_THAT(d->features, ElementsAre(34, 22.5, 51, -10, 7, 0));
  EXPECT_THAT(d->labels, ElementsAre(0, 2, 1));
  EXPECT_THAT(d->ids, ElementsAre("h1", "h2", "h1"));
  EXPECT_TRUE(d->class_names.empty());
  EXPECT_TRUE(CheckArrayData(*d).ok());
}

TEST(ParseCsv, QuotingCrlfAndLineEnds) {
  CsvOptions o = Label("y");
  o.id_column = "id";
  auto d = ParseCsv(
      "\xEF\xBB\xBF\"id\",\"a, b\",y\r\n"
      "\"say \"\"hi\"\"\",\"1.5\",1\r\n"
      "\"two\nlines\",2,0\r\n"
      "plain,3,\"1\"\r\n"
      "\r\n\r\n",
      "q.csv", o);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->size, 3);
  EXPECT_THAT(d->ids, ElementsAre("say \"hi\"", "two\nlines", "plain"));
  EXPECT_THAT(d->features, ElementsAre(1.5, 2, 3));
  EXPECT_THAT(d->labels, ElementsAre(1, 0, 1));
  // No final newline; LF only; a lone quoted empty id is refused.
  d = ParseCsv("a,y\n1,0\n2,1", "n.csv", Label("y"));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT(d->labels, ElementsAre(0, 1));
  d = ParseCsv("a,y\r\n1,0\r\n2,1\r", "n.csv", Label("y"));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT(d->features, ElementsAre(1, 2));
  // Line numbers count physical lines: the record after a two-line field.
  d = ParseCsv("id,a,y\n\"x\ny\",1,0\nz,oops,1\n", "l.csv", o);
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(d.status().message(),
              HasSubstr("l.csv line 4, column 'a': 'oops' is not a number"));
}

TEST(ParseCsv, ClassNamesAndRegression) {
  auto d = ParseCsv("a,y\n1,dog\n2,cat\n3, dog\n4,ant\n", "c.csv", Label("y"));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT(d->class_names, ElementsAre("ant", "cat", "dog"));
  EXPECT_THAT(d->labels, ElementsAre(2, 1, 2, 0));
  EXPECT_TRUE(CheckArrayData(*d).ok());
  // Whole-number floats are labels.
  d = ParseCsv("a,y\n1,1.0\n2,0\n", "c.csv", Label("y"));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT(d->labels, ElementsAre(1, 0));

  CsvOptions r;
  r.target_columns = {"t2", "t1"};
  d = ParseCsv("t1,a,t2\n1.5,10,-2\n2.5,20,-3\n", "r.csv", r);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->target_dim, 2);
  EXPECT_THAT(d->targets, ElementsAre(-2, 1.5, -3, 2.5));
  EXPECT_THAT(d->features, ElementsAre(10, 20));
  EXPECT_TRUE(d->labels.empty());
  EXPECT_TRUE(CheckArrayData(*d).ok());
}

TEST(ParseCsv, ErrorsNameFileLineAndColumn) {
  struct Case {
    std::string text;
    CsvOptions options;
    std::vector<std::string> expect;
  };
  CsvOptions id = Label("y");
  id.id_column = "id";
  CsvOptions both = Label("y");
  both.target_columns = {"a"};
  CsvOptions targets;
  targets.target_columns = {"t"};
  CsvOptions twice = Label("y");
  twice.drop_columns = {"y"};
  const std::vector<Case> cases = {
      {"a,b,y\n1,2,0\n3,0\n",
       Label("y"),
       {"e.csv line 3: 2 fields, the header has 3"}},
      {"a,bmi,y\n1,2,0\n1,2,0\n1,abc,0\n",
       Label("y"),
       {"e.csv line 4, column 'bmi': 'abc' is not a number"}},
      {"a,b\n1,2\n",
       Label("y"),
       {"e.csv: no label column 'y'; columns are: 'a', 'b'"}},
      {"a,b\n1,2\n",
       targets,
       {"e.csv: no target column 't'; columns are: 'a', 'b'"}},
      {"", Label("y"), {"e.csv is empty (a header row is required)"}},
      {"\n\r\n", Label("y"), {"e.csv is empty"}},
      {"a,y\n", Label("y"), {"e.csv has a header but no data rows"}},
      {"a,b,a,y\n1,2,3,0\n",
       Label("y"),
       {"e.csv line 1: duplicate column name 'a' (columns 1 and 3)"}},
      {"a,y\n1,0\nnan,1\n",
       Label("y"),
       {"e.csv line 3, column 'a': 'nan' is not a finite number"}},
      {"a,y\n1,0\n-inf,1\n",
       Label("y"),
       {"e.csv line 3, column 'a': '-inf' is not a finite number"}},
      {"t,a\nInf,1\n",
       targets,
       {"e.csv line 2, column 't': 'Inf' is not a finite number"}},
      {"a,y\n1,0\n,1\n", Label("y"), {"e.csv line 3, column 'a': empty value"}},
      {"a,y\n1,0\n1e999,1\n",
       Label("y"),
       {"e.csv line 3, column 'a': '1e999' is out of range"}},
      {"a,y\n1,0\n1e39,1\n",
       Label("y"),
       {"e.csv line 3, column 'a': '1e39' is beyond float32's range"}},
      {"a,y\n1,0\n2,-1\n",
       Label("y"),
       {"e.csv line 3, column 'y': label '-1' is negative"}},
      {"a,y\n1,0\n2,1.5\n",
       Label("y"),
       {"e.csv line 3, column 'y': label '1.5' is not a whole number"}},
      {"a,y\n1,0\n2,cat\n",
       Label("y"),
       {"e.csv line 3, column 'y': label 'cat' is not a number",
        "line 2 has '0'"}},
      {"a,y\n1,cat\n2,7\n",
       Label("y"),
       {"e.csv line 3, column 'y': label '7' is a number", "line 2 has 'cat'"}},
      {"a,y\n1,0\n2,\n", Label("y"), {"e.csv line 3, column 'y': empty label"}},
      {"id,a,y\nh1,1,0\n ,2,1\n", id, {"e.csv line 3, column 'id': empty id"}},
      {"a,y\n1,\"0\n2,1\n",
       Label("y"),
       {"e.csv line 2, field 2: a quoted field is not closed"}},
      {"a,y\n1,0\n2,1\"x\n",
       Label("y"),
       {"e.csv line 3, field 2: a quote inside an unquoted field"}},
      {"a,y\n1,0\n\"2\"x,1\n",
       Label("y"),
       {"e.csv line 3, field 1: text after a closing quote"}},
      {"a,y\n1,0\n\n2,1\n",
       Label("y"),
       {"e.csv line 3 is empty (blank lines are allowed only at the end)"}},
      {"a,y\n1,0\n", both, {"e.csv: name either", "not both"}},
      {"a,y\n1,0\n", CsvOptions(), {"e.csv: name either", "not neither"}},
      {"a,y\n1,0\n", twice, {"column 'y' is named twice in the options"}},
      {",a,y\n0,1,0\n",
       Label("y"),
       {"e.csv line 1: column 1 has no name", "index=False"}},
      {"a,y\n1,0\n",
       [] {
         CsvOptions o = Label("y");
         o.drop_columns = {"a"};
         return o;
       }(),
       {"e.csv: no feature columns"}},
  };
  for (const Case& c : cases) {
    auto d = ParseCsv(c.text, "e.csv", c.options);
    ASSERT_FALSE(d.ok()) << c.text;
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument) << c.text;
    for (const std::string& e : c.expect) {
      EXPECT_THAT(d.status().message(), HasSubstr(e)) << c.text;
    }
  }
  // A pandas index column can be dropped by its empty name.
  CsvOptions drop_index = Label("y");
  drop_index.drop_columns = {""};
  auto d = ParseCsv(",a,y\n0,1,0\n", "e.csv", drop_index);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT(d->features, ElementsAre(1));
}

class CsvFiles : public TempDir {};

TEST_F(CsvFiles, LoadsAFile) {
  const std::string path = Write("d.csv", "a,b,y\n1,2,0\n3,4,1\n");
  auto d = LoadCsv(path, Label("y"));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT(d->features, ElementsAre(1, 2, 3, 4));
  const std::string bad = Write("bad.csv", "a,b,y\n1,2,0\n3,x,1\n");
  d = LoadCsv(bad, Label("y"));
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(d.status().message(),
              HasSubstr(bad + " line 3, column 'b': 'x' is not a number"));
  EXPECT_EQ(LoadCsv(dir_ + "/none.csv", Label("y")).status().code(),
            absl::StatusCode::kNotFound);
}

// ---- partition by id ----

TEST(IdShardIndices, OneShardPerId) {
  const std::vector<std::string> ids = {"b", "a", "b", "c", "a"};
  EXPECT_THAT(*IdShardIndices(ids, 3, 0), ElementsAre(1, 4));  // a
  EXPECT_THAT(*IdShardIndices(ids, 3, 1), ElementsAre(0, 2));  // b
  EXPECT_THAT(*IdShardIndices(ids, 3, 2), ElementsAre(3));     // c
  EXPECT_THAT(*IdShardIds(ids, 3, 1), ElementsAre("b"));
}

TEST(IdShardIndices, DealsIdsRoundRobinAndCoversEveryExample) {
  std::vector<std::string> ids;
  for (int i = 0; i < 200; ++i) ids.push_back("dev" + std::to_string(i % 7));
  std::vector<int> owner(ids.size(), -1);
  std::set<std::string> seen_ids;
  for (int shard = 0; shard < 3; ++shard) {
    auto idx = IdShardIndices(ids, 3, shard);
    ASSERT_TRUE(idx.ok()) << idx.status();
    EXPECT_TRUE(std::is_sorted(idx->begin(), idx->end()));
    auto shard_ids = IdShardIds(ids, 3, shard);
    ASSERT_TRUE(shard_ids.ok());
    for (int64_t i : *idx) {
      EXPECT_EQ(owner[i], -1) << "example " << i << " in two shards";
      owner[i] = shard;
      EXPECT_NE(std::find(shard_ids->begin(), shard_ids->end(), ids[i]),
                shard_ids->end());
    }
    for (const auto& id : *shard_ids) {
      EXPECT_TRUE(seen_ids.insert(id).second) << id << " in two shards";
    }
  }
  EXPECT_EQ(std::count(owner.begin(), owner.end(), -1), 0);
  EXPECT_EQ(seen_ids.size(), 7u);
  // Sorted ids dealt in turn: dev0, dev3, dev6 to shard 0.
  EXPECT_THAT(*IdShardIds(ids, 3, 0), ElementsAre("dev0", "dev3", "dev6"));
}

TEST(IdShardIndices, Errors) {
  auto r = IdShardIndices({"a", "b", "a"}, 3, 0);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("2 distinct ids for 3 shards"));
  r = IdShardIndices({}, 1, 0);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("no ids"));
  EXPECT_FALSE(IdShardIndices({"a"}, 0, 0).ok());
  EXPECT_FALSE(IdShardIndices({"a", "b"}, 2, 2).ok());
  EXPECT_FALSE(IdShardIndices({"a", "b"}, 2, -1).ok());
}

TEST(ArrayData, SubsetAndCheck) {
  ArrayData d;
  d.feature_shape = {2};
  d.size = 3;
  d.features = {1, 2, 3, 4, 5, 6};
  d.labels = {0, 1, 2};
  d.ids = {"a", "b", "c"};
  ASSERT_TRUE(CheckArrayData(d).ok());
  const ArrayData s = Subset(d, {2, 0});
  EXPECT_EQ(s.size, 2);
  EXPECT_THAT(s.features, ElementsAre(5, 6, 1, 2));
  EXPECT_THAT(s.labels, ElementsAre(2, 0));
  EXPECT_THAT(s.ids, ElementsAre("c", "a"));
  EXPECT_TRUE(CheckArrayData(s).ok());

  ArrayData bad = d;
  bad.features.pop_back();
  EXPECT_FALSE(CheckArrayData(bad).ok());
  bad = d;
  bad.targets = {1, 2, 3};
  bad.target_dim = 1;
  EXPECT_FALSE(CheckArrayData(bad).ok());  // labels and targets
  bad = d;
  bad.labels[1] = -1;
  EXPECT_FALSE(CheckArrayData(bad).ok());
  bad = d;
  bad.features[0] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_FALSE(CheckArrayData(bad).ok());
  bad = d;
  bad.class_names = {"x", "y"};  // label 2 has no name
  EXPECT_FALSE(CheckArrayData(bad).ok());
  bad = d;
  bad.ids.pop_back();
  EXPECT_FALSE(CheckArrayData(bad).ok());
}

}  // namespace
}  // namespace fedfwd
