// Executes the planner's decisions for one pool and keeps its books.
//
// Threading: every method must be called with the server's core lock held. Backend calls run
// on the executor without that lock; their results come back through Hooks::post, which takes
// the lock again. So a slow or hung backend never blocks the pool, the scheduler or the API.
//
// Reconcile, don't assume: a worker leaves the books only when the backend's list confirms it is
// gone (absent from a list taken after its delete succeeded, or from two consecutive lists);
// workers the backend lists but nobody asked for become `unknown`.
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "autoscaler/delete_pacer.h"
#include "autoscaler/planner.h"
#include "autoscaler/token_bucket.h"
#include "autoscaler/worker.h"
#include "backends/backend.h"
#include "common/executor.h"
#include "common/timer_queue.h"
#include "config/config.h"

namespace tidepool::autoscaler {

// Names chosen by creates still in flight (see named_in_flight_): shared with backend calls
// running on executor threads, hence its own lock.
struct NamedInFlight {
  std::mutex mu;
  std::unordered_map<std::string, uint64_t> by_name;
};

struct PoolEvent {
  int64_t at_ms = 0;
  std::string kind;
  std::string message;
};

class PoolController {
 public:
  struct Hooks {
    // Runs fn later, on some thread, with the core lock held.
    std::function<void(std::function<void()>)> post;
    // Something users can see changed (capacity, an allocation error): the core should run a
    // scheduling pass. Called with the core lock held; the pass must be deferred.
    std::function<void()> changed;
    // Persist or forget a worker record.
    std::function<void(const Worker&)> persist;
    std::function<void(const std::string& name)> forget;
    // The token a worker of this name must present.
    std::function<std::string(const std::string& name)> token_for;
    // How many tasks are waiting for this pool (demand), read at each reconcile.
    std::function<int()> waiting_tasks;
    // Every backend call as it ends: op create|delete|list|create_batch, result ok|error|timeout.
    // Called on executor threads (must be thread-safe).
    std::function<void(const std::string& op, const std::string& result, double seconds)> backend_call;
    // P4: from the first task waiting for this pool to the backend create call it caused, as the
    // call starts (on an executor thread).
    std::function<void(double seconds)> scale_up_latency;
  };

  PoolController(config::PoolConfig cfg, std::unique_ptr<backends::Backend> backend, Hooks hooks,
                 Executor* executor, TimerQueue* timers, std::string server_address);
  ~PoolController();

  const std::string& name() const { return cfg_.name; }
  const config::PoolConfig& config() const { return cfg_; }
  bool is_static() const { return backend_ == nullptr; }

  // Restores workers persisted before a restart (as `starting`: they count as capacity until
  // they reconnect or the backend says they are gone), then lists the backend.
  void Start(const std::vector<Worker>& persisted);
  // The server is stopping: timers stop, nothing new reaches the backend (queued deletes and
  // creates are dropped), calls in flight are abandoned (Backend::Abandon ends them at once where
  // it can) and their results dropped. A create in flight whose machine already told its name is
  // persisted first, so the next start's sync finds it; a nameless one's machine, if it exists,
  // is an unknown worker to the next start's list.
  void Stop();

  // Runs the planner and acts on its plan. Cheap; call after anything changes.
  // The core's queue for this pool became non-empty (true) or empty (false): the start and end
  // of the demand whose create latency is measured (scale_up_latency).
  void NoteDemand(bool waiting);
  void Reconcile();

  // An agent says hello. Returns the worker it is, or PERMISSION_DENIED naming why not.
  // `join_token_ok`: the agent presented this (static) pool's join token instead of a worker token.
  // An agent with a valid token whose name the pool does not know binds to a worker whose
  // backend returned no name ("the name arrives through the connecting agent").
  Result<Worker*> AgentConnected(const std::string& name, bool worker_token_ok, bool join_token_ok,
                                 int slots, const std::map<std::string, std::string>& labels,
                                 const std::string& address);
  // True while a create is in flight whose worker's name is not known yet: an agent with a valid
  // token but an unknown name may be that worker, so its hello should wait rather than fail.
  bool AwaitingNames() const;
  // A connection was refused (bad token, unexpected name): counted, shown, and in metrics.
  void GhostRejected(const std::string& why);
  int ghosts() const { return ghosts_; }
  void AgentDisconnected(Worker* w);
  // The core changed w->used_slots / w->tasks.
  void SlotsChanged(Worker* w, bool reconcile = true);
  void Heartbeat(Worker* w);
  // Its agent reported a task stopped because the agent itself is stopping (its machine going
  // away): nothing more is placed there until it connects again.
  void AgentStopping(Worker* w);

