// tidepool pool list|get|join-token, worker list|drain|delete, worker-token
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "api/names.h"
#include "cli/client.h"
#include "cli/commands.h"
#include "cli/table.h"
#include "common/duration.h"
#include "common/fs.h"
#include "common/strings.h"
#include "common/time.h"
#include "server/tokens.h"

namespace tidepool::cli {

namespace {

struct PoolOpts {
  ClientOptions client;
  std::string name;
  std::string pool;
  bool json = false;
  bool force = false;
  std::string data_dir;
};

int Count(const v1::Pool& p, const char* state) {
  auto it = p.workers().find(state);
  return it == p.workers().end() ? 0 : it->second;
}

std::string WorkersColumn(const v1::Pool& p) {
  return fmt::format("{}/{}/{}/{}", Count(p, "idle"), Count(p, "busy"), Count(p, "starting") + Count(p, "requested"),
                     Count(p, "unknown"));
}

std::string Labels(const google::protobuf::Map<std::string, std::string>& m) {
  std::vector<std::string> parts;
  for (const auto& [k, v] : m) parts.push_back(k + "=" + v);
  std::sort(parts.begin(), parts.end());
  return parts.empty() ? "-" : Join(parts, ",");
}

// The backend's words for a worker ("pending: Resources"), else its walltime.
std::string Detail(const v1::Worker& w) {
  if (!w.detail().empty()) return w.detail();
  if (w.ends_at_ms()) return "walltime ends " + FormatRfc3339(w.ends_at_ms());
  return "-";
}

void WorkerRows(Table& table, const google::protobuf::RepeatedPtrField<v1::Worker>& workers) {
  int64_t now = NowUnixMs();
  for (const auto& w : workers) {
    table.Add({w.name().empty() ? "(unnamed)" : w.name(), w.pool(), api::WorkerStateName(w.state()),
               fmt::format("{}/{}", w.used_slots(), w.slots()), FormatAge(now - w.created_at_ms()),
               w.last_seen_ms() ? FormatAge(now - w.last_seen_ms()) : "-", Labels(w.labels()), Detail(w)});
  }
}

int ListPools(PoolOpts& o) {
  Client client(o.client);
  v1::ListPoolsResponse resp;
  auto ctx = client.Context();
  if (grpc::Status st = client.pools().ListPools(ctx.get(), {}, &resp); !st.ok()) return client.Fail(st);
  if (o.json) {
    nlohmann::json arr = nlohmann::json::array();
    for (const auto& p : resp.pools()) arr.push_back(api::PoolJson(p));
    fmt::print("{}\n", arr.dump(2, ' ', false, nlohmann::json::error_handler_t::replace));
    return 0;
  }
  Table table({"NAME", "SELECTORS", "BACKEND", "WORKERS(idle/busy/starting/unknown)", "QUEUED", "MIN", "MAX", "STATUS"});
  for (const auto& p : resp.pools()) {
    std::vector<std::string> sel(p.selectors().begin(), p.selectors().end());
    table.Add({p.name() + (p.default_() ? " (default)" : ""), sel.empty() ? "-" : Join(sel, ","),
               p.backend().empty() ? "static" : p.backend(), WorkersColumn(p), std::to_string(p.queued()),
               std::to_string(p.min_agents()), std::to_string(p.max_agents()), p.status()});
  }
  fmt::print("{}", table.Render());
  return 0;
}

int GetPool(PoolOpts& o) {
  Client client(o.client);
  v1::GetPoolRequest req;
  req.set_name(o.name);
  v1::PoolDetail d;
  auto ctx = client.Context();
  if (grpc::Status st = client.pools().GetPool(ctx.get(), req, &d); !st.ok()) return client.Fail(st);
  const v1::Pool& p = d.pool();
  const v1::PoolPolicy& pol = d.policy();
  if (o.json) {
    nlohmann::json j = api::PoolJson(p);
    j["policy"] = {{"min_agents", pol.min_agents()},
                   {"max_agents", pol.max_agents()},
                   {"min_idle_agents", pol.min_idle_agents()},
                   {"max_idle_agents", pol.max_idle_agents()},
                   {"effective_max_idle_agents", pol.effective_max_idle_agents()},
                   {"default_slots_per_agent", pol.default_slots_per_agent()},
                   {"idle_decay_seconds", pol.idle_decay_ms() / 1000.0},
                   {"sync_loop_interval_seconds", pol.sync_loop_interval_ms() / 1000.0},
                   {"kill_unknown_after_seconds", pol.kill_unknown_after_ms() / 1000.0},
                   {"register_timeout_seconds", pol.register_timeout_ms() / 1000.0}};
    j["worker_list"] = nlohmann::json::array();
    for (const auto& w : d.workers()) j["worker_list"].push_back(api::WorkerJson(w));
    j["events"] = nlohmann::json::array();
    for (const auto& e : d.events()) {
      j["events"].push_back({{"at", FormatRfc3339(e.at_ms())}, {"kind", e.kind()}, {"message", e.message()}});
    }
    fmt::print("{}\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace));
    return 0;
  }
  fmt::print("pool:       {}{}\n", p.name(), p.default_() ? " (default)" : "");
  if (!p.description().empty()) fmt::print("about:      {}\n", p.description());
  fmt::print("backend:    {} ({})\n", p.backend().empty() ? "none" : p.backend(), p.mode());
  fmt::print("status:     {}\n", p.status());
  fmt::print("policy:     min {} max {} agents; idle slots min {} max {} (effective {}); {} slot{} per agent; "
             "idle_decay {}\n",
             pol.min_agents(), pol.max_agents(), pol.min_idle_agents(), pol.max_idle_agents(),
             pol.effective_max_idle_agents(), pol.default_slots_per_agent(), pol.default_slots_per_agent() > 1 ? "s" : "",
             FormatDuration(Millis(pol.idle_decay_ms())));
  std::vector<std::string> counts;
  for (const auto& [state, n] : p.workers()) {
    if (n) counts.push_back(fmt::format("{} {}", n, state));
  }
  fmt::print("workers:    {}\n", counts.empty() ? "none" : Join(counts, ", "));
  fmt::print("slots:      {} idle, {} busy; {} task{} queued\n", p.idle_slots(), p.busy_slots(), p.queued(),
             p.queued() == 1 ? "" : "s");
  fmt::print("last error: {}\n", p.last_error().empty() ? "-" : p.last_error());
  if (d.workers_size()) {
    Table table({"NAME", "POOL", "STATE", "SLOTS", "AGE", "LAST-SEEN", "LABELS", "DETAIL"});
    WorkerRows(table, d.workers());
    fmt::print("\n{}", table.Render());
  }
  if (d.events_size()) {
    fmt::print("\nrecent events:\n");
    for (const auto& e : d.events()) fmt::print("  {}  {:<16} {}\n", FormatRfc3339(e.at_ms()), e.kind(), e.message());
  }
  return 0;
}

int ListWorkers(PoolOpts& o) {
  Client client(o.client);
  v1::ListWorkersRequest req;
  req.set_pool(o.pool);
  v1::ListWorkersResponse resp;
  auto ctx = client.Context();
  if (grpc::Status st = client.pools().ListWorkers(ctx.get(), req, &resp); !st.ok()) return client.Fail(st);
  if (o.json) {
    nlohmann::json arr = nlohmann::json::array();
    for (const auto& w : resp.workers()) arr.push_back(api::WorkerJson(w));
    fmt::print("{}\n", arr.dump(2, ' ', false, nlohmann::json::error_handler_t::replace));
    return 0;
  }
  Table table({"NAME", "POOL", "STATE", "SLOTS", "AGE", "LAST-SEEN", "LABELS", "DETAIL"});
  WorkerRows(table, resp.workers());
  fmt::print("{}", table.Render());
  return 0;
}

int WorkerAction(PoolOpts& o, bool drain) {
  Client client(o.client);
  v1::WorkerRequest req;
  req.set_name(o.name);
  req.set_force(o.force);
  v1::WorkerResponse resp;
  auto ctx = client.Context();
  grpc::Status st = drain ? client.pools().DrainWorker(ctx.get(), req, &resp)
                          : client.pools().DeleteWorker(ctx.get(), req, &resp);
  if (!st.ok()) return client.Fail(st);
  fmt::print("{} {}: {}\n", drain ? "draining" : "deleting", o.name, api::WorkerStateName(resp.worker().state()));
  return 0;
}

int LocalToken(PoolOpts& o, bool join) {
  // A command backend's start script gets TIDEPOOL_DATA_DIR, so `$TIDEPOOL_WORKER_TOKEN_FOR NAME`
  // works there without flags.
  const char* env_dir = std::getenv("TIDEPOOL_DATA_DIR");
  std::string dir = !o.data_dir.empty() ? o.data_dir : (env_dir && *env_dir ? env_dir : DefaultDataDir());
  auto tokens = server::TokenAuthority::Read(dir);
  if (!tokens.ok()) {
    fmt::print(stderr, "tidepool: {}\n", tokens.status().message());
    return 1;
  }
  fmt::print("{}\n", join ? tokens->JoinToken(o.name) : tokens->WorkerToken(o.name));
  return 0;
}

}  // namespace

void AddPoolCommands(CLI::App& app, int* rc) {
  CLI::App* pool = app.add_subcommand("pool", "Inspect pools");
  pool->require_subcommand(1);
  {
    auto o = std::make_shared<PoolOpts>();
    CLI::App* sub = pool->add_subcommand("list", "List pools");
    sub->add_flag("--json", o->json, "one JSON array");
    AddClientOptions(sub, &o->client);
    sub->callback([o, rc] { *rc = ListPools(*o); });
  }
  {
    auto o = std::make_shared<PoolOpts>();
    CLI::App* sub = pool->add_subcommand("get", "Show a pool: policy, workers, last error, recent events");
    sub->add_option("NAME", o->name, "pool name")->required();
    sub->add_flag("--json", o->json, "one JSON document");
    AddClientOptions(sub, &o->client);
    sub->callback([o, rc] { *rc = GetPool(*o); });
  }
  {
    auto o = std::make_shared<PoolOpts>();
    CLI::App* sub = pool->add_subcommand("join-token", "On the server host: the token hand-started agents use to join a static pool");
    sub->add_option("POOL", o->name, "pool name")->required();
    sub->add_option("--data-dir", o->data_dir, "the server's data dir");
    sub->callback([o, rc] { *rc = LocalToken(*o, /*join=*/true); });
  }

  CLI::App* worker = app.add_subcommand("worker", "Inspect and control workers");
  worker->require_subcommand(1);
  {
    auto o = std::make_shared<PoolOpts>();
    CLI::App* sub = worker->add_subcommand("list", "List workers");
    sub->add_option("-P,--pool", o->pool, "only this pool");
    sub->add_flag("--json", o->json, "one JSON array");
    AddClientOptions(sub, &o->client);
    sub->callback([o, rc] { *rc = ListWorkers(*o); });
  }
  {
    auto o = std::make_shared<PoolOpts>();
    CLI::App* sub = worker->add_subcommand("drain", "Take no new work; delete the worker when idle");
    sub->add_option("NAME", o->name, "worker name")->required();
    AddClientOptions(sub, &o->client);
    sub->callback([o, rc] { *rc = WorkerAction(*o, /*drain=*/true); });
  }
  {
    auto o = std::make_shared<PoolOpts>();
    CLI::App* sub = worker->add_subcommand("delete", "Delete a worker now");
    sub->add_option("NAME", o->name, "worker name")->required();
    sub->add_flag("--force", o->force, "even if it is running tasks");
    AddClientOptions(sub, &o->client);
    sub->callback([o, rc] { *rc = WorkerAction(*o, /*drain=*/false); });
  }
  {
    auto o = std::make_shared<PoolOpts>();
    CLI::App* sub = app.add_subcommand("worker-token", "On the server host: the token a worker NAME must present");
    sub->add_option("NAME", o->name, "worker name")->required();
    sub->add_option("--data-dir", o->data_dir, "the server's data dir (default $TIDEPOOL_DATA_DIR, else ~/.local/share/tidepool)");
    sub->callback([o, rc] { *rc = LocalToken(*o, /*join=*/false); });
  }
}

}  // namespace tidepool::cli
