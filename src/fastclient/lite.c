/* The C clients' shared part (lite.h). */
#define _GNU_SOURCE
#include "lite.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

extern char** environ;

enum { kMaxEventFrame = 64 << 20, kConnectTimeoutMs = 20000, kWelcomeTimeoutMs = 10000 };

static const char* g_name = "vrun";
static char** g_argv;

/* ---- buffers ---- */
_Noreturn void lite_die(const char* what) {
  fprintf(stderr, "%s: %s\n", g_name, what);
  exit(kExitTidepoolFailed);
}

void buf_put(Buf* b, const void* data, size_t n) {
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + n + 1) cap *= 2;
    char* p = realloc(b->p, cap);
    if (!p) lite_die("out of memory");
    b->p = p, b->cap = cap;
  }
  if (n) memcpy(b->p + b->n, data, n);
  b->n += n;
  b->p[b->n] = 0;
}
void buf_str(Buf* b, const char* s) { buf_put(b, s, strlen(s)); }
void buf_clear(Buf* b) {
  b->n = 0;
  if (b->p) b->p[0] = 0;
}
const char* buf_cstr(const Buf* b) { return b->p ? b->p : ""; }

/* ---- identity and hand-over ---- */
void lite_init(const char* name, char** argv) {
  g_name = name;
  g_argv = argv;
}

int lite_tracing(void) {
  const char* t = getenv("TIDEPOOL_CLIENT_TRACE");
  return t && *t && strcmp(t, "0") != 0;
}

_Noreturn void lite_hand_over(const char* why) {
  g_argv[0] = (char*)g_name;
  lite_hand_over_argv(why, g_argv);
}

_Noreturn void lite_hand_over_argv(const char* why, char** argv) {
  if (lite_tracing()) fprintf(stderr, "tidepool-client: lite %s hands over: %s\n", g_name, why);
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  char path[4096 + 64];
  snprintf(path, sizeof(path), "tidepool-%s", g_name);
  if (n > 0) {
    self[n] = 0;
    char* slash = strrchr(self, '/');
    if (slash) {
      slash[1] = 0;
      snprintf(path, sizeof(path), "%stidepool-%s", self, g_name);
    }
  }
  execv(path, argv);
  char base[64];
  snprintf(base, sizeof(base), "tidepool-%s", g_name);
  execvp(base, argv);
  fprintf(stderr, "%s: cannot run %s: %s\n", g_name, path, strerror(errno));
  exit(kExitTidepoolFailed);
}

int lite_workspace_needed(long code, const char* message) {
  return code == 9 /* FAILED_PRECONDITION */ && strncmp(message, "workspace needed: ", 18) == 0;
}

_Noreturn void lite_hand_over_full(const char* why) {
  g_argv[0] = (char*)g_name; /* the full client dispatches on argv[0]'s basename */
  lite_hand_over_full_argv(why, g_argv);
}

_Noreturn void lite_hand_over_full_argv(const char* why, char** argv) {
  if (lite_tracing()) fprintf(stderr, "tidepool-client: lite %s hands over to the full client: %s\n", g_name, why);
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n > 0) {
    self[n] = 0;
    char* slash = strrchr(self, '/');
    if (slash) {
      char path[4096 + 16];
      slash[1] = 0;
      snprintf(path, sizeof(path), "%stidepool", self);
      execv(path, argv);
    }
  }
  execvp("tidepool", argv);
  fprintf(stderr, "%s: cannot run the full client tidepool: %s\n", g_name, strerror(errno));
  exit(kExitTidepoolFailed);
}

/* ---- options ---- */
int lite_options(int argc, char** argv, const LiteOption* options, size_t count) {
  int i = 1;
  for (; i < argc; ++i) {
    const char* w = argv[i];
    if (strcmp(w, "--") == 0) {
      ++i;
      break;
    }
    if (w[0] != '-' || !w[1]) break;
    const LiteOption* o = NULL;
    const char* value = NULL;
    for (size_t k = 0; k < count && !o; ++k) {
      const LiteOption* c = &options[k];
      size_t len = c->long_name ? strlen(c->long_name) : 0;
      if (w[1] == '-' && c->long_name && strncmp(w + 2, c->long_name, len) == 0) {
        if (w[2 + len] == 0) o = c;
        else if (w[2 + len] == '=' && c->value) o = c, value = w + 3 + len;
      } else if (w[1] != '-' && c->short_name == w[1]) {
        if (w[2] == 0) o = c;
        else if (c->value) o = c, value = w + 2;
      }
    }
    if (!o) lite_hand_over("an option it does not handle");
    if (o->flag) {
      if (*o->flag) lite_hand_over("an option given twice");
      *o->flag = 1;
      continue;
    }
    if (!value) {
      if (i + 1 >= argc) lite_hand_over("an option without a value");
      value = argv[++i];
    }
    if (*o->value || !*value || value[0] == '-' || value[0] == '=') lite_hand_over("an unusual option or value");
    *o->value = value;
  }
  if (i >= argc) lite_hand_over("no command");
  return i;
}

