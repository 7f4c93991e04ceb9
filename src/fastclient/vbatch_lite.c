/* vbatch, the common case, in C against musl: no C++ runtime and no glibc start-up.
 *
 * Why: on the machines measured here every glibc process pays ~1 ms of CPU before main (its
 * cache-size probing runs ~40 `cpuid` instructions, each a hypervisor trap), which was 85% of
 * the C++ fast client's own CPU per `vbatch` and bounded submissions per second (P2). A static
 * musl program starts in ~0.05 ms. See docs/benchmarks.md, "Process start here".
 *
 * What: `vbatch [-P POOL] [-N SHARDS] [--name NAME] [--] COMMAND...` over the fast protocol
 * (src/common/fast_protocol.h), with the server and token from the environment, exactly as the
 * C++ fast client (src/fastclient/fast_client.cc) builds and sends it. Anything else (another
 * option, TLS, a token file, text that is not UTF-8, no server answering the hello) is handed,
 * with the same arguments, to that client, installed beside this one as `tidepool-vbatch`,
 * which handles it or falls back in turn to the full client. Nothing with an effect has been
 * sent before a hand-over.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

extern char** environ;

enum { kHello = 1, kSubmit = 3, kWelcome = 64, kSubmitted = 72, kFinish = 73 };
enum { kExitTidepoolFailed = 255, kMaxFrame = 64 << 20 };

static int g_argc;
static char** g_argv;

static int tracing(void) {
  const char* t = getenv("TIDEPOOL_CLIENT_TRACE");
  return t && *t && strcmp(t, "0") != 0;
}

/* Replaces this process with the C++ fast client, same arguments. */
static void hand_over(const char* why) {
  if (tracing()) fprintf(stderr, "tidepool-client: lite vbatch hands over: %s\n", why);
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 32);
  char path[4096 + 32];
  snprintf(path, sizeof(path), "tidepool-vbatch");
  if (n > 0) {
    self[n] = 0;
    char* slash = strrchr(self, '/');
    if (slash) {
      slash[1] = 0;
      snprintf(path, sizeof(path), "%stidepool-vbatch", self);
    }
  }
  g_argv[0] = "vbatch";
  execv(path, g_argv);
  execvp("tidepool-vbatch", g_argv);
  fprintf(stderr, "vbatch: cannot run %s: %s\n", path, strerror(errno));
  exit(kExitTidepoolFailed);
}

/* ---- a growable byte buffer ---- */
typedef struct {
  char* p;
  size_t n, cap;
} Buf;

static void put(Buf* b, const void* data, size_t n) {
  if (b->n + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + n) cap *= 2;
    char* p = realloc(b->p, cap);
    if (!p) {
      fprintf(stderr, "vbatch: out of memory\n");
      exit(kExitTidepoolFailed);
    }
    b->p = p, b->cap = cap;
  }
  memcpy(b->p + b->n, data, n);
  b->n += n;
}
static void put_str(Buf* b, const char* s) { put(b, s, strlen(s)); }

/* ---- protobuf wire format, as fast_client.cc's ProtoWriter (proto3 defaults left out) ---- */
static void varint(Buf* b, uint64_t v) {
  while (v >= 0x80) {
    char c = (char)(v | 0x80);
    put(b, &c, 1);
    v >>= 7;
  }
  char c = (char)v;
  put(b, &c, 1);
}
static void pb_bytes(Buf* b, int field, const char* s, size_t n) {
  varint(b, (uint64_t)field << 3 | 2);
  varint(b, n);
  put(b, s, n);
}
static void pb_int(Buf* b, int field, int64_t v) {
  if (v == 0) return;
  varint(b, (uint64_t)field << 3);
  varint(b, (uint64_t)v);
}

/* Strict UTF-8 (protobuf string fields): as fast_client.cc's IsUtf8. */
static int is_utf8(const unsigned char* s, size_t len) {
  static const uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
  size_t i = 0;
  while (i < len) {
    unsigned c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t n;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) n = 1, cp = c & 0x1F;
    else if ((c & 0xF0) == 0xE0) n = 2, cp = c & 0x0F;
    else if ((c & 0xF8) == 0xF0) n = 3, cp = c & 0x07;
    else return 0;
    if (i + n >= len) return 0;
    for (size_t k = 1; k <= n; ++k) {
      unsigned cc = s[i + k];
      if ((cc & 0xC0) != 0x80) return 0;
      cp = cp << 6 | (cc & 0x3F);
    }
    if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    i += n + 1;
  }
  return 1;
}

