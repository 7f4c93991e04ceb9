// `command` (Velda-compatible): workers are whatever the operator's scripts make.
//
//   command:
//     start: "…"          # stdout (trimmed, last non-empty line) = worker name; "" = named later
//     stop: "… $1"        # $1 and WORKER_NAME = the worker name
//     list: "…"           # one worker per line: NAME [STATUS [anything]]
//     batch_start: "…"    # $1 = count, $2 = label; one name per line, exactly count of them
//     timeout: 300000     # per call, milliseconds (the config layer turns "5m" into this)
//
// Every call runs one script: `bash -s -- ARGS...` with the script text on stdin (Velda's way),
// in a new session so that its whole process group can be killed. Its environment is the
// server's (minus any stale TIDEPOOL_* / WORKER_NAME) plus
//   TIDEPOOL_SERVER, TIDEPOOL_POOL, TIDEPOOL_SLOTS       always;
//   WORKER_NAME                                          for stop;
//   TIDEPOOL_WORKER_TOKEN_FOR, TIDEPOOL_DATA_DIR         for start and batch_start, where
//     `$TIDEPOOL_WORKER_TOKEN_FOR NAME` prints the token a worker called NAME must present.
//
// Because the script is bash's stdin, a command in it that reads stdin (`ssh` without -n, say)
// swallows the rest of the script: give such commands `-n` or `< /dev/null`.
//
// Exit status 0 is success. Anything else fails the call with
//   "<op> failed (exit N): <last lines of stderr>"   (or "… killed by signal SIGX …").
// The failure's class (backend.h) is the script's to say, by the first word of the last line of
// its stderr: `out_of_capacity:`, `quota:`, `auth:`, `bad_request:` or `transient:` (the line
// stays in the message). Without one a failure is transient, as Velda's scripts' are.
// stdout is read until bash exits, not until EOF: a start script that leaves its agent running
// in the background (and holding the pipe) still returns at once. A call that outlives
// `timeout` (or the pool's deadline, if sooner) has its process group SIGKILLed and fails with
// DeadlineExceeded (transient). Scripts run through the toolkit's runner (toolkit/subprocess.h).
//
// List: a line's second field (any case) is its state: stopped, terminated or suspended =
// stopped; terminating = stopping (neither is a worker, as backends.md says: such lines are not
// listed at all); pending, starting, provisioning or booting = pending; anything else, or none,
// = running (Velda's scripts print what they like there).
// Blank lines are ignored. Each entry carries its whole line: the pool checks the names (start's
// answer too) and refuses what is not a worker name (autoscaler/answers.h).
//
// Delete of a worker whose start is still running: the backend cannot know which worker a running
// start will make, so the scripts keep the contract themselves, e.g. start holds a per-worker
// `flock` until it prints the name and stop takes it first (tests/conformance/command_conformance.cc).
//
// Abandon() (the server is stopping) SIGKILLs the process group of every script running and
// makes every later call fail at once without running anything.
//
// Thread-safe: the object is immutable after Make except for the set of running scripts (its own
// lock); calls may run concurrently.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "backends/backend.h"
#include "backends/toolkit/subprocess.h"

namespace tidepool::backends {

class CommandBackend final : public Backend {
 public:
  static Result<std::unique_ptr<Backend>> Make(const config::BackendConfig& cfg, const BackendContext& ctx);

  static constexpr std::chrono::milliseconds kDefaultTimeout{300000};
  ~CommandBackend() override;

  Result<std::string> Create(const CreateRequest& request, Deadline deadline) override;
  Status Delete(const std::string& name, Deadline deadline) override;
  Result<std::vector<ListedWorker>> List(Deadline deadline) override;
  std::chrono::milliseconds CallTimeout() const override { return timeout_; }

  bool SupportsBatch() const override { return !batch_start_.empty(); }
  Result<std::vector<std::string>> CreateBatch(const CreateRequest& request, int count,
                                               const std::string& label, Deadline deadline) override;

  std::chrono::milliseconds timeout() const { return timeout_; }

  void Abandon() override;

  // The state a listed line's status word means (see above).
  static WorkerState StateOf(std::string_view status);
  // The class a failed script's stderr claims (see above); transient when it claims none.
  static ErrorClass ClassOfStderr(std::string_view err);

 private:
  CommandBackend(BackendContext ctx, std::string start, std::string stop, std::string list,
                 std::string batch_start, std::chrono::milliseconds timeout);

  // The environment of a script: the server's plus TIDEPOOL_SERVER/POOL/SLOTS.
  std::vector<std::string> BaseEnv(const std::string& server, int slots) const;
  // Adds what start and batch_start need to hand their agents a token.
  void AddTokenEnv(const CreateRequest& req, std::vector<std::string>& env) const;
  // Runs `script` under bash with `args` as $1...; returns its stdout, or the failure.
  Result<std::string> Run(std::string_view op, const std::string& script, const std::vector<std::string>& args,
                          const std::vector<std::string>& env, Deadline deadline) const;

  const BackendContext ctx_;
  const std::string start_, stop_, list_, batch_start_;
  const std::chrono::milliseconds timeout_;
  mutable ProcessGroups running_;  // the scripts running now
};

}  // namespace tidepool::backends
