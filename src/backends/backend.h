// The backend contract (backends.md): a pool's only view of its infrastructure.
//
// A backend is one folder, src/backends/<name>/, holding its config block's schema and checks,
// this class's implementation and its tests; it registers itself by its config key with a static
// `Registrar` (registry.h). The core never names a backend. Backends that run programs use the
// one subprocess runner (toolkit/subprocess.h). Every backend passes the conformance suite
// (tests/conformance). docs/backends.md is the operator's and implementer's guide.
//
// Methods, like Kubernetes cluster-autoscaler's CloudProvider, are REQUIRED (every backend
// implements them) or OPTIONAL (a default is given that does the right thing for a backend
// without the capability).
//
// Threads and time. Calls block, run on the pool's executor threads (never under a pool lock)
// and may run concurrently with each other, including a Delete of a worker whose Create is still
// running (which must wait for that create or make sure its worker does not outlive the delete).
// Every call carries a deadline: past it the pool has given up on the call and counted it as a
// (transient) failure; a backend that can cut its own work short (scripts, HTTP requests) stops
// there. A Create that still completes after its deadline is not lost: the pool deletes what it
// made.
//
// Answers are not trusted: the pool controller checks every name a backend gives it
// (autoscaler/answers.h); a create that answers an invalid name or one the pool already has is an
// error of that backend. A worker name is 1-253 bytes of [A-Za-z0-9._-] (common/worker_name.h).
//
// Failures. A call that fails returns a Status whose message is the infrastructure's own answer
// (a script's stderr, an API's error body: the pool shows it in `pool get`, metrics and to
// waiting vruns, scrubbed of secrets by redacting_backend.h) and whose code says its class
// (ErrorClass below, `ClassOf`). The pool acts on the class (autoscaler/answers.h,
// `FailureResponse`).
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "config/config.h"

namespace tidepool::backends {

using Clock = std::chrono::steady_clock;
// When the pool stops waiting for a call.
using Deadline = Clock::time_point;

// What a failed call means for the pool, carried in the Status code (see MakeError / ClassOf).
enum class ErrorClass {
  kOutOfCapacity,  // RESOURCE_EXHAUSTED: no machine of this kind to be had now (a zone's stock,
                   //   a Slurm partition with nothing free): the demand goes to the selector's
                   //   backup pools at once.
  kQuota,          // FAILED_PRECONDITION: an account limit reached (instances, vCPUs, jobs per
                   //   user): like out of capacity, and shown.
  kAuth,           // PERMISSION_DENIED or UNAUTHENTICATED: credentials refused or lacking a
                   //   right: shown, backed off for the longest cooldown (no retry storm).
  kBadRequest,     // INVALID_ARGUMENT (or NOT_FOUND, UNIMPLEMENTED): the request can never
                   //   succeed as configured (bad partition, unknown image): shown, longest
                   //   cooldown.
  kTransient,      // anything else (UNAVAILABLE, DEADLINE_EXCEEDED, UNKNOWN, ...): retried
                   //   after the usual doubling cooldown.
};

std::string_view ErrorClassName(ErrorClass c);  // out_of_capacity, quota, auth, bad_request, transient
ErrorClass ClassOf(const Status& s);            // of a failed status
Status MakeError(ErrorClass c, std::string message);

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

enum class WorkerState {
  kPending,   // asked for, not running yet (booting, a queued job): counts as a worker
  kRunning,   // the machine runs (its agent may or may not be connected): a worker
  kStopping,  // going away (terminating): not a worker
  kStopped,   // stopped, suspended, terminated: not a worker
};

std::string_view WorkerStateName(WorkerState s);  // pending, running, stopping, stopped
// pending and running: what the pool counts as existing.
inline bool IsWorker(WorkerState s) { return s == WorkerState::kPending || s == WorkerState::kRunning; }

struct ListedWorker {
  std::string name;
  WorkerState state = WorkerState::kRunning;
  std::string detail;  // the infrastructure's own words for it ("pending: Resources"), or ""
  std::string line;    // the text it was listed as, for backends that list lines (command); else ""
  // A pending worker that the infrastructure says will not start as things are (a pod the
  // scheduler cannot place, an image that cannot be pulled): the class of that failure. The pool
  // counts it as a failed create (`detail` is the error shown; out_of_capacity sends the demand
  // to backup pools) and deletes the worker.
  std::optional<ErrorClass> failing;
};

class Backend {
 public:
  virtual ~Backend() = default;

  // REQUIRED. Provisions one worker and starts its agent with the server address, pool, name and
  // token (request.token_for(name)); returns the name, or "" when the infrastructure names it
  // later (the name then arrives through List or the connecting agent).
  virtual Result<std::string> Create(const CreateRequest& request, Deadline deadline) = 0;

  // REQUIRED. Deletes the worker `name` (and its agent and tasks). Deleting a worker that is
  // already gone succeeds. If its Create is still running, waits for it (or makes sure that what
  // it makes is deleted too).
  virtual Status Delete(const std::string& name, Deadline deadline) = 0;

  // REQUIRED. The workers it believes exist. Entries in state stopping or stopped may be listed
  // (for the operator's eyes) and are treated as gone; pending and running ones are workers.
  virtual Result<std::vector<ListedWorker>> List(Deadline deadline) = 0;

  // OPTIONAL (default: 5 minutes). How long the pool gives each call: its deadline is this long
  // after the call is issued.
  virtual std::chrono::milliseconds CallTimeout() const { return kDefaultCallTimeout; }

  // OPTIONAL (default: nothing). The server is stopping: calls in flight should end now
  // (failing) and no new call should start. Called once, from any thread, while calls may be
  // running. A backend that cannot cut its calls short leaves this alone: the server waits a
  // bounded time for them, then exits.
  virtual void Abandon() {}

  // OPTIONAL (default: nothing; the pool lists on its sync interval). The backend calls
  // `changed` (from any thread, any time until Abandon or destruction) as soon as it learns that
  // its workers changed (a watch saw a machine deleted, evicted or failing): the pool then lists
  // at once. List stays the only source of truth; this only makes it come sooner. Called once,
  // when the pool starts.
  virtual void Watch(std::function<void()> changed) { (void)changed; }

  // OPTIONAL (default: not supported). N workers at once, tagged with `label`, for gang tasks;
  // returns exactly `count` names.
  virtual bool SupportsBatch() const { return false; }
  virtual Result<std::vector<std::string>> CreateBatch(const CreateRequest& request, int count,
                                                       const std::string& label, Deadline deadline) {
    (void)request, (void)count, (void)label, (void)deadline;
    return Unimplemented("this backend cannot create workers in batches");
  }

  static constexpr std::chrono::milliseconds kDefaultCallTimeout{std::chrono::minutes(5)};
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

}  // namespace tidepool::backends
