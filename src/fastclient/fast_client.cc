// The fast vrun/vbatch (see fast_client.h). Mirrors src/cli/run.cc and batch.cc; what they
// print and return comes from the code both share (cli/client_env.h).
#include "fastclient/fast_client.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/client_env.h"
#include "common/duration.h"
#include "common/fast_protocol.h"
#include "common/terminal_io.h"
#include "workspace/protocol.h"
#include "fastclient/run_session.h"
#include "fastclient/wire.h"

extern char** environ;

namespace tidepool::fastclient {

namespace {


const char* Name(Mode m) { return m == Mode::kRun ? "vrun" : "vbatch"; }

bool Tracing() {
  const char* t = std::getenv("TIDEPOOL_CLIENT_TRACE");
  return t && *t && std::strcmp(t, "0") != 0;
}

// ---- fallback: the full client -------------------------------------------------------------

struct Args {
  Mode mode;
  int argc;
  char** argv;
};

// Replaces this process with `tidepool` (next to this binary), invoked as vrun/vbatch with the
// same arguments. Only ever called before a request with an effect was sent.
[[noreturn]] void Fallback(const Args& a, const std::string& why) {
  if (Tracing()) fmt::print(stderr, "tidepool-client: fallback to the full client: {}\n", why);
  std::fflush(stderr);
  std::vector<char*> argv;
  std::string name = Name(a.mode);  // the full client dispatches on argv[0]'s basename
  argv.push_back(name.data());
  for (int i = 1; i < a.argc; ++i) argv.push_back(a.argv[i]);
  argv.push_back(nullptr);
  std::string full = "tidepool";
  char self[4096];
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n > 0) {
    std::string path(self, static_cast<size_t>(n));
    full = path.substr(0, path.rfind('/') + 1) + "tidepool";
    ::execv(full.c_str(), argv.data());
  }
  ::execvp("tidepool", argv.data());
  fmt::print(stderr, "{}: cannot run the full client {}: {}\n", Name(a.mode), full, std::strerror(errno));
  _exit(cli::kExitTidepoolFailed);
}

// ---- options (the subset of run.cc / batch.cc this client handles itself) -----------------

enum Opt {
  kPool, kTty, kNoInput, kCwd, kEnv, kName, kPriority, kTimeout, kQuiet, kServer, kToken, kTlsCa,
  kShards, kGang, kAfter, kAfterSuccess, kAfterFail, kRetries, kRetryOnFailure, kPin, kLabel, kFollow,
  kReattachFor, kReattach, kReattachOffsets,
};

struct OptSpec {
  char short_name;  // 0 = none
  const char* long_name;  // nullptr = none
  bool value;
  bool repeatable;
  Opt opt;
};

constexpr OptSpec kRunOpts[] = {
    {'P', "pool", true, false, kPool},    {0, "tty", true, false, kTty},
    {'I', "noinput", false, false, kNoInput}, {'C', nullptr, true, false, kCwd},
    {'e', nullptr, true, true, kEnv},     {0, "name", true, false, kName},
    {0, "priority", true, false, kPriority}, {0, "timeout", true, false, kTimeout},
    {'q', "quiet", false, false, kQuiet}, {0, "server", true, false, kServer},
    {0, "token", true, false, kToken},    {0, "tls-ca", true, false, kTlsCa},
    {0, "reattach-for", true, false, kReattachFor},
    // Taking up a task whose vrun lost its server (the C vrun hands over with these): no command.
    {0, "reattach", true, false, kReattach}, {0, "reattach-offsets", true, false, kReattachOffsets},
};

constexpr OptSpec kBatchOpts[] = {
    {'P', "pool", true, false, kPool},          {'N', nullptr, true, false, kShards},
    {0, "gang", false, false, kGang},           {0, "name", true, false, kName},
    {0, "after", true, true, kAfter},           {0, "after-success", true, true, kAfterSuccess},
    {0, "after-fail", true, true, kAfterFail},  {0, "retries", true, false, kRetries},
    {0, "retry-on-failure", false, false, kRetryOnFailure}, {0, "pin", false, false, kPin},
    {0, "timeout", true, false, kTimeout},      {0, "priority", true, false, kPriority},
    {'l', nullptr, true, true, kLabel},         {'C', nullptr, true, false, kCwd},
    {'e', nullptr, true, true, kEnv},           {'f', "follow", false, false, kFollow},
    {0, "server", true, false, kServer},        {0, "token", true, false, kToken},
    {0, "tls-ca", true, false, kTlsCa},
};

struct Options {
  std::map<Opt, std::vector<std::string>> values;  // flags hold one empty string
  std::vector<std::string> command;
  bool Has(Opt o) const { return values.count(o) > 0; }
  std::string Get(Opt o, const std::string& def = "") const {
    auto it = values.find(o);
    return it == values.end() ? def : it->second.front();
  }
  std::vector<std::string> All(Opt o) const {
    auto it = values.find(o);
    return it == values.end() ? std::vector<std::string>{} : it->second;
  }
};

// Reads the options the way the full client does (main_cli.cc's SplitCommand, then CLI11), or
// says why this client should not be the one to read them: anything unknown, unusual or wrong
// (including --help) goes to the full client, which knows every option and every message.
std::optional<std::string> ParseOptions(const Args& a, Options* o) {
  const OptSpec* begin = a.mode == Mode::kRun ? std::begin(kRunOpts) : std::begin(kBatchOpts);
  const OptSpec* end = a.mode == Mode::kRun ? std::end(kRunOpts) : std::end(kBatchOpts);
  auto set = [&](const OptSpec& s, std::string value) -> std::optional<std::string> {
    auto& v = o->values[s.opt];
    if (!v.empty() && !s.repeatable) return fmt::format("option given twice");
    if (s.value && (value.empty() || value[0] == '-' || value[0] == '=')) {
      return fmt::format("unusual option value \"{}\"", value);
    }
    v.push_back(std::move(value));
    return std::nullopt;
  };
  int i = 1;
  for (; i < a.argc; ++i) {
    std::string w = a.argv[i];
    if (w == "--") {
      ++i;
      break;
    }
    if (w.size() < 2 || w[0] != '-') break;
    if (w.rfind("--", 0) == 0) {
      auto eq = w.find('=');
      std::string name = w.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
      const OptSpec* s = begin;
      while (s != end && !(s->long_name && name == s->long_name)) ++s;
      if (s == end) return fmt::format("option {}", w);
      std::string value;
      if (s->value) {
        if (eq != std::string::npos) {
          value = w.substr(eq + 1);
        } else if (i + 1 < a.argc) {
          value = a.argv[++i];
        } else {
          return fmt::format("{} without a value", w);
        }
      } else if (eq != std::string::npos) {
        return fmt::format("a value for flag {}", w);
      }
      if (auto why = set(*s, value)) return why;
      continue;
    }
    for (size_t k = 1; k < w.size(); ++k) {  // -X, -Xvalue, or flags like -Iq
      const OptSpec* s = begin;
      while (s != end && s->short_name != w[k]) ++s;
      if (s == end) return fmt::format("option -{}", w[k]);
      if (!s->value) {
        if (auto why = set(*s, "")) return why;
        continue;
      }
      std::string value = w.substr(k + 1);
      if (value.empty()) {
        if (i + 1 >= a.argc) return fmt::format("-{} without a value", w[k]);
        value = a.argv[++i];
      }
      if (auto why = set(*s, value)) return why;
      break;
    }
  }
  for (; i < a.argc; ++i) o->command.emplace_back(a.argv[i]);
  if (o->command.empty() && !o->Has(kReattach)) return std::string("no command");
  if (!o->command.empty() && o->Has(kReattach)) return std::string("--reattach with a command");
  return std::nullopt;
}

// A plain decimal int; anything CLI11 might read otherwise (it takes 0x.. and 0.. as hex and
// octal) goes to the full client.
std::optional<int> PlainInt(const std::string& s) {
  size_t start = !s.empty() && s[0] == '-' ? 1 : 0;
  if (s.size() == start || s.size() - start > 9) return std::nullopt;
  if (s[start] == '0' && s.size() - start > 1) return std::nullopt;
  for (size_t i = start; i < s.size(); ++i) {
    if (s[i] < '0' || s[i] > '9') return std::nullopt;
  }
  return std::atoi(s.c_str());
}

// Strict UTF-8 (RFC 3629: no overlong forms, surrogates or code points past U+10FFFF), as
// protobuf requires of string fields.
bool IsUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t n;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
      n = 1, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3, cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;  // truncated
    for (size_t k = 1; k <= n; ++k) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = cp << 6 | (cc & 0x3F);
    }
    static constexpr uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n + 1;
  }
  return true;
}