static int g_utf8 = 1;
static void pb_string(Buf* b, int field, const char* s, int always) {
  size_t n = strlen(s);
  if (!n && !always) return;
  g_utf8 = g_utf8 && is_utf8((const unsigned char*)s, n);
  pb_bytes(b, field, s, n);
}

/* cli/client_env.cc's IsLocalOnlyVariable: the terminal's and the session's own. */
static int local_only(const char* kv, size_t keylen) {
  static const char* exact[] = {"TERM", "DISPLAY", "XAUTHORITY", "SHLVL", "_", "OLDPWD", "PWD", "TERMCAP", "COLUMNS", "LINES"};
  for (size_t i = 0; i < sizeof(exact) / sizeof(exact[0]); ++i) {
    if (strlen(exact[i]) == keylen && strncmp(kv, exact[i], keylen) == 0) return 1;
  }
  return (keylen >= 4 && strncmp(kv, "SSH_", 4) == 0) || (keylen >= 4 && strncmp(kv, "TMUX", 4) == 0);
}

static int by_key(const void* a, const void* b) {
  const char* x = *(const char* const*)a;
  const char* y = *(const char* const*)b;
  for (;; ++x, ++y) {
    char cx = *x == '=' ? 0 : *x, cy = *y == '=' ? 0 : *y;
    if (cx != cy) return (unsigned char)cx - (unsigned char)cy;
    if (!cx) return 0;
  }
}

/* TaskSpec field numbers (proto/tidepool/v1/common.proto). */
enum { kArgv = 1, kCwd = 2, kEnv = 3, kPool = 4, kName = 5, kKind = 8, kStdinNull = 12, kParent = 14, kShards = 15 };
enum { kTaskKindBatch = 2 };

/* A plain decimal int as fast_client.cc's PlainInt; -1 = not one. */
static long plain_int(const char* s) {
  size_t n = strlen(s);
  if (n == 0 || n > 9 || (s[0] == '0' && n > 1)) return -1;
  for (size_t i = 0; i < n; ++i) {
    if (s[i] < '0' || s[i] > '9') return -1;
  }
  return atol(s);
}

static void build_spec(Buf* spec, char** command, const char* pool, const char* name, long shards) {
  for (char** a = command; *a; ++a) pb_string(spec, kArgv, *a, 1);
  char cwd[4096];
  if (!getcwd(cwd, sizeof(cwd))) strcpy(cwd, "/");
  pb_string(spec, kCwd, cwd, 0);
  size_t count = 0;
  for (char** e = environ; e && *e; ++e) ++count;
  const char** vars = calloc(count + 2, sizeof(char*));
  size_t used = 0;
  for (char** e = environ; e && *e; ++e) {
    const char* eq = strchr(*e, '=');
    if (!eq || local_only(*e, (size_t)(eq - *e))) continue;
    vars[used++] = *e;
  }
  char* pwd = malloc(strlen(cwd) + 5);
  sprintf(pwd, "PWD=%s", cwd);
  vars[used++] = pwd;
  qsort(vars, used, sizeof(char*), by_key);
  for (size_t i = 0; i < used; ++i) {
    /* The environment is a map: the last of duplicate keys wins, as in the C++ client. */
    if (i + 1 < used && by_key(&vars[i], &vars[i + 1]) == 0) continue;
    const char* eq = strchr(vars[i], '=');
    Buf entry = {0};
    pb_bytes(&entry, 1, vars[i], (size_t)(eq - vars[i]));
    if (eq[1]) pb_bytes(&entry, 2, eq + 1, strlen(eq + 1));
    g_utf8 = g_utf8 && is_utf8((const unsigned char*)vars[i], strlen(vars[i]));
    pb_bytes(spec, kEnv, entry.p ? entry.p : "", entry.n);
    free(entry.p);
  }
  pb_string(spec, kPool, pool ? pool : "", 0);
  pb_string(spec, kName, name ? name : "", 0);
  pb_int(spec, kKind, kTaskKindBatch);
  pb_int(spec, kStdinNull, 1);
  const char* parent = getenv("TIDEPOOL_TASK_ID");
  if (parent) pb_string(spec, kParent, parent, 0);
  pb_int(spec, kShards, shards);
}

