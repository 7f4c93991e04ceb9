/* vrun, the common case, in C against musl (why and the contract: lite.h).
 *
 * `vrun [-P POOL] [--name NAME] [-I] [-q] [--tty auto|yes|no] [--] COMMAND...`, the server and
 * token from the environment; anything else goes to `tidepool-vrun`, the C++ fast client. What
 * it does is fast_client.cc's RunSession, thread for thread: the main thread reads the server's
 * events (output, progress, the exit status), one thread forwards stdin (at most 1 MiB unacknowledged),
 * one takes the forwarded signals (Ctrl-C while queued withdraws the task; twice within a
 * second once running kills it) and redraws the progress line.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "lite.h"

enum { kStdinWindow = 1 << 20 }; /* as run.cc: stdin bytes in flight before we wait */

static struct {
  Conn conn;
  const char* address;
  int tty, quiet, noinput;

  pthread_mutex_t write_mu; /* the socket's writers: this thread, stdin's, signals' */
  int write_closed;

  pthread_mutex_t mu; /* everything below */
  pthread_cond_t stdin_cv;
  int started;
  Buf task_id;
  int waiting;
  Buf pool, allocation_error, starting_detail;
  long starting, idle, position;
  Buf shown_errors; /* allocation errors already printed, NUL-separated */
  struct timespec begun;
  int progress_shown, printed_once;
  Buf last_plain_line;
  uint64_t stdin_sent, stdin_acked;
  uint64_t received[2]; /* stdout, stderr bytes written out: where a reattach takes up */
  atomic_int cancel_sent;
  atomic_int kill_sent; /* a second Ctrl-C: the exit status is 130 whoever exits first */
  int has_last_int;
  struct timespec last_int;

  Buf base; /* the workspace manifest sent, from the workspace daemon ("" = none) */

  atomic_int raw; /* stdin is in raw mode; exactly one Restore puts it back */
  struct termios saved;
} S = {.write_mu = PTHREAD_MUTEX_INITIALIZER, .mu = PTHREAD_MUTEX_INITIALIZER, .stdin_cv = PTHREAD_COND_INITIALIZER};

static double seconds_since(const struct timespec* t) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)(now.tv_sec - t->tv_sec) + (double)(now.tv_nsec - t->tv_nsec) / 1e9;
}

/* Any thread. 0 once the connection broke (later frames are dropped, as fast_client.cc's). */
static int send_frame(int type, const char* payload, size_t n) {
  Buf out = {0};
  lite_frame(&out, type, payload, n);
  pthread_mutex_lock(&S.write_mu);
  int ok = !S.write_closed && lite_send_all(S.conn.fd, out.p, out.n);
  if (!ok) S.write_closed = 1;
  pthread_mutex_unlock(&S.write_mu);
  free(out.p);
  return ok;
}

/* ---- the terminal (common/terminal_io.h's RawTerminal) ---- */
static void make_raw(void) {
  if (tcgetattr(STDIN_FILENO, &S.saved) != 0) return;
  struct termios t = S.saved;
  cfmakeraw(&t);
  if (tcsetattr(STDIN_FILENO, TCSANOW, &t) == 0) atomic_store(&S.raw, 1);
}
static void restore_terminal(void) {
  if (atomic_exchange(&S.raw, 0)) tcsetattr(STDIN_FILENO, TCSANOW, &S.saved);
}
static int window_size(unsigned short* rows, unsigned short* cols) {
  struct winsize ws = {0};
  if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 || ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0) {
    *rows = ws.ws_row, *cols = ws.ws_col;
    return 1;
  }
  *rows = *cols = 0;
  return 0;
}

_Noreturn static void finish_with(int rc) {
  /* The killed task's end may reach the reader before the signal thread exits. */
  if (atomic_load(&S.kill_sent)) rc = 130;
  restore_terminal();
  fflush(stdout);
  fflush(stderr);
  _exit(rc); /* threads may sit in blocking reads (stdin): end without waiting for them */
}

