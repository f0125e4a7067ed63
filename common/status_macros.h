// The few status macros Abseil 20220623 lacks. Use inside functions returning
// absl::Status or absl::StatusOr<T>.
#ifndef FEDFWD_COMMON_STATUS_MACROS_H_
#define FEDFWD_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define FEDFWD_CONCAT_INNER_(a, b) a##b
#define FEDFWD_CONCAT_(a, b) FEDFWD_CONCAT_INNER_(a, b)

// Returns the status from the enclosing function if `expr` is not OK.
#define RETURN_IF_ERROR(expr)                        \
  do {                                               \
    ::absl::Status _fedfwd_status = (expr);          \
    if (!_fedfwd_status.ok()) return _fedfwd_status; \
  } while (0)

// `lhs = value of rexpr` or return its error. lhs may declare a variable.
#define ASSIGN_OR_RETURN(lhs, rexpr) \
  ASSIGN_OR_RETURN_IMPL_(FEDFWD_CONCAT_(_fedfwd_so_, __LINE__), lhs, rexpr)
#define ASSIGN_OR_RETURN_IMPL_(so, lhs, rexpr) \
  auto so = (rexpr);                           \
  if (!so.ok()) return so.status();            \
  lhs = std::move(so).value()

#endif  // FEDFWD_COMMON_STATUS_MACROS_H_
