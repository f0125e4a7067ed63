#include "common/dataset.h"

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testutil/synthetic_data.h"

namespace fedfwd {
namespace {

using ::testing::HasSubstr;

// An IDX file: magic 0x0000TTNN, big-endian dims, payload.
std::string MakeIdx(const std::vector<uint32_t>& dims,
                    const std::vector<uint8_t>& payload, int type = 0x08) {
  std::string out;
  out.push_back(0);
  out.push_back(0);
  out.push_back(static_cast<char>(type));
  out.push_back(static_cast<char>(dims.size()));
  for (uint32_t d : dims) {
    for (int shift = 24; shift >= 0; shift -= 8) {
      out.push_back(static_cast<char>((d >> shift) & 0xff));
    }
  }
  out.append(payload.begin(), payload.end());
  return out;
}

std::vector<uint8_t> Ramp(size_t n, int mod = 256) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i * 7 % mod);
  return v;
}

class IdxFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fedfwd_dataset_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string WriteRaw(const std::string& name, const std::string& bytes) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }
  std::string WriteGz(const std::string& name, const std::string& bytes) {
    const std::string path = dir_ + "/" + name;
    gzFile f = gzopen(path.c_str(), "wb");
    EXPECT_NE(f, nullptr);
    EXPECT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())),
              static_cast<int>(bytes.size()));
    gzclose(f);
    return path;
  }
  // A split of `n` 28x28 images whose labels are i % 10 unless given.
  void WriteSplit(const std::string& prefix, uint32_t n, bool gz,
                  std::vector<uint8_t> labels = {}) {
    if (labels.empty()) {
      for (uint32_t i = 0; i < n; ++i) labels.push_back(i % 10);
    }
    const std::string images = MakeIdx({n, 28, 28}, Ramp(n * 28 * 28));
    const std::string label_bytes =
        MakeIdx({static_cast<uint32_t>(labels.size())}, labels);
    const std::string suffix = gz ? ".gz" : "";
    auto write = [&](const std::string& name, const std::string& bytes) {
      gz ? WriteGz(name + suffix, bytes) : WriteRaw(name, bytes);
    };
    write(prefix + "-images-idx3-ubyte", images);
    write(prefix + "-labels-idx1-ubyte", label_bytes);
  }

  std::string dir_;
};

void ExpectErrorNaming(const absl::StatusOr<IdxArray>& r,
                       const std::string& file, const std::string& what) {
  ASSERT_FALSE(r.ok()) << "expected error: " << what;
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr(file));
  EXPECT_THAT(std::string(r.status().message()), HasSubstr(what));
}

TEST_F(IdxFiles, RawAndGzipRoundTrip) {
  const std::vector<uint8_t> payload = Ramp(2 * 3 * 5);
  const std::string bytes = MakeIdx({2, 3, 5}, payload);
  for (const std::string& path :
       {WriteRaw("a-idx3-ubyte", bytes), WriteGz("a-idx3-ubyte.gz", bytes),
        // Gzip is detected by content, not by name.
        WriteGz("gzip-without-suffix", bytes)}) {
    absl::StatusOr<IdxArray> a = ReadIdxFile(path);
    ASSERT_TRUE(a.ok()) << a.status();
    EXPECT_EQ(a->dims, (std::vector<int64_t>{2, 3, 5})) << path;
    EXPECT_EQ(a->data, payload) << path;
  }
}

TEST(Idx, EmptyPayloadIsValid) {
  absl::StatusOr<IdxArray> a = ParseIdx(MakeIdx({0, 28, 28}, {}), "empty");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->dims, (std::vector<int64_t>{0, 28, 28}));
  EXPECT_TRUE(a->data.empty());
}

TEST_F(IdxFiles, TruncatedHeaderNamesFile) {
  ExpectErrorNaming(ReadIdxFile(WriteRaw("short", std::string("\0\0", 2))),
                    "short", "truncated IDX header");
  // Magic says 3 dims but only 2 are present.
  std::string bytes = MakeIdx({4, 4, 4}, {}).substr(0, 12);
  ExpectErrorNaming(ReadIdxFile(WriteRaw("dims", bytes)), "dims",
                    "truncated IDX header");
}