// Protobuf's wire format, enough to write a TaskSpec (proto/tidepool/v1/common.proto) exactly
// as the full client's protobuf would: proto3 defaults are left out; repeated and map entries
// are written even when empty. The server parses it with the generated code.
class ProtoWriter {
 public:
  const std::string& bytes() const { return out_; }
  bool utf8() const { return utf8_; }
  void String(int field, std::string_view v) {
    if (!v.empty()) RepeatedString(field, v);
  }
  void RepeatedString(int field, std::string_view v) {
    utf8_ = utf8_ && IsUtf8(v);
    Bytes(field, v);
  }
  void Int(int field, int64_t v) {  // int32/int64/enum: negative values take ten bytes
    if (v == 0) return;
    Tag(field, 0);
    Varint(static_cast<uint64_t>(v));
  }
  void Bool(int field, bool v) { Int(field, v ? 1 : 0); }
  void Message(int field, const ProtoWriter& m) {
    utf8_ = utf8_ && m.utf8_;
    Bytes(field, m.out_);
  }
  void MapEntry(int field, const std::string& key, const std::string& value) {
    ProtoWriter e;
    e.String(1, key);
    e.String(2, value);
    Message(field, e);
  }

 private:
  void Varint(uint64_t v) {
    while (v >= 0x80) {
      out_.push_back(static_cast<char>(v | 0x80));
      v >>= 7;
    }
    out_.push_back(static_cast<char>(v));
  }
  void Tag(int field, int wire_type) { Varint(static_cast<uint64_t>(field) << 3 | static_cast<uint64_t>(wire_type)); }
  void Bytes(int field, std::string_view v) {
    Tag(field, 2);
    Varint(v.size());
    out_.append(v.data(), v.size());
  }
  std::string out_;
  bool utf8_ = true;
};

