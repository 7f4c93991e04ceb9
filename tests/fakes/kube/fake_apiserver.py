#!/usr/bin/env python3
"""A FAKE Kubernetes API server, for Tidepool's tests only. It is not Kubernetes and must never be
used as one: one process, state in memory (optionally a JSON file), no scheduler, no kubelet (pods
move by an admin API, or by a local "kubelet" that runs a process per pod), no schema validation or
pruning of custom resources, no RBAC (any authenticated user may do anything, except what an admin
/fake/forbid rule denies), no admission beyond a pods ResourceQuota set by the admin API and a few
pod validation rules (admission.py).

It follows the published API (https://kubernetes.io/docs/reference/using-api/api-concepts/) for
what Tidepool uses: pods, secrets, configmaps, events, namespaces, CRDs and their custom resources
with the status subresource; get/list/watch/create/update/patch/delete; label and field selectors;
limit/continue; watch bookmarks and 410 Expired; 409 AlreadyExists/Conflict; bearer tokens and
client certificates; discovery; the meta.k8s.io/v1 Table format kubectl asks for.
See README.md beside this file. Python 3 standard library only.

Prints one JSON line on stdout once listening: {"url": ..., "port": ..., "ca": ..., "tls_dir": ...}.
"""

import argparse
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import admin  # noqa: E402
import tables  # noqa: E402
from admission import Policy  # noqa: E402
from labelsel import Selector, SelectorError  # noqa: E402
from pods import Kubelet, PodHistory  # noqa: E402
from store import ApiError, Store  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
VERSION = {"major": "1", "minor": "20", "gitVersion": "v1.20.2-fake", "gitCommit": "fake", "gitTreeState": "clean",
           "buildDate": "2021-01-13T00:00:00Z", "goVersion": "go1.15", "compiler": "gc",
           "platform": "linux/amd64"}


def minimal_openapi_v2_protobuf():
    """A gnostic openapi_v2.Document with swagger "2.0" and an info, and no definitions: kubectl's
    client-side validation then finds no schema for any kind and skips validation (kubectl 1.20
    fails `apply` when /openapi/v2 is missing unless --validate=false)."""
    def field(num, payload):
        b = payload if isinstance(payload, bytes) else payload.encode()
        return bytes([(num << 3) | 2, len(b)]) + b
    info = field(1, "fake-kube-apiserver") + field(2, "v0")
    return field(1, "2.0") + field(2, info)


