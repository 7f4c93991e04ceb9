// vbatch (cli.md, "vbatch") and following a task to its end (vbatch -f, task wait).
#include <signal.h>
#include <unistd.h>

#include <thread>

#include <fmt/format.h>

#include "api/names.h"
#include "common/terminal_io.h"
#include "cli/client.h"
#include "cli/unanswered.h"
#include "cli/workspace_client.h"
#include "cli/commands.h"
#include "cli/spec.h"

namespace tidepool::cli {

namespace {

struct BatchOpts {
  ClientOptions client;
  CommonSpec common;
  int shards = 0;
  bool gang = false;
  std::vector<std::string> after, after_success, after_fail;
  int retries = 0;
  bool retry_on_failure = false;
  bool pin = false;
  std::vector<std::string> labels;
  bool follow = false;
  bool sync = false;  // --sync: follow, then bring the workspace changes back
};

int Submit(BatchOpts& o, std::vector<std::string> command) {
  if (command.empty()) {
    fmt::print(stderr, "vbatch: no command given\nRun 'vbatch --help' for usage.\n");
    return kExitUsage;
  }
  o.common.command = std::move(command);
  v1::SubmitRequest req;
  v1::TaskSpec* spec = req.mutable_spec();
  if (Status s = FillSpec(o.common, spec); !s.ok()) {
    fmt::print(stderr, "vbatch: {}\n", s.message());
    return kExitUsage;
  }
  spec->set_kind(v1::TASK_KIND_BATCH);
  spec->set_stdin_null(true);
  spec->set_shards(o.shards);
  spec->set_gang(o.gang);
  for (const auto& a : o.after) spec->add_after(a);
  for (const auto& a : o.after_success) spec->add_after_success(a);
  for (const auto& a : o.after_fail) spec->add_after_fail(a);
  if (o.retries < 0) {
    fmt::print(stderr, "vbatch: --retries must not be negative\n");
    return kExitUsage;
  }
  spec->set_retries(o.retries);
  spec->set_retry_on_failure(o.retry_on_failure);
  spec->set_pin(o.pin);
  for (const auto& l : o.labels) {
    auto eq = l.find('=');
    if (eq == std::string::npos || eq == 0) {
      fmt::print(stderr, "vbatch: -l {}: expected K=V\n", l);
      return kExitUsage;
    }
    (*spec->mutable_labels())[l.substr(0, eq)] = l.substr(eq + 1);
  }
  if (o.sync) o.follow = true;
  if (o.follow) BlockInterrupt();
  Client client(o.client);
  if (Status s = PrepareWorkspace(client, spec, /*quiet=*/false, nullptr); !s.ok()) {
    fmt::print(stderr, "tidepool: {}\n", s.message());
    return kExitTidepoolFailed;
  }
  v1::SubmitResponse resp;
  auto ctx = client.Context();
  grpc::Status st;
  bool waited_long = false;
  {
    // No deadline: a frozen server is still there, and will take the request when it runs again.
    UnansweredNote note(client.address());
    st = client.tasks().Submit(ctx.get(), req, &resp);
    note.Answered();
    waited_long = note.told();
  }
  if (st.error_code() == grpc::StatusCode::UNAVAILABLE && waited_long) {
    ReportLostUnanswered(client.address());  // sent long ago on an open connection, now broken
    return kExitTidepoolFailed;
  }
  if (!st.ok()) {
    int rc = client.Fail(st);
    return rc == 1 ? kExitTidepoolFailed : rc;
  }
  fmt::print("{}\n", resp.id());
  std::fflush(stdout);
  if (!o.follow) return 0;
  int rc = FollowTask(client, resp.id(), /*show_output=*/true, /*show_status=*/true);
  if (o.sync && spec->has_workspace()) {
    if (int synced = SyncTask(client, resp.id(), SyncConflicts::kStop); synced != 0 && rc == 0) rc = synced;
  }
  return rc;
}

}  // namespace

void BlockInterrupt() {
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
}

int FollowTask(Client& client, const std::string& id, bool show_output, bool show_status) {
  // Ctrl-C detaches; the task keeps running.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  std::thread([sigs, id] {
    int sig = 0;
    sigwait(&sigs, &sig);
    fmt::print(stderr, "\ndetached from task {}; it keeps running\n", id);
    std::fflush(stdout);
    _exit(130);
  }).detach();

  std::thread logs;
  grpc::Status log_status;
  if (show_output) {
    logs = std::thread([&] {
      v1::StreamLogsRequest req;
      req.set_id(id);
      req.set_follow(true);
      auto ctx = client.Context();
      auto reader = client.tasks().StreamLogs(ctx.get(), req);
      v1::LogChunk chunk;
      while (reader->Read(&chunk)) {
        WriteAll(chunk.stream() == v1::OUTPUT_STREAM_STDERR ? STDERR_FILENO : STDOUT_FILENO, chunk.data());
      }
      log_status = reader->Finish();
    });
  }
  v1::WatchTaskRequest req;
  req.set_id(id);
  auto ctx = client.Context();
  auto reader = client.tasks().WatchTask(ctx.get(), req);
  v1::Task task;
  v1::TaskState last = v1::TASK_STATE_UNSPECIFIED;
  bool final = false;
  while (reader->Read(&task)) {
    if (task.state() != last && show_status) fmt::print(stderr, "task {}: {}\n", id, api::StateName(task.state()));
    last = task.state();
    if (api::IsFinal(task.state())) final = true;
  }
  grpc::Status st = reader->Finish();
  if (logs.joinable()) logs.join();
  if (!final) {
    if (!st.ok()) return client.Fail(st) == 1 ? 1 : kExitTidepoolFailed;
    fmt::print(stderr, "tidepool: lost track of task {}\n", id);
    return kExitTidepoolFailed;
  }
  if (show_status && !task.reason().empty() && task.state() != v1::TASK_STATE_SUCCESS) {
    fmt::print(stderr, "task {}: {}\n", id, task.reason());
  }
  return api::ExitStatusOf(task);
}

