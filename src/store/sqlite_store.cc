// SQLite implementation of Store. One connection for writes, one for reads (WAL lets them run
// side by side); each behind its own mutex.
#include <sqlite3.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "store/db_lock.h"
#include "store/store.h"
#include "store/wal_check.h"

namespace tidepool::store {

bool IsFinal(v1::TaskState s) {
  return s == v1::TASK_STATE_SUCCESS || s == v1::TASK_STATE_FAILURE ||
         s == v1::TASK_STATE_FAILED_UPSTREAM || s == v1::TASK_STATE_CANCELLED;
}

namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS tasks (
  id          TEXT PRIMARY KEY,
  seq         INTEGER NOT NULL UNIQUE,
  parent      TEXT NOT NULL,
  state       INTEGER NOT NULL,
  pool        TEXT NOT NULL,
  finished_at INTEGER NOT NULL,
  spec        BLOB NOT NULL,
  status      BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_state ON tasks(state);
CREATE INDEX IF NOT EXISTS tasks_parent ON tasks(parent);
CREATE INDEX IF NOT EXISTS tasks_finished ON tasks(finished_at);
CREATE TABLE IF NOT EXISTS workers (
  name   TEXT PRIMARY KEY,
  pool   TEXT NOT NULL,
  worker BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
  key   TEXT PRIMARY KEY,
  value BLOB NOT NULL
);
INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', '1');
)sql";

// The prepared statements of one connection, kept for its life: on the submission path, parsing
// the SQL cost more than running it. Keyed by the SQL text, which only this file writes (ListTasks
// one per combination of its filters, values bound), so the set stays small.
class StmtCache {
 public:
  ~StmtCache() { Clear(); }
  void Clear() {
    for (auto& [sql, s] : stmts_) sqlite3_finalize(s);
    stmts_.clear();
  }
  // nullptr if the SQL does not compile.
  sqlite3_stmt* Get(sqlite3* db, const std::string& sql) {
    if (auto it = stmts_.find(sql); it != stmts_.end()) return it->second;
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v3(db, sql.c_str(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT, &s, nullptr) !=
        SQLITE_OK) {
      sqlite3_finalize(s);
      return nullptr;
    }
    stmts_.emplace(sql, s);
    return s;
  }

 private:
  std::unordered_map<std::string, sqlite3_stmt*> stmts_;
};

// One use of a kept statement: reset and unbound when it goes, so that no read transaction stays
// open.
class Stmt {
 public:
  Stmt(sqlite3* db, StmtCache& cache, const std::string& sql) : s_(cache.Get(db, sql)) {}
  ~Stmt() {
    if (!s_) return;
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  bool ok() const { return s_ != nullptr; }
  sqlite3_stmt* get() { return s_; }
  void Bind(int i, const std::string& v) { sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT); }
  void BindBlob(int i, const std::string& v) { sqlite3_bind_blob(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT); }
  void Bind(int i, int64_t v) { sqlite3_bind_int64(s_, i, v); }
  void Reset() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  std::string Blob(int col) {
    const void* p = sqlite3_column_blob(s_, col);
    int n = sqlite3_column_bytes(s_, col);
    return p ? std::string(static_cast<const char*>(p), static_cast<size_t>(n)) : std::string();
  }

