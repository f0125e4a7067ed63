// What fedfwd-ctl prints for a coordinator's StatusReply: a text report for
// people and a JSON object for scripts (numbers as JSON numbers, keys as the
// proto's field names). Pure functions, so tests pin the output.
#ifndef FEDFWD_TOOLS_STATUS_REPORT_H_
#define FEDFWD_TOOLS_STATUS_REPORT_H_

#include <string>

#include "absl/status/status.h"
#include "fedfwd.pb.h"

namespace fedfwd {

// Several "key  value" lines, a blank line and a table of the clients
// (id, name, shard, alive, last seen). Ends with a newline.
std::string FormatStatusReport(const v1::StatusReply& reply);

// One JSON object (no newline).
std::string StatusReplyToJson(const v1::StatusReply& reply);

// One line saying why GetStatus to `address` failed, starting with the kind:
// "unavailable: ...", "unauthenticated: ...", "permission denied: ...",
// "deadline: ...".
std::string DescribeStatusError(const absl::Status& status,
                                const std::string& address, double timeout_s);

}  // namespace fedfwd

#endif  // FEDFWD_TOOLS_STATUS_REPORT_H_