void AddBatchCommand(CLI::App& app, int* rc, const std::vector<std::string>* command) {
  auto o = std::make_shared<BatchOpts>();
  CLI::App* sub = app.add_subcommand("batch", "Queue a command (also installed as vbatch); prints the task id");
  sub->add_option("-P,--pool", o->common.pool, "pool or selector (default: the default pool)");
  sub->add_option("-N", o->shards, "run SHARDS shards of the command");
  sub->add_flag("--gang", o->gang, "all shards start together or not at all");
  sub->add_option("--name", o->common.name, "task name (a second one gets _2, _3 ...)");
  sub->add_option("--after", o->after, "start after task T ends, whatever its outcome")->allow_extra_args(false);
  sub->add_option("--after-success", o->after_success, "start after task T succeeds")->allow_extra_args(false);
  sub->add_option("--after-fail", o->after_fail, "start after task T fails")->allow_extra_args(false);
  sub->add_option("--retries", o->retries, "requeue up to K times if the worker is lost");
  sub->add_flag("--retry-on-failure", o->retry_on_failure, "also retry when the command exits non-zero");
  sub->add_flag("--pin", o->pin, "never preempt this task");
  sub->add_option("--timeout", o->common.timeout, "stop the command after this long (e.g. 30s, 5m)");
  sub->add_option("--priority", o->common.priority, "lower runs first (default 0)");
  sub->add_option("-l", o->labels, "label K=V (repeatable)")->allow_extra_args(false);
  sub->add_option("-C", o->common.cwd, "working directory (default: the current one)");
  sub->add_option("-e", o->common.env, "set K=V, or copy $K, in the command's environment (repeatable)")
      ->allow_extra_args(false);
  sub->add_flag("-f,--follow", o->follow, "follow the task: status on stderr, output, and its exit status");
  sub->add_flag("--sync", o->sync, "follow, then bring the task's workspace changes back (tidepool task sync)");
  AddClientOptions(sub, &o->client);
  sub->footer("Usage: vbatch [OPTIONS] [--] COMMAND [ARG...]");
  sub->callback([o, rc, command] { *rc = Submit(*o, *command); });
}

}  // namespace tidepool::cli
