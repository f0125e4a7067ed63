// The rooms of the tree (docs/development.md): common/ is shared by both
// sides and includes neither; server/ (the coordinator only) never includes
// client/, and client/ (the daemon only) never includes server/; neither
// includes tools/ (fedfwd-run, sweeps, reports, the central trainer,
// evaluation, fedfwd-ctl, the load generator), which may include both.
// Shared learning code lives in common/ (the trainer, the estimators, the
// step rule).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace fedfwd {
namespace {

namespace fs = std::filesystem;

// "file:line: the include" for every #include "<dir>/..." in `folder`.
std::vector<std::string> IncludesOf(const std::string& folder,
                                    const std::string& dir) {
  std::vector<std::string> found;
  const fs::path root = fs::path(FEDFWD_SOURCE_DIR) / folder;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    const std::string ext = entry.path().extension().string();
    if (!entry.is_regular_file() || (ext != ".cc" && ext != ".h")) continue;
    std::ifstream in(entry.path());
    std::string line;
    int n = 0;
    while (std::getline(in, line)) {
      ++n;
      if (line.rfind("#include \"" + dir + "/", 0) == 0) {
        found.push_back(entry.path().string() + ":" + std::to_string(n) + ": " +
                        line);
      }
    }
  }
  return found;
}

TEST(IncludeRule, ServerClientAndToolsKeepToTheirRooms) {
  for (const auto& [folder, forbidden] :
       std::vector<std::pair<std::string, std::string>>{{"server", "client"},
                                                        {"client", "server"},
                                                        {"common", "client"},
                                                        {"common", "server"},
                                                        {"server", "tools"},
                                                        {"client", "tools"},
                                                        {"common", "tools"}}) {
    const auto found = IncludesOf(folder, forbidden);
    EXPECT_TRUE(found.empty()) << folder << "/ includes " << forbidden << "/:\n"
                               << [&] {
                                    std::string all;
                                    for (const auto& f : found) all += f + "\n";
                                    return all;
                                  }();
  }
  // The scan sees the tree: the server's and the tools' own headers are
  // there.
  EXPECT_FALSE(IncludesOf("server", "server").empty());
  EXPECT_FALSE(IncludesOf("tools", "tools").empty());
  // server/ holds no program but the coordinator's.
  for (const auto& entry :
       fs::directory_iterator(fs::path(FEDFWD_SOURCE_DIR) / "server")) {
    const std::string name = entry.path().filename().string();
    if (name.size() > 8 && name.substr(name.size() - 8) == "_main.cc") {
      EXPECT_EQ(name, "server_main.cc") << "a tool's main in server/";
    }
  }
}

}  // namespace
}  // namespace fedfwd
