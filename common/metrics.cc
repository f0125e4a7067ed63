#include "common/metrics.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

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

absl::Status MetricsWriter::Append(const RoundRow& row) {
  nlohmann::json j;
  j[index_key_] = row.round;
  j["wall_s"] = row.wall_s;
  j["train_loss"] = row.train_loss ? nlohmann::json(*row.train_loss)
                                   : nlohmann::json(nullptr);
  j["test_acc"] =
      row.test_acc ? nlohmann::json(*row.test_acc) : nlohmann::json(nullptr);
  j["bytes_up"] = row.bytes_up;
  j["bytes_down"] = row.bytes_down;
  j["clients"] = row.clients;
  j["lr"] = row.lr;
  rows_ << j.dump() << '\n';
  rows_.flush();
  if (!rows_) return absl::DataLossError("writing metrics.jsonl failed");
  return absl::OkStatus();
}

absl::Status MetricsWriter::WriteFileAtomically(const std::string& name,
                                                const std::string& bytes) {
  const std::string path = dir_ + "/" + name;
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::out | std::ios::trunc | std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.flush();
    if (!out) return absl::DataLossError(absl::StrCat("cannot write ", tmp));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::DataLossError(absl::StrCat("cannot rename ", tmp));
  }
  return absl::OkStatus();
}

absl::Status MetricsWriter::WriteSummary(const std::string& json_text) {
  return WriteFileAtomically("summary.json", json_text + "\n");
}

std::string GitCommit() { return FEDFWD_GIT_COMMIT; }

std::string HostName() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

}  // namespace fedfwd
