// tidepool task list|get|logs|watch|wait|cancel
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "api/names.h"
#include "cli/client.h"
#include "cli/commands.h"
#include "cli/table.h"
#include "common/strings.h"
#include "common/time.h"

namespace tidepool::cli {

namespace {

struct TaskOpts {
  ClientOptions client;
  std::string id;
  bool json = false;
  bool all = false;
  std::string state;
  std::string pool;
  std::vector<std::string> labels;
  int limit = 0;       // 0 = the server's default page (100)
  std::string after;   // the id the previous page ended with
  std::string parent;  // only this task's children (a group's shards)
  bool follow = false;
  bool only_stdout = false;
  bool only_stderr = false;
};

std::string ExitColumn(const v1::Task& t) {
  if (t.signal()) return fmt::format("sig {}", t.signal());
  if (t.has_exit_code()) return std::to_string(t.exit_code());
  return "-";
}

int List(TaskOpts& o) {
  v1::ListTasksRequest req;
  req.set_all(o.all);
  if (!o.state.empty()) {
    auto s = api::ParseState(o.state);
    if (!s) {
      fmt::print(stderr, "task list: unknown state {} (PENDING, QUEUEING, RUNNING, RUNNING_SUBTASKS, SUCCESS, FAILURE, "
                         "FAILED_UPSTREAM, CANCELLED)\n", o.state);
      return kExitUsage;
    }
    req.set_state(*s);
  }
  req.set_pool(o.pool);
  req.set_limit(o.limit);
  req.set_after(o.after);
  req.set_parent(o.parent);
  for (const auto& l : o.labels) {
    auto eq = l.find('=');
    if (eq == std::string::npos) {
      fmt::print(stderr, "task list: -l {}: expected K=V\n", l);
      return kExitUsage;
    }
    (*req.mutable_labels())[l.substr(0, eq)] = l.substr(eq + 1);
  }
  Client client(o.client);
  v1::ListTasksResponse resp;
  auto ctx = client.Context();
  if (grpc::Status st = client.tasks().ListTasks(ctx.get(), req, &resp); !st.ok()) return client.Fail(st);
  // The page ends with the task whose id is the cursor of the next one (the last of the table or
  // of the JSON array), so a script walks pages by passing the last id as --after until a page
  // is empty; people get the note below.
  auto note_more = [&] {
    if (resp.next_after().empty()) return;
    fmt::print(stderr, "tidepool task list: more tasks than the {} shown (newest first); the next page: "
                       "add --after {} (or a larger --limit, up to 1000)\n",
               resp.tasks_size(), resp.next_after());
  };
  if (o.json) {
    nlohmann::json arr = nlohmann::json::array();
    for (const auto& t : resp.tasks()) arr.push_back(api::TaskJson(t));
    fmt::print("{}\n", arr.dump(2, ' ', false, nlohmann::json::error_handler_t::replace));
    std::fflush(stdout);
    note_more();
    return 0;
  }
  Table table({"ID", "STATE", "POOL", "WORKER", "EXIT", "AGE", "COMMAND"});
  int64_t now = NowUnixMs();
  for (const auto& t : resp.tasks()) {
    std::string cmd = ShellQuote(std::vector<std::string>(t.argv().begin(), t.argv().end()));
    if (cmd.size() > 60) cmd = cmd.substr(0, 57) + "...";
    table.Add({t.id(), api::StateName(t.state()), t.pool(), t.worker().empty() ? "-" : t.worker(), ExitColumn(t),
               FormatAge(now - t.created_at_ms()), cmd});
  }
  fmt::print("{}", table.Render());
  std::fflush(stdout);
  note_more();
  return 0;
}

int Get(TaskOpts& o) {
  Client client(o.client);
  v1::GetTaskRequest req;
  req.set_id(o.id);
  v1::Task t;
  auto ctx = client.Context();
  if (grpc::Status st = client.tasks().GetTask(ctx.get(), req, &t); !st.ok()) return client.Fail(st);
  if (o.json) {
    fmt::print("{}\n", api::TaskJson(t).dump(2, ' ', false, nlohmann::json::error_handler_t::replace));
    return 0;
  }
  auto line = [](const char* k, const std::string& v) { fmt::print("{:<10} {}\n", k, v.empty() ? "-" : v); };
  line("id:", t.id());
  line("name:", t.name());
  line("state:", api::StateName(t.state()));
  line("kind:", api::KindName(t.kind()));
  line("pool:", t.pool());
  line("command:", ShellQuote(std::vector<std::string>(t.argv().begin(), t.argv().end())));
  line("cwd:", t.cwd());
  line("priority:", std::to_string(t.priority()));
  line("worker:", t.worker());
  line("exit:", ExitColumn(t) == "-" ? "" : ExitColumn(t));
  line("reason:", t.reason());
  line("attempts:", std::to_string(t.attempts()));
  line("created:", FormatRfc3339(t.created_at_ms()));
  line("started:", FormatRfc3339(t.started_at_ms()));
  line("finished:", FormatRfc3339(t.finished_at_ms()));
  return 0;
}

int Logs(TaskOpts& o) {
  if (o.only_stdout && o.only_stderr) {
    fmt::print(stderr, "task logs: --stdout and --stderr are exclusive (give neither for both)\n");
    return kExitUsage;
  }
  Client client(o.client);
  v1::StreamLogsRequest req;
  req.set_id(o.id);
  req.set_follow(o.follow);
  req.set_stdout(o.only_stdout);
  req.set_stderr(o.only_stderr);
  auto ctx = client.Context();
  auto reader = client.tasks().StreamLogs(ctx.get(), req);
  v1::LogChunk chunk;
  while (reader->Read(&chunk)) {
    int fd = chunk.stream() == v1::OUTPUT_STREAM_STDERR ? STDERR_FILENO : STDOUT_FILENO;
    const std::string& d = chunk.data();
    size_t done = 0;
    while (done < d.size()) {
      ssize_t n = ::write(fd, d.data() + done, d.size() - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        return 1;
      }
      done += static_cast<size_t>(n);
    }
  }
  grpc::Status st = reader->Finish();
  return st.ok() ? 0 : client.Fail(st);
}

int Watch(TaskOpts& o) {
  Client client(o.client);
  v1::WatchTaskRequest req;
  req.set_id(o.id);
  auto ctx = client.Context();
  auto reader = client.tasks().WatchTask(ctx.get(), req);
  v1::Task t;
  v1::TaskState last = v1::TASK_STATE_UNSPECIFIED;
  while (reader->Read(&t)) {
    if (t.state() == last) continue;
    last = t.state();
    std::string extra;
    if (api::IsFinal(t.state())) {
      if (ExitColumn(t) != "-") extra += " exit=" + ExitColumn(t);
      if (!t.reason().empty()) extra += " (" + t.reason() + ")";
    } else if (t.state() == v1::TASK_STATE_RUNNING && !t.worker().empty()) {
      extra = " on " + t.worker();
    }
    fmt::print("{} {} {}{}\n", FormatRfc3339(NowUnixMs()), t.id(), api::StateName(t.state()), extra);
    std::fflush(stdout);
  }
  grpc::Status st = reader->Finish();
  return st.ok() ? 0 : client.Fail(st);
}

int Cancel(TaskOpts& o) {
  Client client(o.client);
  v1::CancelTaskRequest req;
  req.set_id(o.id);
  v1::CancelTaskResponse resp;
  auto ctx = client.Context();
  if (grpc::Status st = client.tasks().CancelTask(ctx.get(), req, &resp); !st.ok()) return client.Fail(st);
  if (resp.cancelled_size() == 0) {
    fmt::print("task {} has already ended; nothing to cancel\n", o.id);
    return 0;
  }
  for (const auto& id : resp.cancelled()) fmt::print("cancelled {}\n", id);
  return 0;
}

}  // namespace

void AddTaskCommands(CLI::App& app, int* rc) {
  CLI::App* task = app.add_subcommand("task", "Inspect and control tasks");
  task->require_subcommand(1);

  auto add = [&](const char* name, const char* help, bool takes_id, auto handler) {
    auto o = std::make_shared<TaskOpts>();
    CLI::App* sub = task->add_subcommand(name, help);
    if (takes_id) sub->add_option("ID", o->id, "task id")->required();
    AddClientOptions(sub, &o->client);
    sub->callback([o, rc, handler] { *rc = handler(*o); });
    return std::make_pair(sub, o);
  };
  {
    auto [sub, o] = add("list",
                        "List tasks, newest first, one page at a time (unfinished and those finished in the last hour)",
                        false, List);
    sub->add_flag("--all", o->all, "include tasks finished long ago");
    sub->add_option("--limit", o->limit, "tasks per page (default 100, at most 1000)")->check(CLI::Range(1, 1000));
    sub->add_option("--after", o->after,
                    "the next page: tasks older than this one (the id the previous page ended with)");
    sub->add_option("--parent", o->parent, "only the direct children of this task (a group's shards)");
    sub->add_option("--state", o->state, "only tasks in this state");
    sub->add_option("-P,--pool", o->pool, "only tasks of this pool");
    sub->add_option("-l", o->labels, "only tasks with label K=V (repeatable)")->allow_extra_args(false);
    sub->add_flag("--json", o->json, "one JSON array");
  }
  {
    auto [sub, o] = add("get", "Show one task", true, Get);
    sub->add_flag("--json", o->json, "one JSON document");
  }
  {
    auto [sub, o] = add("logs", "Print a task's stored output", true, Logs);
    sub->add_flag("-f,--follow", o->follow, "follow until the task ends");
    sub->add_flag("--stdout", o->only_stdout, "only stdout");
    sub->add_flag("--stderr", o->only_stderr, "only stderr");
  }
  add("watch", "Print one line per status change until the task ends", true, Watch);
  add("wait", "Wait until the task ends; exit with its status", true, [](TaskOpts& o) {
    BlockInterrupt();
    Client client(o.client);
    return FollowTask(client, o.id, /*show_output=*/false, /*show_status=*/false);
  });
  add("cancel", "Cancel a task and everything under it", true, Cancel);
  AddTaskSync(task, rc);
}

}  // namespace tidepool::cli