/* ---- the progress line (cli/client_env.cc's WaitingLine, WaitingProgress) ---- */
static void clear_progress_locked(void) {
  if (S.progress_shown) fputs("\r\033[K", stderr);
  S.progress_shown = 0;
}
static void clear_progress(void) {
  pthread_mutex_lock(&S.mu);
  clear_progress_locked();
  pthread_mutex_unlock(&S.mu);
}
static void draw_progress_locked(int changed) {
  if (S.quiet || S.started || !S.waiting) return;
  double elapsed = seconds_since(&S.begun);
  if (elapsed < 1) return;
  char line[1024], detail[512] = "";
  if (S.starting_detail.n) snprintf(detail, sizeof(detail), " (%s)", buf_cstr(&S.starting_detail));
  snprintf(line, sizeof(line), "waiting for a worker in pool %s: %ld starting%s, %ld idle, position %ld in queue",
           buf_cstr(&S.pool), S.starting, detail, S.idle, S.position);
  if (isatty(STDERR_FILENO)) {
    fprintf(stderr, "\r\033[K%s (%ds)", line, (int)elapsed);
    S.progress_shown = 1;
  } else if (changed || !S.printed_once) {
    if (strcmp(line, buf_cstr(&S.last_plain_line)) != 0) fprintf(stderr, "%s\n", line);
    buf_clear(&S.last_plain_line);
    buf_str(&S.last_plain_line, line);
    S.printed_once = 1;
  }
}
/* True the first time this allocation error is seen. */
static int first_sight_locked(const char* error) {
  for (size_t at = 0; at < S.shown_errors.n; at += strlen(S.shown_errors.p + at) + 1) {
    if (strcmp(S.shown_errors.p + at, error) == 0) return 0;
  }
  buf_put(&S.shown_errors, error, strlen(error) + 1);
  return 1;
}

/* ---- the threads ---- */
static void* stdin_loop(void* unused) {
  (void)unused;
  static char buf[64 * 1024];
  for (;;) {
    ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      send_frame(kStdinEof, "", 0);
      return NULL;
    }
    pthread_mutex_lock(&S.mu);
    while (S.stdin_sent - S.stdin_acked >= kStdinWindow) pthread_cond_wait(&S.stdin_cv, &S.mu);
    S.stdin_sent += (uint64_t)n;
    pthread_mutex_unlock(&S.mu);
    send_frame(kStdin, buf, (size_t)n);
  }
}

static void forwarded_signals(sigset_t* sigs) {
  sigemptyset(sigs);
  int list[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGWINCH};
  for (size_t i = 0; i < sizeof(list) / sizeof(list[0]); ++i) sigaddset(sigs, list[i]);
}

static void send_signal(int sig) {
  char json[32];
  int n = snprintf(json, sizeof(json), "{\"signal\":%d}", sig);
  send_frame(kSignal, json, (size_t)n);
}

static void* signal_loop(void* unused) {
  (void)unused;
  sigset_t sigs;
  forwarded_signals(&sigs);
  struct timespec tick = {0, 250 * 1000 * 1000};
  for (;;) {
    int sig = sigtimedwait(&sigs, NULL, &tick);
    if (sig < 0) {
      pthread_mutex_lock(&S.mu);
      draw_progress_locked(0);
      pthread_mutex_unlock(&S.mu);
      continue;
    }
    pthread_mutex_lock(&S.mu);
    int started = S.started;
    pthread_mutex_unlock(&S.mu);
    if (sig == SIGWINCH) {
      unsigned short rows, cols;
      if (S.tty && started) {
        window_size(&rows, &cols);
        char json[64];
        int n = snprintf(json, sizeof(json), "{\"cols\":%u,\"rows\":%u}", cols, rows);
        send_frame(kResize, json, (size_t)n);
      }
      continue;
    }
    if (!started) {
      /* Still queued: the request is withdrawn and the server forgets it. */
      atomic_store(&S.cancel_sent, 1);
      send_frame(kCancel, "", 0);
      continue;
    }
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (sig == SIGINT && S.has_last_int && seconds_since(&S.last_int) < 1) {
      atomic_store(&S.kill_sent, 1);
      send_signal(SIGKILL);
      clear_progress();
      finish_with(130);
    }
    if (sig == SIGINT) S.has_last_int = 1, S.last_int = now;
    send_signal(sig);
  }
}

