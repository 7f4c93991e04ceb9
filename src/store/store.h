// The durable store behind the server: tasks and workers.
//
// Contract:
// - Apply() commits a batch of mutations atomically; when it returns OK the batch is on disk
//   (fsync'd). It is the only write path, so one writer thread can group many callers' changes
//   into one commit (see WriteBatcher).
// - Reads see every committed write. They may run concurrently with Apply().
// - Records are the API's own protobuf messages, so nothing is translated twice.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "tidepool/v1/common.pb.h"
#include "tidepool/v1/pool.pb.h"

namespace tidepool::store {

struct TaskRecord {
  uint64_t seq = 0;      // submission order, unique, increasing
  v1::TaskSpec spec;     // as submitted (holds the environment: never listed)
  v1::Task status;       // id, state, times, exit, worker, attempts ...
};

struct WorkerRecord {
  v1::Worker worker;     // name, pool, state, created_at ...
};

struct Mutation {
  enum class Kind { kPutTask, kPutWorker, kDeleteWorker };
  Kind kind = Kind::kPutTask;
  TaskRecord task;       // kPutTask
  WorkerRecord worker;   // kPutWorker; for kDeleteWorker only worker.name is read

  static Mutation PutTask(TaskRecord t) { return {Kind::kPutTask, std::move(t), {}}; }
  static Mutation PutWorker(v1::Worker w) { return {Kind::kPutWorker, {}, {std::move(w)}}; }
  static Mutation DeleteWorker(std::string name) {
    Mutation m{Kind::kDeleteWorker, {}, {}};
    m.worker.worker.set_name(std::move(name));
    return m;
  }
};

struct TaskQuery {
  bool unfinished_only = false;          // states PENDING, QUEUEING, RUNNING, RUNNING_SUBTASKS
  int64_t finished_after_ms = 0;         // with !unfinished_only: also tasks finished after this
  v1::TaskState state = v1::TASK_STATE_UNSPECIFIED;
  std::string pool;
  std::string parent;                    // direct children of this task
  std::string id_prefix;                 // ids starting with this (name_2, name_3 ...)
  // With `state`: also every unfinished task, whatever its stored state (the caller filters on the
  // freshest state, which the core may hold uncommitted).
  bool state_or_unfinished = false;
  bool without_spec = false;             // records come with an empty spec (listings never show it)
  // Paging: newest first (descending seq) and only tasks older than `before_seq` (0 = no bound).
  bool newest_first = false;
  uint64_t before_seq = 0;
  int limit = 0;                         // 0 = no limit
};

class Store {
 public:
  virtual ~Store() = default;

  virtual Status Apply(const std::vector<Mutation>& batch) = 0;

  virtual Result<std::optional<TaskRecord>> GetTask(const std::string& id) = 0;
  // In submission order (or its reverse: TaskQuery::newest_first).
  virtual Result<std::vector<TaskRecord>> ListTasks(const TaskQuery& query) = 0;
  virtual Result<uint64_t> MaxSeq() = 0;
  // Every stored task's id, in no particular order (the server's filter of used ids).
  virtual Status ForEachTaskId(const std::function<void(std::string_view)>& fn) = 0;
  virtual Result<std::vector<WorkerRecord>> ListWorkers() = 0;

  // OK while the store can be written. Once a write or read fails in a way that says the file
  // cannot be written or trusted (I/O error, damage, disk full, read-only, permissions), that
  // failure for good, naming the file, the reason and what to do: every later Apply() returns it
  // without touching the file, so the file stays exactly what was acknowledged, and the server
  // accepts no new work. A restart after fixing the cause clears it.
  virtual Status Health() const { return Status::Ok(); }
  // Moves every committed transaction from the write-ahead log into the database file and
  // truncates the log (PRAGMA wal_checkpoint(TRUNCATE)): after it the database file alone is a
  // complete copy. Called at a clean stop.
  virtual Status Checkpoint() { return Status::Ok(); }
  // PRAGMA integrity_check (full) or quick_check: OK, or an error naming the file, the damage
  // found and what to do.
  virtual Status CheckIntegrity(bool /*full*/) { return Status::Ok(); }
};

struct OpenOptions {
  bool quick_check = true;  // run PRAGMA quick_check before returning
  bool create = true;       // create the file if it does not exist
};

// Opens (creating if needed) an SQLite database in WAL mode with synchronous=FULL. Before SQLite
// sees the file: takes the file's DbLock (db_lock.h; one server per database file, however it
// is named) and checks its write-ahead log (wal_check.h). Then PRAGMA quick_check. A store that
// cannot be trusted is refused with an error naming the file, the damage and what to do.
Result<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path, const OpenOptions& options = {});

bool IsFinal(v1::TaskState state);

}  // namespace tidepool::store
