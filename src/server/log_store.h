// Task logs (tasks.md, Logs): every batch task's stdout and stderr, stored separately and in
// full under DATA_DIR/logs/, readable and followable while the task runs.
//
// Output arrives with byte offsets (agent.proto): LogSink::Write stores each byte exactly once,
// so output resent after a reconnect or a server restart is neither lost nor duplicated; the
// offset it returns is what the agent may forget. Files are the source of truth for the
// offset: after a restart a sink reopens at the file's size. A stream that never had a byte has
// no file (readers take a missing file as empty).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "common/status.h"
#include "tidepool/v1/common.pb.h"

namespace tidepool::server {

class LogSink {
 public:
  LogSink(std::string stdout_path, std::string stderr_path);
  ~LogSink();
  LogSink(const LogSink&) = delete;
  LogSink& operator=(const LogSink&) = delete;

  // Reads the stored sizes; a stream's file is created by its first byte.
  Status Open();
  // Stores data[offset..]; returns the stream's stored size (everything before it is on file).
  uint64_t Write(v1::OutputStream stream, uint64_t offset, const std::string& data);
  uint64_t size(v1::OutputStream stream) const;
  const std::string& path(v1::OutputStream stream) const;

  // Followers: `fn` runs (without the sink's lock) after each write and once on Complete().
  uint64_t AddListener(std::function<void()> fn);
  void RemoveListener(uint64_t id);
  // The task is final: no more output will come.
  void Complete();
  bool complete() const;

 private:
  void Notify();

  struct Stream {
    std::string path;
    int fd = -1;
    uint64_t size = 0;
  };
  mutable std::mutex mu_;
  Stream out_, err_;
  bool complete_ = false;
  uint64_t next_listener_ = 1;
  std::map<uint64_t, std::function<void()>> listeners_;
};

class LogStore {
 public:
  explicit LogStore(std::string dir);
  // The sink for a task, opened on first use.
  Result<std::shared_ptr<LogSink>> Sink(const std::string& task_id);
  // Drops the cached sink of a final task (followers keep theirs alive).
  void Release(const std::string& task_id);
  std::string StdoutPath(const std::string& task_id) const;
  std::string StderrPath(const std::string& task_id) const;

  // At start, before any task runs: log files of ids the store does not hold (a store restored
  // from a backup or reset, the logs kept) are moved to DIR/orphaned/, so a new task that gets
  // such an id starts with empty logs instead of another task's bytes. Nothing is deleted.
  // `for_each_id` calls its argument with every task id the store holds. Returns how many
  // files were moved.
  Result<size_t> SetAsideOrphans(const std::function<Status(const std::function<void(std::string_view)>&)>& for_each_id);

 private:
  std::string FileStem(const std::string& task_id) const;
  std::string dir_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<LogSink>> open_;
};

}  // namespace tidepool::server
