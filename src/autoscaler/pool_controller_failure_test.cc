// What the pool does with a failed create, by its class (answers.h, RespondToCreateFailure):
// the pure decision on a virtual clock, and the controller applying it to a real backend call.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>

#include "autoscaler/answers.h"
#include "autoscaler/pool_controller.h"

namespace tidepool::autoscaler {
namespace {

using namespace std::chrono_literals;
using backends::ErrorClass;

constexpr Millis kBase = 60s, kMax = 600s;

TEST(CreateFailure, TransientIsRetriedWithTheDoublingCooldownAndKeepsQueuedCreates) {
  // Five failures in a row on a virtual clock: when is the next attempt allowed?
  TimePoint now{};
  std::vector<Millis> waits;
  for (int n = 1; n <= 5; ++n) {
    CreateFailureResponse r = RespondToCreateFailure(ErrorClass::kTransient, kBase, n, kMax);
    EXPECT_FALSE(r.drop_queued);
    now += r.cooldown;
    waits.push_back(r.cooldown);
  }
  EXPECT_EQ(waits, (std::vector<Millis>{60s, 120s, 240s, 480s, 600s}));
  EXPECT_EQ(now, TimePoint{} + 1500s);
}

TEST(CreateFailure, OutOfCapacityAndQuotaSendTheDemandElsewhereAtOnce) {
  for (ErrorClass c : {ErrorClass::kOutOfCapacity, ErrorClass::kQuota}) {
    CreateFailureResponse r = RespondToCreateFailure(c, kBase, 1, kMax);
    EXPECT_TRUE(r.drop_queued) << backends::ErrorClassName(c);
    EXPECT_EQ(r.cooldown, kBase) << backends::ErrorClassName(c);
    EXPECT_EQ(RespondToCreateFailure(c, kBase, 3, kMax).cooldown, 240s);
  }
}

TEST(CreateFailure, AuthAndBadRequestWaitTheLongestCooldownAtTheFirstFailure) {
  for (ErrorClass c : {ErrorClass::kAuth, ErrorClass::kBadRequest}) {
    CreateFailureResponse r = RespondToCreateFailure(c, kBase, 1, kMax);
    EXPECT_TRUE(r.drop_queued) << backends::ErrorClassName(c);
    EXPECT_EQ(r.cooldown, kMax) << backends::ErrorClassName(c);
  }
  // In an hour on the virtual clock, a refused credential is tried at most 6 times, where a
  // transient failure with a 1 s base would be tried ~15 times.
  int auth_attempts = 0, transient_attempts = 0;
  for (Millis t{0}; t < 3600s; ++auth_attempts) t += RespondToCreateFailure(ErrorClass::kAuth, 1s, auth_attempts + 1, kMax).cooldown;
  for (Millis t{0}; t < 3600s; ++transient_attempts) {
    t += RespondToCreateFailure(ErrorClass::kTransient, 1s, transient_attempts + 1, kMax).cooldown;
  }
  EXPECT_EQ(auth_attempts, 6);
  EXPECT_GT(transient_attempts, auth_attempts);
}

TEST(CreateFailure, ClassesComeFromStatusCodes) {
  EXPECT_EQ(backends::ClassOf(Status(StatusCode::kResourceExhausted, "no n2 in zone")), ErrorClass::kOutOfCapacity);
  EXPECT_EQ(backends::ClassOf(PermissionDenied("403")), ErrorClass::kAuth);
  EXPECT_EQ(backends::ClassOf(InvalidArgument("no such partition")), ErrorClass::kBadRequest);
  EXPECT_EQ(backends::ClassOf(Unavailable("503")), ErrorClass::kTransient);
  EXPECT_EQ(backends::ClassOf(DeadlineExceeded("slow")), ErrorClass::kTransient);
  for (ErrorClass c : {ErrorClass::kOutOfCapacity, ErrorClass::kQuota, ErrorClass::kAuth, ErrorClass::kBadRequest,
                       ErrorClass::kTransient}) {
    EXPECT_EQ(backends::ClassOf(backends::MakeError(c, "x")), c) << backends::ErrorClassName(c);
  }
}

// The first create fails with `status`; later ones hang until Abandon (so what the pool holds
// after the first failure stays still while the test looks). Counts its creates.
class FailingBackend : public backends::Backend {
 public:
  explicit FailingBackend(Status status, std::atomic<int>* creates) : status_(std::move(status)), creates_(creates) {}
  Result<std::string> Create(const backends::CreateRequest&, backends::Deadline) override {
    if (++*creates_ == 1) return status_;
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return abandoned_; });
    return Unavailable("abandoned");
  }
  Status Delete(const std::string&, backends::Deadline) override { return Status::Ok(); }
  Result<std::vector<backends::ListedWorker>> List(backends::Deadline) override {
    return std::vector<backends::ListedWorker>{};
  }
  void Abandon() override {
    std::lock_guard lock(mu_);
    abandoned_ = true;
    cv_.notify_all();
  }