TEST_F(IdxFiles, TruncatedPayloadSaysExpectedAndGot) {
  std::string bytes = MakeIdx({10, 3}, Ramp(30));
  bytes.resize(bytes.size() - 4);
  const std::string raw = WriteRaw("cut-raw", bytes);
  ExpectErrorNaming(ReadIdxFile(raw), "cut-raw", "expected 30 bytes, got 26");
  const std::string gz = WriteGz("cut.gz", bytes);
  ExpectErrorNaming(ReadIdxFile(gz), "cut.gz", "truncated IDX payload");
}

TEST_F(IdxFiles, TruncatedGzipStreamIsAnError) {
  const std::string path = WriteGz("full.gz", MakeIdx({100}, Ramp(100)));
  std::string gz;
  {
    std::ifstream in(path, std::ios::binary);
    gz.assign(std::istreambuf_iterator<char>(in), {});
  }
  ExpectErrorNaming(
      ReadIdxFile(WriteRaw("half.gz", gz.substr(0, gz.size() / 2))), "half.gz",
      "gzip");
}

TEST_F(IdxFiles, TrailingBytesAreAnError) {
  std::string bytes = MakeIdx({4}, Ramp(4)) + "xx";
  ExpectErrorNaming(ReadIdxFile(WriteRaw("long", bytes)), "long",
                    "trailing bytes");
}

TEST_F(IdxFiles, BadMagicNamesFile) {
  ExpectErrorNaming(ReadIdxFile(WriteRaw("text.idx", "hello world\n")),
                    "text.idx", "bad IDX magic");
}

TEST_F(IdxFiles, WrongTypeCodeNamesFile) {
  const std::string path = WriteRaw("floats", MakeIdx({1}, {0, 0, 0, 0}, 0x0D));
  ExpectErrorNaming(ReadIdxFile(path), "floats", "0x0d");
}

TEST(Idx, AbsurdDimsAreRejected) {
  absl::StatusOr<IdxArray> a =
      ParseIdx(MakeIdx({0xffffffffu, 0xffffffffu, 2}, {}), "huge");
  ASSERT_FALSE(a.ok());
  EXPECT_THAT(std::string(a.status().message()), HasSubstr("absurd"));
  EXPECT_THAT(std::string(a.status().message()), HasSubstr("huge"));
}

TEST(Idx, MissingFileIsNotFound) {
  absl::StatusOr<IdxArray> a = ReadIdxFile("/nonexistent/dir/x-idx1-ubyte");
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(a.status().message()),
              HasSubstr("/nonexistent/dir/x-idx1-ubyte"));
}

TEST_F(IdxFiles, LoadImageSetRawAndGz) {
  WriteSplit("train", 12, /*gz=*/false);
  WriteSplit("t10k", 5, /*gz=*/true);
  absl::StatusOr<ImageSet> train = LoadImageSet("mnist", dir_, Split::kTrain);
  ASSERT_TRUE(train.ok()) << train.status();
  EXPECT_EQ(train->size, 12);
  EXPECT_EQ(train->channels, 1);
  EXPECT_EQ(train->rows, 28);
  EXPECT_EQ(train->cols, 28);
  EXPECT_EQ(train->pixels, Ramp(12 * 28 * 28));
  EXPECT_EQ(train->labels[11], 1);

  absl::StatusOr<ImageSet> test =
      LoadImageSet("fashion-mnist", dir_, Split::kTest);
  ASSERT_TRUE(test.ok()) << test.status();
  EXPECT_EQ(test->size, 5);
  EXPECT_EQ(test->labels, (std::vector<uint8_t>{0, 1, 2, 3, 4}));
}

