"""Pod lifecycle of the FAKE Kubernetes API server (tests only). There is no kubelet and no node:
pods stay Pending until the admin API moves them, or, with --kubelet=auto, become Running at once
and (with --run-pods) get a local process started for them with the pod's environment.

Status shapes follow https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/
"""

import base64
import os
import shlex
import signal
import subprocess
import threading
import time

from store import now_iso

NODE = "fake-node"


def _cond(t, status, reason=None, message=None):
    c = {"type": t, "status": status, "lastProbeTime": None, "lastTransitionTime": now_iso()}
    if reason:
        c["reason"] = reason
    if message:
        c["message"] = message
    return c


def _container_statuses(pod, state, ready, image_id=True):
    out = []
    for c in pod.get("spec", {}).get("containers", []) or []:
        out.append({"name": c.get("name", ""), "image": c.get("image", ""),
                    "imageID": "fake://" + c.get("image", "") if image_id else "",
                    "ready": ready, "restartCount": 0, "started": ready, "state": state})
    return out


def set_running(pod, pod_ip="127.0.0.1"):
    pod.setdefault("spec", {})["nodeName"] = pod["spec"].get("nodeName") or NODE
    st = pod.setdefault("status", {})
    start = st.get("startTime") or now_iso()
    pod["status"] = {"phase": "Running", "hostIP": "127.0.0.1", "podIP": pod_ip,
                     "podIPs": [{"ip": pod_ip}], "startTime": start, "qosClass": st.get("qosClass", "BestEffort"),
                     "conditions": [_cond("Initialized", "True"), _cond("Ready", "True"),
                                    _cond("ContainersReady", "True"), _cond("PodScheduled", "True")],
                     "containerStatuses": _container_statuses(pod, {"running": {"startedAt": start}}, True)}


def set_terminated(pod, phase, exit_code=None, reason=None, message=None):
    st = pod.setdefault("status", {})
    code = exit_code if exit_code is not None else (0 if phase == "Succeeded" else 1)
    term = {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
            "startedAt": st.get("startTime") or now_iso(), "finishedAt": now_iso()}
    new = {"phase": phase, "hostIP": st.get("hostIP", "127.0.0.1"), "startTime": st.get("startTime") or now_iso(),
           "qosClass": st.get("qosClass", "BestEffort"),
           "conditions": [_cond("Initialized", "True"), _cond("Ready", "False", "PodCompleted"),
                          _cond("ContainersReady", "False", "PodCompleted"), _cond("PodScheduled", "True")],
           "containerStatuses": _container_statuses(pod, {"terminated": term}, False)}
    if st.get("podIP"):
        new["podIP"], new["podIPs"] = st["podIP"], st.get("podIPs", [{"ip": st["podIP"]}])
    if reason:
        new["reason"] = reason
    if message:
        new["message"] = message
    pod["status"] = new
    pod.setdefault("spec", {})["nodeName"] = pod["spec"].get("nodeName") or NODE


def set_evicted(pod, message="The node was low on resource: memory."):
    """What a node-pressure eviction leaves: phase Failed, reason Evicted, no running container."""
    set_terminated(pod, "Failed", exit_code=137, reason="Evicted", message=message)
    pod["status"].pop("containerStatuses", None)
    pod["status"]["conditions"] = [_cond("PodScheduled", "True")]


def set_waiting(pod, reason, message=None):
    """Pending, scheduled, a container waiting (ImagePullBackOff, ErrImagePull, ContainerCreating...)."""
    pod.setdefault("spec", {})["nodeName"] = pod["spec"].get("nodeName") or NODE
    st = pod.get("status", {})
    if not message and reason in ("ImagePullBackOff", "ErrImagePull"):
        img = ((pod["spec"].get("containers") or [{}])[0]).get("image", "")
        message = 'Back-off pulling image "%s"' % img if reason == "ImagePullBackOff" else \
            'rpc error: code = Unknown desc = failed to pull and unpack image "%s": not found' % img
    waiting = {"reason": reason}
    if message:
        waiting["message"] = message
    pod["status"] = {"phase": "Pending", "hostIP": "127.0.0.1", "startTime": st.get("startTime") or now_iso(),
                     "qosClass": st.get("qosClass", "BestEffort"),
                     "conditions": [_cond("Initialized", "True"),
                                    _cond("Ready", "False", "ContainersNotReady",
                                          "containers with unready status: [%s]" % " ".join(
                                              c.get("name", "") for c in pod["spec"].get("containers", []))),
                                    _cond("ContainersReady", "False", "ContainersNotReady"),
                                    _cond("PodScheduled", "True")],
                     "containerStatuses": _container_statuses(pod, {"waiting": waiting}, False, image_id=False)}