/* cli/client_env.cc's RunExitStatus. */
static int exit_status(const char* p, size_t n) {
  Buf state = {0}, reason = {0};
  json_string_member(p, n, "state", &state);
  json_string_member(p, n, "reason", &reason);
  pthread_mutex_lock(&S.mu);
  const char* id = buf_cstr(&S.task_id);
  pthread_mutex_unlock(&S.mu);
  if (strcmp(buf_cstr(&state), "SUCCESS") == 0) return 0;
  if (json_bool_member(p, n, "command_not_found")) {
    fprintf(stderr, "%s\n", buf_cstr(&reason));
    return 127;
  }
  if (strcmp(buf_cstr(&state), "CANCELLED") == 0) {
    if (!atomic_load(&S.cancel_sent) && !S.quiet) fprintf(stderr, "tidepool: task %s was cancelled\n", id);
    return 130;
  }
  if (strcmp(buf_cstr(&reason), "timeout") == 0 && !S.quiet) fprintf(stderr, "tidepool: task %s timed out\n", id);
  long sig = json_int_member(p, n, "signal");
  if (sig > 0) return (int)(128 + sig);
  if (json_bool_member(p, n, "has_exit_code")) return (int)json_int_member(p, n, "exit_code");
  fprintf(stderr, "tidepool: task %s failed: %s\n", id, buf_cstr(&reason));
  return kExitTidepoolFailed;
}

/* The server went away after taking the task: the C++ client reconnects and takes the task up
 * from the bytes written out so far (run_session.h), in this process and terminal. */
static _Noreturn void reattach(void) {
  char offsets[64];
  snprintf(offsets, sizeof(offsets), "%llu,%llu", (unsigned long long)S.received[0], (unsigned long long)S.received[1]);
  char* argv[12];
  int n = 0;
  argv[n++] = "vrun";
  argv[n++] = "--reattach";
  argv[n++] = (char*)buf_cstr(&S.task_id);
  argv[n++] = "--reattach-offsets";
  argv[n++] = offsets;
  argv[n++] = "--tty";
  argv[n++] = S.tty ? "yes" : "no";
  if (S.quiet) argv[n++] = "-q";
  if (S.noinput) argv[n++] = "-I";
  argv[n] = NULL;
  restore_terminal(); /* the C++ client makes it raw again, and puts back what it found */
  fflush(stdout);
  /* A task with a workspace: the full client, which brings its changes back at the end. */
  if (S.base.n) lite_hand_over_full_argv("the server went away", argv);
  lite_hand_over_argv("the server went away", argv);
}

/* ---- the workspace, through the workspace daemon (cli/workspace_daemon.h) ---- */
/* The task's changes into the caller's tree before vrun exits; what could not come back is said
 * (by the daemon), with how to settle it. */
static void bring_back(const char* result) {
  Buf req = {0}, done = {0};
  lite_daemon_request(&req, "bring_back");
  buf_str(&req, ",\"base\":");
  json_quote(&req, buf_cstr(&S.base));
  buf_str(&req, ",\"result\":");
  json_quote(&req, result);
  buf_str(&req, ",\"task\":");
  pthread_mutex_lock(&S.mu);
  json_quote(&req, buf_cstr(&S.task_id));
  pthread_mutex_unlock(&S.mu);
  buf_str(&req, "}");
  if (!lite_daemon_ask(&req, &done)) {
    fprintf(stderr,
            "tidepool: the task's workspace changes were not brought back: the workspace daemon did not answer "
            "(`tidepool task sync %s` tries again)\n",
            buf_cstr(&S.task_id));
  }
  free(req.p);
  free(done.p);
}

