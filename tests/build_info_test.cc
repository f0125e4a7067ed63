// summary.json's git_commit comes from the build (cmake/git_commit.cmake,
// rewritten at every build), not from the time cmake was configured.
#include <cstdio>
#include <filesystem>
#include <regex>
#include <string>

#include "common/metrics.h"
#include "gtest/gtest.h"

namespace fedfwd {
namespace {

std::string RunShell(const std::string& command) {
  std::string out;
  FILE* p = popen(command.c_str(), "r");
  if (p == nullptr) return out;
  char buf[256];
  while (fgets(buf, sizeof(buf), p) != nullptr) out += buf;
  pclose(p);
  return out;
}

TEST(BuildInfo, GitCommitNamesACommitOfThisCheckout) {
  const std::string commit = GitCommit();
  std::smatch m;
  ASSERT_TRUE(std::regex_match(commit, m,
                               std::regex("([0-9a-f]{12})(-dirty)?|unknown")))
      << commit;
  const std::string source = FEDFWD_SOURCE_DIR;
  if (!std::filesystem::exists(source + "/.git")) {
    GTEST_SKIP() << "the source folder is not a git checkout (a tarball or "
                    "an image build): nothing to compare with";
  }
  ASSERT_EQ(RunShell("git --version >/dev/null 2>&1 && echo yes"), "yes\n")
      << "git is not installed (scripts/setup.sh installs it)";
  ASSERT_NE(commit, "unknown") << "built from a git checkout";
  // A commit the checkout holds (HEAD when the tests run right after the
  // build, as in CI; an older one when commits were made since).
  EXPECT_EQ(RunShell("git -C '" + source + "' cat-file -t " + m[1].str() +
                     " 2>/dev/null"),
            "commit\n")
      << commit;
}

}  // namespace
}  // namespace fedfwd