// TaskSpec field numbers (proto/tidepool/v1/common.proto).
enum SpecField {
  kArgv = 1, kSpecCwd = 2, kSpecEnv = 3, kSpecPool = 4, kSpecName = 5, kSpecPriority = 6, kTimeoutMs = 7, kKind = 8,
  kSpecTty = 9, kTerminalSize = 10, kTerm = 11, kStdinNull = 12, kLabels = 13, kParent = 14, kSpecShards = 15,
  kSpecGang = 16, kSpecAfter = 17, kSpecAfterSuccess = 18, kSpecAfterFail = 19, kSpecRetries = 20,
  kSpecRetryOnFailure = 21, kSpecPin = 22, kSpecReattachFor = 23, kSpecWorkspace = 24,
};
constexpr int kWorkspaceNone = 4;  // WorkspaceRef.none (proto/tidepool/v1/workspace.proto)
constexpr int kTaskKindInteractive = 1, kTaskKindBatch = 2;

ProtoWriter TerminalSize() {
  ProtoWriter size;
  winsize ws{};
  if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 || ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0) {
    size.Int(1, ws.ws_row);
    size.Int(2, ws.ws_col);
  }
  return size;
}

// The TaskSpec that cli/spec.cc's FillSpec and run.cc / batch.cc build, or why this client
// should leave it to the full client.
std::optional<std::string> BuildSpec(Mode mode, const Options& o, bool tty, ProtoWriter* spec) {
  ProtoWriter& s = *spec;
  for (const std::string& arg : o.command) s.RepeatedString(kArgv, arg);
  char buf[4096];
  std::string here = getcwd(buf, sizeof(buf)) ? buf : "/";
  std::string c = o.Get(kCwd);
  std::string cwd = c.empty() ? here : (c[0] == '/' ? c : here + "/" + c);
  s.String(kSpecCwd, cwd);
  if (cwd == "/") {
    ProtoWriter none;  // working in /: no workspace to bring (spec.cc's FillSpec)
    none.Int(kWorkspaceNone, 1);
    s.Message(kSpecWorkspace, none);
  }
  std::map<std::string, std::string> env;
  for (char** e = environ; e && *e; ++e) {
    std::string kv = *e;
    auto eq = kv.find('=');
    if (eq == std::string::npos) continue;
    std::string key = kv.substr(0, eq);
    if (!cli::IsLocalOnlyVariable(key)) env[key] = kv.substr(eq + 1);
  }
  env["PWD"] = cwd;
  for (const std::string& e : o.All(kEnv)) {
    auto eq = e.find('=');
    if (eq == 0 || e.empty()) return "-e " + e;
    if (eq == std::string::npos) {
      if (const char* v = std::getenv(e.c_str())) env[e] = v;
    } else {
      env[e.substr(0, eq)] = e.substr(eq + 1);
    }
  }
  for (const auto& [k, v] : env) s.MapEntry(kSpecEnv, k, v);
  s.String(kSpecPool, o.Get(kPool));
  s.String(kSpecName, o.Get(kName));
  auto priority = PlainInt(o.Get(kPriority, "0"));
  if (!priority) return "--priority " + o.Get(kPriority);
  s.Int(kSpecPriority, *priority);
  if (o.Has(kTimeout)) {
    auto d = ParseDuration(o.Get(kTimeout));
    if (!d.ok()) return "--timeout " + o.Get(kTimeout);
    s.Int(kTimeoutMs, d->count());
  }
  if (mode == Mode::kRun) {
    s.Int(kKind, kTaskKindInteractive);
    s.Bool(kSpecTty, tty);
    if (tty) {
      s.Message(kTerminalSize, TerminalSize());
      const char* term = std::getenv("TERM");
      s.String(kTerm, term && *term ? term : "xterm");
    }
    s.Bool(kStdinNull, o.Has(kNoInput));
    if (o.Has(kReattachFor)) {
      auto d = ParseDuration(o.Get(kReattachFor));
      if (!d.ok() || d->count() <= 0) return "--reattach-for " + o.Get(kReattachFor);
      s.Int(kSpecReattachFor, d->count());
    }
  } else {
    s.Int(kKind, kTaskKindBatch);
    s.Bool(kStdinNull, true);
    for (const std::string& l : o.All(kLabel)) {
      auto eq = l.find('=');
      if (eq == std::string::npos || eq == 0) return "-l " + l;
    }
    std::map<std::string, std::string> labels;
    for (const std::string& l : o.All(kLabel)) labels[l.substr(0, l.find('='))] = l.substr(l.find('=') + 1);
    for (const auto& [k, v] : labels) s.MapEntry(kLabels, k, v);
  }
  if (const char* parent = std::getenv("TIDEPOOL_TASK_ID"); parent && *parent) s.String(kParent, parent);
  if (mode == Mode::kBatch) {
    auto shards = PlainInt(o.Get(kShards, "0"));
    auto retries = PlainInt(o.Get(kRetries, "0"));
    if (!shards) return "-N " + o.Get(kShards);
    if (!retries || *retries < 0) return "--retries " + o.Get(kRetries);
    s.Int(kSpecShards, *shards);
    s.Bool(kSpecGang, o.Has(kGang));
    for (const std::string& t : o.All(kAfter)) s.RepeatedString(kSpecAfter, t);
    for (const std::string& t : o.All(kAfterSuccess)) s.RepeatedString(kSpecAfterSuccess, t);
    for (const std::string& t : o.All(kAfterFail)) s.RepeatedString(kSpecAfterFail, t);
    s.Int(kSpecRetries, *retries);
    s.Bool(kSpecRetryOnFailure, o.Has(kRetryOnFailure));
    s.Bool(kSpecPin, o.Has(kPin));
  }
  // Text that is not UTF-8 is the full client's to handle (protobuf strings must be UTF-8).
  if (!s.utf8()) return std::string("the command, its environment or an option is not valid UTF-8");
  return std::nullopt;
}