/* ---- protobuf wire format ---- */
static void varint(Buf* b, uint64_t v) {
  while (v >= 0x80) {
    char c = (char)(v | 0x80);
    buf_put(b, &c, 1);
    v >>= 7;
  }
  char c = (char)v;
  buf_put(b, &c, 1);
}
static void pb_bytes(Buf* b, int field, const char* s, size_t n) {
  varint(b, (uint64_t)field << 3 | 2);
  varint(b, n);
  buf_put(b, s, n);
}

/* Strict UTF-8 (RFC 3629), as fast_client.cc's IsUtf8: protobuf string fields require it. */
int lite_is_utf8(const unsigned char* s, size_t len) {
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

void spec_string(Spec* s, int field, const char* v, int even_if_empty) {
  size_t n = strlen(v);
  if (!n && !even_if_empty) return;
  s->utf8 = s->utf8 && lite_is_utf8((const unsigned char*)v, n);
  pb_bytes(&s->b, field, v, n);
}
void spec_int(Spec* s, int field, int64_t v) {
  if (v == 0) return;
  varint(&s->b, (uint64_t)field << 3);
  varint(&s->b, (uint64_t)v);
}
void spec_message(Spec* s, int field, const Buf* m) { pb_bytes(&s->b, field, buf_cstr(m), m->n); }

/* cli/client_env.cc's IsLocalOnlyVariable: the terminal's and the session's own. */
static int local_only(const char* kv, size_t keylen) {
  static const char* exact[] = {"TERM", "DISPLAY", "XAUTHORITY", "SHLVL", "_", "OLDPWD", "PWD", "TERMCAP", "COLUMNS", "LINES"};
  for (size_t i = 0; i < sizeof(exact) / sizeof(exact[0]); ++i) {
    if (strlen(exact[i]) == keylen && strncmp(kv, exact[i], keylen) == 0) return 1;
  }
  return (keylen >= 4 && strncmp(kv, "SSH_", 4) == 0) || (keylen >= 4 && strncmp(kv, "TMUX", 4) == 0);
}

/* An environment entry and where it stood in environ. */
typedef struct {
  const char* kv;
  size_t at;
} Var;

static int key_cmp(const char* x, const char* y) {
  for (;; ++x, ++y) {
    char cx = *x == '=' ? 0 : *x, cy = *y == '=' ? 0 : *y;
    if (cx != cy) return (unsigned char)cx - (unsigned char)cy;
    if (!cx) return 0;
  }
}
static int by_key_then_place(const void* a, const void* b) {
  const Var* x = a;
  const Var* y = b;
  int c = key_cmp(x->kv, y->kv);
  return c ? c : (x->at > y->at) - (x->at < y->at);
}

void spec_command(Spec* s, char** command) {
  for (char** a = command; *a; ++a) spec_string(s, kSpecArgv, *a, 1);
  char cwd[4096];
  if (!getcwd(cwd, sizeof(cwd))) strcpy(cwd, "/");
  spec_string(s, kSpecCwd, cwd, 0);
  /* Working in / : no workspace to bring (spec.cc's FillSpec): TaskSpec.workspace {none: true}. */
  if (strcmp(cwd, "/") == 0) pb_bytes(&s->b, kSpecWorkspace, "\x20\x01", 2);
  size_t count = 0;
  for (char** e = environ; e && *e; ++e) ++count;
  Var* vars = calloc(count + 2, sizeof(Var));
  char* pwd = malloc(strlen(cwd) + 5);
  if (!vars || !pwd) lite_die("out of memory");
  size_t used = 0;
  for (char** e = environ; e && *e; ++e) {
    const char* eq = strchr(*e, '=');
    if (!eq || local_only(*e, (size_t)(eq - *e))) continue;
    vars[used].kv = *e, vars[used].at = used, ++used;
  }
  sprintf(pwd, "PWD=%s", cwd);
  vars[used].kv = pwd, vars[used].at = used, ++used;
  /* The environment is a map (the C++ client's std::map): sorted by key, and of duplicate keys
   * the last one wins. */
  qsort(vars, used, sizeof(Var), by_key_then_place);
  for (size_t i = 0; i < used; ++i) {
    if (i + 1 < used && key_cmp(vars[i].kv, vars[i + 1].kv) == 0) continue;
    const char* kv = vars[i].kv;
    const char* eq = strchr(kv, '=');
    Buf entry = {0};
    pb_bytes(&entry, 1, kv, (size_t)(eq - kv));
    if (eq[1]) pb_bytes(&entry, 2, eq + 1, strlen(eq + 1));
    s->utf8 = s->utf8 && lite_is_utf8((const unsigned char*)kv, strlen(kv));
    spec_message(s, kSpecEnv, &entry);
    free(entry.p);
  }
  free(pwd);
  free(vars);
}

void spec_parent(Spec* s) {
  const char* parent = getenv("TIDEPOOL_TASK_ID");
  if (parent) spec_string(s, kSpecParent, parent, 0);
}

long lite_plain_int(const char* s) {
  size_t n = strlen(s);
  if (n == 0 || n > 9 || (s[0] == '0' && n > 1)) return -1;
  for (size_t i = 0; i < n; ++i) {
    if (s[i] < '0' || s[i] > '9') return -1;
  }
  return atol(s);
}

/* ---- the connection ---- */
int lite_send_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return 0;
    p += w, n -= (size_t)w;
  }
  return 1;
}
void lite_write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    p += w, n -= (size_t)w;
  }
}
void lite_frame(Buf* out, int type, const char* payload, size_t n) {
  unsigned char h[5] = {(unsigned char)(n >> 24), (unsigned char)(n >> 16), (unsigned char)(n >> 8), (unsigned char)n,
                        (unsigned char)type};
  buf_put(out, h, 5);
  buf_put(out, payload, n);
}