TEST_F(IdxFiles, LoadImageSetLimitKeepsFirst) {
  WriteSplit("train", 12, /*gz=*/true);
  absl::StatusOr<ImageSet> s = LoadImageSet("mnist", dir_, Split::kTrain, 3);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->size, 3);
  EXPECT_EQ(s->pixels, Ramp(3 * 28 * 28));
  EXPECT_EQ(s->labels, (std::vector<uint8_t>{0, 1, 2}));
  // A limit beyond the set keeps everything.
  s = LoadImageSet("mnist", dir_, Split::kTrain, 1000);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->size, 12);
}

TEST_F(IdxFiles, LabelOutOfRangeNamesFileAndIndex) {
  WriteSplit("train", 4, /*gz=*/false, {1, 2, 10, 3});
  absl::StatusOr<ImageSet> s = LoadImageSet("mnist", dir_, Split::kTrain);
  ASSERT_FALSE(s.ok());
  const std::string msg(s.status().message());
  EXPECT_THAT(msg, HasSubstr("train-labels-idx1-ubyte"));
  EXPECT_THAT(msg, HasSubstr("index 2"));
  EXPECT_THAT(msg, HasSubstr("label 10"));
}

TEST_F(IdxFiles, LabelCountMismatchIsAnError) {
  WriteSplit("train", 4, /*gz=*/false, {1, 2, 3});
  absl::StatusOr<ImageSet> s = LoadImageSet("mnist", dir_, Split::kTrain);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()),
              HasSubstr("train-labels-idx1-ubyte"));
}

TEST_F(IdxFiles, WrongImageDimsAreAnError) {
  WriteRaw("train-images-idx3-ubyte", MakeIdx({2, 32, 32}, Ramp(2 * 32 * 32)));
  WriteRaw("train-labels-idx1-ubyte", MakeIdx({2}, {0, 1}));
  absl::StatusOr<ImageSet> s = LoadImageSet("mnist", dir_, Split::kTrain);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("[2,32,32]"));
}

TEST_F(IdxFiles, MissingSplitNamesDirAndBothNames) {
  absl::StatusOr<ImageSet> s = LoadImageSet("mnist", dir_, Split::kTest);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kNotFound);
  const std::string msg(s.status().message());
  EXPECT_THAT(msg, HasSubstr(dir_));
  EXPECT_THAT(msg, HasSubstr("t10k-images-idx3-ubyte and "
                             "t10k-images-idx3-ubyte.gz"));
}

TEST(Dataset, UnknownDataset) {
  absl::StatusOr<ImageSet> s = LoadImageSet("svhn", "/tmp", Split::kTrain);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("svhn"));
}

TEST(Dataset, Info) {
  absl::StatusOr<DatasetInfo> m = GetDatasetInfo("mnist");
  ASSERT_TRUE(m.ok());
  EXPECT_FLOAT_EQ(m->mean, 0.1307f);
  EXPECT_FLOAT_EQ(m->stddev, 0.3081f);
  EXPECT_EQ(m->num_classes, 10);
  absl::StatusOr<DatasetInfo> f = GetDatasetInfo("fashion-mnist");
  ASSERT_TRUE(f.ok());
  EXPECT_FLOAT_EQ(f->mean, 0.2860f);
  EXPECT_EQ(f->rows, 28);
  absl::StatusOr<DatasetInfo> c = GetDatasetInfo("cifar10");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->channels, 3);
  EXPECT_EQ(c->rows, 32);
  EXPECT_FALSE(GetDatasetInfo("imagenet").ok());
}

TEST(Dataset, DefaultDataDir) {
  EXPECT_EQ(DefaultDataDir("fashion-mnist"),
            "/usr/share/datasets/fashion-mnist");
  EXPECT_EQ(DefaultDataDir("nope"), "");
  EXPECT_THAT(DefaultDataDir("mnist"), ::testing::EndsWith("data/mnist"));
}