// Connects; an exit status if the server cannot be reached (said as the full client says it).
std::optional<int> ConnectTo(const Args& a, Connection& conn, const std::string& address) {
  std::string host, port;
  if (!SplitAddress(address, &host, &port)) Fallback(a, fmt::format("server address {} is not HOST:PORT", address));
  switch (conn.Connect(host, port)) {
    case Connection::Outcome::kConnected:
      return std::nullopt;
    case Connection::Outcome::kNameNotResolved:
      Fallback(a, fmt::format("server address {} is a name, not an IP address", address));
    case Connection::Outcome::kUnreachable:
      break;
  }
  fmt::print(stderr, "tidepool: cannot reach the server at {}\n", address);
  return cli::kExitTidepoolFailed;
}

// Says hello with the request (a frame of `type`) behind it in the same write, so no round trip
// is spent on the hello alone: the server reads no frame past a hello it does not welcome, so the
// request takes effect only once welcomed. Returns only on the fast path (WELCOME) or with an
// exit status to give (refused as the full client would be: a token, a server still starting);
// anything else (not our protocol: an old server, TLS on the port ...) falls back, except a
// server that says nothing: it may yet take the request, which a fallback would send again. The
// client waits for it while the connection is open (AwaitAnswer); one that then ends without an
// answer exits 255 saying the request may have been taken.
std::optional<int> Hello(const Args& a, Connection& conn, const std::string& address, const std::string& token,
                         uint8_t type, std::string_view request) {
  if (!IsUtf8(token)) Fallback(a, "the token is not text");
  json hello{{"v", fast::kVersion}};
  if (!token.empty()) hello["token"] = token;
  std::string out(fast::kMagic, sizeof(fast::kMagic));
  fast::AppendFrame(out, fast::kHello, hello.dump());
  fast::AppendFrame(out, type, request);
  if (!conn.Send(out)) Fallback(a, "the server closed the connection");
  bool told = AwaitAnswer(conn, address);
  char magic[sizeof(fast::kMagic)];
  if (!conn.ReadExact(magic, sizeof(magic))) {
    if (told) LostUnanswered(address);
    Fallback(a, fmt::format("the server at {} closed the connection without a welcome", address));
  }
  if (std::memcmp(magic, fast::kMagic, sizeof(magic)) != 0) {
    Fallback(a, fmt::format("the server at {} does not speak the fast protocol", address));
  }
  uint8_t answer = 0;
  std::string payload;
  if (!conn.ReadFrame(&answer, &payload)) Fallback(a, "no welcome from the server");
  if (answer == fast::kWelcome) return std::nullopt;
  if (answer != fast::kFinish) Fallback(a, "unexpected answer to the hello");
  json f = ParseJson(payload);
  int code = static_cast<int>(Int(f, "code"));
  if (code == kUnimplemented) Fallback(a, Str(f, "message"));
  // Refused before anything was asked (a token, a server still starting): as the full client.
  int rc = cli::ReportFailure(code, Str(f, "message"), address);
  return rc == 1 ? cli::kExitTidepoolFailed : rc;
}