/* One event; an exit status when the session is over, else -1. */
static int handle(int type, const Buf* payload) {
  const char* p = buf_cstr(payload);
  size_t n = payload->n;
  switch (type) {
    case kStdout:
    case kStderr:
      lite_write_all(type == kStderr ? STDERR_FILENO : STDOUT_FILENO, p, n);
      S.received[type == kStderr] += n;
      return -1;
    case kAccepted:
      pthread_mutex_lock(&S.mu);
      json_string_member(p, n, "task_id", &S.task_id);
      pthread_mutex_unlock(&S.mu);
      return -1;
    case kWaiting:
      pthread_mutex_lock(&S.mu);
      S.waiting = 1;
      buf_clear(&S.pool);
      buf_clear(&S.allocation_error);
      buf_clear(&S.starting_detail);
      json_string_member(p, n, "starting_detail", &S.starting_detail);
      json_string_member(p, n, "pool", &S.pool);
      json_string_member(p, n, "allocation_error", &S.allocation_error);
      S.starting = json_int_member(p, n, "starting");
      S.idle = json_int_member(p, n, "idle");
      S.position = json_int_member(p, n, "position");
      if (S.allocation_error.n && first_sight_locked(S.allocation_error.p) && !S.quiet) {
        clear_progress_locked();
        fprintf(stderr, "tidepool: pool %s: %s\n", buf_cstr(&S.pool), S.allocation_error.p);
      }
      draw_progress_locked(1);
      pthread_mutex_unlock(&S.mu);
      return -1;
    case kStarted: {
      pthread_mutex_lock(&S.mu);
      clear_progress_locked();
      int first = !S.started;
      S.started = 1;
      pthread_mutex_unlock(&S.mu);
      if (!first) return -1;
      if (S.tty && isatty(STDIN_FILENO)) make_raw();
      pthread_t t;
      if (!S.noinput && pthread_create(&t, NULL, stdin_loop, NULL) == 0) pthread_detach(t);
      return -1;
    }
    case kStdinWritten:
      pthread_mutex_lock(&S.mu);
      S.stdin_acked = (uint64_t)json_int_member(p, n, "written");
      pthread_cond_broadcast(&S.stdin_cv);
      pthread_mutex_unlock(&S.mu);
      return -1;
    case kExited: {
      clear_progress();
      restore_terminal();
      /* A result equal to what was sent: the task changed nothing (no download, no diff). */
      Buf result = {0};
      json_string_member(p, n, "workspace_result", &result);
      if (S.base.n && result.n && strcmp(result.p, S.base.p) != 0) bring_back(buf_cstr(&result));
      free(result.p);
      return exit_status(p, n);
    }
    default:
      return -1; /* a newer server's event this client does not know */
  }
}