  // The pool was removed (its AgentPool deleted): it creates nothing more, cancels the creates it
  // queued, and drains its workers (each deleted once its tasks end, the backend confirming).
  // Empty() says when it is done (pool_controller_lifecycle.cc).
  void Retire(const std::string& why);
  bool retired() const { return retired_; }
  bool Empty() const { return workers_.empty(); }
  // The pool declared again (its AgentPool changed): the new policy applies at once. With
  // `backend` (its backend block changed), creates, deletes and lists go to it from now on and
  // the old one is abandoned (its calls in flight end). Workers made before stay until the policy
  // lets them go. The create rate and concurrency stay as they were at the pool's start.
  void Reconfigure(config::PoolConfig cfg, std::unique_ptr<backends::Backend> backend);

  // How long a lost worker still counts against max_agents (the server's --worker-lost-grace).
  void SetLostGrace(Millis grace) { lost_grace_ = grace; }

  // For the scheduler: can this pool create workers now (has a backend, not in cooldown, max > 0)?
  bool Healthy() const;
  // Slots this pool could ever have (max_agents x slots; a static pool: what is connected).
  int PotentialSlots() const;
  bool batch_mode() const { return cfg_.auto_scaler && cfg_.auto_scaler->mode == config::PoolMode::kBatch; }

  // MODE_BATCH (pools.md "Batch mode"): `count` workers created together through the backend's
  // batch create, tagged with `batch`, for one task group; retried after a cooldown on failure.
  void RequestBatch(uint64_t batch, int count);
  // The group no longer needs its batch (it ended or was cancelled): its workers are deleted.
  void ReleaseBatch(uint64_t batch);
  // A batch worker has done its shard: it is not reused.
  void Retire(Worker* w, const std::string& why);

  // `tidepool worker drain|delete`.
  Status Drain(const std::string& name);
  // Its agent told a walltime (walltime.h): drained from drain_at_ms on (pool_controller_drain.cc).
  void SetWalltime(Worker* w, int64_t ends_at_ms, int64_t drain_at_ms);
  Status Delete(const std::string& name, bool force);

  Worker* Find(const std::string& name);
  std::vector<Worker*> Workers();            // all, by id
  std::vector<Worker*> SchedulableWorkers();

  // Status for listings.
  std::map<std::string, int> CountByPhase() const;  // every phase present, zeros included
  int requested_slots() const;                      // slots of workers requested or starting
  int idle_slots() const;
  int busy_slots() const;
  std::string status() const;                       // ready | scaling | cooldown | held
  std::string last_error() const { return last_error_; }
  const std::deque<PoolEvent>& events() const { return events_; }
  Policy policy() const;
  int starting_count() const;
  // The backend's words for the first starting worker that has any ("pending: Resources"), or "".
  std::string starting_detail() const;
  int idle_worker_count() const;

 private:
  Worker* Add(Phase phase, const std::string& name);
  void SetPhase(Worker* w, Phase p);
  void Event(const std::string& kind, const std::string& message, bool loud = false);
  void Forget(Worker* w);

  void LaunchCreates();
  // The hard cap, checked again as each create is launched (pool_cap.cc): workers that may be
  // alive (the planner's CountsAgainstCap), not counting requests whose create is not launched.
  int AliveLaunched(TimePoint now) const;
  bool MayLaunchCreate(TimePoint now) const;
  void AllocationFailed(const std::string& error, backends::ErrorClass cls);
  void LaunchBatch(uint64_t batch);
  void OnBatchCreated(uint64_t batch, Result<std::vector<std::string>> names);
  // Creates' answers and lists, checked (pool_controller_answers.cc, answers.h).
  void OnCreateDone(uint64_t id, Result<std::string> result);
  // A create answered an invalid name or one the pool has: an error of the backend, and the create
  // still counts against max_agents (RefusedCreateHeldUntil). `w`: its placeholder, if still tracked.
  void CreateAnswerRefused(Worker* w, const std::string& answer, const std::string& error, TimePoint launched);
  int HeldCreates(TimePoint now) const;  // refused creates still counted against max_agents
  void DropExpiredHolds(TimePoint now);
  // Entries of a list that were refused: the pool's backend error, logged once (until they change).
  void NoteListProblems(const std::vector<std::string>& problems);
  // Deletes (pool_controller_deletes.cc): paced by delete_pacer_ at the create limits.
  // `quiet`: no event of its own (one summary event covers many removals).
  void Remove(Worker* w, const std::string& why, bool quiet = false);
  void IssueDelete(Worker* w);
  void LaunchDeletes();
  void OnDeleteDone(uint64_t id, Status status);
  // New unknown names in a list: logs a flood (IsListFlood) loudly, once per episode.
  void NoteUnknownNames(const std::vector<std::string>& names);
  // Stop: persist creates in flight whose name is known (the rest are reconciled by the next list).
  void KeepNamedInFlight();

