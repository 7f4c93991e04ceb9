// The server's core: tasks, the queue, pools and connected agents, behind one lock.
//
// Everything that decides (queueing, matching, pool plans, task state) runs under `mu_`, so the
// rules see one consistent state; nothing under `mu_` blocks on I/O: store writes go to the
// group-commit writer, backend calls to the executor, messages to per-stream outboxes.
// Task output does not take `mu_` at all: it goes straight to its sink (log file or vrun).
//
// Durability: a task is acknowledged (vbatch's id, vrun's Accepted) only once its record is
// committed. A task is dispatched to an agent only once its assignment is committed, so after a
// crash the store never says "queued" about a task an agent is running (no task runs twice). An
// agent's exit report is acknowledged only once the final state is committed.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "autoscaler/pool_controller.h"
#include "common/bloom_filter.h"
#include "common/redact.h"
#include "common/executor.h"
#include "common/status.h"
#include "common/timer_queue.h"
#include "config/config.h"
#include "metrics/registry.h"
#include "server/auth.h"
#include "server/log_store.h"
#include "server/queue_budget.h"
#include "server/workspace_store.h"
#include "server/silence.h"
#include "server/tokens.h"
#include "store/store.h"
#include "store/write_batcher.h"
#include "tidepool/v1/agent.pb.h"
#include "tidepool/v1/pool.pb.h"
#include "tidepool/v1/task.pb.h"
#include "tidepool/v1/workspace.pb.h"

namespace tidepool::server {

// One connected agent stream, as the core sees it (implemented by the agent service).
class AgentLink {
 public:
  virtual ~AgentLink() = default;
  virtual bool Send(v1::ServerMessage m) = 0;
  virtual void Close(const Status& why) = 0;
  // Closes a link whose peer is presumed gone (silent past its heartbeats): no waiting for it to
  // read the goodbye, so the worker is lost now rather than after a linger.
  virtual void Abort(const Status& why) { Close(why); }
  // A hello that was held (HelloOutcome::kPending) has been accepted: start reading the stream.
  virtual void Accepted() = 0;
  // Steady-clock milliseconds of the last message (or bytes of one) received, whatever it was.
  std::atomic<int64_t> last_heard_ms{0};
  // The time up to which its reader has read everything that arrived (server/silence.h): a
  // reader that is stuck or stopped does not advance it. Default: a reader that keeps up.
  virtual int64_t ReadHorizonMs(int64_t now_ms) const { return now_ms; }
  // When its hello reached the core (P5: hello -> first task running). Set under the core lock.
  std::chrono::steady_clock::time_point hello_at{};
  int64_t MicrosSinceHello() const {
    return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - hello_at).count();
  }
};

enum class HelloOutcome { kAccepted, kPending, kRefused };

// One attached vrun (implemented by the task service).
class RunClient {
 public:
  virtual ~RunClient() = default;
  // `written` runs once the event has left for the client.
  virtual bool Send(v1::RunEvent e, std::function<void()> written = nullptr) = 0;
  virtual void Finish(const Status& status) = 0;
};

struct CoreOptions {
  config::Config config;
  std::string data_dir;
  std::string agent_address;  // what workers dial (server.advertise, else the bound listen address)
  std::string agent_binary;   // the tidepool executable (local backend)
  std::chrono::milliseconds worker_lost_grace{60000};
  std::chrono::milliseconds kill_grace{10000};
  std::chrono::milliseconds heartbeat_interval{5000};
  // The most heartbeats per second the server asks for in total (as Nomad's
  // max_heartbeats_per_second, whose default is 50): an agent is given heartbeat_interval, or
  // connected/this seconds when that is longer, so 10,000 agents beat every 40 s, not every 5
  // (P8). 0 = no cap.
  int max_heartbeat_rate = 250;
  metrics::Registry* metrics = nullptr;  // optional; must outlive the core
  bool auth = false;                     // users and roles are on: tasks get task tokens
  // Pools are also declared while the server runs (AgentPool resources, k8s_pools.h): the
  // records of workers of pools the config file does not name are kept at the start, for
  // DeclarePool, until ForgetHeldWorkers.
  bool declared_pools = false;
  QueueLimits queue_limits;              // caps on what unfinished tasks hold (queue_budget.h)
};

