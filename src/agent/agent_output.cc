// The agent: a task's output streams (kept until the server acknowledges them, held while it
// cannot store them) and its stdin. See agent_loop.h.
#include <fcntl.h>
#include <pty.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <future>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "agent/agent_loop.h"

namespace tidepool::agent::internal {

void Agent::WatchOutput(TaskRun* t, OutBuf* b) {
  std::string id = t->id;
  bool is_err = b == &t->err;
  Watch(b->fd, EPOLLIN, [this, id, is_err](uint32_t) {
    TaskRun* t = Find(id);
    if (t) ReadOutput(t, is_err ? &t->err : &t->out);
  });
}

void Agent::ReadOutput(TaskRun* t, OutBuf* b) {
  if (b->fd < 0) return;
  read_buf_.resize(kReadChunk);
  ssize_t n = ::read(b->fd, read_buf_.data(), read_buf_.size());
  if (n > 0) {
    std::string data(read_buf_.data(), static_cast<size_t>(n));
    uint64_t offset = b->produced;
    b->produced += static_cast<uint64_t>(n);
    if (!b->held) SendOutput(*t, *b, offset, data);
    b->chunks.emplace_back(offset, std::move(data));  // kept until acknowledged (a resend)
    if (b->unacked() >= kUnackedLimit) {
      // The server (or its client) is behind: stop reading; the task waits on its writes.
      Unwatch(b->fd);
      b->paused = true;
    }
    return;
  }
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  // EOF (or EIO: the PTY's other side closed).
  CloseOutput(b);
  MaybeFinish(t);
}

void Agent::CloseOutput(OutBuf* b) {
  if (b->fd >= 0) {
    Unwatch(b->fd);
    ::close(b->fd);
    b->fd = -1;
  }
  b->eof = true;
  b->paused = false;
}

void Agent::SendOutput(const TaskRun& t, const OutBuf& b, uint64_t offset, const std::string& data) {
  v1::AgentMessage m;
  v1::TaskOutput* o = m.mutable_output();
  o->set_task_id(t.id);
  o->set_attempt(t.attempt);
  o->set_stream(b.stream);
  o->set_offset(offset);
  o->set_data(data);
  Send(std::move(m));
}

void Agent::OnAck(const v1::OutputAck& a) {
  TaskRun* t = Find(a.task_id());
  if (!t) return;
  OutBuf* b = a.stream() == v1::OUTPUT_STREAM_STDERR ? &t->err : &t->out;
  if (a.offset() < b->acked) return;  // an older ack overtaken by a newer one
  const bool progress = a.offset() > b->acked;
  b->acked = std::min(a.offset(), b->produced);
  while (!b->chunks.empty()) {
    auto& [off, data] = b->chunks.front();
    if (off + data.size() <= b->acked) {
      b->chunks.pop_front();
    } else {
      if (off < b->acked) {
        data.erase(0, b->acked - off);
        off = b->acked;
      }
      break;
    }
  }
  if (a.retry_later()) {
    HoldOutput(t, b);
  } else if (b->held) {
    // The server takes output again (it stored the probe, or a vrun reattached and the server
    // says so with an ack at the offset it needs).
    SendAllHeld(*t, b);
  }
  if (t->finished && t->output_refused && !b->held && progress && t->out.chunks.empty() && t->err.chunks.empty()) {
    // Its exit report came before the server had all its output, so it was not taken.
    t->output_refused = false;
    SendExitReport(*t);
  }
  if (b->paused && b->unacked() < kUnackedLimit / 2 && b->fd >= 0) {
    b->paused = false;
    WatchOutput(t, b);
  }
}

void Agent::SendAllHeld(const TaskRun& t, OutBuf* b) {
  b->held = false;
  b->backoff = Millis(0);
  for (const auto& [offset, data] : b->chunks) SendOutput(t, *b, offset, data);
}

void Agent::SendExitReport(const TaskRun& t) {
  v1::AgentMessage m;
  *m.mutable_exited() = t.report;
  m.mutable_exited()->set_output_pending(!t.out.chunks.empty() || !t.err.chunks.empty());
  Send(std::move(m));
}

void Agent::HoldOutput(TaskRun* t, OutBuf* b) {
  b->held = true;
  t->output_refused = true;
  if (b->probe_pending || b->chunks.empty()) return;
  b->backoff = b->backoff.count() == 0 ? kRetryFirst : std::min(b->backoff * 2, kRetryMax);
  b->probe_pending = true;
  std::string id = t->id;
  int attempt = t->attempt;
  bool is_err = b == &t->err;
  After(b->backoff, [this, id, attempt, is_err] {
    TaskRun* t = Find(id);
    if (!t || t->attempt != attempt) return;
    OutBuf* b = is_err ? &t->err : &t->out;
    b->probe_pending = false;
    if (b->held && !b->chunks.empty()) SendOutput(*t, *b, b->chunks.front().first, b->chunks.front().second);
  });
}

void Agent::OnStdin(const v1::StdinData& s) {
  TaskRun* t = Find(s.task_id());
  if (!t || t->stdin_fd < 0) return;
  t->stdin_pending += s.data();
  if (s.eof()) t->stdin_eof = true;
  FlushStdin(t);
}

void Agent::FlushStdin(TaskRun* t) {
  while (!t->stdin_pending.empty() && t->stdin_fd >= 0) {
    ssize_t n = ::write(t->stdin_fd, t->stdin_pending.data(), t->stdin_pending.size());
    if (n > 0) {
      t->stdin_pending.erase(0, static_cast<size_t>(n));
      t->stdin_written += static_cast<uint64_t>(n);
      continue;
    }
    if (n < 0 && errno == EAGAIN) {
      if (!t->stdin_writable_wait) {
        t->stdin_writable_wait = true;
        std::string id = t->id;
        // The PTY master shares one fd for both directions via a dup, so watching it is safe.
        Watch(t->stdin_fd, EPOLLOUT, [this, id](uint32_t) {
          TaskRun* t = Find(id);
          if (!t) return;
          t->stdin_writable_wait = false;
          Unwatch(t->stdin_fd);
          FlushStdin(t);
        });
      }
      break;
    }
    // EPIPE or another error: the task stopped reading its stdin for good.
    t->stdin_pending.clear();
    CloseStdin(t);
    break;
  }
  if (t->stdin_written > 0) {
    v1::AgentMessage m;
    m.mutable_stdin_ack()->set_task_id(t->id);
    m.mutable_stdin_ack()->set_written(t->stdin_written);
    Send(std::move(m));
  }
  if (t->stdin_pending.empty() && t->stdin_eof && t->stdin_fd >= 0) {
    if (t->tty) {
      const char eot = 4;  // ^D: end of input for a program reading the terminal
      [[maybe_unused]] ssize_t w = ::write(t->stdin_fd, &eot, 1);
    }
    CloseStdin(t);
  }
}

void Agent::CloseStdin(TaskRun* t) {
  if (t->stdin_fd < 0) return;
  if (t->stdin_writable_wait) Unwatch(t->stdin_fd);
  t->stdin_writable_wait = false;
  ::close(t->stdin_fd);
  t->stdin_fd = -1;
}

}  // namespace tidepool::agent::internal
