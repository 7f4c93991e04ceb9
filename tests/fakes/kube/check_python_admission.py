"""The fake's RBAC denials, pods ResourceQuota, pod validation and its record of every pod, as
Debian's python3-kubernetes surfaces them (ApiException: status, HTTP reason, the Status body).
Run by check_python_client.py; the expected messages are the API server's (see admission.py).
"""

import json
import re

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

DNS1123 = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and "
           "must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
           "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")

AP = ("tidepool.dev", "v1")


def refused(fn):
    """Calls fn; returns (status, HTTP reason, Status body) of the ApiException it raises, or None."""
    try:
        fn()
    except ApiException as e:
        body = e.body.decode() if isinstance(e.body, bytes) else e.body
        try:
            return e.status, e.reason, json.loads(body or "{}")
        except ValueError:
            return e.status, e.reason, {"unparsed": body}
    return None


def forbidden_ok(got, message, details):
    return got is not None and got[0] == 403 and got[1] == "Forbidden" and got[2].get("reason") == "Forbidden" \
        and got[2].get("code") == 403 and got[2].get("message") == message and got[2].get("details") == details


def run_all(c):
    """c: v1, api, admin, api_client, check, run, ns, token, pod (a V1Pod maker)."""
    v1, ns, check, admin = c.v1, c.ns, c.check, c.admin
    co = client.CustomObjectsApi(c.api)

    def rbac():
        admin("forbid", {"user": "tester", "verb": "create", "resource": "pods", "namespace": ns})
        got = refused(lambda: v1.create_namespaced_pod(ns, c.pod("denied", {})))
        check("forbid create pods: 403 Forbidden, the RBAC message", forbidden_ok(
            got, 'pods is forbidden: User "tester" cannot create resource "pods" in API group "" in the namespace '
                 '"%s"' % ns, {"kind": "pods"}), str(got))
        check("forbid create pods: list still allowed", isinstance(v1.list_namespaced_pod(ns).items, list))
        admin("forbid", {"user": "someone-else", "verb": "list", "resource": "pods"})
        check("a rule for another user does not apply", isinstance(v1.list_pod_for_all_namespaces().items, list))
        rules = admin("forbid", method="GET")["rules"]
        check("GET /fake/forbid lists the rules", len(rules) == 2 and rules[0] == {
            "user": "tester", "verb": "create", "resource": "pods", "namespace": ns}, str(rules))
        admin("forbid", method="DELETE")
        check("DELETE /fake/forbid: allowed again", refused(lambda: v1.create_namespaced_pod(
            ns, c.pod("allowed", {}))) is None and admin("forbid", method="GET")["rules"] == [])

        admin("forbid", {"verb": "list", "resource": "pods"})
        got = refused(lambda: v1.list_pod_for_all_namespaces())
        check("forbid list pods, all namespaces: 'at the cluster scope'", forbidden_ok(
            got, 'pods is forbidden: User "tester" cannot list resource "pods" in API group "" at the cluster scope',
            {"kind": "pods"}), str(got))
        admin("forbid", {"verb": "watch", "resource": "pods", "namespace": ns})
        got = refused(lambda: list(watch.Watch().stream(v1.list_namespaced_pod, ns, timeout_seconds=2)))
        check("forbid watch pods: the watch raises 403", forbidden_ok(
            got, 'pods is forbidden: User "tester" cannot watch resource "pods" in API group "" in the namespace '
                 '"%s"' % ns, {"kind": "pods"}), str(got))
        admin("forbid", {"verb": "get", "resource": "pods"})
        got = refused(lambda: v1.read_namespaced_pod("allowed", ns))
        check("forbid get pods: the name in the message", forbidden_ok(
            got, 'pods "allowed" is forbidden: User "tester" cannot get resource "pods" in API group "" in the '
                 'namespace "%s"' % ns, {"name": "allowed", "kind": "pods"}), str(got))
        admin("forbid", {"verb": "create", "resource": "pods/eviction"})
        got = refused(lambda: v1.create_namespaced_pod_eviction("allowed", ns, client.V1Eviction(
            metadata=client.V1ObjectMeta(name="allowed", namespace=ns))))
        check("forbid create pods/eviction (a subresource)", forbidden_ok(
            got, 'pods "allowed" is forbidden: User "tester" cannot create resource "pods/eviction" in API group "" '
                 'in the namespace "%s"' % ns, {"name": "allowed", "kind": "pods"}), str(got))
        admin("forbid", method="DELETE")

        co.create_namespaced_custom_object(*AP, ns, "agentpools", {
            "apiVersion": "tidepool.dev/v1", "kind": "AgentPool", "metadata": {"name": "rbac-ap"}, "spec": {}})
        admin("forbid", {"user": "tester", "verb": "patch", "resource": "agentpools/status", "namespace": ns})
        got = refused(lambda: co.patch_namespaced_custom_object_status(*AP, ns, "agentpools", "rbac-ap",
                                                                       {"status": {"queued": 1}}))
        check("forbid patch agentpools/status: group and subresource in the message", forbidden_ok(
            got, 'agentpools.tidepool.dev "rbac-ap" is forbidden: User "tester" cannot patch resource '
                 '"agentpools/status" in API group "tidepool.dev" in the namespace "%s"' % ns,
            {"name": "rbac-ap", "group": "tidepool.dev", "kind": "agentpools"}), str(got))
        o = co.patch_namespaced_custom_object(*AP, ns, "agentpools", "rbac-ap", {"spec": {"max_agents": 1}})
        check("... the main resource may still be patched", o["spec"] == {"max_agents": 1}, str(o))
        admin("forbid", method="DELETE")

        sa = "system:serviceaccount:%s:tidepool-server" % ns
        admin("tokens", {"tester": c.token, sa: "sa-token"})
        admin("forbid", {"user": sa, "verb": "create", "resource": "secrets"})
        sa_v1 = client.CoreV1Api(c.api_client("sa-token"))
        secret = client.V1Secret(metadata=client.V1ObjectMeta(name="sa-secret"), string_data={"k": "v"})
        got = refused(lambda: sa_v1.create_namespaced_secret(ns, secret))
        check("forbid a service account user: its name in the message", forbidden_ok(
            got, 'secrets is forbidden: User "%s" cannot create resource "secrets" in API group "" in the namespace '
                 '"%s"' % (sa, ns), {"kind": "secrets"}), str(got))
        check("... other users unaffected", refused(lambda: v1.create_namespaced_secret(ns, secret)) is None)
        admin("forbid", method="DELETE")
        admin("tokens", {"tester": c.token})
    c.run("rbac", rbac)

    def quota():
        phase = lambda p: (p.status.phase if p.status else None)
        used = sum(1 for p in v1.list_namespaced_pod(ns).items if phase(p) not in ("Succeeded", "Failed"))
        admin("quota", {"namespace": ns, "pods": used, "name": "pyns-pods"})
        want = "exceeded quota: pyns-pods, requested: pods=1, used: pods=%d, limited: pods=%d" % (used, used)
        got = refused(lambda: v1.create_namespaced_pod(ns, c.pod("over-1", {})))
        check("quota full: 403 Forbidden 'exceeded quota' with the pod's name", forbidden_ok(
            got, 'pods "over-1" is forbidden: ' + want, {"name": "over-1", "kind": "pods"}), str(got))
        gen = client.V1Pod(metadata=client.V1ObjectMeta(generate_name="gq-"), spec=c.pod("x", {}).spec)
        got = refused(lambda: v1.create_namespaced_pod(ns, gen))
        msg = got[2].get("message", "") if got else ""
        check("quota full, generateName: the generated name in the message", got is not None and got[0] == 403 and
              re.fullmatch(r'pods "gq-[a-z0-9]{5}" is forbidden: ' + re.escape(want), msg) is not None, str(got))
        q = admin("quota", method="GET")["quotas"]
        check("GET /fake/quota: limit and use", q == [{"namespace": ns, "name": "pyns-pods", "pods": used,
                                                       "used": used}], str(q))
        victim = next(p.metadata.name for p in v1.list_namespaced_pod(ns).items if phase(p) == "Pending")
        admin("pods/%s/%s/phase" % (ns, victim), {"phase": "Succeeded"})
        check("a terminated pod does not count: room for one more",
              refused(lambda: v1.create_namespaced_pod(ns, c.pod("over-1", {}))) is None)
        got = refused(lambda: v1.create_namespaced_pod(ns, c.pod("over-2", {})))
        check("... and then full again", got is not None and got[0] == 403 and "used: pods=%d" % used in
              got[2].get("message", ""), str(got))
        admin("quota?namespace=" + ns, method="DELETE")
        check("DELETE /fake/quota: no limit", admin("quota", method="GET")["quotas"] == [] and
              refused(lambda: v1.create_namespaced_pod(ns, c.pod("over-2", {}))) is None)
    c.run("quota", quota)

    def validation():
        def create(name, spec, generate=False):
            meta = {"generateName": name} if generate else {"name": name}
            return refused(lambda: v1.create_namespaced_pod(ns, {"apiVersion": "v1", "kind": "Pod",
                                                                 "metadata": meta, "spec": spec}))

        def invalid_ok(got, name, message, causes):
            return got is not None and got[0] == 422 and got[1] == "Unprocessable Entity" and \
                got[2].get("reason") == "Invalid" and got[2].get("message") == message and \
                got[2].get("details") == {"name": name, "kind": "Pod", "causes": causes}

        req = lambda f: {"reason": "FieldValueRequired", "message": "Required value", "field": f}
        got = create("v-none", {})
        check("no containers: 422 Invalid 'spec.containers: Required value'", invalid_ok(
            got, "v-none", 'Pod "v-none" is invalid: spec.containers: Required value', [req("spec.containers")]),
            str(got))
        got = create("v-noimage", {"containers": [{"name": "agent"}]})
        check("a container without an image", invalid_ok(
            got, "v-noimage", 'Pod "v-noimage" is invalid: spec.containers[0].image: Required value',
            [req("spec.containers[0].image")]), str(got))
        got = create("v-both", {"containers": [{"name": "agent", "image": "x"}, {}]})
        check("two errors: aggregated as [a, b], one cause each", invalid_ok(
            got, "v-both", 'Pod "v-both" is invalid: [spec.containers[1].name: Required value, '
                           'spec.containers[1].image: Required value]',
            [req("spec.containers[1].name"), req("spec.containers[1].image")]), str(got))
        ok_spec = {"containers": [{"name": "agent", "image": "x"}]}
        got = create("Bad_Name", ok_spec)
        check("an invalid metadata.name: the DNS-1123 subdomain message", invalid_ok(
            got, "Bad_Name", 'Pod "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": ' + DNS1123,
            [{"reason": "FieldValueInvalid", "message": 'Invalid value: "Bad_Name": ' + DNS1123,
              "field": "metadata.name"}]), str(got))
        got = create("Gen_", ok_spec, generate=True)
        fields = [x.get("field") for x in got[2].get("details", {}).get("causes", [])] if got else []
        check("an invalid generateName: metadata.generateName and metadata.name",
              got is not None and got[0] == 422 and fields == ["metadata.generateName", "metadata.name"], str(got))
        tried = {"v-none", "v-noimage", "v-both", "Bad_Name"}
        ever = admin("pods-ever", method="GET")
        check("invalid pods were never created", not [p for p in ever if p["name"] in tried or
                                                       p["name"].startswith("Gen_")], str(ever))
        admin("pod-validation", {"enabled": False})
        created = create("v-off", {"containers": [{"name": "agent"}]}) is None
        admin("pod-validation", {"enabled": True})
        check("POST /fake/pod-validation enabled=false turns validation off", created and
              admin("pod-validation", method="GET") == {"enabled": True})
        v1.delete_namespaced_pod("v-off", ns)
    c.run("validation", validation)

    def pods_ever():
        ever = [p for p in admin("pods-ever", method="GET") if p["namespace"] == ns]
        by = {p["name"]: p for p in ever}
        check("pods-ever: {namespace, name, uid, created, deleted} for each pod",
              all(set(p) == {"namespace", "name", "uid", "created", "deleted"} for p in ever) and
              {"p7-%d" % i for i in range(7)} <= set(by), str(ever))
        p0 = v1.read_namespaced_pod("p7-0", ns)
        check("pods-ever: a live pod, its uid and creation time", by["p7-0"]["uid"] == p0.metadata.uid and
              not by["p7-0"]["deleted"] and by["p7-0"]["created"] ==
              p0.metadata.creation_timestamp.strftime("%Y-%m-%dT%H:%M:%SZ"), str(by.get("p7-0")))
        check("pods-ever: deleted pods (deleted at once, after a grace period, by the API)",
              by["p7-2"]["deleted"] and by["p7-3"]["deleted"] and by["watched"]["deleted"] and by["v-off"]["deleted"],
              str([by.get(n) for n in ("p7-2", "p7-3", "watched", "v-off")]))
    c.run("pods-ever", pods_ever)

    def delay():
        rule = admin("delay", {"verb": "create", "resource": "configmaps", "seconds": 0.2})["rule"]
        check("delay: the rule as given", rule == {"verb": "create", "resource": "configmaps", "seconds": 0.2}, str(rule))
        made = v1.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="slow")))
        check("delay: a delayed create still succeeds", made.metadata.name == "slow", str(made.metadata))
        check("delay: GET lists it", admin("delay", method="GET")["delays"] == [rule])
        admin("delay", method="DELETE")
        check("delay: DELETE clears", admin("delay", method="GET")["delays"] == [])
    c.run("delay", delay)


