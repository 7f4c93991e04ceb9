#include "agent/connection.h"

#include <algorithm>
#include <chrono>
#include <random>

#include <spdlog/spdlog.h>

namespace tidepool::agent {

Connection::Connection(std::string server, std::unique_ptr<Transport> transport, Callbacks callbacks)
    : server_(std::move(server)), transport_(std::move(transport)), cb_(std::move(callbacks)) {}

Connection::~Connection() { Stop(); }

void Connection::Start() { thread_ = std::thread([this] { Run(); }); }

void Connection::Stop() {
  if (stopping_.exchange(true)) {
    if (thread_.joinable()) thread_.join();
    return;
  }
  {
    std::lock_guard lock(mu_);
    if (current_) current_->Cancel();
    writer_stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool Connection::Send(uint64_t generation, v1::AgentMessage m) {
  std::unique_lock lock(mu_);
  if (generation == 0 || generation != generation_) return false;
  if (outbox_.empty() && !writing_ && m.ByteSizeLong() <= kMaxDirectWrite) {
    // Nothing ahead of it: write it here and now if the socket takes it without waiting. While
    // generation_ is current, current_ is its stream (Run() clears it only after the wait below).
    AgentStream* stream = current_;
    writing_ = true;
    lock.unlock();
    AgentStream::TryWrite r = stream->TryWriteNow(m);
    if (r == AgentStream::TryWrite::kFailed) stream->Cancel();  // as the writer does: the reader ends it
    lock.lock();
    writing_ = false;
    cv_.notify_all();  // the writer, or Run() ending the stream, may wait for this write to end
    // Failed: lost with the stream as a queued message would be (the next hello lists the tasks
    // held; unacknowledged output and exits are sent again).
    if (r != AgentStream::TryWrite::kWouldBlock) return true;
    if (generation != generation_) return false;
  }
  outbox_.push_back(std::move(m));
  lock.unlock();
  cv_.notify_all();
  return true;
}

void Connection::CoalesceOutput(v1::AgentMessage* m) {
  // One write is in flight at a time, so while it waits (a slow link, a server behind) a fast
  // task's output piles up here in pipe-sized pieces: send them as one message.
  if (!m->has_output()) return;
  v1::TaskOutput* o = m->mutable_output();
  while (!outbox_.empty() && outbox_.front().has_output() && o->data().size() < kMaxCoalescedOutput) {
    const v1::TaskOutput& next = outbox_.front().output();
    if (next.task_id() != o->task_id() || next.attempt() != o->attempt() || next.stream() != o->stream() ||
        next.offset() != o->offset() + o->data().size()) {
      break;
    }
    o->mutable_data()->append(next.data());
    outbox_.pop_front();
  }
}

void Connection::Writer(uint64_t generation, AgentStream* stream) {
  while (true) {
    v1::AgentMessage m;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return writer_stop_ || (!outbox_.empty() && !writing_); });
      if (writer_stop_ || generation != generation_) return;
      m = std::move(outbox_.front());
      outbox_.pop_front();
      CoalesceOutput(&m);
      writing_ = true;
    }
    bool ok = stream->Write(m);
    {
      std::lock_guard lock(mu_);
      writing_ = false;
    }
    cv_.notify_all();  // Run() may wait for the write to end
    if (!ok) {
      stream->Cancel();  // unblocks the reader, which ends this connection
      return;
    }
  }
}

bool Connection::EndStream(AgentStream* stream, bool welcomed, Status* why) {
  Status st = stream->Finish();
  if (why) *why = st;
  {
    std::lock_guard lock(mu_);
    current_ = nullptr;
  }
  if (st.code() == StatusCode::kPermissionDenied) {
    cb_.refused(st.message());
    return true;
  }
  if (welcomed && !stopping_) spdlog::info("agent: connection to {} lost ({}); reconnecting", server_, st.message());
  if (!welcomed && !stopping_) spdlog::debug("agent: cannot reach {} ({})", server_, st.message());
  return false;
}

void Connection::Run() {
  std::mt19937 rng(std::random_device{}());
  auto backoff = std::chrono::milliseconds(100);
  uint64_t next_generation = 1;
  while (!stopping_) {
    std::unique_ptr<AgentStream> stream = transport_->Open();
    {
      std::lock_guard lock(mu_);
      current_ = stream.get();
    }
    if (stopping_) stream->Cancel();  // Stop() may have looked before current_ was set
    v1::AgentMessage hello;
    *hello.mutable_hello() = cb_.make_hello();
    v1::ServerMessage first;
    bool read = stream->Write(hello) && stream->Read(&first);
    if (!read || !first.has_welcome()) {
      if (read) stream->Cancel();  // a live stream that did not start with a welcome
      Status why;
      if (EndStream(stream.get(), false, &why)) return;
      if (!stopping_) {
        // Another live agent holds this worker name: it keeps it, and this one asks again rarely.
        const bool taken = why.code() == StatusCode::kAlreadyExists;
        if (taken) backoff = std::max(backoff, kNameTakenFirst);
        std::uniform_int_distribution<int> jitter(0, static_cast<int>(backoff.count() / 4));
        auto wait = backoff + std::chrono::milliseconds(jitter(rng));
        if (taken) {
          spdlog::warn("agent: the server refused this agent for now: {}; asking again in {} ms", why.message(),
                       wait.count());
        }
        std::unique_lock lock(mu_);
        cv_.wait_for(lock, wait, [this] { return stopping_.load(); });
        backoff = std::min(backoff * 2, taken ? kNameTakenMax : kUnreachableMax);
      }
      continue;
    }
    backoff = std::chrono::milliseconds(100);
    uint64_t gen = next_generation++;
    {
      std::lock_guard lock(mu_);
      generation_ = gen;
      writer_stop_ = false;
      outbox_.clear();
    }
    std::thread writer([this, gen, s = stream.get()] { Writer(gen, s); });
    cb_.connected(gen, first.welcome());
    v1::ServerMessage msg;
    while (stream->Read(&msg)) cb_.message(gen, std::move(msg));
    {
      std::lock_guard lock(mu_);
      generation_ = 0;
      writer_stop_ = true;
      outbox_.clear();  // generation_ 0: no new direct write starts on this stream
    }
    cv_.notify_all();
    stream->Cancel();  // the stream is over: a write blocked on it returns
    writer.join();
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [this] { return !writing_; });  // a direct write may still be using it
    }
    cb_.disconnected(gen);
    if (EndStream(stream.get(), true, nullptr)) return;
  }
}

}  // namespace tidepool::agent
