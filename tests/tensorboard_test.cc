// CRC-32C against published vectors, TFRecord framing against records of a
// real TensorBoard event file, and a write / read-back round trip.
#include "common/tensorboard.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "common/crc32c.h"

namespace fedfwd {
namespace {

using ::testing::HasSubstr;

std::string Bytes(const char* data, size_t n) { return std::string(data, n); }

TEST(Crc32c, MatchesRfc3720Vectors) {
  // RFC 3720 (iSCSI), appendix B.4.
  std::string zeros(32, '\0');
  EXPECT_EQ(crc32c::Value(zeros), 0x8a9136aau);
  std::string ones(32, '\xff');
  EXPECT_EQ(crc32c::Value(ones), 0x62a8ab43u);
  std::string ascending(32, '\0'), descending(32, '\0');
  for (int i = 0; i < 32; ++i) {
    ascending[i] = static_cast<char>(i);
    descending[i] = static_cast<char>(31 - i);
  }
  EXPECT_EQ(crc32c::Value(ascending), 0x46dd794eu);
  EXPECT_EQ(crc32c::Value(descending), 0x113fdb5cu);
}

TEST(Crc32c, MatchesCheckValues) {
  // The CRC catalogue's check value for CRC-32/ISCSI.
  EXPECT_EQ(crc32c::Value("123456789"), 0xe3069283u);
  EXPECT_EQ(crc32c::Value(""), 0u);
  EXPECT_EQ(crc32c::Value("The quick brown fox jumps over the lazy dog"),
            0x22620404u);
}

TEST(Crc32c, ExtendEqualsWholeAtEverySplit) {
  std::string text;
  for (int i = 0; i < 300; ++i) text += static_cast<char>((i * 37 + 11) & 0xff);
  const uint32_t whole = crc32c::Value(text);
  for (size_t cut = 0; cut <= text.size(); ++cut) {
    const uint32_t head = crc32c::Value(text.data(), cut);
    EXPECT_EQ(crc32c::Extend(head, text.data() + cut, text.size() - cut), whole)
        << "split at " << cut;
  }
}

TEST(Crc32c, MaskMatchesTensorBoardAndInverts) {
  // TensorBoard's rustboard masked_crc.rs: the data CRC of a real record
  // holding Event(file_version="CRC test, one two").
  EXPECT_EQ(crc32c::Mask(crc32c::Value("\x1a\x11"
                                       "CRC test, one two")),
            0x5794d08au);
  EXPECT_EQ(crc32c::Mask(0x8a9136aau),
            ((0x8a9136aau >> 15) | (0x8a9136aau << 17)) + 0xa282ead8u);
  for (uint32_t v : {0u, 1u, 0x8a9136aau, 0xffffffffu, 0x12345678u}) {
    EXPECT_EQ(crc32c::Unmask(crc32c::Mask(v)), v);
    EXPECT_NE(crc32c::Mask(v), v);
  }
}

// Two records of a real event file (tf.summary.scalar("accuracy", 0.99,
// step=77)), as dumped in TensorBoard's rustboard tf_record.rs tests.
const char kRecord1Data[] =
    "\x09\x00\x00\x80\x38\x99\xd6\xd7\x41\x1a\x0d"
    "brain.Event:2";
const char kRecord1[] =
    "\x18\x00\x00\x00\x00\x00\x00\x00\xa3\x7f\x4b\x22"
    "\x09\x00\x00\x80\x38\x99\xd6\xd7\x41\x1a\x0d"
    "brain.Event:2"
    "\x12\x4b\x36\xab";
const char kRecord2[] =
    "\x32\x00\x00\x00\x00\x00\x00\x00\x24\x19\x56\xec"
    "\x09\xc4\x05\xb7\x3d\x99\xd6\xd7\x41"
    "\x10\x4d\x2a\x25"
    "\x0a\x23\x0a\x08"
    "accuracy"
    "\x42\x0a\x08\x01\x12\x00\x22\x04\xa4\x70\x7d\x3f\x4a"
    "\x0b\x0a\x09\x0a\x07"
    "scalars"
    "\xa5\x5b\x64\x33";

std::string RealFile() {
  return Bytes(kRecord1, sizeof kRecord1 - 1) +
         Bytes(kRecord2, sizeof kRecord2 - 1);
}

TEST(TfRecord, FramingMatchesARealEventFile) {
  const std::string data = Bytes(kRecord1Data, sizeof kRecord1Data - 1);
  ASSERT_EQ(data.size(), 24u);
  EXPECT_EQ(FrameTfRecord(data), Bytes(kRecord1, sizeof kRecord1 - 1));
}

TEST(TfRecord, OurEventSerializesAsTensorBoardsDoes) {
  // Same wall time, same file_version: byte-identical to TensorBoard's.
  double wall_time;
  std::memcpy(&wall_time, kRecord1Data + 1, 8);
  tensorboard::Event event;
  event.set_wall_time(wall_time);
  event.set_file_version(kEventFileVersion);
  EXPECT_EQ(event.SerializeAsString(),
            Bytes(kRecord1Data, sizeof kRecord1Data - 1));
}

TEST(TfRecord, ReadsARealEventFile) {
  auto events = DecodeEventFile(RealFile());
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->size(), 2u);
  EXPECT_EQ((*events)[0].file_version(), "brain.Event:2");
  EXPECT_GT((*events)[0].wall_time(), 1.5e9);  // a 2020 timestamp
  const tensorboard::Event& e = (*events)[1];
  EXPECT_EQ(e.step(), 77);
  ASSERT_TRUE(e.has_summary());
  ASSERT_EQ(e.summary().value_size(), 1);
  EXPECT_EQ(e.summary().value(0).tag(), "accuracy");
  EXPECT_EQ(e.summary().value(0).metadata().plugin_data().plugin_name(),
            "scalars");
  // TF2 writes scalars as tensors (field 8), which we do not declare.
  EXPECT_FALSE(e.summary().value(0).has_simple_value());
}

TEST(TfRecord, TruncationAtEveryByteKeepsTheCompleteRecords) {
  const std::string file = RealFile();
  const size_t first = sizeof kRecord1 - 1;
  for (size_t n = 0; n <= file.size(); ++n) {
    auto parsed = ParseTfRecords(absl::string_view(file).substr(0, n));
    ASSERT_TRUE(parsed.ok()) << n << ": " << parsed.status();
    const size_t want = n == file.size() ? 2 : n >= first ? 1 : 0;
    EXPECT_EQ(parsed->records.size(), want) << "cut at " << n;
    EXPECT_EQ(parsed->truncated_tail, n != 0 && n != first && n != file.size())
        << "cut at " << n;
  }
}

TEST(TfRecord, CorruptionIsReportedWithItsPlace) {
  std::string file = RealFile();
  std::string bad_length = file;
  bad_length[sizeof kRecord1 - 1] ^= 0x01;  // record 1's length
  auto parsed = ParseTfRecords(bad_length);
  ASSERT_FALSE(parsed.ok());
  EXPECT_TRUE(absl::IsDataLoss(parsed.status()));
  EXPECT_THAT(parsed.status().message(), HasSubstr("record 1 at byte 40"));
  EXPECT_THAT(parsed.status().message(), HasSubstr("length CRC"));

  std::string bad_data = file;
  bad_data[30] ^= 0x40;  // inside record 0's "brain.Event:2"
  parsed = ParseTfRecords(bad_data);
  ASSERT_FALSE(parsed.ok());
  EXPECT_THAT(parsed.status().message(), HasSubstr("record 0 at byte 0"));
  EXPECT_THAT(parsed.status().message(), HasSubstr("data CRC"));
}

TEST(TfRecord, EmptyRecordIsFramed) {
  const std::string framed = FrameTfRecord("");
  ASSERT_EQ(framed.size(), 16u);
  auto parsed = ParseTfRecords(framed);
  ASSERT_TRUE(parsed.ok());
  ASSERT_EQ(parsed->records.size(), 1u);
  EXPECT_EQ(parsed->records[0], "");
}

TEST(EventFile, WriteThenReadBack) {
  EventFileBuilder b(1700000000.25, "fedfwd-test");
  b.AddScalars(0, 1700000000.25, {{"test_acc", 0.125}});
  b.AddScalars(5, 1700000003.5,
               {{"train_loss", 2.5}, {"bytes_up", 155}, {"test_acc", 0.75}});
  b.AddScalars(6, 1700000004.0, {});  // nothing to add
  EXPECT_EQ(b.num_events(), 3);

  auto events = DecodeEventFile(b.bytes());
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->size(), 3u);
  const tensorboard::Event& first = (*events)[0];
  EXPECT_EQ(first.file_version(), "brain.Event:2");
  EXPECT_DOUBLE_EQ(first.wall_time(), 1700000000.25);
  EXPECT_EQ(first.source_metadata().writer(), "fedfwd-test");
  EXPECT_FALSE(first.has_summary());

