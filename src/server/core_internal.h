// Internal to the core's implementation files: core.cc (life cycle, agents, pools, metrics),
// core_tasks.cc (tasks: submit, trees, dependencies, lookups), core_results.cc (how tasks end),
// core_run.cc (vrun: input, going away, reattaching), core_list.cc (listing), core_visibility.cc
// (who sees what), core_schedule.cc (queues, the match, dispatch).
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "api/names.h"
#include "server/core.h"

namespace tidepool::server {

using autoscaler::Phase;
using autoscaler::PoolController;
using autoscaler::Worker;


constexpr int kMaxNameLength = 128;
// How long a hello with a valid token but a name its pool does not know yet may wait for it.
constexpr std::chrono::seconds kHelloHold{60};

inline v1::WorkerState ToProto(Phase p) {
  switch (p) {
    case Phase::kRequested: return v1::WORKER_STATE_REQUESTED;
    case Phase::kStarting: return v1::WORKER_STATE_STARTING;
    case Phase::kIdle: return v1::WORKER_STATE_IDLE;
    case Phase::kBusy: return v1::WORKER_STATE_BUSY;
    case Phase::kDraining: return v1::WORKER_STATE_DRAINING;
    case Phase::kDeleting: return v1::WORKER_STATE_DELETING;
    case Phase::kLost: return v1::WORKER_STATE_LOST;
    case Phase::kUnknown: return v1::WORKER_STATE_UNKNOWN;
  }
  return v1::WORKER_STATE_UNSPECIFIED;
}

inline Phase FromProto(v1::WorkerState s) {
  switch (s) {
    case v1::WORKER_STATE_REQUESTED: return Phase::kRequested;
    case v1::WORKER_STATE_STARTING: return Phase::kStarting;
    case v1::WORKER_STATE_IDLE: return Phase::kIdle;
    case v1::WORKER_STATE_BUSY: return Phase::kBusy;
    case v1::WORKER_STATE_DRAINING: return Phase::kDraining;
    case v1::WORKER_STATE_DELETING: return Phase::kDeleting;
    case v1::WORKER_STATE_LOST: return Phase::kLost;
    default: return Phase::kUnknown;
  }
}

// A pool whose backend is configured but not built into this version: every call says so, the
// pool shows the error, and tasks for it wait (and can be cancelled) instead of vanishing.
class UnavailableBackend final : public backends::Backend {
 public:
  explicit UnavailableBackend(std::string why) : why_(std::move(why)) {}
  Result<std::string> Create(const backends::CreateRequest&, backends::Deadline) override { return Unimplemented(why_); }
  Status Delete(const std::string&, backends::Deadline) override { return Unimplemented(why_); }
  Result<std::vector<backends::ListedWorker>> List(backends::Deadline) override {
    return std::vector<backends::ListedWorker>{};
  }

 private:
  std::string why_;
};

inline bool IsInteractive(const v1::TaskSpec& s) { return s.kind() == v1::TASK_KIND_INTERACTIVE; }

constexpr int kMaxShards = 10000;

// "task not found: ID": the answer for a missing task and for one the caller may not see alike.
Status TaskNotFound(const std::string& id);

bool DependencySatisfied(const v1::TaskSpec& spec, const std::string& dep, v1::TaskState state);


// A task in memory: unfinished ones, and final ones until their final state is committed.
//
// Kinds of tasks: a plain task runs its own command; a group (-N) has no command of its own and
// runs its shards (children ID/0..N-1); a gang is a group whose shards start together, queued as
// one entry. A nested task (submitted from inside another) is a child PARENT/NAME; a parent whose
// own command ended waits in RUNNING_SUBTASKS until its children are final.
struct Core::Task {
  store::TaskRecord rec;
  int64_t charged_bytes = 0;       // its spec's bytes as counted in Core::budget_ (for its owner)
  // Where it may run (the pool itself, or a selector's pools accepting its kind, in preference
  // order) and the pool whose queue it waits in / runs in.
  std::vector<PoolController*> eligible;
  PoolController* pool = nullptr;
  // Tree.
  std::string parent;              // "" at the top level
  std::vector<std::string> children;
  int open_children = 0;           // children not final yet
  std::string failed_child;        // the first child that did not succeed, and how
  bool is_group = false;           // -N: no command of its own
  bool own_done = false;           // its own command has ended (or it has none)
  v1::TaskState own_state = v1::TASK_STATE_SUCCESS;
  std::string own_reason;
  // Dependencies not final yet.
  int unmet_deps = 0;
  // Gangs (on the group) and batch pools (on the queued entry).
  bool gang_stopping = false;      // a shard was lost: the others are being stopped
  std::string gang_stop_reason;
  bool parked = false;             // a gang shard stopped, waiting for the gang to be requeued
  uint64_t batch = 0;              // MODE_BATCH: the tag of the workers made for it
  std::string assigned;            // worker holding a slot for it ("" = none)
  bool dispatch_pending = false;   // assignment written, not yet committed
  bool dispatched = false;         // StartTask sent
  bool cancel_requested = false;
  std::string cancel_reason;
  bool exit_sent = false;          // the vrun client has its Exited
  std::shared_ptr<RunClient> client;
  // Interactive, restored after a restart: its vrun may reattach (Core::Reattach) until the timer.
  bool detached = false;
  TimerQueue::TimerId detach_timer = 0;
  // Interactive: the agent's exit report, held while its output waits for a vrun to reattach.
  std::optional<v1::TaskExited> held_exit;
  std::map<uint64_t, std::function<void(const v1::Task&)>> watchers;
  TimerQueue::TimerId lost_timer = 0;
  v1::Waiting last_waiting;
  bool queued = false;
  // Queued with a vrun attached: counted in Core::queued_clients_ (the client may go first).
  bool queued_with_client = false;

  const std::string& id() const { return rec.status.id(); }
  v1::Task& st() { return rec.status; }
  int attempt() const { return rec.status.attempts(); }
  bool gang() const { return is_group && rec.spec.gang(); }
  // Slots its queue entry needs at once: a gang's shards, else one.
  int slots() const { return gang() ? static_cast<int>(children.size()) : 1; }
  bool final() const { return api::IsFinal(rec.status.state()); }
};

struct Core::Session {
  std::shared_ptr<AgentLink> link;
  std::string worker;
  std::string pool;
  std::string instance_id;
  // A fresh worker (it held no tasks at hello) whose first task has not started yet.
  bool awaiting_first_start = false;
  // The interval this agent was told to beat at (its welcome); 3 of them silent close the link.
  int64_t heartbeat_ms = 5000;
};

inline int64_t SteadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Where a task's output goes: its log files, or the attached vrun. Used without the core lock.
class Core::OutputRoute {
 public:
  std::mutex mu;
  int attempt = 0;
  std::shared_ptr<LogSink> log;
  std::shared_ptr<RunClient> client;
  std::weak_ptr<AgentLink> agent;
  uint64_t forwarded[3] = {0, 0, 0};  // interactive: bytes handed to the client, per stream
  // Interactive, no vrun yet after a restart: output is held by the agent (retry_later).
  bool detached = false;
  // Interactive, just reattached: the agent's next chunk of a stream may start past what the vrun
  // has (bytes the old server saw written out, lost with it): taken from there, not refused.
  bool resumed[3] = {false, false, false};
  uint64_t base[3] = {0, 0, 0};       // batch: where this attempt's output starts in the log files
};

}  // namespace tidepool::server