class Core {
 public:
  Core(CoreOptions options, std::unique_ptr<store::Store> store, TokenAuthority tokens);
  ~Core();

  // Loads unfinished tasks and known workers, starts the pools.
  Status Start();
  // First half of a shutdown: refuse new work and stop the pools, so that agents disconnecting
  // during the shutdown are not taken for lost workers. Backend calls in flight are abandoned
  // (PoolController::Stop).
  void Quiesce();
  // Stops pools and timers, drops queued backend calls and deferred work (none starts after
  // this), waits at most kStopBound for the calls running, commits everything pending and
  // checkpoints the store's write-ahead log into the database file (so that file alone is a
  // complete backup). Agents keep running their tasks.
  void Stop();
  // After Stop: backend calls still running past the bound. The process must then exit without
  // destroying the Core (its executor would wait for them).
  size_t abandoned_calls() const { return abandoned_calls_; }
  static constexpr std::chrono::milliseconds kStopBound{5000};

  // ---- pools declared while the server runs (core_pools.cc) ----
  // Makes the pool, or changes it if it was declared before (a retired one comes back). Refused
  // for a pool of the config file, and for a change between static and autoscaled.
  Status DeclarePool(const config::PoolConfig& pc);
  // The pool takes no new tasks; its queued tasks fail; its workers are drained and deleted
  // (PoolController::Retire). Its object stays until the server stops.
  Status RetirePool(const std::string& name, const std::string& why);
  // A retired pool with no workers left, or no pool declared by that name (none, or the config
  // file's): what an AgentPool's finalizer waits for.
  bool PoolGone(const std::string& name);
  // The pool as `pool get` shows it, if it exists.
  std::optional<v1::Pool> PoolSnapshot(const std::string& name);
  // Held worker records (CoreOptions::declared_pools) of pools that are not among `declared`
  // are forgotten, each named in the log.
  void ForgetHeldWorkers(const std::set<std::string>& declared);

  // ---- clients ----
  // vbatch: `done` gets the id once the task is durable, or the error.
  void Submit(v1::TaskSpec spec, std::function<void(Result<std::string>)> done, const Caller& caller = {});
  // vrun: the client receives Accepted once durable, then Waiting/Started/Output/Exited.
  // Returns the task id, or "" when refused (the client was finished with the error).
  std::string Run(std::shared_ptr<RunClient> client, v1::TaskSpec spec, const Caller& caller = {});
  void RunInput(const std::string& task_id, const v1::RunRequest& request);
  // The vrun went away. While the server runs, its command is stopped (or withdrawn if queued);
  // once the server is stopping, nothing happens: the vrun reattaches to the next server.
  void RunClientGone(const std::string& task_id);
  // A vrun cut off by a server restart takes its task up again (core_run.cc): the client receives
  // Accepted, Started (if running), the output from the given offsets on, and Exited, as for
  // Run; a task that ended meanwhile answers Accepted and its Exited at once. Returns the task
  // id, or "" when refused (the client was finished with the error: NOT_FOUND as for a task the
  // caller cannot see, ABORTED while another vrun is attached, FAILED_PRECONDITION for a batch task).
  std::string Reattach(std::shared_ptr<RunClient> client, const v1::Reattach& request, const Caller& caller = {});
  // Restored interactive tasks wait this long for their vrun (TaskSpec.reattach_for_ms = 0).
  static constexpr std::chrono::milliseconds kDefaultReattachFor{5 * 60 * 1000};

  Result<v1::Task> GetTask(const std::string& id, const Caller& caller = {});
  // One page, newest first (core_list.cc): at most request.limit tasks (kDefaultListLimit when 0)
  // and about kMaxListBytes; next_after is the cursor for the next page ("" = none).
  struct TaskPage {
    std::vector<v1::Task> tasks;
    std::string next_after;
  };
  static constexpr size_t kDefaultListLimit = 100;
  static constexpr int kMaxListLimit = 1000;
  static constexpr size_t kMaxListBytes = 4 << 20;
  Result<TaskPage> ListTasks(const v1::ListTasksRequest& request, const Caller& caller = {});
  Result<std::vector<std::string>> CancelTask(const std::string& id, const Caller& caller = {});
  // Calls `fn` with the task now and at every change until final; returns the watch id (UINT64_MAX
  // for a task already final). `fn` may be called under the core lock and must not call back in.
  Result<uint64_t> Watch(const std::string& id, std::function<void(const v1::Task&)> fn, const Caller& caller = {});
  void Unwatch(const std::string& id, uint64_t watch_id);
  // The log sink of a task, and whether the task is final already.
  Result<std::pair<std::shared_ptr<LogSink>, bool>> Logs(const std::string& id, const Caller& caller = {});