/* poll() for input on fd, through EINTR: > 0 ready (or closed), 0 timed out, < 0 failed. */
static int poll_in(int fd, int timeout_ms) {
  struct pollfd pfd = {fd, POLLIN, 0};
  int r;
  do {
    r = poll(&pfd, 1, timeout_ms);
  } while (r < 0 && errno == EINTR);
  return r;
}

/* Exactly n bytes from the connection's buffer or socket. */
static int conn_read(Conn* c, char* out, size_t n, int timeout_ms) {
  while (n > 0) {
    if (c->pos == c->len) {
      if (timeout_ms >= 0 && poll_in(c->fd, timeout_ms) <= 0) return 0;
      ssize_t got = recv(c->fd, c->buf, sizeof(c->buf), 0);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) return 0;
      c->pos = 0;
      c->len = (size_t)got;
    }
    size_t take = c->len - c->pos < n ? c->len - c->pos : n;
    memcpy(out, c->buf + c->pos, take);
    c->pos += take, out += take, n -= take;
  }
  return 1;
}

int conn_read_frame(Conn* c, int* type, Buf* payload, int timeout_ms, int* oversize) {
  unsigned char h[5];
  if (!conn_read(c, (char*)h, 5, timeout_ms)) return 0;
  uint32_t n = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
  if (n > kMaxEventFrame) {
    if (oversize) *oversize = 1;
    return 0;
  }
  *type = h[4];
  buf_clear(payload);
  buf_put(payload, "", 0);
  if (payload->cap < n + 1) {
    char* p = realloc(payload->p, n + 1);
    if (!p) lite_die("out of memory");
    payload->p = p, payload->cap = n + 1;
  }
  if (!conn_read(c, payload->p, n, timeout_ms)) return 0;
  payload->n = n;
  payload->p[n] = 0;
  return 1;
}

/* "HOST:PORT" with a plain host name, IPv4 or [IPv6] address, as fast_client.cc's SplitAddress;
 * anything else (gRPC targets such as unix:PATH or dns:///NAME) is for the full client. */
static int split_address(const char* address, char* host, size_t host_size, const char** port) {
  const char* colon = strrchr(address, ':');
  if (!colon || !colon[1]) return 0;
  for (const char* c = colon + 1; *c; ++c) {
    if (*c < '0' || *c > '9') return 0;
  }
  size_t len = (size_t)(colon - address);
  if (len == 0 || len >= host_size) return 0;
  memcpy(host, address, len);
  host[len] = 0;
  *port = colon + 1;
  if (len > 2 && host[0] == '[' && host[len - 1] == ']') {
    memmove(host, host + 1, len - 2);
    host[len - 2] = 0;
    for (const char* c = host; *c; ++c) {
      if (!strchr("0123456789abcdefABCDEF:.", *c)) return 0;
    }
    return 1;
  }
  for (const char* c = host; *c; ++c) {
    int ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '.' ||
             *c == '-' || *c == '_';
    if (!ok) return 0;
  }
  return 1;
}

/* A connected socket, as fast_client.cc's Connection::Connect (TCP_NODELAY, keepalive so that a
 * vanished server is noticed); -1 if the server cannot be reached. */