/* ---- JSON: the flat objects the server sends ({"id":"..."}, {"code":N,"message":"..."}) ---- */
static const char* skip_ws(const char* p, const char* end) {
  while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) ++p;
  return p;
}
static void put_utf8(Buf* out, uint32_t cp) {
  char c[4];
  if (cp < 0x80) c[0] = (char)cp, put(out, c, 1);
  else if (cp < 0x800) c[0] = (char)(0xC0 | cp >> 6), c[1] = (char)(0x80 | (cp & 0x3F)), put(out, c, 2);
  else if (cp < 0x10000)
    c[0] = (char)(0xE0 | cp >> 12), c[1] = (char)(0x80 | ((cp >> 6) & 0x3F)), c[2] = (char)(0x80 | (cp & 0x3F)), put(out, c, 3);
  else
    c[0] = (char)(0xF0 | cp >> 18), c[1] = (char)(0x80 | ((cp >> 12) & 0x3F)), c[2] = (char)(0x80 | ((cp >> 6) & 0x3F)),
    c[3] = (char)(0x80 | (cp & 0x3F)), put(out, c, 4);
}
static int hex4(const char* p, const char* end, uint32_t* v) {
  if (end - p < 4) return 0;
  *v = 0;
  for (int i = 0; i < 4; ++i) {
    char c = p[i];
    *v <<= 4;
    if (c >= '0' && c <= '9') *v |= (uint32_t)(c - '0');
    else if (c >= 'a' && c <= 'f') *v |= (uint32_t)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') *v |= (uint32_t)(c - 'A' + 10);
    else return 0;
  }
  return 1;
}
/* A JSON string at *pp (past its opening quote) into out (NUL-terminated); 0 if malformed. */
static int json_string(const char** pp, const char* end, Buf* out) {
  const char* p = *pp;
  while (p < end && *p != '"') {
    if (*p != '\\') {
      put(out, p++, 1);
      continue;
    }
    if (++p >= end) return 0;
    char e = *p++;
    switch (e) {
      case '"': case '\\': case '/': put(out, &e, 1); break;
      case 'b': put(out, "\b", 1); break;
      case 'f': put(out, "\f", 1); break;
      case 'n': put(out, "\n", 1); break;
      case 'r': put(out, "\r", 1); break;
      case 't': put(out, "\t", 1); break;
      case 'u': {
        uint32_t cp, lo;
        if (!hex4(p, end, &cp)) return 0;
        p += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF && end - p >= 6 && p[0] == '\\' && p[1] == 'u' && hex4(p + 2, end, &lo) &&
            lo >= 0xDC00 && lo <= 0xDFFF) {
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          p += 6;
        }
        put_utf8(out, cp);
        break;
      }
      default: return 0;
    }
  }
  if (p >= end) return 0;
  *pp = p + 1;
  put(out, "", 1);
  return 1;
}
/* The member `key` of a flat JSON object: a string into *str, or an integer into *num. */
static int json_member(const char* p, size_t n, const char* key, Buf* str, long* num) {
  const char* end = p + n;
  p = skip_ws(p, end);
  if (p >= end || *p++ != '{') return 0;
  for (;;) {
    p = skip_ws(p, end);
    if (p < end && *p == '}') return 0;
    if (p >= end || *p++ != '"') return 0;
    Buf k = {0};
    if (!json_string(&p, end, &k)) return free(k.p), 0;
    int match = strcmp(k.p, key) == 0;
    free(k.p);
    p = skip_ws(p, end);
    if (p >= end || *p++ != ':') return 0;
    p = skip_ws(p, end);
    if (p >= end) return 0;
    if (*p == '"') {
      ++p;
      Buf v = {0};
      if (!json_string(&p, end, &v)) return free(v.p), 0;
      if (match && str) {
        *str = v;
        return 1;
      }
      free(v.p);
    } else {
      const char* start = p;
      while (p < end && *p != ',' && *p != '}') ++p;
      if (match && num) {
        char tmp[32];
        size_t len = (size_t)(p - start);
        if (len == 0 || len >= sizeof(tmp)) return 0;
        memcpy(tmp, start, len);
        tmp[len] = 0;
        char* stop;
        *num = strtol(tmp, &stop, 10);
        return *skip_ws(stop, tmp + len) == 0;
      }
    }
    p = skip_ws(p, end);
    if (p < end && *p == ',') {
      ++p;
      continue;
    }
    return 0;
  }
}