int main(int argc, char** argv) {
  lite_init("vrun", argv);
  const char *pool = NULL, *name = NULL, *tty_mode = NULL;
  int noinput = 0, quiet = 0;
  const LiteOption options[] = {
      {'P', "pool", &pool, NULL}, {0, "name", &name, NULL},     {0, "tty", &tty_mode, NULL},
      {'I', "noinput", NULL, &noinput}, {'q', "quiet", NULL, &quiet},
  };
  int i = lite_options(argc, argv, options, sizeof(options) / sizeof(options[0]));
  if (!tty_mode) tty_mode = "auto";
  int tty;
  if (strcmp(tty_mode, "yes") == 0) tty = 1;
  else if (strcmp(tty_mode, "no") == 0) tty = 0;
  else if (strcmp(tty_mode, "auto") == 0) tty = isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
  else lite_hand_over("--tty"); /* the full client names what is wrong with it */

  /* The TaskSpec as fast_client.cc's BuildSpec writes it for vrun. */
  Spec spec = {{0}, 1};
  spec_command(&spec, argv + i);
  spec_string(&spec, kSpecPool, pool ? pool : "", 0);
  spec_string(&spec, kSpecName, name ? name : "", 0);
  spec_int(&spec, kSpecKind, kTaskKindInteractive);
  spec_int(&spec, kSpecTty, tty);
  if (tty) {
    Spec size = {{0}, 1};
    unsigned short rows, cols;
    if (window_size(&rows, &cols)) {
      spec_int(&size, 1, rows);
      spec_int(&size, 2, cols);
    }
    spec_message(&spec, kSpecTerminalSize, &size.b);
    const char* term = getenv("TERM");
    spec_string(&spec, kSpecTerm, term && *term ? term : "xterm", 0);
  }
  spec_int(&spec, kSpecStdinNull, noinput);
  spec_parent(&spec);
  if (!spec.utf8) lite_hand_over("text that is not UTF-8");

  clock_gettime(CLOCK_MONOTONIC, &S.begun);
  lite_open(&S.conn, &S.address, kRun, &spec.b); /* the request goes with the hello */
  S.tty = tty, S.quiet = quiet, S.noinput = noinput;

  /* As run.cc: the forwarded signals are taken by the signal thread only (every thread inherits
   * the mask), and a closed stdout is not fatal. */
  sigset_t sigs;
  forwarded_signals(&sigs);
  pthread_sigmask(SIG_BLOCK, &sigs, NULL);
  signal(SIGPIPE, SIG_IGN);
  pthread_t t;
  if (pthread_create(&t, NULL, signal_loop, NULL) == 0) pthread_detach(t);

again:;
  int type = 0, oversize = 0;
  long code = kStatusUnavailable;
  Buf payload = {0}, message = {0};
  buf_str(&message, "the connection to the server was lost");
  int finished = 0;
  /* Until the acceptance, a server that does not answer is waited for (lite_await); after it, a
   * silent task is nothing to remark on. Only this thread sets the task id. */
  while ((S.task_id.n > 0 || lite_await(&S.conn, S.address) >= 0) &&
         conn_read_frame(&S.conn, &type, &payload, -1, &oversize)) {
    if (type == kFinish) {
      code = json_int_member(payload.p, payload.n, "code");
      buf_clear(&message);
      json_string_member(payload.p, payload.n, "message", &message);
      finished = 1;
      break;
    }
    int rc = handle(type, &payload);
    if (rc >= 0) finish_with(rc);
  }
  if (oversize) {
    code = kStatusUnknown;
    buf_clear(&message);
    buf_str(&message, "a reply from the server was over the size limit");
  }
  clear_progress();
  if (atomic_load(&S.cancel_sent)) finish_with(130);
  if (!finished && !oversize && S.task_id.n == 0) {
    restore_terminal();
    lite_lost_unanswered(S.address); /* welcomed, the request sent, and no acceptance: it may have been taken */
  }
  if (code != 0 && S.task_id.n == 0 && lite_workspace_needed(code, buf_cstr(&message))) {
    restore_terminal();
    /* Refused, so nothing took effect: once more with the workspace, if the daemon has it. */
    if (S.base.n == 0 && lite_workspace_from_daemon(&spec, pool, quiet, 0, &S.base)) {
      if (atomic_load(&S.cancel_sent)) finish_with(130); /* Ctrl-C while it was brought */
      pthread_mutex_lock(&S.write_mu);
      close(S.conn.fd);
      S.write_closed = 1; /* the signal thread writes nothing until the new connection is up */
      pthread_mutex_unlock(&S.write_mu);
      lite_open(&S.conn, &S.address, kRun, &spec.b);
      pthread_mutex_lock(&S.write_mu);
      S.write_closed = 0;
      pthread_mutex_unlock(&S.write_mu);
      free(payload.p);
      free(message.p);
      goto again;
    }
    lite_hand_over_full(buf_cstr(&message));
  }
  if (code != 0) {
    restore_terminal();
    pthread_mutex_lock(&S.mu);
    int has_id = S.task_id.n > 0;
    pthread_mutex_unlock(&S.mu);
    if (code == kStatusUnavailable && has_id) reattach(); /* the server went away; the command runs on */
    finish_with(lite_report_failure(code, buf_cstr(&message), S.address));
  }
  fprintf(stderr, "tidepool: the server ended task %s without an exit status\n", buf_cstr(&S.task_id));
  finish_with(kExitTidepoolFailed);
}