 private:
  sqlite3_stmt* s_ = nullptr;
};

// What to do about a store SQLite says is damaged.
std::string RecoverAdvice(const std::string& path) {
  return fmt::format(
      "stop the server, keep a copy of {0} (and {0}-wal if present), then restore it from a backup, or salvage what "
      "is readable with `sqlite3 {0} .recover | sqlite3 NEW.db` and start on NEW.db; `tidepool admin check --db "
      "sqlite:{0}` runs the full check",
      path);
}

// True for the errors that say the file cannot be written or trusted, as opposed to one bad
// statement (a constraint): after one of these the store accepts no more writes (Health()).
bool IsFatal(int rc) {
  switch (rc & 0xff) {
    case SQLITE_IOERR:
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_PERM:
      return true;
    default:
      return false;
  }
}

// The last error of `db` is its file system running out of space (ENOSPC or a quota): a
// condition that passes when space is freed, unlike damage or an I/O error. Read right after the
// failing call (SQLite keeps the OS's errno only until the next one).
bool IsDiskFull(sqlite3* db) {
  const int rc = sqlite3_extended_errcode(db) & 0xff;
  const int e = sqlite3_system_errno(db);
  return (rc == SQLITE_FULL && e != EFBIG) || (rc == SQLITE_IOERR && (e == ENOSPC || e == EDQUOT));
}

// "store PATH: WHAT: SQLite's message (the OS's reason)", and what to do about it.
Status SqlError(sqlite3* db, const std::string& what) {
  const char* file = sqlite3_db_filename(db, "main");
  std::string path = file && *file ? file : "(memory)";
  int rc = sqlite3_extended_errcode(db);
  std::string msg = fmt::format("store {}: {}: {}", path, what, sqlite3_errmsg(db));
  // Which system call failed (SQLite's extended code) and, when SQLite kept it, the OS's reason.
  const char* call = nullptr;
  switch (rc) {
    case SQLITE_IOERR_READ: case SQLITE_IOERR_SHORT_READ: call = "read failed"; break;
    case SQLITE_IOERR_WRITE: call = "write failed"; break;
    case SQLITE_IOERR_FSYNC: case SQLITE_IOERR_DIR_FSYNC: call = "fsync failed"; break;
    case SQLITE_IOERR_TRUNCATE: call = "truncate failed"; break;
    case SQLITE_IOERR_FSTAT: call = "fstat failed"; break;
    case SQLITE_IOERR_SHMOPEN: case SQLITE_IOERR_SHMSIZE: case SQLITE_IOERR_SHMMAP: call = "shared memory file failed"; break;
    default: break;
  }
  int e = ((rc & 0xff) == SQLITE_IOERR || (rc & 0xff) == SQLITE_FULL || (rc & 0xff) == SQLITE_CANTOPEN)
              ? sqlite3_system_errno(db) : 0;
  if (call && e) msg += fmt::format(" ({}: {})", call, std::strerror(e));
  else if (call) msg += fmt::format(" ({})", call);
  else if (e) msg += fmt::format(" ({})", std::strerror(e));
  switch (rc & 0xff) {
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      msg += "; the file is damaged: " + RecoverAdvice(path);
      break;
    case SQLITE_FULL:
      if (!IsDiskFull(db)) msg += "; free space on its file system, then restart the server";
      break;
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_PERM:
      msg += "; fix the cause (disk, permissions, mount), then restart the server";
      break;
    default:
      break;
  }
  if (IsDiskFull(db)) {
    msg += "; its file system is full: free space there and the commit goes through (the server retries it "
           "and takes no new work meanwhile)";
    return Status(StatusCode::kResourceExhausted, std::move(msg));
  }
  return IsFatal(rc) ? Status(StatusCode::kFailedPrecondition, std::move(msg)) : Internal(std::move(msg));
}

Status Exec(sqlite3* db, const char* sql, const char* what = "open") {
  if (sqlite3_exec(db, sql, nullptr, nullptr, nullptr) != SQLITE_OK) return SqlError(db, what);
  return Status::Ok();
}

Result<TaskRecord> ReadTask(Stmt& st) {
  TaskRecord r;
  r.seq = static_cast<uint64_t>(sqlite3_column_int64(st.get(), 0));
  if (!r.spec.ParseFromString(st.Blob(1)) || !r.status.ParseFromString(st.Blob(2))) {
    return Internal(fmt::format("store: task record {} is corrupt",
                                reinterpret_cast<const char*>(sqlite3_column_text(st.get(), 3))));
  }
  return r;
}

class SqliteStore final : public Store {
 public:
  ~SqliteStore() override {
    write_stmts_.Clear();  // a connection with statements left does not close
    read_stmts_.Clear();
    if (write_) sqlite3_close(write_);
    if (read_) sqlite3_close(read_);
    // lock_ (a member) closes its descriptor only now, after the connections: see db_lock.h.
  }

