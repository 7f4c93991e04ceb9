// PoolController::Stop with a create in flight: the call is abandoned, and a worker whose machine
// already told its name is persisted, so the next start's sync finds it.
#include <gtest/gtest.h>

#include <condition_variable>
#include <map>
#include <mutex>

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

// A create that names its machine (token_for), then hangs until Abandon.
class HangingBackend : public backends::Backend {
 public:
  explicit HangingBackend(std::shared_ptr<HangState> s) : s_(std::move(s)) {}
  Result<std::string> Create(const backends::CreateRequest& r, backends::Deadline) override {
    r.token_for("w-named");
    std::unique_lock lock(s_->mu);
    s_->entered = true;
    s_->cv.notify_all();
    s_->cv.wait(lock, [&] { return s_->abandoned; });
    return Unavailable("abandoned");
  }
  Status Delete(const std::string&, backends::Deadline) override {
    std::lock_guard lock(s_->mu);
    ++s_->deletes;
    return Status::Ok();
  }
  Result<std::vector<backends::ListedWorker>> List(backends::Deadline) override { return std::vector<backends::ListedWorker>{}; }
  void Abandon() override {
    std::lock_guard lock(s_->mu);
    s_->abandoned = true;
    s_->cv.notify_all();
  }

 private:
  std::shared_ptr<HangState> s_;
};

TEST(PoolControllerStop, AbandonsTheCreateInFlightAndPersistsItsNamedWorker) {
  std::mutex core;
  std::map<std::string, Phase> persisted;
  TimerQueue timers;
  Executor backend_calls("test-backend", 2);
  Executor posts("test-posts", 1);
  auto state = std::make_shared<HangState>();

  config::PoolConfig cfg;
  cfg.name = "p";
  cfg.auto_scaler.emplace();
  cfg.auto_scaler->min_agents = 1;
  cfg.auto_scaler->max_agents = 1;
  PoolController::Hooks hooks;
  hooks.post = [&](std::function<void()> fn) {
    posts.Submit([&core, fn = std::move(fn)] {
      std::lock_guard lock(core);
      fn();
    });
  };
  hooks.persist = [&](const Worker& w) { persisted[w.name] = w.phase; };
  hooks.forget = [&](const std::string& n) { persisted.erase(n); };
  hooks.token_for = [](const std::string&) { return std::string("tok"); };
  hooks.waiting_tasks = [] { return 0; };
  auto pool = std::make_unique<PoolController>(cfg, std::make_unique<HangingBackend>(state), hooks, &backend_calls,
                                               &timers, "127.0.0.1:1");
  {
    std::lock_guard lock(core);
    pool->Start({});
  }
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

}  // namespace
}  // namespace tidepool::autoscaler