TEST(IidShard, ShardsPartitionAllIndices) {
  for (int64_t n : {0, 1, 7, 1000, 1003}) {
    for (int k : {1, 3, 4, 10}) {
      std::vector<int64_t> all;
      size_t min_size = SIZE_MAX, max_size = 0;
      for (int s = 0; s < k; ++s) {
        std::vector<int64_t> shard = IidShardIndices(n, k, s, 42);
        min_size = std::min(min_size, shard.size());
        max_size = std::max(max_size, shard.size());
        all.insert(all.end(), shard.begin(), shard.end());
      }
      EXPECT_LE(max_size - min_size, 1u) << "n=" << n << " k=" << k;
      std::sort(all.begin(), all.end());
      ASSERT_EQ(all.size(), static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(all[i], i);
    }
  }
}

TEST(IidShard, DeterministicAndSeedDependent) {
  EXPECT_EQ(IidShardIndices(1000, 4, 2, 7), IidShardIndices(1000, 4, 2, 7));
  EXPECT_NE(IidShardIndices(1000, 4, 2, 7), IidShardIndices(1000, 4, 2, 8));
  // Not simply the identity order.
  std::vector<int64_t> s0 = IidShardIndices(1000, 4, 0, 7);
  EXPECT_FALSE(std::is_sorted(s0.begin(), s0.end()));
}

TEST(IidShard, BadArgumentsGiveEmpty) {
  EXPECT_TRUE(IidShardIndices(10, 4, 4, 1).empty());
  EXPECT_TRUE(IidShardIndices(10, 4, -1, 1).empty());
  EXPECT_TRUE(IidShardIndices(10, 0, 0, 1).empty());
}

TEST(IidShard, GoldenPartition) {
  // These values pin the cross-machine partition: every daemon must compute
  // the same shards from the same seed. A change here changes every
  // experiment's data split.
  std::vector<int64_t> s = IidShardIndices(1000, 4, 0, 42);
  ASSERT_EQ(s.size(), 250u);
  EXPECT_EQ(std::vector<int64_t>(s.begin(), s.begin() + 5),
            (std::vector<int64_t>{33, 437, 110, 976, 910}));
}

TEST(Subset, CopiesPixelsAndLabelsInOrder) {
  ImageSet set;
  set.size = 4;
  set.channels = 1;
  set.rows = 2;
  set.cols = 2;
  set.pixels = Ramp(16);
  set.labels = {0, 1, 2, 3};
  ImageSet sub = Subset(set, {3, 1});
  EXPECT_EQ(sub.size, 2);
  EXPECT_EQ(sub.rows, 2);
  EXPECT_EQ(sub.labels, (std::vector<uint8_t>{3, 1}));
  std::vector<uint8_t> expected(set.pixels.begin() + 12, set.pixels.end());
  expected.insert(expected.end(), set.pixels.begin() + 4,
                  set.pixels.begin() + 8);
  EXPECT_EQ(sub.pixels, expected);
}

// CIFAR-10 binary batches: records of 1 label byte + 3072 pixel bytes
// (R plane, G plane, B plane, each 32x32 row-major).

// The pixel every generated record holds at channel c, row r, column x for
// the example with global index g: distinct per channel, row and column, so
// a reordering (HWC instead of CHW, a swapped batch) shows.
uint8_t CifarPixel(int64_t g, int c, int r, int x) {
  return static_cast<uint8_t>((g * 11 + c * 85 + r * 5 + x * 3) % 256);
}

std::string CifarRecords(int64_t first, int64_t n) {
  std::string out;
  for (int64_t g = first; g < first + n; ++g) {
    out.push_back(static_cast<char>(g % 10));
    for (int c = 0; c < 3; ++c) {
      for (int r = 0; r < 32; ++r) {
        for (int x = 0; x < 32; ++x) {
          out.push_back(static_cast<char>(CifarPixel(g, c, r, x)));
        }
      }
    }
  }
  return out;
}

class CifarFiles : public ::testing::Test {
 protected:
  // Sizes of data_batch_1..5: different, so the order shows.
  static constexpr int64_t kBatchSizes[5] = {3, 2, 4, 1, 2};
  static constexpr int64_t kTrainSize = 12;
  static constexpr int64_t kTestSize = 3;

  void SetUp() override {
    dir_ = testing::MakeTempDir("fedfwd_cifar_test_");
    ASSERT_FALSE(dir_.empty());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Write(const std::string& folder, const std::string& name,
                    const std::string& bytes) {
    std::filesystem::create_directories(folder);
    const std::string path = folder + "/" + name;
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }
  // All six files into `folder`; test examples have global indices 100+.
  void WriteAll(const std::string& folder) {
    int64_t first = 0;
    for (int b = 0; b < 5; ++b) {
      Write(folder, "data_batch_" + std::to_string(b + 1) + ".bin",
            CifarRecords(first, kBatchSizes[b]));
      first += kBatchSizes[b];
    }
    Write(folder, "test_batch.bin", CifarRecords(100, kTestSize));
  }

  // Every pixel and label of `set` is that of global indices first, first+1..
  static void ExpectExamples(const ImageSet& set, int64_t first, int64_t n) {
    ASSERT_EQ(set.size, n);
    EXPECT_EQ(set.channels, 3);
    EXPECT_EQ(set.rows, 32);
    EXPECT_EQ(set.cols, 32);
    ASSERT_EQ(set.pixels.size(), static_cast<size_t>(n * 3072));
    ASSERT_EQ(set.labels.size(), static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      const int64_t g = first + i;
      EXPECT_EQ(set.labels[i], g % 10) << "example " << i;
      int bad = 0;
      for (int c = 0; c < 3; ++c) {
        for (int r = 0; r < 32; ++r) {
          for (int x = 0; x < 32; ++x) {
            const size_t at = i * 3072 + c * 1024 + r * 32 + x;
            bad += set.pixels[at] != CifarPixel(g, c, r, x);
          }
        }
      }
      EXPECT_EQ(bad, 0) << "example " << i << " (global " << g << ")";
    }
  }

  std::string dir_;
};

TEST_F(CifarFiles, TrainConcatenatesTheFiveBatchesInOrder) {
  WriteAll(dir_);
  absl::StatusOr<ImageSet> train = LoadImageSet("cifar10", dir_, Split::kTrain);
  ASSERT_TRUE(train.ok()) << train.status();
  ExpectExamples(*train, 0, kTrainSize);
  absl::StatusOr<ImageSet> test = LoadImageSet("cifar10", dir_, Split::kTest);
  ASSERT_TRUE(test.ok()) << test.status();
  ExpectExamples(*test, 100, kTestSize);
}

TEST(Cifar, PixelsStayInChannelPlanes) {
  // One record: R plane 10, G plane 20, B plane 30, with one marked pixel in
  // each plane. The set is NCHW, as the file is.
  std::string record(1 + 3072, '\0');
  record[0] = 7;
  std::fill(record.begin() + 1, record.begin() + 1 + 1024, 10);
  std::fill(record.begin() + 1 + 1024, record.begin() + 1 + 2048, 20);
  std::fill(record.begin() + 1 + 2048, record.end(), 30);
  record[1 + 0 * 1024 + 0 * 32 + 1] = static_cast<char>(200);    // R(0,1)
  record[1 + 1 * 1024 + 2 * 32 + 3] = static_cast<char>(201);    // G(2,3)
  record[1 + 2 * 1024 + 31 * 32 + 31] = static_cast<char>(202);  // B(31,31)
  absl::StatusOr<ImageSet> set = ParseCifarBatch(record, "mem");
  ASSERT_TRUE(set.ok()) << set.status();
  ASSERT_EQ(set->size, 1);
  EXPECT_EQ(set->labels, std::vector<uint8_t>{7});
  const std::vector<uint8_t>& px = set->pixels;
  EXPECT_EQ(px[0], 10);
  EXPECT_EQ(px[1], 200);
  EXPECT_EQ(px[1023], 10);
  EXPECT_EQ(px[1024], 20);
  EXPECT_EQ(px[1024 + 2 * 32 + 3], 201);
  EXPECT_EQ(px[2047], 20);
  EXPECT_EQ(px[2048], 30);
  EXPECT_EQ(px[3071], 202);
  EXPECT_EQ(std::count(px.begin(), px.end(), 10), 1023);
  EXPECT_EQ(std::count(px.begin(), px.end(), 20), 1023);
  EXPECT_EQ(std::count(px.begin(), px.end(), 30), 1023);
}

TEST_F(CifarFiles, FilesInTheTarballSubfolderAreFound) {
  const std::string sub = dir_ + "/cifar-10-batches-bin";
  WriteAll(sub);
  absl::StatusOr<ImageSet> train = LoadImageSet("cifar10", dir_, Split::kTrain);
  ASSERT_TRUE(train.ok()) << train.status();
  ExpectExamples(*train, 0, kTrainSize);
  absl::StatusOr<ImageSet> test = LoadImageSet("cifar10", sub, Split::kTest);
  ASSERT_TRUE(test.ok()) << test.status();
  ExpectExamples(*test, 100, kTestSize);
}

TEST_F(CifarFiles, FilesDirectlyInDirWinOverTheSubfolder) {
  WriteAll(dir_);
  const std::string sub = dir_ + "/cifar-10-batches-bin";
  Write(sub, "test_batch.bin", CifarRecords(500, 1));
  absl::StatusOr<ImageSet> test = LoadImageSet("cifar10", dir_, Split::kTest);
  ASSERT_TRUE(test.ok()) << test.status();
  ExpectExamples(*test, 100, kTestSize);
}

TEST_F(CifarFiles, LimitKeepsTheFirstExamplesAcrossBatches) {
  WriteAll(dir_);
  for (int64_t limit : {1, 3, 4, 9, 12}) {
    absl::StatusOr<ImageSet> s =
        LoadImageSet("cifar10", dir_, Split::kTrain, limit);
    ASSERT_TRUE(s.ok()) << s.status();
    ExpectExamples(*s, 0, limit);
  }
  absl::StatusOr<ImageSet> all =
      LoadImageSet("cifar10", dir_, Split::kTrain, 1000);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->size, kTrainSize);
  EXPECT_FALSE(LoadImageSet("cifar10", dir_, Split::kTrain, -1).ok());
}

TEST_F(CifarFiles, LimitReadsOnlyTheBatchesItNeeds) {
  WriteAll(dir_);
  // A damaged later batch does not matter when the limit ends before it.
  Write(dir_, "data_batch_3.bin", "garbage");
  absl::StatusOr<ImageSet> s = LoadImageSet("cifar10", dir_, Split::kTrain, 5);
  ASSERT_TRUE(s.ok()) << s.status();
  ExpectExamples(*s, 0, 5);
  EXPECT_FALSE(LoadImageSet("cifar10", dir_, Split::kTrain, 6).ok());
}

TEST_F(CifarFiles, TruncatedFileNamesFileAndRecordSize) {
  WriteAll(dir_);
  std::string bytes = CifarRecords(100, 2);
  bytes.resize(bytes.size() - 5);
  const std::string path = Write(dir_, "test_batch.bin", bytes);
  absl::StatusOr<ImageSet> s = LoadImageSet("cifar10", dir_, Split::kTest);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string msg(s.status().message());
  EXPECT_THAT(msg, HasSubstr(path));
  EXPECT_THAT(msg, HasSubstr("3073"));
  EXPECT_THAT(msg, HasSubstr("truncated"));
}

TEST_F(CifarFiles, LabelAboveNineNamesFileAndRecord) {
  WriteAll(dir_);
  std::string bytes = CifarRecords(0, 4);
  bytes[2 * 3073] = 10;
  const std::string path = Write(dir_, "data_batch_2.bin", bytes);
  absl::StatusOr<ImageSet> s = LoadImageSet("cifar10", dir_, Split::kTrain);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string msg(s.status().message());
  EXPECT_THAT(msg, HasSubstr(path));
  EXPECT_THAT(msg, HasSubstr("label 10"));
  EXPECT_THAT(msg, HasSubstr("record 2"));
}

TEST_F(CifarFiles, EmptyFileIsAnError) {
  WriteAll(dir_);
  const std::string path = Write(dir_, "data_batch_1.bin", "");
  absl::StatusOr<ImageSet> s = LoadImageSet("cifar10", dir_, Split::kTrain);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr(path));
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("empty"));
}

