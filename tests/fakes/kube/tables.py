"""meta.k8s.io/v1 Table output of the FAKE Kubernetes API server (what `kubectl get` asks for).

Follows https://kubernetes.io/docs/reference/using-api/api-concepts/#receiving-resources-as-tables
Pods: Name, Ready, Status, Restarts, Age (+ IP, Node at priority 1). Custom resources: Name and
the CRD's additionalPrinterColumns, their JSONPath evaluated here (kubectl sends none: printer
columns are evaluated server-side): .a.b, [0], [*], ['a'] and filters ([?(@.type=="Ready")]).
Others: Name, Age.
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


_TOKEN = re.compile(r"""\.(?P<name>[^.\[\]]+)      # .name
                       |\[\s*(?P<index>-?\d+)\s*\]         # [0], [-1]
                       |\[\s*(?P<star>\*)\s*\]             # [*]
                       |\[\s*'(?P<quoted>[^']*)'\s*\]      # ['name']
                       |\[\s*\?\((?P<filter>.*?)\)\s*\]    # [?(@.type=="Ready")]
                       """, re.X)
_FILTER = re.compile(r"""^\s*@(?P<path>(?:\.[^.\s=!<>]+)*)\s*
                        (?:(?P<op>==|!=|<=|>=|<|>)\s*(?P<lit>"[^"]*"|'[^']*'|-?\d+(?:\.\d+)?|true|false))?\s*$""", re.X)


def _walk(values, path):
    pos, path = 0, path.strip()
    while pos < len(path):
        tok = _TOKEN.match(path, pos)
        if tok is None:
            raise ValueError("unsupported JSONPath %r at %d" % (path, pos))
        pos = tok.end()
        out = []
        for v in values:
            if tok.group("name") is not None or tok.group("quoted") is not None:
                key = tok.group("name") if tok.group("name") is not None else tok.group("quoted")
                if isinstance(v, dict) and key in v:
                    out.append(v[key])
            elif tok.group("index") is not None:
                i = int(tok.group("index"))
                if isinstance(v, list) and -len(v) <= i < len(v):
                    out.append(v[i])
            elif tok.group("star") is not None:
                out += v if isinstance(v, list) else list(v.values()) if isinstance(v, dict) else []
            else:
                out += [e for e in (v if isinstance(v, list) else []) if _filter_ok(e, tok.group("filter"))]
        values = out
    return values


def _filter_ok(item, expr):
    m = _FILTER.match(expr)
    if not m:
        raise ValueError("unsupported JSONPath filter %r" % expr)
    got = _walk([item], m.group("path") or "")
    if m.group("op") is None:
        return bool(got)
    if not got:
        return False
    lit = m.group("lit")
    want = lit[1:-1] if lit[0] in "\"'" else {"true": True, "false": False}.get(lit, None)
    if want is None:
        want = float(lit)
    a = got[0]
    if isinstance(want, float):
        if not isinstance(a, (int, float)) or isinstance(a, bool):
            return False
    elif type(a) is not type(want):
        return m.group("op") == "!="
    return {"==": a == want, "!=": a != want, "<": a < want, ">": a > want, "<=": a <= want,
            ">=": a >= want}[m.group("op")]


def jsonpath(obj, path):
    """Evaluates the JSONPath of a printer column as the API server does for a custom resource's
    Table (its first result, or None): .a.b, ['a'], [0], [*] and filters such as
    .status.conditions[?(@.type=="Ready")].status (==, !=, <, >, <=, >= against a string, number
    or boolean; [?(@.x)] for presence)."""
    p = path.strip()
    if p.startswith("{") and p.endswith("}"):
        p = p[1:-1].strip()
    p = p[1:] if p.startswith("$") else p
    try:
        got = _walk([obj], p)
    except (ValueError, TypeError):
        return None
    return got[0] if got else None


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