  // Hands the backend the watch callback (Backend::Watch): a change it sees makes the pool list.
  void WatchBackend();
  void ScheduleSync(Millis delay);
  void Sync();
  void OnListed(Result<std::vector<backends::ListedWorker>> listed, uint64_t generation);
  void CheckTimeouts();
  void ArmWake(std::optional<TimePoint> at);
  // Sets `*timer` to fire at `when`: then, on the core's thread and while this controller lives,
  // `*timer` is cleared and `fire` runs.
  void ArmTimer(TimerQueue::TimerId* timer, TimePoint when, std::function<void()> fire);
  // Takes no new work; deleted when its tasks end (or at once when it has none).
  void DrainWorker(Worker* w, const std::string& why);
  // Drains workers whose walltime drain time has come; wakes for the next one.
  void CheckWalltimes();

  config::PoolConfig cfg_;
  std::shared_ptr<backends::Backend> backend_;  // shared with calls still running on the executor
  Hooks hooks_;
  Executor* executor_;
  TimerQueue* timers_;
  std::string server_address_;
  std::shared_ptr<bool> alive_;  // guards callbacks that outlive the controller

  std::map<uint64_t, std::unique_ptr<Worker>> workers_;
  std::unordered_map<std::string, Worker*> by_name_;
  uint64_t next_id_ = 1;

  // Names a create in flight has chosen (via token_for), so an agent that connects before the
  // create call returns is recognised. Written from executor threads, hence its own lock.
  std::shared_ptr<NamedInFlight> named_in_flight_;

  std::deque<uint64_t> create_queue_;  // requested workers not yet handed to the backend
  int creates_in_flight_ = 0;
  TokenBucket create_bucket_;  // create_rate, burst max_concurrent_creates
  TimerQueue::TimerId create_timer_ = 0;
  TimePoint last_create_attempt_{};
  Millis lost_grace_{0};
  std::optional<TimePoint> demand_since_;  // first task waiting with no create launched for it since
  int consecutive_create_failures_ = 0;
  std::optional<TimePoint> cooldown_until_;
  std::string last_error_;
  TimePoint last_error_at_{};
  std::vector<TimePoint> refused_holds_;      // sorted: until when each refused create is counted
  std::deque<std::string> refused_answers_;   // refused create answers with a field separator in them
  std::set<std::string> list_problems_;       // the refused list entries of the last list (reported)

  DeletePacer delete_pacer_;  // create_rate, burst and in-flight limit max_concurrent_creates
  TimerQueue::TimerId delete_timer_ = 0;
  uint64_t workers_made_ = 0;  // workers asked for or restored, ever (the flood yardstick)
  bool flood_reported_ = false;

  std::optional<TimePoint> decay_started_;
  std::optional<TimePoint> wake_at_;
  TimerQueue::TimerId wake_timer_ = 0;
  TimerQueue::TimerId sync_timer_ = 0;
  TimerQueue::TimerId walltime_timer_ = 0;
  int64_t walltime_wake_ms_ = 0;  // the drain time walltime_timer_ is set for
  bool sync_in_flight_ = false;
  TimePoint list_issued_at_{};  // when the list in flight (one at a time) was issued
  bool listed_once_ = false;  // until the first successful list, any valid-token agent may be ours
  bool sync_requested_ = false;
  // The backend's watch said something changed (Backend::Watch): a worker missing from the list
  // that follows is looked for again within a second, not a whole sync interval later.
  bool watch_poked_ = false;
  bool retired_ = false;
  uint64_t watch_poked_at_gen_ = 0;  // list_generation_ when it was poked: lists issued later count
  uint64_t list_generation_ = 0;   // increments per list issued
  TimePoint started_at_{};
  bool held_by_unknown_ = false;

  std::deque<PoolEvent> events_;
  int ghosts_ = 0;
  struct BatchRequest {
    int count = 0;
    bool in_flight = false;
    bool created = false;
    TimePoint launched_at{};
  };
  std::map<uint64_t, BatchRequest> batches_;
  std::map<std::string, int64_t> last_event_ms_;  // by kind, for metrics

 public:
  int64_t last_event_ms(const std::string& kind) const {
    auto it = last_event_ms_.find(kind);
    return it == last_event_ms_.end() ? 0 : it->second;
  }
};

}  // namespace tidepool::autoscaler