/* ---- the connection ---- */
static int write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return 0;
    p += w, n -= (size_t)w;
  }
  return 1;
}
static int read_all(int fd, char* p, size_t n) {
  while (n > 0) {
    ssize_t r = read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return 0;
    p += r, n -= (size_t)r;
  }
  return 1;
}
static void frame(Buf* out, int type, const char* payload, size_t n) {
  unsigned char h[5] = {(unsigned char)(n >> 24), (unsigned char)(n >> 16), (unsigned char)(n >> 8), (unsigned char)n,
                        (unsigned char)type};
  put(out, h, 5);
  put(out, payload, n);
}
/* One frame: its type, payload in *payload (malloc'd); 0 on a closed or broken connection. */
static int read_frame(int fd, int* type, Buf* payload) {
  unsigned char h[5];
  if (!read_all(fd, (char*)h, 5)) return 0;
  uint32_t n = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
  if (n > kMaxFrame) return 0;
  *type = h[4];
  payload->n = 0;
  if (n) {
    char* p = malloc(n);
    if (!p || !read_all(fd, p, n)) return free(p), 0;
    put(payload, p, n);
    free(p);
  }
  return 1;
}

static int dial(const char* address) {
  const char* colon = strrchr(address, ':');
  if (!colon || !colon[1]) return -1;
  for (const char* c = colon + 1; *c; ++c) {
    if (*c < '0' || *c > '9') return -1;
  }
  char host[256];
  size_t len = (size_t)(colon - address);
  if (len >= sizeof(host)) return -1;
  memcpy(host, address, len);
  host[len] = 0;
  if (len > 2 && host[0] == '[' && host[len - 1] == ']') {
    memmove(host, host + 1, len - 2);
    host[len - 2] = 0;
  }
  struct addrinfo hints = {0}, *res = NULL;
  hints.ai_socktype = SOCK_STREAM;
  if (getaddrinfo(host, colon + 1, &hints, &res) != 0) return -1;
  int fd = -1;
  for (struct addrinfo* ai = res; ai; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) continue;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) break;
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd >= 0) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }
  return fd;
}

/* cli/client_env.cc's ReportFailure, and vbatch's mapping of its result. */
static int report_failure(long code, const char* message, const char* address) {
  switch (code) {
    case 14: /* UNAVAILABLE */
      if (strstr(message, "starting") || strstr(message, "shutting down")) {
        fprintf(stderr, "tidepool: the server at %s is %s\n", address, strstr(message, "starting") ? "starting" : "shutting down");
      } else {
        fprintf(stderr, "tidepool: cannot reach the server at %s\n", address);
      }
      return kExitTidepoolFailed;
    case 5: case 16: case 9: case 3: case 7: case 12: case 6:
      /* NOT_FOUND UNAUTHENTICATED FAILED_PRECONDITION INVALID_ARGUMENT PERMISSION_DENIED UNIMPLEMENTED ALREADY_EXISTS */
      fprintf(stderr, "%s\n", message);
      return kExitTidepoolFailed;
    default:
      fprintf(stderr, "tidepool: %s (from the server at %s)\n", message, address);
      return kExitTidepoolFailed;
  }
}