  const tensorboard::Event& e0 = (*events)[1];
  EXPECT_EQ(e0.step(), 0);
  ASSERT_EQ(e0.summary().value_size(), 1);
  EXPECT_EQ(e0.summary().value(0).tag(), "test_acc");
  EXPECT_FLOAT_EQ(e0.summary().value(0).simple_value(), 0.125f);

  const tensorboard::Event& e5 = (*events)[2];
  EXPECT_EQ(e5.step(), 5);
  EXPECT_DOUBLE_EQ(e5.wall_time(), 1700000003.5);
  ASSERT_EQ(e5.summary().value_size(), 3);
  EXPECT_EQ(e5.summary().value(0).tag(), "train_loss");
  EXPECT_FLOAT_EQ(e5.summary().value(0).simple_value(), 2.5f);
  EXPECT_EQ(e5.summary().value(1).tag(), "bytes_up");
  EXPECT_FLOAT_EQ(e5.summary().value(1).simple_value(), 155.0f);
  EXPECT_EQ(e5.summary().value(2).tag(), "test_acc");
  EXPECT_FLOAT_EQ(e5.summary().value(2).simple_value(), 0.75f);

  // Record by record: the framing's CRCs are the masked CRC-32C values.
  auto records = ParseTfRecords(b.bytes());
  ASSERT_TRUE(records.ok());
  EXPECT_FALSE(records->truncated_tail);
  EXPECT_EQ(records->records.size(), 3u);
}

TEST(EventFile, NameHasTfeventsAndHost) {
  EXPECT_EQ(EventFileName(1700000000.9, "box"),
            "events.out.tfevents.1700000000.box");
}

TEST(EventFile, ReadMissingFileNamesIt) {
  auto events = ReadEventFile("/nonexistent/events.out.tfevents.1.x");
  ASSERT_FALSE(events.ok());
  EXPECT_THAT(events.status().message(), HasSubstr("/nonexistent/"));
}

TEST(EventFile, NonEventRecordIsDataLoss) {
  // A framed record whose payload is not a protobuf message (a varint
  // that never ends).
  auto events = DecodeEventFile(FrameTfRecord("\xff\xff"));
  ASSERT_FALSE(events.ok());
  EXPECT_TRUE(absl::IsDataLoss(events.status()));
}

}  // namespace
}  // namespace fedfwd
