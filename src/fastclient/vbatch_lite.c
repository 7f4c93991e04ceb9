/* vbatch, the common case, in C against musl (why and the contract: lite.h).
 *
 * `vbatch [-P POOL] [-N SHARDS] [--name NAME] [--] COMMAND...`, the server and token from the
 * environment; anything else goes to `tidepool-vbatch`, the C++ fast client.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lite.h"

int main(int argc, char** argv) {
  lite_init("vbatch", argv);
  const char *pool = NULL, *name = NULL, *shards_text = NULL;
  const LiteOption options[] = {{'P', "pool", &pool, NULL}, {'N', NULL, &shards_text, NULL}, {0, "name", &name, NULL}};
  int i = lite_options(argc, argv, options, sizeof(options) / sizeof(options[0]));
  long shards = shards_text ? lite_plain_int(shards_text) : 0;
  if (shards < 0) lite_hand_over("-N");

  /* The TaskSpec as fast_client.cc's BuildSpec writes it for vbatch. */
  Spec spec = {{0}, 1};
  spec_command(&spec, argv + i);
  spec_string(&spec, kSpecPool, pool ? pool : "", 0);
  spec_string(&spec, kSpecName, name ? name : "", 0);
  spec_int(&spec, kSpecKind, kTaskKindBatch);
  spec_int(&spec, kSpecStdinNull, 1);
  spec_parent(&spec);
  spec_int(&spec, kSpecShards, shards);
  if (!spec.utf8) lite_hand_over("text that is not UTF-8");

  static Conn conn;
  const char* address = NULL;
  lite_open(&conn, &address, kSubmit, &spec.b);
  Buf base = {0}; /* the workspace manifest sent, from the workspace daemon ("" = none) */
again:;
  Buf payload = {0}, id = {0}, message = {0};
  long code = 0;
  int type = 0, oversize = 0, finished = 0;
  while (lite_await(&conn, address) >= 0 && conn_read_frame(&conn, &type, &payload, -1, &oversize)) {
    if (type == kSubmitted) {
      buf_clear(&id);
      json_string_member(payload.p, payload.n, "id", &id);
    }
    if (type == kFinish) {
      code = json_int_member(payload.p, payload.n, "code");
      json_string_member(payload.p, payload.n, "message", &message);
      finished = 1;
      break;
    }
  }
  /* Welcomed, the request sent, and the connection ended without its answer: it may have been taken. */
  if (!finished && id.n == 0 && !oversize) lite_lost_unanswered(address);
  if (oversize) code = kStatusUnknown, buf_clear(&message), buf_str(&message, "a reply from the server was over the size limit");
  if (code != 0 && lite_workspace_needed(code, buf_cstr(&message))) {
    /* Refused, so nothing took effect: once more with the workspace, if the daemon has it. */
    if (base.n == 0 && lite_workspace_from_daemon(&spec, pool, 0, 1, &base)) {
      close(conn.fd);
      lite_open(&conn, &address, kSubmit, &spec.b);
      free(payload.p);
      free(message.p);
      goto again;
    }
    lite_hand_over_full(buf_cstr(&message));
  }
  if (code != 0 || id.n == 0) {
    return lite_report_failure(code != 0 ? code : kStatusUnknown, code != 0 ? buf_cstr(&message) : "no task id in the reply",
                               address);
  }
  printf("%s\n", id.p);
  fflush(stdout);
  return 0;
}
