"""RBAC denials, ResourceQuota and pod validation of the FAKE Kubernetes API server (tests only).

None of it is the real thing: no Role or RoleBinding is evaluated (every authenticated user may do
everything unless a /fake/forbid rule matches), no ResourceQuota object exists (a /fake/quota
entry stands for one that limits `pods`), and a created pod is checked against a handful of the
API server's validation rules only. What the clients see is the API server's answer, word for
word, from the Kubernetes source:
- denial: k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/errors.go (forbiddenMessage)
  wrapped by apierrors.NewForbidden;
- quota: k8s.io/apiserver/pkg/admission/plugin/resourcequota/controller.go ("exceeded quota: ...")
  wrapped by admission.NewForbidden (the object's name, generated names included);
- validation: pkg/apis/core/validation (ValidateObjectMeta with ValidatePodName, validateContainers)
  and apimachinery's IsDNS1123Subdomain, wrapped by apierrors.NewInvalid.
"""

import re
import threading
import time

from apierrors import ApiError, go_quote, forbidden, invalid, invalid_object, required

VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")

DNS1123_SUBDOMAIN_FMT = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
DNS1123_SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
                         "'.', and must start and end with an alphanumeric character")


def dns1123_subdomain(value):
    """validation.IsDNS1123Subdomain: the messages for a bad name (none for a good one)."""
    errs = []
    if len(value) > 253:
        errs.append("must be no more than 253 characters")
    if not re.fullmatch(DNS1123_SUBDOMAIN_FMT, value):
        errs.append("%s (e.g. 'example.com', regex used for validation is '%s')"
                    % (DNS1123_SUBDOMAIN_MSG, DNS1123_SUBDOMAIN_FMT))
    return errs


def _mask_trailing_dash(name):
    """apimachinery's maskTrailingDash, as a generateName prefix is checked (quirk included)."""
    return name[:-2] + "a" if len(name) > 1 and name.endswith("-") else name


def pod_field_errors(pod):
    """The only validation the fake does: metadata.generateName and metadata.name are DNS-1123
    subdomains; spec.containers is not empty; each container has a name and an image."""
    errs = []
    m = pod.get("metadata") or {}
    gen = m.get("generateName")
    if isinstance(gen, str) and gen:
        errs += [invalid("metadata.generateName", gen, msg) for msg in dns1123_subdomain(_mask_trailing_dash(gen))]
    name = m.get("name")
    if isinstance(name, str) and name:
        errs += [invalid("metadata.name", name, msg) for msg in dns1123_subdomain(name)]
    containers = (pod.get("spec") or {}).get("containers")
    if not containers or not isinstance(containers, list):
        errs.append(required("spec.containers"))
        return errs
    for i, c in enumerate(containers):
        c = c if isinstance(c, dict) else {}
        if not c.get("name"):
            errs.append(required("spec.containers[%d].name" % i))
        if not c.get("image"):
            errs.append(required("spec.containers[%d].image" % i))
    return errs


