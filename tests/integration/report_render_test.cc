// fedfwd-report end to end: writes small run folders, runs the real
// fedfwd-report, renders its page in headless Chromium and checks the DOM
// Chromium built (every run is a series in every chart, with one point per
// metrics row that has the chart's value) and a screenshot (the runs'
// colours are on screen). Skipped only when no Chromium is installed.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tests/testutil/process.h"
#include "tests/testutil/synthetic_data.h"

namespace fedfwd::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string FindChromium() {
  if (const char* env = std::getenv("FEDFWD_CHROMIUM"); env && *env) {
    return env;
  }
  const char* path = std::getenv("PATH");
  std::vector<std::string> dirs =
      absl::StrSplit(path ? path : "/usr/bin:/bin", ':', absl::SkipEmpty());
  dirs.push_back("/usr/bin");
  for (const std::string& dir : dirs) {
    for (const char* name :
         {"chromium", "chromium-browser", "google-chrome", "chrome"}) {
      const std::string p = dir + "/" + name;
      if (access(p.c_str(), X_OK) == 0) return p;
    }
  }
  return "";
}

std::string Unescape(std::string s) {
  const std::pair<const char*, const char*> entities[] = {
      {"&lt;", "<"},  {"&gt;", ">"},          {"&quot;", "\""},
      {"&#39;", "'"}, {"&nbsp;", "\xc2\xa0"}, {"&amp;", "&"}};
  for (const auto& [from, to] : entities) {
    for (size_t p = s.find(from); p != std::string::npos;
         p = s.find(from, p + std::strlen(to))) {
      s.replace(p, std::strlen(from), to);
    }
  }
  return s;
}

// A run folder's metrics, and what each chart must show for it.
struct TestRun {
  std::string dir;   // folder
  std::string name;  // expected run name
  std::string metrics;
  int64_t acc_rows = 0;   // rows whose test_acc is a number
  int64_t loss_rows = 0;  // rows whose train_loss is a number
};

// Federated rows: test_acc every `eval_every` rounds (and round 0),
// train_loss from round 1 on.
TestRun Federated(const std::string& dir, const std::string& name, int rounds,
                  int eval_every) {
  TestRun r{dir, name, "", 0, 0};
  for (int i = 0; i <= rounds; ++i) {
    const bool eval = i % eval_every == 0;
    absl::StrAppend(
        &r.metrics, "{\"round\":", i, ",\"wall_s\":", i * 0.25,
        ",\"train_loss\":", i == 0 ? "null" : absl::StrCat(2.3 - 0.05 * i),
        ",\"test_acc\":", eval ? absl::StrCat(0.1 + 0.02 * i) : "null",
        ",\"bytes_up\":", 150 + i, ",\"bytes_down\":", i == 0 ? 2000 : 40,
        ",\"clients\":3,\"lr\":0.05}\n");
    r.acc_rows += eval ? 1 : 0;
    r.loss_rows += i == 0 ? 0 : 1;
  }
  return r;
}

// Parsed from Chromium's serialized DOM.
struct DomSeries {
  int64_t data_points = -1;
  int64_t points_in_attr = -1;  // coordinate pairs in `points`
};
using DomCharts = std::map<std::string, std::map<std::string, DomSeries>>;

int64_t CountPairs(const std::string& points) {
  std::vector<std::string> numbers =
      absl::StrSplit(points, absl::ByAnyChar(" \t\n\r,"), absl::SkipEmpty());
  for (const std::string& n : numbers) {
    char* end = nullptr;
    std::strtod(n.c_str(), &end);
    if (end == n.c_str() || *end != '\0') return -1;  // not a number
  }
  return numbers.size() % 2 == 0 ? static_cast<int64_t>(numbers.size() / 2)
                                 : -1;
}

// A plain scan, not std::regex, which recurses per character and can
// overflow the stack on long attributes.
std::string Attr(const std::string& tag, const std::string& name) {
  const size_t p = tag.find(" " + name + "=\"");
  if (p == std::string::npos) return "";
  const size_t v = p + name.size() + 3;
  return Unescape(tag.substr(v, tag.find('"', v) - v));
}

