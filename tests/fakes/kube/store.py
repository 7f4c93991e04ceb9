"""The object store of the FAKE Kubernetes API server (tests only; not a real API server).

Follows https://kubernetes.io/docs/reference/using-api/api-concepts/ for what Tidepool uses:
one global resourceVersion counter (as strings), optimistic concurrency (409 Conflict),
watch history with a window (older -> 410 Expired), ownerReferences garbage collection,
graceful pod deletion, CRDs making their custom resources servable.
"""

import base64
import copy
import datetime
import json
import os
import queue
import random
import threading
import time
import uuid
from collections import deque

from apierrors import ApiError, invalid_object, not_found, required  # noqa: F401 (ApiError: re-exported)
from patches import json_patch, merge_patch, strategic_merge_patch


def now_iso(offset=0.0):
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=offset)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


class ResourceType:
    def __init__(self, group, version, plural, kind, namespaced, short_names=(),
                 has_status=True, singular=None, categories=(), crd=None, subresources=()):
        self.group, self.version, self.plural, self.kind = group, version, plural, kind
        self.namespaced, self.short_names, self.has_status = namespaced, list(short_names), has_status
        self.singular = singular or kind.lower()
        self.categories, self.crd = list(categories), crd
        self.subresources = list(subresources)

    @property
    def api_version(self):
        return "%s/%s" % (self.group, self.version) if self.group else self.version

    @property
    def key(self):
        return (self.group, self.plural)

    def qualified(self):
        return "%s.%s" % (self.plural, self.group) if self.group else self.plural

    def discovery(self):
        verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
        out = [{"name": self.plural, "singularName": self.singular, "namespaced": self.namespaced,
                "kind": self.kind, "verbs": verbs}]
        if self.short_names:
            out[0]["shortNames"] = self.short_names
        if self.categories:
            out[0]["categories"] = self.categories
        if self.has_status:
            out.append({"name": self.plural + "/status", "singularName": "", "namespaced": self.namespaced,
                        "kind": self.kind, "verbs": ["get", "patch", "update"]})
        for sub, kind, verbs in self.subresources:
            out.append({"name": self.plural + "/" + sub, "singularName": "", "namespaced": self.namespaced,
                        "kind": kind, "verbs": verbs})
        return out


