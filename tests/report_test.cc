// fedfwd-report's pure pieces: metrics parsing, run loading, names,
// escaping, scales and ticks, SVG charts, the page, TensorBoard export.
#include "tools/report.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/tensorboard.h"
#include "tests/testutil/synthetic_data.h"

namespace fedfwd {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

namespace fs = std::filesystem;

// The attributes of every <polyline> of an SVG/HTML text, in order. A
// plain scan: std::regex recurses per character and overflows the stack on
// a 100k-point attribute.
struct Polyline {
  std::string run, points_attr;
  int64_t data_points = -1;
};
std::vector<Polyline> Polylines(const std::string& text) {
  std::vector<Polyline> out;
  for (size_t at = text.find("<polyline "); at != std::string::npos;
       at = text.find("<polyline ", at + 1)) {
    const size_t end = text.find('>', at);
    const std::string tag = text.substr(at, end - at);
    auto attr = [&](const std::string& name) -> std::optional<std::string> {
      const size_t p = tag.find(" " + name + "=\"");
      if (p == std::string::npos) return std::nullopt;
      const size_t v = p + name.size() + 3;
      return tag.substr(v, tag.find('"', v) - v);
    };
    Polyline p;
    p.run = attr("data-run").value_or("");
    p.points_attr = attr("points").value_or("");
    if (auto n = attr("data-points")) p.data_points = std::stoll(*n);
    out.push_back(p);
  }
  return out;
}

int64_t CountPairs(const std::string& points) {
  int64_t n = 0;
  for (absl::string_view pair :
       absl::StrSplit(points, ' ', absl::SkipWhitespace())) {
    EXPECT_EQ(std::count(pair.begin(), pair.end(), ','), 1) << pair;
    ++n;
  }
  return n;
}

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

class TempDir : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = testing::MakeTempDir("fedfwd-report"); }
  void TearDown() override { fs::remove_all(dir_); }
  std::string dir_;
};

TEST(EscapeHtml, EscapesEveryMarkupCharacter) {
  EXPECT_EQ(EscapeHtml("a<b>&\"c'd"), "a&lt;b&gt;&amp;&quot;c&#39;d");
  EXPECT_EQ(EscapeHtml("plain é"), "plain é");
  EXPECT_EQ(EscapeHtml(""), "");
}

TEST(ParseMetrics, RowsOfAFederatedRun) {
  const std::string text =
      "{\"round\":0,\"wall_s\":0,\"train_loss\":null,\"test_acc\":0.1,"
      "\"bytes_up\":300,\"bytes_down\":2000,\"clients\":0,\"lr\":0}\n"
      "{\"round\":1,\"wall_s\":0.5,\"train_loss\":2.25,\"test_acc\":null,"
      "\"bytes_up\":155,\"bytes_down\":0,\"clients\":3,\"lr\":0.05}\n"
      "\n"
      "{\"round\":2,\"wall_s\":1.0,\"train_loss\":2.0,\"test_acc\":0.4,"
      "\"bytes_up\":150,\"bytes_down\":10,\"clients\":3,\"lr\":0.05,"
      "\"epsilon\":1.5}\n";
  auto m = ParseMetricsJsonl(text, "m.jsonl", /*strict=*/false);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->index_key, "round");
  ASSERT_EQ(m->rows.size(), 3u);
  EXPECT_TRUE(m->skipped.empty());
  EXPECT_FALSE(m->truncated_tail);
  EXPECT_EQ(m->rows[0].index, 0);
  EXPECT_EQ(m->rows[0].test_acc, 0.1);
  EXPECT_FALSE(m->rows[0].train_loss.has_value());
  EXPECT_FALSE(m->rows[1].test_acc.has_value());
  EXPECT_EQ(m->rows[1].train_loss, 2.25);
  EXPECT_EQ(m->rows[2].bytes_up, 150);
  EXPECT_EQ(m->rows[2].bytes_down, 10);
  EXPECT_DOUBLE_EQ(m->rows[2].wall_s, 1.0);
  // Every numeric field but the index, in file order; nulls left out.
  std::vector<std::string> keys;
  for (const auto& [k, v] : m->rows[2].scalars) keys.push_back(k);
  EXPECT_THAT(keys, ElementsAre("wall_s", "train_loss", "test_acc", "bytes_up",
                                "bytes_down", "clients", "lr", "epsilon"));
  keys.clear();
  for (const auto& [k, v] : m->rows[1].scalars) keys.push_back(k);
  EXPECT_THAT(keys, ElementsAre("wall_s", "train_loss", "bytes_up",
                                "bytes_down", "clients", "lr"));
}