def set_unschedulable(pod, message="0/3 nodes are available: 3 Insufficient nvidia.com/gpu."):
    pod.setdefault("spec", {}).pop("nodeName", None)
    pod["status"] = {"phase": "Pending", "qosClass": pod.get("status", {}).get("qosClass", "BestEffort"),
                     "conditions": [_cond("PodScheduled", "False", "Unschedulable", message)]}


def set_pending(pod):
    pod.setdefault("spec", {}).pop("nodeName", None)
    pod["status"] = {"phase": "Pending", "qosClass": pod.get("status", {}).get("qosClass", "BestEffort")}


def pod_env(store, pod, container):
    """The environment a container would get: env[].value, env[].valueFrom.secretKeyRef /
    configMapKeyRef / fieldRef, envFrom secretRef / configMapRef."""
    ns = pod["metadata"]["namespace"]
    secrets, cms = store.types[("", "secrets")], store.types[("", "configmaps")]
    env = {"HOSTNAME": pod["metadata"]["name"], "KUBERNETES_SERVICE_HOST": "127.0.0.1"}

    def secret(name):
        try:
            return {k: base64.b64decode(v).decode(errors="replace")
                    for k, v in (store.get(secrets, ns, name).get("data") or {}).items()}
        except Exception:
            return None

    def cmap(name):
        try:
            return store.get(cms, ns, name).get("data") or {}
        except Exception:
            return None

    for ef in container.get("envFrom", []) or []:
        src = secret(ef["secretRef"]["name"]) if "secretRef" in ef else cmap(ef.get("configMapRef", {}).get("name"))
        for k, v in (src or {}).items():
            env[ef.get("prefix", "") + k] = v
    fields = {"metadata.name": pod["metadata"]["name"], "metadata.namespace": ns,
              "metadata.uid": pod["metadata"]["uid"], "status.podIP": pod.get("status", {}).get("podIP", ""),
              "spec.nodeName": pod.get("spec", {}).get("nodeName", ""), "status.hostIP": "127.0.0.1"}
    for e in container.get("env", []) or []:
        if "value" in e:
            env[e["name"]] = str(e["value"])
        elif "valueFrom" in e:
            vf = e["valueFrom"]
            if "secretKeyRef" in vf:
                d = secret(vf["secretKeyRef"]["name"]) or {}
                if vf["secretKeyRef"]["key"] in d:
                    env[e["name"]] = d[vf["secretKeyRef"]["key"]]
            elif "configMapKeyRef" in vf:
                d = cmap(vf["configMapKeyRef"]["name"]) or {}
                if vf["configMapKeyRef"]["key"] in d:
                    env[e["name"]] = d[vf["configMapKeyRef"]["key"]]
            elif "fieldRef" in vf:
                env[e["name"]] = fields.get(vf["fieldRef"].get("fieldPath"), "")
        else:
            env[e["name"]] = ""
    return env


