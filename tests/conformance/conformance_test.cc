// The scenarios of the conformance suite (conformance.h), for every backend instantiated.
#include "conformance.h"

#include <sys/stat.h>

#include <atomic>
#include <set>
#include <thread>

#include "../integration/harness.h"
#include "backends/registry.h"
#include "config/config.h"

namespace tidepool::conformance {
namespace {

using namespace std::chrono_literals;
using backends::Backend;
using backends::Clock;
using testing::BinDir;
using testing::Lines;
using testing::ReadAll;
using testing::Server;
using testing::WaitFor;
using testing::WriteAll;

constexpr char kPool[] = "conf";

backends::Deadline Soon() { return Clock::now() + 120s; }

// A server with one static pool, and the backend under test for it.
class World {
 public:
  explicit World(const BackendEnv& env)
      : env_(env),
        held_(env.world ? env.world(&listen_, &skip_) : nullptr),
        server_("agent_pools:\n  - name: conf\n    default: true\n", {}, skip_.empty() ? listen_ : "") {
    setup_.world = held_;
    ProcResult tok = server_.Tidepool({"pool", "join-token", kPool, "--data-dir", server_.data_dir()});
    EXPECT_EQ(tok.exit_code, 0) << tok.err;
    token_ = Lines(tok.out).empty() ? "" : Lines(tok.out)[0];
    setup_.dir = server_.dir() + "/backend";
    ::mkdir(setup_.dir.c_str(), 0700);
    setup_.server_address = server_.address();
    setup_.pool = kPool;
    setup_.agent_binary = BinDir() + "/tidepool";
    // The token command records every name it is asked for, as token_for does (names_).
    setup_.token_command = setup_.dir + "/token-for.sh";
    WriteAll(setup_.token_command, "#!/bin/sh\necho \"$1\" >> " + NamesFile() + "\necho " + token_ + "\n");
    ::chmod(setup_.token_command.c_str(), 0755);
  }

  ~World() {
    if (!skip_.empty()) return;
    // Whatever a failed test left behind goes: list and delete it all.
    for (auto& b : made_) {
      auto listed = b->List(Soon());
      if (!listed.ok()) continue;
      for (const auto& w : *listed) (void)b->Delete(w.name, Soon());
    }
  }

  using ProcResult = testing::ProcResult;

  Backend& Make(Variant v) {
    std::string yaml = "agent_pools:\n  - name: conf\n    auto_scaler:\n      backend:\n        " + env_.block(setup_, v) + "\n";
    config::LoadResult loaded = config::LoadConfigString(yaml, "conformance.yaml", [](const std::string&) {
      return std::optional<std::string>();
    });
    if (!loaded.config) throw std::runtime_error("config refused: " + loaded.errors.at(0).ToString() + "\n" + yaml);
    std::string agent = v == Variant::kFailing && !env_.failing_agent_binary.empty() ? env_.failing_agent_binary
                                                                                     : setup_.agent_binary;
    backends::BackendContext ctx{kPool, setup_.dir + "/data", agent, setup_.server_address, 1};
    auto made = backends::Registry::Global().Create(*loaded.config->pools.at(0).backend(), ctx);
    EXPECT_TRUE(made.ok()) << made.status().message();
    if (!made.ok()) throw std::runtime_error("backend not made");
    made_.push_back(std::move(made).value());
    return *made_.back();
  }

  backends::CreateRequest Request() {
    backends::CreateRequest r;
    r.pool = kPool;
    r.server_address = setup_.server_address;
    r.slots = 1;
    r.token_for = [this](const std::string& name) {
      std::lock_guard lock(mu_);
      WriteAll(NamesFile(), ReadAll(NamesFile()) + name + "\n");
      return token_;
    };
    r.token_command = setup_.token_command;
    return r;
  }

  // Names a create has asked a token for (it is about to start, or has started, that worker).
  std::set<std::string> Announced() {
    std::lock_guard lock(mu_);
    auto lines = Lines(ReadAll(NamesFile()));
    return {lines.begin(), lines.end()};
  }