class Auth:
    def __init__(self, tokens, token_file):
        self.tokens = dict(tokens)       # token -> user
        self.token_file = token_file
        self.lock = threading.Lock()

    def set_tokens(self, user_to_token):
        with self.lock:
            self.tokens = {t: u for u, t in user_to_token.items()}

    def _file_tokens(self):
        """Kubernetes static token file format: token,user,uid,"group1,group2" (re-read on each request,
        so rotating the file rotates the tokens)."""
        out = {}
        if not self.token_file:
            return out
        try:
            with open(self.token_file) as f:
                for line in f:
                    line = line.strip()
                    if not line or line.startswith("#"):
                        continue
                    parts = [p.strip().strip('"') for p in line.split(",")]
                    out[parts[0]] = parts[1] if len(parts) > 1 and parts[1] else "token-file-user"
        except OSError:
            pass
        return out

    def user(self, headers, peercert):
        h = headers.get("Authorization", "")
        if h.lower().startswith("bearer "):
            tok = h[7:].strip()
            with self.lock:
                u = self.tokens.get(tok)
            return u or self._file_tokens().get(tok)
        if peercert:
            for rdn in peercert.get("subject", ()):
                for k, v in rdn:
                    if k == "commonName":
                        return v
        return None


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, handler, opts, store, kubelet, auth, ssl_ctx):
        self.opts, self.store, self.kubelet, self.auth, self.ssl_ctx = opts, store, kubelet, auth, ssl_ctx
        self.policy = Policy(store)          # /fake/forbid, /fake/quota, pod validation
        self.pod_history = PodHistory(store)  # /fake/pods-ever
        self.unreachable_until, self.unreachable_mode = 0.0, "503"
        self.counts = {}
        self.count_lock = threading.Lock()
        self.bucket, self.bucket_t = float(opts.qps or 0), time.monotonic()
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        super().__init__(addr, handler)

    def handle_error(self, request, client_address):
        # A client gone during the TLS handshake or between requests (a timed-out kubectl on a
        # loaded machine) is not a bug of the fake: only other exceptions print their traceback,
        # which check_real_clients.sh counts as a failure.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)

    def count(self, key):
        with self.count_lock:
            self.counts[key] = self.counts.get(key, 0) + 1

    def take_token(self):
        if not self.opts.qps:
            return True
        with self.count_lock:
            now = time.monotonic()
            self.bucket = min(float(self.opts.qps), self.bucket + (now - self.bucket_t) * self.opts.qps)
            self.bucket_t = now
            if self.bucket >= 1:
                self.bucket -= 1
                return True
            return False


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-kube-apiserver"

    def setup(self):
        # The TLS handshake happens here, in the connection's own thread.
        self.request = self.server.ssl_ctx.wrap_socket(self.request, server_side=True)
        self.request.settimeout(None)
        super().setup()

    def log_message(self, fmt, *args):
        if self.server.opts.verbose:
            sys.stderr.write("fake-kube: %s %s\n" % (self.address_string(), fmt % args))

    # -- responses
    def send_json(self, code, obj, headers=None):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def send_raw(self, code, body, ctype):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_error_status(self, e):
        self.send_json(e.code, e.status(), e.headers)

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raw = b""
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                raw += self.rfile.read(size)
                self.rfile.readline()
        return raw

    def json_body(self, raw):
        ct = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if "yaml" in ct:
            raise ApiError(415, "UnsupportedMediaType", 'the body of the request was in an unknown format - '
                           'accepted media types include: application/json (the fake speaks JSON only)')
        try:
            return json.loads(raw.decode() or "null")
        except ValueError as e:
            raise ApiError(400, "BadRequest", "the body of the request could not be decoded: %s" % e)

    # -- dispatch
    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_PUT(self):
        self.handle_any("PUT")

    def do_PATCH(self):
        self.handle_any("PATCH")

    def do_DELETE(self):
        self.handle_any("DELETE")

    def handle_any(self, method):
        url = urllib.parse.urlsplit(self.path)
        q = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
        path = url.path
        try:
            body = self.read_body()
            if path.startswith("/fake/") or path == "/fake":
                return admin.handle(self, method, path, q, body)
            srv = self.server
            if time.time() < srv.unreachable_until:
                if srv.unreachable_mode == "reset":
                    self.close_connection = True
                    self.request.close()
                    return
                raise ApiError(503, "ServiceUnavailable", "the server is currently unable to handle the request "
                               "(fake: unreachable)")
            user = srv.auth.user(self.headers, self.request.getpeercert() if hasattr(self.request, "getpeercert")
                                 else None)
            if not user:
                raise ApiError(401, "Unauthorized", "Unauthorized")
            if not srv.take_token():
                srv.count("throttled")
                raise ApiError(429, "TooManyRequests", "too many requests, please try again later",
                               {"retryAfterSeconds": 1}, headers={"Retry-After": "1"})
            self.user = user
            self.api(method, path, q, body)
        except ApiError as e:
            self.send_error_status(e)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            self.close_connection = True
        except Exception as e:   # a bug in the fake: say so, as a 500 Status
            import traceback
            traceback.print_exc()
            try:
                self.send_error_status(ApiError(500, "InternalError", "fake apiserver bug: %r" % e))
            except OSError:
                pass

    def api(self, method, path, q, raw):
        st = self.server.store
        parts = [p for p in path.split("/") if p]
        if path in ("/healthz", "/livez", "/readyz"):
            return self.send_raw(200, b"ok", "text/plain")
        if path == "/version":
            return self.send_json(200, VERSION)
        if path == "/openapi/v2":
            if "protobuf" in (self.headers.get("Accept") or ""):
                return self.send_raw(200, minimal_openapi_v2_protobuf(), "application/octet-stream")
            return self.send_json(200, {"swagger": "2.0", "info": {"title": "fake-kube-apiserver", "version": "v0"},
                                        "paths": {}, "definitions": {}})
        if path == "/api" and method == "GET":
            host = "%s:%d" % (self.server.opts.address, self.server.server_address[1])
            return self.send_json(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": host}]})
        if path == "/apis" and method == "GET":
            groups = [_group(g, vs) for g, vs in sorted(st.groups().items())]
            return self.send_json(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        if not parts or parts[0] not in ("api", "apis"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if parts[0] == "api":
            group, rest = "", parts[1:]
        else:
            group, rest = (parts[1] if len(parts) > 1 else ""), parts[2:]
            if len(parts) == 2 and method == "GET":
                vs = st.groups().get(group)
                if not vs:
                    raise ApiError(404, "NotFound", "the server could not find the requested resource")
                g = _group(group, vs)
                g.update({"kind": "APIGroup", "apiVersion": "v1"})
                return self.send_json(200, g)
        if not rest:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        version, rest = rest[0], rest[1:]
        if not rest and method == "GET":
            res = st.resources(group, version)
            if not res:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            gv = "%s/%s" % (group, version) if group else version
            return self.send_json(200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                                        "resources": res})
        watch = q.get("watch") in ("1", "true", "True")
        if rest and rest[0] == "watch":
            watch, rest = True, rest[1:]
        ns = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            rt3 = st.lookup(group, version, rest[2])
            if rt3 is not None and rt3.namespaced:
                ns, rest = rest[1], rest[2:]
        if not rest:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        rt = st.lookup(group, version, rest[0])
        if rt is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if len(rest) > 3 or sub not in (None, "status", "log", "eviction") or \
                sub == "status" and not rt.has_status or sub in ("log", "eviction") and rt.kind != "Pod":
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        # Authorization comes before everything the request names is looked at (as RBAC's filter).
        verb = {"GET": "watch" if watch else "get" if name else "list", "POST": "create", "PUT": "update",
                "PATCH": "patch", "DELETE": "delete" if name else "deletecollection"}.get(method, method.lower())
        self.server.policy.authorize(self.user, verb, rt, sub, name if rt.kind == "Namespace" else ns, name)
        # Only a create names a namespace that must exist (NamespaceLifecycle admission): a list or
        # watch in a namespace that does not exist is empty, a get, update or delete is the object's
        # own 404.
        if ns is not None and method == "POST":
            st._ns_check(rt, ns)
        if rt.namespaced and name and ns is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        try:
            sel = Selector(q.get("labelSelector", ""), q.get("fieldSelector", ""))
        except SelectorError as e:
            raise ApiError(400, "BadRequest", str(e))
        res_name = rt.plural + ("/" + sub if sub else "")

        if method == "GET" and name is None:
            if watch:
                self.server.count("watch " + res_name)
                return self.serve_watch(rt, ns, sel, q)
            self.server.count("list " + res_name)
            items, meta = st.list(rt, ns, sel, int(q.get("limit") or 0), q.get("continue") or None)
            if self.wants_table():
                return self.send_json(200, tables.table(rt, items, meta, q.get("includeObject", "Metadata")))
            return self.send_json(200, {"kind": rt.kind + "List", "apiVersion": rt.api_version,
                                        "metadata": meta, "items": items})
        if method == "GET":
            self.server.count("get " + res_name)
            obj = st.get(rt, ns, name)
            if sub == "log":
                return self.serve_log(obj)
            if self.wants_table():
                return self.send_json(200, tables.table(rt, [obj], {"resourceVersion": obj["metadata"][
                    "resourceVersion"]}, q.get("includeObject", "Metadata")))
            return self.send_json(200, obj)
        if method == "POST" and name is None:
            self.server.count("create " + res_name)
            return self.send_json(201, st.create(rt, ns, self.json_body(raw)))
        if method == "POST" and sub == "eviction":
            self.server.count("create " + res_name)
            body = self.json_body(raw) or {}
            grace = (body.get("deleteOptions") or {}).get("gracePeriodSeconds")
            st.delete(rt, ns, name, grace=grace)
            return self.send_json(201, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                        "code": 201})
        if method == "PUT" and name:
            self.server.count("update " + res_name)
            return self.send_json(200, st.update(rt, ns, name, self.json_body(raw), subresource=sub))
        if method == "PATCH" and name:
            self.server.count("patch " + res_name)
            ct = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            ptype = {"application/merge-patch+json": "merge", "application/strategic-merge-patch+json": "strategic",
                     "application/json-patch+json": "json"}.get(ct)
            if ptype is None:
                raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                               "accepted media types include: application/json-patch+json, "
                               "application/merge-patch+json, application/strategic-merge-patch+json "
                               "(the fake has no server-side apply)")
            return self.send_json(200, st.patch(rt, ns, name, ptype, self.json_body(raw), subresource=sub))
        if method == "DELETE":
            body = self.json_body(raw) if raw.strip() else {}
            body = body or {}
            grace = q.get("gracePeriodSeconds", body.get("gracePeriodSeconds"))
            grace = int(grace) if grace not in (None, "") else None
            prop = q.get("propagationPolicy", body.get("propagationPolicy"))
            if name:
                self.server.count("delete " + res_name)
                return self.send_json(200, st.delete(rt, ns, name, grace, prop, body.get("preconditions")))
            self.server.count("deletecollection " + res_name)
            items, meta = st.list(rt, ns, sel)
            out = []
            for o in items:
                try:
                    out.append(st.delete(rt, o["metadata"].get("namespace"), o["metadata"]["name"], grace, prop))
                except ApiError:
                    pass
            return self.send_json(200, {"kind": rt.kind + "List", "apiVersion": rt.api_version,
                                        "metadata": {"resourceVersion": str(st.rv)}, "items": out})
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    def wants_table(self):
        return "as=Table" in (self.headers.get("Accept") or "")

    def serve_log(self, pod):
        p = self.server.kubelet.log_path(pod)
        try:
            with open(p, "rb") as f:
                data = f.read()
        except OSError:
            data = b""
        self.send_raw(200, data, "text/plain")

    def serve_watch(self, rt, ns, sel, q):
        st, opts = self.server.store, self.server.opts
        timeout = float(q.get("timeoutSeconds") or opts.watch_timeout)
        bookmarks = q.get("allowWatchBookmarks") in ("1", "true", "True")
        w = st.open_watch(rt, ns, sel, q.get("resourceVersion"))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        deadline = time.monotonic() + timeout
        next_bm = time.monotonic() + opts.bookmark_interval

        def chunk(obj):
            data = (json.dumps(obj) + "\n").encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        try:
            while True:
                now = time.monotonic()
                if now >= deadline:
                    break
                wait = min(deadline, next_bm if bookmarks else deadline) - now
                try:
                    ev = w.q.get(timeout=max(0.01, wait))
                except Exception:
                    ev = "tick"
                if ev is None:
                    self.close_connection = True
                    break
                if ev == "tick":
                    if bookmarks and time.monotonic() >= next_bm:
                        chunk({"type": "BOOKMARK", "object": {"kind": rt.kind, "apiVersion": rt.api_version,
                                                              "metadata": {"resourceVersion": str(st.rv)}}})
                        next_bm = time.monotonic() + opts.bookmark_interval
                    continue
                chunk({"type": ev[0], "object": ev[1]})
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        finally:
            st.close_watch(w)


