// The machine's ceiling for P3: how many `true` processes per second this machine can start and
// reap when nothing else runs, through the agent's own spawn path (common/process.h) or glibc's
// posix_spawn. A scheduler that cost nothing could complete trivial tasks no faster than this.
//
//   spawn_ceiling [--threads N] [--seconds S] [--posix] [-- PROGRAM ARGS...]   (default: 16, 5, true)
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "common/process.h"

extern char** environ;

int main(int argc, char** argv) {
  int threads = 16;
  double seconds = 5;
  bool posix = false;
  std::vector<std::string> program = {"true"};
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc) {
      threads = std::atoi(argv[++i]);
    } else if (a == "--seconds" && i + 1 < argc) {
      seconds = std::atof(argv[++i]);
    } else if (a == "--posix") {
      posix = true;
    } else if (a == "--") {
      program.assign(argv + i + 1, argv + argc);
      break;
    } else {
      std::fprintf(stderr, "spawn_ceiling: unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  if (threads < 1 || seconds <= 0 || program.empty()) {
    std::fprintf(stderr, "spawn_ceiling: need --threads >= 1, --seconds > 0 and a program\n");
    return 2;
  }

  tidepool::SpawnOptions options;
  options.argv = program;
  options.env = tidepool::CurrentEnvironment();
  options.die_with_parent = true;  // as the agent spawns tasks
  std::vector<char*> cargv;
  for (auto& s : program) cargv.push_back(s.data());
  cargv.push_back(nullptr);

  std::atomic<bool> stop{false};
  std::atomic<long> done{0}, failed{0};
  auto worker = [&] {
    while (!stop.load(std::memory_order_relaxed)) {
      pid_t pid = -1;
      if (posix) {
        if (posix_spawnp(&pid, cargv[0], nullptr, nullptr, cargv.data(), environ) != 0) pid = -1;
      } else {
        pid = tidepool::Spawn(options).pid;
      }
      int status = 0;
      if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        failed++;
        continue;
      }
      done++;
    }
  };
  auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> pool;
  for (int i = 0; i < threads; i++) pool.emplace_back(worker);
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& t : pool) t.join();
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("spawn ceiling (%s, %d threads, %s): %ld processes in %.2f s = %.1f/s, %ld failed\n",
              posix ? "posix_spawn" : "agent's Spawn", threads, program[0].c_str(), done.load(), elapsed,
              done.load() / elapsed, failed.load());
  return failed.load() == 0 && done.load() > 0 ? 0 : 1;
}
