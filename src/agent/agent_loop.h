// The agent's event loop (agent.h: RunAgent), internal to src/agent. One thread owns everything
// here: the connection's callbacks post to it, and every TaskRun is touched only on it. Its
// methods are defined by what they handle:
//   agent.cc         the loop (epoll, timers, the inbox), the connection, shutdown;
//   agent_tasks.cc   a task's life: start (its workspace first), process, exit, report;
//   agent_output.cc  a task's streams: output kept until acknowledged, held when refused; stdin.
#pragma once

#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <queue>
#include <string>
#include <unordered_map>
#include <vector>

#include "agent/agent.h"
#include "agent/connection.h"
#include "agent/task_users.h"
#include "agent/workspace_sync.h"
#include "common/random.h"
#include "tidepool/v1/agent.pb.h"

namespace tidepool::agent::internal {

using Clock = std::chrono::steady_clock;
using Millis = std::chrono::milliseconds;

constexpr size_t kReadChunk = 1024 * 1024;
constexpr uint64_t kUnackedLimit = 32 * 1024 * 1024;  // per stream; = the server's stream window
constexpr Millis kDrainAfterExit{2000};               // stragglers holding the pipes open
constexpr Millis kShutdownGrace{5000};
constexpr Millis kRetryFirst{200}, kRetryMax{5000};  // offering refused output again

struct OutBuf {
  v1::OutputStream stream = v1::OUTPUT_STREAM_STDOUT;
  int fd = -1;
  bool eof = true;
  bool paused = false;
  uint64_t acked = 0;
  uint64_t produced = 0;
  std::deque<std::pair<uint64_t, std::string>> chunks;  // unacknowledged, with their offsets
  uint64_t unacked() const { return produced - acked; }
  // The server could not store some of it (OutputAck.retry_later, e.g. its disk is full): new
  // output is held, and one chunk is offered again after `backoff` until the server takes it.
  bool held = false;
  bool probe_pending = false;
  std::chrono::milliseconds backoff{0};
};

struct TaskRun {
  std::string id;
  int attempt = 0;
  pid_t pid = -1;
  int pidfd = -1;
  bool tty = false;
  OutBuf out, err;
  int stdin_fd = -1;
  std::string stdin_pending;
  bool stdin_eof = false;
  bool stdin_writable_wait = false;
  uint64_t stdin_written = 0;
  bool exited = false;       // the process is gone (or never started)
  bool finished = false;     // exited and all output read: the exit report exists
  v1::TaskExited report;
  std::string end_reason;    // timeout | cancelled
  bool term_sent = false;
  bool output_refused = false;  // some output was refused once: the exit report goes again once all is stored
  // A synced workspace (StartTask.workspace): made before the command, collected after it.
  std::unique_ptr<TaskWorkspace> workspace;
  bool workspace_ready = false;
  bool workspace_collecting = false;
  bool workspace_collected = false;
};

class Agent {
 public:
  Agent(AgentFlags flags, TaskUsers users, std::unique_ptr<Transport> transport)
      : flags_(std::move(flags)),
        users_(std::move(users)),
        instance_id_(RandomId(12)),
        transport_(std::move(transport)) {
    ws_.cache_dir = flags_.cache_dir;
  }

  // Runs the loop until shutdown; the process exit status (3: refused by the server).
  int Run();

 private:
  struct Timer {
    Clock::time_point at;
    uint64_t seq;
    std::function<void()> fn;
    bool operator>(const Timer& o) const { return at != o.at ? at > o.at : seq > o.seq; }
  };

  // ---- the loop (agent.cc) ----
  void Watch(int fd, uint32_t events, std::function<void(uint32_t)> fn);
  void Unwatch(int fd);
  void After(Millis d, std::function<void()> fn) { timers_.push({Clock::now() + d, timer_seq_++, std::move(fn)}); }
  void RunTimers();
  void Post(std::function<void()> fn);  // from any thread
  void DrainInbox();

  // ---- the connection (agent.cc) ----
  bool Send(v1::AgentMessage m) { return gen_ != 0 && conn_->Send(gen_, std::move(m)); }
  v1::AgentHello MakeHello();
  void OnConnected(uint64_t gen, const v1::Welcome& w);
  void ScheduleHeartbeat(uint64_t gen);
  void OnMessage(const v1::ServerMessage& m);

  // ---- tasks (agent_tasks.cc) ----
  TaskRun* Find(const std::string& id) {
    auto it = tasks_.find(id);
    return it == tasks_.end() ? nullptr : it->second.get();
  }
  void StartTask(const v1::StartTask& s);
  void Launch(TaskRun* raw, const v1::StartTask& s, const TaskUser& user_);
  void FailStart(TaskRun* t, const std::string& error, bool not_found);
  void Terminate(TaskRun* t, const std::string& reason, Millis grace);
  void OnProcessExit(const std::string& id);
  void MaybeFinish(TaskRun* t);
  void Close(TaskRun* t);

  // ---- output and stdin (agent_output.cc) ----
  void WatchOutput(TaskRun* t, OutBuf* b);
  void ReadOutput(TaskRun* t, OutBuf* b);
  void CloseOutput(OutBuf* b);
  void SendOutput(const TaskRun& t, const OutBuf& b, uint64_t offset, const std::string& data);
  void OnAck(const v1::OutputAck& a);
  // Everything not yet acknowledged goes, in order, and the stream is no longer held (after a
  // reconnect, or once the server takes output again); the server keeps each byte once.
  void SendAllHeld(const TaskRun& t, OutBuf* b);
  void SendExitReport(const TaskRun& t);
  // The server could not store output of this stream: hold what follows and offer the first
  // held chunk again after a backoff (200 ms doubling to 5 s), until an ack without
  // retry_later says it is stored. Never more than one offer in flight per stream.
  void HoldOutput(TaskRun* t, OutBuf* b);
  void OnStdin(const v1::StdinData& s);
  void FlushStdin(TaskRun* t);
  void CloseStdin(TaskRun* t);

  // ---- shutdown (agent.cc) ----
  void BeginShutdown(const std::string& why);
  void MaybeExit();

  AgentFlags flags_;
  TaskUsers users_;
  WorkspaceShared ws_;
  std::string instance_id_;
  std::unique_ptr<Transport> transport_;  // until the connection takes it
  int epfd_ = -1, evfd_ = -1, sigfd_ = -1;
  std::unordered_map<int, std::function<void(uint32_t)>> handlers_;
  std::priority_queue<Timer, std::vector<Timer>, std::greater<Timer>> timers_;
  uint64_t timer_seq_ = 0;
  std::mutex inbox_mu_;
  std::deque<std::function<void()>> inbox_;
  std::unique_ptr<Connection> conn_;
  uint64_t gen_ = 0;
  Millis heartbeat_{5000};
  uint64_t heartbeat_seq_ = 0;
  std::map<std::string, std::unique_ptr<TaskRun>> tasks_;
  std::vector<char> read_buf_;  // one task output read at a time (the event loop is one thread)
  bool draining_ = false;
  bool shutting_down_ = false;
  bool refused_ = false;
  bool done_ = false;
};

}  // namespace tidepool::agent::internal
