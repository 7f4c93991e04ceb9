// A create in flight whose machine already told its name: at PoolController::Stop the call is
// abandoned and the worker persisted, so the next start's sync finds it; when the call fails after
// the worker's agent connected, the worker is kept.
#include <gtest/gtest.h>

#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

#include "autoscaler/pool_controller.h"

namespace tidepool::autoscaler {
namespace {

using namespace std::chrono_literals;

struct HangState {
  std::mutex mu;
  std::condition_variable cv;
  bool entered = false;
  bool abandoned = false;
  int deletes = 0;
};

// A create that names its machine `name` (token_for), then hangs until Abandon (or Release) and
// answers `status`.
class HangingBackend : public backends::Backend {
 public:
  HangingBackend(std::shared_ptr<HangState> s, std::string name, Status status)
      : s_(std::move(s)), name_(std::move(name)), status_(std::move(status)) {}
  Result<std::string> Create(const backends::CreateRequest& r, backends::Deadline) override {
    r.token_for(name_);
    std::unique_lock lock(s_->mu);
    s_->entered = true;
    s_->cv.notify_all();
    s_->cv.wait(lock, [&] { return s_->abandoned; });
    return status_;
  }
  Status Delete(const std::string&, backends::Deadline) override {
    std::lock_guard lock(s_->mu);
    ++s_->deletes;
    return Status::Ok();
  }
  Result<std::vector<backends::ListedWorker>> List(backends::Deadline) override { return std::vector<backends::ListedWorker>{}; }
  void Abandon() override { Release(); }
  void Release() {
    std::lock_guard lock(s_->mu);
    s_->abandoned = true;
    s_->cv.notify_all();
  }

 private:
  std::shared_ptr<HangState> s_;
  std::string name_;
  Status status_;
};

// A pool `p` of at most one worker around `backend`, with the core's lock and what it persists.
struct Rig {
  std::mutex core;
  std::map<std::string, Phase> persisted;
  TimerQueue timers;
  Executor backend_calls{"test-backend", 2};
  Executor posts{"test-posts", 1};
  std::unique_ptr<PoolController> pool;

  explicit Rig(std::unique_ptr<backends::Backend> backend) {
    config::PoolConfig cfg;
    cfg.name = "p";
    cfg.auto_scaler.emplace();
    cfg.auto_scaler->min_agents = 1;
    cfg.auto_scaler->max_agents = 1;
    PoolController::Hooks hooks;
    hooks.post = [this](std::function<void()> fn) {
      posts.Submit([this, fn = std::move(fn)] {
        std::lock_guard lock(core);
        fn();
      });
    };
    hooks.persist = [this](const Worker& w) { persisted[w.name] = w.phase; };
    hooks.forget = [this](const std::string& n) { persisted.erase(n); };
    hooks.token_for = [](const std::string&) { return std::string("tok"); };
    hooks.waiting_tasks = [] { return 0; };
    pool = std::make_unique<PoolController>(cfg, std::move(backend), hooks, &backend_calls, &timers, "127.0.0.1:1");
    std::lock_guard lock(core);
    pool->Start({});
  }
};

TEST(PoolControllerStop, AbandonsTheCreateInFlightAndPersistsItsNamedWorker) {
  auto state = std::make_shared<HangState>();
  Rig rig(std::make_unique<HangingBackend>(state, "w-named", Unavailable("abandoned")));
  auto& [core, persisted, timers, backend_calls, posts, pool] = rig;
  {
    std::unique_lock lock(state->mu);
    ASSERT_TRUE(state->cv.wait_for(lock, 60s, [&] { return state->entered; }));
  }
  {
    std::lock_guard lock(core);
    EXPECT_FALSE(persisted.count("w-named"));  // the create has not answered: nothing stored yet
    pool->Stop();
    ASSERT_TRUE(persisted.count("w-named"));
    EXPECT_EQ(persisted["w-named"], Phase::kRequested);  // comes back `starting` at the next start
  }
  EXPECT_EQ(backend_calls.StopWithin(30s), 0u);  // the hanging call ended: Abandon reached it
  posts.StopWithin(30s);
  timers.Stop();
  std::lock_guard lock(state->mu);
  EXPECT_TRUE(state->abandoned);
  EXPECT_EQ(state->deletes, 0);
}

// A create whose agent connected (and named itself) before the call answered, and which then
// reports a failure: the machine exists, so its worker is kept. Forgetting it left a connected
// worker the pool no longer knew, whose tasks were never found lost when its agent died.
TEST(PoolControllerCreate, AFailedCreateWhoseAgentAlreadyConnectedKeepsItsWorker) {
  auto state = std::make_shared<HangState>();
  auto backend = std::make_unique<HangingBackend>(state, "w-started",
                                                  Unavailable("the API timed out after starting the machine"));
  HangingBackend* b = backend.get();
  Rig rig(std::move(backend));
  auto& [core, persisted, timers, backend_calls, posts, pool] = rig;
  {
    std::unique_lock lock(state->mu);
    ASSERT_TRUE(state->cv.wait_for(lock, 60s, [&] { return state->entered; }));
  }
  {
    std::lock_guard lock(core);
    auto connected = pool->AgentConnected("w-started", /*worker_token_ok=*/true, false, 1, {}, "10.0.0.9");
    ASSERT_TRUE(connected.ok()) << connected.status().message();
  }
  b->Release();  // the create now answers: a failure
  bool answered = false;
  for (int i = 0; i < 6000 && !answered; ++i) {
    {
      std::lock_guard lock(core);
      answered = !pool->last_error().empty();
    }
    if (!answered) std::this_thread::sleep_for(10ms);
  }
  ASSERT_TRUE(answered);
  {
    std::lock_guard lock(core);
    EXPECT_NE(pool->last_error().find("the API timed out after starting the machine"), std::string::npos);
    ASSERT_NE(pool->Find("w-started"), nullptr) << "the connected worker was forgotten";
    EXPECT_TRUE(persisted.count("w-started"));
    pool->Stop();
  }
  backend_calls.StopWithin(30s);
  posts.StopWithin(30s);
  timers.Stop();
  std::lock_guard lock(state->mu);
  EXPECT_EQ(state->deletes, 0);  // and its machine was not deleted
}

}  // namespace
}  // namespace tidepool::autoscaler
