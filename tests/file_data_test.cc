// Users' own data in the data set layer (common/dataset.h): CSV files read
// into ImageSet (shape, labels, names, ids, limit), what the coordinator
// describes and the clients check, the id partition, and the config keys.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "common/config.h"
#include "common/dataset.h"
#include "common/partition.h"
#include "tests/testutil/synthetic_data.h"

namespace fedfwd {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class FileData : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = testing::MakeTempDir("fedfwd-file-data"); }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ + "/" + name) << text;
  }
  std::string dir_;
};

TEST_F(FileData, CsvBecomesFeaturesOfShapeOneByOneByD) {
  Write("train.csv", "a,b,label,site\n1,2,3,x\n4,5,0,y\n7,8,1,x\n10,11,2,z\n");
  FileDataOptions o;
  o.id = "site";
  auto set = LoadDataSplit("csv", o, dir_, Split::kTrain);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->size, 4);
  EXPECT_EQ(set->channels, 1);
  EXPECT_EQ(set->rows, 1);
  EXPECT_EQ(set->cols, 2);
  EXPECT_TRUE(set->pixels.empty());
  EXPECT_THAT(set->features, ElementsAre(1, 2, 4, 5, 7, 8, 10, 11));
  EXPECT_THAT(set->labels, ElementsAre(3, 0, 1, 2));
  EXPECT_THAT(set->ids, ElementsAre("x", "y", "x", "z"));
  // A limit keeps the first examples; Subset keeps features and ids.
  auto two = LoadDataSplit("csv", o, dir_, Split::kTrain, 2);
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_EQ(two->size, 2);
  EXPECT_THAT(two->features, ElementsAre(1, 2, 4, 5));
  ImageSet sub = Subset(*set, {3, 0});
  EXPECT_THAT(sub.features, ElementsAre(10, 11, 1, 2));
  EXPECT_THAT(sub.ids, ElementsAre("z", "x"));
  // Described: 4 classes from the largest label.
  auto info = DescribeFileData("csv", o, *set);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->num_classes, 4);
  EXPECT_EQ(info->cols, 2);
  EXPECT_EQ(info->mean, 0.0f);
  EXPECT_EQ(info->stddev, 1.0f);
}

// task: regression: float targets instead of labels, described as one
// output per target, kept by Subset, checked against the run.
TEST_F(FileData, RegressionTargetsFromCsv) {
  Write("train.csv", "a,b,target\n1,2,0.5\n4,5,-1.25\n7,8,3\n");
  FileDataOptions o;
  o.regression = true;
  auto set = LoadDataSplit("csv", o, dir_, Split::kTrain);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_TRUE(set->regression());
  EXPECT_EQ(set->target_dim, 1);
  EXPECT_TRUE(set->labels.empty());
  EXPECT_THAT(set->targets, ElementsAre(0.5f, -1.25f, 3.0f));
  EXPECT_THAT(set->features, ElementsAre(1, 2, 4, 5, 7, 8));
  ImageSet sub = Subset(*set, {2, 0});
  EXPECT_EQ(sub.size, 2);
  EXPECT_THAT(sub.targets, ElementsAre(3.0f, 0.5f));
  EXPECT_THAT(sub.features, ElementsAre(7, 8, 1, 2));
  auto info = DescribeFileData("csv", o, *set);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_TRUE(info->regression);
  EXPECT_EQ(info->num_classes, 1);
  // The same file read for a classification run: its float targets are
  // refused, naming the file and the task to set.
  FileDataOptions cls;
  cls.label = "target";
  auto refused = LoadDataSplit("csv", cls, dir_, Split::kTrain);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.status().message(), HasSubstr("train.csv"));
  // A classification split checked against a regression run.
  Write("test.csv", "a,b,label\n1,2,0\n");
  auto labels = LoadDataSplit("csv", FileDataOptions(), dir_, Split::kTest);
  ASSERT_TRUE(labels.ok()) << labels.status();
  EXPECT_THAT(CheckFileData(*labels, *info, "test.csv").message(),
              HasSubstr("regression"));
  // A missing target column names it.
  o.label = "progression";
  auto missing = LoadDataSplit("csv", o, dir_, Split::kTrain);
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("progression"));
}

TEST_F(FileData, ClassNamesAndTheChecksAgainstTheRun) {
  Write("test.csv", "f,label\n0.5,cat\n1.5,ant\n2.5,bee\n");
  auto test = LoadDataSplit("csv", {}, dir_, Split::kTest);
  ASSERT_TRUE(test.ok()) << test.status();
  EXPECT_THAT(test->class_names, ElementsAre("ant", "bee", "cat"));
  EXPECT_THAT(test->labels, ElementsAre(2, 0, 1));
  auto info = DatasetInfoFor("csv", {}, dir_);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->num_classes, 3);
  EXPECT_THAT(info->class_names, ElementsAre("ant", "bee", "cat"));

  // A client's data of another shape, or with a label beyond the classes.
  ImageSet wide = *test;
  wide.cols = 2;
  absl::Status s = CheckFileData(wide, *info, "client train.csv");
  EXPECT_THAT(s.message(), HasSubstr("client train.csv: examples of shape "
                                     "1x1x2, the run's are 1x1x1"));
  ImageSet more = *test;
  more.labels[1] = 3;
  s = CheckFileData(more, *info, "client train.csv");
  EXPECT_THAT(s.message(),
              HasSubstr("example 1 has label 3, the run has 3 classes"));
  // dataset.classes overrides the count found in the data.
  FileDataOptions ten;
  ten.classes = 10;
  auto info10 = DescribeFileData("csv", ten, *test);
  ASSERT_TRUE(info10.ok());
  EXPECT_EQ(info10->num_classes, 10);
}

