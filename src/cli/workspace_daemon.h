// The workspace daemon: one process per user and cache home that keeps the caller's workspaces
// watched, so that a `vrun` in a tree that did not change need not walk it (spec P12: an
// unchanged tree adds < 50 ms; a walk of 10,000 files alone takes ~40 ms) and the small C `vrun`
// (fastclient/vrun_lite.c) need not hand over to this full client (90 libraries, ~45 ms to start).
// As git's fsmonitor daemon does for `git status`.
//
// Life: the full client starts it (StartWorkspaceDaemon) after it has brought a workspace, naming
// that tree, which the daemon watches (workspace/root_watch.h) and then scans once. It serves until
// it has had no request for 15 minutes, its cache home is gone, or its program was replaced.
// TIDEPOOL_WORKSPACE_DAEMON=0 keeps clients from starting or asking one.
//
// Where: the abstract unix socket WorkspaceDaemonName() (no file to leave behind). Anyone on the
// machine could connect to or squat such a name, so each end checks the other's uid
// (SO_PEERCRED): the daemon answers only its own user, and the client asks only a daemon of its own.
//
// What: one request per connection, one line of JSON; answers are JSON lines, any number of
// {"say": LINE} (for the caller's stderr) and then one with "done": true.
//   {"v":1,"op":"prepare","server":S,"token":T,"pool":P,"cwd":DIR,"batch":B,"quiet":B}
//     -> {"done":true,"manifest":HASH,"files":N,"bytes":N}  the server has it: send the task with it
//      | {"done":true,"none":true}                           DIR is in no project: nothing to bring
//      | {"done":true,"error":MESSAGE}                       the workspace cannot go (too large, unreadable...)
//      | {"done":true,"fallback":WHY}                        ask the full client (anything unusual)
//   {"v":1,"op":"bring_back","server":S,"token":T,"base":HASH,"result":HASH,"task":ID}
//     -> says what was not brought back (conflicts, or why), then {"done":true}
// The token travels only over this socket, to a process of the same user; it is never logged.
// Requests are served one at a time. The C vrun and vbatch ask it (fastclient/lite_daemon.c).
#pragma once

#include <string>

#include <CLI/CLI.hpp>

namespace tidepool::cli {

// "tidepool-workspace-UID-HASH" (HASH: FNV-1a 64 of CacheHome(), hex); the lite client's
// lite_daemon_name computes the same. The socket's name is this after a NUL byte.
std::string WorkspaceDaemonName();

// Unless TIDEPOOL_WORKSPACE_DAEMON=0 or a daemon answers already: starts one, detached from this
// process (its stderr appends to CacheHome()/workspace-daemon.log), which begins with a prepare
// of `cwd` for `pool` on `client`'s server: it watches and scans that tree and dials the server.
// The token goes in its environment, never on its command line.
class Client;
void StartWorkspaceDaemon(const Client& client, const std::string& pool, const std::string& cwd);

// `tidepool workspace-daemon [--server S --pool P --cwd DIR]` (hidden; the token from
// $TIDEPOOL_TOKEN, as every client).
void AddWorkspaceDaemonCommand(CLI::App& app, int* rc);

}  // namespace tidepool::cli