  Status Open(const std::string& path, const OpenOptions& options) {
    path_ = path;
    if (!options.create && ::access(path.c_str(), F_OK) != 0) {
      return NotFound(fmt::format("store {}: {}", path, std::strerror(errno)));
    }
    auto lock = DbLock::Acquire(path);
    if (!lock.ok()) return lock.status();
    lock_ = std::move(lock).value();
    // Before SQLite replays the log: SQLite would silently drop transactions behind a bad frame.
    auto wal = CheckWal(path + "-wal");
    if (!wal.ok()) return wal.status();
    if (wal->torn_from) {
      spdlog::warn("store {}: the last transaction in {}-wal (from offset {}) is torn, as a power loss during its "
                   "commit leaves it; it was never acknowledged and is dropped",
                   path, path, wal->torn_from);
    }
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(path.c_str(), &write_, flags, nullptr) != SQLITE_OK) {
      return write_ ? SqlError(write_, "open") : Internal(fmt::format("store {}: open: out of memory", path));
    }
    sqlite3_extended_result_codes(write_, 1);
    sqlite3_busy_timeout(write_, 5000);
    if (Status s = Exec(write_, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;"); !s.ok())
      return s;
    if (Status s = Exec(write_, kSchema); !s.ok()) return s;
    if (sqlite3_open_v2(path.c_str(), &read_, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr) != SQLITE_OK) {
      return read_ ? SqlError(read_, "open for reading") : Internal(fmt::format("store {}: open: out of memory", path));
    }
    sqlite3_busy_timeout(read_, 5000);
    if (options.quick_check) return CheckIntegrity(false);
    return Status::Ok();
  }

  Status Health() const override {
    std::lock_guard lock(health_mu_);
    return failed_;
  }

  Status Checkpoint() override {
    std::lock_guard lock(write_mu_);
    if (!Health().ok()) return Health();
    if (sqlite3_wal_checkpoint_v2(write_, nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr) != SQLITE_OK) {
      return Noted(SqlError(write_, "checkpoint"), write_);
    }
    return Status::Ok();
  }

  Status CheckIntegrity(bool full) override {
    std::lock_guard lock(read_mu_);
    const char* pragma = full ? "PRAGMA integrity_check(20)" : "PRAGMA quick_check(20)";
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(read_, pragma, -1, &st, nullptr) != SQLITE_OK) {
      sqlite3_finalize(st);
      return Noted(SqlError(read_, pragma), read_);
    }
    std::vector<std::string> found;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      const unsigned char* text = sqlite3_column_text(st, 0);
      std::string line = text ? reinterpret_cast<const char*>(text) : "";
      if (line != "ok") found.push_back(std::move(line));
    }
    Status err = rc == SQLITE_DONE ? Status::Ok() : SqlError(read_, pragma);
    sqlite3_finalize(st);
    if (!err.ok()) return Noted(std::move(err), read_);
    if (found.empty()) return Status::Ok();
    std::string list;
    for (const std::string& f : found) list += "\n  " + f;
    Status damaged(StatusCode::kFailedPrecondition,
                   fmt::format("store {}: the file is damaged; {} found:{}\n{}", path_, pragma, list, RecoverAdvice(path_)));
    std::lock_guard hl(health_mu_);
    if (failed_.ok()) failed_ = damaged;
    return damaged;
  }

