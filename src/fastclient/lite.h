/* What the C clients (vrun_lite.c, vbatch_lite.c) share: static musl programs for the common
 * case of `vrun` and `vbatch`.
 *
 * Why C against musl: on the machines measured here every glibc process pays ~1 ms of CPU before
 * main (its cache-size probing runs ~40 `cpuid` instructions, each a hypervisor trap); a static
 * musl program starts in ~0.05 ms. Debian has no musl libstdc++, hence C. See
 * docs/benchmarks.md, "Process start here".
 *
 * Contract: a lite client speaks the fast protocol (src/common/fast_protocol.h) exactly as the
 * C++ fast client (src/fastclient/fast_client.cc) does: the same TaskSpec bytes, the same
 * messages and exit statuses. Anything it does not handle (another option, TLS, a token file,
 * text that is not UTF-8, no welcome from the server) it hands, with the same arguments, to that
 * client, installed beside it as `tidepool-vrun` / `tidepool-vbatch`, which handles it or falls
 * back in turn to the full client. Nothing that has taken effect is handed over: the request goes
 * behind the hello, and the server acts on it only after its welcome.
 */
#ifndef TIDEPOOL_FASTCLIENT_LITE_H_
#define TIDEPOOL_FASTCLIENT_LITE_H_

#include <stddef.h>
#include <stdint.h>

/* Frame types (fast_protocol.h). */
enum {
  kHello = 1, kRun = 2, kSubmit = 3, kStdin = 4, kStdinEof = 5, kSignal = 6, kResize = 7, kCancel = 8,
  kWelcome = 64, kAccepted = 65, kWaiting = 66, kStarted = 67, kStdout = 68, kStderr = 69, kExited = 70,
  kStdinWritten = 71, kSubmitted = 72, kFinish = 73,
};
enum { kExitTidepoolFailed = 255 };
enum { kStatusUnknown = 2, kStatusUnavailable = 14 }; /* gRPC status codes, as FINISH carries them */

/* ---- a growable byte buffer; p is NUL-terminated once anything was put ---- */
typedef struct {
  char* p;
  size_t n, cap;
} Buf;
void buf_put(Buf* b, const void* data, size_t n);
void buf_str(Buf* b, const char* s);
void buf_clear(Buf* b);
const char* buf_cstr(const Buf* b); /* "" when empty */

/* ---- who we are, and the hand-over ---- */
/* `name` is "vrun" or "vbatch"; the C++ client is then `tidepool-<name>`. */
void lite_init(const char* name, char** argv);
int lite_tracing(void);
/* Replaces this process with the C++ fast client, same arguments. */
_Noreturn void lite_hand_over(const char* why);
/* The same with other arguments (argv[0] the client's name, NULL-terminated). */
_Noreturn void lite_hand_over_argv(const char* why, char** argv);
/* The FINISH of a refused request says the pool brings the caller's files (workspace/protocol.h's
 * kWorkspaceNeeded), which only the full client sends: hands over to `tidepool` itself. */
int lite_workspace_needed(long code, const char* message);
_Noreturn void lite_hand_over_full(const char* why);
/* The same with other arguments (argv[0] the client's name, NULL-terminated). */
_Noreturn void lite_hand_over_full_argv(const char* why, char** argv);
/* A fatal local error (out of memory): says so and exits 255. */
_Noreturn void lite_die(const char* what);

/* ---- options: the few each lite client reads itself ---- */
typedef struct {
  char short_name;       /* 0: none */
  const char* long_name; /* NULL: none */
  const char** value;    /* an option with a value (-Xvalue, -X value, --long=value, --long value) */
  int* flag;             /* or a flag (-X, --long) */
} LiteOption;
/* Reads the options before the command; returns the index of the command's first word. Hands
 * over anything else: an unknown option, flags run together (-Iq), a repeated option, a value
 * that is empty or looks like an option, no command. */
int lite_options(int argc, char** argv, const LiteOption* options, size_t count);

/* ---- the TaskSpec (proto/tidepool/v1/common.proto), in protobuf's wire format as
 * fast_client.cc's ProtoWriter writes it: proto3 defaults left out ---- */