class Kubelet:
    """mode "manual": pods move only by the admin API. mode "auto": a created pod becomes Running at
    once; with run_template, a process is started for it (template "{command}" runs
    containers[0].command + args; placeholders {namespace} {name} {uid} {image} {command})."""

    def __init__(self, store, mode="manual", run_template=None, log_dir=None):
        self.store, self.mode, self.template = store, mode, run_template
        self.log_dir = log_dir
        self.procs = {}     # uid -> Popen
        self.lock = threading.Lock()
        store.hooks.append(self.on_event)

    def on_event(self, etype, rt, obj, old):
        if rt.kind != "Pod":
            return
        m = obj["metadata"]
        if etype == "ADDED" and self.mode == "auto":
            threading.Thread(target=self._autostart, args=(m["namespace"], m["name"], m["uid"]), daemon=True).start()
        elif etype == "MODIFIED" and m.get("deletionTimestamp") and not (old or {}).get("metadata", {}).get(
                "deletionTimestamp"):
            self._terminate(m["uid"], m["namespace"], m["name"], m.get("deletionGracePeriodSeconds", 30))
        elif etype == "DELETED":
            self._kill(m["uid"])

    def _autostart(self, ns, name, uid):
        try:
            pod = self.store.set_pod_status(ns, name, set_running)
        except Exception:
            return
        if self.template and pod["metadata"]["uid"] == uid:
            self.start(pod)

    def start(self, pod):
        """Starts the pod's process (if a template is configured and none runs yet)."""
        uid = pod["metadata"]["uid"]
        if not self.template:
            return
        c = (pod.get("spec", {}).get("containers") or [{}])[0]
        argv = list(c.get("command") or []) + list(c.get("args") or [])
        subst = {"namespace": pod["metadata"]["namespace"], "name": pod["metadata"]["name"], "uid": uid,
                 "image": c.get("image", ""), "command": " ".join(shlex.quote(a) for a in argv)}
        cmd = self.template.format(**subst)
        env = dict(os.environ)
        env.update(pod_env(self.store, pod, c))   # before self.lock: the store's lock is taken first
        with self.lock:
            if uid in self.procs:
                return
            out = subprocess.DEVNULL
            if self.log_dir:
                os.makedirs(self.log_dir, exist_ok=True)
                out = open(self.log_path(pod), "ab")
            # the default template runs the container's argv itself (no shell in between to eat signals)
            run = argv if self.template == "{command}" and argv else ["/bin/sh", "-c", cmd]
            p = subprocess.Popen(run, env=env, stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, cwd=c.get("workingDir") or None,
                                 start_new_session=True)
            if out is not subprocess.DEVNULL:
                out.close()
            self.procs[uid] = p
        threading.Thread(target=self._reap, args=(pod["metadata"]["namespace"], pod["metadata"]["name"], uid, p),
                         daemon=True).start()

    def log_path(self, pod):
        return os.path.join(self.log_dir or "/nonexistent", "%s_%s_%s.log" % (
            pod["metadata"]["namespace"], pod["metadata"]["name"], pod["metadata"]["uid"]))

    def _reap(self, ns, name, uid, p):
        code = p.wait()
        with self.lock:
            self.procs.pop(uid, None)
        try:
            pod = self.store.get(self.store.types[("", "pods")], ns, name)
        except Exception:
            return
        if pod["metadata"]["uid"] != uid:
            return
        if pod["metadata"].get("deletionTimestamp"):
            self.store.finalize_pod(ns, name, uid)
            return
        if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            return   # already terminated (evicted by the admin API)
        if code < 0:
            code = 128 - code
        phase = "Succeeded" if code == 0 else "Failed"
        try:
            self.store.set_pod_status(ns, name, lambda o: set_terminated(o, phase, exit_code=code)
                                      if o["metadata"]["uid"] == uid else None)
        except Exception:
            pass

    def _terminate(self, uid, ns, name, grace):
        with self.lock:
            p = self.procs.get(uid)
        if p is None:
            return
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    def _kill(self, uid):
        with self.lock:
            p = self.procs.pop(uid, None)
        if p is not None and p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop_all(self):
        with self.lock:
            uids = list(self.procs)
        for u in uids:
            self._kill(u)


class PodHistory:
    """Every pod created since the fake started (GET /fake/pods-ever), so that a test can check that
    each pod it made was deleted in the end or is still wanted: {namespace, name, uid, created,
    deleted}, in creation order; deleted = gone from the API (not just terminating)."""

    def __init__(self, store):
        self.lock = threading.Lock()
        self.pods = {}      # uid -> record (dicts keep insertion order)
        store.hooks.append(self.on_event)

    def on_event(self, etype, rt, obj, old):
        if rt.kind != "Pod":
            return
        m = obj["metadata"]
        with self.lock:
            if etype == "ADDED":
                self.pods[m["uid"]] = {"namespace": m.get("namespace", ""), "name": m["name"], "uid": m["uid"],
                                       "created": m.get("creationTimestamp"), "deleted": False}
            elif etype == "DELETED" and m["uid"] in self.pods:
                self.pods[m["uid"]]["deleted"] = True

    def list(self):
        with self.lock:
            return [dict(r) for r in self.pods.values()]

    def clear(self):
        with self.lock:
            self.pods = {}
