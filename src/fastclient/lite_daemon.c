/* The lite clients' side of the workspace daemon (lite.h; the protocol: cli/workspace_daemon.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "lite.h"

/* cli/workspace_client.cc's CacheHome. */
static void cache_home(Buf* out) {
  const char* xdg = getenv("XDG_CACHE_HOME");
  const char* home = getenv("HOME");
  if (xdg && *xdg) {
    buf_str(out, xdg);
    buf_str(out, "/tidepool");
    return;
  }
  buf_str(out, home && *home ? home : "/tmp");
  buf_str(out, "/.cache/tidepool");
}

int lite_daemon_ask(const Buf* request, Buf* done) {
  const char* off = getenv("TIDEPOOL_WORKSPACE_DAEMON");
  if (off && strcmp(off, "0") == 0) return 0;
  /* cli/workspace_daemon.cc's WorkspaceDaemonName: FNV-1a 64 of the cache home. */
  Buf home = {0};
  cache_home(&home);
  uint64_t h = 14695981039346656037ull;
  for (size_t i = 0; i < home.n; ++i) h = (h ^ (unsigned char)home.p[i]) * 1099511628211ull;
  free(home.p);
  char name[96];
  int len = snprintf(name, sizeof(name), "tidepool-workspace-%u-%016llx", (unsigned)getuid(), (unsigned long long)h);
  struct sockaddr_un a;
  memset(&a, 0, sizeof(a));
  a.sun_family = AF_UNIX;
  memcpy(a.sun_path + 1, name, (size_t)len); /* sun_path[0] = 0: the abstract namespace */
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  struct ucred cred;
  socklen_t clen = sizeof(cred);
  if (connect(fd, (struct sockaddr*)&a, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)len)) != 0 ||
      getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0 || cred.uid != getuid()) {
    close(fd); /* none, or another user's squatting the name: it gets nothing of ours */
    return 0;
  }
  Buf out = {0};
  buf_put(&out, buf_cstr(request), request->n);
  buf_put(&out, "\n", 1);
  int ok = lite_send_all(fd, out.p, out.n);
  free(out.p);
  Buf line = {0}, say = {0};
  char chunk[4096];
  int answered = 0;
  while (ok && !answered) {
    ssize_t got = recv(fd, chunk, sizeof(chunk), 0);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    buf_put(&line, chunk, (size_t)got);
    char* nl;
    while (!answered && (nl = memchr(line.p, '\n', line.n)) != NULL) {
      size_t n = (size_t)(nl - line.p);
      if (json_bool_member(line.p, n, "done")) {
        buf_clear(done);
        buf_put(done, line.p, n);
        answered = 1;
      } else if (json_string_member(line.p, n, "say", &say)) {
        buf_put(&say, "\n", 1);
        lite_write_all(STDERR_FILENO, say.p, say.n);
      }
      memmove(line.p, nl + 1, line.n - n - 1);
      line.n -= n + 1;
      line.p[line.n] = 0;
    }
  }
  free(line.p);
  free(say.p);
  close(fd);
  return answered;
}

void lite_daemon_request(Buf* req, const char* op) {
  buf_str(req, "{\"v\":1,\"op\":\"");
  buf_str(req, op);
  buf_str(req, "\",\"server\":");
  json_quote(req, lite_server());
  buf_str(req, ",\"token\":");
  json_quote(req, lite_token());
}

int lite_workspace_from_daemon(Spec* spec, const char* pool, int quiet, int batch, Buf* base) {
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  char cwd[4096];
  if (!getcwd(cwd, sizeof(cwd))) return 0;
  Buf req = {0}, done = {0}, error = {0}, manifest = {0};
  lite_daemon_request(&req, "prepare");
  buf_str(&req, ",\"pool\":");
  json_quote(&req, pool ? pool : "");
  buf_str(&req, ",\"cwd\":");
  json_quote(&req, cwd);
  buf_str(&req, batch ? ",\"batch\":true" : ",\"batch\":false");
  buf_str(&req, quiet ? ",\"quiet\":true}" : ",\"quiet\":false}");
  int asked = lite_daemon_ask(&req, &done);
  free(req.p);
  if (!asked) return 0;
  if (json_string_member(done.p, done.n, "error", &error)) {
    fprintf(stderr, "tidepool: %s\n", error.p);
    exit(kExitTidepoolFailed);
  }
  Spec ref = {{0}, 1};
  if (json_bool_member(done.p, done.n, "none")) {
    spec_int(&ref, 4, 1); /* WorkspaceRef.none: nothing to bring */
  } else if (json_string_member(done.p, done.n, "manifest", &manifest) && manifest.n == 64) {
    spec_string(&ref, 1, manifest.p, 0); /* WorkspaceRef.manifest, .files, .bytes */
    spec_int(&ref, 2, json_int_member(done.p, done.n, "files"));
    spec_int(&ref, 3, json_int_member(done.p, done.n, "bytes"));
    buf_str(base, manifest.p);
  } else {
    free(done.p);
    return 0; /* "fallback" */
  }
  spec_message(spec, kSpecWorkspace, &ref.b);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  if (lite_tracing()) {
    fprintf(stderr, "tidepool-client: workspace from the daemon in %.1f ms\n",
            (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6);
  }
  free(ref.b.p);
  free(done.p);
  free(manifest.p);
  return 1;
}
