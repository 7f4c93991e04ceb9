// `tidepool task sync ID [--theirs|--ours]` (cli.md; ../shared/spec/workspace.md).
#include <fmt/format.h>

#include "api/names.h"
#include "cli/client.h"
#include "cli/commands.h"
#include "cli/workspace_client.h"

namespace tidepool::cli {

namespace {

// The workspace results of a group's shards (all pages of its children).
Result<std::vector<std::string>> ShardResults(Client& client, const std::string& id) {
  std::vector<std::string> out;
  std::string after;
  do {
    v1::ListTasksRequest req;
    req.set_parent(id);
    req.set_all(true);
    req.set_limit(1000);
    req.set_after(after);
    v1::ListTasksResponse resp;
    auto ctx = client.Context();
    grpc::Status st = client.tasks().ListTasks(ctx.get(), req, &resp);
    if (!st.ok()) return Status(static_cast<StatusCode>(st.error_code()), st.error_message());
    for (const auto& t : resp.tasks()) {
      if (!t.workspace_result().empty()) out.push_back(t.workspace_result());
    }
    after = resp.next_after();
  } while (!after.empty());
  return out;
}

}  // namespace

int SyncTask(Client& client, const std::string& id, SyncConflicts on_conflict) {
  v1::GetTaskRequest req;
  req.set_id(id);
  v1::Task t;
  {
    auto ctx = client.Context();
    if (grpc::Status st = client.tasks().GetTask(ctx.get(), req, &t); !st.ok()) return client.Fail(st);
  }
  if (!api::IsFinal(t.state())) {
    fmt::print(stderr, "tidepool: task {} has not finished ({}); sync brings back what a finished task left\n", id,
               api::StateName(t.state()));
    return 1;
  }
  const std::string& base = t.workspace().manifest();
  if (base.empty()) {
    fmt::print(stderr, "tidepool: task {} had no workspace brought to it (its pool shares the caller's files)\n", id);
    return 1;
  }
  std::vector<std::string> results;
  if (!t.workspace_result().empty()) {
    results.push_back(t.workspace_result());
  } else {
    auto shards = ShardResults(client, id);
    if (!shards.ok()) {
      fmt::print(stderr, "tidepool: {}\n", shards.status().message());
      return kExitTidepoolFailed;
    }
    results = std::move(*shards);
  }
  if (results.empty()) {
    fmt::print(stderr, "tidepool: task {} brought no workspace back (it did not run to its end on a worker)\n", id);
    return 1;
  }
  workspace::OnConflict oc = on_conflict == SyncConflicts::kTheirs ? workspace::OnConflict::kTheirs
                             : on_conflict == SyncConflicts::kOurs ? workspace::OnConflict::kOurs
                                                                   : workspace::OnConflict::kStop;
  auto back = results.size() == 1 ? BringBack(client, base, results[0], oc) : BringBackAll(client, base, results, oc);
  if (!back.ok()) {
    fmt::print(stderr, "tidepool: workspace of task {}: {}\n", id, back.status().message());
    return kExitTidepoolFailed;
  }
  fmt::print(stderr, "task {}: workspace: {} written, {} deleted\n", id, back->written, back->deleted);
  if (oc != workspace::OnConflict::kStop) {
    // --theirs/--ours settled the edits made here; shards that clashed are still reported.
    std::erase_if(back->conflicts, [](const std::string& c) { return c.find(" (changed by two shards)") == std::string::npos; });
  }
  ReportConflicts(*back, id);
  return back->conflicts.empty() ? 0 : 1;
}

void AddTaskSync(CLI::App* task, int* rc) {
  struct Opts {
    ClientOptions client;
    std::string id;
    bool theirs = false, ours = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* sub = task->add_subcommand("sync", "Bring a finished task's workspace changes into your tree");
  sub->add_option("ID", o->id, "task id")->required();
  auto* theirs = sub->add_flag("--theirs", o->theirs, "on a conflict, take the task's version");
  sub->add_flag("--ours", o->ours, "on a conflict, keep yours")->excludes(theirs);
  AddClientOptions(sub, &o->client);
  sub->callback([o, rc] {
    Client client(o->client);
    *rc = SyncTask(client, o->id, o->theirs ? SyncConflicts::kTheirs : o->ours ? SyncConflicts::kOurs : SyncConflicts::kStop);
  });
}

}  // namespace tidepool::cli
