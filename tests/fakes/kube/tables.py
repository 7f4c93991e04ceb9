"""meta.k8s.io/v1 Table output of the FAKE Kubernetes API server (what `kubectl get` asks for).

Follows https://kubernetes.io/docs/reference/using-api/api-concepts/#receiving-resources-as-tables
Pods: Name, Ready, Status, Restarts, Age (+ IP, Node at priority 1). Custom resources: Name and
the CRD's additionalPrinterColumns, JSONPath evaluated simply (.a.b.c, .a.b[0].c). Others: Name, Age.
"""

import datetime
import json
import re


def age(ts):
    if not ts:
        return "<unknown>"
    try:
        t = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return "<invalid>"
    s = int((datetime.datetime.now(datetime.timezone.utc) - t).total_seconds())
    if s < 0:
        return "0s"
    if s < 120:
        return "%ds" % s
    if s < 600:
        return "%dm%ds" % (s // 60, s % 60) if s % 60 else "%dm" % (s // 60)
    if s < 3 * 3600:
        return "%dm" % (s // 60)
    if s < 48 * 3600:
        return "%dh" % (s // 3600)
    return "%dd" % (s // 86400)


def jsonpath(obj, path):
    """Evaluates a simple JSONPath like .status.workers.ready or .spec.items[0].name."""
    cur = obj
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path.strip().lstrip("$").strip("{}")):
        if part.startswith("["):
            i = int(part[1:-1])
            cur = cur[i] if isinstance(cur, list) and i < len(cur) else None
        else:
            cur = cur.get(part) if isinstance(cur, dict) else None
        if cur is None:
            return None
    return cur


def pod_status_text(pod):
    """As the API server's pod printer: phase, else status.reason, else a container's waiting or
    terminated reason (or Signal:N / ExitCode:N), Terminating when deleted."""
    st = pod.get("status", {}) or {}
    reason = st.get("reason") or st.get("phase") or "Unknown"
    for cs in reversed(st.get("containerStatuses", []) or []):
        state = cs.get("state", {}) or {}
        w, t = state.get("waiting") or {}, state.get("terminated")
        if w.get("reason"):
            reason = w["reason"]
        elif t is not None and t.get("reason"):
            reason = t["reason"]
        elif t is not None:
            reason = "Signal:%d" % t["signal"] if t.get("signal") else "ExitCode:%d" % t.get("exitCode", 0)
    if pod["metadata"].get("deletionTimestamp"):
        return "Terminating"
    return reason


def _pod_row(pod):
    st = pod.get("status", {}) or {}
    css = st.get("containerStatuses", []) or []
    n = len(pod.get("spec", {}).get("containers", []) or [])
    ready = sum(1 for c in css if c.get("ready"))
    restarts = sum(int(c.get("restartCount", 0)) for c in css)
    return [pod["metadata"]["name"], "%d/%d" % (ready, n), pod_status_text(pod), restarts,
            age(pod["metadata"].get("creationTimestamp")), st.get("podIP") or "<none>",
            pod.get("spec", {}).get("nodeName") or "<none>", "<none>", "<none>"]


POD_COLUMNS = [("Name", "string", "name", 0), ("Ready", "string", "", 0), ("Status", "string", "", 0),
               ("Restarts", "integer", "", 0), ("Age", "string", "", 0), ("IP", "string", "", 1),
               ("Node", "string", "", 1), ("Nominated Node", "string", "", 1),
               ("Readiness Gates", "string", "", 1)]


def _crd_columns(crd, version):
    for v in crd.get("spec", {}).get("versions", []):
        if v.get("name") == version:
            return v.get("additionalPrinterColumns") or []
    return []


def table(rt, objs, list_meta, include="Metadata"):
    if rt.kind == "Pod":
        cols = POD_COLUMNS
        rows = [_pod_row(o) for o in objs]
    elif rt.crd is not None and _crd_columns(rt.crd, rt.version):
        pcs = _crd_columns(rt.crd, rt.version)
        cols = [("Name", "string", "name", 0)] + [
            (c["name"], "string" if c.get("type") == "date" else c.get("type", "string"), c.get("format", ""),
             c.get("priority", 0)) for c in pcs]
        rows = []
        for o in objs:
            row = [o["metadata"]["name"]]
            for c in pcs:
                v = jsonpath(o, c.get("jsonPath", ""))
                if c.get("type") == "date":
                    v = age(v) if v else "<unknown>"
                elif isinstance(v, (dict, list)):
                    v = json.dumps(v)
                row.append(v)
            rows.append(row)
    else:
        cols = [("Name", "string", "name", 0), ("Age", "string", "", 0)]
        rows = [[o["metadata"]["name"], age(o["metadata"].get("creationTimestamp"))] for o in objs]
    out_rows = []
    for o, cells in zip(objs, rows):
        r = {"cells": cells}
        if include == "Object":
            r["object"] = o
        elif include != "None":
            r["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                           "metadata": o["metadata"]}
        out_rows.append(r)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta,
            "columnDefinitions": [{"name": n, "type": t, "format": f, "description": n, "priority": p}
                                  for (n, t, f, p) in cols],
            "rows": out_rows}
