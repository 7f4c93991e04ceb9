// The command tree of `tidepool` (and its `vrun`/`vbatch` links). Each Add* registers one
// subcommand; its handler's exit status lands in *rc.
#pragma once

#include <signal.h>

#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace tidepool::cli {

// run and batch take the command to run from *command, which Main fills (see SplitCommand).
void AddRunCommand(CLI::App& app, int* rc, const std::vector<std::string>* command);    // run (vrun)
void AddBatchCommand(CLI::App& app, int* rc, const std::vector<std::string>* command);  // batch (vbatch)
void AddTaskCommands(CLI::App& app, int* rc);    // task list|get|logs|watch|wait|cancel
void AddPoolCommands(CLI::App& app, int* rc);    // pool list|get|join-token, worker list|drain|delete, worker-token
void AddAdminCommands(CLI::App& app, int* rc);   // server, up, down, agent, config validate, admin
void AddAdminStoreCommands(CLI::App& app, int* rc);  // admin check (admin_check.cc)

// The signals vrun forwards (and SIGWINCH).
sigset_t ForwardedSignals();

// Follows a task to its end like `vbatch -f`: status lines on stderr, output on stdout/stderr.
// Returns the task's exit status (api::ExitStatusOf) or 255 if the server is lost. Ctrl-C
// detaches; the caller must have called BlockInterrupt() before creating its Client.
void BlockInterrupt();
class Client;
int FollowTask(Client& client, const std::string& id, bool show_output, bool show_status);

// `tidepool task sync ID`: brings a finished task's workspace changes (a group's: every shard's)
// into the caller's tree (task_sync.cc). 0 when all came back; 1 with conflicts (nothing of them
// changed; `on_conflict` kTheirs/kOurs settles them) or nothing to bring; 255 when it failed.
enum class SyncConflicts { kStop, kTheirs, kOurs };
int SyncTask(Client& client, const std::string& id, SyncConflicts on_conflict);
void AddTaskSync(CLI::App* task, int* rc);

// The entry point: dispatches vrun/vbatch by argv[0].
int Main(int argc, char** argv);

}  // namespace tidepool::cli