  Status Apply(const std::vector<Mutation>& batch) override {
    if (batch.empty()) return Status::Ok();
    std::lock_guard lock(write_mu_);
    // A store that failed stays as it was: what is on file is exactly what was acknowledged.
    if (Status h = Health(); !h.ok()) return h;
    // Only the last write of a task or worker in a batch matters.
    std::unordered_map<std::string, size_t> last_task, last_worker;
    for (size_t i = 0; i < batch.size(); ++i) {
      if (batch[i].kind == Mutation::Kind::kPutTask) last_task[batch[i].task.status.id()] = i;
      else last_worker[batch[i].worker.worker.name()] = i;
    }
    if (Status s = Step(write_, write_stmts_, "BEGIN IMMEDIATE"); !s.ok()) return Noted(s, write_);
    Stmt put_task(write_, write_stmts_,
                  "INSERT INTO tasks(id, seq, parent, state, pool, finished_at, spec, status) "
                  "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT(id) DO UPDATE SET "
                  "state=excluded.state, pool=excluded.pool, finished_at=excluded.finished_at, "
                  "status=excluded.status");
    Stmt put_worker(write_, write_stmts_, "INSERT OR REPLACE INTO workers(name, pool, worker) VALUES(?1, ?2, ?3)");
    Stmt del_worker(write_, write_stmts_, "DELETE FROM workers WHERE name = ?1");
    if (!put_task.ok() || !put_worker.ok() || !del_worker.ok()) {
      Status err = Noted(SqlError(write_, "prepare"), write_);
      Exec(write_, "ROLLBACK");
      return err;
    }
    std::string spec_bytes, status_bytes;
    for (size_t i = 0; i < batch.size(); ++i) {
      const Mutation& m = batch[i];
      Stmt* st = nullptr;
      if (m.kind == Mutation::Kind::kPutTask) {
        if (last_task[m.task.status.id()] != i) continue;
        st = &put_task;
        m.task.spec.SerializeToString(&spec_bytes);
        m.task.status.SerializeToString(&status_bytes);
        st->Bind(1, m.task.status.id());
        st->Bind(2, static_cast<int64_t>(m.task.seq));
        st->Bind(3, m.task.status.parent());
        st->Bind(4, static_cast<int64_t>(m.task.status.state()));
        st->Bind(5, m.task.status.pool());
        st->Bind(6, m.task.status.finished_at_ms());
        st->BindBlob(7, spec_bytes);
        st->BindBlob(8, status_bytes);
      } else {
        if (last_worker[m.worker.worker.name()] != i) continue;
        if (m.kind == Mutation::Kind::kPutWorker) {
          st = &put_worker;
          m.worker.worker.SerializeToString(&status_bytes);
          st->Bind(1, m.worker.worker.name());
          st->Bind(2, m.worker.worker.pool());
          st->BindBlob(3, status_bytes);
        } else {
          st = &del_worker;
          st->Bind(1, m.worker.worker.name());
        }
      }
      if (sqlite3_step(st->get()) != SQLITE_DONE) {
        Status err = Noted(SqlError(write_, "write"), write_);
        st->Reset();
        Exec(write_, "ROLLBACK");
        return err;
      }
      st->Reset();
    }
    if (Status s = Step(write_, write_stmts_, "COMMIT"); !s.ok()) {
      Noted(s, write_);
      Exec(write_, "ROLLBACK");
      return s;
    }
    return Status::Ok();
  }

  Result<std::optional<TaskRecord>> GetTask(const std::string& id) override {
    std::lock_guard lock(read_mu_);
    Stmt st(read_, read_stmts_, "SELECT seq, spec, status, id FROM tasks WHERE id = ?1");
    if (!st.ok()) return SqlError(read_, "prepare");
    st.Bind(1, id);
    int rc = sqlite3_step(st.get());
    if (rc == SQLITE_DONE) return std::optional<TaskRecord>();
    if (rc != SQLITE_ROW) return Noted(SqlError(read_, "read task"), read_);
    Result<TaskRecord> r = ReadTask(st);
    if (!r.ok()) return r.status();
    return std::optional<TaskRecord>(std::move(r).value());
  }