TEST(ParseMetrics, CentralRunUsesStep) {
  auto m = ParseMetricsJsonl(
      "{\"step\":100,\"wall_s\":3,\"train_loss\":0.5,\"test_acc\":0.9}\n"
      "{\"step\":200,\"wall_s\":6,\"train_loss\":0.4,\"test_acc\":0.92}\n",
      "c.jsonl", false);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->index_key, "step");
  ASSERT_EQ(m->rows.size(), 2u);
  EXPECT_EQ(m->rows[1].index, 200);
  EXPECT_EQ(m->rows[1].bytes_up, 0);
}

TEST(ParseMetrics, MalformedLinesAreSkippedAndNamed) {
  const std::string text =
      "{\"round\":0,\"wall_s\":0,\"test_acc\":0.1}\n"       // 1
      "not json\n"                                          // 2
      "[1,2]\n"                                             // 3
      "{\"wall_s\":1}\n"                                    // 4
      "{\"round\":1.5,\"wall_s\":1}\n"                      // 5
      "{\"round\":2}\n"                                     // 6
      "{\"round\":3,\"wall_s\":1,\"test_acc\":\"high\"}\n"  // 7
      "{\"round\":4,\"wall_s\":1,\"bytes_up\":-5}\n"        // 8
      "{\"step\":5,\"wall_s\":1}\n"                         // 9
      "{\"round\":6,\"wall_s\":2,\"test_acc\":0.5}\n";      // 10
  auto m = ParseMetricsJsonl(text, "runs/x/metrics.jsonl", false);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->rows.size(), 2u);
  EXPECT_EQ(m->rows[1].index, 6);
  ASSERT_EQ(m->skipped.size(), 8u);
  EXPECT_EQ(m->skipped[0], "runs/x/metrics.jsonl:2: not valid JSON");
  EXPECT_EQ(m->skipped[1], "runs/x/metrics.jsonl:3: not a JSON object");
  EXPECT_THAT(m->skipped[2], HasSubstr(":4: no \"round\""));
  EXPECT_THAT(m->skipped[3], HasSubstr(":5: \"round\" is not an integer"));
  EXPECT_THAT(m->skipped[4], HasSubstr(":6: \"wall_s\""));
  EXPECT_THAT(m->skipped[5], HasSubstr(":7: \"test_acc\" is neither"));
  EXPECT_THAT(m->skipped[6], HasSubstr(":8: \"bytes_up\""));
  EXPECT_THAT(m->skipped[7],
              HasSubstr(":9: has \"step\" but earlier rows have \"round\""));
}

TEST(ParseMetrics, StrictMakesAMalformedLineAnError) {
  auto m = ParseMetricsJsonl(
      "{\"round\":0,\"wall_s\":0}\n{\"round\":1,\n{\"round\":2,\"wall_s\":1}\n",
      "m.jsonl", /*strict=*/true);
  ASSERT_FALSE(m.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(m.status()));
  EXPECT_EQ(m.status().message(), "m.jsonl:2: not valid JSON");
}

TEST(ParseMetrics, IncompleteLastLineIsToleratedEvenWhenStrict) {
  const std::string text =
      "{\"round\":0,\"wall_s\":0}\n{\"round\":1,\"wall_s\":0.5}\n"
      "{\"round\":2,\"wall_s\":1,\"test_a";
  auto m = ParseMetricsJsonl(text, "m.jsonl", /*strict=*/true);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->rows.size(), 2u);
  EXPECT_TRUE(m->truncated_tail);
  EXPECT_TRUE(m->skipped.empty());
  // A complete object without its newline is a row, not a torn line.
  m = ParseMetricsJsonl("{\"round\":0,\"wall_s\":0}", "m.jsonl", true);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->rows.size(), 1u);
  EXPECT_FALSE(m->truncated_tail);
}