class Policy:
    """The /fake/forbid rules, the /fake/quota limits and pod validation (/fake/pod-validation)."""

    def __init__(self, store):
        self.store = store
        self.lock = threading.Lock()
        self.rules = []           # {"user": U|None, "verb": V, "resource": R, "namespace": NS|None}
        self.quotas = {}          # namespace -> {"name": ..., "pods": N}
        self.validate_pods = True
        self.delays = []          # {"verb": V, "resource": R, "seconds": S}: a slow API server
        store.admission.append(self.admit)

    # -- slow answers (tests of a backend call that is still running)
    def add_delay(self, p):
        verb, resource = p.get("verb"), p.get("resource")
        if verb not in VERBS + ("*",) or not isinstance(resource, str) or not resource:
            raise ApiError(400, "BadRequest", "verb (one of %s, or *) and resource are required" % ", ".join(VERBS))
        try:
            seconds = float(p.get("seconds", 1))
        except (TypeError, ValueError):
            raise ApiError(400, "BadRequest", "seconds must be a number")
        rule = {"verb": verb, "resource": resource, "seconds": seconds}
        with self.lock:
            self.delays.append(rule)
        return rule

    def clear_delays(self):
        with self.lock:
            self.delays = []

    def list_delays(self):
        with self.lock:
            return [dict(r) for r in self.delays]

    # -- RBAC denials
    def add_rule(self, p):
        verb, resource = p.get("verb"), p.get("resource")
        if verb not in VERBS + ("*",):
            raise ApiError(400, "BadRequest", "verb must be one of %s (or *)" % ", ".join(VERBS))
        if not isinstance(resource, str) or not resource:
            raise ApiError(400, "BadRequest", 'resource is required: a plural such as "pods" or "agentpools/status"')
        rule = {"user": p.get("user") or None, "verb": verb, "resource": resource,
                "namespace": p.get("namespace") or None}
        with self.lock:
            self.rules.append(rule)
        return rule

    def clear_rules(self):
        with self.lock:
            self.rules = []

    def list_rules(self):
        with self.lock:
            return [dict(r) for r in self.rules]

    def authorize(self, user, verb, rt, sub, namespace, name):
        """Raises the API server's 403 when a rule matches the request's attributes (user, verb,
        resource[/subresource], namespace; a rule's missing user or namespace matches any)."""
        resource = rt.plural + ("/" + sub if sub else "")
        with self.lock:
            pause = sum(d["seconds"] for d in self.delays if d["verb"] in ("*", verb) and d["resource"] == resource)
        if pause > 0:
            time.sleep(pause)  # before anything is done: the request is slow, its effect comes after
        with self.lock:
            hit = any((r["user"] is None or r["user"] == user) and r["verb"] in ("*", verb) and
                      r["resource"] == resource and (r["namespace"] is None or r["namespace"] == namespace)
                      for r in self.rules)
        if not hit:
            return
        who = "User %s cannot %s resource %s in API group %s" % (go_quote(user), verb, go_quote(resource),
                                                                 go_quote(rt.group))
        where = " in the namespace %s" % go_quote(namespace) if namespace else " at the cluster scope"
        raise forbidden(rt, name, who + where)

    # -- ResourceQuota (pods)
    def set_quota(self, namespace, pods, name=None):
        if not namespace or not isinstance(namespace, str):
            raise ApiError(400, "BadRequest", "namespace is required")
        try:
            pods = int(pods)
        except (TypeError, ValueError):
            raise ApiError(400, "BadRequest", "pods must be a non-negative integer")
        if pods < 0:
            raise ApiError(400, "BadRequest", "pods must be a non-negative integer")
        with self.lock:
            self.quotas[namespace] = {"name": name or "pods-quota", "pods": pods}

    def clear_quotas(self, namespace=None):
        with self.lock:
            if namespace:
                self.quotas.pop(namespace, None)
            else:
                self.quotas = {}

    def list_quotas(self):
        with self.store.lock, self.lock:
            return [{"namespace": ns, "name": q["name"], "pods": q["pods"], "used": self.used_pods(ns)}
                    for ns, q in sorted(self.quotas.items())]

    def used_pods(self, namespace):
        """What the quota counts: the namespace's pods not terminated (phase not Succeeded/Failed)."""
        pods = self.store.objects.get(("", "pods"), {})
        return sum(1 for (ns, _), o in pods.items() if ns == namespace and
                   (o.get("status") or {}).get("phase") not in ("Succeeded", "Failed"))

    # -- on create, under the store's lock
    def admit(self, rt, namespace, obj):
        if rt.kind != "Pod":
            return
        name = obj["metadata"]["name"]
        if self.validate_pods:
            errs = pod_field_errors(obj)
            if errs:
                raise invalid_object("Pod", "", name, errs)
        with self.lock:
            q = dict(self.quotas[namespace]) if namespace in self.quotas else None
        if q is not None:
            used = self.used_pods(namespace)
            if used + 1 > q["pods"]:
                raise forbidden(rt, name, "exceeded quota: %s, requested: pods=1, used: pods=%d, limited: pods=%d"
                                % (q["name"], used, q["pods"]))
