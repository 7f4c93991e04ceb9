// `local`: workers are `tidepool agent` processes on the server's own machine.
//
// create: spawn the agent in its own session (so it outlives the server and gets its own
//         process group), with name and token in its environment; `boot_delay` simulates a
//         machine's boot time before the agent starts; `api_delay` a cloud API that answers
//         only that long after the machine is up (the agent may connect first).
// delete: SIGTERM the group, SIGKILL after the grace period; returns once the process is gone.
// list:   the processes it started that are still alive, identified by pid + start time so a
//         reused pid is never mistaken for a worker. The ledger of started processes lives in
//         DATA_DIR/backends/local/POOL.ledger, so a restarted server finds its workers again.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <set>

#include "backends/backend.h"

namespace tidepool::backends {

class LocalBackend final : public Backend {
 public:
  static Result<std::unique_ptr<Backend>> Make(const config::BackendConfig& cfg, const BackendContext& ctx);

  Result<std::string> Create(const CreateRequest& request, Deadline deadline) override;
  // Waits (until the deadline) for a create of the same name still running.
  Status Delete(const std::string& name, Deadline deadline) override;
  Result<std::vector<ListedWorker>> List(Deadline deadline) override;

  // How long Delete waits after SIGTERM before SIGKILL.
  static constexpr std::chrono::seconds kKillGrace{10};

 private:
  struct Entry {
    pid_t pid = 0;
    uint64_t start_time = 0;
  };

  LocalBackend(BackendContext ctx, std::chrono::milliseconds boot_delay, std::chrono::milliseconds api_delay);
  void LoadLedger();
  Status SaveLedgerLocked();
  // Alive and ours; reaps it if it is our zombie child.
  static bool Alive(const Entry& e);

  BackendContext ctx_;
  std::chrono::milliseconds boot_delay_;
  std::chrono::milliseconds api_delay_;
  std::string ledger_path_;
  std::string log_dir_;
  std::mutex mu_;
  std::map<std::string, Entry> ledger_;
  std::set<std::string> creating_;  // spawned, create not answered yet (api_delay)
  std::condition_variable created_;
};

}  // namespace tidepool::backends