TEST(UniqueRunNames, BasenamesMadeUnique) {
  EXPECT_THAT(
      UniqueRunNames({"a/run", "b/run/", "/x/c/run//", "a/other", "run"}),
      ElementsAre("run", "run-2", "run-3", "other", "run-4"));
  const std::string cwd = fs::current_path().filename().string();
  EXPECT_THAT(UniqueRunNames({".", "./"}), ElementsAre(cwd, cwd + "-2"));
  EXPECT_THAT(UniqueRunNames({"x/y/.."}), ElementsAre("x"));
}

TEST(NiceTicks, CoverTheRangeInEvenNiceSteps) {
  EXPECT_THAT(NiceTicks(0, 1, 6),
              ElementsAre(0, 0.2, 0.4, 0.6000000000000001, 0.8, 1));
  for (auto [lo, hi] : std::vector<std::pair<double, double>>{{0.13, 0.87},
                                                              {0, 50},
                                                              {-3, 7},
                                                              {1e-4, 3e-4},
                                                              {12345, 987654},
                                                              {0, 100000}}) {
    const std::vector<double> t = NiceTicks(lo, hi, 6);
    ASSERT_GE(t.size(), 3u) << lo << " " << hi;
    ASSERT_LE(t.size(), 12u) << lo << " " << hi;
    EXPECT_LE(t.front(), lo);
    EXPECT_GE(t.back(), hi);
    const double step = t[1] - t[0];
    const double mant = step / std::pow(10, std::floor(std::log10(step)));
    EXPECT_TRUE(std::abs(mant - 1) < 1e-6 || std::abs(mant - 2) < 1e-6 ||
                std::abs(mant - 5) < 1e-6)
        << step;
    for (size_t i = 1; i < t.size(); ++i) {
      EXPECT_NEAR(t[i] - t[i - 1], step, step * 1e-9);
    }
  }
}

TEST(NiceTicks, DegenerateRangesAreWidened) {
  std::vector<double> t = NiceTicks(0.5, 0.5, 5);
  ASSERT_GE(t.size(), 2u);
  EXPECT_LT(t.front(), 0.5);
  EXPECT_GT(t.back(), 0.5);
  t = NiceTicks(0, 0, 5);
  EXPECT_LT(t.front(), 0);
  EXPECT_GT(t.back(), 0);
}

TEST(LogTicks, PowersOfTenAndInBetweenForShortRanges) {
  EXPECT_THAT(LogTicks(150, 2e6), ElementsAre(100, 1e3, 1e4, 1e5, 1e6, 1e7));
  EXPECT_THAT(LogTicks(1000, 1e5),
              ElementsAre(1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5));
  const std::vector<double> wide = LogTicks(1, 1e20);
  EXPECT_LE(wide.size(), 12u);
  EXPECT_EQ(wide.front(), 1);
  EXPECT_EQ(wide.back(), 1e20);
}

TEST(Scale, LinearAndLogMaps) {
  Scale lin{0, 10, 100, 200, false, 0};
  EXPECT_DOUBLE_EQ(lin.Map(0), 100);
  EXPECT_DOUBLE_EQ(lin.Map(10), 200);
  EXPECT_DOUBLE_EQ(lin.Map(2.5), 125);
  Scale y{0, 1, 300, 50, false, 0};  // y grows upwards
  EXPECT_DOUBLE_EQ(y.Map(1), 50);
  EXPECT_DOUBLE_EQ(y.Map(0.5), 175);
  Scale log{100, 1e6, 0, 400, true, 20};
  EXPECT_DOUBLE_EQ(log.Map(0), 0);  // zeros sit at the axis start
  EXPECT_DOUBLE_EQ(log.Map(100), 20);
  EXPECT_DOUBLE_EQ(log.Map(1e6), 400);
  EXPECT_NEAR(log.Map(1e4), 210, 1e-9);
}

TEST(FormatTick, NumbersAndBytes) {
  EXPECT_EQ(FormatTick(250, TickFormat::kNumber), "250");
  EXPECT_EQ(FormatTick(0.1 * 3, TickFormat::kNumber), "0.3");
  EXPECT_EQ(FormatTick(-2, TickFormat::kNumber), "-2");
  EXPECT_EQ(FormatTick(1e7, TickFormat::kNumber), "1e+07");
  EXPECT_EQ(FormatTick(0, TickFormat::kBytes), "0 B");
  EXPECT_EQ(FormatTick(999, TickFormat::kBytes), "999 B");
  EXPECT_EQ(FormatTick(1500000, TickFormat::kBytes), "1.5 MB");
  EXPECT_EQ(FormatTick(7.456e9, TickFormat::kBytes), "7.46 GB");
}