  std::vector<v1::Pool> ListPools(const Caller& caller = {});
  Result<v1::PoolDetail> GetPool(const std::string& name, const Caller& caller = {});
  std::vector<v1::Worker> ListWorkers(const std::string& pool, const Caller& caller = {});
  Result<v1::Worker> DrainWorker(const std::string& name, const Caller& caller = {});
  Result<v1::Worker> DeleteWorker(const std::string& name, bool force, const Caller& caller = {});

  // ---- agents ----
  // Verifies identity; on success the link is attached to its worker and welcomed. An agent with
  // a valid token whose name its pool does not know yet, while a create is in flight there,
  // is held (kPending) until the name is known: then link->Accepted() or link->Close().
  HelloOutcome AgentHello(std::shared_ptr<AgentLink> link, const v1::AgentHello& hello, Status* refusal);
  // The stream of a held hello ended.
  void AgentHelloAbandoned(AgentLink* link);
  void AgentMessage(AgentLink* link, const v1::AgentMessage& msg);
  void AgentGone(AgentLink* link);
  // Task output, without the core lock; returns the stored offset to acknowledge (or nullopt
  // to acknowledge later, when the client has taken it).
  std::optional<uint64_t> AgentOutput(AgentLink* link, const v1::TaskOutput& out);

  // ---- workspaces (core_workspace.cc) ----
  // What the pools a task would go to want of the caller's files.
  Result<v1::WorkspaceSettings> WorkspaceSettingsFor(const v1::SettingsRequest& request, const Caller& caller = {});
  WorkspaceStore& workspace_store() { return workspace_store_; }
  // Counts workspace content moved: direction "received" or "sent", peer "client" or "agent"
  // (metric tidepool_workspace_bytes_total).
  void CountWorkspaceBytes(const char* direction, const char* peer, uint64_t bytes);
  // The owner of a task that this link's worker holds (its blob requests name it); NotFound
  // (the same words for a task that is not there and one that is another worker's) otherwise.
  Result<std::string> LinkTaskOwner(AgentLink* link, const std::string& task_id);

  // The owner of an unfinished task (for task tokens); "" if none.
  std::string TaskOwner(const std::string& id);

  // OK, or why the store accepts no more writes (store.h Health()): then Submit and Run refuse
  // with it, nothing new is dispatched, and /healthz reports it.
  Status StoreHealth() const { return store_->Health(); }

  const TokenAuthority& tokens() const { return tokens_; }
  int agents_connected() const { return agents_connected_.load(); }

 private:
  struct Task;
  struct Session;  // an agent link bound to a worker
  class OutputRoute;