TEST_F(FileData, ErrorsNameTheFile) {
  auto missing = LoadDataSplit("npz", {}, dir_, Split::kTrain);
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr(dir_ + "/train.npz"));
  Write("train.csv", "a,label\n1,0\n2,300\n");
  auto big = LoadDataSplit("csv", {}, dir_, Split::kTrain);
  ASSERT_FALSE(big.ok());
  EXPECT_THAT(big.status().message(),
              HasSubstr("example 1 has label 300; fedfwd takes at most 256"));
  Write("test.csv", "a,label\n1,0\n");
  FileDataOptions o;
  o.label = "y";
  auto no_label = LoadDataSplit("csv", o, dir_, Split::kTest);
  ASSERT_FALSE(no_label.ok());
  EXPECT_THAT(no_label.status().message(), HasSubstr("'y'"));
  auto no_dir = LoadDataSplit("csv", {}, "", Split::kTest);
  ASSERT_FALSE(no_dir.ok());
  EXPECT_THAT(no_dir.status().message(), HasSubstr("dataset.data_dir"));
}

// .npy pairs: train_x.npy and train_y.npy (and an id array), written here
// byte by byte in NumPy's format 1.0.
TEST_F(FileData, NpyPairsWithIds) {
  auto npy = [&](const std::string& name, const std::string& descr,
                 const std::string& shape, const std::string& payload) {
    std::string header = "{'descr': '" + descr +
                         "', 'fortran_order': False, 'shape': " + shape + ", }";
    while ((10 + header.size() + 1) % 64 != 0) header += ' ';
    header += '\n';
    std::string bytes = "\x93NUMPY\x01";
    bytes += '\0';
    bytes += static_cast<char>(header.size() & 0xff);
    bytes += static_cast<char>(header.size() >> 8);
    Write(name, bytes + header + payload);
  };
  const float x[6] = {1, 2, 3, 4, 5, 6};
  const int64_t y[3] = {1, 0, 1};
  const int32_t site[3] = {7, 8, 7};
  npy("train_x.npy", "<f4", "(3, 2)",
      std::string(reinterpret_cast<const char*>(x), sizeof(x)));
  npy("train_y.npy", "<i8", "(3,)",
      std::string(reinterpret_cast<const char*>(y), sizeof(y)));
  npy("train_site.npy", "<i4", "(3,)",
      std::string(reinterpret_cast<const char*>(site), sizeof(site)));
  FileDataOptions o;
  o.id = "site";
  auto set = LoadDataSplit("npy", o, dir_, Split::kTrain);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->cols, 2);
  EXPECT_THAT(set->features, ElementsAre(1, 2, 3, 4, 5, 6));
  EXPECT_THAT(set->labels, ElementsAre(1, 0, 1));
  EXPECT_THAT(set->ids, ElementsAre("7", "8", "7"));
  auto test = LoadDataSplit("npy", o, dir_, Split::kTest);
  ASSERT_FALSE(test.ok());
  EXPECT_THAT(test.status().message(), HasSubstr(dir_ + "/test_x.npy"));
}

TEST_F(FileData, IdPartitionKeepsEverySiteOnOneClient) {
  const std::vector<uint8_t> labels = {0, 1, 0, 1, 0, 1};
  const std::vector<std::string> ids = {"b", "a", "b", "c", "a", "c"};
  PartitionOptions o;
  o.type = "id";
  auto parts = PartitionIndices(labels, 2, 3, o, 1, ids);
  ASSERT_TRUE(parts.ok()) << parts.status();
  // Sorted ids a, b, c go to clients 0, 1, 2.
  EXPECT_THAT((*parts)[0], ElementsAre(1, 4));
  EXPECT_THAT((*parts)[1], ElementsAre(0, 2));
  EXPECT_THAT((*parts)[2], ElementsAre(3, 5));
  auto shard = ShardIndices(labels, 2, 3, 1, o, 1, ids);
  ASSERT_TRUE(shard.ok());
  EXPECT_EQ(*shard, (*parts)[1]);
  auto no_ids = ShardIndices(labels, 2, 3, 1, o, 1, {});
  ASSERT_FALSE(no_ids.ok());
  EXPECT_THAT(no_ids.status().message(), HasSubstr("dataset.id"));
}

TEST_F(FileData, ConfigKeys) {
  auto ok = ParseConfig(absl::StrCat("dataset: {name: csv, data_dir: ", dir_,
                                     ", label: y, id: site, classes: 5}\n"
                                     "partition: id\n"),
                        dir_, {}, "test");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->dataset.file.label, "y");
  EXPECT_EQ(ok->dataset.file.id, "site");
  EXPECT_EQ(ok->dataset.file.classes, 5);
  auto back = ParseConfig(ConfigToYaml(*ok), "/", {}, "written back");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->dataset.file.id, "site");

  struct Case {
    std::string yaml, says;
  };
  for (const Case& c : std::vector<Case>{
           {"dataset: {name: npz}\n", "needs data_dir"},
           {"dataset: {name: mnist, label: y}\n", "apply to dataset npz, npy"},
           {"dataset: {name: csv, data_dir: /d}\npartition: id\n",
            "'id' needs dataset.id"},
           {"dataset: {name: csv, data_dir: /d, classes: 300}\n",
            "dataset.classes"},
       }) {
    auto bad = ParseConfig(c.yaml, "/", {}, "test");
    ASSERT_FALSE(bad.ok()) << c.yaml;
    EXPECT_THAT(bad.status().message(), HasSubstr(c.says)) << c.yaml;
  }
}

}  // namespace
}  // namespace fedfwd