TEST(RenderSvgChart, OnePolylinePerSeriesWithAllItsPoints) {
  ChartSpec spec;
  spec.id = "c1";
  spec.title = "T & <t>";
  spec.x_label = "round";
  spec.y_label = "acc";
  std::vector<Series> series = {
      {"a\"<b>", {{0, 0.1}, {10, 0.5}, {20, 0.7}}},
      {"b", {{0, 0.2}}},
      {"empty", {}},
  };
  const std::string svg = RenderSvgChart(spec, series);
  EXPECT_THAT(svg, HasSubstr("data-chart=\"c1\""));
  EXPECT_THAT(svg, HasSubstr("T &amp; &lt;t&gt;"));
  EXPECT_THAT(svg, Not(HasSubstr("<t>")));
  EXPECT_THAT(svg, Not(HasSubstr("a\"<b>")));
  const std::vector<Polyline> lines = Polylines(svg);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0].run, "a&quot;&lt;b&gt;");
  EXPECT_EQ(lines[0].data_points, 3);
  EXPECT_EQ(CountPairs(lines[0].points_attr), 3);
  EXPECT_EQ(lines[1].data_points, 1);
  EXPECT_EQ(CountPairs(lines[1].points_attr), 1);
  EXPECT_EQ(lines[2].data_points, 0);
  EXPECT_EQ(lines[2].points_attr, "");
  // Legend entries and hover titles name the runs too.
  EXPECT_THAT(svg, HasSubstr("<title>a&quot;&lt;b&gt;: 3 points; last round "
                             "20, acc 0.7</title>"));
  EXPECT_THAT(svg, HasSubstr(">empty</text>"));
}

TEST(RenderSvgChart, PointsLieInsideThePlotArea) {
  ChartSpec spec;
  spec.id = "c";
  std::vector<Series> series = {{"r", {}}};
  for (int i = 0; i <= 100; ++i) {
    series[0].points.push_back({i * 3.0, std::sin(i / 7.0)});
  }
  const std::vector<Polyline> lines = Polylines(RenderSvgChart(spec, series));
  ASSERT_EQ(lines.size(), 1u);
  double min_x = 1e9, max_x = -1e9, min_y = 1e9, max_y = -1e9;
  for (absl::string_view pair :
       absl::StrSplit(lines[0].points_attr, ' ', absl::SkipWhitespace())) {
    const std::vector<std::string> xy = absl::StrSplit(pair, ',');
    const double x = std::stod(xy[0]), y = std::stod(xy[1]);
    min_x = std::min(min_x, x);
    max_x = std::max(max_x, x);
    min_y = std::min(min_y, y);
    max_y = std::max(max_y, y);
  }
  // The plot area is x in [78, 680], y in [40, 366] for a 900x420 chart.
  EXPECT_GE(min_x, 78);
  EXPECT_LE(max_x, 680);
  EXPECT_GE(min_y, 40);
  EXPECT_LE(max_y, 366);
  EXPECT_GT(max_x - min_x, 500);  // the data fills the width
  EXPECT_GT(max_y - min_y, 200);
}

TEST(RenderSvgChart, MaxPointsThinsButKeepsTheLastPoint) {
  ChartSpec spec;
  spec.id = "c";
  spec.max_points = 10;
  std::vector<Series> series = {{"r", {}}};
  for (int i = 0; i < 1001; ++i) series[0].points.push_back({i, i * 0.001});
  const std::string svg = RenderSvgChart(spec, series);
  const std::vector<Polyline> lines = Polylines(svg);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_LE(lines[0].data_points, 10);
  EXPECT_GE(lines[0].data_points, 5);
  EXPECT_EQ(CountPairs(lines[0].points_attr), lines[0].data_points);
  EXPECT_THAT(svg, HasSubstr("data-rows=\"1001\""));
  // The last point (x = 1000) is the right end of the x axis.
  const std::string last =
      lines[0].points_attr.substr(lines[0].points_attr.rfind(' ') + 1);
  EXPECT_EQ(last.substr(0, last.find(',')), "680.0");
}

