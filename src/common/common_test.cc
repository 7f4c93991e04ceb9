#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <thread>
#include <vector>

#include "common/crypto.h"
#include "common/duration.h"
#include "common/process.h"
#include "common/strings.h"
#include "common/time.h"

namespace tidepool {
namespace {

TEST(Duration, ProtobufAndHumanStyles) {
  EXPECT_EQ(ParseDuration("300s")->count(), 300000);
  EXPECT_EQ(ParseDuration("0.5s")->count(), 500);
  EXPECT_EQ(ParseDuration("5m")->count(), 300000);
  EXPECT_EQ(ParseDuration("12h")->count(), 12 * 3600000);
  EXPECT_EQ(ParseDuration("1h30m")->count(), 5400000);
  EXPECT_EQ(ParseDuration("90s")->count(), 90000);
  EXPECT_EQ(ParseDuration("250ms")->count(), 250);
  EXPECT_EQ(ParseDuration("0")->count(), 0);
  EXPECT_EQ(ParseDuration("1d")->count(), 86400000);
}

TEST(Duration, RejectsMalformed) {
  EXPECT_FALSE(ParseDuration("").ok());
  EXPECT_FALSE(ParseDuration("10").ok());
  EXPECT_FALSE(ParseDuration("5 minutes").ok());
  EXPECT_FALSE(ParseDuration("-5s").ok());
  EXPECT_FALSE(ParseDuration("s").ok());
  EXPECT_FALSE(ParseDuration("1.2.3s").ok());
  EXPECT_NE(ParseDuration("10").status().message().find("unit"), std::string::npos);
}

TEST(Duration, Formats) {
  EXPECT_EQ(FormatDuration(Millis(0)), "0s");
  EXPECT_EQ(FormatDuration(Millis(250)), "250ms");
  EXPECT_EQ(FormatDuration(Millis(90000)), "1m30s");
  EXPECT_EQ(FormatDuration(Millis(7200000)), "2h");
  EXPECT_EQ(FormatDuration(Millis(1500)), "1.5s");
}

TEST(Crypto, HmacMatchesKnownVector) {
  // RFC 4231 test case 2.
  EXPECT_EQ(HmacSha256Hex("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "ab"));
  std::string id = RandomId(8);
  EXPECT_EQ(id.size(), 8u);
  EXPECT_NE(RandomId(8), RandomId(8));
}

TEST(Strings, ShellQuote) {
  EXPECT_EQ(ShellQuote({"echo", "a b", "$HOME", ""}), "echo 'a b' '$HOME' ''");
  EXPECT_EQ(ShellQuote({"it's"}), "'it'\\''s'");
}

TEST(Time, Rfc3339) { EXPECT_EQ(FormatRfc3339(1700000000123), "2023-11-14T22:13:20.123Z"); }

TEST(Time, ParsesRfc3339AsKubernetesAndExecPluginsWriteIt) {
  EXPECT_EQ(ParseRfc3339("2023-11-14T22:13:20.123Z"), 1700000000123);
  EXPECT_EQ(ParseRfc3339("2023-11-14T22:13:20Z"), 1700000000000);
  EXPECT_EQ(ParseRfc3339("2023-11-14T23:13:20.5+01:00"), 1700000000500);
  EXPECT_EQ(ParseRfc3339("2023-11-14T21:13:20.123456789-01:00"), 1700000000123);
  for (const char* bad : {"", "2023-11-14", "2023-11-14T22:13:20", "2023-13-14T22:13:20Z", "2023-11-14T22:13:20Zjunk",
                          "2023-11-14T22:13:20.Z"}) {
    EXPECT_FALSE(ParseRfc3339(bad).has_value()) << bad;
  }
}

// RFC 4648 section 10's test vectors.
TEST(Strings, Base64MatchesRfc4648Vectors) {
  const std::pair<const char*, const char*> vectors[] = {{"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},
                                                         {"foo", "Zm9v"},  {"foob", "Zm9vYg=="},  {"fooba", "Zm9vYmE="},
                                                         {"foobar", "Zm9vYmFy"}};
  for (const auto& [plain, coded] : vectors) {
    EXPECT_EQ(Base64Encode(plain), coded);
    EXPECT_EQ(*Base64Decode(coded), plain);
  }
  EXPECT_EQ(*Base64Decode("Zm9v\nYmFy\n"), "foobar");  // PEM-style line breaks
  std::string all;
  for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
  EXPECT_EQ(*Base64Decode(Base64Encode(all)), all);
  for (const char* bad : {"Zm9", "Zm9v!", "Z===", "Zg==Zg==", "Zm9v\x01"}) EXPECT_FALSE(Base64Decode(bad).ok()) << bad;
}

TEST(Process, SpawnReportsCommandNotFoundAndMissingCwd) {
  SpawnOptions o;
  o.argv = {"definitely-not-a-command-xyz"};
  o.env = {"PATH=/usr/bin:/bin"};
  SpawnResult r = Spawn(o);
  EXPECT_EQ(r.error, SpawnError::kNotFound);
  EXPECT_EQ(r.message, "command not found: definitely-not-a-command-xyz");
  o.argv = {"true"};
  o.cwd = "/no/such/dir";
  r = Spawn(o);
  EXPECT_EQ(r.error, SpawnError::kNoCwd);
}

TEST(Process, SpawnUsesChildPathAndCwdAndOwnSession) {
  char tmpl[] = "/tmp/tidepool-proc-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string out = std::string(tmpl) + "/out";
  SpawnOptions o;
  o.argv = {"sh", "-c", "pwd; echo $FOO; ps -o sid= -p $$ | tr -d ' '; echo $$"};
  o.env = {"PATH=/usr/bin:/bin", "FOO=bar"};
  o.cwd = tmpl;
  o.stdout_path = out;
  SpawnResult r = Spawn(o);
  ASSERT_EQ(r.error, SpawnError::kNone) << r.message;
  int status = 0;
  ASSERT_EQ(waitpid(r.pid, &status, 0), r.pid);
  EXPECT_TRUE(WIFEXITED(status));
  FILE* f = fopen(out.c_str(), "r");
  ASSERT_NE(f, nullptr);
  char buf[256] = {};
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  std::string s(buf, n);
  auto lines = Split(s, '\n');
  ASSERT_GE(lines.size(), 4u);
  EXPECT_EQ(lines[0], tmpl);
  EXPECT_EQ(lines[1], "bar");
  EXPECT_EQ(lines[2], lines[3]);  // session id == its own pid: new session
  std::string cmd = std::string("rm -rf ") + tmpl;
  ASSERT_EQ(system(cmd.c_str()), 0);
}

TEST(Process, DieWithParentKillsTheChildWhenItsParentDies) {
  // A middle process spawns a long sleep that must die with it; the test then kills the middle.
  char tmpl[] = "/tmp/tidepool-pdeath-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string pidfile = std::string(tmpl) + "/pid";
  pid_t middle = fork();
  if (middle == 0) {
    SpawnOptions o;
    o.argv = {"sleep", "1000"};
    o.env = {"PATH=/usr/bin:/bin"};
    o.die_with_parent = true;
    SpawnResult r = Spawn(o);
    FILE* f = fopen(pidfile.c_str(), "w");
    fprintf(f, "%d\n", r.pid);
    fclose(f);
    pause();
    _exit(0);
  }
  pid_t sleeper = 0;
  for (int i = 0; i < 5000 && sleeper == 0; ++i) {
    FILE* f = fopen(pidfile.c_str(), "r");
    if (f) {
      if (fscanf(f, "%d", &sleeper) != 1) sleeper = 0;
      fclose(f);
    }
    usleep(1000);
  }
  ASSERT_GT(sleeper, 0);
  auto st = ReadProcStat(sleeper);
  ASSERT_TRUE(st);
  EXPECT_TRUE(ProcessAlive(sleeper, st->start_time));
  kill(middle, SIGKILL);
  waitpid(middle, nullptr, 0);
  bool gone = false;
  for (int i = 0; i < 5000 && !gone; ++i) {
    gone = !ProcessAlive(sleeper, st->start_time);
    usleep(1000);
  }
  EXPECT_TRUE(gone);
  // Errors are reported the same way as with posix_spawn.
  SpawnOptions bad;
  bad.argv = {"no-such-command-here"};
  bad.env = {"PATH=/usr/bin:/bin"};
  bad.die_with_parent = true;
  EXPECT_EQ(Spawn(bad).error, SpawnError::kNotFound);
  std::string cmd = std::string("rm -rf ") + tmpl;
  ASSERT_EQ(system(cmd.c_str()), 0);
}

// The agent's spawn runs the child on a clone stack kept per spawning thread: threads spawning
// at once must each get their own child, running its own command (told apart by exit code).
TEST(Process, DieWithParentSpawnsFromManyThreadsAtOnce) {
  constexpr int kThreads = 8, kEach = 25;
  std::atomic<int> wrong{0}, failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([t, &wrong, &failed] {
      for (int i = 0; i < kEach; ++i) {
        int code = t * 10 + i % 10;
        SpawnOptions o;
        o.argv = {"sh", "-c", "exit " + std::to_string(code)};
        o.env = {"PATH=/usr/bin:/bin"};
        o.die_with_parent = true;
        SpawnResult r = Spawn(o);
        int status = 0;
        if (r.error != SpawnError::kNone || waitpid(r.pid, &status, 0) != r.pid) {
          failed++;
        } else if (!WIFEXITED(status) || WEXITSTATUS(status) != code) {
          wrong++;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(wrong.load(), 0);
}

TEST(Process, StartTimeIdentifiesProcess) {
  auto self = ReadProcStat(getpid());
  ASSERT_TRUE(self);
  EXPECT_TRUE(ProcessAlive(getpid(), self->start_time));
  EXPECT_FALSE(ProcessAlive(getpid(), self->start_time + 1));
}

}  // namespace
}  // namespace tidepool