  // All below require mu_.
  Task* FindTask(const std::string& id);
  // Submission (core_tasks.cc): builds the task (and its shards), persists it, queues it.
  // `on_commit` runs once every record is durable (or failed), on the store's writer thread,
  // with the new task's id and pool: it may run before CreateTask returns.
  using Committed = std::function<void(const Status&, const std::string& id, const std::string& pool)>;
  Result<Task*> CreateTask(v1::TaskSpec spec, std::shared_ptr<RunClient> client, Committed on_commit,
                           const Caller& caller);
  // A task for a pool that brings the caller's files must name its workspace, and that must be
  // in the owner's store (core_workspace.cc).
  Status CheckWorkspace(const v1::TaskSpec& spec, const std::vector<autoscaler::PoolController*>& eligible,
                        const std::string& owner);
  // May the caller see (and cancel) this task: its owner, or a manager of its pool. One it may
  // not see answers as a missing one (TaskNotFound, core_visibility.cc).
  bool MaySee(const Caller& caller, const v1::Task& t);
  Result<std::vector<autoscaler::PoolController*>> ResolveTarget(v1::TaskSpec& spec, const Task* parent);
  Result<std::string> AssignId(const v1::TaskSpec& spec, const Task* parent);
  // Dependencies the caller may not see are not found, exactly as missing ones (core_visibility.cc).
  Status ResolveDependencies(v1::TaskSpec& spec, const Task* parent, const Caller& caller);
  // Adds an unfinished task to tasks_, charged to its owner's budget (budget_).
  Task* AddTask(const std::string& id, v1::TaskSpec spec, const std::string& owner);
  void Track(std::unique_ptr<Task> t);
  // Removes a final task from tasks_ and releases its charge.
  void Forget(const std::string& id);
  // (Re)builds used_ids_ from the store and tasks_, with room to grow.
  Status RebuildUsedIds();
  void Persist(Task* t, store::WriteBatcher::Callback cb = nullptr);
  void Changed(Task* t);  // persists and notifies watchers
  void Notify(Task* t);   // watchers only
  // Makes a task runnable: QUEUEING (queued), or for a group, its shards.
  void Release(Task* t);
  void EvaluateDependencies(Task* t);
  void ChildFinal(Task* parent, Task* child);
  void ResolveParent(Task* t);
  void OwnCommandEnded(Task* t, v1::TaskState state, const std::string& reason);
  void CancelTree(Task* t, const std::string& reason, std::vector<std::string>* cancelled);
  void Finish(Task* t, v1::TaskState state, const std::string& reason);
  void OnExited(Session* s, const v1::TaskExited& e);
  // Interactive (core_run.cc): the exit report waits while no vrun has its output (detached
  // after a restart); true when it must be held.
  bool HoldExitForVrun(Task* t, const v1::TaskExited& e);
  // A restored interactive task: its vrun may come back until kDefaultReattachFor (or the spec's).
  void Detach(Task* t);
  void DetachExpired(const std::string& task_id);
  // Takes a held exit report (its agent connected), or asks the agent to send its output again.
  void ResumeOutput(Task* t);
  // Sends the client of a run that ended its Exited (from the record) and finishes it.
  void SendExited(RunClient* client, const v1::Task& st, bool* exit_sent);
  // Stops the command of a running interactive task nobody is attached to any more.
  void CancelUnattended(Task* t, const std::string& reason);
  // A batch task's log holds every byte its exit report counts (a full disk may have refused some).
  bool OutputStored(const Task& t, const v1::TaskExited& e);
  // OK when new work may be taken: the store has not failed and no commit waits for disk space.
  Status StoreTakesWork() const;
  void WorkerLost(autoscaler::Worker* w);
  void LostGraceExpired(const std::string& task_id, int attempt);
  void Requeue(Task* t, const std::string& why);
  void GangShardStopped(Task* shard, const std::string& why);
  void MaybeRestartGang(Task* group);
  // Scheduling (core_schedule.cc).
  void Enqueue(Task* t);
  void Dequeue(Task* t);
  autoscaler::PoolController* ChooseDemandPool(const Task* t, autoscaler::PoolController* exclude);
  void Rehome(autoscaler::PoolController* unhealthy);
  void Schedule(autoscaler::PoolController* pool);  // schedules the pool's whole selector group
  void ScheduleSoon(const std::string& pool);
  void Dispatch(Task* t, autoscaler::Worker* w);
  void DispatchGang(Task* group, const std::vector<autoscaler::Worker*>& workers);
  void OnDispatchCommitted(const std::string& task_id, int attempt);
  void ReleaseSlot(Task* t);
  void NotifyWaiting(autoscaler::PoolController* pool);
  void CollectMetrics(metrics::GaugeWriter& g);
  void Attach(std::shared_ptr<AgentLink> link, const v1::AgentHello& hello, autoscaler::PoolController* pool,
              autoscaler::Worker* w);
  void RetryHeldHellos(autoscaler::PoolController* pool);
  // A hello for a pool not declared yet whose worker record is held (CoreOptions::declared_pools)
  // and whose token is right: it waits for DeclarePool (core_pools.cc).
  bool HeldForDeclaration(const v1::AgentHello& hello);
  // The hellos held for `pool`: retried if it exists now, else refused.
  void ExpireUndeclaredHellos(const std::string& pool);
  // The hello's worker name: valid, and (for an agent whose credentials passed) not held by another
  // live agent (core_names.cc, name_claim.h). PERMISSION_DENIED or ALREADY_EXISTS naming why.
  Status CheckHelloName(const v1::AgentHello& hello, bool credentials_ok);
  int WaitingFor(const std::string& pool) const;
  void Post(std::function<void()> fn);
  // The heartbeat interval for an agent joining `connected` others (Options::max_heartbeat_rate).
  int64_t HeartbeatIntervalFor(int connected) const;
  // Closes sessions silent for three of their heartbeat intervals (a cut link TCP has not noticed
  // yet), counting only time the server was listening (silence_).
  void CheckHeartbeats();
  autoscaler::PoolController* Pool(const std::string& name);
  v1::Worker WorkerProto(const autoscaler::Worker& w) const;
  v1::Pool PoolProto(autoscaler::PoolController& p);
  // The controller of `pc` with its backend and hooks (core_pools.cc); `redactor` scrubs what
  // its backend says.
  std::unique_ptr<autoscaler::PoolController> MakePool(const config::PoolConfig& pc,
                                                       std::shared_ptr<const Redactor> redactor);
  std::unique_ptr<backends::Backend> MakeBackend(const config::PoolConfig& pc, const std::shared_ptr<const Redactor>& redactor);
  // Pools linked by a shared selector are matched together (one scheduling group).
  void RegroupPools();
  Session* SessionOf(AgentLink* link);
  void SendToWorker(const std::string& worker, v1::ServerMessage m);