TEST(RenderSvgChart, BytesAxisGoesLogWhenRangesDifferALot) {
  ChartSpec spec;
  spec.id = "b";
  spec.x_label = "bytes";
  spec.x_format = TickFormat::kBytes;
  spec.log_x_ratio = 100;
  std::vector<Series> series = {{"small", {{0, 0.1}, {1000, 0.5}}},
                                {"big", {{5e6, 0.2}, {8e8, 0.9}}}};
  std::string svg = RenderSvgChart(spec, series);
  EXPECT_THAT(svg, HasSubstr("bytes (log scale)"));
  EXPECT_THAT(svg, HasSubstr(">1 GB</text>"));
  EXPECT_THAT(svg, HasSubstr(">0 B</text>"));  // the zero column
  series = {{"a", {{1e6, 0.1}, {2e6, 0.5}}}, {"b", {{1.5e6, 0.2}}}};
  svg = RenderSvgChart(spec, series);
  EXPECT_THAT(svg, Not(HasSubstr("log scale")));
}

RunData MakeRun(const std::string& name) {
  RunData run;
  run.name = name;
  run.dir = "/runs/" + name;
  auto m = ParseMetricsJsonl(
      "{\"round\":0,\"wall_s\":0,\"train_loss\":null,\"test_acc\":0.1,"
      "\"bytes_up\":100,\"bytes_down\":1000}\n"
      "{\"round\":1,\"wall_s\":1,\"train_loss\":2.0,\"test_acc\":null,"
      "\"bytes_up\":10,\"bytes_down\":0}\n"
      "{\"round\":2,\"wall_s\":2,\"train_loss\":1.5,\"test_acc\":0.4,"
      "\"bytes_up\":10,\"bytes_down\":500}\n"
      "{\"round\":3,\"wall_s\":3,\"train_loss\":1.2,\"test_acc\":null,"
      "\"bytes_up\":10,\"bytes_down\":0}\n",
      "m", false);
  run.metrics = *m;
  run.start_unix = 1700000000;
  return run;
}

TEST(ChartPoints, AccuracyRowsAndLossRows) {
  const RunData run = MakeRun("r");
  EXPECT_THAT(AccuracyByIndex(run),
              ElementsAre(std::make_pair(0.0, 0.1), std::make_pair(2.0, 0.4)));
  EXPECT_THAT(AccuracyByWallTime(run),
              ElementsAre(std::make_pair(0.0, 0.1), std::make_pair(2.0, 0.4)));
  // Bytes of rows without test_acc still count towards later points.
  EXPECT_THAT(AccuracyByBytes(run), ElementsAre(std::make_pair(1100.0, 0.1),
                                                std::make_pair(1620.0, 0.4)));
  EXPECT_THAT(LossByIndex(run),
              ElementsAre(std::make_pair(1.0, 2.0), std::make_pair(2.0, 1.5),
                          std::make_pair(3.0, 1.2)));
}

TEST(RenderReportHtml, SelfContainedWithFourChartsAndTheTable) {
  RunData a = MakeRun("alpha");
  a.info.has_summary = true;
  a.info.status = "finished";
  a.info.final_test_acc = 0.4;
  a.info.model = "tiny";
  a.info.estimator = "jvp";
  a.info.targets = {{0.3, true, 2, 2.0, 1620}, {0.5, false, 0, 0, {}}};
  RunData b = MakeRun("<script>alert(1)</script>");
  b.metrics.skipped.push_back("m:7: not valid JSON");
  b.metrics.truncated_tail = true;
  ReportOptions options;
  options.title = "Runs & more";
  const std::string html = RenderReportHtml({a, b}, options);
  EXPECT_THAT(html, HasSubstr("<!DOCTYPE html>"));
  EXPECT_THAT(html, HasSubstr("<title>Runs &amp; more</title>"));
  EXPECT_THAT(html, Not(HasSubstr("<script")));
  EXPECT_THAT(html, Not(HasSubstr("src=")));
  EXPECT_THAT(html, Not(HasSubstr("href=")));
  EXPECT_THAT(html, Not(HasSubstr("@import")));
  for (const char* chart :
       {"acc_round", "acc_wall", "acc_bytes", "loss_round"}) {
    EXPECT_THAT(html, HasSubstr(absl::StrCat("data-chart=\"", chart, "\"")));
  }
  const std::vector<Polyline> lines = Polylines(html);
  ASSERT_EQ(lines.size(), 8u);  // 4 charts x 2 runs
  EXPECT_EQ(lines[0].data_points, 2);
  EXPECT_EQ(lines[6].data_points, 3);  // loss
  EXPECT_THAT(html,
              HasSubstr("0.3: round 2, 2.0 s, 1.62 kB; 0.5: not reached"));
  EXPECT_THAT(html, HasSubstr("m:7: not valid JSON"));
  EXPECT_THAT(html, HasSubstr("is incomplete (run still writing?)"));
}