DomCharts ParseDom(const std::string& dom) {
  DomCharts charts;
  for (size_t s = dom.find("<svg"); s != std::string::npos;
       s = dom.find("<svg", s + 1)) {
    const size_t open_end = dom.find('>', s);
    const std::string chart = Attr(dom.substr(s, open_end - s), "data-chart");
    if (chart.empty()) continue;
    const size_t end = dom.find("</svg>", open_end);
    const std::string body = dom.substr(open_end, end - open_end);
    auto& series = charts[chart];
    for (size_t p = body.find("<polyline "); p != std::string::npos;
         p = body.find("<polyline ", p + 1)) {
      const std::string tag = body.substr(p, body.find('>', p) - p);
      const std::string run = Attr(tag, "data-run");
      DomSeries d;
      const std::string n = Attr(tag, "data-points");
      if (!n.empty()) d.data_points = std::stoll(n);
      if (tag.find(" points=\"") != std::string::npos) {
        d.points_in_attr = CountPairs(Attr(tag, "points"));
      }
      EXPECT_EQ(series.count(run), 0u) << "run " << run << " twice in chart";
      series[run] = d;
    }
  }
  return charts;
}

// Decodes an 8-bit RGB or RGBA, non-interlaced PNG (what Chromium's
// screenshots are) into RGB triples; empty on anything else.
std::vector<uint8_t> DecodePng(const std::string& png, int* width,
                               int* height) {
  if (png.size() < 8 || png.compare(0, 8, "\x89PNG\r\n\x1a\n") != 0) return {};
  auto be32 = [&](size_t at) {
    return (uint32_t{static_cast<uint8_t>(png[at])} << 24) |
           (uint32_t{static_cast<uint8_t>(png[at + 1])} << 16) |
           (uint32_t{static_cast<uint8_t>(png[at + 2])} << 8) |
           uint32_t{static_cast<uint8_t>(png[at + 3])};
  };
  std::string idat;
  int channels = 0;
  for (size_t pos = 8; pos + 12 <= png.size();) {
    const uint32_t len = be32(pos);
    const std::string type = png.substr(pos + 4, 4);
    if (pos + 12 + len > png.size()) return {};
    if (type == "IHDR") {
      *width = static_cast<int>(be32(pos + 8));
      *height = static_cast<int>(be32(pos + 12));
      const int depth = png[pos + 16], color = png[pos + 17];
      const int interlace = png[pos + 20];
      if (depth != 8 || interlace != 0 || (color != 2 && color != 6)) return {};
      channels = color == 2 ? 3 : 4;
    } else if (type == "IDAT") {
      idat += png.substr(pos + 8, len);
    }
    pos += 12 + len;
  }
  if (channels == 0) return {};
  const size_t stride = static_cast<size_t>(*width) * channels;
  std::vector<uint8_t> raw((stride + 1) * *height);
  uLongf raw_len = raw.size();
  if (uncompress(raw.data(), &raw_len,
                 reinterpret_cast<const Bytef*>(idat.data()),
                 idat.size()) != Z_OK ||
      raw_len != raw.size()) {
    return {};
  }
  std::vector<uint8_t> img(stride * *height), rgb;
  for (int y = 0; y < *height; ++y) {
    const uint8_t filter = raw[y * (stride + 1)];
    const uint8_t* in = &raw[y * (stride + 1) + 1];
    uint8_t* out = &img[y * stride];
    const uint8_t* up = y > 0 ? &img[(y - 1) * stride] : nullptr;
    for (size_t x = 0; x < stride; ++x) {
      const int a = x >= static_cast<size_t>(channels) ? out[x - channels] : 0;
      const int b = up ? up[x] : 0;
      const int c =
          up && x >= static_cast<size_t>(channels) ? up[x - channels] : 0;
      int pred = 0;
      switch (filter) {
        case 0:
          break;
        case 1:
          pred = a;
          break;
        case 2:
          pred = b;
          break;
        case 3:
          pred = (a + b) / 2;
          break;
        case 4: {
          const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b),
                    pc = std::abs(p - c);
          pred = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
          break;
        }
        default:
          return {};
      }
      out[x] = static_cast<uint8_t>(in[x] + pred);
    }
  }
  for (size_t i = 0; i < img.size(); i += channels) {
    rgb.insert(rgb.end(), {img[i], img[i + 1], img[i + 2]});
  }
  return rgb;
}