 private:
  Status status_;
  std::atomic<int>* creates_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool abandoned_ = false;
};

struct Outcome {
  int creates = 0;
  int requested_left = 0;
  bool healthy = true;
  std::string last_error;
};

// A pool that wants 3 workers, one create at a time, against a backend failing with `status`;
// what it has done once the first failure has been taken in.
Outcome RunPool(Status status) {
  std::mutex core;
  TimerQueue timers;
  Executor backend_calls("test-backend", 2);
  Executor posts("test-posts", 1);
  std::atomic<int> creates{0};
  std::mutex mu;
  std::condition_variable cv;
  bool failed = false;

  config::PoolConfig cfg;
  cfg.name = "p";
  cfg.auto_scaler.emplace();
  cfg.auto_scaler->min_agents = 3;
  cfg.auto_scaler->max_agents = 3;
  cfg.auto_scaler->max_concurrent_creates = 1;
  PoolController::Hooks hooks;
  std::unique_ptr<PoolController> pool;
  hooks.post = [&](std::function<void()> fn) {
    posts.Submit([&, fn = std::move(fn)] {
      std::lock_guard lock(core);
      fn();
      if (!pool->last_error().empty()) {
        std::lock_guard l(mu);
        failed = true;
        cv.notify_all();
      }
    });
  };
  hooks.persist = [](const Worker&) {};
  hooks.forget = [](const std::string&) {};
  hooks.token_for = [](const std::string&) { return std::string("tok"); };
  hooks.waiting_tasks = [] { return 0; };
  pool = std::make_unique<PoolController>(cfg, std::make_unique<FailingBackend>(status, &creates), hooks,
                                          &backend_calls, &timers, "127.0.0.1:1");
  {
    std::lock_guard lock(core);
    pool->Start({});
  }
  {
    std::unique_lock lock(mu);
    EXPECT_TRUE(cv.wait_for(lock, 60s, [&] { return failed; }));
  }
  Outcome o;
  {
    std::lock_guard lock(core);
    o.creates = creates.load();
    o.requested_left = pool->CountByPhase()["requested"];
    o.healthy = pool->Healthy();
    o.last_error = pool->last_error();
    pool->Stop();
  }
  backend_calls.StopWithin(30s);
  posts.StopWithin(30s);
  timers.Stop();
  return o;
}

TEST(PoolControllerFailure, OutOfCapacityDropsTheQueuedCreatesSoTheDemandMoves) {
  Outcome o = RunPool(Status(StatusCode::kResourceExhausted, "zone us-east1-b: no n2-standard-8 left"));
  EXPECT_EQ(o.creates, 1);
  EXPECT_EQ(o.requested_left, 0);  // the two queued behind it are gone: backups take the demand
  EXPECT_FALSE(o.healthy);         // so the scheduler skips this pool (group_matcher.h)
  EXPECT_EQ(o.last_error, "create failed: zone us-east1-b: no n2-standard-8 left [out_of_capacity]");
}

TEST(PoolControllerFailure, AuthIsShownAndNotRetriedByTheQueue) {
  Outcome o = RunPool(PermissionDenied("credentials refused by the API"));
  EXPECT_EQ(o.creates, 1);
  EXPECT_EQ(o.requested_left, 0);
  EXPECT_FALSE(o.healthy);
  EXPECT_EQ(o.last_error, "create failed: credentials refused by the API [auth]");
}

TEST(PoolControllerFailure, TransientKeepsTheQueuedCreates) {
  Outcome o = RunPool(Unavailable("503 from the API"));
  EXPECT_FALSE(o.healthy);
  EXPECT_EQ(o.last_error, "create failed: 503 from the API");
  EXPECT_EQ(o.requested_left, 2);  // the two behind it are still wanted (launched or queued)
}

}  // namespace
}  // namespace tidepool::autoscaler
