// Graceful stop on SIGINT/SIGTERM for the daemons. The first signal runs
// `on_stop` on a watcher thread (never inside the signal handler); a second
// signal exits at once with status 130.
//
// Why a handler and not sigwait: libraries loaded before main (OpenBLAS,
// OpenMP) start threads with the default signal mask, so a process-wide
// handler is the only way to be sure a signal is seen. The handler only
// writes a byte to a pipe (async-signal-safe).
#ifndef FEDFWD_COMMON_SIGNALS_H_
#define FEDFWD_COMMON_SIGNALS_H_

#include <functional>

namespace fedfwd {

// Call once, early in main. `on_stop` must be thread-safe.
void InstallStopHandler(std::function<void(int signal)> on_stop);

}  // namespace fedfwd

#endif  // FEDFWD_COMMON_SIGNALS_H_
