#include "common/metrics.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace fedfwd {

absl::StatusOr<std::unique_ptr<MetricsWriter>> MetricsWriter::Open(
    const std::string& dir, const std::string& index_key) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create output folder ", dir, ": ", ec.message()));
  }
  std::unique_ptr<MetricsWriter> w(new MetricsWriter(dir, index_key));
  const std::string path = dir + "/metrics.jsonl";
  w->rows_.open(path, std::ios::out | std::ios::trunc);
  if (!w->rows_) {
    return absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
  }
  return w;
}

absl::StatusOr<std::unique_ptr<MetricsWriter>> MetricsWriter::OpenForResume(
    const std::string& dir, int64_t keep_through,
    const std::string& index_key) {
  const std::string path = dir + "/metrics.jsonl";
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot read ", path));
  }
  // Keep complete rows up to keep_through; a torn last line (a crash while
  // it was written) and rows of rounds that will run again are dropped.
  std::string kept, line;
  while (std::getline(in, line)) {
    if (in.eof()) break;  // no newline: torn
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains(index_key) ||
        !j[index_key].is_number_integer()) {
      continue;
    }
    if (j[index_key].get<int64_t>() > keep_through) continue;
    kept += line;
    kept += '\n';
  }
  in.close();
  RETURN_IF_ERROR(WriteFileDurably(path, kept));
  std::unique_ptr<MetricsWriter> w(new MetricsWriter(dir, index_key));
  w->rows_.open(path, std::ios::out | std::ios::app);
  if (!w->rows_) {
    return absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
  }
  return w;
}

absl::Status MetricsWriter::Append(const RoundRow& row) {
  nlohmann::json j;
  j[index_key_] = row.round;
  j["wall_s"] = row.wall_s;
  j["train_loss"] = row.train_loss ? nlohmann::json(*row.train_loss)
                                   : nlohmann::json(nullptr);
  j[regression_ ? "test_r2" : "test_acc"] =
      row.test_acc ? nlohmann::json(*row.test_acc) : nlohmann::json(nullptr);
  if (row.test_rmse) j["test_rmse"] = *row.test_rmse;
  j["bytes_up"] = row.bytes_up;
  j["bytes_down"] = row.bytes_down;
  j["clients"] = row.clients;
  j["lr"] = row.lr;
  if (row.epsilon) j["epsilon"] = *row.epsilon;
  for (const auto& [key, value] : row.extra) j[key] = value;
  rows_ << j.dump() << '\n';
  rows_.flush();
  if (!rows_) return absl::DataLossError("writing metrics.jsonl failed");
  return absl::OkStatus();
}

absl::Status MetricsWriter::WriteFileAtomically(const std::string& name,
                                                const std::string& bytes) {
  return WriteFileDurably(dir_ + "/" + name, bytes);
}

absl::Status WriteFileDurably(const std::string& path, const std::string& bytes,
                              int mode) {
  const std::string tmp = path + ".tmp";
  auto fail = [&](const char* what) {
    const int err = errno;
    return absl::DataLossError(
        absl::StrCat("cannot ", what, " ", tmp, ": ", std::strerror(err)));
  };
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                        static_cast<mode_t>(mode));
  if (fd < 0) return fail("create");
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      absl::Status s = fail("write");
      ::close(fd);
      ::unlink(tmp.c_str());
      return s;
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    absl::Status s = fail("fsync");
    ::close(fd);
    ::unlink(tmp.c_str());
    return s;
  }
  if (::close(fd) != 0) return fail("close");
  if (std::rename(tmp.c_str(), path.c_str()) != 0) return fail("rename");
  // The rename itself must reach the disk: fsync the folder.
  const std::string parent = std::filesystem::path(path).parent_path().string();
  const int dfd = ::open(parent.empty() ? "." : parent.c_str(),
                         O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return absl::OkStatus();
}

absl::Status MetricsWriter::WriteSummary(const std::string& json_text) {
  return WriteFileAtomically("summary.json", json_text + "\n");
}

// Defined in the build's generated/git_commit.cc (cmake/git_commit.cmake).
const char* BuildGitCommit();

std::string GitCommit() { return BuildGitCommit(); }

std::string HostName() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

}  // namespace fedfwd
