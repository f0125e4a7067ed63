// TCP helpers for tests that measure links and relays.
#ifndef FEDFWD_TESTS_TESTUTIL_NET_H_
#define FEDFWD_TESTS_TESTUTIL_NET_H_

#include <string>

#include "absl/time/time.h"

namespace fedfwd::testing {

// A connected TCP socket (TCP_NODELAY) to "a.b.c.d:port", retrying every
// 50 ms until `timeout` has passed (zero: one try); -1 when none connected.
int DialTcp(const std::string& host_port,
            absl::Duration timeout = absl::ZeroDuration());

}  // namespace fedfwd::testing

#endif  // FEDFWD_TESTS_TESTUTIL_NET_H_
