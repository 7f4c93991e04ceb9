// The backend contract (backends.md): a pool's only view of its infrastructure.
//
// A backend answers three questions, plus one optional:
//   Create  -> provision one worker, start its agent with the server address, pool, name and
//              token, and return the name (or "" when the infrastructure names it later);
//              a worker name is 1-253 bytes of [A-Za-z0-9._-] (common/worker_name.h);
//   Delete  -> delete a worker by name;
//   List    -> the workers it believes exist (alive or starting);
//   CreateBatch (optional) -> N workers tagged with a label, for gang tasks.
//
// Calls block and run on the pool's executor threads, never under a pool lock. A call that
// fails returns the infrastructure's own answer in the Status message. Answers are not trusted: the
// pool controller checks every name a backend gives it (autoscaler/answers.h), and a create that
// answers an invalid name or one the pool already has is an error of that backend. The core bounds every
// call with a timeout; backends that can cancel their own work (scripts, HTTP) should do so.
// The core never knows which backend it talks to: each is one class registered by its config key.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "config/config.h"

namespace tidepool::backends {

struct CreateRequest {
  std::string pool;
  std::string server_address;  // what the agent must dial
  int slots = 1;
  // The token a worker of this name must present; call once the name is known.
  std::function<std::string(const std::string& name)> token_for;
  // A shell command that prints the token for the name given as its last argument (for
  // scripts that choose names themselves).
  std::string token_command;
  std::map<std::string, std::string> labels;
};

struct ListedWorker {
  std::string name;
  std::string status;  // as the infrastructure says it; informational
  std::string line;    // the text it was listed as, for backends that list lines (command); else ""
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual Result<std::string> Create(const CreateRequest& request) = 0;
  virtual Status Delete(const std::string& name) = 0;
  virtual Result<std::vector<ListedWorker>> List() = 0;

  // The server is stopping: calls in flight should end now (failing) and no new call should
  // start. Called once, from any thread, while calls may be running. A backend that cannot cut
  // its calls short leaves this alone: the server waits a bounded time for them, then exits.
  virtual void Abandon() {}

  virtual bool SupportsBatch() const { return false; }
  virtual Result<std::vector<std::string>> CreateBatch(const CreateRequest& request, int count,
                                                       const std::string& label) {
    (void)request, (void)count, (void)label;
    return Unimplemented("this backend cannot create workers in batches");
  }
};

// What every backend gets besides its own config block.
struct BackendContext {
  std::string pool;
  std::string data_dir;        // the server's data dir; a backend keeps its own state below it
  std::string agent_binary;    // the tidepool executable, for backends that start agents locally
  std::string server_address;  // what agents dial (also in every CreateRequest)
  int slots = 1;               // default_slots_per_agent
};

using BackendFactory = std::function<Result<std::unique_ptr<Backend>>(const config::BackendConfig&,
                                                                      const BackendContext&)>;

// Backends by config key. Registration happens once, in RegisterBuiltinBackends().
class Registry {
 public:
  static Registry& Global();
  void Register(const std::string& key, BackendFactory factory);
  bool Has(const std::string& key) const;
  Result<std::unique_ptr<Backend>> Create(const config::BackendConfig& cfg, const BackendContext& ctx) const;

 private:
  std::map<std::string, BackendFactory> factories_;
};

// Registers every backend compiled in (see builtin.cc). Idempotent.
void RegisterBuiltinBackends();

}  // namespace tidepool::backends