def _group(g, vs):
    return {"name": g, "versions": [{"groupVersion": "%s/%s" % (g, v), "version": v} for v in vs],
            "preferredVersion": {"groupVersion": "%s/%s" % (g, vs[0]), "version": vs[0]}}


def main(argv=None):
    ap = argparse.ArgumentParser(description="A FAKE Kubernetes API server for tests (not Kubernetes).")
    ap.add_argument("--address", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on stdout)")
    ap.add_argument("--tls-dir", help="ca.crt, server.crt, server.key (made by make_certs.sh if missing)")
    ap.add_argument("--extra-ip", action="append", default=[], help="more IP SANs when certs are generated")
    ap.add_argument("--token", action="append", default=[], metavar="NAME=TOKEN")
    ap.add_argument("--token-file", help="static token CSV (token,user,...), re-read on each request")
    ap.add_argument("--state-file")
    ap.add_argument("--kubelet", choices=["manual", "auto"], default="manual")
    ap.add_argument("--run-pods", metavar="CMD-TEMPLATE", nargs="?", const="{command}",
                    help='run a process per Running pod; default template "{command}" = '
                         'containers[0].command + args; placeholders {namespace} {name} {uid} {image} {command}')
    ap.add_argument("--pod-log-dir", help="pod process output (served at pods/NAME/log)")
    ap.add_argument("--history", type=int, default=1000, help="watch events kept (older rv -> 410)")
    ap.add_argument("--bookmark-interval", type=float, default=2.0)
    ap.add_argument("--watch-timeout", type=float, default=1800.0)
    ap.add_argument("--grace-scale", type=float, default=1.0, help="multiplies pod grace periods")
    ap.add_argument("--qps", type=float, default=0, help="answer 429 beyond this rate (0 = no limit)")
    ap.add_argument("--admin-token", help="if set, /fake/... needs header X-Fake-Admin-Token")
    ap.add_argument("--verbose", action="store_true")
    opts = ap.parse_args(argv)

    tls_dir = opts.tls_dir or tempfile.mkdtemp(prefix="fake-kube-tls-")
    if not all(os.path.exists(os.path.join(tls_dir, f)) for f in ("ca.crt", "server.crt", "server.key")):
        cmd = [os.path.join(HERE, "make_certs.sh"), tls_dir]
        for ip in opts.extra_ip:
            cmd += ["--ip", ip]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(tls_dir, "server.crt"), os.path.join(tls_dir, "server.key"))
    ctx.load_verify_locations(os.path.join(tls_dir, "ca.crt"))
    ctx.verify_mode = ssl.CERT_OPTIONAL

    tokens = {}
    for t in opts.token:
        user, _, tok = t.partition("=")
        tokens[tok] = user
    store = Store(history=opts.history, state_file=opts.state_file, grace_scale=opts.grace_scale)
    kubelet = Kubelet(store, opts.kubelet, opts.run_pods, opts.pod_log_dir or tempfile.mkdtemp(prefix="fake-kube-logs-"))
    srv = Server((opts.address, opts.port), Handler, opts, store, kubelet, Auth(tokens, opts.token_file), ctx)
    port = srv.server_address[1]
    host = "[%s]" % opts.address if ":" in opts.address else opts.address
    print(json.dumps({"url": "https://%s:%d" % (host, port), "port": port, "tls_dir": tls_dir,
                      "ca": os.path.join(tls_dir, "ca.crt"), "pid": os.getpid(),
                      "fake": "this is a FAKE Kubernetes API server for tests"}), flush=True)

    def stop(*_):
        kubelet.stop_all()
        threading.Thread(target=srv.shutdown, daemon=True).start()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        srv.serve_forever(poll_interval=0.2)
    finally:
        kubelet.stop_all()


if __name__ == "__main__":
    main()