// Regression runs: rows carry test_r2 and test_rmse; the table and the
// charts name R^2 and add the RMSE.
TEST(RenderReportHtml, RegressionRunsShowR2AndRmse) {
  RunData r;
  r.name = "reg";
  r.dir = "/runs/reg";
  auto m = ParseMetricsJsonl(
      "{\"round\":0,\"wall_s\":0,\"train_loss\":null,\"test_r2\":-0.1,"
      "\"test_rmse\":1.05,\"bytes_up\":1,\"bytes_down\":1}\n"
      "{\"round\":1,\"wall_s\":1,\"train_loss\":0.5,\"test_r2\":0.45,"
      "\"test_rmse\":0.7654,\"bytes_up\":1,\"bytes_down\":1}\n",
      "m", false);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->rows.size(), 2u);
  EXPECT_EQ(m->rows[1].test_acc, 0.45);
  EXPECT_EQ(m->rows[1].test_rmse, 0.7654);
  r.metrics = *m;
  r.info.has_summary = true;
  r.info.regression = true;
  r.info.final_test_acc = 0.45;
  r.info.final_test_rmse = 0.7654;
  const std::string html = RenderReportHtml({r}, ReportOptions());
  EXPECT_THAT(html, HasSubstr("final test R²"));
  EXPECT_THAT(html, HasSubstr("final test RMSE"));
  EXPECT_THAT(html, HasSubstr("0.7654"));
  EXPECT_THAT(html, HasSubstr("data-chart=\"rmse_round\""));
  EXPECT_THAT(html, HasSubstr("Test R² vs round"));
}

// Runs over emulated links get one accuracy-against-wall-time chart per
// link (a run without a link is on loopback), each with that link's runs.
TEST(RenderReportHtml, OneWallTimeChartPerLink) {
  RunData fg_home = MakeRun("fg-home");
  fg_home.info.link = "up=1mbit,down=10mbit,delay=40ms";
  RunData avg_home = MakeRun("fedavg-home");
  avg_home.info.link = "up=1mbit,down=10mbit,delay=40ms";
  RunData fg_edge = MakeRun("fg-edge");
  fg_edge.info.link = "rate=256kbit,delay=100ms";
  RunData fg_lo = MakeRun("fg-loopback");
  const std::string html =
      RenderReportHtml({fg_home, fg_lo, avg_home, fg_edge}, ReportOptions());
  EXPECT_THAT(html, HasSubstr("per link"));
  auto chart = [&](int i) {
    const std::string id = absl::StrCat("data-chart=\"acc_wall_link", i, "\"");
    const size_t at = html.find(id);
    EXPECT_NE(at, std::string::npos) << id;
    return html.substr(at, html.find("</svg>", at) - at);
  };
  const std::string home = chart(0), loopback = chart(1), edge = chart(2);
  EXPECT_THAT(html, Not(HasSubstr("data-chart=\"acc_wall_link3\"")));
  EXPECT_THAT(home, HasSubstr("Link up=1mbit,down=10mbit,delay=40ms"));
  EXPECT_THAT(home, HasSubstr("data-run=\"fg-home\""));
  EXPECT_THAT(home, HasSubstr("data-run=\"fedavg-home\""));
  EXPECT_THAT(home, Not(HasSubstr("data-run=\"fg-edge\"")));
  EXPECT_THAT(loopback, HasSubstr("Link loopback"));
  EXPECT_THAT(loopback, HasSubstr("data-run=\"fg-loopback\""));
  EXPECT_THAT(edge, HasSubstr("data-run=\"fg-edge\""));
  EXPECT_THAT(edge, Not(HasSubstr("data-run=\"fg-home\"")));
  // Without links: no such section.
  EXPECT_THAT(RenderReportHtml({fg_lo}, ReportOptions()),
              Not(HasSubstr("per link")));
}