int main(int argc, char** argv) {
  g_argc = argc, g_argv = argv;
  const char *pool = NULL, *name = NULL, *shards_text = NULL;
  int i = 1;
  for (; i < argc; ++i) {
    const char* w = argv[i];
    if (strcmp(w, "--") == 0) {
      ++i;
      break;
    }
    if (w[0] != '-' || !w[1]) break;
    const char** slot = NULL;
    const char* value = NULL;
    if (strcmp(w, "-P") == 0 || strcmp(w, "--pool") == 0) slot = &pool;
    else if (strcmp(w, "-N") == 0) slot = &shards_text;
    else if (strcmp(w, "--name") == 0) slot = &name;
    else if (strncmp(w, "--pool=", 7) == 0) slot = &pool, value = w + 7;
    else if (strncmp(w, "--name=", 7) == 0) slot = &name, value = w + 7;
    else if (strncmp(w, "-P", 2) == 0) slot = &pool, value = w + 2;
    else if (strncmp(w, "-N", 2) == 0) slot = &shards_text, value = w + 2;
    else hand_over("an option it does not handle");
    if (!value) {
      if (i + 1 >= argc) hand_over("an option without a value");
      value = argv[++i];
    }
    if (*slot || !*value || value[0] == '-' || value[0] == '=') hand_over("an unusual option or value");
    *slot = value;
  }
  if (i >= argc) hand_over("no command");
  long shards = shards_text ? plain_int(shards_text) : 0;
  if (shards < 0) hand_over("-N");
  const char* tls = getenv("TIDEPOOL_TLS_CA");
  if (tls && *tls) hand_over("TLS");
  const char* token = getenv("TIDEPOOL_TOKEN");
  if (!token || !*token) {
    /* ~/.config/tidepool/token is the C++ client's to read (trimming, encodings). */
    const char* home = getenv("HOME");
    char path[4096];
    if (home && snprintf(path, sizeof(path), "%s/.config/tidepool/token", home) < (int)sizeof(path) &&
        access(path, F_OK) == 0) {
      hand_over("a token file");
    }
    token = "";
  }

  Buf spec = {0};
  build_spec(&spec, argv + i, pool, name, shards);
  if (!g_utf8) hand_over("text that is not UTF-8");

  const char* server = getenv("TIDEPOOL_SERVER");
  const char* address = server && *server ? server : "127.0.0.1:7700";
  int fd = dial(address);
  if (fd < 0) hand_over("no connection");
  Buf out = {0};
  put(&out, "TPF1", 4);
  Buf hello = {0};
  put_str(&hello, "{\"v\":1,\"token\":\"");
  for (const char* t = token; *t; ++t) {
    unsigned char c = (unsigned char)*t;
    if (c == '"' || c == '\\') put(&hello, "\\", 1), put(&hello, t, 1);
    else if (c < 0x20) {
      char esc[8];
      snprintf(esc, sizeof(esc), "\\u%04x", c);
      put_str(&hello, esc);
    } else put(&hello, t, 1);
  }
  put_str(&hello, "\"}");
  if (!is_utf8((const unsigned char*)hello.p, hello.n)) hand_over("a token that is not UTF-8");
  frame(&out, kHello, hello.p, hello.n);
  if (!write_all(fd, out.p, out.n)) hand_over("the hello was not taken");
  Buf payload = {0};
  char m[4];
  int type = 0;
  if (!read_all(fd, m, 4) || memcmp(m, "TPF1", 4) != 0 || !read_frame(fd, &type, &payload) || type != kWelcome) {
    hand_over("no welcome");  /* refusals and old servers: the C++ client says what happened */
  }
  if (tracing()) fprintf(stderr, "tidepool-client: fast path (lite, %s)\n", address);

  out.n = 0;
  frame(&out, kSubmit, spec.p ? spec.p : "", spec.n);
  if (!write_all(fd, out.p, out.n)) return report_failure(14, "", address);
  Buf id = {0};
  long code = 0;
  Buf message = {0};
  while (read_frame(fd, &type, &payload)) {
    if (type == kSubmitted) {
      free(id.p);
      id.p = NULL, id.n = id.cap = 0;
      json_member(payload.p, payload.n, "id", &id, NULL);
    }
    if (type == kFinish) {
      json_member(payload.p, payload.n, "code", NULL, &code);
      json_member(payload.p, payload.n, "message", &message, NULL);
      break;
    }
  }
  if (code != 0 || !id.p || !id.p[0]) {
    return report_failure(code != 0 ? code : 2, code != 0 && message.p ? message.p : "no task id in the reply", address);
  }
  printf("%s\n", id.p);
  fflush(stdout);
  return 0;
}
