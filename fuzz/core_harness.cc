#include "core_harness.h"

#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include <google/protobuf/stubs/logging.h>
#include <spdlog/spdlog.h>

#include "config/config.h"
#include "store/store.h"

namespace tidepool::fuzz {

namespace fs = std::filesystem;

const char* const kFuzzConfigYaml = R"(agent_pools:
  - name: p
    default: true
    selectors: [any]
  - name: q
    selectors: [any]
    selector_priority: 1
    kinds: [batch]
  - name: local
    selectors: [any]
    selector_priority: 2
    auto_scaler:
      backend: { local: {} }
      max_agents: 0
)";

namespace {

std::string* g_root = nullptr;

void RemoveRoot() {
  if (g_root) {
    std::error_code ec;
    fs::remove_all(*g_root, ec);
  }
}

config::Config FuzzConfig() {
  auto r = config::LoadConfigString(kFuzzConfigYaml, "fuzz.yaml",
                                    [](const std::string&) -> std::optional<std::string> { return std::nullopt; });
  if (!r.config) {
    for (const auto& e : r.errors) std::fprintf(stderr, "fuzz config: %s\n", e.ToString().c_str());
    std::abort();
  }
  return *r.config;
}

}  // namespace

const std::string& ScratchRoot() {
  if (!g_root) {
    std::string parent;
    if (const char* env = std::getenv("TIDEPOOL_FUZZ_SCRATCH"); env && *env) {
      parent = env;
    } else if (::access("/dev/shm", W_OK) == 0) {
      parent = "/dev/shm";
    } else {
      parent = "/tmp";
    }
    std::string tmpl = parent + "/tidepool-fuzz-XXXXXX";
    if (!::mkdtemp(tmpl.data())) {
      std::perror("mkdtemp");
      std::abort();
    }
    g_root = new std::string(tmpl);
    std::atexit(RemoveRoot);
  }
  return *g_root;
}

void InitFuzzProcess() {
  spdlog::set_level(spdlog::level::off);
  // "String field ... contains invalid UTF-8": protobuf logs it for every such input (and then
  // fails the parse, as it does in the server).
  google::protobuf::SetLogHandler(nullptr);
  ScratchRoot();
}

// ---- StartLog / FakeAgentLink -------------------------------------------------------------------

void StartLog::Add(const std::string& task_id, int attempt) {
  std::lock_guard lock(mu_);
  if (started_.size() < 4096) started_.insert({task_id, attempt});
}

bool StartLog::Has(const std::string& task_id, int attempt) const {
  std::lock_guard lock(mu_);
  return started_.count({task_id, attempt}) > 0;
}

bool FakeAgentLink::Send(v1::ServerMessage m) {
  std::lock_guard lock(mu_);
  if (closed_) return false;
  ++sent_;
  if (m.has_welcome()) worker_ = m.welcome().worker_name();
  if (m.has_start()) starts_->Add(m.start().task_id(), m.start().attempt());
  // Touch what the agent would read, so a malformed message the core built is noticed.
  (void)m.ByteSizeLong();
  return true;
}

void FakeAgentLink::Close(const Status&) {
  std::lock_guard lock(mu_);
  closed_ = true;
}

void FakeAgentLink::Accepted() {
  std::lock_guard lock(mu_);
  accepted_ = true;
}

bool FakeAgentLink::closed() const {
  std::lock_guard lock(mu_);
  return closed_;
}

bool FakeAgentLink::accepted() const {
  std::lock_guard lock(mu_);
  return accepted_;
}

std::string FakeAgentLink::worker() const {
  std::lock_guard lock(mu_);
  return worker_;
}

size_t FakeAgentLink::sent() const {
  std::lock_guard lock(mu_);
  return sent_;
}

// ---- FakeRunClient -----------------------------------------------------------------------------

bool FakeRunClient::Send(v1::RunEvent e, std::function<void()> written) {
  {
    std::lock_guard lock(mu_);
    if (finished_) return false;
    ++events_;
    (void)e.ByteSizeLong();
  }
  if (written) written();
  return true;
}

void FakeRunClient::Finish(const Status&) {
  std::lock_guard lock(mu_);
  finished_ = true;
}

bool FakeRunClient::finished() const {
  std::lock_guard lock(mu_);
  return finished_;
}

// ---- CoreHarness -------------------------------------------------------------------------------

CoreHarness::CoreHarness() : data_dir_(ScratchRoot() + "/data") {
  fs::create_directories(data_dir_);
  auto tokens = server::TokenAuthority::Open(data_dir_);
  if (!tokens.ok()) {
    std::fprintf(stderr, "fuzz: %s\n", tokens.status().message().c_str());
    std::abort();
  }
  auto store = store::OpenSqliteStore(data_dir_ + "/tidepool.db");
  if (!store.ok()) {
    std::fprintf(stderr, "fuzz: %s\n", store.status().message().c_str());
    std::abort();
  }
  server::CoreOptions opts;
  opts.config = FuzzConfig();
  opts.data_dir = data_dir_;
  opts.agent_address = "127.0.0.1:1";  // nothing dials it: no worker is ever created
  opts.agent_binary = "/nonexistent/tidepool";
  core_ = std::make_unique<server::Core>(std::move(opts), std::move(store).value(), std::move(tokens).value());
  if (Status s = core_->Start(); !s.ok()) {
    std::fprintf(stderr, "fuzz: core start: %s\n", s.message().c_str());
    std::abort();
  }
}

CoreHarness::~CoreHarness() {
  core_->Stop();
  core_.reset();
  // Everything but the secret, so the next core starts empty with the same tokens.
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(data_dir_, ec)) {
    if (e.path().filename() != "secret.key") fs::remove_all(e.path(), ec);
  }
}

void CoreHarness::Submit(v1::TaskSpec spec) {
  core_->Submit(std::move(spec), [](Result<std::string>) {});
}

void CoreHarness::SettleDispatches(const std::vector<std::string>& ids,
                                   const std::vector<std::shared_ptr<FakeAgentLink>>& links) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(100);
  while (true) {
    bool pending = false;
    for (const std::string& id : ids) {
      auto t = core_->GetTask(id);
      if (!t.ok() || t->state() != v1::TASK_STATE_RUNNING) continue;
      for (const auto& l : links) {
        if (l && !l->closed() && !t->worker().empty() && l->worker() == t->worker() &&
            !starts_->Has(id, t->attempts())) {
          pending = true;
        }
      }
    }
    if (!pending || std::chrono::steady_clock::now() > deadline) return;
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

std::shared_ptr<FakeAgentLink> CoreHarness::ConnectAgent(const std::string& name, const std::string& pool,
                                                         int slots) {
  auto link = NewLink();
  v1::AgentHello hello;
  hello.set_name(name);
  hello.set_pool(pool);
  hello.set_token(tokens().JoinToken(pool));
  hello.set_slots(slots);
  hello.set_instance_id("fuzz-" + name);
  Status refusal;
  if (core_->AgentHello(link, hello, &refusal) != server::HelloOutcome::kAccepted) {
    std::fprintf(stderr, "fuzz: agent %s refused: %s\n", name.c_str(), refusal.message().c_str());
    std::abort();
  }
  return link;
}

}  // namespace tidepool::fuzz