def after_cleanup(c):
    def gone():
        ever = [p for p in c.admin("pods-ever", method="GET") if p["namespace"] == c.ns]
        check_ok = ever and all(p["deleted"] for p in ever)
        c.check("pods-ever: every pod of the deleted namespace is marked deleted", check_ok,
                str([p for p in ever if not p["deleted"]]))
    c.run("pods-ever after cleanup", gone)


def patch_agentpool_status(api, target):
    """For check_real_clients.sh: writes a status on NAMESPACE/NAME with
    CustomObjectsApi.patch_namespaced_custom_object_status (then kubectl get ap shows it)."""
    ns, name = target.split("/", 1)
    now = "2024-01-01T00:00:00Z"
    cond = lambda t, s, r: {"type": t, "status": s, "reason": r, "message": "", "lastTransitionTime": now,
                            "observedGeneration": 1}
    status = {"observedGeneration": 1, "queued": 4, "lastError": "create tp-cpu-x: quota exceeded",
              "lastErrorTime": now,
              "workers": {"requested": 0, "starting": 1, "idle": 2, "busy": 3, "draining": 0, "deleting": 0,
                          "lost": 0, "unknown": 0},
              "conditions": [cond("Ready", "True", "PoolRunning"), cond("ScalingUp", "True", "Demand"),
                             cond("Degraded", "False", "NoErrors")]}
    o = client.CustomObjectsApi(api).patch_namespaced_custom_object_status(*AP, ns, "agentpools", name,
                                                                           {"status": status})
    return 0 if o.get("status") == status else 1