class ReportRender : public ::testing::Test {
 protected:
  void SetUp() override {
    chromium_ = FindChromium();
    if (chromium_.empty()) {
      GTEST_SKIP() << "no chromium binary found (apt-get install chromium, "
                      "or set FEDFWD_CHROMIUM)";
    }
    dir_ = MakeTempDir("fedfwd-report-render");
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  // Runs a shell command line with a bound; its exit code.
  int Shell(const std::string& command, const std::string& log,
            absl::Duration timeout) {
    ChildProcess child({"/bin/bash", "-c", command}, log);
    const std::optional<int> code = child.Wait(timeout);
    EXPECT_TRUE(code.has_value()) << "timed out: " << command;
    return code.value_or(-1);
  }

  std::string ChromiumFlags(const std::string& profile) {
    return absl::StrCat(
        "'", chromium_,
        "' --headless --no-sandbox --disable-gpu --disable-dev-shm-usage "
        "--no-first-run --hide-scrollbars "
        "--user-data-dir='",
        dir_, "/", profile, "'");
  }

  std::string chromium_;
  std::string dir_;
};

TEST_F(ReportRender, EveryRunIsASeriesWithOnePointPerRow) {
  // 1. federated, 22 rounds, evaluated every 5;
  // 2. a name full of markup, a malformed row and a torn last line;
  // 3. a central run (step) whose folder has the same basename as 1.
  std::vector<TestRun> runs;
  runs.push_back(Federated(dir_ + "/a/fed-a", "fed-a", 22, 5));
  const std::string odd = "run <b>&\"q'";
  TestRun weird = Federated(dir_ + "/" + odd, odd, 6, 1);
  std::string lines = weird.metrics;
  const size_t third = [&] {
    size_t p = 0;
    for (int i = 0; i < 3; ++i) p = lines.find('\n', p) + 1;
    return p;
  }();
  lines.insert(third, "{\"round\": oops}\n");
  lines += "{\"round\":7,\"wall_s\":1.75,\"train_lo";
  weird.metrics = lines;
  runs.push_back(weird);
  TestRun central{dir_ + "/b/fed-a", "fed-a-2", "", 0, 0};
  for (int i = 1; i <= 4; ++i) {
    absl::StrAppend(&central.metrics, "{\"step\":", i * 100,
                    ",\"wall_s\":", i * 1.5, ",\"train_loss\":", 1.0 / i,
                    ",\"test_acc\":", 0.5 + 0.1 * i,
                    ",\"bytes_up\":0,\"bytes_down\":0,\"clients\":1,"
                    "\"lr\":0.1}\n");
  }
  central.acc_rows = 4;
  central.loss_rows = 4;
  runs.push_back(central);

  std::vector<std::string> argv = {BinPath("fedfwd-report")};
  ASSERT_TRUE(fs::exists(argv[0]))
      << argv[0] << " is not built (cmake --build ... --target fedfwd-report)";
  for (const TestRun& r : runs) {
    fs::create_directories(r.dir);
    std::ofstream(r.dir + "/metrics.jsonl") << r.metrics;
    argv.push_back(r.dir);
  }
  const std::string html = dir_ + "/report.html";
  argv.insert(argv.end(), {"--out", html, "--title", "render test"});
  {
    ChildProcess report(argv, dir_ + "/report.log");
    const std::optional<int> code = report.Wait(absl::Seconds(60));
    ASSERT_EQ(code, 0) << report.Log();
    EXPECT_THAT(report.Log(), HasSubstr("metrics.jsonl:4: not valid JSON"));
    EXPECT_THAT(report.Log(), HasSubstr("incomplete line"));
  }

  // The DOM as Chromium parsed it.
  const std::string url = "file://" + html;
  ASSERT_EQ(
      Shell(absl::StrCat(ChromiumFlags("p1"), " --dump-dom '", url, "' > '",
                         dir_, "/dom.html' 2> '", dir_, "/chromium1.log'"),
            dir_ + "/shell1.log", absl::Seconds(120)),
      0)
      << ReadFile(dir_ + "/chromium1.log");
  const std::string dom = ReadFile(dir_ + "/dom.html");
  ASSERT_THAT(dom, HasSubstr("<svg")) << ReadFile(dir_ + "/chromium1.log");
  const DomCharts charts = ParseDom(dom);
  ASSERT_EQ(charts.size(), 4u);
  for (const auto& [chart, series] : charts) {
    const bool loss = chart == "loss_round";
    EXPECT_EQ(series.size(), runs.size()) << chart;
    for (const TestRun& r : runs) {
      const int64_t want = loss ? r.loss_rows : r.acc_rows;
      auto it = series.find(r.name);
      ASSERT_NE(it, series.end()) << chart << " has no series " << r.name;
      EXPECT_EQ(it->second.data_points, want) << chart << " " << r.name;
      EXPECT_EQ(it->second.points_in_attr, want) << chart << " " << r.name;
    }
  }
  // The table has a row per run, its name intact.
  std::multiset<std::string> table_runs;
  for (size_t p = dom.find("<tr "); p != std::string::npos;
       p = dom.find("<tr ", p + 1)) {
    const std::string tag = dom.substr(p, dom.find('>', p) - p);
    if (tag.find(" data-run=\"") != std::string::npos) {
      table_runs.insert(Attr(tag, "data-run"));
    }
  }
  std::multiset<std::string> want_runs;
  for (const TestRun& r : runs) want_runs.insert(r.name);
  EXPECT_EQ(table_runs, want_runs);
  EXPECT_EQ(dom.find("<b>"), std::string::npos) << "run name became markup";

  // A screenshot: non-empty, and each run's colour is on screen.
  const std::string png = dir_ + "/shot.png";
  ASSERT_EQ(
      Shell(absl::StrCat(ChromiumFlags("p2"),
                         " --window-size=1400,2600 --screenshot='", png, "' '",
                         url, "' > '", dir_, "/chromium2.log' 2>&1"),
            dir_ + "/shell2.log", absl::Seconds(120)),
      0)
      << ReadFile(dir_ + "/chromium2.log");
  ASSERT_TRUE(fs::exists(png)) << ReadFile(dir_ + "/chromium2.log");
  EXPECT_GT(fs::file_size(png), 1000u);
  std::ifstream in(png, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)),
                          std::istreambuf_iterator<char>());
  int width = 0, height = 0;
  const std::vector<uint8_t> rgb = DecodePng(bytes, &width, &height);
  ASSERT_FALSE(rgb.empty()) << "cannot decode " << png;
  EXPECT_EQ(width, 1400);
  // The first three palette colours (runs 1-3), as drawn in lines, dots and
  // legends.
  const uint8_t colours[3][3] = {
      {0x4e, 0x79, 0xa7}, {0xf2, 0x8e, 0x2b}, {0xe1, 0x57, 0x59}};
  for (int k = 0; k < 3; ++k) {
    int64_t hits = 0;
    for (size_t i = 0; i + 2 < rgb.size(); i += 3) {
      hits += std::abs(rgb[i] - colours[k][0]) <= 8 &&
              std::abs(rgb[i + 1] - colours[k][1]) <= 8 &&
              std::abs(rgb[i + 2] - colours[k][2]) <= 8;
    }
    EXPECT_GT(hits, 650) << "run " << k + 1 << "'s colour is barely on screen";
    std::printf("run %d: %lld pixels of its colour\n", k + 1,
                static_cast<long long>(hits));
  }
}

}  // namespace
}  // namespace fedfwd::testing