static int dial(const char* host, const char* port) {
  struct addrinfo hints = {0}, *res = NULL;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  if (getaddrinfo(host, port, &hints, &res) != 0) return -1;
  int fd = -1;
  for (struct addrinfo* ai = res; ai; ai = ai->ai_next) {
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) continue;
    int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
      struct pollfd p = {fd, POLLOUT, 0};
      int err = 0;
      socklen_t elen = sizeof(err);
      if (poll(&p, 1, kConnectTimeoutMs) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) == 0 && err == 0) {
        rc = 0;
      }
    }
    if (rc == 0) break;
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0) return -1;
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  int one = 1, idle = 20, intvl = 10, cnt = 3;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
  return fd;
}

int lite_await(Conn* c, const char* address) {
  static int told = 0;
  if (c->pos < c->len || told) return told;
  if (poll_in(c->fd, kWelcomeTimeoutMs) == 0) {
    fprintf(stderr, "tidepool: the server at %s has not answered for %d s; still waiting while the connection is open\n",
            address, kWelcomeTimeoutMs / 1000);
    told = 1;
  }
  return told;
}

void lite_lost_unanswered(const char* address) {
  fprintf(stderr, "tidepool: the connection to the server at %s ended before it answered; the request may have been taken\n",
          address);
  exit(kExitTidepoolFailed);
}

static const char* g_server = "";
static const char* g_token = "";
const char* lite_server(void) { return g_server; }
const char* lite_token(void) { return g_token; }

void lite_open(Conn* c, const char** address_out, int type, const Buf* request) {
  const char* tls = getenv("TIDEPOOL_TLS_CA");
  if (tls && *tls) lite_hand_over("TLS");
  const char* token = getenv("TIDEPOOL_TOKEN");
  if (!token || !*token) {
    /* ~/.config/tidepool/token is the C++ client's to read (trimming, encodings). */
    const char* home = getenv("HOME");
    char path[4096];
    if (home && snprintf(path, sizeof(path), "%s/.config/tidepool/token", home) < (int)sizeof(path) &&
        access(path, F_OK) == 0) {
      lite_hand_over("a token file");
    }
    token = "";
  }
  if (!lite_is_utf8((const unsigned char*)token, strlen(token))) lite_hand_over("a token that is not UTF-8");
  const char* server = getenv("TIDEPOOL_SERVER");
  const char* address = server && *server ? server : "127.0.0.1:7700";
  char host[256];
  const char* port = NULL;
  if (!split_address(address, host, sizeof(host), &port)) lite_hand_over("a server address that is not HOST:PORT");
  struct in6_addr scratch;
  if (strcmp(host, "localhost") != 0 && inet_pton(AF_INET, host, &scratch) != 1 && inet_pton(AF_INET6, host, &scratch) != 1) {
    /* As the static C++ client: names go to the full client, which resolves them with the
     * system's resolver configuration (nsswitch), which a static program cannot honour. */
    lite_hand_over("a server address given as a name");
  }
  c->fd = dial(host, port);
  c->pos = c->len = 0;
  if (c->fd < 0) {
    fprintf(stderr, "tidepool: cannot reach the server at %s\n", address);
    exit(kExitTidepoolFailed);
  }
  Buf out = {0}, hello = {0};
  buf_put(&out, "TPF1", 4);
  buf_str(&hello, "{\"v\":1");
  if (*token) {
    buf_str(&hello, ",\"token\":");
    json_quote(&hello, token);
  }
  buf_str(&hello, "}");
  lite_frame(&out, kHello, hello.p, hello.n);
  lite_frame(&out, type, buf_cstr(request), request->n);
  if (!lite_send_all(c->fd, out.p, out.n)) lite_hand_over("the hello was not taken");
  free(out.p);
  free(hello.p);
  /* The request is on its way: from here on a server that says nothing is not handed over (it
   * may yet take the request, and the hand-over would send it again). Nor is it given up on while
   * the connection is open: a server that does not answer is frozen or busy, not gone, and will
   * read the request when it runs again. The user is told once; only a connection that ends
   * without an answer after that makes the client give up, saying the request may have been taken. */
  int told = lite_await(c, address);
  char m[4];
  Buf payload = {0};
  int answer = 0;
  if (!conn_read(c, m, 4, -1)) {
    if (told) lite_lost_unanswered(address);
    lite_hand_over("no welcome"); /* closed at once: an old server or a refusal, the C++ client says which */
  }
  if (memcmp(m, "TPF1", 4) != 0 || !conn_read_frame(c, &answer, &payload, -1, NULL) || answer != kWelcome) {
    lite_hand_over("no welcome"); /* refusals and old servers: the C++ client says what happened */
  }
  free(payload.p);
  if (lite_tracing()) fprintf(stderr, "tidepool-client: fast path (lite, %s)\n", address);
  *address_out = address;
  g_server = address;
  g_token = token;
}

int lite_report_failure(long code, const char* message, const char* address) {
  switch (code) {
    case kStatusUnavailable:
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
