// The workspace (../shared/spec/workspace.md) on hosts that do not have the caller's files: real
// OpenSSH hosts in network namespaces, each in a mount namespace of its own whose /tmp is its own
// (ssh_hosts.h), so the caller's tree under /tmp exists there only if Tidepool brought it.
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <httplib.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "harness.h"
#include "netns.h"
#include "ssh_hosts.h"
#include "workspace_helpers.h"

namespace tidepool::testing {
namespace {

TEST(Workspace, VrunRunsInTheCallersGitTreeOnAnotherHostAndBringsItsChangesBack) {
  SSH_HOSTS_OR_SKIP(net, hosts, 1);
  Server server(WithMetrics(SshPool(net, hosts, hosts.known_hosts(), 1)), {}, net.server_ip() + ":0");
  CallerDir caller;
  const std::string proj = caller.path() + "/proj";
  MakeProject(proj);
  ASSERT_FALSE(fs::exists(hosts.Disk(0) + proj));  // the host does not have it to begin with

  // From a sub-folder: the workspace is the whole work tree, .git included.
  ProcResult r = ClientIn(server, proj + "/src", "vrun",
                          {"sh", "-c",
                           "pwd; git status --porcelain; echo status-done; git log --oneline | wc -l; "
                           "test -x ../run.sh && echo executable; readlink ../link; readlink ../dangling; "
                           "cat ../caf\xe9.txt; wc -c < ../empty; ls ../ignored 2>/dev/null | wc -l; "
                           "echo made > ../result.txt; rm ../empty; echo more >> a.txt; head -c 100 ../data.bin > ../head.bin"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << server.ServerLog();
  std::vector<std::string> out = Lines(r.out);
  ASSERT_EQ(out.size(), 9u) << r.out;
  EXPECT_EQ(out[0], proj + "/src");
  EXPECT_EQ(out[1], "status-done") << "git status on the worker is not clean: " << r.out;
  EXPECT_EQ(out[2], "1");
  EXPECT_EQ(out[3], "executable");
  EXPECT_EQ(out[4], "train.py");
  EXPECT_EQ(out[5], "nowhere");
  EXPECT_EQ(out[6], "latin-1 name");
  EXPECT_EQ(out[7], "0");
  EXPECT_EQ(out[8], "0") << "the ignored folder was sent";
  // The host holds the same bytes at the same path.
  EXPECT_EQ(ReadAll(hosts.Disk(0) + proj + "/data.bin"), ReadAll(proj + "/data.bin"));
  EXPECT_FALSE(fs::exists(hosts.Disk(0) + proj + "/ignored/big.txt"));

  // Its changes are in the caller's tree when vrun has exited.
  EXPECT_EQ(ReadAll(proj + "/result.txt"), "made\n");
  EXPECT_FALSE(fs::exists(proj + "/empty"));
  EXPECT_EQ(ReadAll(proj + "/src/a.txt"), "a\nmore\n");
  EXPECT_EQ(ReadAll(proj + "/head.bin"), ReadAll(proj + "/data.bin").substr(0, 100));
  EXPECT_EQ(ReadAll(proj + "/ignored/big.txt"), "not sent\n");  // untouched
  EXPECT_GT(WorkspaceBytes(server, "received", "client"), 3 << 20);

  // A second vrun in the unchanged tree sends nothing, and the host fetches nothing.
  double up = WorkspaceBytes(server, "received", "client");
  double down = WorkspaceBytes(server, "sent", "agent");
  ProcResult again = ClientIn(server, proj, "vrun", {"cat", "result.txt"});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(again.out, "made\n");
  EXPECT_EQ(again.err.find("syncing workspace"), std::string::npos) << again.err;
  EXPECT_EQ(WorkspaceBytes(server, "received", "client"), up);
  EXPECT_EQ(WorkspaceBytes(server, "sent", "agent"), down);

  // One changed file: only it travels.
  WriteAll(proj + "/train.py", "print('changed')\n");
  ProcResult changed = ClientIn(server, proj, "vrun", {"cat", "train.py"});
  ASSERT_EQ(changed.exit_code, 0) << changed.err;
  EXPECT_EQ(changed.out, "print('changed')\n");
  double sent = WorkspaceBytes(server, "received", "client") - up;
  EXPECT_GT(sent, 0);
  EXPECT_LT(sent, 64 * 1024) << "more than the changed file and the manifest travelled";
}

TEST(Workspace, ABatchTaskChangesComeBackOnSyncAndACallersEditIsAConflict) {
  SSH_HOSTS_OR_SKIP(net, hosts, 1);
  Server server(SshPool(net, hosts, hosts.known_hosts(), 1), {}, net.server_ip() + ":0");
  CallerDir caller;
  const std::string proj = caller.path() + "/proj";
  fs::create_directories(proj);
  WriteAll(proj + "/notes.txt", "v1\n");
  WriteAll(proj + "/keep.txt", "keep\n");
  ProcResult b = ClientIn(server, proj, "vbatch",
                          {"sh", "-c", "echo task > notes.txt; echo out > out.txt; rm keep.txt"});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  std::string id = Lines(b.out)[0];
  EXPECT_EQ(server.WaitTask(id)["state"], "SUCCESS") << server.ServerLog();
  // Nothing comes back by itself; meanwhile the caller edits a file the task changed too.
  EXPECT_FALSE(fs::exists(proj + "/out.txt"));
  WriteAll(proj + "/notes.txt", "mine\n");
  ProcResult sync = ClientIn(server, proj, "tidepool", {"task", "sync", id});
  EXPECT_EQ(sync.exit_code, 1) << sync.out << sync.err;
  EXPECT_NE(sync.err.find("notes.txt"), std::string::npos) << sync.err;
  EXPECT_NE(sync.err.find("--theirs"), std::string::npos) << sync.err;
  // Stopped: nothing at all changed.
  EXPECT_EQ(ReadAll(proj + "/notes.txt"), "mine\n");
  EXPECT_FALSE(fs::exists(proj + "/out.txt"));
  EXPECT_TRUE(fs::exists(proj + "/keep.txt"));
  // --ours keeps the edit and takes the rest.
  ProcResult ours = ClientIn(server, proj, "tidepool", {"task", "sync", id, "--ours"});
  EXPECT_EQ(ours.exit_code, 0) << ours.err;
  EXPECT_EQ(ReadAll(proj + "/notes.txt"), "mine\n");
  EXPECT_EQ(ReadAll(proj + "/out.txt"), "out\n");
  EXPECT_FALSE(fs::exists(proj + "/keep.txt"));
  // --theirs takes the task's version.
  ProcResult theirs = ClientIn(server, proj, "tidepool", {"task", "sync", id, "--theirs"});
  EXPECT_EQ(theirs.exit_code, 0) << theirs.err;
  EXPECT_EQ(ReadAll(proj + "/notes.txt"), "task\n");
}

TEST(Workspace, EachShardBringsItsOwnOutputBackAndTwoWritingOneFileConflict) {
  SSH_HOSTS_OR_SKIP(net, hosts, 2);
  Server server(SshPool(net, hosts, hosts.known_hosts(), 2), {}, net.server_ip() + ":0");
  CallerDir caller;
  const std::string proj = caller.path() + "/proj";
  fs::create_directories(proj);
  WriteAll(proj + "/input.txt", "in\n");
  ProcResult b = ClientIn(server, proj, "vbatch",
                          {"-N", "2", "--gang", "--sync", "sh", "-c",
                           "cat input.txt > out-$TIDEPOOL_SHARD_ID.txt; hostname -I >> out-$TIDEPOOL_SHARD_ID.txt; "
                           "echo $TIDEPOOL_SHARD_ID > same.txt"});
  std::string id = Lines(b.out).empty() ? "" : Lines(b.out)[0];
  EXPECT_EQ(b.exit_code, 1) << b.out << b.err << server.Task(id + "/0").dump() << server.Task(id + "/1").dump();
  EXPECT_NE(b.err.find("same.txt (changed by two shards)"), std::string::npos)
      << b.err << server.Task(id + "/0").dump() << server.Task(id + "/1").dump();
  for (int shard = 0; shard < 2; ++shard) {
    std::string out = ReadAll(proj + "/out-" + std::to_string(shard) + ".txt");
    EXPECT_EQ(out.rfind("in\n", 0), 0u) << out;
  }
  // Each ran on its own host (a gang of two on two one-slot hosts).
  EXPECT_NE(ReadAll(proj + "/out-0.txt"), ReadAll(proj + "/out-1.txt"));
  EXPECT_FALSE(fs::exists(proj + "/same.txt"));
}

// The largest partial upload in the server's stores, in bytes (0 if none).
uint64_t LargestPartial(const Server& server) {
  uint64_t most = 0;
  std::error_code ec;
  for (const auto& e : fs::recursive_directory_iterator(server.data_dir() + "/workspace", ec)) {
    if (e.path().parent_path().filename() == "partial" && e.is_regular_file(ec)) most = std::max<uint64_t>(most, e.file_size(ec));
  }
  return most;
}

TEST(Workspace, AnUploadCutOffByAServerRestartGoesOnFromWhatTheServerHas) {
  SSH_HOSTS_OR_SKIP(net, hosts, 1);
  Server server(WithMetrics(SshPool(net, hosts, hosts.known_hosts(), 1)), {}, net.server_ip() + ":0");
  CallerDir caller;
  const std::string proj = caller.path() + "/proj";
  fs::create_directories(proj);
  const uint64_t size = 256u << 20;
  ASSERT_EQ(RunProcess({"sh", "-c", "head -c " + std::to_string(size) + " /dev/urandom > big.bin"}, {}, proj).exit_code, 0);
  std::string want = Lines(RunProcess({"sha256sum", "big.bin"}, {}, proj).out)[0].substr(0, 64);
  auto env = server.ClientEnv();
  env["HOME"] = server.dir();
  Background vrun({BinDir() + "/vrun", "sha256sum", "big.bin"}, env, proj);
  // Mid-upload (a quarter or less arrived), the server is killed and started again.
  ASSERT_TRUE(WaitFor([&] { return LargestPartial(server) >= (16u << 20); }, 120s)) << vrun.Stderr();
  uint64_t had = LargestPartial(server);
  ASSERT_LT(had, size) << "the upload ended before the server was killed";
  server.Kill();
  server.Start();
  ProcResult r = vrun.Wait(300s);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << server.ServerLog();
  EXPECT_EQ(r.out.substr(0, 64), want);  // the host has every byte, as they were
  EXPECT_NE(r.err.find("cut off"), std::string::npos) << r.err;
  // The restarted server received only what the first one had not stored.
  double after = WorkspaceBytes(server, "received", "client");
  EXPECT_GT(after, 0);
  EXPECT_LE(after, static_cast<double>(size - had) + (1 << 20)) << "had " << had;
}

TEST(Workspace, ATooLargeWorkspaceIsRefusedBeforeAnythingIsSent) {
  SSH_HOSTS_OR_SKIP(net, hosts, 1);
  Server server(WithMetrics(SshPool(net, hosts, hosts.known_hosts(), 1) + "    workspace:\n      max_bytes: 1MiB\n"), {},
                net.server_ip() + ":0");
  CallerDir caller;
  const std::string proj = caller.path() + "/proj";
  fs::create_directories(proj + "/data");
  WriteAll(proj + "/data/big.bin", RandomBytes(2 << 20, 3));
  WriteAll(proj + "/small.txt", "small\n");
  ProcResult r = ClientIn(server, proj, "vrun", {"true"});
  EXPECT_EQ(r.exit_code, 255) << r.err;
  EXPECT_NE(r.err.find("workspace too large"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("max_bytes"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("data/"), std::string::npos) << r.err;  // the largest folder is named
  EXPECT_EQ(WorkspaceBytes(server, "received", "client"), 0);
  EXPECT_EQ(server.Workers("hosts"), 0);
}

TEST(Workspace, APoolThatSharesFilesSyncsNothingAndRunsWhereTheCallerIs) {
  SSH_HOSTS_OR_SKIP(net, hosts, 1);
  Server server(WithMetrics(SshPool(net, hosts, hosts.known_hosts(), 1) + "    workspace:\n      mode: none\n"), {},
                net.server_ip() + ":0");
  CallerDir caller;
  fs::create_directories(caller.path() + "/proj");
  WriteAll(caller.path() + "/proj/f.txt", "f\n");
  // mode none: the task starts in the worker's own directory of that path, which it does not have.
  ProcResult r = ClientIn(server, caller.path() + "/proj", "vrun", {"sh", "-c", "cat f.txt"});
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_EQ(WorkspaceBytes(server, "received", "client"), 0);
}

// What the pool adds and leaves out, on a tree of 10,000 files: an `extra` folder outside the
// workspace (a virtualenv) arrives at its own path; with `gitignore: true` the .gitignore'd
// build folder stays behind; every file arrives with its bytes.
TEST(Workspace, ExtraPathsGitignoreAndATenThousandFileTreeArriveAsTheyAre) {
  SSH_HOSTS_OR_SKIP(net, hosts, 1);
  CallerDir caller;
  const std::string proj = caller.path() + "/proj", venv = caller.path() + "/venv";
  fs::create_directories(venv + "/bin");
  WriteAll(venv + "/bin/python", "#!/bin/sh\necho venv-python \"$@\"\n");
  ::chmod((venv + "/bin/python").c_str(), 0755);
  fs::create_directories(proj + "/build");
  WriteAll(proj + "/build/out.o", RandomBytes(1 << 20, 5));
  WriteAll(proj + "/.gitignore", "build/\n*.log\n");
  WriteAll(proj + "/run.log", "log\n");
  for (int d = 0; d < 100; ++d) {
    std::string dir = proj + "/many/d" + std::to_string(d);
    fs::create_directories(dir);
    for (int f = 0; f < 100; ++f) WriteAll(dir + "/f" + std::to_string(f), std::to_string(d * 100 + f) + "\n");
  }
  Server server(WithMetrics(SshPool(net, hosts, hosts.known_hosts(), 1) + "    workspace:\n      extra: [\"" + venv +
                            "\"]\n      gitignore: true\n"),
                {}, net.server_ip() + ":0");
  ProcResult r = ClientIn(server, proj, "vrun",
                          {"sh", "-c",
                           "find many -type f | wc -l; cat many/d73/f37; " + venv +
                               "/bin/python ok; ls build run.log 2>/dev/null | wc -l; cat many/*/* | sort -n | md5sum"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << server.ServerLog();
  std::vector<std::string> out = Lines(r.out);
  ASSERT_EQ(out.size(), 5u) << r.out;
  EXPECT_EQ(out[0], "10000");
  EXPECT_EQ(out[1], "7337");
  EXPECT_EQ(out[2], "venv-python ok");
  EXPECT_EQ(out[3], "0") << "gitignored paths were sent";
  ProcResult local = RunProcess({"sh", "-c", "cat many/*/* | sort -n | md5sum"}, {{"PATH", "/usr/bin:/bin"}}, proj);
  EXPECT_EQ(out[4], Lines(local.out).at(0));
  EXPECT_FALSE(fs::exists(hosts.Disk(0) + proj + "/build"));
  EXPECT_TRUE(fs::exists(hosts.Disk(0) + venv + "/bin/python"));
  EXPECT_LT(WorkspaceBytes(server, "received", "client"), 1 << 20) << "the 1 MiB ignored build output was sent";
}

// The agent does not walk a root it made again while its watch (inotify) vouches nothing changed
// there; what someone else changes on the worker between two tasks is seen all the same and put
// back as the caller has it. One changed file of a 2,000-file tree travels as a manifest delta.
TEST(Workspace, EditsOnTheWorkerBetweenTasksArePutBackAndOneChangedFileSendsADelta) {
  SSH_HOSTS_OR_SKIP(net, hosts, 1);
  CallerDir caller;
  const std::string proj = caller.path() + "/proj";
  for (int d = 0; d < 20; ++d) {
    std::string dir = proj + "/d" + std::to_string(d);
    fs::create_directories(dir);
    for (int f = 0; f < 100; ++f) WriteAll(dir + "/f" + std::to_string(f), std::to_string(d * 100 + f) + "\n");
  }
  Server server(WithMetrics(SshPool(net, hosts, hosts.known_hosts(), 1)), {}, net.server_ip() + ":0");
  const std::string cmd = "cat d3/f4 d5/f6; ls d7 | wc -l; ls d8 | wc -l; test -e d9/extra && echo extra; true";
  ProcResult first = ClientIn(server, proj, "vrun", {"sh", "-c", cmd});
  ASSERT_EQ(first.exit_code, 0) << first.out << first.err << server.ServerLog();
  EXPECT_EQ(first.out, "304\n506\n100\n100\n");

  // Behind the agent's back, on the host: a file edited, one deleted, a folder emptied, one added.
  const std::string there = hosts.Disk(0) + proj;
  WriteAll(there + "/d3/f4", "edited on the worker\n");
  fs::remove(there + "/d5/f6");
  fs::remove_all(there + "/d7");
  WriteAll(there + "/d9/extra", "added on the worker\n");
  ProcResult again = ClientIn(server, proj, "vrun", {"sh", "-c", cmd});
  ASSERT_EQ(again.exit_code, 0) << again.out << again.err;
  EXPECT_EQ(again.out, "304\n506\n100\n100\n") << "the worker's edits were not undone";
  EXPECT_EQ(again.err.find("syncing workspace"), std::string::npos) << "the caller's tree did not change";
  EXPECT_FALSE(fs::exists(proj + "/d9/extra")) << "an edit on the worker came back as the task's";

  // One file changed on the caller's side: it and a delta of the manifest travel, not the
  // manifest of 2,000 entries (~190 kB).
  const double up = WorkspaceBytes(server, "received", "client");
  WriteAll(proj + "/d8/f8", "changed by the caller\n");
  ProcResult changed = ClientIn(server, proj, "vrun", {"sh", "-c", "cat d8/f8; echo out > d8/new"});
  ASSERT_EQ(changed.exit_code, 0) << changed.out << changed.err;
  EXPECT_EQ(changed.out, "changed by the caller\n");
  EXPECT_NE(changed.err.find("syncing workspace: 1 file,"), std::string::npos) << changed.err;
  const double sent = WorkspaceBytes(server, "received", "client") - up;
  EXPECT_GT(sent, 0);
  EXPECT_LT(sent, 8 * 1024) << "the whole manifest travelled";
  EXPECT_EQ(ReadAll(proj + "/d8/new"), "out\n");  // what the task wrote after it came back

  // The full client's copy of the base damaged (the workspace daemon keeps its own in memory; it
  // is kept out of this run): the server refuses the delta, and the whole goes.
  int saved = 0;
  for (const auto& e : fs::directory_iterator(server.dir() + "/.cache/tidepool")) {
    if (e.path().filename().string().rfind("manifest-", 0) != 0) continue;
    std::string text = ReadAll(e.path().string());
    WriteAll(e.path().string(), text.substr(0, 65) + "damaged" + text.substr(72));
    ++saved;
  }
  EXPECT_EQ(saved, 1);
  WriteAll(proj + "/d9/f9", "changed again\n");
  ProcResult whole = ClientIn(server, proj, "vrun", {"cat", "d9/f9"}, {{"TIDEPOOL_WORKSPACE_DAEMON", "0"}});
  ASSERT_EQ(whole.exit_code, 0) << whole.out << whole.err;
  EXPECT_EQ(whole.out, "changed again\n");
}

// A task cancelled while the worker is still fetching its workspace never starts and leaves no
// partial tree; the next task on that worker goes on from what the first fetch left in its cache.
// The link to the host is slowed to 32 Mbit/s: the agent fetches at most 16 MiB per request, so
// the cancel (queued on the link behind the first 16 MiB of the 40) reaches it mid-fetch.
TEST(Workspace, ATaskCancelledWhileItsWorkspaceIsFetchedNeverStartsAndTheFetchResumesLater) {
  SSH_HOSTS_OR_SKIP(net, hosts, 1);
  CallerDir caller;
  const std::string proj = caller.path() + "/proj";
  fs::create_directories(proj);
  const std::string big = RandomBytes(40 << 20, 11);
  WriteAll(proj + "/big.bin", big);
  WriteAll(proj + "/small.txt", "small\n");
  Server server(WithMetrics(SshPool(net, hosts, hosts.known_hosts(), 1)), {}, net.server_ip() + ":0");
  ASSERT_EQ(ClientIn(server, "/", "vrun", {"true"}).exit_code, 0);  // the worker is up
  const std::map<std::string, std::string> path = {{"PATH", "/usr/sbin:/sbin:/usr/bin:/bin"}};
  ProcResult tc = RunProcess(
      {"tc", "qdisc", "add", "dev", net.link(0), "root", "tbf", "rate", "32mbit", "burst", "64kb", "latency", "30s"}, path, "/");
  ASSERT_EQ(tc.exit_code, 0) << tc.err;

  ProcResult b = ClientIn(server, proj, "vbatch", {"sh", "-c", "touch /root/task-ran"});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  const std::string id = Lines(b.out).at(0);
  ASSERT_TRUE(WaitFor([&] { return WorkspaceBytes(server, "sent", "agent") > 0; })) << server.ServerLog();
  EXPECT_EQ(server.Tidepool({"task", "cancel", id}).exit_code, 0);
  nlohmann::json t = server.WaitTask(id);
  EXPECT_EQ(t["state"], "CANCELLED") << t.dump();
  EXPECT_FALSE(fs::exists(hosts.Disk(0) + "/root/task-ran")) << "the task started";
  EXPECT_FALSE(fs::exists(hosts.Disk(0) + proj + "/big.bin")) << "a partial tree was left on the worker";
  EXPECT_FALSE(fs::exists(hosts.Disk(0) + proj + "/small.txt")) << "a partial tree was left on the worker";

  (void)RunProcess({"tc", "qdisc", "del", "dev", net.link(0), "root"}, path, "/");
  const double sent_before = WorkspaceBytes(server, "sent", "agent");
  ProcResult r = ClientIn(server, proj, "vrun", {"sh", "-c", "cat small.txt; md5sum < big.bin"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << server.ServerLog();
  ProcResult local = RunProcess({"sh", "-c", "md5sum < big.bin"}, {{"PATH", "/usr/bin:/bin"}}, proj);
  EXPECT_EQ(r.out, "small\n" + local.out);
  // The second fetch went on from what the first left in the worker's cache.
  EXPECT_LT(WorkspaceBytes(server, "sent", "agent") - sent_before, big.size() - (8 << 20));
}

// An agent that runs each owner's tasks as a Unix user of their own (a root agent, auth on) makes
// the workspace with that user's rights alone. Where the owner may write (a new folder in the
// host's /tmp), the files are the task user's and the task's changes come back; where the owner
// may not (a folder of root's, 0755, on the host), the task fails naming the path, and the agent,
// which could have written there, made nothing.
TEST(Workspace, AnIsolatingAgentMakesTheWorkspaceWithTheOwnersRightsAlone) {
  SSH_HOSTS_OR_SKIP(net, hosts, 1);
  CallerDir caller;
  const std::string users = caller.path() + "/users.yaml";
  WriteAll(users, "users:\n  - { name: alice, token: alice-token-0123456789, roles: { \"*\": submit } }\n");
  ASSERT_EQ(::chmod((hosts.Disk(0) + "/tmp").c_str(), 01777), 0);  // as a host's /tmp is
  Server server("server:\n  metrics_listen: \"127.0.0.1:0\"\n  auth: { users_file: " + users + " }\n" +
                    SshPool(net, hosts, hosts.known_hosts(), 1),
                {}, net.server_ip() + ":0");
  auto as_alice = [&](const std::string& cwd, const std::vector<std::string>& args) {
    std::vector<std::string> argv = {BinDir() + "/vrun"};
    argv.insert(argv.end(), args.begin(), args.end());
    auto env = server.ClientEnv();
    env["HOME"] = server.dir();
    env["TIDEPOOL_TOKEN"] = "alice-token-0123456789";
    return RunProcess(argv, env, cwd);
  };

  const std::string proj = caller.path() + "/proj";
  fs::create_directories(proj + "/src");
  WriteAll(proj + "/src/train.py", "print('hi')\n");
  ProcResult r = as_alice(proj, {"sh", "-c", "id -u; stat -c %u src/train.py; echo out > out.txt"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << server.ServerLog();
  std::vector<std::string> out = Lines(r.out);
  ASSERT_EQ(out.size(), 2u) << r.out;
  EXPECT_NE(out[0], "0") << "the task ran as root";
  EXPECT_EQ(out[1], out[0]) << "the workspace's files are not the task user's";
  EXPECT_EQ(ReadAll(proj + "/out.txt"), "out\n");  // its change came back
  struct stat st;
  ASSERT_EQ(::stat((hosts.Disk(0) + proj + "/src/train.py").c_str(), &st), 0);
  EXPECT_EQ(std::to_string(st.st_uid), out[0]);

  // A tree whose path on the host is under a folder of root's that the owner cannot write.
  const std::string locked = "/tmp/tidepool-locked-" + std::to_string(::getpid());
  ASSERT_EQ(::mkdir((hosts.Disk(0) + locked).c_str(), 0755), 0);
  fs::create_directories(locked + "/proj");
  WriteAll(locked + "/proj/f.txt", "f\n");
  ProcResult denied = as_alice(locked + "/proj", {"sh", "-c", "echo ran"});
  fs::remove_all(locked);
  EXPECT_NE(denied.exit_code, 0) << denied.out;
  EXPECT_EQ(denied.out.find("ran"), std::string::npos) << "the task started";
  EXPECT_NE(denied.err.find("Permission denied"), std::string::npos) << denied.err;
  EXPECT_NE(denied.err.find(locked + "/proj"), std::string::npos) << denied.err;
  EXPECT_FALSE(fs::exists(hosts.Disk(0) + locked + "/proj")) << "the agent wrote where its task's user may not";
}

// The worker's disk fills up while the workspace is made there: the task does not start, and the
// error names the file and the cause. Nothing is lost on the caller's side.
TEST(Workspace, AFullDiskOnTheWorkerFailsTheTaskBeforeItStartsNamingTheFile) {
  SSH_HOSTS_OR_SKIP(net, hosts, 1);
  CallerDir caller;
  const std::string proj = caller.path() + "/proj";
  fs::create_directories(proj);
  WriteAll(proj + "/small.txt", "small\n");
  WriteAll(proj + "/weights.bin", RandomBytes(3 << 20, 9));
  // On the host, the project's path is a 1 MiB file system.
  ProcResult m = hosts.Run(0, "mkdir -p '" + proj + "' && mount -t tmpfs -o size=1m tmpfs '" + proj + "'");
  ASSERT_EQ(m.exit_code, 0) << m.err;
  Server server(WithMetrics(SshPool(net, hosts, hosts.known_hosts(), 1)), {}, net.server_ip() + ":0");
  ProcResult r = ClientIn(server, proj, "vrun", {"sh", "-c", "touch /root/task-ran"});
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_NE(r.err.find("weights.bin"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("No space left on device"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(hosts.Disk(0) + "/root/task-ran")) << "the task started on a partial workspace";
  EXPECT_EQ(ReadAll(proj + "/weights.bin"), RandomBytes(3 << 20, 9));  // the caller's tree is untouched
  EXPECT_EQ(ReadAll(proj + "/small.txt"), "small\n");
  (void)hosts.Run(0, "umount '" + proj + "'");
}

}  // namespace
}  // namespace tidepool::testing