// ---- vbatch ----------------------------------------------------------------------------------

int Submit(Connection& conn, const std::string& address, const Args& a) {
  uint8_t type = 0;
  std::string payload, id;
  Finish finish;
  bool oversize = false;
  bool finished = false;
  while (!finished) {
    AwaitAnswer(conn, address);
    if (!conn.ReadFrame(&type, &payload, -1, &oversize)) break;
    if (type == fast::kSubmitted) id = Str(ParseJson(payload), "id");
    if (type == fast::kFinish) {
      json f = ParseJson(payload);
      finish.code = static_cast<int>(Int(f, "code"));
      finish.message = Str(f, "message");
      finished = true;
    }
  }
  if (oversize) finish = Finish{kUnknown, "a reply from the server was over the size limit"};
  // A pool that brings the caller's files: the full client sends them (nothing was queued).
  if (finish.code == kFailedPrecondition && finish.message.rfind(kWorkspaceNeeded, 0) == 0) Fallback(a, finish.message);
  // Welcomed, the request sent, and the connection ended without its answer: it may have been taken.
  if (!oversize && !finished && id.empty()) LostUnanswered(address);
  if (finish.code != 0 || id.empty()) {
    int rc = cli::ReportFailure(finish.code != 0 ? finish.code : kUnknown,
                                finish.code != 0 ? finish.message : "no task id in the reply", address);
    return rc == 1 ? cli::kExitTidepoolFailed : rc;
  }
  fmt::print("{}\n", id);
  std::fflush(stdout);
  return 0;
}

}  // namespace