enum {
  kSpecArgv = 1, kSpecCwd = 2, kSpecEnv = 3, kSpecPool = 4, kSpecName = 5, kSpecKind = 8, kSpecTty = 9,
  kSpecTerminalSize = 10, kSpecTerm = 11, kSpecStdinNull = 12, kSpecParent = 14, kSpecShards = 15,
  kSpecWorkspace = 24,
};
enum { kTaskKindInteractive = 1, kTaskKindBatch = 2 };
typedef struct {
  Buf b;
  int utf8; /* 0 once a string field was not valid UTF-8: the C++ client's to handle */
} Spec;
void spec_string(Spec* s, int field, const char* v, int even_if_empty);
void spec_int(Spec* s, int field, int64_t v);
void spec_message(Spec* s, int field, const Buf* m);
/* argv, cwd and the environment (the local-only variables left out, PWD = cwd), as BuildSpec. */
void spec_command(Spec* s, char** command);
/* The task's parent ($TIDEPOOL_TASK_ID), written where BuildSpec writes it. */
void spec_parent(Spec* s);
/* A plain decimal int as fast_client.cc's PlainInt (no sign); -1 = not one. */
long lite_plain_int(const char* s);
int lite_is_utf8(const unsigned char* s, size_t n);

/* ---- JSON: the flat objects the server sends ---- */
/* The member `key` of a flat JSON object: a string (decoded, into *out) ... */
int json_string_member(const char* p, size_t n, const char* key, Buf* out);
/* ... an integer (0 if absent or not one) or a boolean (false if absent). */
long json_int_member(const char* p, size_t n, const char* key);
int json_bool_member(const char* p, size_t n, const char* key);
/* Appends `s` as a JSON string literal. */
void json_quote(Buf* out, const char* s);

/* ---- the connection ---- */
typedef struct {
  int fd;
  size_t pos, len;
  char buf[64 * 1024];
} Conn;
/* Dials the server ($TIDEPOOL_SERVER, else 127.0.0.1:7700) and says hello with $TIDEPOOL_TOKEN,
 * with the request (a frame of `type`) behind it in the same write: no round trip is spent on the
 * hello alone. The server reads no frame past a hello it does not welcome, so the request takes
 * effect only once welcomed. Returns only with a WELCOME; hands over otherwise (TLS, a token file,
 * a refusal, an old server: the C++ client reports as the full client does), except a server that
 * says nothing: that one may yet take the request, so it is never handed over (which would send
 * it twice). After 10 s of silence the user is told, once, and the client keeps waiting while the
 * connection is open (a frozen server is still there); a connection that then ends without an
 * answer exits 255 saying the request may have been taken. *address is the server's address. */
void lite_open(Conn* c, const char** address, int type, const Buf* request);
/* Waits up to 10 s for the server's next bytes; if none came, tells the user (once per process)
 * that the server has not answered yet and the client keeps waiting. Returns whether it told. */
int lite_await(Conn* c, const char* address);
/* The connection ended with the request sent and no answer: says it may have been taken, exits 255. */
void lite_lost_unanswered(const char* address);
/* One frame into *payload (NUL-terminated); 0 on a closed or broken connection, or a frame over
 * the limit (then *oversize, when given). timeout_ms < 0 waits for ever. */
int conn_read_frame(Conn* c, int* type, Buf* payload, int timeout_ms, int* oversize);
/* Appends a frame (header and payload) to out. */
void lite_frame(Buf* out, int type, const char* payload, size_t n);
/* Writes all of it to fd (a socket: no SIGPIPE); 0 once the connection broke. */
int lite_send_all(int fd, const char* p, size_t n);
/* Writes all of it to fd (stdout, stderr), quietly giving up on a reader that went away. */
void lite_write_all(int fd, const char* p, size_t n);

/* The server address and token lite_open used ("" before it). */
const char* lite_server(void);
const char* lite_token(void);

/* ---- the workspace daemon (cli/workspace_daemon.h: the protocol) ---- */
/* Asks this user's workspace daemon: sends `request` (one JSON object, no newline), prints each
 * {"say": LINE} answer on stderr, and puts the final {"done": true, ...} line in *done. 0 when
 * there is no daemon (or TIDEPOOL_WORKSPACE_DAEMON=0), it is another user's, or it ended without
 * that line. */
int lite_daemon_ask(const Buf* request, Buf* done);
/* Starts a request's JSON: {"v":1,"op":OP,"server":...,"token":... (the caller adds its members and "}"). */
void lite_daemon_request(Buf* req, const char* op);
/* The server refused `spec` with `workspace needed:` (nothing took effect): asks the daemon to put
 * the caller's workspace on the server (Settings asked for the pool and kind the spec names) and
 * appends the reference it names to the spec (TaskSpec.workspace); the manifest's hash goes into
 * *base. 0: no daemon to ask, or it says to ask the full client. A workspace that cannot go (too
 * large, unreadable) is said here, as the full client would, and the client exits 255. */
int lite_workspace_from_daemon(Spec* spec, const char* pool, int quiet, int batch, Buf* base);

/* cli/client_env.cc's ReportFailure, the exit status as the fast clients map it (255). */
int lite_report_failure(long code, const char* message, const char* address);

#endif /* TIDEPOOL_FASTCLIENT_LITE_H_ */