  // The server's view: the state of the connected worker `name` in the pool, or "".
  std::string ConnectedState(const std::string& name) {
    for (auto& w : server_.Json({"worker", "list", "-P", kPool})) {
      if (w.value("name", "") == name) return w.value("state", "");
    }
    return "";
  }
  bool Connected(const std::string& name) {
    std::string s = ConnectedState(name);
    return s == "idle" || s == "busy";
  }

  // Listed by the backend as a worker (pending or running).
  bool Listed(Backend& b, const std::string& name) {
    auto listed = b.List(Soon());
    EXPECT_TRUE(listed.ok()) << listed.status().message();
    if (!listed.ok()) return false;
    for (const auto& w : *listed) {
      if (w.name == name && backends::IsWorker(w.state)) return true;
    }
    return false;
  }

  const Setup& setup() const { return setup_; }
  const std::string& skip() const { return skip_; }
  Server& server() { return server_; }

 private:
  std::string NamesFile() const { return setup_.dir + "/names"; }

  const BackendEnv env_;
  std::string listen_, skip_;
  std::shared_ptr<void> held_;
  Server server_;
  Setup setup_;
  std::string token_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Backend>> made_;
};

TEST_P(Conformance, CreateListConnectDeleteGone) {
  World world(GetParam());
  if (!world.skip().empty()) GTEST_SKIP() << world.skip();
  Backend& b = world.Make(Variant::kNormal);
  auto name = b.Create(world.Request(), Soon());
  ASSERT_TRUE(name.ok()) << name.status().message();
  ASSERT_FALSE(name->empty());
  EXPECT_TRUE(world.Listed(b, *name));
  // Its agent dialled the server with that name and the token it was handed.
  ASSERT_TRUE(WaitFor([&] { return world.Connected(*name); }, 60s))
      << "worker " << *name << " never connected; server log:\n" << world.server().ServerLog();
  ASSERT_TRUE(b.Delete(*name, Soon()).ok());
  EXPECT_FALSE(world.Listed(b, *name));
  EXPECT_TRUE(WaitFor([&] { return !world.Connected(*name); }, 60s)) << "its agent still runs after the delete";
  // Deleting what is gone succeeds.
  EXPECT_TRUE(b.Delete(*name, Soon()).ok());
}

TEST_P(Conformance, ConcurrentCreatesGiveDistinctNames) {
  constexpr int kN = 4;
  World world(GetParam());
  if (!world.skip().empty()) GTEST_SKIP() << world.skip();
  Backend& b = world.Make(Variant::kNormal);
  std::vector<Result<std::string>> names(kN, Result<std::string>(Unavailable("not run")));
  std::vector<std::thread> threads;
  for (int i = 0; i < kN; ++i) threads.emplace_back([&, i] { names[i] = b.Create(world.Request(), Soon()); });
  for (auto& t : threads) t.join();
  std::set<std::string> distinct;
  for (auto& n : names) {
    ASSERT_TRUE(n.ok()) << n.status().message();
    distinct.insert(*n);
  }
  EXPECT_EQ(distinct.size(), static_cast<size_t>(kN));
  for (const std::string& n : distinct) {
    EXPECT_TRUE(world.Listed(b, n)) << n;
    EXPECT_TRUE(WaitFor([&] { return world.Connected(n); }, 60s)) << n;
  }
  for (const std::string& n : distinct) EXPECT_TRUE(b.Delete(n, Soon()).ok()) << n;
  for (const std::string& n : distinct) EXPECT_FALSE(world.Listed(b, n)) << n;
}

TEST_P(Conformance, DeletingAWorkerWhoseCreateIsRunningWaitsForIt) {
  World world(GetParam());
  if (!world.skip().empty()) GTEST_SKIP() << world.skip();
  Backend& b = world.Make(Variant::kSlowCreate);
  std::atomic<bool> create_returned{false};
  Result<std::string> created = Unavailable("not returned");
  std::thread create([&] {
    created = b.Create(world.Request(), Soon());
    create_returned = true;
  });
  // The agent may connect before its create answers: the pool then knows the name and may
  // delete it.
  std::string name;
  ASSERT_TRUE(WaitFor([&] {
    for (const std::string& n : world.Announced()) {
      if (world.Connected(n)) name = n;
    }
    return !name.empty();
  }, 60s));
  Status deleted = b.Delete(name, Soon());
  bool returned_first = create_returned.load();
  create.join();
  ASSERT_TRUE(deleted.ok()) << deleted.message();
  EXPECT_TRUE(returned_first) << "Delete returned while the create of " << name << " was still running";
  ASSERT_TRUE(created.ok()) << created.status().message();
  EXPECT_EQ(*created, name);
  EXPECT_FALSE(world.Listed(b, name));
  EXPECT_TRUE(WaitFor([&] { return !world.Connected(name); }, 60s)) << "the worker outlived its delete";
}

TEST_P(Conformance, StoppedWorkersAreNotListed) {
  World world(GetParam());
  if (!world.skip().empty()) GTEST_SKIP() << world.skip();
  Backend& b = world.Make(Variant::kNormal);
  auto kept = b.Create(world.Request(), Soon());
  auto stopped = b.Create(world.Request(), Soon());
  ASSERT_TRUE(kept.ok()) << kept.status().message();
  ASSERT_TRUE(stopped.ok()) << stopped.status().message();
  ASSERT_TRUE(world.Listed(b, *stopped));
  GetParam().stop_from_outside(world.setup(), *stopped);
  EXPECT_TRUE(WaitFor([&] { return !world.Listed(b, *stopped); }, 60s)) << *stopped << " is still listed as a worker";
  EXPECT_TRUE(world.Listed(b, *kept));
}

TEST_P(Conformance, AFailingCreateReportsTheInfrastructuresOwnMessage) {
  World world(GetParam());
  if (!world.skip().empty()) GTEST_SKIP() << world.skip();
  Backend& b = world.Make(Variant::kFailing);
  auto name = b.Create(world.Request(), Soon());
  ASSERT_FALSE(name.ok());
  EXPECT_NE(name.status().message().find(GetParam().failing_message), std::string::npos) << name.status().message();
  EXPECT_EQ(backends::ClassOf(name.status()), GetParam().failing_class)
      << backends::ErrorClassName(backends::ClassOf(name.status())) << ": " << name.status().message();
  auto listed = b.List(Soon());
  ASSERT_TRUE(listed.ok()) << listed.status().message();
  EXPECT_TRUE(listed->empty());
}

TEST_P(Conformance, BatchCreateWhereSupported) {
  World world(GetParam());
  if (!world.skip().empty()) GTEST_SKIP() << world.skip();
  Backend& b = world.Make(Variant::kNormal);
  if (!b.SupportsBatch()) {
    auto refused = b.CreateBatch(world.Request(), 2, "gang-1", Soon());
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.status().code(), StatusCode::kUnimplemented);
    return;  // no batch create: refusing it is all there is to check
  }
  auto names = b.CreateBatch(world.Request(), 3, "gang-1", Soon());
  ASSERT_TRUE(names.ok()) << names.status().message();
  ASSERT_EQ(names->size(), 3u);
  std::set<std::string> distinct(names->begin(), names->end());
  EXPECT_EQ(distinct.size(), 3u);
  for (const std::string& n : distinct) {
    EXPECT_TRUE(world.Listed(b, n)) << n;
    EXPECT_TRUE(WaitFor([&] { return world.Connected(n); }, 60s)) << n;
  }
  for (const std::string& n : distinct) EXPECT_TRUE(b.Delete(n, Soon()).ok()) << n;
  for (const std::string& n : distinct) EXPECT_FALSE(world.Listed(b, n)) << n;
}

}  // namespace
}  // namespace tidepool::conformance