TEST_F(CifarFiles, MissingBatchSaysWhichFileAndWhereToGetIt) {
  WriteAll(dir_);
  std::filesystem::remove(dir_ + "/data_batch_4.bin");
  absl::StatusOr<ImageSet> s = LoadImageSet("cifar10", dir_, Split::kTrain);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kNotFound);
  const std::string msg(s.status().message());
  EXPECT_THAT(msg, HasSubstr("missing data_batch_4.bin in '" + dir_ + "'"));
  EXPECT_THAT(msg, HasSubstr("data_batch_1.bin .. data_batch_5.bin"));
  EXPECT_THAT(msg, HasSubstr("cifar-10-batches-bin"));
  EXPECT_THAT(msg, HasSubstr("https://www.cs.toronto.edu/~kriz/cifar-10-binary."
                             "tar.gz"));
  EXPECT_THAT(msg, HasSubstr("dataset.data_dir"));
  // The test split is complete: it still loads.
  EXPECT_TRUE(LoadImageSet("cifar10", dir_, Split::kTest).ok());
}

TEST_F(CifarFiles, EmptyDirNamesTheTestFileAndTheTarball) {
  Write(dir_, "cifar-10-binary.tar.gz", "not really");
  absl::StatusOr<ImageSet> s = LoadImageSet("cifar10", dir_, Split::kTest);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kNotFound);
  const std::string msg(s.status().message());
  EXPECT_THAT(msg, HasSubstr("test_batch.bin"));
  EXPECT_THAT(msg, HasSubstr(dir_));
  EXPECT_THAT(msg, HasSubstr("extract it"));
}