  Result<std::vector<TaskRecord>> ListTasks(const TaskQuery& q) override {
    std::string sql = q.without_spec ? "SELECT seq, x'', status, id FROM tasks WHERE 1=1"
                                     : "SELECT seq, spec, status, id FROM tasks WHERE 1=1";
    if (q.unfinished_only) {
      sql += " AND state IN (1, 2, 3, 4)";
    } else if (q.finished_after_ms > 0) {
      sql += " AND (state IN (1, 2, 3, 4) OR finished_at >= ?1)";
    }
    if (q.state != v1::TASK_STATE_UNSPECIFIED) {
      sql += q.state_or_unfinished ? " AND (state = ?2 OR state IN (1, 2, 3, 4))" : " AND state = ?2";
    }
    if (!q.pool.empty()) sql += " AND pool = ?3";
    if (!q.parent.empty()) sql += " AND parent = ?4";
    if (!q.id_prefix.empty()) sql += " AND substr(id, 1, length(?5)) = ?5";
    if (q.before_seq > 0) sql += " AND seq < ?7";
    sql += q.newest_first ? " ORDER BY seq DESC" : " ORDER BY seq";
    if (q.limit > 0) sql += " LIMIT ?6";
    std::lock_guard lock(read_mu_);
    Stmt st(read_, read_stmts_, sql);
    if (!st.ok()) return SqlError(read_, "prepare");
    if (!q.unfinished_only && q.finished_after_ms > 0) st.Bind(1, q.finished_after_ms);
    if (q.state != v1::TASK_STATE_UNSPECIFIED) st.Bind(2, static_cast<int64_t>(q.state));
    if (!q.pool.empty()) st.Bind(3, q.pool);
    if (!q.parent.empty()) st.Bind(4, q.parent);
    if (!q.id_prefix.empty()) st.Bind(5, q.id_prefix);
    if (q.limit > 0) st.Bind(6, static_cast<int64_t>(q.limit));
    if (q.before_seq > 0) st.Bind(7, static_cast<int64_t>(q.before_seq));
    std::vector<TaskRecord> out;
    int rc;
    while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
      Result<TaskRecord> r = ReadTask(st);
      if (!r.ok()) return r.status();
      out.push_back(std::move(r).value());
    }
    if (rc != SQLITE_DONE) return Noted(SqlError(read_, "list tasks"), read_);
    return out;
  }

  Result<uint64_t> MaxSeq() override {
    std::lock_guard lock(read_mu_);
    Stmt st(read_, read_stmts_, "SELECT COALESCE(MAX(seq), 0) FROM tasks");
    if (!st.ok() || sqlite3_step(st.get()) != SQLITE_ROW) return SqlError(read_, "max seq");
    return static_cast<uint64_t>(sqlite3_column_int64(st.get(), 0));
  }

  Status ForEachTaskId(const std::function<void(std::string_view)>& fn) override {
    std::lock_guard lock(read_mu_);
    Stmt st(read_, read_stmts_, "SELECT id FROM tasks");
    if (!st.ok()) return SqlError(read_, "prepare");
    int rc;
    while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
      fn(std::string_view(reinterpret_cast<const char*>(sqlite3_column_text(st.get(), 0)),
                          static_cast<size_t>(sqlite3_column_bytes(st.get(), 0))));
    }
    if (rc != SQLITE_DONE) return Noted(SqlError(read_, "list task ids"), read_);
    return Status::Ok();
  }

  Result<std::vector<WorkerRecord>> ListWorkers() override {
    std::lock_guard lock(read_mu_);
    Stmt st(read_, read_stmts_, "SELECT worker, name FROM workers ORDER BY name");
    if (!st.ok()) return SqlError(read_, "prepare");
    std::vector<WorkerRecord> out;
    int rc;
    while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
      WorkerRecord w;
      if (!w.worker.ParseFromString(st.Blob(0))) {
        return Internal(fmt::format("store: worker record {} is corrupt",
                                    reinterpret_cast<const char*>(sqlite3_column_text(st.get(), 1))));
      }
      out.push_back(std::move(w));
    }
    if (rc != SQLITE_DONE) return Noted(SqlError(read_, "list workers"), read_);
    return out;
  }

 private:
  // Returns err; if the error db just reported says the file cannot be written or trusted, the
  // store fails for good with it (Health()).
  Status Noted(Status err, sqlite3* db) {
    // A full file system passes (WriteBatcher retries); damage and I/O errors do not.
    if (IsFatal(sqlite3_errcode(db)) && err.code() != StatusCode::kResourceExhausted) {
      std::lock_guard lock(health_mu_);
      if (failed_.ok()) {
        failed_ = Status(StatusCode::kFailedPrecondition,
                         fmt::format("{}; the store accepts no new work until then", err.message()));
      }
    }
    return err;
  }

  // A statement that returns no rows (BEGIN, COMMIT), from the cache.
  static Status Step(sqlite3* db, StmtCache& cache, const char* sql) {
    Stmt st(db, cache, sql);
    if (!st.ok()) return SqlError(db, "prepare");
    if (sqlite3_step(st.get()) != SQLITE_DONE) return SqlError(db, sql);
    return Status::Ok();
  }

  std::string path_;
  DbLock lock_;  // declared before the connections' users: destroyed after ~SqliteStore's body
  std::mutex write_mu_;
  std::mutex read_mu_;
  mutable std::mutex health_mu_;
  Status failed_;  // under health_mu_
  sqlite3* write_ = nullptr;
  sqlite3* read_ = nullptr;
  StmtCache write_stmts_;  // under write_mu_
  StmtCache read_stmts_;   // under read_mu_
};

}  // namespace

Result<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path, const OpenOptions& options) {
  auto store = std::make_unique<SqliteStore>();
  if (Status s = store->Open(path, options); !s.ok()) return s;
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace tidepool::store
