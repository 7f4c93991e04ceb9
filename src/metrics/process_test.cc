#include "metrics/process.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>

namespace tidepool::metrics {
namespace {

// The value of the unlabelled sample `name` in an exposition.
std::optional<double> Sample(const std::string& text, const std::string& name) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with(name + " ")) return std::strtod(line.c_str() + name.size() + 1, nullptr);
  }
  return std::nullopt;
}

double CpuSecondsOfProcess() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

TEST(ProcessCollector, PlausibleValues) {
  Registry r;
  AddProcessCollector(r);
  std::string text = r.Render();

  for (const char* name : {"process_cpu_seconds_total", "process_resident_memory_bytes",
                           "process_virtual_memory_bytes", "process_open_fds", "process_max_fds",
                           "process_start_time_seconds", "process_threads"}) {
    EXPECT_TRUE(Sample(text, name).has_value()) << name << " missing in:\n" << text;
  }
  EXPECT_NE(text.find("# TYPE process_cpu_seconds_total counter\n"), std::string::npos);
  EXPECT_NE(text.find("# TYPE process_resident_memory_bytes gauge\n"), std::string::npos);

  double rss = Sample(text, "process_resident_memory_bytes").value_or(-1);
  EXPECT_GT(rss, 1 << 20);  // at least a MiB: a linked C++ test binary is bigger than that
  EXPECT_GE(Sample(text, "process_virtual_memory_bytes").value_or(-1), rss);
  EXPECT_GE(Sample(text, "process_cpu_seconds_total").value_or(-1), 0);
  EXPECT_GE(Sample(text, "process_threads").value_or(-1), 1);

  double open = Sample(text, "process_open_fds").value_or(-1);
  EXPECT_GE(open, 3);  // stdin, stdout, stderr at least
  rlimit rl{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
  EXPECT_EQ(Sample(text, "process_max_fds").value_or(-1), static_cast<double>(rl.rlim_cur));
  EXPECT_LE(open, Sample(text, "process_max_fds").value_or(-1));

  double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  double start = Sample(text, "process_start_time_seconds").value_or(-1);
  EXPECT_LE(start, now + 1);
  EXPECT_GT(start, now - 3600) << "started within the last hour";
}

TEST(ProcessCollector, TracksFdsThreadsAndCpu) {
  // A thread started and joined first: under TSan the first pthread_create also starts the
  // sanitizer's own background thread, which must be counted in `before`, not in `after`.
  std::thread([] {}).join();
  Registry r;
  AddProcessCollector(r);
  // join() returns once the thread has run its last instruction, a moment before the kernel
  // drops it from the process's count: read `before` once the count has settled (seen: 2, not 1).
  std::string before = r.Render();
  for (int i = 0; i < 100; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::string again = r.Render();
    bool settled = Sample(again, "process_threads") == Sample(before, "process_threads");
    before = again;
    if (settled) break;
  }

  int fds[2][2];
  ASSERT_EQ(pipe(fds[0]), 0);
  ASSERT_EQ(pipe(fds[1]), 0);

  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  std::thread extra([&] {
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return release; });
  });

  // Burn at least 50 ms of CPU so the tick-granular figure moves.
  double cpu0 = CpuSecondsOfProcess();
  volatile double sink = 0;
  while (CpuSecondsOfProcess() - cpu0 < 0.05) sink = sink + 1;

  std::string after = r.Render();
  {
    std::lock_guard lock(mu);
    release = true;
  }
  cv.notify_all();
  extra.join();
  for (auto& p : fds) {
    close(p[0]);
    close(p[1]);
  }

  EXPECT_EQ(Sample(after, "process_open_fds").value_or(-1), Sample(before, "process_open_fds").value_or(-1) + 4);
  EXPECT_EQ(Sample(after, "process_threads").value_or(-1), Sample(before, "process_threads").value_or(-1) + 1);
  EXPECT_GT(Sample(after, "process_cpu_seconds_total").value_or(-1),
            Sample(before, "process_cpu_seconds_total").value_or(-1));
  EXPECT_EQ(Sample(after, "process_start_time_seconds"), Sample(before, "process_start_time_seconds"));
}

}  // namespace
}  // namespace tidepool::metrics