TEST_F(TempDir, LoadRunErrorsNameTheProblem) {
  auto run = LoadRun(dir_ + "/missing", false);
  ASSERT_FALSE(run.ok());
  EXPECT_TRUE(absl::IsNotFound(run.status()));
  EXPECT_THAT(run.status().message(), HasSubstr("does not exist"));

  fs::create_directories(dir_ + "/nometrics");
  run = LoadRun(dir_ + "/nometrics", false);
  ASSERT_FALSE(run.ok());
  EXPECT_THAT(run.status().message(), HasSubstr("has no metrics.jsonl"));

  fs::create_directories(dir_ + "/empty");
  WriteText(dir_ + "/empty/metrics.jsonl", "");
  run = LoadRun(dir_ + "/empty", false);
  ASSERT_FALSE(run.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(run.status()));
  EXPECT_THAT(run.status().message(), HasSubstr("holds no metrics rows"));

  fs::create_directories(dir_ + "/garbage");
  WriteText(dir_ + "/garbage/metrics.jsonl", "oops\n");
  run = LoadRun(dir_ + "/garbage", false);
  ASSERT_FALSE(run.ok());
  EXPECT_THAT(run.status().message(),
              HasSubstr("garbage/metrics.jsonl:1: not valid JSON"));

  fs::create_directories(dir_ + "/badsummary");
  WriteText(dir_ + "/badsummary/metrics.jsonl", "{\"round\":0,\"wall_s\":0}\n");
  WriteText(dir_ + "/badsummary/summary.json", "{\"final");
  run = LoadRun(dir_ + "/badsummary", false);
  ASSERT_FALSE(run.ok());
  EXPECT_THAT(run.status().message(), HasSubstr("summary.json is not"));
}

TEST_F(TempDir, LoadRunReadsSummaryAndConfig) {
  const std::string run_dir = dir_ + "/fed";
  fs::create_directories(run_dir);
  WriteText(run_dir + "/metrics.jsonl",
            "{\"round\":0,\"wall_s\":0,\"test_acc\":0.1}\n"
            "{\"round\":1,\"wall_s\":4,\"train_loss\":1.0,\"test_acc\":0.3}\n");
  WriteText(run_dir + "/summary.json", R"({
    "final_test_acc": 0.3, "best_test_acc": 0.31, "rounds": 1,
    "link": "rate=10mbit",
    "interrupted": true, "wall_s": 4.5, "bytes_up_total": 310,
    "bytes_down_total": 9000,
    "targets": [{"target": 0.2, "reached": true, "round": 1, "wall_s": 4,
                 "bytes_up": 300, "bytes_down": 9000},
                {"target": 0.5, "reached": false}],
    "config": {"model": "tiny", "dataset": {"name": "mnist"},
               "estimator": "jvp", "clients": 3, "rounds": 50, "lr": 0.05}})");
  auto run = LoadRun(run_dir, false);
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->metrics.rows.size(), 2u);
  EXPECT_TRUE(run->info.has_summary);
  EXPECT_EQ(run->info.status, "interrupted");
  EXPECT_EQ(run->info.final_test_acc, 0.3);
  EXPECT_EQ(run->info.bytes_down_total, 9000);
  EXPECT_EQ(run->info.done, 1);
  EXPECT_EQ(run->info.link, "rate=10mbit");
  EXPECT_EQ(run->info.model, "tiny");
  EXPECT_EQ(run->info.dataset, "mnist");
  EXPECT_EQ(run->info.clients, "3");
  EXPECT_EQ(run->info.rounds, "50");
  EXPECT_EQ(run->info.lr, "0.05");
  ASSERT_EQ(run->info.targets.size(), 2u);
  EXPECT_TRUE(run->info.targets[0].reached);
  EXPECT_EQ(run->info.targets[0].bytes, 9300);
  EXPECT_FALSE(run->info.targets[1].reached);
  // Start = file time - last wall_s, so within a minute of now.
  const double now = std::chrono::duration<double>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
  EXPECT_NEAR(run->start_unix, now - 4, 60);

  // A run still going: no summary.json, highlights from config.yaml.
  const std::string live = dir_ + "/live";
  fs::create_directories(live);
  WriteText(live + "/metrics.jsonl",
            "{\"round\":0,\"wall_s\":0,\"test_acc\":0.1}\n{\"round\":1,");
  WriteText(live + "/config.yaml",
            "model: mlp\ndataset:\n  name: fashion-mnist\nclients: 4\n"
            "rounds: 500\nlr: 1.0e-4\nestimator: jvp\n");
  run = LoadRun(live, true);
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_TRUE(run->metrics.truncated_tail);
  EXPECT_FALSE(run->info.has_summary);
  EXPECT_THAT(run->info.status, HasSubstr("no summary.json"));
  EXPECT_EQ(run->info.model, "mlp");
  EXPECT_EQ(run->info.dataset, "fashion-mnist");
  EXPECT_EQ(run->info.rounds, "500");
}