  CoreOptions opts_;
  std::unique_ptr<store::Store> store_;
  TokenAuthority tokens_;
  store::WriteBatcher batcher_;
  LogStore logs_;
  WorkspaceStore workspace_store_;
  Executor executor_;  // blocking backend calls
  Executor posts_;     // deferred core work (one thread: runs under mu_ anyway)
  TimerQueue timers_;

  mutable std::mutex mu_;
  SilenceJudge silence_{5000};  // period set in Start (heartbeat_interval)
  bool stopped_ = false;
  bool fully_stopped_ = false;
  size_t abandoned_calls_ = 0;
  uint64_t next_seq_ = 1;
  // Unfinished tasks, and final ones until their final state is committed. Ids are unique
  // across this map and the store.
  std::unordered_map<std::string, std::unique_ptr<Task>> tasks_;
  // Every task id stored or made since the start: an id it has never seen is free without a
  // read of the store (AssignId is on every submission's path).
  BloomFilter used_ids_;
  // The count and spec bytes of the tasks in tasks_, per owner and in all, against the caps.
  QueueBudget budget_;
  std::map<std::string, std::unique_ptr<autoscaler::PoolController>> pools_;
  std::set<std::string> declared_;  // pools made by DeclarePool (not the config file's)
  std::map<std::string, std::vector<autoscaler::Worker>> held_workers_;  // CoreOptions::declared_pools
  // Per pool: queued entries by (priority, seq), and the slots they need in total.
  std::map<std::string, std::map<std::pair<int32_t, uint64_t>, Task*>> queues_;
  std::map<std::string, int> queued_slots_;
  // Per pool: queued entries with a vrun waiting on them (NotifyWaiting walks only that far).
  std::map<std::string, int> queued_clients_;
  // Pools linked by shared selectors are scheduled together.
  std::map<std::string, std::vector<autoscaler::PoolController*>> sched_group_;
  std::map<std::string, bool> last_healthy_;
  // Dependency -> the tasks waiting on it.
  std::unordered_map<std::string, std::vector<std::string>> dependents_;
  std::unordered_map<AgentLink*, std::unique_ptr<Session>> sessions_;
  std::unordered_map<std::string, Session*> session_by_worker_;
  std::unordered_map<std::string, std::string> last_instance_;  // worker -> its agent's instance id
  struct HeldHello {
    std::shared_ptr<AgentLink> link;
    v1::AgentHello hello;
    std::chrono::steady_clock::time_point deadline;
  };
  std::map<std::string, std::vector<HeldHello>> held_hellos_;  // by pool
  uint64_t next_watch_ = 1;
  std::set<std::string> schedule_pending_;
  std::map<std::pair<std::string, v1::TaskState>, int64_t> finished_;  // (pool, final state) since start
  std::atomic<int> agents_connected_{0};

  // Output routing, outside mu_.
  std::mutex routes_mu_;
  std::unordered_map<std::string, std::shared_ptr<OutputRoute>> routes_;
};

}  // namespace tidepool::server
