#!/usr/bin/python3
"""Checks the FAKE Kubernetes API server with Debian's python3-kubernetes (a real client nobody
here wrote). Run by check_real_clients.sh against a running fake; prints PASS/FAIL lines and
exits non-zero on any failure. Run it with Debian's /usr/bin/python3 (the package's interpreter).
"""

import argparse
import json
import os
import signal
import ssl
import sys
import threading
import time
import types
import urllib.request

import kubernetes
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

import check_python_admission as admission

FAILS = []


def check(name, cond, detail=""):
    if cond:
        print("PASS: python3-kubernetes: %s" % name)
    else:
        print("FAIL: python3-kubernetes: %s %s" % (name, detail))
        FAILS.append(name)


def run(name, fn):
    try:
        fn()
    except Exception as e:   # a check that raised is a failure, and the others still run
        check(name, False, "raised %r" % e)


def main():
    def overtime(*_):
        print("FAIL: python3-kubernetes: the checks took over 240 s (a hung watch?)", flush=True)
        os._exit(1)
    signal.signal(signal.SIGALRM, overtime)
    signal.alarm(240)
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--tls-dir", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--namespace", default="pyns")
    ap.add_argument("--work-dir", default="/tmp")
    ap.add_argument("--kubelet", action="store_true",
                    help="the fake runs with --kubelet=auto --run-pods: check the pod processes")
    ap.add_argument("--patch-agentpool-status", metavar="NAMESPACE/NAME",
                    help="only write a status on that AgentPool (patch_namespaced_custom_object_status)")
    a = ap.parse_args()
    ca = os.path.join(a.tls_dir, "ca.crt")
    sslctx = ssl.create_default_context(cafile=ca)

    def admin(path, body=None, method="POST"):
        req = urllib.request.Request(a.url + "/fake/" + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None)
        with urllib.request.urlopen(req, context=sslctx) as r:
            return json.loads(r.read().decode() or "null")

    def api_client(token=None, cert=None):
        cfg = client.Configuration()
        cfg.host = a.url
        cfg.ssl_ca_cert = ca
        if token:
            cfg.api_key = {"authorization": "Bearer " + token}
        if cert:
            cfg.cert_file = os.path.join(a.tls_dir, "client-%s.crt" % cert)
            cfg.key_file = os.path.join(a.tls_dir, "client-%s.key" % cert)
        return client.ApiClient(cfg)

    print("python3-kubernetes %s from %s" % (kubernetes.__version__, os.path.dirname(kubernetes.__file__)))
    api = api_client(a.token)
    v1 = client.CoreV1Api(api)
    ns = a.namespace
    if a.patch_agentpool_status:
        return admission.patch_agentpool_status(api, a.patch_agentpool_status)
    if a.kubelet:
        return kubelet_checks(v1, a)

    def pod(name, labels, grace=None):
        spec = client.V1PodSpec(containers=[client.V1Container(name="agent", image="tidepool/agent:dev")])
        if grace is not None:
            spec.termination_grace_period_seconds = grace
        return client.V1Pod(metadata=client.V1ObjectMeta(name=name, labels=labels), spec=spec)

    def setup():
        v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        got = v1.read_namespace(ns)
        check("create and read a namespace", got.metadata.name == ns and got.status.phase == "Active")
    run("namespace", setup)

    def missing_ns():
        # As a real API server: a list in a namespace that does not exist is empty; a create
        # there is refused by NamespaceLifecycle; a get is the object's own 404.
        check("list in a missing namespace: empty", v1.list_namespaced_pod("no-such-ns").items == [])
        try:
            v1.create_namespaced_pod("no-such-ns", client.V1Pod(metadata=client.V1ObjectMeta(name="p"),
                spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="i")])))
            check("create in a missing namespace: 404", False, "no exception")
        except ApiException as e:
            body = json.loads(e.body)
            check("create in a missing namespace: 404 NotFound Status", e.status == 404 and
                  body.get("reason") == "NotFound" and body.get("message") == 'namespaces "no-such-ns" not found',
                  "%s %s" % (e.status, e.body))
        try:
            v1.read_namespaced_pod("p", "no-such-ns")
            check("get in a missing namespace: 404", False, "no exception")
        except ApiException as e:
            body = json.loads(e.body)
            check("get in a missing namespace: the pod's own 404", e.status == 404 and
                  body.get("message") == 'pods "p" not found', "%s %s" % (e.status, e.body))
    run("missing namespace", missing_ns)

    def paginate():
        for i in range(7):
            v1.create_namespaced_pod(ns, pod("p7-%d" % i, {"pool": "p7", "i": str(i)}))
        v1.create_namespaced_pod(ns, pod("other-0", {"pool": "other"}))
        names, pages, cont, rvs = [], [], None, set()
        while True:
            kw = {"label_selector": "pool=p7", "limit": 3}
            if cont:
                kw["_continue"] = cont
            lst = v1.list_namespaced_pod(ns, **kw)
            pages.append(len(lst.items))
            names += [p.metadata.name for p in lst.items]
            rvs.add(lst.metadata.resource_version)
            cont = lst.metadata._continue
            if not cont:
                break
        check("list limit=3 + continue over 7 pods: pages 3,3,1", pages == [3, 3, 1], str(pages))
        check("list pages hold the 7 pods once each", sorted(names) == ["p7-%d" % i for i in range(7)], str(names))
        check("list pages share the first page's resourceVersion", len(rvs) == 1, str(rvs))
        sel = v1.list_namespaced_pod(ns, label_selector="pool in (p7,other),i notin (0,1,2,3,4,5)")
        check("set-based label selector", sorted(p.metadata.name for p in sel.items) == ["other-0", "p7-6"],
              str([p.metadata.name for p in sel.items]))
        sel = v1.list_namespaced_pod(ns, label_selector="!i")
        check("label selector !key", [p.metadata.name for p in sel.items] == ["other-0"])
        sel = v1.list_pod_for_all_namespaces(field_selector="metadata.name=p7-3")
        check("field selector metadata.name across namespaces",
              [p.metadata.name for p in sel.items] == ["p7-3"])
    run("pagination", paginate)

    def watch_events():
        rv = v1.list_namespaced_pod(ns).metadata.resource_version
        got = []

        def watcher():
            w = watch.Watch()
            for ev in w.stream(v1.list_namespaced_pod, ns, label_selector="w=1", resource_version=rv,
                               timeout_seconds=5):
                got.append((ev["type"], ev["object"].metadata.name))
                if ev["type"] == "DELETED":
                    w.stop()
        t = threading.Thread(target=watcher)
        t.start()
        time.sleep(0.3)
        v1.create_namespaced_pod(ns, pod("watched", {"w": "1"}))
        v1.patch_namespaced_pod("watched", ns, {"metadata": {"annotations": {"a": "b"}}})
        v1.delete_namespaced_pod("watched", ns)        # Pending, not scheduled: deleted at once
        t.join(10)
        check("watch from a resourceVersion: ADDED, MODIFIED, DELETED",
              [e[0] for e in got] == ["ADDED", "MODIFIED", "DELETED"], str(got))
    run("watch", watch_events)

    def watch_bookmarks():
        rv = v1.list_namespaced_pod(ns).metadata.resource_version
        resp = v1.list_namespaced_pod(ns, watch=True, resource_version=rv, allow_watch_bookmarks=True,
                                      timeout_seconds=2, _preload_content=False)
        types = [json.loads(line)["type"] for line in resp.read().decode().splitlines() if line.strip()]
        check("watch with allowWatchBookmarks gets BOOKMARK events", "BOOKMARK" in types, str(types))
    run("bookmarks", watch_bookmarks)

    def watch_gone():
        old = v1.list_namespaced_pod(ns).metadata.resource_version
        v1.create_namespaced_pod(ns, pod("after-expiry", {}))
        admin("expire-watch-history")
        try:
            for _ in watch.Watch().stream(v1.list_namespaced_pod, ns, resource_version=old, timeout_seconds=3):
                pass
            check("watch from an expired resourceVersion: 410", False, "no exception")
        except ApiException as e:
            check("watch from an expired resourceVersion: ApiException 410 (too old resource version)",
                  e.status == 410 and "too old resource version" in str(e.reason), "%s %s" % (e.status, e.reason))
        # without timeout_seconds the library retries once after a 410, then raises
        result = []

        def no_timeout_watch():
            try:
                for _ in watch.Watch().stream(v1.list_namespaced_pod, ns, resource_version=old):
                    pass
                result.append("no exception")
            except ApiException as e:
                result.append(e.status)
        t = threading.Thread(target=no_timeout_watch, daemon=True)
        t.start()
        t.join(10)
        check("watch 410 after the library's retry", result == [410], str(result or "still watching after 10 s"))
    run("410", watch_gone)

    def dropped_watch():
        rv = v1.list_namespaced_pod(ns).metadata.resource_version
        done = []

        def watcher():
            resp = v1.list_namespaced_pod(ns, watch=True, resource_version=rv, timeout_seconds=20,
                                          _preload_content=False)
            resp.read()
            done.append(time.time())
        t0 = time.time()
        t = threading.Thread(target=watcher)
        t.start()
        time.sleep(0.5)
        n = admin("drop-watches")["dropped"]
        t.join(10)
        check("admin drop-watches ends an open watch stream", n >= 1 and done and done[0] - t0 < 5, str((n, done)))
    run("drop watches", dropped_watch)

    def conflicts():
        p = v1.read_namespaced_pod("p7-0", ns)
        p.metadata.labels["x"] = "1"
        v1.replace_namespaced_pod("p7-0", ns, p)
        p.metadata.labels["x"] = "2"      # p still has the old resourceVersion
        try:
            v1.replace_namespaced_pod("p7-0", ns, p)
            check("stale update: 409 Conflict", False, "no exception")
        except ApiException as e:
            body = json.loads(e.body)
            check("stale update: 409 Conflict 'the object has been modified'", e.status == 409 and
                  body.get("reason") == "Conflict" and "the object has been modified; please apply your changes "
                  "to the latest version and try again" in body.get("message", ""), e.body)
        try:
            v1.create_namespaced_pod(ns, pod("p7-1", {}))
            check("create twice: 409 AlreadyExists", False, "no exception")
        except ApiException as e:
            body = json.loads(e.body)
            check("create twice: 409 AlreadyExists", e.status == 409 and body.get("reason") == "AlreadyExists" and
                  body.get("message") == 'pods "p7-1" already exists', e.body)
        g = v1.create_namespaced_pod(ns, client.V1Pod(metadata=client.V1ObjectMeta(generate_name="gen-"),
                                                      spec=pod("x", {}).spec))
        check("generateName", g.metadata.name.startswith("gen-") and len(g.metadata.name) == 9, g.metadata.name)
    run("conflicts", conflicts)

    def delete_and_gc():
        owner = v1.read_namespaced_pod("p7-2", ns)
        v1.create_namespaced_secret(ns, client.V1Secret(
            metadata=client.V1ObjectMeta(name="p7-2-token", owner_references=[client.V1OwnerReference(
                api_version="v1", kind="Pod", name="p7-2", uid=owner.metadata.uid)]),
            string_data={"token": "abc"}))
        s = v1.read_namespaced_secret("p7-2-token", ns)
        check("secret stringData stored as base64 data", s.data == {"token": "YWJj"}, str(s.data))
        v1.delete_namespaced_pod("p7-2", ns)
        gone = []
        for name, read in (("p7-2", v1.read_namespaced_pod), ("p7-2-token", v1.read_namespaced_secret)):
            try:
                read(name, ns)
            except ApiException as e:
                gone.append(e.status)
        check("delete a pod; its owned Secret is garbage-collected", gone == [404, 404], str(gone))
        # a running pod is deleted gracefully: deletionTimestamp first, gone after the grace period
        admin("pods/%s/p7-3/phase" % ns, {"phase": "Running"})
        d = v1.delete_namespaced_pod("p7-3", ns, grace_period_seconds=20)   # x --grace-scale 0.05 = 1 s
        p = v1.read_namespaced_pod("p7-3", ns)
        check("graceful delete of a running pod sets deletionTimestamp",
              p.metadata.deletion_timestamp is not None and p.metadata.deletion_grace_period_seconds == 20)
        time.sleep(1.6)
        try:
            v1.read_namespaced_pod("p7-3", ns)
            check("running pod gone after its grace period", False, "still there")
        except ApiException as e:
            check("running pod gone after its grace period", e.status == 404)
    run("delete", delete_and_gc)

    def pod_lifecycle():
        admin("pods/%s/p7-4/phase" % ns, {"phase": "Running"})
        p = v1.read_namespaced_pod("p7-4", ns)
        ready = [c.status for c in p.status.conditions if c.type == "Ready"]
        check("admin: pod Running, Ready, podIP", p.status.phase == "Running" and ready == ["True"] and
              p.status.pod_ip == "127.0.0.1")
        admin("pods/%s/p7-4/evict" % ns)
        p = v1.read_namespaced_pod("p7-4", ns)
        check("admin: pod evicted", p.status.phase == "Failed" and p.status.reason == "Evicted" and
              p.status.message == "The node was low on resource: memory.")
        admin("pods/%s/p7-5/unschedulable" % ns)
        p = v1.read_namespaced_pod("p7-5", ns)
        c = p.status.conditions[0]
        check("admin: pod unschedulable", p.status.phase == "Pending" and c.type == "PodScheduled" and
              c.reason == "Unschedulable" and "Insufficient nvidia.com/gpu" in c.message)
        admin("pods/%s/p7-6/waiting" % ns, {"reason": "ImagePullBackOff"})
        p = v1.read_namespaced_pod("p7-6", ns)
        check("admin: container waiting ImagePullBackOff",
              p.status.container_statuses[0].state.waiting.reason == "ImagePullBackOff")
        lst = v1.list_namespaced_pod(ns, field_selector="status.phase=Failed")
        check("field selector status.phase=Failed", [x.metadata.name for x in lst.items] == ["p7-4"])
    run("lifecycle", pod_lifecycle)

    def custom_objects():
        ext = client.ApiextensionsV1Api(api)
        names = [c.metadata.name for c in ext.list_custom_resource_definition().items]
        if "agentpools.tidepool.dev" not in names:
            crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                   "metadata": {"name": "agentpools.tidepool.dev"},
                   "spec": {"group": "tidepool.dev", "scope": "Namespaced",
                            "names": {"kind": "AgentPool", "plural": "agentpools", "singular": "agentpool",
                                      "shortNames": ["ap"]},
                            "versions": [{"name": "v1", "served": True, "storage": True,
                                          "subresources": {"status": {}},
                                          "schema": {"openAPIV3Schema": {
                                              "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}}
            api.call_api("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", "POST", body=crd,
                         header_params={"Content-Type": "application/json"}, auth_settings=["BearerToken"],
                         _preload_content=False)
        co = client.CustomObjectsApi(api)
        G = ("tidepool.dev", "v1", ns, "agentpools")
        co.create_namespaced_custom_object(*G, {"apiVersion": "tidepool.dev/v1", "kind": "AgentPool",
                                                "metadata": {"name": "cpu"}, "spec": {"max_workers": 2},
                                                "status": {"queued": 99}})
        o = co.get_namespaced_custom_object(*G, "cpu")
        check("CustomObjectsApi create/get AgentPool", o["spec"] == {"max_workers": 2} and
              o["metadata"]["generation"] == 1, str(o))
        o = co.patch_namespaced_custom_object_status(*G, "cpu", {"status": {"workers": {"ready": 1}, "queued": 3}})
        check("patch the status subresource", o["status"] == {"workers": {"ready": 1}, "queued": 3} and
              o["metadata"]["generation"] == 1, str(o))
        o = co.patch_namespaced_custom_object(*G, "cpu", {"spec": {"max_workers": 5}, "status": {"queued": 0}})
        check("patch the main resource: spec changes, status ignored, generation 2",
              o["spec"]["max_workers"] == 5 and o["status"]["queued"] == 3 and o["metadata"]["generation"] == 2,
              str(o))
        stale = dict(o)
        co.patch_namespaced_custom_object_status(*G, "cpu", {"status": {"lastError": "boom"}})
        try:
            co.replace_namespaced_custom_object_status(*G, "cpu", stale)
            check("stale status update: 409", False, "no exception")
        except ApiException as e:
            check("stale status update: 409 Conflict", e.status == 409)
        lst = co.list_namespaced_custom_object(*G)
        check("list AgentPools", [x["metadata"]["name"] for x in lst["items"]] == ["cpu"] and
              lst["kind"] == "AgentPoolList")
        co.delete_namespaced_custom_object(*G, "cpu")
        check("delete AgentPool", co.list_namespaced_custom_object(*G)["items"] == [])
    run("custom objects", custom_objects)

    def auth():
        try:
            client.CoreV1Api(api_client("wrong-token")).list_namespaced_pod(ns)
            check("bad token: 401", False, "no exception")
        except ApiException as e:
            body = json.loads(e.body)
            check("bad token: 401 Unauthorized Status", e.status == 401 and body.get("kind") == "Status" and
                  body.get("reason") == "Unauthorized", e.body)
        lst = client.CoreV1Api(api_client(cert="cert-user")).list_namespace()
        check("client certificate user", "default" in [n.metadata.name for n in lst.items])
        admin("tokens", {"rotated": "tok-rotated"})
        try:
            v1.list_namespace()
            check("rotated tokens: the old one refused", False, "no exception")
        except ApiException as e:
            check("rotated tokens (admin): the old one refused", e.status == 401)
        check("rotated tokens (admin): the new one accepted",
              len(client.CoreV1Api(api_client("tok-rotated")).list_namespace().items) >= 1)
        admin("tokens", {"tester": a.token})
    run("auth", auth)

    def unreachable():
        admin("unreachable", {"seconds": 1})
        try:
            v1.list_namespace()
            check("unreachable: 503", False, "no exception")
        except ApiException as e:
            check("admin unreachable: 503", e.status == 503)
        time.sleep(1.2)
        check("reachable again after the window", len(v1.list_namespace().items) >= 1)
        counts = admin("requests", method="GET")
        check("admin request counts", counts.get("list pods", 0) >= 3 and counts.get("watch pods", 0) >= 3,
              str(counts))
    run("unreachable", unreachable)

    ctx = types.SimpleNamespace(v1=v1, api=api, admin=admin, api_client=api_client, check=check, run=run, ns=ns,
                                token=a.token, pod=pod)
    admission.run_all(ctx)       # RBAC denials, quota, validation, pods-ever

    def cleanup():
        v1.delete_namespace(ns)
        try:
            v1.read_namespaced_pod("p7-0", ns)
            check("deleting the namespace deletes its pods", False, "pod still there")
        except ApiException as e:
            check("deleting the namespace deletes its pods", e.status == 404)
    run("cleanup", cleanup)
    admission.after_cleanup(ctx)

    print("python3-kubernetes: %d failed" % len(FAILS))
    return 1 if FAILS else 0


def kubelet_checks(v1, a):
    """Against a fake started with --kubelet=auto --run-pods: a pod's process gets the pod's env
    (secretKeyRef, fieldRef, value), exits -> Succeeded/Failed, deletion -> SIGTERM then gone."""
    ns = "default"
    out_dir = a.work_dir
    v1.create_namespaced_secret(ns, client.V1Secret(metadata=client.V1ObjectMeta(name="agent-token"),
                                                    string_data={"token": "s3cret"}))

    def mk(name, script, grace=30):
        env = [client.V1EnvVar(name="TOKEN", value_from=client.V1EnvVarSource(
                   secret_key_ref=client.V1SecretKeySelector(name="agent-token", key="token"))),
               client.V1EnvVar(name="POD", value_from=client.V1EnvVarSource(
                   field_ref=client.V1ObjectFieldSelector(field_path="metadata.name"))),
               client.V1EnvVar(name="PLAIN", value="v")]
        c = client.V1Container(name="agent", image="tidepool/agent:dev", command=["/bin/sh", "-c"],
                               args=[script], env=env)
        v1.create_namespaced_pod(ns, client.V1Pod(metadata=client.V1ObjectMeta(name=name), spec=client.V1PodSpec(
            containers=[c], termination_grace_period_seconds=grace, restart_policy="Never")))

    def wait_for(pred, secs=10):
        end = time.time() + secs
        while time.time() < end:
            try:
                if pred():
                    return True
            except ApiException:
                pass
            time.sleep(0.1)
        return False

    envf = os.path.join(out_dir, "env.txt")
    termf = os.path.join(out_dir, "term.txt")
    mk("runner", 'echo "$TOKEN $POD $PLAIN" > %s; trap "echo TERM > %s; exit 0" TERM; '
       'while :; do sleep 0.1; done' % (envf, termf))
    ok = wait_for(lambda: v1.read_namespaced_pod("runner", ns).status.phase == "Running" and os.path.exists(envf)
                  and open(envf).read().strip())
    check("kubelet=auto: the pod is Running and its process runs", ok)
    check("the process has the pod's env (secretKeyRef, fieldRef, value)",
          ok and open(envf).read().strip() == "s3cret runner v", open(envf).read() if ok else "")
    v1.delete_namespaced_pod("runner", ns)
    gone = wait_for(lambda: v1.list_namespaced_pod(ns, field_selector="metadata.name=runner").items == [])
    check("delete: the process gets SIGTERM and the pod is gone once it exits",
          gone and os.path.exists(termf) and open(termf).read().strip() == "TERM")
    mk("stubborn", 'trap "" TERM; while :; do sleep 0.1; done', grace=40)   # 40 s x --grace-scale 0.05
    wait_for(lambda: v1.read_namespaced_pod("stubborn", ns).status.phase == "Running")
    time.sleep(0.5)   # let the shell set its trap
    t0 = time.time()
    v1.delete_namespaced_pod("stubborn", ns)
    gone = wait_for(lambda: v1.list_namespaced_pod(ns, field_selector="metadata.name=stubborn").items == [])
    check("delete: a process ignoring SIGTERM is killed after the grace period", gone and time.time() - t0 >= 1.5,
          "%.1fs" % (time.time() - t0))
    mk("fails", "exit 3")
    ok = wait_for(lambda: v1.read_namespaced_pod("fails", ns).status.phase == "Failed")
    p = v1.read_namespaced_pod("fails", ns)
    check("process exit 3 -> pod Failed, exitCode 3",
          ok and p.status.container_statuses[0].state.terminated.exit_code == 3)
    mk("works", "exit 0")
    check("process exit 0 -> pod Succeeded",
          wait_for(lambda: v1.read_namespaced_pod("works", ns).status.phase == "Succeeded"))
    print("python3-kubernetes (kubelet): %d failed" % len(FAILS))
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
