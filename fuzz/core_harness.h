// What the Core fuzzers share: a real Core (real SQLite store, real token authority, real log
// store) in a scratch dir, and fakes for the two kinds of stream the services hand to it (an
// agent's link, a vrun client). Nothing listens on the network and nothing is spawned: the pools
// are static (agents join with a token) or a local pool with max_agents 0.
//
// The input format of both fuzzers is a sequence of records (see format.h); the seed generator
// (gen_corpus.cc) writes the same records.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "server/core.h"
#include "server/tokens.h"

namespace tidepool::fuzz {

// The static pools of the fuzz config: "p" (default) and "q" (batch only) share the selector
// "any" with "local" (local backend, max_agents 0: it never creates anything).
extern const char* const kFuzzConfigYaml;

// The parent of all scratch dirs: $TIDEPOOL_FUZZ_SCRATCH, else /dev/shm (where SQLite's fsync
// costs nothing), else /tmp. One dir per process, removed at normal exit.
const std::string& ScratchRoot();

// Quiets spdlog (the core logs every refused agent) and sets up the scratch dir. Call from
// LLVMFuzzerInitialize.
void InitFuzzProcess();

// Every StartTask the core sent, on any link of one harness: (task, attempt).
class StartLog {
 public:
  void Add(const std::string& task_id, int attempt);
  bool Has(const std::string& task_id, int attempt) const;

 private:
  mutable std::mutex mu_;
  std::set<std::pair<std::string, int>> started_;
};

// An agent stream as the core sees it: records what the core sends.
class FakeAgentLink final : public server::AgentLink {
 public:
  explicit FakeAgentLink(std::shared_ptr<StartLog> starts) : starts_(std::move(starts)) {}
  bool Send(v1::ServerMessage m) override;
  void Close(const Status& why) override;
  void Accepted() override;

  bool closed() const;
  bool accepted() const;
  // The worker name of the Welcome, "" before one.
  std::string worker() const;
  size_t sent() const;

 private:
  std::shared_ptr<StartLog> starts_;
  mutable std::mutex mu_;
  bool closed_ = false;
  bool accepted_ = false;
  std::string worker_;
  size_t sent_ = 0;
};

// A vrun client: records events; after Finish(), Send() returns false (like the real outbox).
// The `written` callback runs at once (the client takes everything immediately).
class FakeRunClient final : public server::RunClient {
 public:
  bool Send(v1::RunEvent e, std::function<void()> written) override;
  void Finish(const Status& status) override;
  bool finished() const;

 private:
  mutable std::mutex mu_;
  bool finished_ = false;
  size_t events_ = 0;
};

// A fresh Core on an empty store. The scratch dir's secret.key is kept for the whole process, so
// tokens are the same in every instance; the database and the logs are new each time.
class CoreHarness {
 public:
  CoreHarness();
  ~CoreHarness();  // stops the core, then removes its database and logs
  CoreHarness(const CoreHarness&) = delete;
  CoreHarness& operator=(const CoreHarness&) = delete;

  server::Core& core() { return *core_; }
  const server::TokenAuthority& tokens() const { return core_->tokens(); }

  // Submits a batch task (as vbatch; not waiting for it to be durable: the core has it at once).
  void Submit(v1::TaskSpec spec);

  // A new agent stream of this harness.
  std::shared_ptr<FakeAgentLink> NewLink() { return std::make_shared<FakeAgentLink>(starts_); }

  // Waits (bounded, 100 ms) until every task in `ids` that the core has put RUNNING on the
  // worker of a live link in `links` has had its StartTask sent: dispatch is write-ahead, so the
  // StartTask leaves from the store's writer thread once the assignment is committed.
  void SettleDispatches(const std::vector<std::string>& ids,
                        const std::vector<std::shared_ptr<FakeAgentLink>>& links);

  // Hello + attach of a well-behaved agent `name` in pool `pool` (join token), then settles.
  std::shared_ptr<FakeAgentLink> ConnectAgent(const std::string& name, const std::string& pool, int slots);

 private:
  std::string data_dir_;
  std::shared_ptr<StartLog> starts_ = std::make_shared<StartLog>();
  std::unique_ptr<server::Core> core_;
};

// Core::Watch returns uint64_t, or Result<uint64_t> once auth lands; 0 = no watch either way.
template <class T>
uint64_t WatchId(T r) {
  if constexpr (std::is_integral_v<T>) {
    return static_cast<uint64_t>(r);
  } else {
    return r.ok() ? static_cast<uint64_t>(*r) : 0;
  }
}

}  // namespace tidepool::fuzz