TEST(Cifar, ParseFromMemoryChecksSize) {
  EXPECT_THAT(std::string(ParseCifarBatch("", "x.bin").status().message()),
              HasSubstr("empty"));
  absl::StatusOr<ImageSet> two = ParseCifarBatch(CifarRecords(5, 2), "m");
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_EQ(two->size, 2);
  EXPECT_EQ(two->labels, (std::vector<uint8_t>{5, 6}));
  absl::StatusOr<ImageSet> one = ParseCifarBatch(CifarRecords(5, 2), "m", 1);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->size, 1);
  EXPECT_EQ(one->pixels.size(), 3072u);
  // CIFAR-100's 2 label bytes per record (3074) are not CIFAR-10.
  EXPECT_FALSE(ParseCifarBatch(std::string(3074, '\0'), "c100.bin").ok());
}

TEST(Cifar, InfoAndDefaultDir) {
  absl::StatusOr<DatasetInfo> c = GetDatasetInfo("cifar10");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->channels, 3);
  EXPECT_EQ(c->rows, 32);
  EXPECT_EQ(c->cols, 32);
  EXPECT_EQ(c->num_classes, 10);
  EXPECT_FLOAT_EQ(c->mean, 0.4734f);
  EXPECT_FLOAT_EQ(c->stddev, 0.2516f);

  const char* old = std::getenv("FEDFWD_DATA");
  const std::string saved = old != nullptr ? old : "";
  setenv("FEDFWD_DATA", "/some/where", 1);
  EXPECT_EQ(DefaultDataDir("cifar10"), "/some/where/cifar10");
  unsetenv("FEDFWD_DATA");
  EXPECT_THAT(DefaultDataDir("cifar10"), ::testing::EndsWith("data/cifar10"));
  if (old != nullptr) setenv("FEDFWD_DATA", saved.c_str(), 1);
}

}  // namespace
}  // namespace fedfwd