BUILTIN = [
    ResourceType("", "v1", "pods", "Pod", True, ["po"], categories=["all"],
                 subresources=[("log", "Pod", ["get"]), ("eviction", "Eviction", ["create"])]),
    ResourceType("", "v1", "secrets", "Secret", True, has_status=False),
    ResourceType("", "v1", "configmaps", "ConfigMap", True, ["cm"], has_status=False),
    ResourceType("", "v1", "events", "Event", True, ["ev"], has_status=False),
    ResourceType("", "v1", "namespaces", "Namespace", False, ["ns"]),
    ResourceType("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition",
                 False, ["crd", "crds"]),
    # Stored only, so that deploy/kubernetes/ applies: no controller acts on them (a Deployment
    # makes no pods, a Service routes nothing, RBAC objects grant or deny nothing: see /fake/forbid).
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", True, ["sa"], has_status=False),
    ResourceType("", "v1", "services", "Service", True, ["svc"], categories=["all"]),
    ResourceType("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, ["pvc"]),
    ResourceType("apps", "v1", "deployments", "Deployment", True, ["deploy"], categories=["all"]),
    ResourceType("rbac.authorization.k8s.io", "v1", "roles", "Role", True, has_status=False),
    ResourceType("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True, has_status=False),
]

# --- the store --------------------------------------------------------------------------------

_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"


class Watch:
    def __init__(self, rt, namespace, selector):
        self.rt, self.namespace, self.selector = rt, namespace, selector
        self.q = queue.Queue()

    def wants(self, key, obj):
        if key != self.rt.key or obj is None:
            return False
        if self.namespace and obj["metadata"].get("namespace") != self.namespace:
            return False
        return self.selector.matches(obj)


class Store:
    def __init__(self, history=1000, state_file=None, grace_scale=1.0):
        self.lock = threading.RLock()
        self.rv = 0
        self.types = {rt.key: rt for rt in BUILTIN}
        self.objects = {rt.key: {} for rt in BUILTIN}
        self.history = deque()          # (rv, key, type, obj)
        self.history_size = history
        self.oldest_rv = 0              # watches from an rv below this get 410
        self.watches = set()
        self.state_file = state_file
        self.grace_scale = grace_scale
        self.hooks = []                 # callables(event_type, key, obj, old) run after changes
        self.admission = []             # callables(rt, namespace, obj) run on create, under the lock,
                                        # after defaulting, before the AlreadyExists check: may raise
        if state_file and os.path.exists(state_file):
            self._load()
        for ns in ("default", "kube-system", "kube-public"):
            if ("", ns) not in self.objects[("", "namespaces")]:
                self.create(self.types[("", "namespaces")], None, {"metadata": {"name": ns}})

    # -- persistence
    def _load(self):
        with open(self.state_file) as f:
            st = json.load(f)
        self.rv = st["rv"]
        for obj in st["objects"]:
            if obj.get("kind") == "CustomResourceDefinition":
                self._register_crd(obj)
        for obj in st["objects"]:
            rt = self.type_for_object(obj)
            if rt:
                m = obj["metadata"]
                self.objects[rt.key][(m.get("namespace", ""), m["name"])] = obj
        self.oldest_rv = self.rv

    def _save(self):
        if not self.state_file:
            return
        tmp = self.state_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"rv": self.rv, "objects": self.dump()}, f)
        os.replace(tmp, self.state_file)

    def dump(self):
        with self.lock:
            return [copy.deepcopy(o) for objs in self.objects.values() for o in objs.values()]

    # -- types
    def type_for_object(self, obj):
        av, kind = obj.get("apiVersion", ""), obj.get("kind", "")
        group, _, version = av.rpartition("/")
        for rt in self.types.values():
            if rt.group == group and rt.kind == kind:
                return rt
        return None

    def lookup(self, group, version, plural):
        rt = self.types.get((group, plural))
        if rt is None or rt.version != version and not (rt.crd and version in crd_versions(rt.crd)):
            return None
        return rt

    def groups(self):
        with self.lock:
            out = {}
            for rt in self.types.values():
                if rt.group:
                    vs = out.setdefault(rt.group, [])
                    for v in (crd_versions(rt.crd) if rt.crd else [rt.version]):
                        if v not in vs:
                            vs.append(v)
            return out

    def resources(self, group, version):
        with self.lock:
            out = []
            for rt in self.types.values():
                if rt.group == group and (rt.version == version or rt.crd and version in crd_versions(rt.crd)):
                    out.extend(rt.discovery())
            return out

    def _register_crd(self, crd):
        spec = crd.get("spec", {})
        names = spec.get("names", {})
        vers = crd_versions(crd)
        storage = next((v["name"] for v in spec.get("versions", []) if v.get("storage")), vers[0] if vers else "v1")
        served = next((v for v in spec.get("versions", []) if v.get("name") == storage), {})
        rt = ResourceType(spec["group"], storage, names["plural"], names["kind"],
                          spec.get("scope", "Namespaced") == "Namespaced", names.get("shortNames", []),
                          has_status="status" in (served.get("subresources") or {}),
                          singular=names.get("singular") or names["kind"].lower(),
                          categories=names.get("categories", []), crd=crd)
        self.types[rt.key] = rt
        self.objects.setdefault(rt.key, {})
        return rt

    # -- events
    def _bump(self):
        self.rv += 1
        return str(self.rv)

    def _emit(self, etype, rt, obj, old=None):
        snap = copy.deepcopy(obj)
        self.history.append((self.rv, rt.key, etype, snap, copy.deepcopy(old)))
        while len(self.history) > self.history_size:
            r = self.history.popleft()
            self.oldest_rv = max(self.oldest_rv, r[0])
        for w in list(self.watches):
            ev = self._event_for(w, rt.key, etype, snap, old)
            if ev:
                w.q.put(ev)
        self._save()
        for h in self.hooks:
            h(etype, rt, snap, old)

    @staticmethod
    def _event_for(w, key, etype, obj, old):
        new_in = w.wants(key, obj)
        old_in = w.wants(key, old) if old is not None else False
        if etype == "DELETED":
            return ("DELETED", obj) if (new_in or old_in) else None
        if etype == "MODIFIED":
            if new_in and old_in:
                return ("MODIFIED", obj)
            if new_in:
                return ("ADDED", obj)
            if old_in:
                return ("DELETED", obj)
            return None
        return (etype, obj) if new_in else None

    def set_history_size(self, n):
        with self.lock:
            self.history_size = max(0, int(n))
            while len(self.history) > self.history_size:
                r = self.history.popleft()
                self.oldest_rv = max(self.oldest_rv, r[0])

    def expire_history(self):
        with self.lock:
            self.history.clear()
            self.oldest_rv = self.rv

    def drop_watches(self):
        with self.lock:
            for w in list(self.watches):
                w.q.put(None)

    # -- watch
    def open_watch(self, rt, namespace, selector, rv):
        """Returns a Watch whose queue already holds the initial events."""
        with self.lock:
            w = Watch(rt, namespace, selector)
            if rv in (None, "", "0"):
                for obj in self._list_objects(rt, namespace, selector):
                    w.q.put(("ADDED", copy.deepcopy(obj)))
            else:
                try:
                    n = int(rv)
                except ValueError:
                    raise ApiError(400, "BadRequest", "invalid resource version %r" % rv)
                if n < self.oldest_rv:
                    w.q.put(("ERROR", ApiError(
                        410, "Expired", "too old resource version: %d (%d)" % (n, self.oldest_rv + 1)).status()))
                    w.q.put(None)
                    return w
                for (erv, key, etype, obj, old) in self.history:
                    if erv > n:
                        ev = self._event_for(w, key, etype, obj, old)
                        if ev:
                            w.q.put(ev)
            self.watches.add(w)
            return w

    def close_watch(self, w):
        with self.lock:
            self.watches.discard(w)

    # -- reads
    def _ns_check(self, rt, namespace):
        if rt.namespaced and namespace and ("", namespace) not in self.objects[("", "namespaces")]:
            raise ApiError(404, "NotFound", 'namespaces "%s" not found' % namespace,
                           {"name": namespace, "kind": "namespaces"})

    def _list_objects(self, rt, namespace, selector):
        objs = self.objects.get(rt.key, {})
        keys = sorted(k for k in objs if not namespace or k[0] == namespace)
        return [objs[k] for k in keys if selector.matches(objs[k])]

    def get(self, rt, namespace, name):
        with self.lock:
            obj = self.objects.get(rt.key, {}).get((namespace or "", name))
            if obj is None:
                raise not_found(rt, name)
            return copy.deepcopy(obj)

    def list(self, rt, namespace, selector, limit=0, cont=None):
        with self.lock:
            start_after, list_rv = None, self.rv
            if cont:
                try:
                    tok = json.loads(base64.urlsafe_b64decode(cont.encode()).decode())
                    start_after, list_rv = tuple(tok["after"]), int(tok["rv"])
                except Exception:
                    raise ApiError(400, "BadRequest", "continue key is not valid: %r" % cont)
                if list_rv < self.oldest_rv:
                    raise ApiError(410, "Expired",
                                   "The provided continue parameter is too old to display a consistent list "
                                   "result. You can start a new list without the continue parameter.")
            objs = self.objects.get(rt.key, {})
            keys = sorted(k for k in objs if (not namespace or k[0] == namespace)
                          and (start_after is None or k > start_after) and selector.matches(objs[k]))
            meta = {"resourceVersion": str(list_rv)}
            if limit and len(keys) > limit:
                rest = len(keys) - limit
                keys = keys[:limit]
                meta["continue"] = base64.urlsafe_b64encode(json.dumps(
                    {"after": list(keys[-1]), "rv": list_rv}).encode()).decode()
                meta["remainingItemCount"] = rest
            return [copy.deepcopy(objs[k]) for k in keys], meta

    # -- writes
    def create(self, rt, namespace, obj):
        with self.lock:
            obj = copy.deepcopy(obj)
            m = obj.setdefault("metadata", {})
            if rt.namespaced:
                namespace = namespace or m.get("namespace") or "default"
                if m.get("namespace") and m["namespace"] != namespace:
                    raise ApiError(400, "BadRequest", "the namespace of the provided object does not match "
                                   "the namespace sent on the request")
                self._ns_check(rt, namespace)
                m["namespace"] = namespace
            else:
                m.pop("namespace", None)
                namespace = ""
            if not m.get("name"):
                if m.get("generateName"):
                    m["name"] = m["generateName"] + "".join(random.choice(_NAME_CHARS) for _ in range(5))
                else:
                    raise invalid_object(rt.kind, rt.group, "", [
                        required("metadata.name", "name or generateName is required")])
            objs = self.objects[rt.key]
            self._defaults(rt, obj)
            for admit in self.admission:    # validation (422), then admission plugins (quota: 403)
                admit(rt, namespace, obj)
            if (namespace, m["name"]) in objs:
                raise ApiError(409, "AlreadyExists", '%s "%s" already exists' % (rt.qualified(), m["name"]),
                               {"name": m["name"], "group": rt.group, "kind": rt.plural})
            obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
            for k in ("deletionTimestamp", "deletionGracePeriodSeconds"):
                m.pop(k, None)
            m["uid"] = str(uuid.uuid4())
            m["creationTimestamp"] = now_iso()
            if rt.crd or rt.kind == "CustomResourceDefinition":
                m["generation"] = 1
            if rt.kind == "CustomResourceDefinition":
                self._validate_crd(obj)
            m["resourceVersion"] = self._bump()
            objs[(namespace, m["name"])] = obj
            if rt.kind == "CustomResourceDefinition":
                self._register_crd(obj)
            self._emit("ADDED", rt, obj)
            return copy.deepcopy(obj)

    def _defaults(self, rt, obj):
        if rt.kind == "Pod":
            spec = obj["spec"] = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
            spec.setdefault("restartPolicy", "Always")
            spec.setdefault("terminationGracePeriodSeconds", 30)
            spec.setdefault("dnsPolicy", "ClusterFirst")
            spec.setdefault("schedulerName", "default-scheduler")
            for c in [c for c in spec.get("containers") or [] if isinstance(c, dict)]:
                c.setdefault("imagePullPolicy", "IfNotPresent")
                c.setdefault("terminationMessagePath", "/dev/termination-log")
            obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        elif rt.kind == "Secret":
            sd = obj.pop("stringData", None) or {}
            data = obj.setdefault("data", {}) or {}
            for k, v in sd.items():
                data[k] = base64.b64encode(v.encode()).decode()
            obj["data"] = data
            obj.setdefault("type", "Opaque")
        elif rt.kind == "Namespace":
            obj["status"] = {"phase": "Active"}
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        elif rt.kind == "CustomResourceDefinition":
            names = obj.get("spec", {}).get("names", {})
            obj["status"] = {
                "acceptedNames": names, "storedVersions": crd_versions(obj)[:1],
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                     "message": "no conflicts found", "lastTransitionTime": now_iso()},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                     "message": "the initial names have been accepted", "lastTransitionTime": now_iso()}]}

    def _validate_crd(self, crd):
        spec = crd.get("spec", {})
        names = spec.get("names", {})
        name = crd["metadata"]["name"]
        errs = []
        if not spec.get("group"):
            errs.append("spec.group: Required value")
        if not names.get("plural") or not names.get("kind"):
            errs.append("spec.names: Required value: plural and kind")
        elif name != "%s.%s" % (names["plural"], spec.get("group")):
            errs.append('metadata.name: Invalid value: "%s": must be spec.names.plural+"."+spec.group' % name)
        if not crd_versions(crd):
            errs.append("spec.versions: Invalid value: must have exactly one version marked as storage version")
        if errs:
            raise ApiError(422, "Invalid", 'CustomResourceDefinition.apiextensions.k8s.io "%s" is invalid: %s'
                           % (name, ", ".join(errs)))

    def update(self, rt, namespace, name, obj, subresource=None, check_rv=True):
        """PUT. On the main resource of a type with a status subresource, status is kept;
        on /status, only status changes."""
        with self.lock:
            namespace = namespace or "" if rt.namespaced else ""
            objs = self.objects[rt.key]
            old = objs.get((namespace, name))
            if old is None:
                raise not_found(rt, name)
            if not isinstance(obj, dict):
                raise ApiError(400, "BadRequest", "the body of the request must be an object")
            m = obj.get("metadata") or {}
            if m.get("name") and m["name"] != name:
                raise ApiError(400, "BadRequest", "the name of the object (%s) does not match the name on the "
                               "URL (%s)" % (m["name"], name))
            if check_rv and m.get("resourceVersion") and m["resourceVersion"] != old["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", 'Operation cannot be fulfilled on %s "%s": the object has been '
                               'modified; please apply your changes to the latest version and try again'
                               % (rt.qualified(), name), {"name": name, "group": rt.group, "kind": rt.plural})
            if subresource == "status":
                new = copy.deepcopy(old)
                if "status" in obj:
                    new["status"] = copy.deepcopy(obj["status"])
                else:
                    new.pop("status", None)
            else:
                new = copy.deepcopy(obj)
                nm = new.setdefault("metadata", {})
                for k in ("uid", "creationTimestamp", "namespace", "deletionTimestamp",
                          "deletionGracePeriodSeconds", "generation"):
                    if k in old["metadata"]:
                        nm[k] = old["metadata"][k]
                    else:
                        nm.pop(k, None)
                nm["name"] = name
                new["apiVersion"], new["kind"] = rt.api_version, rt.kind
                if rt.has_status:
                    if "status" in old:
                        new["status"] = copy.deepcopy(old["status"])
                    else:
                        new.pop("status", None)
                if rt.kind == "Secret":
                    sd = new.pop("stringData", None) or {}
                    new.setdefault("data", {})
                    for k, v in sd.items():
                        new["data"][k] = base64.b64encode(v.encode()).decode()
                if "generation" in old["metadata"]:
                    strip = lambda o: {k: v for k, v in o.items() if k not in ("metadata", "status")}
                    if strip(new) != strip(old):
                        nm["generation"] = old["metadata"]["generation"] + 1
            if new == old or _same_but_rv(new, old):
                return copy.deepcopy(old)
            new["metadata"]["resourceVersion"] = self._bump()
            objs[(namespace, name)] = new
            if rt.kind == "CustomResourceDefinition":
                self._register_crd(new)
            self._emit("MODIFIED", rt, new, old)
            if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers") \
                    and rt.kind != "Pod":
                self._remove(rt, namespace, name)
            return copy.deepcopy(new)

    def patch(self, rt, namespace, name, ptype, body, subresource=None):
        with self.lock:
            old = self.get(rt, namespace, name)
            if ptype == "json":
                new = json_patch(old, body)
            elif ptype == "strategic":
                new = strategic_merge_patch(old, body)
            else:
                new = merge_patch(old, body)
            rv = (body.get("metadata") or {}).get("resourceVersion") if isinstance(body, dict) else None
            new.setdefault("metadata", {})["resourceVersion"] = rv or old["metadata"]["resourceVersion"]
            return self.update(rt, namespace, name, new, subresource=subresource)

    def delete(self, rt, namespace, name, grace=None, propagation=None, preconditions=None):
        with self.lock:
            namespace = namespace or "" if rt.namespaced else ""
            obj = self.objects[rt.key].get((namespace, name))
            if obj is None:
                raise not_found(rt, name)
            pre = preconditions or {}
            if pre.get("uid") and pre["uid"] != obj["metadata"]["uid"] or \
                    pre.get("resourceVersion") and pre["resourceVersion"] != obj["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", 'Operation cannot be fulfilled on %s "%s": the precondition '
                               'was not met' % (rt.qualified(), name))
            if rt.kind == "Pod":
                spec, st = obj.get("spec", {}), obj.get("status", {})
                g = grace if grace is not None else spec.get("terminationGracePeriodSeconds", 30)
                if g is None:
                    g = 30
                running = spec.get("nodeName") and st.get("phase") not in ("Failed", "Succeeded")
                if g > 0 and running:
                    m = obj["metadata"]
                    if m.get("deletionTimestamp") and m.get("deletionGracePeriodSeconds", g) <= g:
                        return copy.deepcopy(obj)
                    old = copy.deepcopy(obj)
                    m["deletionTimestamp"] = now_iso(g)
                    m["deletionGracePeriodSeconds"] = g
                    m["resourceVersion"] = self._bump()
                    self._emit("MODIFIED", rt, obj, old)
                    self._schedule_removal(rt, namespace, name, m["uid"], g * self.grace_scale)
                    return copy.deepcopy(obj)
            elif obj["metadata"].get("finalizers"):
                if not obj["metadata"].get("deletionTimestamp"):
                    old = copy.deepcopy(obj)
                    obj["metadata"]["deletionTimestamp"] = now_iso()
                    obj["metadata"]["deletionGracePeriodSeconds"] = 0
                    obj["metadata"]["resourceVersion"] = self._bump()
                    self._emit("MODIFIED", rt, obj, old)
                return copy.deepcopy(obj)
            return self._remove(rt, namespace, name, propagation)

    def _schedule_removal(self, rt, namespace, name, uid, seconds):
        def fire():
            with self.lock:
                o = self.objects[rt.key].get((namespace, name))
                if o is not None and o["metadata"]["uid"] == uid:
                    self._remove(rt, namespace, name)
        t = threading.Timer(max(0.0, seconds), fire)
        t.daemon = True
        t.start()

    def finalize_pod(self, namespace, name, uid=None):
        """What the kubelet does once a terminating pod's containers are gone."""
        rt = self.types[("", "pods")]
        with self.lock:
            o = self.objects[rt.key].get((namespace, name))
            if o is not None and (uid is None or o["metadata"]["uid"] == uid):
                self._remove(rt, namespace, name)

    def _remove(self, rt, namespace, name, propagation=None):
        obj = self.objects[rt.key].pop((namespace, name))
        old = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = self._bump()
        self._emit("DELETED", rt, obj, old)
        uid = obj["metadata"]["uid"]
        if rt.kind == "CustomResourceDefinition":
            key = (obj["spec"]["group"], obj["spec"]["names"]["plural"])
            crt = self.types.get(key)
            for (ns, n) in list(self.objects.get(key, {})):
                self._remove(crt, ns, n)
            self.types.pop(key, None)
            self.objects.pop(key, None)
        if rt.kind == "Namespace":
            for key, objs in list(self.objects.items()):
                for (ns, n) in list(objs):
                    if ns == name and self.types[key].namespaced:
                        self._remove(self.types[key], ns, n)
        if propagation != "Orphan":   # garbage collection of dependents (background)
            for key, objs in list(self.objects.items()):
                for (ns, n), o in list(objs.items()):
                    if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences", [])):
                        if (ns, n) in objs:
                            self.delete(self.types[key], ns, n)
        return copy.deepcopy(obj)

    def set_pod_status(self, namespace, name, mutate):
        """Applies mutate(pod) under the lock (the fake's kubelet and admin API)."""
        rt = self.types[("", "pods")]
        with self.lock:
            obj = self.objects[rt.key].get((namespace, name))
            if obj is None:
                raise not_found(rt, name)
            old = copy.deepcopy(obj)
            mutate(obj)
            if obj == old:
                return copy.deepcopy(obj)
            obj["metadata"]["resourceVersion"] = self._bump()
            self._emit("MODIFIED", rt, obj, old)
            return copy.deepcopy(obj)


def _same_but_rv(a, b):
    a, b = copy.deepcopy(a), copy.deepcopy(b)
    a["metadata"].pop("resourceVersion", None)
    b["metadata"].pop("resourceVersion", None)
    return a == b


def crd_versions(crd):
    return [v["name"] for v in (crd or {}).get("spec", {}).get("versions", []) if v.get("served", True)]