int Main(Mode mode, int argc, char** argv) {
  Args a{mode, argc, argv};
  Options o;
  if (auto why = ParseOptions(a, &o)) Fallback(a, *why);
  if (mode == Mode::kBatch && o.Has(kFollow)) Fallback(a, "-f");
  if (!cli::ResolveTlsCa(o.Get(kTlsCa)).empty()) Fallback(a, "TLS");
  std::string tty_mode = o.Get(kTty, "auto");
  if (tty_mode != "auto" && tty_mode != "yes" && tty_mode != "no") Fallback(a, "--tty " + tty_mode);
  bool tty = mode == Mode::kRun &&
             (tty_mode == "yes" || (tty_mode == "auto" && isatty(STDIN_FILENO) && isatty(STDOUT_FILENO)));
  std::string address = cli::ResolveServer(o.Get(kServer));
  RunOptions run{address, cli::ResolveToken(o.Get(kToken)), tty, o.Has(kQuiet), o.Has(kNoInput), kDefaultReattachFor};
  if (o.Has(kReattachFor)) {
    auto d = ParseDuration(o.Get(kReattachFor));
    if (!d.ok() || d->count() <= 0) Fallback(a, "--reattach-for " + o.Get(kReattachFor));
    run.reattach_for = *d;
  }
  if (o.Has(kReattach)) {
    uint64_t out = 0, err = 0;
    std::string offsets = o.Get(kReattachOffsets, "0,0");
    if (std::sscanf(offsets.c_str(), "%lu,%lu", &out, &err) != 2) Fallback(a, "--reattach-offsets " + offsets);
    std::string host, port;
    if (!SplitAddress(address, &host, &port)) Fallback(a, fmt::format("server address {} is not HOST:PORT", address));
    BlockForwardedSignals();
    Reattach(run, o.Get(kReattach), out, err);
  }
  ProtoWriter spec;
  if (auto why = BuildSpec(mode, o, tty, &spec)) Fallback(a, *why);
  const std::string& payload = spec.bytes();

  Connection conn;
  if (auto rc = ConnectTo(a, conn, address)) return *rc;
  auto started_at = Clock::now();
  uint8_t request = mode == Mode::kBatch ? fast::kSubmit : fast::kRun;
  if (auto rc = Hello(a, conn, address, run.token, request, payload)) return *rc;
  if (Tracing()) fmt::print(stderr, "tidepool-client: fast path ({})\n", address);

  if (mode == Mode::kBatch) return Submit(conn, address, a);
  run.workspace_needed = [&a](const std::string& why) { Fallback(a, why); };
  BlockForwardedSignals();
  RunEvents(conn, run, started_at);
}

}  // namespace tidepool::fastclient
