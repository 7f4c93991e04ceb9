"""The admin API of the FAKE Kubernetes API server (not Kubernetes): under /fake/, JSON in and out,
parameters as query parameters or a JSON object body. No auth unless --admin-token is set
(then header X-Fake-Admin-Token). See README.md for the list.
"""

import json
import time

import pods
from apierrors import ApiError


def _params(q, body):
    p = dict(q)
    if body.strip():
        try:
            b = json.loads(body.decode())
        except ValueError:
            raise ApiError(400, "BadRequest", "admin body must be JSON")
        if isinstance(b, dict):
            p.update(b)
    return p


def handle(h, method, path, q, body):
    srv = h.server
    st = srv.store
    try:
        if srv.opts.admin_token and h.headers.get("X-Fake-Admin-Token") != srv.opts.admin_token:
            raise ApiError(401, "Unauthorized", "admin token required (X-Fake-Admin-Token)")
        p = _params(q, body)
        parts = [x for x in path.split("/") if x][1:]
        ok = {"ok": True}
        if parts == ["health"]:
            return h.send_json(200, ok)
        if parts == ["objects"] and method == "GET":
            return h.send_json(200, {"resourceVersion": str(st.rv), "objects": st.dump()})
        if parts == ["requests"]:
            if method == "DELETE":
                with srv.count_lock:
                    srv.counts.clear()
                return h.send_json(200, ok)
            with srv.count_lock:
                return h.send_json(200, dict(srv.counts))
        if parts == ["unreachable"]:
            if method == "DELETE":
                srv.unreachable_until = 0.0
                return h.send_json(200, ok)
            secs = float(p.get("seconds", 5))
            srv.unreachable_mode = str(p.get("mode", "503"))
            srv.unreachable_until = time.time() + secs
            st.drop_watches()
            return h.send_json(200, {"ok": True, "until": srv.unreachable_until})
        if parts == ["watch-history"]:
            if "keep" in p:
                st.set_history_size(int(p["keep"]))
            return h.send_json(200, {"keep": st.history_size, "kept": len(st.history),
                                     "oldestResourceVersion": str(st.oldest_rv), "resourceVersion": str(st.rv)})
        if parts == ["expire-watch-history"]:
            st.expire_history()
            return h.send_json(200, {"ok": True, "oldestResourceVersion": str(st.oldest_rv)})
        if parts == ["drop-watches"]:
            n = len(st.watches)
            st.drop_watches()
            return h.send_json(200, {"ok": True, "dropped": n})
        if parts == ["tokens"]:
            if method == "GET":
                with srv.auth.lock:
                    return h.send_json(200, {u: t for t, u in srv.auth.tokens.items()})
            srv.auth.set_tokens({k: str(v) for k, v in p.items()})
            return h.send_json(200, ok)
        if parts == ["forbid"]:
            if method == "DELETE":
                srv.policy.clear_rules()
                return h.send_json(200, ok)
            if method == "POST":
                return h.send_json(200, {"ok": True, "rule": srv.policy.add_rule(p)})
            return h.send_json(200, {"rules": srv.policy.list_rules()})
        if parts == ["delay"]:
            if method == "DELETE":
                srv.policy.clear_delays()
                return h.send_json(200, ok)
            if method == "POST":
                return h.send_json(200, {"ok": True, "rule": srv.policy.add_delay(p)})
            return h.send_json(200, {"delays": srv.policy.list_delays()})
        if parts == ["quota"]:
            if method == "DELETE":
                srv.policy.clear_quotas(p.get("namespace"))
                return h.send_json(200, ok)
            if method == "POST":
                srv.policy.set_quota(p.get("namespace"), p.get("pods"), p.get("name"))
            return h.send_json(200, {"quotas": srv.policy.list_quotas()})
        if parts == ["pod-validation"]:
            if method == "POST":
                srv.policy.validate_pods = p.get("enabled", True) not in (False, "0", "false")
            return h.send_json(200, {"enabled": srv.policy.validate_pods})
        if parts == ["pods-ever"]:
            if method == "DELETE":
                srv.pod_history.clear()
                return h.send_json(200, ok)
            return h.send_json(200, srv.pod_history.list())
        if len(parts) == 4 and parts[0] == "pods":
            return _pod(h, method, parts[1], parts[2], parts[3], p)
        raise ApiError(404, "NotFound", "no such admin call: %s %s" % (method, path))
    except ApiError as e:
        h.send_error_status(e)


def _pod(h, method, ns, name, action, p):
    st, kubelet = h.server.store, h.server.kubelet
    if action == "log":
        return h.serve_log(st.get(st.types[("", "pods")], ns, name))
    if method != "POST":
        raise ApiError(405, "MethodNotAllowed", "admin pod actions are POST")
    if action == "phase":
        phase = p.get("phase", "Running")
        if phase == "Running":
            pod = st.set_pod_status(ns, name, lambda o: pods.set_running(o, p.get("podIP", "127.0.0.1")))
            if p.get("run", True) not in (False, "0", "false"):
                kubelet.start(pod)
            return h.send_json(200, pod)
        if phase in ("Succeeded", "Failed"):
            code = p.get("exitCode")
            return h.send_json(200, st.set_pod_status(ns, name, lambda o: pods.set_terminated(
                o, phase, int(code) if code is not None else None, p.get("reason"), p.get("message"))))
        if phase == "Pending":
            return h.send_json(200, st.set_pod_status(ns, name, pods.set_pending))
        raise ApiError(400, "BadRequest", "phase must be Pending, Running, Succeeded or Failed")
    if action == "evict":
        msg = p.get("message", "The node was low on resource: memory.")
        pod = st.set_pod_status(ns, name, lambda o: pods.set_evicted(o, msg))
        kubelet._kill(pod["metadata"]["uid"])
        return h.send_json(200, pod)
    if action == "waiting":
        reason = p.get("reason", "ImagePullBackOff")
        return h.send_json(200, st.set_pod_status(ns, name, lambda o: pods.set_waiting(o, reason, p.get("message"))))
    if action == "unschedulable":
        msg = p.get("message", "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")
        return h.send_json(200, st.set_pod_status(ns, name, lambda o: pods.set_unschedulable(o, msg)))
    if action == "finalize":
        st.finalize_pod(ns, name)
        return h.send_json(200, {"ok": True})
    raise ApiError(404, "NotFound", "no such admin pod action: %s" % action)
