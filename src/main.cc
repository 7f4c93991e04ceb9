#include <absl/synchronization/mutex.h>

#include "cli/commands.h"

int main(int argc, char** argv) {
  // Debian's abseil is built without NDEBUG, so every absl::Mutex operation inside gRPC also
  // updates a global lock graph for deadlock detection: ~15% of a server's CPU with 10,000
  // agents (docs/benchmarks.md, P8). Tidepool uses no absl::Mutex itself; gRPC's own release
  // builds run without the check.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  return tidepool::cli::Main(argc, argv);
}