TEST_F(TempDir, TensorBoardExportHoldsEveryRow) {
  const RunData run = MakeRun("exp");
  auto path = ExportTensorBoard(run, dir_ + "/tb", "host1");
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(*path, dir_ + "/tb/exp/events.out.tfevents.1700000000.host1");
  auto events = ReadEventFile(*path);
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->size(), 5u);  // file_version + one per row
  EXPECT_EQ((*events)[0].file_version(), "brain.Event:2");
  for (int i = 0; i < 4; ++i) {
    const tensorboard::Event& e = (*events)[i + 1];
    EXPECT_EQ(e.step(), i);
    EXPECT_DOUBLE_EQ(e.wall_time(), 1700000000.0 + i);
    std::map<std::string, float> values;
    for (const auto& v : e.summary().value())
      values[v.tag()] = v.simple_value();
    EXPECT_EQ(values.count("test_acc"), i % 2 == 0 ? 1u : 0u) << i;
    EXPECT_EQ(values.count("train_loss"), i == 0 ? 0u : 1u) << i;
    EXPECT_EQ(values.count("wall_s"), 1u);
    if (i == 2) {
      EXPECT_FLOAT_EQ(values["test_acc"], 0.4f);
      EXPECT_FLOAT_EQ(values["train_loss"], 1.5f);
      EXPECT_FLOAT_EQ(values["bytes_up"], 10);
      EXPECT_FLOAT_EQ(values["bytes_up_cumulative"], 120);
      EXPECT_FLOAT_EQ(values["bytes_down_cumulative"], 1500);
    }
  }
  // A second export into the same folder would double every point.
  auto again = ExportTensorBoard(run, dir_ + "/tb", "host1");
  ASSERT_FALSE(again.ok());
  EXPECT_TRUE(absl::IsAlreadyExists(again.status()));
  EXPECT_THAT(again.status().message(), HasSubstr("events.out.tfevents"));
}

TEST(RenderReportHtml, HundredThousandRowsRenderInSeconds) {
  std::string text;
  text.reserve(100000 * 140);
  for (int i = 0; i < 100000; ++i) {
    absl::StrAppend(&text, "{\"round\":", i, ",\"wall_s\":", i * 0.01,
                    ",\"train_loss\":", 2.0 / (1 + i * 0.001),
                    ",\"test_acc\":", i % 10 == 0 ? "0.5" : "null",
                    ",\"bytes_up\":155,\"bytes_down\":1000,\"clients\":10,"
                    "\"lr\":0.001}\n");
  }
  const auto start = std::chrono::steady_clock::now();
  auto m = ParseMetricsJsonl(text, "big", false);
  ASSERT_TRUE(m.ok());
  RunData run;
  run.name = "big";
  run.metrics = std::move(*m);
  const std::string html = RenderReportHtml({run}, ReportOptions());
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  const std::vector<Polyline> lines = Polylines(html);
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0].data_points, 10000);
  EXPECT_EQ(lines[3].data_points, 100000);
  EXPECT_EQ(CountPairs(lines[3].points_attr), 100000);
  // Seconds, not minutes, even on a loaded 2-core machine.
  EXPECT_LT(seconds, 10) << "parse + render took " << seconds << " s";
  std::printf("100k rows: parse + render %.2f s, %zu bytes of HTML\n", seconds,
              html.size());
}

}  // namespace
}  // namespace fedfwd
