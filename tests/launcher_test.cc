// Pure parts of fedfwd-run's launcher. Starting real processes is covered by
// the multi-process integration tests.
#include "tools/launcher.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "common/config.h"
#include "common/dataset.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fedfwd {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A fresh, empty folder under the test's temp dir.
std::string MakeTempDir(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  fs::path dir = fs::path(base != nullptr ? base : fs::temp_directory_path()) /
                 ("launcher_test_" + std::to_string(getpid()) + "_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

TEST(DefaultOutDir, UsesConfigStemAndTimestamp) {
  absl::TimeZone utc = absl::UTCTimeZone();
  absl::Time t = absl::FromCivil(absl::CivilSecond(2024, 3, 7, 9, 5, 4), utc);
  EXPECT_EQ(DefaultOutDir("configs/fmnist_fg_mlp.yaml", t, utc),
            "runs/fmnist_fg_mlp-20240307-090504");
  EXPECT_EQ(DefaultOutDir("/abs/path/exp.v2.yml", t, utc),
            "runs/exp.v2-20240307-090504");
}

TEST(DefaultOutDir, UsesTheGivenTimeZone) {
  absl::Time t = absl::FromCivil(absl::CivilSecond(2024, 12, 31, 23, 30, 0),
                                 absl::UTCTimeZone());
  EXPECT_EQ(DefaultOutDir("a.yaml", t, absl::FixedTimeZone(3600)),
            "runs/a-20250101-003000");
}

TEST(FirstFreePath, AppendsCounterWhenTaken) {
  const std::string dir = MakeTempDir("free");
  const std::string base = dir + "/run";
  EXPECT_EQ(FirstFreePath(base).value(), base);
  fs::create_directories(base);
  EXPECT_EQ(FirstFreePath(base).value(), base + "-2");
  fs::create_directories(base + "-2");
  EXPECT_EQ(FirstFreePath(base).value(), base + "-3");
  fs::remove_all(dir);
}

TEST(ResolveDataDir, PrefersConfiguredFolder) {
  Config config;
  config.dataset.name = "fashion-mnist";
  config.dataset.data_dir = "/some/where";
  EXPECT_EQ(ResolveDataDir(config), "/some/where");
}

TEST(ResolveDataDir, FallsBackToDatasetDefault) {
  Config config;
  config.dataset.name = "fashion-mnist";
  config.dataset.data_dir.clear();
  EXPECT_EQ(ResolveDataDir(config), DefaultDataDir("fashion-mnist"));
  config.dataset.name = "mnist";
  EXPECT_EQ(ResolveDataDir(config), DefaultDataDir("mnist"));
}

TEST(ServerCommand, ListensOnAnEphemeralLoopbackPort) {
  EXPECT_THAT(ServerCommand("/bin/fedfwd-server", "/o/config.yaml", "/o", 3,
                            {"--insecure"}),
              ElementsAre("/bin/fedfwd-server", "--config", "/o/config.yaml",
                          "--listen", "127.0.0.1:0", "--out", "/o", "--threads",
                          "3", "--insecure"));
}

TEST(ClientCommand, NamesServerShardAndThreads) {
  EXPECT_THAT(
      ClientCommand("/bin/fedfwd-client", "127.0.0.1:40123", "/data/mnist", 2,
                    5, 1, {"--token-file", "t"}),
      ElementsAre("/bin/fedfwd-client", "--server", "127.0.0.1:40123", "--data",
                  "/data/mnist", "--shard", "2", "--num-shards", "5",
                  "--threads", "1", "--token-file", "t"));
}

TEST(ParseClientArgs, GivesFlagsToOneClientInOrder) {
  auto args = ParseClientArgs(
      {"1=--adversary-scale=100", "1=--name=bad", "0=--threads=2"}, 3);
  ASSERT_TRUE(args.ok()) << args.status();
  ASSERT_EQ(args->size(), 3u);
  EXPECT_THAT((*args)[0], ElementsAre("--threads=2"));
  EXPECT_THAT((*args)[1], ElementsAre("--adversary-scale=100", "--name=bad"));
  EXPECT_TRUE((*args)[2].empty());
  EXPECT_TRUE(ParseClientArgs({}, 2)->at(1).empty());
}

TEST(ParseClientArgs, BadSpecsAreNamed) {
  for (const char* spec : {"--x", "a=--x", "3=--x", "-1=--x", "0="}) {
    auto args = ParseClientArgs({spec}, 3);
    ASSERT_FALSE(args.ok()) << spec;
    EXPECT_THAT(std::string(args.status().message()), HasSubstr(spec));
  }
}

TEST(ParseListeningPort, ReadsThePortLine) {
  EXPECT_EQ(ParseListeningPort("fedfwd-server listening on 127.0.0.1:40123"),
            40123);
  EXPECT_EQ(ParseListeningPort("fedfwd-server listening on [::1]:7\r\n"), 7);
  EXPECT_EQ(ParseListeningPort("  fedfwd-server listening on h:65535 "), 65535);
}

TEST(ParseListeningPort, RejectsOtherLines) {
  EXPECT_EQ(ParseListeningPort(""), std::nullopt);
  EXPECT_EQ(ParseListeningPort("round 3 acc 0.5"), std::nullopt);
  EXPECT_EQ(ParseListeningPort("fedfwd-server listening on 127.0.0.1"),
            std::nullopt);
  EXPECT_EQ(ParseListeningPort("fedfwd-server listening on 127.0.0.1:0"),
            std::nullopt);
  EXPECT_EQ(ParseListeningPort("fedfwd-server listening on 127.0.0.1:70000"),
            std::nullopt);
  EXPECT_EQ(ParseListeningPort("fedfwd-server listening on 127.0.0.1:12ab"),
            std::nullopt);
  EXPECT_EQ(ParseListeningPort("note: fedfwd-server listening on x:5"),
            std::nullopt);
}

TEST(FindSiblingExecutable, FindsOnlyExecutableFiles) {
  const std::string dir = MakeTempDir("bin");
  const std::string exe = dir + "/fedfwd-server";
  std::ofstream(exe) << "#!/bin/sh\n";
  ASSERT_EQ(chmod(exe.c_str(), 0755), 0);
  std::ofstream(dir + "/fedfwd-client") << "not executable";
  ASSERT_EQ(chmod((dir + "/fedfwd-client").c_str(), 0644), 0);
  fs::create_directories(dir + "/fedfwd-dir");

  EXPECT_EQ(FindSiblingExecutable(dir, "fedfwd-server").value(), exe);
  absl::StatusOr<std::string> missing = FindSiblingExecutable(dir, "nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("nope"));
  // Neither a file without an x bit nor a folder is an executable.
  EXPECT_FALSE(FindSiblingExecutable(dir, "fedfwd-client").ok());
  EXPECT_FALSE(FindSiblingExecutable(dir, "fedfwd-dir").ok());
  fs::remove_all(dir);
}

TEST(SelfExecutableDir, IsTheFolderOfThisTest) {
  absl::StatusOr<std::string> dir = SelfExecutableDir();
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_TRUE(fs::is_directory(*dir));
  EXPECT_TRUE(fs::path(*dir).is_absolute());
}

TEST(WaitStatus, DescribesExitsAndSignals) {
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) _exit(3);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_EQ(DescribeWaitStatus(status), "exited with status 3");
  EXPECT_EQ(ExitCodeFromWaitStatus(status), 3);

  pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    pause();
    _exit(0);
  }
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_THAT(DescribeWaitStatus(status), HasSubstr("killed by signal 9"));
  EXPECT_EQ(ExitCodeFromWaitStatus(status), 137);
}

TEST(FinalTestAccuracy, ReadsTopLevelNumber) {
  EXPECT_EQ(FinalTestAccuracy(R"({"rounds": 10, "final_test_acc": 0.8125})"),
            0.8125);
  EXPECT_EQ(FinalTestAccuracy("{\n  \"final_test_acc\": 1\n}\n"), 1.0);
  EXPECT_EQ(FinalTestAccuracy(R"({"final_test_acc": "high"})"), std::nullopt);
  EXPECT_EQ(FinalTestAccuracy(R"({"x": {"final_test_acc": 0.5}})"),
            std::nullopt);
  EXPECT_EQ(FinalTestAccuracy("not json {"), std::nullopt);
  EXPECT_EQ(FinalTestAccuracy(""), std::nullopt);
}

TEST(LastLines, KeepsTheTail) {
  EXPECT_THAT(LastLines("a\nb\nc\n", 2), ElementsAre("b", "c"));
  EXPECT_THAT(LastLines("a\nb\nc", 2), ElementsAre("b", "c"));
  EXPECT_THAT(LastLines("a\nb", 5), ElementsAre("a", "b"));
  EXPECT_THAT(LastLines("\n\nx\n", 3), ElementsAre("", "", "x"));
  EXPECT_TRUE(LastLines("", 3).empty());
  EXPECT_TRUE(LastLines("a\n", 0).empty());
}

TEST(IsProgressLine, OnlyTheRoundCounterLine) {
  EXPECT_TRUE(IsProgressLine("round 20/50  loss 0.4123  test_acc 0.8512"));
  EXPECT_TRUE(IsProgressLine("round 1/1"));
  EXPECT_TRUE(IsProgressLine("round 7/9000 anything the server adds later"));
  EXPECT_FALSE(IsProgressLine("round 0: test_acc 0.1088 (initial model)"));
  EXPECT_FALSE(IsProgressLine("round 3: 1 results < min_clients 2; retrying"));
  EXPECT_FALSE(IsProgressLine("round 20/50: target 0.5 reached"));
  EXPECT_FALSE(IsProgressLine("round /50 loss"));
  EXPECT_FALSE(IsProgressLine("round 20/ loss"));
  EXPECT_FALSE(IsProgressLine(" round 20/50 loss"));
  EXPECT_FALSE(IsProgressLine("finished after 50 rounds: final_test_acc 0.5"));
  EXPECT_FALSE(IsProgressLine(R"({"msg":"round 20/50"})"));
}

TEST(ShowServerLine, PlainLinesWhenNotATerminal) {
  const std::string line =
      "round 20/50  loss 0.4123  test_acc 0.8512  clients 3  12.3 rounds/s";
  ConsoleLine shown = ShowServerLine(line, "cell 1/4 lr=1", false, 20);
  EXPECT_FALSE(shown.in_place);
  EXPECT_EQ(shown.text, line);
  shown = ShowServerLine("client 3 joined", "cell 1/4", true, 80);
  EXPECT_FALSE(shown.in_place);
  EXPECT_EQ(shown.text, "client 3 joined");
}

TEST(ShowServerLine, ProgressInPlaceWithTheLabel) {
  ConsoleLine shown =
      ShowServerLine("round 20/50  loss 0.4123", "cell 3/8 lr=1e-4", true, 80);
  EXPECT_TRUE(shown.in_place);
  EXPECT_EQ(shown.text, "[cell 3/8 lr=1e-4] round 20/50  loss 0.4123");
  shown = ShowServerLine("round 20/50  loss 0.4123", "", true, 80);
  EXPECT_EQ(shown.text, "round 20/50  loss 0.4123");
}

TEST(ShowServerLine, NeverWiderThanTheTerminal) {
  const std::string line =
      "round 20/50  loss 0.4123  test_acc 0.8512  clients 3  12.3 rounds/s  "
      "elapsed 0:00:01  eta 0:00:02  up 1.55 kB  down 40.2 kB";
  // Spaces collapse first.
  ConsoleLine shown = ShowServerLine(line, "", true, 120);
  EXPECT_EQ(shown.text,
            "round 20/50 loss 0.4123 test_acc 0.8512 clients 3 12.3 rounds/s "
            "elapsed 0:00:01 eta 0:00:02 up 1.55 kB down 40.2 kB");
  // A long label is shortened before the progress is cut.
  shown = ShowServerLine(
      line, "cell 3/8 lr=1e-4,tangent.distribution=rademacher,seed=1", true,
      60);
  EXPECT_EQ(shown.text.rfind("[cell 3/8 lr=1e-4,t…] round 20/50 loss", 0), 0u)
      << shown.text;
  EXPECT_EQ(shown.text.size() - 2, 59u);  // "…" is 3 bytes, 1 column
  // Tiny or unknown widths still show something sane.
  shown = ShowServerLine(line, "", true, 0);
  EXPECT_EQ(shown.text, "round 20/50 loss 0.");  // 20 columns assumed
}

TEST(Launcher, BadConfigIsAUsageError) {
  const std::string dir = MakeTempDir("badcfg");
  LauncherOptions options;
  options.config_path = dir + "/missing.yaml";
  options.out_dir = dir + "/out";
  Launcher launcher(options);
  EXPECT_EQ(launcher.Run(), kExitUsage);
  EXPECT_FALSE(fs::exists(dir + "/out"));
  fs::remove_all(dir);
}

TEST(Launcher, MissingExecutablesFailBeforeStartingAnything) {
  const std::string dir = MakeTempDir("noexe");
  const std::string config = dir + "/tiny.yaml";
  std::ofstream(config) << "clients: 2\n";
  LauncherOptions options;
  options.config_path = config;
  options.out_dir = dir + "/out";
  options.bin_dir = dir + "/empty-bin";
  Launcher launcher(options);
  EXPECT_EQ(launcher.Run(), kExitFailure);
  EXPECT_FALSE(fs::exists(dir + "/out"));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace fedfwd
